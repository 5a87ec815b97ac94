/*
 * The h2ctl binary's command line, run as a user would, for everything
 * that needs no server: help, usage errors (exit 2, a message and the
 * short usage on stderr, nothing sent anywhere), where the settings come
 * from, and a refused connection (exit 1, a message naming the address).
 *
 * Each run gets a clean environment (no H2_SERVER, no H2_TLS_DIR unless
 * the test sets them) and the test's temporary directory as its working
 * directory, so a developer's ./var/h2/tls cannot leak in.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef H2CTL_PATH
#error "H2CTL_PATH must name the h2ctl binary"
#endif

struct run {
	int status; /* exit code, or -1 if it did not exit normally */
	char *out;
	char *err;
};

static char dir[] = "/tmp/h2ctl-test-XXXXXX";

/* A path inside the test's temporary directory (rotating static buffers). */
static const char *tpath(const char *name)
{
	static char p[8][256];
	static int k;

	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* Whole contents of fd as a NUL-terminated string. */
static char *slurp(int fd)
{
	off_t n = lseek(fd, 0, SEEK_END);
	char *s;

	cr_assert_geq(n, 0);
	s = calloc(1, (size_t)n + 1);
	cr_assert_not_null(s);
	cr_assert_eq(pread(fd, s, (size_t)n, 0), n);
	return s;
}

/*
 * Run h2ctl with args (NULL-terminated) and only the environment
 * variables in env (NULL-terminated, may be NULL) besides PATH, in the
 * test's directory.
 */
static struct run h2ctl_env(const char *const *env, const char *const *args)
{
	const char *argv[32] = {H2CTL_PATH};
	const char *envp[16] = {"PATH=/usr/local/bin:/usr/bin:/bin"};
	int argc = 1, envc = 1, fo, fe, ws;
	struct run r = {0};
	char po[300], pe[300];
	pid_t pid;

	while (args[argc - 1] && argc < 31) {
		argv[argc] = args[argc - 1];
		argc++;
	}
	argv[argc] = NULL;
	while (env && env[envc - 1] && envc < 15) {
		envp[envc] = env[envc - 1];
		envc++;
	}
	envp[envc] = NULL;
	snprintf(po, sizeof(po), "%s/stdout", dir);
	snprintf(pe, sizeof(pe), "%s/stderr", dir);
	fo = open(po, O_RDWR | O_CREAT | O_TRUNC, 0600);
	fe = open(pe, O_RDWR | O_CREAT | O_TRUNC, 0600);
	cr_assert(fo >= 0 && fe >= 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(fo, 1);
		dup2(fe, 2);
		if (chdir(dir) != 0)
			_exit(126);
		execve(H2CTL_PATH, (char **)argv, (char **)envp);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
	r.out = slurp(fo);
	r.err = slurp(fe);
	close(fo);
	close(fe);
	return r;
}

/* h2ctl("volume", "list") with a clean environment. */
#define H2CTL(...) h2ctl_env(NULL, (const char *const[]){__VA_ARGS__, NULL})
/* The same with environment variables: ENV("H2_SERVER=..."). */
#define ENV(...) ((const char *const[]){__VA_ARGS__, NULL})

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* Assert an exit code, showing the output if it differs. */
#define EXPECT_EXIT(r, code)                                                   \
	cr_assert_eq((r).status, (code), "exit %d, stdout:\n%s\nstderr:\n%s",  \
		     (r).status, (r).out, (r).err)

/* Assert that haystack contains needle, showing it if not. */
#define EXPECT_HAS(haystack, needle)                                           \
	cr_assert(strstr((haystack), (needle)), "no \"%s\" in:\n%s", (needle), \
		  (haystack))

/*
 * "127.0.0.1:PORT" of a port nothing listens on: bind an ephemeral port,
 * note it and close it (nobody else gets it back this quickly).
 */
static const char *dead_server(void)
{
	static char addr[32];
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int s = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(s, 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&sa, &len), 0);
	close(s);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
	return addr;
}

/*
 * Real TLS files in tls_dir: a self-signed certificate serves as CA
 * (ca.crt) and as client certificate (client.crt, client.key), so that a
 * library that loads them before connecting gets that far.
 */
static const char *tls_dir(void)
{
	const char *d = tpath("tls");
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *n;
	char p[300];
	FILE *f;

	cr_assert(pk && x);
	cr_assert_eq(mkdir(d, 0700), 0);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
				   (const unsigned char *)"h2ctl-test", -1, -1,
				   0);
	X509_set_issuer_name(x, n);
	cr_assert_gt(X509_sign(x, pk, EVP_sha256()), 0);
	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", d, i ? "client.crt" : "ca.crt");
		cr_assert_not_null(f = fopen(p, "w"));
		cr_assert_eq(PEM_write_X509(f, x), 1);
		fclose(f);
	}
	snprintf(p, sizeof(p), "%s/client.key", d);
	cr_assert_not_null(f = fopen(p, "w"));
	cr_assert_eq(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
	return d;
}

TestSuite(h2ctl, .init = setup, .fini = teardown);

Test(h2ctl, help_lists_every_command_and_exits_0)
{
	static const char *const want[] = {"volume create NAME SIZE",
					   "volume list",
					   "volume info NAME",
					   "volume delete NAME [--recursive]",
					   "volume resize NAME SIZE",
					   "snapshot create VOLUME SNAPSHOT",
					   "snapshot list [VOLUME]",
					   "snapshot delete VOLUME SNAPSHOT",
					   "clone VOLUME@SNAPSHOT NEWVOLUME",
					   "rollback VOLUME SNAPSHOT [--force]",
					   "sync [VOLUME]",
					   "stat",
					   "write VOLUME OFFSET",
					   "read VOLUME OFFSET LENGTH",
					   "import VOLUME FILE",
					   "export VOLUME FILE",
					   "bench VOLUME",
					   "--server HOST:PORT",
					   "H2_TLS_DIR",
					   "--json"};
	const char *forms[][2] = {
	    {"--help", NULL}, {"-h", NULL}, {"help", NULL}};

	for (size_t f = 0; f < 3; f++) {
		struct run r = H2CTL(forms[f][0]);

		EXPECT_EXIT(r, 0);
		EXPECT_HAS(r.out, "usage: h2ctl");
		for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
			EXPECT_HAS(r.out, want[i]);
		cr_assert_str_empty(r.err);
		run_free(&r);
	}
}

Test(h2ctl, command_help_shows_that_command_whatever_the_form)
{
	struct run a = H2CTL("volume", "create", "--help");
	struct run b = H2CTL("--help", "volume", "create");
	struct run c = H2CTL("help", "volume", "create");
	struct run d = H2CTL("bench", "-h");

	EXPECT_EXIT(a, 0);
	EXPECT_EXIT(b, 0);
	EXPECT_EXIT(c, 0);
	EXPECT_EXIT(d, 0);
	EXPECT_HAS(a.out, "usage: h2ctl volume create NAME SIZE");
	cr_assert_str_eq(a.out, b.out);
	cr_assert_str_eq(a.out, c.out);
	EXPECT_HAS(d.out, "--pattern rand|seq");
	EXPECT_HAS(d.out, "--qd N");
	run_free(&a);
	run_free(&b);
	run_free(&c);
	run_free(&d);
}

Test(h2ctl, group_help_lists_only_its_commands)
{
	struct run r = H2CTL("volume", "--help");

	EXPECT_EXIT(r, 0);
	EXPECT_HAS(r.out, "volume resize NAME SIZE");
	cr_assert_null(strstr(r.out, "bench"), "%s", r.out);
	run_free(&r);
}

Test(h2ctl, version_exits_0)
{
	struct run r = H2CTL("--version");

	EXPECT_EXIT(r, 0);
	EXPECT_HAS(r.out, "h2ctl ");
	run_free(&r);
}

Test(h2ctl, no_command_is_a_usage_error)
{
	struct run r = H2CTL("--json");

	EXPECT_EXIT(r, 2);
	EXPECT_HAS(r.err, "missing command");
	EXPECT_HAS(r.err, "usage: h2ctl");
	cr_assert_str_empty(r.out);
	run_free(&r);
}

Test(h2ctl, unknown_command_exits_2_naming_it)
{
	struct run a = H2CTL("frobnicate");
	struct run b = H2CTL("volume", "frobnicate");
	struct run c = H2CTL("volume");

	EXPECT_EXIT(a, 2);
	EXPECT_HAS(a.err, "unknown command \"frobnicate\"");
	EXPECT_EXIT(b, 2);
	EXPECT_HAS(b.err, "unknown command \"volume frobnicate\"");
	EXPECT_HAS(b.err, "volume create");
	EXPECT_EXIT(c, 2);
	EXPECT_HAS(c.err, "volume list");
	run_free(&a);
	run_free(&b);
	run_free(&c);
}

Test(h2ctl, unknown_option_exits_2_naming_it)
{
	struct run a = H2CTL("--frob", "stat");
	struct run b = H2CTL("volume", "list", "--frob");

	EXPECT_EXIT(a, 2);
	EXPECT_HAS(a.err, "\"--frob\"");
	EXPECT_EXIT(b, 2);
	EXPECT_HAS(b.err, "unknown option \"--frob\"");
	EXPECT_HAS(b.err, "usage: h2ctl volume list");
	run_free(&a);
	run_free(&b);
}

Test(h2ctl, global_flag_without_value_exits_2)
{
	struct run a = H2CTL("stat", "--server");
	struct run b = H2CTL("stat", "--ca=");

	EXPECT_EXIT(a, 2);
	EXPECT_HAS(a.err, "--server needs a value");
	EXPECT_EXIT(b, 2);
	EXPECT_HAS(b.err, "--ca");
	run_free(&a);
	run_free(&b);
}

/*
 * Parameters hold their strings inline: Criterion copies the parameter
 * array into the worker process, where pointers would not be valid.
 */
struct bad_size {
	char size[24];
};

ParameterizedTestParameters(h2ctl, bad_size_exits_2_naming_it)
{
	static struct bad_size cases[] = {
	    {"12Q"},
	    {"-1"},
	    {"1.5G"},
	    {" 1G"},
	    {"1GX"},
	    {""},
	    {"99999999999999999999"},
	    {"20000000T"},
	};

	return cr_make_param_array(struct bad_size, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_size *c, h2ctl, bad_size_exits_2_naming_it)
{
	char quoted[64];
	/* "--" so that "-1" reaches the size parser, not the option parser. */
	struct run r = H2CTL("volume", "create", "--", "vm1", c->size);

	snprintf(quoted, sizeof(quoted), "\"%s\"", c->size);
	EXPECT_EXIT(r, 2);
	EXPECT_HAS(r.err, quoted);
	EXPECT_HAS(r.err, "usage: h2ctl volume create NAME SIZE");
	run_free(&r);
}

struct bad_args {
	char args[6][16];
	char says[32];
};

ParameterizedTestParameters(h2ctl, wrong_arguments_exit_2)
{
	static struct bad_args cases[] = {
	    {{"volume", "create", "vm1"}, "missing arguments"},
	    {{"volume", "create", "vm1", "1G", "extra"}, "too many arguments"},
	    {{"volume", "info"}, "missing arguments"},
	    {{"volume", "delete", "a", "b"}, "too many arguments"},
	    {{"volume", "resize", "vm1", "big"}, "invalid SIZE \"big\""},
	    {{"volume", "list", "x"}, "too many arguments"},
	    {{"stat", "vm1", "x"}, "too many arguments"},
	    {{"sync", "a", "b"}, "too many arguments"},
	    {{"read", "vm1", "0"}, "missing arguments"},
	    {{"read", "vm1", "0", "4Z"}, "invalid LENGTH \"4Z\""},
	    {{"write", "vm1", "x1"}, "invalid OFFSET \"x1\""},
	    {{"write", "vm1"}, "missing arguments"},
	    {{"import", "vm1"}, "missing arguments"},
	    {{"export", "vm1", "a", "b"}, "too many arguments"},
	    {{"bench"}, "missing arguments"},
	    {{"bench", "vm1", "--qd", "0"}, "--qd"},
	    {{"bench", "vm1", "--qd=abc"}, "--qd"},
	    {{"bench", "vm1", "--pattern", "zigzag"}, "zigzag"},
	    {{"bench", "vm1", "--rw", "both"}, "both"},
	    {{"bench", "vm1", "--bs", "0"}, "--bs"},
	    {{"bench", "vm1", "--time", "-3"}, "--time"},
	    {{"bench", "vm1", "--size", "12Q"}, "12Q"},
	    {{"bench", "vm1", "--frob"}, "unknown option \"--frob\""},
	    {{"snapshot", "create", "vm1"}, "missing arguments"},
	    {{"snapshot", "create", "vm1", "a", "b"}, "too many arguments"},
	    {{"snapshot", "create", "vm1@x", "s"}, "cannot contain '@'"},
	    {{"snapshot", "create", "vm1", "s@x"}, "cannot contain '@'"},
	    {{"snapshot", "delete", "vm1"}, "missing arguments"},
	    {{"snapshot", "list", "a", "b"}, "too many arguments"},
	    {{"snapshot", "list", "--all"}, "unknown option \"--all\""},
	    {{"clone", "vm1", "new"}, "names no snapshot"},
	    {{"clone", "vm1@", "new"}, "snapshot name must not be"},
	    {{"clone", "@s", "new"}, "volume name must not be"},
	    {{"clone", "vm1@a@b", "new"}, "cannot contain '@'"},
	    {{"clone", "vm1@s"}, "missing arguments"},
	    {{"rollback", "vm1"}, "missing arguments"},
	    {{"rollback", "vm1", "s", "x"}, "too many arguments"},
	    {{"rollback", "vm1", "s", "--frob"}, "unknown option \"--frob\""},
	    {{"volume", "delete", "vm1", "--force"}, "unknown option"},
	};

	return cr_make_param_array(struct bad_args, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_args *c, h2ctl, wrong_arguments_exit_2)
{
	/*
	 * The server is a dead port: a usage error must be found before
	 * connecting, or this would exit 1 with "cannot connect".
	 */
	const char *args[12] = {"--server", dead_server()};
	int n = 2;
	struct run r;

	for (int i = 0; i < 6 && c->args[i][0]; i++)
		args[n++] = c->args[i];
	args[n] = NULL;
	r = h2ctl_env(ENV("H2_TLS_DIR=/nonexistent"), args);
	EXPECT_EXIT(r, 2);
	EXPECT_HAS(r.err, c->says);
	EXPECT_HAS(r.err, "usage: h2ctl");
	cr_assert_str_empty(r.out);
	run_free(&r);
}

Test(h2ctl, connection_refused_exits_1_naming_the_address)
{
	const char *addr = dead_server();
	const char *tls = tls_dir();
	char ca[300], crt[300], key[300];
	struct run r;

	snprintf(ca, sizeof(ca), "--ca=%s/ca.crt", tls);
	snprintf(crt, sizeof(crt), "--cert=%s/client.crt", tls);
	snprintf(key, sizeof(key), "--key=%s/client.key", tls);
	/* Global flags after the command, as a user may type them. */
	r = H2CTL("volume", "list", "--server", addr, ca, crt, key);
	EXPECT_EXIT(r, 1);
	EXPECT_HAS(r.err, "h2ctl: ");
	EXPECT_HAS(r.err, "cannot connect to");
	EXPECT_HAS(r.err, addr);
	cr_assert_str_empty(r.out);
	run_free(&r);
}

Test(h2ctl, recursive_and_force_are_flags_anywhere)
{
	static const char *const cmds[][5] = {
	    {"volume", "delete", "--recursive", "vm1", NULL},
	    {"volume", "delete", "vm1", "--recursive", NULL},
	    {"rollback", "--force", "vm1", "s", NULL},
	    {"rollback", "vm1", "s", "--force", NULL},
	};
	char server[64], tlsdir[300];

	snprintf(server, sizeof(server), "H2_SERVER=%s", dead_server());
	snprintf(tlsdir, sizeof(tlsdir), "H2_TLS_DIR=%s", tls_dir());
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		/* Parsed: it goes as far as connecting (exit 1). */
		struct run r = h2ctl_env(ENV(server, tlsdir), cmds[i]);

		EXPECT_EXIT(r, 1);
		EXPECT_HAS(r.err, "cannot connect to");
		run_free(&r);
	}
}

Test(h2ctl, server_and_tls_come_from_the_environment)
{
	const char *addr = dead_server();
	char server[64], tlsdir[300];
	struct run r;

	snprintf(server, sizeof(server), "H2_SERVER=%s", addr);
	snprintf(tlsdir, sizeof(tlsdir), "H2_TLS_DIR=%s", tls_dir());
	r = h2ctl_env(ENV(server, tlsdir), ENV("--json", "stat"));
	EXPECT_EXIT(r, 1);
	EXPECT_HAS(r.err, addr);
	cr_assert_str_empty(r.out);
	run_free(&r);
}

Test(h2ctl, server_flag_beats_the_environment)
{
	const char *flag = dead_server();
	char env[64], tlsdir[300], flagcopy[32];
	struct run r;

	snprintf(flagcopy, sizeof(flagcopy), "%s", flag);
	snprintf(env, sizeof(env), "H2_SERVER=%s", "127.0.0.1:1");
	snprintf(tlsdir, sizeof(tlsdir), "H2_TLS_DIR=%s", tls_dir());
	r = h2ctl_env(ENV(env, tlsdir), ENV("--server", flagcopy, "stat"));
	EXPECT_EXIT(r, 1);
	EXPECT_HAS(r.err, flagcopy);
	cr_assert_null(strstr(r.err, "127.0.0.1:1:"), "%s", r.err);
	run_free(&r);
}

Test(h2ctl, dev_setup_tls_dir_is_used_when_nothing_else_is_set)
{
	const char *addr = dead_server();
	char cmd[600];
	struct run r;

	/* The layout "h2d serve --dev" leaves in its working directory. */
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p '%s/var/h2' && mv '%s' '%s/var/h2/tls'", dir,
		 tls_dir(), dir);
	cr_assert_eq(system(cmd), 0);
	r = H2CTL("--server", addr, "stat");
	EXPECT_EXIT(r, 1);
	EXPECT_HAS(r.err, "cannot connect to");
	EXPECT_HAS(r.err, addr);
	run_free(&r);
}

Test(h2ctl, without_tls_files_says_how_to_get_them)
{
	struct run r = H2CTL("volume", "list");

	EXPECT_EXIT(r, 1);
	EXPECT_HAS(r.err, "127.0.0.1:7410");
	EXPECT_HAS(r.err, "H2_TLS_DIR");
	EXPECT_HAS(r.err, "--ca");
	run_free(&r);
}

Test(h2ctl, unreadable_tls_file_is_named)
{
	const char *addr = dead_server();
	struct run r =
	    H2CTL("stat", "--server", addr, "--ca", "/nonexistent/ca.crt",
		  "--cert", "/x", "--key", "/y");

	EXPECT_EXIT(r, 1);
	EXPECT_HAS(r.err, "/nonexistent/ca.crt");
	run_free(&r);
}
