/*
 * The NBD frontend against the real tools from Debian: libnbd's nbdinfo,
 * nbdcopy and nbdsh, qemu-img, fio's nbd engine, plus raw sockets for
 * what no polite client sends.  Every test runs over TLS with client
 * certificates, in libnbd's tls-certificates layout, which is also
 * qemu's tls-creds-x509 layout (ca-cert.pem, client-cert.pem,
 * client-key.pem).  A missing tool skips its test with the package to
 * install (scripts/install-deps installs them all).
 */
#include <arpa/inet.h>
#include <cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "nbd_proto.h"

#ifndef H2CTL_PATH
#error "H2CTL_PATH must name the h2ctl binary"
#endif

#define KiB (1024ull)
#define MiB (1024ull * 1024)

static struct h2t_srv srv;

static void teardown(void)
{
	h2t_cleanup(&srv);
}

/* ---------------------------------------------------------------------- */
/* Helpers.                                                               */

/* Skip unless tool is on PATH. */
static void need_tool(const char *tool, const char *package)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	if (system(cmd) != 0)
		cr_skip_test("%s is not installed (Debian package %s; "
			     "scripts/install-deps installs it)",
			     tool, package);
}

/* nbdsh runs "python3 -m nbd": Debian's python3, not another on PATH. */
#define NBDSH "env PATH=/usr/bin:/bin:$PATH nbdsh"

static void need_nbdsh(void)
{
	need_tool("nbdsh", "python3-libnbd");
	if (system(NBDSH " -c pass >/dev/null 2>&1") != 0)
		cr_skip_test("nbdsh cannot load the nbd Python module "
			     "(Debian package python3-libnbd)");
}

/*
 * Run a shell command (bounded by timeout), output and errors into *out
 * (caller frees).  Returns the exit status, or -1.
 */
static int sh(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...)
{
	char cmd[8192], buf[4096];
	size_t len = 0, cap = 1;
	char *s = calloc(1, 1);
	va_list ap;
	FILE *f;
	size_t n;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd) - 32, fmt, ap);
	va_end(ap);
	strcat(cmd, " 2>&1");
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = (len + n + 1) * 2;
			s = realloc(s, cap);
			cr_assert_not_null(s);
		}
		memcpy(s + len, buf, n);
		len += n;
		s[len] = 0;
	}
	st = pclose(f);
	if (out)
		*out = s;
	else
		free(s);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void copy_file(const char *from, const char *to)
{
	char buf[8192];
	FILE *a = fopen(from, "rb"), *b;
	size_t n;

	cr_assert_not_null(a, "open %s", from);
	b = fopen(to, "wb");
	cr_assert_not_null(b, "create %s", to);
	while ((n = fread(buf, 1, sizeof(buf), a)) > 0)
		cr_assert_eq(fwrite(buf, 1, n, b), n);
	fclose(a);
	cr_assert_eq(fclose(b), 0);
}

/*
 * DIR/name/ in libnbd's and qemu's layout: the server's CA, and (unless
 * crt is NULL) a client certificate and key.  Returns the directory.
 */
static const char *tls_dir(const char *name, const char *crt, const char *key)
{
	static char dirs[4][256];
	static int k;
	char *d = dirs[k++ % 4], p[512], ca[512];

	snprintf(d, 256, "%s/%s", srv.dir, name);
	cr_assert(mkdir(d, 0700) == 0 || errno == EEXIST);
	snprintf(ca, sizeof(ca), "%s/ca.crt", srv.tls);
	snprintf(p, sizeof(p), "%s/ca-cert.pem", d);
	copy_file(ca, p);
	if (crt) {
		snprintf(p, sizeof(p), "%s/client-cert.pem", d);
		copy_file(crt, p);
		snprintf(p, sizeof(p), "%s/client-key.pem", d);
		copy_file(key, p);
	}
	return d;
}

/* The development admin's directory. */
static const char *admin_dir(void)
{
	char crt[256], key[256];

	snprintf(crt, sizeof(crt), "%s/client.crt", srv.tls);
	snprintf(key, sizeof(key), "%s/client.key", srv.tls);
	return tls_dir("nbd-admin", crt, key);
}

/* A client certificate for identity (from another CA if other_ca), in
 * its own directory. */
static const char *user_dir_files(const char *identity, bool other_ca)
{
	char crt[256], key[256], dname[64];

	h2t_issue_client(&srv, identity, identity, 30, other_ca);
	snprintf(crt, sizeof(crt), "%s/%s.crt", srv.dir, identity);
	snprintf(key, sizeof(key), "%s/%s.key", srv.dir, identity);
	snprintf(dname, sizeof(dname), "nbd-%s", identity);
	return tls_dir(dname, crt, key);
}

/* nbds:// URI of export with the certificates in dir. */
static const char *uri(const char *export, const char *dir)
{
	static char u[4][600];
	static int k;
	char *s = u[k++ % 4];

	snprintf(s, 600, "nbds://%s/%s?tls-certificates=%s", srv.nbd, export,
		 dir);
	return s;
}

static unsigned nbd_port(void)
{
	return (unsigned)atoi(strrchr(srv.nbd, ':') + 1);
}

/* Start h2d with NBD on a free port and the given extra flags. */
static void start(const char *const *more)
{
	const char *extra[16] = {"--nbd-listen", "127.0.0.1:0"};
	int n = 2;

	for (int i = 0; more && more[i] && n < 15; i++)
		extra[n++] = more[i];
	extra[n] = NULL;
	h2t_start(&srv, extra);
	cr_assert(srv.nbd[0], "no \"nbd_listen\" in the ready file");
}

/* Stop h2d with SIGTERM: it must exit 0 (in sanitizer builds, also
 * without leaks or errors on the way). */
static void stop_clean(void)
{
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0, "h2d did not stop cleanly");
}

static void create_volume(const char *name, uint64_t size)
{
	h2_client *c = h2t_connect(&srv);

	cr_assert_eq(h2_volume_create(c, name, size), 0, "create %s: %s", name,
		     h2_last_error());
	h2_disconnect(c);
}

/* Write len bytes of pattern seed at off through the native protocol. */
static void native_write(const char *name, uint64_t off, size_t len,
			 uint64_t seed)
{
	h2_client *c = h2t_connect(&srv);
	h2_volume *v;
	void *buf = malloc(len);

	h2t_pattern(buf, len, seed);
	cr_assert_eq(h2_volume_open(c, name, H2_OPEN_RW, &v), 0);
	cr_assert_eq(h2_pwrite(v, buf, len, off, 0), 0);
	h2_volume_close(v);
	h2_disconnect(c);
	free(buf);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *s;
	long n;

	cr_assert_not_null(f, "open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	s = malloc((size_t)n + 1);
	cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
	s[n] = 0;
	fclose(f);
	if (len)
		*len = (size_t)n;
	return s;
}

static bool log_has(const char *what)
{
	char *log = slurp(h2t_path(&srv, "h2d.log"), NULL);
	bool r = strstr(log, what) != NULL;

	free(log);
	return r;
}

/* h2ctl read VOLUME OFF LEN FILE against srv; the bytes. */
static char *h2ctl_read(const char *vol, uint64_t off, uint64_t len)
{
	char *out, *data;
	size_t n;
	int r;

	r = sh(&out,
	       "H2_SERVER=%s H2_TLS_DIR=%s timeout 60 %s read %s %llu %llu %s",
	       srv.addr, srv.tls, H2CTL_PATH, vol, (unsigned long long)off,
	       (unsigned long long)len, h2t_path(&srv, "h2ctl.out"));
	cr_assert_eq(r, 0, "h2ctl read: %s", out);
	free(out);
	data = slurp(h2t_path(&srv, "h2ctl.out"), &n);
	cr_assert_eq(n, len);
	return data;
}

/* A sparse raw image: size bytes, pattern data in the given ranges. */
static void make_image(const char *path, uint64_t size, const uint64_t *ranges,
		       size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	for (size_t i = 0; i < n; i += 2) {
		size_t len = (size_t)ranges[i + 1];
		void *buf = malloc(len);

		h2t_pattern(buf, len, ranges[i]);
		cr_assert_eq(pwrite(fd, buf, len, (off_t)ranges[i]),
			     (ssize_t)len);
		free(buf);
	}
	close(fd);
}

/* cJSON: a boolean member must be set to want. */
static void json_bool(const cJSON *o, const char *key, bool want)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	cr_assert(cJSON_IsBool(v), "\"%s\" missing", key);
	cr_assert_eq(cJSON_IsTrue(v), want, "\"%s\" is %s", key,
		     cJSON_IsTrue(v) ? "true" : "false");
}

static double json_num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	cr_assert(cJSON_IsNumber(v), "\"%s\" missing", key);
	return v->valuedouble;
}

/* nbdinfo --json for export: the export object (the document in *doc). */
static const cJSON *nbdinfo(const char *u, cJSON **doc)
{
	char *out;
	const cJSON *ex;
	int r = sh(&out, "timeout 60 nbdinfo --json '%s'", u);

	cr_assert_eq(r, 0, "nbdinfo failed: %s", out);
	*doc = cJSON_Parse(out);
	cr_assert_not_null(*doc, "not JSON: %s", out);
	free(out);
	json_bool(*doc, "TLS", true);
	json_bool(*doc, "structured", true);
	ex = cJSON_GetArrayItem(
	    cJSON_GetObjectItemCaseSensitive(*doc, "exports"), 0);
	cr_assert_not_null(ex);
	return ex;
}

/* A plain TCP connection to the NBD port. */
static int tcp_connect(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {30, 0}; /* guards against hangs only */
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	sa.sin_port = htons((uint16_t)nbd_port());
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void recv_all(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);

		cr_assert_gt(n, 0,
			     "connection closed or timed out after %zu "
			     "of %zu bytes",
			     got, len);
		got += (size_t)n;
	}
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

/* Greeting in, client flags out: option haggling may start. */
static int raw_hello(void)
{
	uint8_t g[NBD_GREETING_SIZE], f[4];
	int fd = tcp_connect();

	recv_all(fd, g, sizeof(g));
	cr_assert_eq(be32(g), 0x4e42444d, "NBDMAGIC");
	cr_assert_eq(be32(g + 8), 0x49484156, "IHAVEOPT");
	put32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	cr_assert_eq(send(fd, f, 4, 0), 4);
	return fd;
}

static void raw_opt(int fd, uint32_t opt, const void *data, uint32_t len,
		    uint32_t claimed)
{
	uint8_t h[NBD_OPT_HDR_SIZE];

	put64(h, NBD_IHAVEOPT);
	put32(h + 8, opt);
	put32(h + 12, claimed);
	cr_assert_eq(send(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	if (len)
		cr_assert_eq(send(fd, data, len, 0), (ssize_t)len);
}

/* One option reply: its type (data discarded). */
static uint32_t raw_rep(int fd, uint32_t opt)
{
	uint8_t h[NBD_REP_HDR_SIZE], junk[4096];
	uint32_t len;

	recv_all(fd, h, sizeof(h));
	cr_assert_eq(be32(h + 8), opt);
	len = be32(h + 16);
	cr_assert_leq(len, sizeof(junk));
	recv_all(fd, junk, len);
	return be32(h + 12);
}

static bool closed_by_server(int fd)
{
	char c;

	return recv(fd, &c, 1, 0) == 0;
}

/* ---------------------------------------------------------------------- */
/* nbdinfo.                                                               */

Test(nbd_interop, nbdinfo_json_shows_size_flags_and_base_allocation,
     .fini = teardown)
{
	static const char *const more[] = {"--access", "reader=read:*", NULL};
	const cJSON *ex, *ctx;
	cJSON *doc;

	need_tool("nbdinfo", "libnbd-bin");
	start(more);
	create_volume("disk", 48 * MiB);

	ex = nbdinfo(uri("disk", admin_dir()), &doc);
	cr_assert_eq(json_num(ex, "export-size"), 48.0 * MiB);
	json_bool(ex, "is_read_only", false);
	json_bool(ex, "can_flush", true);
	json_bool(ex, "can_fua", true);
	json_bool(ex, "can_trim", true);
	json_bool(ex, "can_zero", true);
	json_bool(ex, "can_multi_conn", true);
	cr_assert_eq(json_num(ex, "block_size_minimum"), 1);
	cr_assert_eq(json_num(ex, "block_size_preferred"), 4096);
	cr_assert_eq(json_num(ex, "block_size_maximum"), 32.0 * MiB);
	ctx = cJSON_GetObjectItemCaseSensitive(ex, "contexts");
	cr_assert_eq(cJSON_GetArraySize(ctx), 1);
	cr_assert_str_eq(cJSON_GetArrayItem(ctx, 0)->valuestring,
			 "base:allocation");
	cJSON_Delete(doc);

	/* Read rights only: a read-only export with no write features. */
	ex = nbdinfo(uri("disk", user_dir_files("reader", false)), &doc);
	json_bool(ex, "is_read_only", true);
	json_bool(ex, "can_trim", false);
	json_bool(ex, "can_zero", false);
	json_bool(ex, "can_fua", false);
	json_bool(ex, "can_flush", true);
	cJSON_Delete(doc);
	stop_clean();
}

Test(nbd_interop, list_shows_only_the_volumes_the_client_may_see,
     .fini = teardown)
{
	static const char *const more[] = {"--access", "bob=read:pub-*", NULL};
	const char *bob;
	char *out;

	need_tool("nbdinfo", "libnbd-bin");
	start(more);
	create_volume("pub-1", 1 * MiB);
	create_volume("pub-2", 1 * MiB);
	create_volume("secret", 1 * MiB);
	bob = user_dir_files("bob", false);

	cr_assert_eq(
	    sh(&out, "timeout 60 nbdinfo --list --json '%s'", uri("", bob)), 0,
	    "%s", out);
	cr_assert(strstr(out, "\"pub-1\"") && strstr(out, "\"pub-2\""), "%s",
		  out);
	cr_assert_null(strstr(out, "secret"), "bob sees secret: %s", out);
	free(out);

	cr_assert_eq(sh(&out, "timeout 60 nbdinfo --list --json '%s'",
			uri("", admin_dir())),
		     0, "%s", out);
	cr_assert(strstr(out, "\"secret\""), "%s", out);
	free(out);

	/* And an export without rights is refused like a missing one. */
	cr_assert_neq(sh(&out, "LIBNBD_DEBUG=1 timeout 60 nbdinfo '%s'",
			 uri("secret", bob)),
		      0, "bob opened secret: %s", out);
	cr_assert(strstr(out, "no export named \"secret\""), "%s", out);
	free(out);
	stop_clean();
}

/* ---------------------------------------------------------------------- */
/* Snapshots: export VOLUME@SNAP, read-only.                              */

/* A write sent to a read-only export anyway (libnbd's own checks off),
 * so that the server is what refuses it. */
static const char nbdsh_ro_write[] = "import os\n"
				     "h.set_uri_allow_local_file(True)\n"
				     "h.set_strict_mode(0)\n"
				     "h.connect_uri(os.environ['H2_URI'])\n"
				     "try:\n"
				     "    h.pwrite(b'x' * 4096, 0)\n"
				     "    print('write accepted')\n"
				     "except nbd.Error as e:\n"
				     "    print('refused', e.errno)\n";

/* Run script (text) with nbdsh on the export URI u; its output. */
static char *nbdsh_run(const char *script, const char *u)
{
	char path[256], *out;
	FILE *f;

	snprintf(path, sizeof(path), "%s", h2t_path(&srv, "script.py"));
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(script, f);
	fclose(f);
	cr_assert_eq(sh(&out,
			"H2_URI='%s' timeout 120 " NBDSH
			" -c \"exec(open('%s').read())\"",
			u, path),
		     0, "nbdsh: %s", out);
	return out;
}

static void snapshot_create(const char *vol, const char *name)
{
	h2_client *c = h2t_connect(&srv);

	cr_assert_eq(h2_snapshot_create(c, vol, name, NULL), 0, "%s",
		     h2_last_error());
	h2_disconnect(c);
}

Test(nbd_interop, snapshot_export_is_read_only_and_byte_identical,
     .fini = teardown)
{
	static const char *const more[] = {"--access", "reader=read:disk",
					   NULL};
	char dst[256], *out, *want, *got;
	const cJSON *ex;
	size_t n;
	cJSON *doc;

	need_tool("nbdinfo", "libnbd-bin");
	need_tool("nbdcopy", "libnbd-bin");
	need_nbdsh();
	start(more);
	create_volume("disk", 8 * MiB);
	native_write("disk", 0, 3 * MiB, 1);
	snapshot_create("disk", "monday");
	native_write("disk", 0, 1 * MiB, 2);

	ex = nbdinfo(uri("disk@monday", admin_dir()), &doc);
	cr_assert_eq(json_num(ex, "export-size"), 8.0 * MiB);
	json_bool(ex, "is_read_only", true);
	json_bool(ex, "can_trim", false);
	json_bool(ex, "can_zero", false);
	json_bool(ex, "can_fua", false);
	cJSON_Delete(doc);
	/* Reading a snapshot needs only the read right on its volume. */
	ex = nbdinfo(uri("disk@monday", user_dir_files("reader", false)), &doc);
	json_bool(ex, "is_read_only", true);
	cJSON_Delete(doc);

	/* nbdcopy out of it: the snapshot's bytes, not the volume's. */
	snprintf(dst, sizeof(dst), "%s", h2t_path(&srv, "monday.img"));
	cr_assert_eq(sh(&out, "timeout 120 nbdcopy '%s' '%s'",
			uri("disk@monday", admin_dir()), dst),
		     0, "nbdcopy out: %s", out);
	free(out);
	got = slurp(dst, &n);
	cr_assert_eq(n, 8 * MiB);
	want = calloc(1, 8 * MiB);
	h2t_pattern(want, 3 * MiB, 1);
	cr_assert_eq(memcmp(got, want, 8 * MiB), 0,
		     "the snapshot's copy differs from what it holds");
	free(got);
	got = h2ctl_read("disk", 0, MiB);
	h2t_pattern(want, MiB, 2);
	cr_assert_eq(memcmp(got, want, MiB), 0, "the live volume lost data");
	free(got);

	/* The server refuses a write (EPERM, as the spec says for a
	 * read-only export), and the snapshot stays as it was. */
	out = nbdsh_run(nbdsh_ro_write, uri("disk@monday", admin_dir()));
	cr_assert(strstr(out, "refused EPERM"), "%s", out);
	free(out);
	got = h2ctl_read("disk@monday", 0, 3 * MiB);
	h2t_pattern(want, 3 * MiB, 1);
	cr_assert_eq(memcmp(got, want, 3 * MiB), 0, "the snapshot changed");
	free(got);
	free(want);

	/* The list names volumes only (as qemu-nbd does); an unknown
	 * snapshot is an unknown export. */
	cr_assert_eq(sh(&out, "timeout 60 nbdinfo --list --json '%s'",
			uri("", admin_dir())),
		     0, "%s", out);
	cr_assert(strstr(out, "\"disk\""), "%s", out);
	cr_assert_null(strstr(out, "disk@monday"), "%s", out);
	free(out);
	cr_assert_neq(sh(&out, "LIBNBD_DEBUG=1 timeout 60 nbdinfo '%s'",
			 uri("disk@tuesday", admin_dir())),
		      0, "%s", out);
	cr_assert(strstr(out, "no export named \"disk@tuesday\""), "%s", out);
	free(out);
	stop_clean();
}

/* An NBD client that holds an export open for writing until its stdin
 * closes. */
static const char nbdsh_hold[] = "import os, sys\n"
				 "h.set_uri_allow_local_file(True)\n"
				 "h.connect_uri(os.environ['H2_URI'])\n"
				 "h.pwrite(b'w' * 4096, 0)\n"
				 "print('connected', flush=True)\n"
				 "sys.stdin.read()\n"
				 "print('after', h.pread(8, 1048576).hex())\n"
				 "h.shutdown()\n"
				 "print('done', flush=True)\n";

Test(nbd_interop, rollback_is_refused_while_an_nbd_client_writes,
     .fini = teardown)
{
	char path[256], line[512], hex[32], *out;
	uint8_t *want;
	int in[2], outp[2], ws;
	FILE *f;
	pid_t pid;
	bool up = false, done = false;

	need_nbdsh();
	start(NULL);
	create_volume("disk", 8 * MiB);
	native_write("disk", 0, 2 * MiB, 1);
	snapshot_create("disk", "s");
	native_write("disk", 0, 2 * MiB, 2);

	snprintf(path, sizeof(path), "%s", h2t_path(&srv, "hold.py"));
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(nbdsh_hold, f);
	fclose(f);
	cr_assert_eq(pipe(in), 0);
	cr_assert_eq(pipe(outp), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char cmd[1024];

		dup2(in[0], 0);
		dup2(outp[1], 1);
		dup2(outp[1], 2);
		close(in[1]);
		close(outp[0]);
		setenv("H2_URI", uri("disk", admin_dir()), 1);
		snprintf(cmd, sizeof(cmd),
			 "timeout 120 " NBDSH " -c \"exec(open('%s').read())\"",
			 path);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(outp[1]);
	f = fdopen(outp[0], "r");
	cr_assert_not_null(f);
	while (!up && fgets(line, sizeof(line), f))
		up = strstr(line, "connected") != NULL;
	cr_assert(up, "the NBD client did not connect: %s", line);

	cr_assert_eq(sh(&out,
			"H2_SERVER=%s H2_TLS_DIR=%s timeout 60 %s "
			"rollback disk s",
			srv.addr, srv.tls, H2CTL_PATH),
		     1, "%s", out);
	cr_assert(strstr(out, "open for writing by an NBD client") &&
		      strstr(out, "--force"),
		  "%s", out);
	free(out);
	cr_assert_eq(sh(&out,
			"H2_SERVER=%s H2_TLS_DIR=%s timeout 60 %s "
			"rollback --force disk s",
			srv.addr, srv.tls, H2CTL_PATH),
		     0, "%s", out);
	free(out);

	/* The client reads the snapshot's data from now on. */
	close(in[1]);
	want = malloc(2 * MiB);
	h2t_pattern(want, 2 * MiB, 1);
	snprintf(hex, sizeof(hex), "after ");
	for (int i = 0; i < 8; i++)
		snprintf(hex + 6 + 2 * i, 3, "%02x", want[MiB + i]);
	free(want);
	while (!done && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "after ", 6))
			cr_assert(!strncmp(line, hex, strlen(hex)),
				  "the NBD client reads \"%s\", not the "
				  "snapshot's \"%s\"",
				  line, hex);
		done = strstr(line, "done") != NULL;
	}
	fclose(f);
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	cr_assert(done && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
		  "the NBD client failed");
	stop_clean();
}

/* ---------------------------------------------------------------------- */
/* Copies in and out.                                                     */

static int count_holes(void *arg, uint64_t off, uint64_t len, bool hole)
{
	(void)off;
	if (hole)
		*(uint64_t *)arg += len;
	return 0;
}

Test(nbd_interop, nbdcopy_in_and_out_is_byte_identical_and_skips_holes,
     .fini = teardown)
{
	static const uint64_t ranges[] = {0,	     3 * MiB,  20 * MiB,
					  MiB + 123, 63 * MiB, 1 * MiB};
	char src[256], dst[256], *out, *a, *b, *mid;
	uint64_t holes = 0;
	const char *u;
	size_t na, nb;
	struct stat st;
	h2_client *c;
	h2_volume *v;

	need_tool("nbdcopy", "libnbd-bin");
	start(NULL);
	create_volume("img", 64 * MiB);
	snprintf(src, sizeof(src), "%s", h2t_path(&srv, "src.img"));
	snprintf(dst, sizeof(dst), "%s", h2t_path(&srv, "dst.img"));
	make_image(src, 64 * MiB, ranges, 6);
	u = uri("img", admin_dir());

	cr_assert_eq(sh(&out, "timeout 120 nbdcopy '%s' '%s'", src, u), 0,
		     "nbdcopy in: %s", out);
	free(out);
	cr_assert_eq(sh(&out, "timeout 120 nbdcopy '%s' '%s'", u, dst), 0,
		     "nbdcopy out: %s", out);
	free(out);
	a = slurp(src, &na);
	b = slurp(dst, &nb);
	cr_assert_eq(na, nb);
	cr_assert_eq(memcmp(a, b, na), 0, "the copy differs");

	/* The holes were skipped both ways: the copy out is sparse, and
	 * the volume holds no blocks for them. */
	cr_assert_eq(stat(dst, &st), 0);
	cr_assert_lt((uint64_t)st.st_blocks * 512, 16 * MiB,
		     "%lld bytes allocated", (long long)st.st_blocks * 512);
	c = h2t_connect(&srv);
	cr_assert_eq(h2_volume_open(c, "img", H2_OPEN_RO, &v), 0);
	cr_assert_eq(h2_block_status(v, 3 * MiB, 17 * MiB, count_holes, &holes),
		     0);
	cr_assert_eq(holes, 17 * MiB, "zeros were written into the volume");
	h2_volume_close(v);
	h2_disconnect(c);

	/* The same bytes through the native protocol (h2ctl). */
	mid = h2ctl_read("img", 20 * MiB, MiB + 123);
	cr_assert_eq(memcmp(mid, a + 20 * MiB, MiB + 123), 0);
	free(mid);
	free(a);
	free(b);
	stop_clean();
}

Test(nbd_interop, qemu_img_convert_into_the_export_then_compare,
     .fini = teardown)
{
	static const uint64_t ranges[] = {
	    0, 1 * MiB, 5 * MiB + 512, 2 * MiB + 4096, 31 * MiB, 1 * MiB};
	char src[256], obj[512], tgt[512], *out;
	int fd;

	need_tool("qemu-img", "qemu-utils");
	start(NULL);
	create_volume("q", 32 * MiB);
	snprintf(src, sizeof(src), "%s", h2t_path(&srv, "src.img"));
	make_image(src, 32 * MiB, ranges, 6);
	snprintf(obj, sizeof(obj),
		 "tls-creds-x509,id=tls0,dir=%s,endpoint=client", admin_dir());
	snprintf(tgt, sizeof(tgt),
		 "driver=nbd,server.type=inet,server.host=127.0.0.1,"
		 "server.port=%u,export=q,tls-creds=tls0",
		 nbd_port());

	cr_assert_eq(sh(&out,
			"timeout 120 qemu-img convert -n --object '%s' -f raw "
			"'%s' --target-image-opts '%s'",
			obj, src, tgt),
		     0, "convert: %s", out);
	free(out);
	cr_assert_eq(sh(&out,
			"timeout 120 qemu-img compare --object '%s' "
			"--image-opts 'driver=raw,file.driver=file,"
			"file.filename=%s' '%s'",
			obj, src, tgt),
		     0, "compare: %s", out);
	cr_assert(strstr(out, "Images are identical"), "%s", out);
	free(out);

	/* compare does look at the bytes: change one and it says so. */
	fd = open(src, O_WRONLY);
	cr_assert_eq(pwrite(fd, "!", 1, 31 * MiB + 77), 1);
	close(fd);
	cr_assert_eq(sh(&out,
			"timeout 120 qemu-img compare --object '%s' "
			"--image-opts 'driver=raw,file.driver=file,"
			"file.filename=%s' '%s'",
			obj, src, tgt),
		     1, "compare of different images: %s", out);
	free(out);
	stop_clean();
}

Test(nbd_interop, qemu_img_map_shows_the_holes_of_a_sparse_volume,
     .fini = teardown)
{
	char obj[512], img[512], *out;
	cJSON *doc, *e;
	uint64_t data_bytes = 0, end = 0;

	need_tool("qemu-img", "qemu-utils");
	start(NULL);
	create_volume("sparse", 16 * MiB);
	native_write("sparse", 4 * MiB, 1 * MiB, 1);
	native_write("sparse", 10 * MiB, 4096, 2);
	snprintf(obj, sizeof(obj),
		 "tls-creds-x509,id=tls0,dir=%s,endpoint=client", admin_dir());
	snprintf(img, sizeof(img),
		 "driver=nbd,server.type=inet,server.host=127.0.0.1,"
		 "server.port=%u,export=sparse,tls-creds=tls0",
		 nbd_port());
	cr_assert_eq(sh(&out,
			"timeout 60 qemu-img map --output=json --object '%s' "
			"--image-opts '%s'",
			obj, img),
		     0, "%s", out);
	doc = cJSON_Parse(out);
	cr_assert_not_null(doc, "%s", out);
	cJSON_ArrayForEach(e, doc)
	{
		uint64_t s = (uint64_t)json_num(e, "start");
		uint64_t l = (uint64_t)json_num(e, "length");
		bool data =
		    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "data"));
		bool zero =
		    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "zero"));

		cr_assert_eq(s, end, "extents are consecutive");
		end = s + l;
		if (data) {
			bool in_a = s >= 4 * MiB && s + l <= 5 * MiB;
			bool in_b = s >= 10 * MiB && s + l <= 10 * MiB + 4096;

			cr_assert(
			    in_a || in_b, "data reported at [%llu, +%llu): %s",
			    (unsigned long long)s, (unsigned long long)l, out);
			data_bytes += l;
		} else {
			cr_assert(zero, "a hole that is not zero: %s", out);
		}
	}
	cr_assert_eq(end, 16 * MiB);
	cr_assert_eq(data_bytes, 1 * MiB + 4096, "%s", out);
	cJSON_Delete(doc);
	free(out);
	stop_clean();
}

/* ---------------------------------------------------------------------- */
/* nbdsh: commands one by one.                                            */

static const char nbdsh_checks[] =
    "import os\n"
    "K = 1024; M = K * K\n"
    "H = nbd.STATE_HOLE | nbd.STATE_ZERO\n"
    "h.set_uri_allow_local_file(True)\n"
    "h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)\n"
    "h.connect_uri(os.environ['H2_URI'])\n"
    "assert h.get_size() == 8 * M\n"
    "assert h.can_fua() and h.can_trim() and h.can_zero()\n"
    "assert h.can_flush() and h.can_multi_conn()\n"
    "assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)\n"
    "assert not h.is_read_only()\n"
    "a = bytes([0xab]) * (256 * K)\n"
    "h.pwrite(a, 0, nbd.CMD_FLAG_FUA)\n"
    "assert h.pread(256 * K, 0) == a\n"
    "b = bytes([0x5c]) * M\n"
    "h.pwrite(b, M)\n"
    "h.flush()\n"
    "h.trim(256 * K, M, nbd.CMD_FLAG_FUA)\n"
    "h.zero(256 * K, M + 512 * K, nbd.CMD_FLAG_NO_HOLE)\n"
    "h.zero(128 * K, M + 768 * K)\n"
    "z = bytes(128 * K)\n"
    "want = z + z + b[:256 * K] + z + z + z + b[:128 * K]\n"
    "assert h.pread(M, M) == want, 'contents after trim and zero'\n"
    "ext = []\n"
    "def cb(meta, off, entries, err):\n"
    "    if meta == nbd.CONTEXT_BASE_ALLOCATION:\n"
    "        for i in range(0, len(entries), 2):\n"
    "            start = ext[-1][0] + ext[-1][1] if ext else off\n"
    "            ext.append((start, entries[i], entries[i + 1]))\n"
    "    return 0\n"
    "while not ext or ext[-1][0] + ext[-1][1] < 8 * M:\n"
    "    pos = ext[-1][0] + ext[-1][1] if ext else 0\n"
    "    h.block_status(8 * M - pos, pos, cb)\n"
    "def state(o):\n"
    "    return [f for (s, l, f) in ext if s <= o < s + l][0]\n"
    "assert state(0) == 0, 'written'\n"
    "assert state(300 * K) == H, 'never written'\n"
    "assert state(M) == H, 'trimmed'\n"
    "assert state(M + 300 * K) == 0, 'written'\n"
    "assert state(M + 600 * K) == 0, 'NO_HOLE zeros are allocated'\n"
    "assert state(M + 800 * K) == H, 'zeroing punched a hole'\n"
    "assert state(M + 950 * K) == 0, 'written'\n"
    "assert state(7 * M) == H, 'never written'\n"
    "one = []\n"
    "def cb1(meta, off, entries, err):\n"
    "    one.append(list(entries))\n"
    "    return 0\n"
    "h.block_status(8 * M, 0, cb1, nbd.CMD_FLAG_REQ_ONE)\n"
    "assert len(one) == 1 and len(one[0]) == 2, one\n"
    "assert one[0] == [256 * K, 0], one\n"
    "# The server's own checks, past libnbd's:\n"
    "h.set_strict_mode(0)\n"
    "def fails(f, code):\n"
    "    try:\n"
    "        f()\n"
    "    except nbd.Error as e:\n"
    "        assert e.errno == code, (e.string, e.errno)\n"
    "        return\n"
    "    raise AssertionError('no error, expected ' + code)\n"
    "fails(lambda: h.pwrite(b'x' * 4096, 8 * M - 100), 'ENOSPC')\n"
    "fails(lambda: h.pread(4096, 8 * M), 'EINVAL')\n"
    "fails(lambda: h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE |"
    " nbd.CMD_FLAG_FAST_ZERO), 'ENOTSUP')\n"
    "assert h.pread(256 * K, 0) == a, 'still there after the errors'\n"
    "h.shutdown()\n"
    "print('nbdsh checks passed')\n";

Test(nbd_interop, nbdsh_checks_fua_trim_write_zeroes_and_block_status,
     .fini = teardown)
{
	char path[256], *out, *got, *want;
	FILE *f;

	need_nbdsh();
	start(NULL);
	create_volume("sh", 8 * MiB);
	snprintf(path, sizeof(path), "%s", h2t_path(&srv, "checks.py"));
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(nbdsh_checks, f);
	fclose(f);
	cr_assert_eq(sh(&out,
			"H2_URI='%s' timeout 120 " NBDSH
			" -c \"exec(open('%s').read())\"",
			uri("sh", admin_dir()), path),
		     0, "nbdsh: %s", out);
	cr_assert(strstr(out, "nbdsh checks passed"), "%s", out);
	free(out);

	/* The same data through the native protocol. */
	got = h2ctl_read("sh", 0, 2 * MiB);
	want = calloc(1, 2 * MiB);
	memset(want, 0xab, 256 * KiB);
	memset(want + MiB + 256 * KiB, 0x5c, 256 * KiB);
	memset(want + MiB + 896 * KiB, 0x5c, 128 * KiB);
	cr_assert_eq(memcmp(got, want, 2 * MiB), 0,
		     "h2ctl sees other bytes than NBD wrote");
	free(got);
	free(want);
	stop_clean();
}

/* A write acknowledged with FUA, or before an acknowledged FLUSH, is on
 * disk: it survives SIGKILL with no background flush in between.  Each
 * is checked on its own, so that one cannot cover for the other. */
static const char nbdsh_fua[] =
    "import os\n"
    "h.set_uri_allow_local_file(True)\n"
    "h.connect_uri(os.environ['H2_URI'])\n"
    "h.pwrite(bytes([1]) * 65536, 0, nbd.CMD_FLAG_FUA)\n"
    "print('acknowledged')\n";

static const char nbdsh_flush[] = "import os\n"
				  "h.set_uri_allow_local_file(True)\n"
				  "h.connect_uri(os.environ['H2_URI'])\n"
				  "h.pwrite(bytes([2]) * 65536, 1048576)\n"
				  "h.flush()\n"
				  "print('acknowledged')\n";

/* Run a script with nbdsh on export, then kill h2d and start it again. */
static void nbdsh_then_kill(const char *script, const char *export)
{
	char path[256], *out;
	FILE *f;

	snprintf(path, sizeof(path), "%s", h2t_path(&srv, "script.py"));
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(script, f);
	fclose(f);
	cr_assert_eq(sh(&out,
			"H2_URI='%s' timeout 120 " NBDSH
			" -c \"exec(open('%s').read())\"",
			uri(export, admin_dir()), path),
		     0, "nbdsh: %s", out);
	cr_assert(strstr(out, "acknowledged"), "%s", out);
	free(out);
	cr_assert_eq(h2t_stop(&srv, SIGKILL), 128 + SIGKILL);
	h2t_restart(&srv);
}

Test(nbd_interop, fua_and_flushed_writes_survive_a_kill, .fini = teardown)
{
	static const char *const more[] = {"--flush-interval", "3600000", NULL};
	char *got;

	need_nbdsh();
	start(more);
	create_volume("dur", 4 * MiB);
	/* The volume itself must be durable before the kill. */
	{
		h2_client *c = h2t_connect(&srv);

		cr_assert_eq(h2_sync(c), 0);
		h2_disconnect(c);
	}
	nbdsh_then_kill(nbdsh_fua, "dur");
	got = h2ctl_read("dur", 0, 64 * KiB);
	for (size_t i = 0; i < 64 * KiB; i++)
		cr_assert_eq(got[i], 1, "FUA write lost at %zu", i);
	free(got);
	nbdsh_then_kill(nbdsh_flush, "dur");
	got = h2ctl_read("dur", 1 * MiB, 64 * KiB);
	for (size_t i = 0; i < 64 * KiB; i++)
		cr_assert_eq(got[i], 2, "flushed write lost at %zu", i);
	free(got);
}

/* ---------------------------------------------------------------------- */
/* fio's nbd engine.                                                      */

Test(nbd_interop, fio_nbd_engine_writes_and_verifies, .fini = teardown)
{
	char home[64] = "/tmp/h2-fio-XXXXXX", pki[128], p[256], *out;
	struct passwd *nobody = getpwnam("nobody");
	char crt[256], key[256], ca[256];
	int r;

	need_tool("fio", "fio");
	need_tool("setpriv", "util-linux");
	if (sh(NULL, "fio --enghelp=nbd | grep -q uri") != 0)
		cr_skip_test("this fio has no nbd engine");
	/* fio cannot pass tls-certificates to libnbd (URIs may not name
	 * local files there), so it uses libnbd's default directory,
	 * $HOME/.pki/libnbd, which libnbd ignores for root. */
	if (geteuid() != 0 || !nobody)
		cr_skip_test("needs root to run fio as \"nobody\"");
	start(NULL);
	create_volume("fio", 16 * MiB);
	cr_assert_not_null(mkdtemp(home));
	snprintf(pki, sizeof(pki), "%s/.pki", home);
	mkdir(pki, 0755);
	snprintf(pki, sizeof(pki), "%s/.pki/libnbd", home);
	mkdir(pki, 0755);
	snprintf(ca, sizeof(ca), "%s/ca.crt", srv.tls);
	snprintf(crt, sizeof(crt), "%s/client.crt", srv.tls);
	snprintf(key, sizeof(key), "%s/client.key", srv.tls);
	snprintf(p, sizeof(p), "%s/ca-cert.pem", pki);
	copy_file(ca, p);
	snprintf(p, sizeof(p), "%s/client-cert.pem", pki);
	copy_file(crt, p);
	snprintf(p, sizeof(p), "%s/client-key.pem", pki);
	copy_file(key, p);
	sh(NULL, "chown -R nobody '%s' && chmod 755 '%s'", home, home);
	r = sh(&out,
	       "cd '%s' && timeout 120 setpriv --reuid=nobody --regid=%u "
	       "--clear-groups env HOME='%s' fio --name=nbd --ioengine=nbd "
	       "--uri='nbds://%s/fio' --rw=randwrite --bs=4k --size=8M "
	       "--iodepth=16 --verify=crc32c --do_verify=1 "
	       "--verify_fatal=1",
	       home, (unsigned)nobody->pw_gid, home, srv.nbd);
	sh(NULL, "rm -rf '%s'", home);
	cr_assert_eq(r, 0, "fio: %s", out);
	cr_assert(strstr(out, "err= 0"), "%s", out);
	free(out);
	stop_clean();
}

/* ---------------------------------------------------------------------- */
/* The plaintext listener (loopback only, one configured identity).       */

/* "nbd_plain_listen" from the ready file. */
static void plain_addr(char *out, size_t len)
{
	char *text = slurp(h2t_path(&srv, "ready.json"), NULL);
	cJSON *doc = cJSON_Parse(text);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "nbd_plain_listen");

	cr_assert(cJSON_IsString(v), "no \"nbd_plain_listen\" in %s", text);
	snprintf(out, len, "%s", v->valuestring);
	cJSON_Delete(doc);
	free(text);
}

Test(nbd_interop, plaintext_listener_serves_its_identity_without_tls,
     .fini = teardown)
{
	static const char *const more[] = {
	    "--nbd-plain-listen", "127.0.0.1:0",    "--nbd-plain-identity",
	    "bench",		  "--access",	    "bench=write:plain-*",
	    NULL};
	static const uint64_t ranges[] = {0, 64 * KiB, 3 * MiB, 1 * MiB};
	char plain[64], u[128], *out, *got, *want;
	cJSON *doc;
	const cJSON *ex;
	int r;

	need_tool("nbdinfo", "libnbd-bin");
	need_tool("nbdcopy", "libnbd-bin");
	start(more);
	plain_addr(plain, sizeof(plain));
	cr_assert(log_has("plaintext NBD (no TLS)"), "no warning in the log");
	create_volume("plain-a", 8 * MiB);
	create_volume("secret", 1 * MiB);

	/* Without TLS, as identity "bench". */
	snprintf(u, sizeof(u), "nbd://%s/plain-a", plain);
	r = sh(&out, "timeout 60 nbdinfo --json '%s'", u);
	cr_assert_eq(r, 0, "nbdinfo: %s", out);
	doc = cJSON_Parse(out);
	cr_assert_not_null(doc, "%s", out);
	free(out);
	json_bool(doc, "TLS", false);
	ex = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "exports"),
				0);
	cr_assert_not_null(ex);
	cr_assert_eq(json_num(ex, "export-size"), 8 * MiB);
	json_bool(ex, "is_read_only", false);
	cJSON_Delete(doc);
	cr_assert(log_has("identity=bench tls=none"));

	/* Its access rules, not the development admin's. */
	snprintf(u, sizeof(u), "nbd://%s/secret", plain);
	cr_assert_neq(sh(&out, "timeout 60 nbdinfo '%s'", u), 0, "%s", out);
	free(out);
	snprintf(u, sizeof(u), "nbd://%s", plain);
	cr_assert_eq(sh(&out, "timeout 60 nbdinfo --list '%s'", u), 0, "%s",
		     out);
	cr_assert(strstr(out, "plain-a"), "%s", out);
	cr_assert_null(strstr(out, "secret"), "%s", out);
	free(out);

	/* A client that insists on TLS is told no, by policy. */
	snprintf(u, sizeof(u), "nbds://%s/plain-a?tls-certificates=%s", plain,
		 admin_dir());
	cr_assert_neq(sh(&out, "LIBNBD_DEBUG=1 timeout 60 nbdinfo '%s'", u), 0,
		      "%s", out);
	free(out);

	/* Data written in plaintext is the volume's. */
	make_image(h2t_path(&srv, "in.img"), 8 * MiB, ranges, 4);
	snprintf(u, sizeof(u), "nbd://%s/plain-a", plain);
	cr_assert_eq(sh(&out, "timeout 120 nbdcopy '%s' '%s'",
			h2t_path(&srv, "in.img"), u),
		     0, "nbdcopy: %s", out);
	free(out);
	got = h2ctl_read("plain-a", 3 * MiB, 1 * MiB);
	want = malloc(1 * MiB);
	h2t_pattern(want, 1 * MiB, 3 * MiB);
	cr_assert_eq(memcmp(got, want, 1 * MiB), 0);
	free(got);
	free(want);
	stop_clean();
}

Test(nbd_interop, fio_nbd_engine_over_the_plaintext_listener,
     .fini = teardown)
{
	static const char *const more[] = {
	    "--nbd-plain-listen", "127.0.0.1:0",    "--nbd-plain-identity",
	    "bench",		  "--access",	    "bench=write:fio",
	    NULL};
	char plain[64], *out;
	int r;

	need_tool("fio", "fio");
	if (sh(NULL, "fio --enghelp=nbd | grep -q uri") != 0)
		cr_skip_test("this fio has no nbd engine");
	start(more);
	plain_addr(plain, sizeof(plain));
	create_volume("fio", 16 * MiB);
	/* What fio cannot do over TLS without a certificate directory in
	 * $HOME (see fio_nbd_engine_writes_and_verifies), it does here as
	 * any user. */
	r = sh(&out,
	       "cd '%s' && timeout 120 fio --name=plain --ioengine=nbd "
	       "--uri='nbd://%s/fio' --rw=randwrite --bs=4k --size=8M "
	       "--iodepth=16 --verify=crc32c --do_verify=1 --verify_fatal=1",
	       srv.dir, plain);
	cr_assert_eq(r, 0, "fio: %s", out);
	cr_assert(strstr(out, "err= 0"), "%s", out);
	free(out);
	stop_clean();
}

/* ---------------------------------------------------------------------- */
/* Refusals.                                                              */

Test(nbd_interop, plaintext_options_get_tls_required, .fini = teardown)
{
	static const uint8_t go[] = {0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 0};
	char *out;
	int fd;

	start(NULL);
	create_volume("disk", 1 * MiB);
	fd = raw_hello();
	raw_opt(fd, NBD_OPT_LIST, NULL, 0, 0);
	cr_assert_eq(raw_rep(fd, NBD_OPT_LIST), NBD_REP_ERR_TLS_REQD);
	raw_opt(fd, NBD_OPT_GO, go, sizeof(go), sizeof(go));
	cr_assert_eq(raw_rep(fd, NBD_OPT_GO), NBD_REP_ERR_TLS_REQD);
	raw_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0, 0);
	cr_assert_eq(raw_rep(fd, NBD_OPT_STRUCTURED_REPLY),
		     NBD_REP_ERR_TLS_REQD);
	/* EXPORT_NAME cannot be refused with an error: the session ends. */
	raw_opt(fd, NBD_OPT_EXPORT_NAME, "disk", 4, 4);
	cr_assert(closed_by_server(fd));
	close(fd);

	/* A real client without TLS gets nowhere either. */
	if (system("command -v nbdinfo >/dev/null 2>&1") == 0) {
		char u[128];

		snprintf(u, sizeof(u), "nbd://%s/disk", srv.nbd);
		cr_assert_neq(
		    sh(&out, "LIBNBD_DEBUG=1 timeout 60 nbdinfo '%s'", u), 0,
		    "%s", out);
		cr_assert(strstr(out, "TLS is required"), "%s", out);
		free(out);
	}
	stop_clean();
}

Test(nbd_interop, client_without_a_certificate_is_refused, .fini = teardown)
{
	char *out;

	need_tool("nbdinfo", "libnbd-bin");
	start(NULL);
	create_volume("disk", 1 * MiB);
	cr_assert_neq(sh(&out, "timeout 60 nbdinfo '%s'",
			 uri("disk", tls_dir("nbd-nocert", NULL, NULL))),
		      0, "no certificate, yet: %s", out);
	free(out);
	cr_assert(log_has("nbd TLS handshake failed"));

	/* A certificate from another CA is no better. */
	cr_assert_neq(sh(&out, "timeout 60 nbdinfo '%s'",
			 uri("disk", user_dir_files("mallory", true))),
		      0, "foreign certificate, yet: %s", out);
	free(out);
	/* And the right one works, on the same server. */
	cr_assert_eq(
	    sh(&out, "timeout 60 nbdinfo '%s'", uri("disk", admin_dir())), 0,
	    "%s", out);
	free(out);
	stop_clean();
}

Test(nbd_interop, oversized_option_is_refused_without_waiting_for_it,
     .fini = teardown)
{
	int fd;

	start(NULL);
	fd = raw_hello();
	/* 4 GiB of option data announced, none sent. */
	raw_opt(fd, NBD_OPT_GO, NULL, 0, 0xffffffffu);
	cr_assert_eq(raw_rep(fd, NBD_OPT_GO), NBD_REP_ERR_TLS_REQD);
	cr_assert(closed_by_server(fd));
	close(fd);
	stop_clean();
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

Test(nbd_interop, negotiation_that_does_not_finish_in_time_is_dropped,
     .fini = teardown)
{
	static const char *const extra[] = {"--nbd-listen", "127.0.0.1:0",
					    "--config", "h2d.conf", NULL};
	char conf[256];
	double t0, waited;
	FILE *f;
	int fd;

	/* The config must exist before h2d starts in its directory. */
	memset(&srv, 0, sizeof(srv));
	snprintf(srv.dir, sizeof(srv.dir), "/tmp/h2-it-XXXXXX");
	cr_assert_not_null(mkdtemp(srv.dir));
	snprintf(conf, sizeof(conf), "%s/h2d.conf", srv.dir);
	f = fopen(conf, "w");
	cr_assert_not_null(f);
	fprintf(f, "[server]\nhandshake_timeout_ms = 300\n");
	fclose(f);
	for (int i = 0; extra[i]; i++)
		srv.extra[i] = extra[i];
	h2t_restart(&srv);

	/* Options trickle in but TLS never starts.  The clock starts
	 * before the connection, so no delay on our side can shorten it. */
	t0 = now_s();
	fd = raw_hello();
	raw_opt(fd, NBD_OPT_LIST, NULL, 0, 0);
	cr_assert_eq(raw_rep(fd, NBD_OPT_LIST), NBD_REP_ERR_TLS_REQD);
	cr_assert(closed_by_server(fd), "expected EOF");
	waited = now_s() - t0;
	cr_assert_geq(waited, 0.25, "closed after %.3f s", waited);
	cr_assert_lt(waited, 10.0, "closed after %.3f s", waited);
	close(fd);
	cr_assert(log_has("nbd negotiation timed out"));
}

Test(nbd_interop, sigterm_with_nbd_clients_connected_exits_cleanly,
     .fini = teardown)
{
	int fd;

	start(NULL);
	fd = raw_hello(); /* left mid-negotiation */
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
	cr_assert(closed_by_server(fd));
	close(fd);
}

Test(nbd_interop, empty_nbd_listen_turns_the_frontend_off, .fini = teardown)
{
	char *ready;

	h2t_start(&srv, NULL); /* the harness passes --nbd-listen "" */
	cr_assert_eq(srv.nbd[0], 0);
	ready = slurp(h2t_path(&srv, "ready.json"), NULL);
	cr_assert_null(strstr(ready, "nbd_listen"), "%s", ready);
	free(ready);
	cr_assert(log_has("nbd_listen=off"));
	stop_clean();
}

/* NBD commands count like native requests, under proto="nbd": a known
 * set of commands through nbdsh, then h2ctl stat and a scrape.  Strict
 * mode is off so that libnbd sends the read past the end, which the
 * server refuses (EINVAL, INVALID_ARGUMENT). */
static const char nbdsh_counted[] =
    "import os\n"
    "h.set_uri_allow_local_file(True)\n"
    "h.set_strict_mode(0)\n"
    "h.connect_uri(os.environ['H2_URI'])\n"
    "for i in range(3):\n"
    "    h.pwrite(bytes([7]) * 65536, i * 65536)\n"
    "h.pread(4096, 0)\n"
    "h.pread(4096, 65536)\n"
    "try:\n"
    "    h.pread(4096, 4 * 1048576)\n"
    "    print('read past the end succeeded')\n"
    "except nbd.Error as e:\n"
    "    print('refused:', e.errno)\n"
    "h.trim(65536, 0)\n"
    "h.flush()\n"
    "h.shutdown()\n"
    "print('done')\n";

Test(nbd_interop, nbd_commands_are_counted_in_stat_and_metrics,
     .fini = teardown)
{
	static const char *const more[] = {"--metrics-listen", "127.0.0.1:0",
					   NULL};
	char path[256], *out, *text;
	const cJSON *ops, *rd;
	cJSON *doc;
	int code;

	need_nbdsh();
	start(more);
	create_volume("counted", 4 * MiB);
	snprintf(path, sizeof(path), "%s", h2t_path(&srv, "counted.py"));
	{
		FILE *f = fopen(path, "w");

		cr_assert_not_null(f);
		fputs(nbdsh_counted, f);
		fclose(f);
	}
	cr_assert_eq(sh(&out,
			"H2_URI='%s' timeout 120 " NBDSH
			" -c \"exec(open('%s').read())\"",
			uri("counted", admin_dir()), path),
		     0, "nbdsh: %s", out);
	cr_assert(strstr(out, "refused") && strstr(out, "done"), "%s", out);
	free(out);

	text = h2t_scrape(&srv, "GET", "/metrics", &code);
	cr_assert_eq(code, 200);
	h2t_check_exposition(&srv, text);
	cr_assert_eq(h2t_metric(text,
				"h2_volume_requests_total{volume="
				"\"counted\",proto=\"nbd\",op=\"write\"}"),
		     3);
	cr_assert_eq(h2t_metric(text, "h2_volume_requests_total{volume="
				      "\"counted\",proto=\"native\",op="
				      "\"write\"}"),
		     0);
	cr_assert_eq(h2t_metric(text, "h2_volume_requests_total{volume="
				      "\"counted\",proto=\"nbd\",op=\"read\"}"),
		     3);
	cr_assert_eq(h2t_metric(text, "h2_volume_request_bytes_total{volume="
				      "\"counted\",op=\"write\"}"),
		     3 * 65536);
	cr_assert_eq(h2t_metric(text, "h2_volume_request_bytes_total{volume="
				      "\"counted\",op=\"read\"}"),
		     2 * 4096);
	cr_assert_eq(h2t_metric(text, "h2_volume_request_errors_total{volume="
				      "\"counted\",op=\"read\",code="
				      "\"INVALID_ARGUMENT\"}"),
		     1);
	cr_assert_eq(h2t_metric(text, "h2_volume_requests_total{volume="
				      "\"counted\",proto=\"nbd\",op=\"trim\"}"),
		     1);
	cr_assert_eq(h2t_metric(text,
				"h2_volume_requests_total{volume="
				"\"counted\",proto=\"nbd\",op=\"flush\"}"),
		     1);
	cr_assert_eq(h2t_metric(text, "h2_volume_request_duration_seconds_"
				      "count{volume=\"counted\",op=\"read\"}"),
		     3);
	cr_assert_eq(
	    h2t_metric(text, "h2_requests_total{proto=\"nbd\",op=\"write\"}"),
	    3);
	cr_assert_eq(h2t_metric(text, "h2_connections_total{proto=\"nbd\"}"),
		     1);
	cr_assert_eq(h2t_metric(text, "h2_connections{proto=\"nbd\"}"), 0);
	free(text);

	/* h2ctl stat sees the same through the native protocol. */
	cr_assert_eq(sh(&out,
			"H2_SERVER=%s H2_TLS_DIR=%s timeout 60 %s --json "
			"stat counted",
			srv.addr, srv.tls, H2CTL_PATH),
		     0, "%s", out);
	doc = cJSON_Parse(out);
	cr_assert_not_null(doc, "%s", out);
	ops = cJSON_GetObjectItem(
	    cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "volume_stats"), 0),
	    "ops");
	rd = cJSON_GetObjectItem(ops, "read");
	cr_assert_not_null(rd, "%s", out);
	cr_assert_eq(json_num(rd, "nbd_requests"), 3);
	cr_assert_eq(json_num(rd, "native_requests"), 0);
	cr_assert_eq(json_num(rd, "errors"), 1);
	cJSON_Delete(doc);
	free(out);
	stop_clean();
}
