/*
 * The fixture of the tests against the fake h2d: a temporary directory
 * with certificates (fake_make_certs), the fake configured to serve with
 * them, and starting/stopping it.  Include from exactly one test file per
 * binary (it defines the fixture's state) and register
 *   TestSuite(NAME, .init = fixture_setup, .fini = fixture_teardown, ...);
 */
#ifndef H2_FAKE_FIXTURE_H
#define H2_FAKE_FIXTURE_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_server.h"

static char dir[] = "/tmp/h2-client-test-XXXXXX";
static struct fake F;
static bool fake_running;
static char server_addr[64];
static char server_crt[256], server_key[256], ca_crt[256], other_ca_crt[256];

/* A path inside the test's directory (rotating static buffers). */
static inline const char *tpath(const char *name)
{
	static char p[8][256];
	static int k;

	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static inline void fixture_setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	cr_assert(fake_make_certs(dir), "making certificates failed");
	memset(&F, 0, sizeof(F));
	snprintf(server_crt, sizeof(server_crt), "%s", tpath("server.crt"));
	snprintf(server_key, sizeof(server_key), "%s", tpath("server.key"));
	snprintf(ca_crt, sizeof(ca_crt), "%s", tpath("ca.crt"));
	snprintf(other_ca_crt, sizeof(other_ca_crt), "%s",
		 tpath("other-ca.crt"));
	F.cert = server_crt;
	F.key = server_key;
	F.ca = ca_crt;
	F.mode = FAKE_SERVE;
	F.flush_status = H2__STATUS__OK;
}

static inline void fixture_teardown(void)
{
	char cmd[300];

	if (fake_running)
		fake_stop(&F);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* Start the fake as configured in F. */
static inline void start_fake(void)
{
	cr_assert(fake_start(&F), "fake: %s", F.error);
	fake_running = true;
	snprintf(server_addr, sizeof(server_addr), "127.0.0.1:%u", F.port);
}

/* Stop the fake; it must not have seen anything wrong. */
static inline void stop_fake(void)
{
	const char *err;

	fake_running = false;
	err = fake_stop(&F);
	cr_assert_str_empty(err, "fake server: %s", err);
}

#endif
