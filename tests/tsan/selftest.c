/*
 * selftest.c - tests of the runner itself (runner.c), one suite per
 * behaviour; selftest.cmake runs them and checks exit status and output.
 * Most of these tests fail or hang on purpose.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <unistd.h>

static void say(const char *what)
{
	printf("%s\n", what);
	fflush(stdout);
}

static void suite_init(void)
{
	say("suite init");
}

static void suite_fini(void)
{
	say("suite fini");
}

static void test_init(void)
{
	say("test init");
}

static void test_fini(void)
{
	say("test fini");
}

/* Passing: the five steps in order. */
TestSuite(ok, .init = suite_init, .fini = suite_fini);

Test(ok, steps_run_in_order, .init = test_init, .fini = test_fini)
{
	say("body");
	cr_assert_eq(1 + 1, 2);
	cr_assert_str_eq("a", "a", "with a message %d", 1);
	cr_assert_arr_eq("abc", "abd", 2);
}

struct pcase {
	int v;
};

ParameterizedTestParameters(ok, each_parameter)
{
	static struct pcase cases[] = {{10}, {11}, {12}};

	return cr_make_param_array(struct pcase, cases, 3);
}

ParameterizedTest(struct pcase *c, ok, each_parameter)
{
	printf("param %d\n", c->v);
	cr_assert_geq(c->v, 10);
}

/* A failed assertion ends the body; the finis still run. */
TestSuite(fail, .fini = suite_fini);

Test(fail, assertion_runs_the_finis, .fini = test_fini)
{
	int x = 3;

	cr_assert_eq(x, 4, "x is %d", x);
	say("after the assertion");
}

/* A failed expectation does not end the body, but fails the test. */
Test(expect, failure_goes_on)
{
	cr_expect_eq(1, 2);
	say("after the expectation");
}

Test(skip, skipped)
{
	cr_skip_test("not here");
	say("after the skip");
}

Test(timeout, is_killed, .timeout = 1)
{
	pause();
}

static void *fail_in_thread(void *arg)
{
	cr_assert_fail("from another thread");
	return arg;
}

/* A failure on another thread ends the process. */
Test(thread, failure_ends_the_test)
{
	pthread_t t;

	pthread_create(&t, NULL, fail_in_thread, NULL);
	pthread_join(t, NULL);
	say("after the join");
}

/* A data race on purpose: under ThreadSanitizer the test process must
 * exit with status 66 (selftest.cmake checks it only in that build). */
static int racy;

static void *race_thread(void *arg)
{
	racy++;
	return arg;
}

Test(race, is_reported)
{
	pthread_t t;

	pthread_create(&t, NULL, race_thread, NULL);
	racy++;
	pthread_join(t, NULL);
	cr_assert_geq(racy, 1);
}
