/*
 * The NBD frontend's settings: [server] nbd_listen and --nbd-listen,
 * default 127.0.0.1:10809, port 0 allowed, empty turns it off; and the
 * plaintext listener nbd_plain_listen (loopback only, off by default)
 * with the identity its connections act as, nbd_plain_identity.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* Run h2_config_from_args on the defaults with a NULL-terminated list. */
static int from_args(struct h2_config *c, char **args, char *err, size_t errlen)
{
	int argc = 0;

	while (args[argc])
		argc++;
	h2_config_defaults(c);
	return h2_config_from_args(c, argc, args, err, errlen);
}

/* Load text as a config file on top of the defaults. */
static int load_text(struct h2_config *c, const char *text, char *err,
		     size_t errlen)
{
	char path[] = "/tmp/h2-nbdconf-XXXXXX";
	int fd = mkstemp(path), r;

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	h2_config_defaults(c);
	r = h2_config_load(c, path, err, errlen);
	unlink(path);
	return r;
}

Test(nbd_config, defaults_to_the_nbd_port_on_loopback)
{
	struct h2_config c;

	h2_config_defaults(&c);
	cr_assert_str_eq(c.nbd_listen, "127.0.0.1:10809");
	h2_config_free(&c);
}

Test(nbd_config, flag_sets_any_port_and_empty_turns_it_off)
{
	char *port0[] = {"serve", "--nbd-listen", "127.0.0.1:0", NULL};
	char *off[] = {"serve", "--nbd-listen", "", NULL};
	char *v6[] = {"serve", "--nbd-listen", "[::1]:10810", NULL};
	struct h2_config c;
	char err[512];

	cr_assert_eq(from_args(&c, port0, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.nbd_listen, "127.0.0.1:0");
	h2_config_free(&c);
	cr_assert_eq(from_args(&c, off, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.nbd_listen, "");
	h2_config_free(&c);
	cr_assert_eq(from_args(&c, v6, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.nbd_listen, "[::1]:10810");
	h2_config_free(&c);
}

Test(nbd_config, bad_address_is_refused_with_the_flag_named)
{
	char *bad[] = {"serve", "--nbd-listen", "10809", NULL};
	struct h2_config c;
	char err[512] = "";

	cr_assert_lt(from_args(&c, bad, err, sizeof(err)), 0);
	cr_assert(strstr(err, "--nbd-listen"), "%s", err);
	cr_assert(strstr(err, "HOST:PORT"), "%s", err);
	h2_config_free(&c);
}

Test(nbd_config, file_key_is_read_and_flags_win)
{
	char *args[] = {"serve", "--nbd-listen", "127.0.0.1:5555", NULL};
	struct h2_config c;
	char err[512] = "";

	cr_assert_eq(load_text(&c, "[server]\nnbd_listen = 0.0.0.0:10809\n",
			       err, sizeof(err)),
		     0, "%s", err);
	cr_assert_str_eq(c.nbd_listen, "0.0.0.0:10809");
	h2_config_free(&c);
	cr_assert_eq(
	    load_text(&c, "[server]\nnbd_listen =\n", err, sizeof(err)), 0,
	    "%s", err);
	cr_assert_str_eq(c.nbd_listen, "", "empty in the file: off");
	h2_config_free(&c);
	cr_assert_lt(
	    load_text(&c, "[server]\nnbd_listen = nowhere\n", err, sizeof(err)),
	    0);
	cr_assert(strstr(err, "nbd_listen"), "%s", err);
	h2_config_free(&c);
	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.nbd_listen, "127.0.0.1:5555");
	h2_config_free(&c);
}

Test(nbd_config, help_mentions_the_flag)
{
	char *args[] = {"serve", "--help", NULL};
	struct h2_config c;
	char err[512], buf[8192] = "";
	FILE *f = tmpfile();
	int saved = dup(1);
	size_t n;

	cr_assert_not_null(f);
	fflush(stdout);
	dup2(fileno(f), 1);
	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 1);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	cr_assert(strstr(buf, "--nbd-listen"), "%s", buf);
	h2_config_free(&c);
}

/* ---------------------------------------------------------------------- */
/* The plaintext listener: [server] nbd_plain_listen, nbd_plain_identity. */

Test(nbd_config, plaintext_listener_is_off_by_default)
{
	struct h2_config c;

	h2_config_defaults(&c);
	cr_assert(!c.nbd_plain_listen || !*c.nbd_plain_listen);
	cr_assert_null(c.nbd_plain_identity);
	h2_config_free(&c);
}

/* Criterion copies parameters into the test's process: no pointers. */
struct addr_param {
	char s[48];
};

/* Addresses that are not loopback, some of them spelled as names. */
ParameterizedTestParameters(nbd_config, plaintext_listener_refuses_non_loopback)
{
	static struct addr_param addrs[] = {
	    {"0.0.0.0:10810"},
	    {"10.1.2.3:0"},
	    {"192.168.0.1:10810"},
	    {"128.0.0.1:10810"},
	    {"[::]:0"},
	    {"[2001:db8::1]:10810"},
	    {"[::ffff:10.0.0.1]:0"},
	    {"0:10810"}, /* a name to inet_aton: 0.0.0.0 */
	};

	return cr_make_param_array(struct addr_param, addrs,
				   sizeof(addrs) / sizeof(addrs[0]));
}

ParameterizedTest(struct addr_param *p, nbd_config,
		  plaintext_listener_refuses_non_loopback)
{
	const char *addr = p->s;
	char *args[] = {"serve",
			"--nbd-plain-listen",
			p->s,
			"--nbd-plain-identity",
			"bench",
			NULL};
	struct h2_config c;
	char err[1024] = "";

	cr_assert_lt(from_args(&c, args, err, sizeof(err)), 0, "%s accepted",
		     addr);
	cr_assert(strstr(err, "--nbd-plain-listen"), "%s", err);
	cr_assert(strstr(err, addr), "the address is named: %s", err);
	cr_assert(strstr(err, "loopback"), "%s", err);
	h2_config_free(&c);
}

ParameterizedTestParameters(nbd_config, plaintext_listener_takes_loopback)
{
	static struct addr_param addrs[] = {
	    {"127.0.0.1:0"},
	    {"127.9.8.7:10810"},
	    {"[::1]:0"},
	    {"[::ffff:127.0.0.1]:0"},
	    {"localhost:0"},  /* a name: all its addresses are loopback */
	    {"2130706433:0"}, /* a name to inet_aton: 127.0.0.1 */
	};

	return cr_make_param_array(struct addr_param, addrs,
				   sizeof(addrs) / sizeof(addrs[0]));
}

ParameterizedTest(struct addr_param *p, nbd_config,
		  plaintext_listener_takes_loopback)
{
	const char *addr = p->s;
	char *args[] = {"serve",
			"--nbd-plain-listen",
			p->s,
			"--nbd-plain-identity",
			"bench",
			NULL};
	struct h2_config c;
	char err[1024] = "";
	struct sockaddr_storage ss;
	int len = 0;

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.nbd_plain_listen, addr);
	cr_assert_str_eq(c.nbd_plain_identity, "bench");
	cr_assert_eq(h2_config_loopback_addr(addr, &ss, &len, err,
					     sizeof(err)),
		     0, "%s", err);
	cr_assert_gt(len, 0);
	cr_assert(h2_config_sa_loopback((struct sockaddr *)&ss));
	h2_config_free(&c);
}

Test(nbd_config, name_that_does_not_resolve_is_refused)
{
	char *args[] = {"serve",
			"--nbd-plain-listen",
			"no-such-host.invalid:0",
			"--nbd-plain-identity",
			"bench",
			NULL};
	struct h2_config c;
	char err[1024] = "";

	cr_assert_lt(from_args(&c, args, err, sizeof(err)), 0);
	cr_assert(strstr(err, "no-such-host.invalid"), "%s", err);
	h2_config_free(&c);
}

Test(nbd_config, plaintext_listener_needs_an_identity)
{
	char *no_id[] = {"serve", "--nbd-plain-listen", "127.0.0.1:0", NULL};
	char *empty_id[] = {"serve", "--nbd-plain-listen", "127.0.0.1:0",
			    "--nbd-plain-identity", "", NULL};
	char *ctl_id[] = {"serve", "--nbd-plain-listen", "127.0.0.1:0",
			  "--nbd-plain-identity", "a\tb", NULL};
	struct h2_config c;
	char err[1024] = "";

	cr_assert_lt(from_args(&c, no_id, err, sizeof(err)), 0);
	cr_assert(strstr(err, "nbd_plain_identity"), "%s", err);
	h2_config_free(&c);
	cr_assert_lt(from_args(&c, empty_id, err, sizeof(err)), 0);
	cr_assert(strstr(err, "--nbd-plain-identity"), "%s", err);
	h2_config_free(&c);
	cr_assert_lt(from_args(&c, ctl_id, err, sizeof(err)), 0);
	cr_assert(strstr(err, "control character"), "%s", err);
	h2_config_free(&c);
}

Test(nbd_config, plaintext_listener_in_the_file_is_checked_with_its_line)
{
	struct h2_config c;
	char err[1024] = "";

	cr_assert_lt(load_text(&c,
			       "[server]\n"
			       "nbd_plain_identity = bench\n"
			       "nbd_plain_listen = 192.0.2.7:10810\n",
			       err, sizeof(err)),
		     0);
	cr_assert(strstr(err, ":3: [server] nbd_plain_listen"), "%s", err);
	cr_assert(strstr(err, "192.0.2.7:10810"), "%s", err);
	h2_config_free(&c);
	cr_assert_eq(load_text(&c,
			       "[server]\n"
			       "nbd_plain_listen = [::1]:10810\n"
			       "nbd_plain_identity = bench\n",
			       err, sizeof(err)),
		     0, "%s", err);
	cr_assert_str_eq(c.nbd_plain_listen, "[::1]:10810");
	cr_assert_str_eq(c.nbd_plain_identity, "bench");
	h2_config_free(&c);
}

Test(nbd_config, file_listener_with_flag_identity_is_complete)
{
	char path[] = "/tmp/h2-nbdconf-XXXXXX";
	const char *text = "[server]\nnbd_plain_listen = 127.0.0.1:0\n";
	int fd = mkstemp(path);
	char *args[] = {"serve",		"--config", path,
			"--nbd-plain-identity", "bench",    NULL};
	char *alone[] = {"serve", "--config", path, NULL};
	struct h2_config c;
	char err[1024] = "";
	int r;

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	r = from_args(&c, args, err, sizeof(err));
	h2_config_free(&c);
	cr_assert_eq(r, 0, "%s", err);
	r = from_args(&c, alone, err, sizeof(err));
	h2_config_free(&c);
	unlink(path);
	cr_assert_lt(r, 0, "the file alone lacks the identity");
	cr_assert(strstr(err, "nbd_plain_identity"), "%s", err);
}

Test(nbd_config, help_mentions_the_plaintext_flags)
{
	char *args[] = {"serve", "--help", NULL};
	struct h2_config c;
	char err[512], buf[8192] = "";
	FILE *f = tmpfile();
	int saved = dup(1);
	size_t n;

	cr_assert_not_null(f);
	fflush(stdout);
	dup2(fileno(f), 1);
	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 1);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	cr_assert(strstr(buf, "--nbd-plain-listen"), "%s", buf);
	cr_assert(strstr(buf, "--nbd-plain-identity"), "%s", buf);
	h2_config_free(&c);
}
