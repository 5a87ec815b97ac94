/*
 * h2ctl against a real h2d, as a user runs it: tables, --json, exit
 * codes, byte-exact write/read and sparse import/export.
 */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#ifndef H2CTL_PATH
#error "H2CTL_PATH must name the h2ctl binary"
#endif

#define MiB (1024 * 1024)

static struct h2t_srv srv;

struct run {
	int status;
	char *out, *err;
};

static void setup(void)
{
	h2t_start(&srv, NULL);
}

static void teardown(void)
{
	h2t_cleanup(&srv);
}

static char *slurp_path(const char *path)
{
	FILE *f = fopen(path, "r");
	char *s;
	long n;

	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	s = calloc(1, (size_t)n + 1);
	cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return s;
}

/* Run h2ctl with H2_SERVER/H2_TLS_DIR pointing at srv. */
static struct run ctl(const char *arg0, ...)
{
	const char *argv[24] = {H2CTL_PATH, arg0};
	char out[256], err[256];
	struct run r = {0};
	int argc = 2, ws;
	va_list ap;
	pid_t pid;

	va_start(ap, arg0);
	while (argc < 23 && (argv[argc] = va_arg(ap, const char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	snprintf(out, sizeof(out), "%s", h2t_path(&srv, "ctl.out"));
	snprintf(err, sizeof(err), "%s", h2t_path(&srv, "ctl.err"));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		dup2(fo, 1);
		dup2(fe, 2);
		setenv("H2_SERVER", srv.addr, 1);
		setenv("H2_TLS_DIR", srv.tls, 1);
		execv(H2CTL_PATH, (char *const *)argv);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
	r.out = slurp_path(out);
	r.err = slurp_path(err);
	return r;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static void write_file(const char *path, const void *data, size_t len,
		       off_t at, off_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0644);

	cr_assert_geq(fd, 0);
	if (size)
		cr_assert_eq(ftruncate(fd, size), 0);
	cr_assert_eq(pwrite(fd, data, len, at), (ssize_t)len);
	close(fd);
}

TestSuite(h2ctl, .init = setup, .fini = teardown);

Test(h2ctl, volume_commands_print_tables_and_json)
{
	struct run r = ctl("volume", "create", "disk1", "64M", NULL);
	cJSON *j, *vols, *v;

	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("volume", "list", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "NAME") && strstr(r.out, "disk1") &&
		  strstr(r.out, "64 MiB"),
		  "%s", r.out);
	run_free(&r);
	r = ctl("--json", "volume", "list", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "not JSON: %s", r.out);
	vols = cJSON_GetObjectItem(j, "volumes");
	cr_assert_eq(cJSON_GetArraySize(vols), 1);
	v = cJSON_GetArrayItem(vols, 0);
	cr_assert_str_eq(cJSON_GetObjectItem(v, "name")->valuestring, "disk1");
	cr_assert_eq(cJSON_GetObjectItem(v, "size")->valuedouble, 64.0 * MiB);
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(v, "can_admin")));
	cJSON_Delete(j);
	run_free(&r);

	/* global flag after the command */
	r = ctl("volume", "resize", "disk1", "128M", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("volume", "info", "disk1", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_eq(cJSON_GetObjectItem(j, "size")->valuedouble, 128.0 * MiB);
	cJSON_Delete(j);
	run_free(&r);

	r = ctl("volume", "info", "nope", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "nope"), "%s", r.err);
	run_free(&r);
	r = ctl("volume", "create", "x", "12Q", NULL);
	cr_assert_eq(r.status, 2);
	run_free(&r);
	r = ctl("volume", "delete", "disk1", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("--json", "stat", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cJSON_Delete(j);
	run_free(&r);
}

Test(h2ctl, write_read_sync_roundtrip)
{
	const char *in = h2t_path(&srv, "in.bin"), *out;
	uint8_t *data = malloc(3 * MiB + 123);
	char *back;
	struct run r;
	char inb[256], outb[256];

	snprintf(inb, sizeof(inb), "%s", in);
	out = h2t_path(&srv, "out.bin");
	snprintf(outb, sizeof(outb), "%s", out);
	h2t_pattern(data, 3 * MiB + 123, 5);
	write_file(inb, data, 3 * MiB + 123, 0, 0);
	r = ctl("volume", "create", "v", "16M", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("write", "v", "4097", inb, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("sync", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("read", "v", "4097", "3145851", outb, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	back = slurp_path(outb);
	cr_assert_eq(memcmp(back, data, 3 * MiB + 123), 0);
	free(back);
	free(data);
}

Test(h2ctl, import_export_sparse_image_byte_exact)
{
	char img[256], back[256], cmd[600];
	uint8_t blk[65536];
	struct stat st;
	struct run r;

	snprintf(img, sizeof(img), "%s", h2t_path(&srv, "disk.img"));
	snprintf(back, sizeof(back), "%s", h2t_path(&srv, "back.img"));
	h2t_pattern(blk, sizeof(blk), 9);
	write_file(img, blk, sizeof(blk), 0, 32 * MiB);
	write_file(img, blk, 1000, 5 * MiB + 3, 0);
	write_file(img, blk, sizeof(blk), 31 * MiB, 0);
	r = ctl("volume", "create", "img", "32M", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("import", "img", img, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("export", "img", back, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	snprintf(cmd, sizeof(cmd), "cmp '%s' '%s'", img, back);
	cr_assert_eq(system(cmd), 0, "export differs from the imported image");
	cr_assert_eq(stat(back, &st), 0);
	cr_assert_eq(st.st_size, 32 * MiB);
	cr_assert_lt(st.st_blocks * 512, 4 * MiB,
		     "export is not sparse: %lld bytes allocated",
		     (long long)st.st_blocks * 512);
}

Test(h2ctl, bench_reports_iops)
{
	struct run r = ctl("volume", "create", "b", "64M", NULL);
	cJSON *j;

	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("--json", "bench", "b", "--rw", "write", "--time", "1",
		"--qd", "8", "--size", "16M", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_gt(cJSON_GetObjectItem(j, "iops")->valuedouble, 0);
	cJSON_Delete(j);
	run_free(&r);
}

/* A JSON number member (exact below 2^53). */
static double jnum(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(o, key);

	cr_assert(cJSON_IsNumber(v), "\"%s\" missing", key);
	return v->valuedouble;
}

Test(h2ctl, snapshot_commands_tables_json_and_export)
{
	char img[256], back[256], part[256], cmd[600];
	uint8_t blk[65536];
	cJSON *j, *arr, *s;
	struct run r;

	snprintf(img, sizeof(img), "%s", h2t_path(&srv, "disk.img"));
	snprintf(back, sizeof(back), "%s", h2t_path(&srv, "back.img"));
	snprintf(part, sizeof(part), "%s", h2t_path(&srv, "part.bin"));
	h2t_pattern(blk, sizeof(blk), 3);
	write_file(img, blk, sizeof(blk), 0, 8 * MiB);
	write_file(img, blk, 4000, 6 * MiB + 1, 0);
	r = ctl("volume", "create", "vm", "8M", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("import", "vm", img, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);

	r = ctl("snapshot", "create", "vm", "monday", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "vm@monday"), "%s", r.out);
	run_free(&r);
	r = ctl("--json", "snapshot", "create", "vm", "tuesday", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_str_eq(cJSON_GetObjectItem(j, "name")->valuestring,
			 "tuesday");
	cr_assert_eq(jnum(j, "size"), 8.0 * MiB);
	cr_assert_gt(jnum(j, "tid"), 0);
	cJSON_Delete(j);
	run_free(&r);
	/* Overwrite the start of the live volume. */
	write_file(part, "live data", 9, 0, 0);
	r = ctl("write", "vm", "0", part, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);

	r = ctl("snapshot", "list", "vm", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "SNAPSHOT") && strstr(r.out, "EXCLUSIVE") &&
		      strstr(r.out, "TID") && strstr(r.out, "monday") &&
		      strstr(r.out, "tuesday"),
		  "%s", r.out);
	cr_assert_lt(strstr(r.out, "monday"), strstr(r.out, "tuesday"),
		     "oldest first: %s", r.out);
	run_free(&r);
	r = ctl("--json", "snapshot", "list", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	arr = cJSON_GetObjectItem(j, "snapshots");
	cr_assert_eq(cJSON_GetArraySize(arr), 2);
	s = cJSON_GetArrayItem(arr, 0);
	cr_assert_str_eq(cJSON_GetObjectItem(s, "volume")->valuestring, "vm");
	cr_assert_str_eq(cJSON_GetObjectItem(s, "name")->valuestring, "monday");
	cr_assert(cJSON_IsString(cJSON_GetObjectItem(s, "created")));
	jnum(s, "excl_bytes");
	jnum(s, "refer_bytes");
	cr_assert_eq(jnum(s, "clones"), 0);
	cJSON_Delete(j);
	run_free(&r);

	/* The snapshot exports as it was: byte-exact and sparse. */
	r = ctl("export", "vm@tuesday", back, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	snprintf(cmd, sizeof(cmd), "cmp '%s' '%s'", img, back);
	cr_assert_eq(system(cmd), 0, "the snapshot's export differs");
	r = ctl("read", "vm@monday", "0", "9", part, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	{
		char *got = slurp_path(part);

		cr_assert_eq(memcmp(got, blk, 9), 0, "the snapshot changed");
		free(got);
	}
	r = ctl("write", "vm@monday", "0", img, NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "read-only"), "%s", r.err);
	run_free(&r);

	/* volume info shows them. */
	r = ctl("sync", NULL);
	run_free(&r);
	r = ctl("volume", "info", "vm", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "snapshots") && strstr(r.out, "2 (holding"),
		  "%s", r.out);
	run_free(&r);
	r = ctl("--json", "volume", "info", "vm", NULL);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_eq(jnum(j, "snapshots"), 2);
	cr_assert_gt(jnum(j, "snap_bytes"), 0);
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "origin")));
	cJSON_Delete(j);
	run_free(&r);

	/* Clone, then the dependency rules. */
	r = ctl("clone", "vm@monday", "copy", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("--json", "volume", "info", "copy", NULL);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_str_eq(cJSON_GetObjectItem(j, "origin")->valuestring,
			 "vm@monday");
	cJSON_Delete(j);
	run_free(&r);
	r = ctl("volume", "info", "copy", NULL);
	cr_assert(strstr(r.out, "clone of") && strstr(r.out, "vm@monday"), "%s",
		  r.out);
	run_free(&r);
	r = ctl("snapshot", "delete", "vm", "monday", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "monday"), "%s", r.err);
	run_free(&r);
	r = ctl("volume", "delete", "vm", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "--recursive"), "%s", r.err);
	run_free(&r);

	/* Rollback to the newest snapshot. */
	r = ctl("rollback", "vm", "monday", NULL);
	cr_assert_eq(r.status, 1, "monday is not the newest");
	run_free(&r);
	r = ctl("--json", "rollback", "vm", "tuesday", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "rolled_back")));
	cJSON_Delete(j);
	run_free(&r);
	r = ctl("export", "vm", back, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	cr_assert_eq(system(cmd), 0, "the rolled-back volume differs");

	r = ctl("--json", "stat", NULL);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_eq(jnum(j, "snapshots"), 2);
	cJSON_Delete(j);
	run_free(&r);

	r = ctl("volume", "delete", "vm", "--recursive", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	run_free(&r);
	r = ctl("--json", "volume", "list", NULL);
	j = cJSON_Parse(r.out);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "volumes")), 0,
		     "the clone stayed: %s", r.out);
	cJSON_Delete(j);
	run_free(&r);
	r = ctl("snapshot", "list", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "no snapshots"), "%s", r.out);
	run_free(&r);
}
