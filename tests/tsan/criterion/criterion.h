/*
 * criterion.h - the part of Criterion's API that h2's tests use, for the
 * ThreadSanitizer build, where Criterion's own runner cannot start (see
 * tests/tsan/runner.c for why).  tests/CMakeLists.txt puts this directory
 * first on the include path of the tests only when H2_SANITIZE names
 * thread; every other build uses the real Criterion.
 *
 * Test(suite, name, .init, .fini, .timeout, .disabled, .description) and
 * TestSuite(suite, ...) register a test (a constructor adds it to the
 * runner's list); the runner runs each test in its own forked process, as
 * Criterion does: suite init, test init, the body, test fini, suite fini.
 *
 * Assertions take an optional printf-style message whose format is a
 * string literal, as in every h2 test.  A failing cr_assert_* on the
 * test's own thread jumps back to the runner (the fixtures' fini still
 * runs); on any other thread it ends the test process at once.  cr_expect_*
 * records the failure and goes on.
 *
 * Anything of Criterion's API not defined here (redirections, theories,
 * .exit_code, .signal) is a compile error: such a test is not built in the
 * thread-sanitizer build.
 */
#ifndef H2_TSAN_CRITERION_H
#define H2_TSAN_CRITERION_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The options a test or a suite may set (Criterion's names). */
struct h2mc_opts {
	void (*init)(void);
	void (*fini)(void);
	double timeout; /* seconds; 0: none */
	bool disabled;
	const char *description;
};

/* What a ParameterizedTestParameters function returns. */
struct h2mc_params {
	size_t size; /* of one parameter */
	void *base;
	size_t len;
	void (*cleanup)(struct h2mc_params *);
};

struct h2mc_test {
	const char *suite;
	const char *name;
	void (*fn)(void);		    /* a plain test */
	void (*pfn)(void *);		    /* a parameterized one */
	struct h2mc_params (*params)(void); /* and its parameters */
	struct h2mc_opts opt;
	struct h2mc_test *next;
};

struct h2mc_suite {
	const char *name;
	struct h2mc_opts opt;
	struct h2mc_suite *next;
};

void h2mc_register(struct h2mc_test *t);
void h2mc_register_suite(struct h2mc_suite *s);

/* A failed assertion: prints file:line, the expression and the message;
 * fatal ends the test (see above). */
void h2mc_fail(bool fatal, const char *file, int line, const char *expr,
	       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Ends the test as skipped (only from the test's own thread). */
void h2mc_skip(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

void h2mc_log(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define H2MC_CAT_(a, b, c)	   a##_##b##_##c
#define H2MC_ID(kind, suite, name) H2MC_CAT_(kind, suite, name)

#define Test(S, N, ...)                                                        \
	static void H2MC_ID(h2mc_fn, S, N)(void);                              \
	static struct h2mc_test H2MC_ID(h2mc_t, S, N) = {                      \
	    .suite = #S,                                                       \
	    .name = #N,                                                        \
	    .fn = H2MC_ID(h2mc_fn, S, N),                                      \
	    .opt = {__VA_ARGS__},                                              \
	};                                                                     \
	__attribute__((constructor)) static void H2MC_ID(h2mc_reg, S, N)(void) \
	{                                                                      \
		h2mc_register(&H2MC_ID(h2mc_t, S, N));                         \
	}                                                                      \
	static void H2MC_ID(h2mc_fn, S, N)(void)

#define TestSuite(S, ...)                                                      \
	static struct h2mc_suite H2MC_ID(h2mc_s, S, S) = {                     \
	    .name = #S,                                                        \
	    .opt = {__VA_ARGS__},                                              \
	};                                                                     \
	__attribute__((constructor)) static void H2MC_ID(h2mc_sreg, S,         \
							 S)(void)              \
	{                                                                      \
		h2mc_register_suite(&H2MC_ID(h2mc_s, S, S));                   \
	}                                                                      \
	struct h2mc_suite

/* The message is optional: "" glues onto a literal format or stands
 * alone. */
#define H2MC_CHECK(fatal, cond, expr, ...)                                     \
	do {                                                                   \
		if (!(cond))                                                   \
			h2mc_fail(fatal, __FILE__, __LINE__, expr,             \
				  "" __VA_ARGS__);                             \
	} while (0)

#define cr_assert(c, ...)     H2MC_CHECK(true, c, #c, __VA_ARGS__)
#define cr_assert_not(c, ...) H2MC_CHECK(true, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_fail(...)   H2MC_CHECK(true, false, "fail", __VA_ARGS__)
#define cr_assert_null(p, ...)                                                 \
	H2MC_CHECK(true, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...)                                             \
	H2MC_CHECK(true, (p) != NULL, #p " != NULL", __VA_ARGS__)

#define H2MC_OP(fatal, op, a, b, ...)                                          \
	H2MC_CHECK(fatal, (a)op(b), #a " " #op " " #b, __VA_ARGS__)
#define cr_assert_eq(a, b, ...)	 H2MC_OP(true, ==, a, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) H2MC_OP(true, !=, a, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)	 H2MC_OP(true, <, a, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) H2MC_OP(true, <=, a, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)	 H2MC_OP(true, >, a, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) H2MC_OP(true, >=, a, b, __VA_ARGS__)
#define cr_expect(c, ...)	 H2MC_CHECK(false, c, #c, __VA_ARGS__)
#define cr_expect_eq(a, b, ...)	 H2MC_OP(false, ==, a, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) H2MC_OP(false, !=, a, b, __VA_ARGS__)

#define cr_assert_str_eq(a, b, ...)                                            \
	H2MC_CHECK(true, strcmp(a, b) == 0, #a " eq " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...)                                           \
	H2MC_CHECK(true, strcmp(a, b) != 0, #a " neq " #b, __VA_ARGS__)
#define cr_assert_str_empty(s, ...)                                            \
	H2MC_CHECK(true, (s)[0] == '\0', #s " is empty", __VA_ARGS__)
#define cr_assert_str_not_empty(s, ...)                                        \
	H2MC_CHECK(true, (s)[0] != '\0', #s " is not empty", __VA_ARGS__)
#define cr_assert_arr_eq(a, b, size, ...)                                      \
	H2MC_CHECK(true, memcmp(a, b, size) == 0, #a "[0.." #size "] eq " #b,  \
		   __VA_ARGS__)

#define cr_skip_test(...) h2mc_skip(__FILE__, __LINE__, "" __VA_ARGS__)

#define cr_log_info(...)  h2mc_log("----", __VA_ARGS__)
#define cr_log_warn(...)  h2mc_log("WARN", __VA_ARGS__)
#define cr_log_error(...) h2mc_log("ERR ", __VA_ARGS__)

#endif
