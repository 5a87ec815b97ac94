/*
 * The NBD frontend's setting: [server] nbd_listen and --nbd-listen,
 * default 127.0.0.1:10809, port 0 allowed, empty turns it off.
 */
#include <criterion/criterion.h>
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
