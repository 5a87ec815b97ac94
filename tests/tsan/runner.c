/*
 * runner.c - runs the Criterion-style tests of the thread-sanitizer build
 * (the API is in criterion/criterion.h here).
 *
 * Why not Criterion itself: Criterion 2.4's runner starts by mapping
 * BoxFort's shared "inheritable arena" at a random address between
 * 0x2000'0000'0000 and 0x7f00'0000'0000, probing about ten candidates
 * with mincore() for a free range.  ThreadSanitizer reserves nearly all of
 * that range at start-up (its shadow and meta memory and the protected
 * gaps between them), so the probes find it mapped and the runner stops
 * with "Could not initialize inheritable arena" (and a stale errno); in
 * the few runs where a probe lands in one of the small application
 * ranges, a later arena fails the same way and libcriterion dereferences
 * NULL.  No option of Criterion's avoids the arena.
 *
 * What this runner does is what Criterion's does for h2's tests: each
 * test (each parameter of a parameterized one) runs in its own forked
 * process: suite init, test init, the body, test fini, suite fini; a
 * timeout kills it.  The parent stays single-threaded, so forking is safe
 * under ThreadSanitizer, and each child ends with exit() so that
 * ThreadSanitizer's exit status (66 after any report, see TSAN_OPTIONS in
 * scripts/test) becomes the test's result.
 *
 * Usage: test_x [--filter GLOB]... [--exclude GLOB]... [--list] [--jobs N]
 * runs, in the order of their names, the tests whose SUITE/NAME matches a
 * --filter (all, without one) and no --exclude; --jobs is accepted for
 * ctest's command lines (tests run one at a time).  Exit status 0 when
 * every test passed or was skipped.
 */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "criterion/criterion.h"

#define SKIPPED 77 /* a child's exit status for a skipped test */

static struct h2mc_test *tests;
static size_t ntests;
static struct h2mc_suite *suites;

/* In a test's process: its thread, where to jump on a fatal failure or a
 * skip, the step it is at, and whether anything failed. */
static pthread_t test_thread;
static jmp_buf jump;
static volatile int step;
static atomic_bool failed;

/* Constructors: add a test, a suite. */
void h2mc_register(struct h2mc_test *t)
{
	t->next = tests;
	tests = t;
	ntests++;
}

void h2mc_register_suite(struct h2mc_suite *s)
{
	s->next = suites;
	suites = s;
}

/* End the current test: back to the steps on the test's thread, at once
 * (without fixtures) anywhere else. */
static _Noreturn void leave(int how)
{
	fflush(stdout);
	fflush(stderr);
	if (pthread_equal(pthread_self(), test_thread))
		longjmp(jump, how);
	_exit(how == 2 ? SKIPPED : 1);
}

void h2mc_fail(bool fatal, const char *file, int line, const char *expr,
	       const char *fmt, ...)
{
	va_list ap;

	atomic_store(&failed, true);
	flockfile(stderr);
	fprintf(stderr, "[FAIL] %s:%d: %s", file, line, expr);
	if (fmt[0]) {
		fputs(": ", stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	fputc('\n', stderr);
	funlockfile(stderr);
	if (fatal)
		leave(1);
}

void h2mc_skip(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "[SKIP] %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	leave(2);
}

void h2mc_log(const char *level, const char *fmt, ...)
{
	va_list ap;

	flockfile(stderr);
	fprintf(stderr, "[%s] ", level);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

/* The options of suite name (none if it has no TestSuite). */
static const struct h2mc_opts *suite_opts(const char *name)
{
	static const struct h2mc_opts none;

	for (struct h2mc_suite *s = suites; s; s = s->next)
		if (strcmp(s->name, name) == 0)
			return &s->opt;
	return &none;
}

/* One step of a test: 0 suite init, 1 test init, 2 the body, 3 test
 * fini, 4 suite fini. */
static void do_step(int s, const struct h2mc_test *t,
		    const struct h2mc_opts *so, size_t param)
{
	if (s == 0 && so->init)
		so->init();
	else if (s == 1 && t->opt.init)
		t->opt.init();
	else if (s == 2 && t->fn)
		t->fn();
	else if (s == 2) {
		struct h2mc_params p = t->params();

		t->pfn((char *)p.base + param * p.size);
	} else if (s == 3 && t->opt.fini)
		t->opt.fini();
	else if (s == 4 && so->fini)
		so->fini();
}

/* The test's process: each step once, the finis even after a failure. */
static _Noreturn void child(const struct h2mc_test *t, size_t param)
{
	static const struct h2mc_test *ct;
	static const struct h2mc_opts *cso;
	static size_t cparam;
	static bool skipped;
	double timeout;
	int how;

	ct = t;
	cso = suite_opts(t->suite);
	cparam = param;
	timeout = t->opt.timeout ? t->opt.timeout : cso->timeout;
	test_thread = pthread_self();
	if (timeout > 0)
		alarm((unsigned)ceil(timeout));
	how = setjmp(jump);
	if (how == 2)
		skipped = true;
	if (how && step <= 3)
		step = 3; /* a fixture or the body gave up: the finis */
	while (step < 5) {
		int s = step++;

		do_step(s, ct, cso, cparam);
	}
	fflush(stdout);
	exit(atomic_load(&failed) ? 1 : skipped ? SKIPPED : 0);
}

/* qsort: by suite, then name (Criterion's order). */
static int by_name(const void *a, const void *b)
{
	const struct h2mc_test *x = *(struct h2mc_test *const *)a;
	const struct h2mc_test *y = *(struct h2mc_test *const *)b;
	int c = strcmp(x->suite, y->suite);

	return c ? c : strcmp(x->name, y->name);
}

/* Monotonic seconds. */
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run one test in a child; 0 passed, 1 failed, 2 skipped. */
static int run(const struct h2mc_test *t, size_t param, bool is_param)
{
	char name[256];
	double t0 = now();
	pid_t pid;
	int ws;

	if (is_param)
		snprintf(name, sizeof(name), "%s::%s[%zu]", t->suite, t->name,
			 param);
	else
		snprintf(name, sizeof(name), "%s::%s", t->suite, t->name);
	if (t->opt.disabled || suite_opts(t->suite)->disabled) {
		printf("[SKIP] %s: disabled\n", name);
		return 2;
	}
	printf("[RUN ] %s\n", name);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0)
		child(t, param);
	while (waitpid(pid, &ws, 0) < 0) {
		if (errno != EINTR) {
			perror("waitpid");
			return 1;
		}
	}
	if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
		printf("[PASS] %s (%.2f s)\n", name, now() - t0);
		return 0;
	}
	if (WIFEXITED(ws) && WEXITSTATUS(ws) == SKIPPED) {
		printf("[SKIP] %s\n", name);
		return 2;
	}
	if (WIFSIGNALED(ws) && WTERMSIG(ws) == SIGALRM)
		printf("[FAIL] %s: timed out\n", name);
	else if (WIFSIGNALED(ws))
		printf("[FAIL] %s: crashed with signal %d (%s)\n", name,
		       WTERMSIG(ws), strsignal(WTERMSIG(ws)));
	else if (WEXITSTATUS(ws) == 66)
		printf("[FAIL] %s: exit status 66: a ThreadSanitizer report "
		       "(above)\n",
		       name);
	else
		printf("[FAIL] %s: exit status %d\n", name, WEXITSTATUS(ws));
	return 1;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--filter GLOB]... [--exclude GLOB]... "
		"[--list] [--jobs N]\n",
		argv0);
	exit(2);
}

/* Does id match one of the n globs? */
static bool matches(const char *id, char **globs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(globs[i], id, 0) == 0)
			return true;
	return false;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"filter", required_argument, NULL, 'f'},
	    {"exclude", required_argument, NULL, 'x'},
	    {"list", no_argument, NULL, 'l'},
	    {"jobs", required_argument, NULL, 'j'},
	    {NULL, 0, NULL, 0},
	};
	char **filter = calloc((size_t)argc, sizeof(char *));
	char **exclude = calloc((size_t)argc, sizeof(char *));
	size_t nfilter = 0, nexclude = 0, n = 0, counts[3] = {0};
	struct h2mc_test **v = calloc(ntests ? ntests : 1, sizeof(*v));
	bool list = false;
	int c;

	if (!filter || !exclude || !v)
		return 2;
	while ((c = getopt_long(argc, argv, "f:x:lj:", longopts, NULL)) != -1) {
		if (c == 'f')
			filter[nfilter++] = optarg;
		else if (c == 'x')
			exclude[nexclude++] = optarg;
		else if (c == 'l')
			list = true;
		else if (c != 'j')
			usage(argv[0]);
	}
	if (optind != argc)
		usage(argv[0]);
	for (struct h2mc_test *t = tests; t; t = t->next) {
		char id[256];

		snprintf(id, sizeof(id), "%s/%s", t->suite, t->name);
		if ((!nfilter || matches(id, filter, nfilter)) &&
		    !matches(id, exclude, nexclude))
			v[n++] = t;
	}
	qsort(v, n, sizeof(*v), by_name);
	for (size_t i = 0; i < n; i++) {
		size_t np = v[i]->params ? v[i]->params().len : 1;

		if (list) {
			printf("%s/%s\n", v[i]->suite, v[i]->name);
			continue;
		}
		for (size_t k = 0; k < np; k++)
			counts[run(v[i], k, v[i]->params != NULL)]++;
	}
	free(v);
	free(filter);
	free(exclude);
	if (list)
		return 0;
	printf("[====] Synthesis: Tested: %zu | Passing: %zu | Failing: %zu "
	       "| Skipped: %zu\n",
	       counts[0] + counts[1], counts[0], counts[1], counts[2]);
	return counts[1] ? 1 : 0;
}
