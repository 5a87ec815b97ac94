/*
 * h2d serve's configuration: defaults, the INI file, flags over the file,
 * and the --dev setup.
 */
#define _XOPEN_SOURCE 700
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "h2core.h"
#include "log.h"

static char tmpdir[64];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/h2-config-test-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void teardown(void)
{
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(config, .init = setup, .fini = teardown);

/* Write text to tmpdir/name; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
	return path;
}

/* Load text as a config file on top of the defaults: the result. */
static int load_text(struct h2_config *c, const char *text, char *err,
		     size_t errlen)
{
	h2_config_defaults(c);
	return h2_config_load(c, write_file("h2d.conf", text), err, errlen);
}

Test(config, defaults_match_documentation)
{
	struct h2_config c;

	h2_config_defaults(&c);
	cr_assert_null(c.device);
	cr_assert_eq(c.flush_interval_ms, 1000);
	cr_assert_eq(c.dirty_max, 256ull << 20);
	cr_assert_eq(c.dirty_hard, 0);
	cr_assert_eq(c.cache_max, 512ull << 20);
	cr_assert_str_eq(c.listen, "127.0.0.1:7410");
	cr_assert_null(c.metrics_listen, "the metrics endpoint is off");
	cr_assert_eq(c.workers, 4);
	cr_assert_eq(c.max_connections, 1024);
	cr_assert_eq(c.max_inflight, 64);
	cr_assert_eq(c.max_inflight_bytes, 32ull << 20);
	cr_assert_eq(c.handshake_timeout_ms, 10000);
	cr_assert_eq(c.log_level, H2_LOG_INFO);
	cr_assert_null(c.ready_file);
	cr_assert_null(c.tls_ca);
	cr_assert_null(c.tls_cert);
	cr_assert_null(c.tls_key);
	cr_assert_not(c.allow_tls12);
	cr_assert_null(c.acl);
	cr_assert_not(c.dev);
	cr_assert_null(c.config_path);
	h2_config_free(&c);
}

static const char good_file[] =
    "; h2d configuration\n"
    "[store]\n"
    "device = /var/lib/h2/store.img\n"
    "flush_interval_ms = 500\n"
    "dirty_max = 128M\n"
    "dirty_hard = 1G\n"
    "cache_max = 2GiB\n"
    "\n"
    "[server]\n"
    "listen = 0.0.0.0:0\n"
    "metrics_listen = 127.0.0.1:9410\n"
    "workers = 8\n"
    "max_connections = 10\n"
    "max_inflight = 16              ; requests read ahead\n"
    "max_inflight_bytes = 8M        ; payload in flight\n"
    "handshake_timeout_ms = 2500\n"
    "log_level = debug\n"
    "ready_file = /run/h2d/ready.json\n"
    "\n"
    "# TLS files\n"
    "[tls]\n"
    "ca = /etc/h2/tls/ca.crt\n"
    "cert = /etc/h2/tls/server.crt\n"
    "key = /etc/h2/tls/server.key\n"
    "allow_tls12 = yes\n"
    "\n"
    "[access]\n"
    "admin = admin:*\n"
    "alice = write:vm-*, read:golden-*\n"
    "* = read:public-*\n";

Test(config, good_file_sets_every_key)
{
	struct h2_config c;
	char err[512];
	const char *path;

	h2_config_defaults(&c);
	path = write_file("good.conf", good_file);
	cr_assert_eq(h2_config_load(&c, path, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.device, "/var/lib/h2/store.img");
	cr_assert_eq(c.flush_interval_ms, 500);
	cr_assert_eq(c.dirty_max, 128ull << 20);
	cr_assert_eq(c.dirty_hard, 1ull << 30);
	cr_assert_eq(c.cache_max, 2ull << 30);
	cr_assert_str_eq(c.listen, "0.0.0.0:0");
	cr_assert_str_eq(c.metrics_listen, "127.0.0.1:9410");
	cr_assert_eq(c.workers, 8);
	cr_assert_eq(c.max_connections, 10);
	cr_assert_eq(c.max_inflight, 16);
	cr_assert_eq(c.max_inflight_bytes, 8ull << 20);
	cr_assert_eq(c.handshake_timeout_ms, 2500);
	cr_assert_eq(c.log_level, H2_LOG_DEBUG);
	cr_assert_str_eq(c.ready_file, "/run/h2d/ready.json");
	cr_assert_str_eq(c.tls_ca, "/etc/h2/tls/ca.crt");
	cr_assert_str_eq(c.tls_cert, "/etc/h2/tls/server.crt");
	cr_assert_str_eq(c.tls_key, "/etc/h2/tls/server.key");
	cr_assert(c.allow_tls12);
	cr_assert_str_eq(c.config_path, path);
	cr_assert_not_null(c.acl);
	cr_assert_eq(h2_acl_rights(c.acl, "admin", "x"), H2_RIGHT_ADMIN);
	cr_assert_eq(h2_acl_rights(c.acl, "alice", "vm-1"), H2_RIGHT_WRITE);
	cr_assert_eq(h2_acl_rights(c.acl, "alice", "golden-1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(c.acl, "alice", "public-1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(c.acl, "alice", "db"), H2_RIGHT_NONE);
	h2_config_free(&c);
}

Test(config, keys_absent_from_file_keep_their_values)
{
	struct h2_config c;
	char err[512];

	cr_assert_eq(load_text(&c, "[server]\nworkers = 2\n", err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(c.workers, 2);
	cr_assert_eq(c.max_inflight, 64);
	cr_assert_str_eq(c.listen, "127.0.0.1:7410");
	cr_assert_null(c.acl, "no [access]: no rule list");
	h2_config_free(&c);
}

struct bad_file {
	char text[96];
	char want[2][64]; /* both must appear in the error */
};

ParameterizedTestParameters(config, bad_file_error_names_line_and_key)
{
	static struct bad_file cases[] = {
	    {"[store]\ndevice = /d\n\nbogus = 1\n", {":4:", "\"bogus\""}},
	    {"[store]\nworkers = 4\n", {":2:", "unknown key \"workers\""}},
	    {"[server]\n[stor]\n", {":2:", "unknown section [stor]"}},
	    {"[stor]\ndevice = /d\n", {":1:", "[stor]"}},
	    {"device = /d\n", {":1:", "before any section"}},
	    {"[store]\ndirty_max = 12Q\n", {":2: [store] dirty_max", "12Q"}},
	    {"[store]\ndirty_max = -1\n", {"dirty_max", "not a size"}},
	    {"[store]\ncache_max = 99999999999999999999\n",
	     {":2:", "too large"}},
	    {"[server]\nworkers = 0\n", {":2: [server] workers", "between 1"}},
	    {"[server]\nworkers = four\n", {"workers", "\"four\""}},
	    {"[server]\nlisten = localhost\n", {":2:", "HOST:PORT"}},
	    {"[server]\nlisten = 1.2.3.4:70000\n", {"listen", "HOST:PORT"}},
	    {"[server]\nlog_level = loud\n", {"log_level", "\"loud\""}},
	    {"[tls]\nallow_tls12 = maybe\n", {"allow_tls12", "true or false"}},
	    {"[tls]\nca =\n", {":2: [tls] ca", "empty"}},
	    {"[server]\nworkers = 2\nworkers = 3\n", {":3:", "line 2"}},
	    {"[access]\nalice = rw:vm-*\n", {":2", "unknown right \"rw\""}},
	    {"[access]\nalice = read\n", {":2", "no colon"}},
	    {"[store]\nthis line has no equals sign\n", {":2:", "syntax"}},
	    {"[store\n", {":1:", "syntax"}},
	    {"[store]\ndirty_max = 1G\ndirty_hard = 512M\n",
	     {"dirty_hard", "below dirty_max"}},
	};

	return cr_make_param_array(struct bad_file, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_file *b, config, bad_file_error_names_line_and_key)
{
	struct h2_config c;
	char err[512] = "";

	cr_assert_eq(load_text(&c, b->text, err, sizeof(err)), -EINVAL,
		     "accepted:\n%s", b->text);
	cr_assert_not_null(strstr(err, "h2d.conf"), "no file name: %s", err);
	for (int i = 0; i < 2; i++)
		cr_assert_not_null(strstr(err, b->want[i]),
				   "want \"%s\" in \"%s\"", b->want[i], err);
	h2_config_free(&c);
}

Test(config, line_too_long_for_the_parser_is_rejected)
{
	struct h2_config c;
	char text[600], err[512];

	snprintf(text, sizeof(text), "[store]\ndevice = /%0400d\n", 0);
	cr_assert_eq(load_text(&c, text, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, ":2:"), "%s", err);
	cr_assert_not_null(strstr(err, "longer than"), "%s", err);
	h2_config_free(&c);
}

Test(config, line_exactly_at_the_parser_limit_is_accepted)
{
	struct h2_config c;
	char text[600], err[512];

	/* 199 characters and the newline fill inih's 200-byte buffer. */
	snprintf(text, sizeof(text),
		 "[store]\ndevice = /%0189d\n"
		 "[server]\nworkers = 3\n",
		 0);
	cr_assert_eq(load_text(&c, text, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(strlen(c.device), 190);
	cr_assert_eq(c.workers, 3);
	h2_config_free(&c);
}

Test(config, missing_file_error_names_the_path)
{
	struct h2_config c;
	char err[512];

	h2_config_defaults(&c);
	cr_assert_eq(
	    h2_config_load(&c, "/nonexistent/h2d.conf", err, sizeof(err)),
	    -ENOENT);
	cr_assert_not_null(strstr(err, "/nonexistent/h2d.conf"), "%s", err);
	cr_assert_not_null(strstr(err, "No such file"), "%s", err);
	h2_config_free(&c);
}

/* Run h2_config_from_args on defaults with the NULL-terminated args. */
static int from_args(struct h2_config *c, char **args, char *err, size_t errlen)
{
	int argc = 0;

	while (args[argc])
		argc++;
	h2_config_defaults(c);
	return h2_config_from_args(c, argc, args, err, errlen);
}

Test(config, flags_override_the_file)
{
	struct h2_config c;
	char err[512], path[128];

	snprintf(path, sizeof(path), "%s", write_file("f.conf", good_file));
	char *args[] = {
	    "serve",	     "--config",    path,	   "--workers", "2",
	    "--listen",	     "[::1]:0",	    "--dirty-max", "64M",	"--ca",
	    "/other/ca.crt", "--log-level", "warn",	   NULL};

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.workers, 2);
	cr_assert_str_eq(c.listen, "[::1]:0");
	cr_assert_eq(c.dirty_max, 64ull << 20);
	cr_assert_str_eq(c.tls_ca, "/other/ca.crt");
	cr_assert_eq(c.log_level, H2_LOG_WARN);
	/* Not given as flags: from the file. */
	cr_assert_eq(c.max_inflight, 16);
	cr_assert_str_eq(c.tls_cert, "/etc/h2/tls/server.crt");
	cr_assert_str_eq(c.config_path, path);
	h2_config_free(&c);
}

Test(config, config_flag_is_applied_first_wherever_it_appears)
{
	struct h2_config c;
	char err[512], path[128];

	snprintf(path, sizeof(path), "%s",
		 write_file("f.conf", "[server]\nworkers = 8\nmax_inflight = "
				      "5\n"));
	char *args[] = {"serve", "--workers", "2", "--config", path, NULL};

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.workers, 2, "the flag must win over the later file");
	cr_assert_eq(c.max_inflight, 5);
	h2_config_free(&c);
}

Test(config, access_flag_is_repeatable_and_adds_to_file_rules)
{
	struct h2_config c;
	char err[512], path[128];

	snprintf(path, sizeof(path), "%s",
		 write_file("f.conf", "[access]\nadmin = admin:*\n"));
	char *args[] = {"serve",
			"--access",
			"alice=write:vm-*",
			"--config",
			path,
			"--access",
			" bob = read:vm-*, read:db1",
			"--access=alice=read:golden-*",
			NULL};

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h2_acl_rights(c.acl, "admin", "x"), H2_RIGHT_ADMIN);
	cr_assert_eq(h2_acl_rights(c.acl, "alice", "vm-1"), H2_RIGHT_WRITE);
	cr_assert_eq(h2_acl_rights(c.acl, "alice", "golden-1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(c.acl, "bob", "vm-1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(c.acl, "bob", "db1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(c.acl, "bob", "golden-1"), H2_RIGHT_NONE);
	h2_config_free(&c);
}

/*
 * SIGHUP's rules: the file as it is now, plus every --access and --dev
 * rule, whatever the file says (once, flag rules were dropped when the
 * file had [access], and a removed [access] section kept its rules).
 */
Test(config, reload_keeps_flag_rules_and_follows_the_file)
{
	struct h2_config c;
	struct h2_acl *acl = NULL;
	char err[512], path[128];

	snprintf(path, sizeof(path), "%s",
		 write_file("f.conf", "[access]\nbob = read:*\n"));
	char *args[] = {"serve",    "--config",		path,
			"--access", "carol=write:vm-*", NULL};

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h2_acl_rights(c.acl, "bob", "vm-1"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(c.acl, "carol", "vm-1"), H2_RIGHT_WRITE);

	/* The file's [access] changes: its new rules, the flag's too. */
	write_file("f.conf", "[access]\nbob = write:db*\ndave = read:*\n");
	cr_assert_eq(h2_config_reload_access(&c, &acl, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(h2_acl_rights(acl, "bob", "vm-1"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(acl, "bob", "db1"), H2_RIGHT_WRITE);
	cr_assert_eq(h2_acl_rights(acl, "dave", "x"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "carol", "vm-1"), H2_RIGHT_WRITE);
	h2_acl_free(acl);

	/* The section is gone: so are its rules; the flag's stay. */
	write_file("f.conf", "[server]\nworkers = 2\n");
	acl = NULL;
	cr_assert_eq(h2_config_reload_access(&c, &acl, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(h2_acl_rights(acl, "bob", "db1"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(acl, "dave", "x"), H2_RIGHT_NONE);
	cr_assert_eq(h2_acl_rights(acl, "carol", "vm-1"), H2_RIGHT_WRITE);
	h2_acl_free(acl);

	/* A file that no longer loads changes nothing and says why. */
	write_file("f.conf", "[access]\nbob = frobnicate:*\n");
	acl = NULL;
	cr_assert_lt(h2_config_reload_access(&c, &acl, err, sizeof(err)), 0);
	cr_assert_null(acl);
	cr_assert(strstr(err, "f.conf"), "%s", err);
	/* c itself was not touched. */
	cr_assert_eq(h2_acl_rights(c.acl, "bob", "vm-1"), H2_RIGHT_READ);
	h2_config_free(&c);
}

Test(config, reload_without_a_file_or_rules_is_empty_or_flags_only)
{
	struct h2_config c;
	struct h2_acl *acl = (struct h2_acl *)1;
	char err[512];
	char *none[] = {"serve", NULL};
	char *flags[] = {"serve", "--access", "eve=read:pub", NULL};

	cr_assert_eq(from_args(&c, none, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h2_config_reload_access(&c, &acl, err, sizeof(err)), 0);
	cr_assert_null(acl);
	h2_config_free(&c);
	cr_assert_eq(from_args(&c, flags, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h2_config_reload_access(&c, &acl, err, sizeof(err)), 0);
	cr_assert_eq(h2_acl_rights(acl, "eve", "pub"), H2_RIGHT_READ);
	cr_assert_eq(h2_acl_rights(acl, "eve", "other"), H2_RIGHT_NONE);
	h2_acl_free(acl);
	h2_config_free(&c);
}

Test(config, every_documented_flag_is_recognized)
{
	struct h2_config c;
	char err[512];
	char *args[] = {"serve",
			"--device",
			"/dev/nvme0n1",
			"--listen",
			"127.0.0.1:9000",
			"--metrics-listen",
			"[::1]:0",
			"--ca",
			"/a",
			"--cert",
			"/b",
			"--key",
			"/c",
			"--allow-tls12",
			"--access",
			"u=read:*",
			"--flush-interval",
			"250",
			"--dirty-max",
			"1M",
			"--dirty-hard",
			"3M",
			"--cache-max",
			"16M",
			"--workers",
			"5",
			"--max-connections",
			"7",
			"--max-inflight",
			"9",
			"--max-inflight-bytes",
			"2M",
			"--log-level",
			"error",
			"--ready-file",
			"/run/r.json",
			"--dev",
			NULL};

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.device, "/dev/nvme0n1");
	cr_assert_str_eq(c.listen, "127.0.0.1:9000");
	cr_assert_str_eq(c.metrics_listen, "[::1]:0");
	cr_assert_str_eq(c.tls_ca, "/a");
	cr_assert_str_eq(c.tls_cert, "/b");
	cr_assert_str_eq(c.tls_key, "/c");
	cr_assert(c.allow_tls12);
	cr_assert_eq(h2_acl_rights(c.acl, "u", "v"), H2_RIGHT_READ);
	cr_assert_eq(c.flush_interval_ms, 250);
	cr_assert_eq(c.dirty_max, 1ull << 20);
	cr_assert_eq(c.dirty_hard, 3ull << 20);
	cr_assert_eq(c.cache_max, 16ull << 20);
	cr_assert_eq(c.workers, 5);
	cr_assert_eq(c.max_connections, 7);
	cr_assert_eq(c.max_inflight, 9);
	cr_assert_eq(c.max_inflight_bytes, 2ull << 20);
	cr_assert_eq(c.log_level, H2_LOG_ERROR);
	cr_assert_str_eq(c.ready_file, "/run/r.json");
	cr_assert(c.dev);
	h2_config_free(&c);
}

Test(config, help_returns_1_and_prints_usage, .init = cr_redirect_stdout)
{
	struct h2_config c;
	char err[512];
	char *args[] = {"serve", "--workers", "2", "--help", NULL};
	char out[4096];
	FILE *f;
	size_t n;

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 1);
	h2_config_free(&c);
	fflush(stdout);
	f = cr_get_redirected_stdout(); /* read end; at EOF once we are done */
	n = fread(out, 1, sizeof(out) - 1, f);
	fclose(f);
	out[n] = '\0';
	cr_assert_not_null(strstr(out, "usage: h2d serve"), "%s", out);
	cr_assert_not_null(strstr(out, "--max-inflight-bytes"), "%s", out);
}

Test(config, short_h_is_help_too, .init = cr_redirect_stdout)
{
	struct h2_config c;
	char err[512];
	char *args[] = {"serve", "-h", NULL};

	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 1);
	h2_config_free(&c);
}

struct bad_flags {
	char args[5][24]; /* inline, "" ends it: workers are other processes */
	char want[48];
};

ParameterizedTestParameters(config, bad_flags_are_rejected_with_a_reason)
{
	static struct bad_flags cases[] = {
	    {{"serve", "--bogus"}, "unknown or ambiguous option --bogus"},
	    {{"serve", "-x"}, "option -x"},
	    {{"serve", "--workers"}, "--workers needs a value"},
	    {{"serve", "--workers", "many"}, "--workers: \"many\""},
	    {{"serve", "--dirty-max", "1X"}, "not a size"},
	    {{"serve", "--log-level", "chatty"}, "not a log level"},
	    {{"serve", "--access", "alice"}, "IDENTITY=RIGHT:PATTERN"},
	    {{"serve", "--access", "alice=rw:*"}, "unknown right"},
	    {{"serve", "--listen", "nope"}, "HOST:PORT"},
	    {{"serve", "--dirty", "1M"}, "ambiguous option --dirty"},
	    {{"serve", "stray"}, "unexpected argument \"stray\""},
	    {{"serve", "--config", "/nonexistent.conf"}, "/nonexistent.conf"},
	    {{"serve", "--dirty-max", "1G", "--dirty-hard", "1M"},
	     "below dirty_max"},
	};

	return cr_make_param_array(struct bad_flags, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_flags *b, config,
		  bad_flags_are_rejected_with_a_reason)
{
	struct h2_config c;
	char err[512] = "", *argv[6] = {NULL};
	int argc = 0;

	while (argc < 5 && b->args[argc][0]) {
		argv[argc] = b->args[argc];
		argc++;
	}
	h2_config_defaults(&c);
	cr_assert_lt(h2_config_from_args(&c, argc, argv, err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, b->want), "want \"%s\" in \"%s\"",
			   b->want, err);
	h2_config_free(&c);
}

Test(config, from_args_can_run_twice)
{
	struct h2_config c;
	char err[512];
	char *args1[] = {"serve", "--workers", "3", "--bogus", NULL};
	char *args2[] = {"serve", "--max-inflight", "7", NULL};

	cr_assert_eq(from_args(&c, args1, err, sizeof(err)), -EINVAL);
	h2_config_free(&c);
	cr_assert_eq(from_args(&c, args2, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.max_inflight, 7);
	cr_assert_eq(c.workers, 4, "state leaked from the first parse");
	h2_config_free(&c);
}

Test(config, free_zeroes_and_tolerates_a_second_call)
{
	struct h2_config c;
	char err[512];

	cr_assert_eq(load_text(&c, good_file, err, sizeof(err)), 0, "%s", err);
	h2_config_free(&c);
	cr_assert_null(c.device);
	cr_assert_null(c.acl);
	cr_assert_null(c.listen);
	h2_config_free(&c);
	h2_config_free(NULL);
}

Test(config, dev_creates_store_certificates_and_admin_rule)
{
	struct h2_config c;
	struct h2_dev *dev;
	struct stat st, st2;
	char err[1024];

	cr_assert_eq(chdir(tmpdir), 0);
	h2_config_defaults(&c);
	cr_assert_eq(h2_config_apply_dev(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.device, "./var/h2/store.img");
	cr_assert_str_eq(c.tls_ca, "./var/h2/tls/ca.crt");
	cr_assert_str_eq(c.tls_cert, "./var/h2/tls/server.crt");
	cr_assert_str_eq(c.tls_key, "./var/h2/tls/server.key");
	cr_assert_str_eq(c.listen, "127.0.0.1:7410");
	cr_assert_eq(h2_acl_rights(c.acl, "admin", "anything"), H2_RIGHT_ADMIN);
	/* A reload keeps it (no file, no flags: that rule alone). */
	{
		struct h2_acl *acl = NULL;

		cr_assert_eq(
		    h2_config_reload_access(&c, &acl, err, sizeof(err)), 0,
		    "%s", err);
		cr_assert_eq(h2_acl_rights(acl, "admin", "x"), H2_RIGHT_ADMIN);
		h2_acl_free(acl);
	}

	cr_assert_eq(stat("var/h2", &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0700);
	cr_assert_eq(stat("var/h2/store.img", &st), 0);
	cr_assert_eq(st.st_size, 4ll << 30);
	cr_assert_lt(st.st_blocks * 512, 1ll << 30, "the image is not sparse");
	cr_assert_eq(stat("var/h2/tls/client.key", &st2), 0);
	cr_assert_eq(st2.st_mode & 07777, 0600);
	cr_assert_eq(h2_dev_open_file("var/h2/store.img", H2_DEV_RDONLY, &dev),
		     0);
	cr_assert(h2_store_probe(dev), "the dev store is not formatted");
	h2_dev_close(dev);
	h2_config_free(&c);

	/* A second run keeps the store (no reformat). */
	h2_config_defaults(&c);
	cr_assert_eq(h2_config_apply_dev(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(stat("var/h2/store.img", &st2), 0);
	cr_assert_eq(st2.st_ino, st.st_ino);
	cr_assert_eq(st2.st_mtim.tv_sec, st.st_mtim.tv_sec);
	cr_assert_eq(st2.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
	h2_config_free(&c);
}

Test(config, dev_fills_only_what_is_missing)
{
	struct h2_config c;
	char err[1024];
	char *args[] = {"serve",     "--dev",	     "--device",
			"/dev/null", "--cert",	     "/my/server.crt",
			"--access",  "alice=read:*", NULL};

	cr_assert_eq(chdir(tmpdir), 0);
	cr_assert_eq(from_args(&c, args, err, sizeof(err)), 0, "%s", err);
	cr_assert(c.dev);
	cr_assert_eq(h2_config_apply_dev(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.device, "/dev/null");
	cr_assert_str_eq(c.tls_cert, "/my/server.crt");
	cr_assert_str_eq(c.tls_ca, "./var/h2/tls/ca.crt");
	cr_assert_eq(access("var/h2/store.img", F_OK), -1,
		     "a store was made though --device was given");
	cr_assert_eq(h2_acl_rights(c.acl, "admin", "x"), H2_RIGHT_ADMIN,
		     "the dev admin rule is added to the given rules");
	cr_assert_eq(h2_acl_rights(c.acl, "alice", "x"), H2_RIGHT_READ);
	h2_config_free(&c);
}

Test(config, dev_error_names_the_directory)
{
	struct h2_config c;
	char err[1024];

	cr_assert_eq(chdir(tmpdir), 0);
	write_file("var", "a file where the directory should be\n");
	h2_config_defaults(&c);
	cr_assert_lt(h2_config_apply_dev(&c, err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, "./var"), "%s", err);
	h2_config_free(&c);
}

Test(config, metrics_listen_is_checked_and_empty_turns_it_off)
{
	char *off[] = {"serve", "--metrics-listen", "", NULL};
	char *bad[] = {"serve", "--metrics-listen", "9410", NULL};
	struct h2_config c;
	char err[512] = "";

	cr_assert_eq(from_args(&c, off, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.metrics_listen, "");
	h2_config_free(&c);
	cr_assert_lt(from_args(&c, bad, err, sizeof(err)), 0);
	cr_assert(strstr(err, "--metrics-listen") && strstr(err, "HOST:PORT"),
		  "%s", err);
	h2_config_free(&c);
	cr_assert_lt(load_text(&c, "[server]\nmetrics_listen = nowhere\n", err,
			       sizeof(err)),
		     0);
	cr_assert(strstr(err, "metrics_listen"), "%s", err);
	h2_config_free(&c);
}
