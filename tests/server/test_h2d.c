/*
 * The h2d binary's format and check subcommands, run as a user would:
 * exit codes, messages and the --json report.
 */
#include <criterion/criterion.h>
#include <cJSON.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef H2D_PATH
#error "H2D_PATH must name the h2d binary"
#endif

struct run {
	int status; /* exit code, or -1 if it did not exit normally */
	char *out;
	char *err;
};

static char dir[] = "/tmp/h2d-test-XXXXXX";

/* A path inside the test's temporary directory (static buffer). */
static const char *tpath(const char *name)
{
	static char p[4][256];
	static int k;

	k = (k + 1) % 4;
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

/* Whole contents of fd (rewound) as a NUL-terminated string. */
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

/* Run h2d with the given arguments (NULL-terminated). */
static struct run h2d(const char *arg0, ...)
{
	const char *argv[16] = {H2D_PATH, arg0};
	int argc = 2, fo, fe, ws;
	struct run r = {0};
	char po[300], pe[300];
	va_list ap;
	pid_t pid;

	va_start(ap, arg0);
	while (argc < 15 && (argv[argc] = va_arg(ap, const char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	/* Own buffers: the arguments may be tpath() results. */
	snprintf(po, sizeof(po), "%s/stdout", dir);
	snprintf(pe, sizeof(pe), "%s/stderr", dir);
	fo = open(po, O_RDWR | O_CREAT | O_TRUNC, 0600);
	fe = open(pe, O_RDWR | O_CREAT | O_TRUNC, 0600);
	cr_assert(fo >= 0 && fe >= 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(fo, 1);
		dup2(fe, 2);
		execv(H2D_PATH, (char **)argv);
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

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* Assert an exit code, showing the output if it differs. */
#define EXPECT_EXIT(r, code)                                                   \
	cr_assert_eq((r).status, (code), "exit %d, stdout:\n%s\nstderr:\n%s",  \
		     (r).status, (r).out, (r).err)

/* Format a fresh 64 MiB sparse file and return its path. */
static const char *formatted(void)
{
	const char *img = tpath("store.img");
	struct run r = h2d("format", "--device", img, "--size", "64M", NULL);

	EXPECT_EXIT(r, 0);
	run_free(&r);
	return img;
}

/* Overwrite len bytes at off of path with 0xa5. */
static void scribble(const char *path, off_t off, size_t len)
{
	int fd = open(path, O_WRONLY);
	char *junk = malloc(len);

	cr_assert(fd >= 0 && junk);
	memset(junk, 0xa5, len);
	cr_assert_eq(pwrite(fd, junk, len, off), (ssize_t)len);
	close(fd);
	free(junk);
}

TestSuite(h2d, .init = setup, .fini = teardown);

Test(h2d, format_creates_a_sparse_store_and_reports_it)
{
	const char *img = tpath("store.img");
	struct run r = h2d("format", "--device", img, "--size", "64M", NULL);
	struct stat sb;

	EXPECT_EXIT(r, 0);
	cr_assert(strstr(r.out, img), "%s", r.out);
	cr_assert(strstr(r.out, "64 MiB"), "%s", r.out);
	cr_assert(strstr(r.out, "4 header copies"), "%s", r.out);
	cr_assert_eq(stat(img, &sb), 0);
	cr_assert_eq(sb.st_size, 64 << 20);
	/* Sparse: far less than 64 MiB is actually allocated. */
	cr_assert_lt(sb.st_blocks * 512, 8 << 20);
	run_free(&r);
}

Test(h2d, format_preallocate_writes_the_whole_file_with_progress)
{
	const char *img = tpath("store.img");
	struct run r = h2d("format", "--device", img, "--size", "64M",
			   "--preallocate", NULL);
	struct stat sb;

	EXPECT_EXIT(r, 0);
	cr_assert_eq(stat(img, &sb), 0);
	cr_assert_eq(sb.st_size, 64 << 20);
	/* Every block allocated (file systems may add a little). */
	cr_assert_geq(sb.st_blocks * 512, 64 << 20);
	/* Progress, one line per tenth when stderr is not a terminal. */
	cr_assert(strstr(r.err, "preallocating 64 MiB"), "%s", r.err);
	cr_assert(strstr(r.err, "50%"), "%s", r.err);
	cr_assert(strstr(r.err, "100%"), "%s", r.err);
	run_free(&r);
	r = h2d("check", "--device", img, NULL);
	EXPECT_EXIT(r, 0);
	run_free(&r);
	/* Only for a file this command creates. */
	r = h2d("format", "--device", img, "--preallocate", "--force", NULL);
	EXPECT_EXIT(r, 2);
	cr_assert(strstr(r.err, "--preallocate needs --size"), "%s", r.err);
	run_free(&r);
}

Test(h2d, second_format_is_refused_without_force)
{
	const char *img = formatted();
	struct run r = h2d("format", "--device", img, "--size", "64M", NULL);

	EXPECT_EXIT(r, 1);
	cr_assert(strstr(r.err, "--force"), "%s", r.err);
	run_free(&r);
	/* Same without --size (formatting the existing file in place). */
	r = h2d("format", "--device", img, NULL);
	EXPECT_EXIT(r, 1);
	cr_assert(strstr(r.err, "--force"), "%s", r.err);
	run_free(&r);
	r = h2d("format", "--device", img, "--size", "128M", "--force", NULL);
	EXPECT_EXIT(r, 0);
	cr_assert(strstr(r.out, "128 MiB"), "%s", r.out);
	run_free(&r);
	r = h2d("format", "--device", img, "--force", NULL);
	EXPECT_EXIT(r, 0);
	run_free(&r);
}

Test(h2d, existing_non_store_file_is_not_replaced_without_force)
{
	const char *img = tpath("precious.img");
	struct run r;
	struct stat sb;
	int fd = open(img, O_WRONLY | O_CREAT, 0600);

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "data", 4), 4);
	close(fd);
	r = h2d("format", "--device", img, "--size", "64M", NULL);
	EXPECT_EXIT(r, 1);
	cr_assert(strstr(r.err, "--force"), "%s", r.err);
	cr_assert_eq(stat(img, &sb), 0);
	cr_assert_eq(sb.st_size, 4);
	run_free(&r);
}

Test(h2d, check_of_a_fresh_store_is_clean)
{
	const char *img = formatted();
	struct run r = h2d("check", "--device", img, NULL);

	EXPECT_EXIT(r, 0);
	cr_assert(strstr(r.out, "status:   clean"), "%s", r.out);
	cr_assert(strstr(r.out, "headers:  4/4 valid"), "%s", r.out);
	run_free(&r);
}

Test(h2d, check_json_is_one_parseable_object)
{
	const char *img = formatted();
	struct run r = h2d("check", "--device", img, "--json", NULL);
	cJSON *o, *it;

	EXPECT_EXIT(r, 0);
	o = cJSON_Parse(r.out);
	cr_assert_not_null(o, "%s", r.out);
	cr_assert(cJSON_IsObject(o));
	cr_assert_eq(cJSON_GetObjectItem(o, "status")->valueint, 0);
	cr_assert_eq(cJSON_GetObjectItem(o, "headers_valid")->valueint, 4);
	cr_assert_eq(cJSON_GetObjectItem(o, "header_copies")->valueint, 4);
	cr_assert_eq(cJSON_GetObjectItem(o, "blocks_total")->valuedouble,
		     16384);
	cr_assert_eq(cJSON_GetObjectItem(o, "leaked_blocks")->valueint, 0);
	it = cJSON_GetObjectItem(o, "problems");
	cr_assert(cJSON_IsArray(it));
	cr_assert_eq(cJSON_GetArraySize(it), 0);
	cJSON_Delete(o);
	run_free(&r);
}

Test(h2d, damaged_header_copy_exits_1_and_is_named)
{
	const char *img = formatted();
	struct run r;
	cJSON *o, *p;

	scribble(img, (16 << 20) + 200, 16);
	r = h2d("check", "--device", img, NULL);
	EXPECT_EXIT(r, 1);
	cr_assert(strstr(r.out, "header copy 1 (offset 16777216): "), "%s",
		  r.out);
	cr_assert(strstr(r.out, "headers:  3/4 valid"), "%s", r.out);
	run_free(&r);

	r = h2d("check", "--device", img, "--json", NULL);
	EXPECT_EXIT(r, 1);
	o = cJSON_Parse(r.out);
	cr_assert_not_null(o, "%s", r.out);
	cr_assert_eq(cJSON_GetObjectItem(o, "status")->valueint, 1);
	p = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "problems"), 0);
	cr_assert_not_null(p);
	cr_assert(strstr(cJSON_GetObjectItem(p, "where")->valuestring,
			 "header copy 1"));
	cr_assert(strstr(cJSON_GetObjectItem(p, "what")->valuestring, "CRC"));
	cJSON_Delete(o);
	run_free(&r);
}

Test(h2d, garbage_file_exits_2)
{
	const char *img = tpath("garbage.img");
	int fd = open(img, O_WRONLY | O_CREAT, 0600);
	struct run r;
	cJSON *o;

	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, 64 << 20), 0);
	close(fd);
	scribble(img, 0, 8192);
	scribble(img, 16 << 20, 8192);
	r = h2d("check", "--device", img, NULL);
	EXPECT_EXIT(r, 2);
	cr_assert(strstr(r.out, "no valid h2 volume header"), "%s", r.out);
	run_free(&r);
	r = h2d("check", "--device", img, "--json", NULL);
	EXPECT_EXIT(r, 2);
	o = cJSON_Parse(r.out);
	cr_assert_not_null(o, "%s", r.out);
	cr_assert_eq(cJSON_GetObjectItem(o, "status")->valueint, 2);
	cJSON_Delete(o);
	run_free(&r);
}

Test(h2d, missing_device_exits_2_and_says_why)
{
	struct run r = h2d("check", "--device", tpath("nope.img"), NULL);

	EXPECT_EXIT(r, 2);
	cr_assert(strstr(r.err, "nope.img"), "%s", r.err);
	cr_assert(strstr(r.err, "No such file"), "%s", r.err);
	run_free(&r);
	r = h2d("format", "--device", tpath("nope.img"), NULL);
	EXPECT_EXIT(r, 1);
	cr_assert(strstr(r.err, "--size"), "%s", r.err);
	run_free(&r);
}

Test(h2d, usage_errors_exit_2)
{
	struct run r = h2d("--help", NULL);

	EXPECT_EXIT(r, 0);
	cr_assert(strstr(r.out, "format") && strstr(r.out, "check"), "%s",
		  r.out);
	run_free(&r);
	r = h2d("frobnicate", NULL);
	EXPECT_EXIT(r, 2);
	cr_assert(strstr(r.err, "unknown command"), "%s", r.err);
	run_free(&r);
	r = h2d("format", NULL);
	EXPECT_EXIT(r, 2);
	cr_assert(strstr(r.err, "--device"), "%s", r.err);
	run_free(&r);
	r = h2d("format", "--device", tpath("x.img"), "--size", "12Q", NULL);
	EXPECT_EXIT(r, 2);
	cr_assert(strstr(r.err, "12Q"), "%s", r.err);
	run_free(&r);
	r = h2d("format", "--device", tpath("x.img"), "--size", "1M", NULL);
	EXPECT_EXIT(r, 2);
	cr_assert(strstr(r.err, "too small"), "%s", r.err);
	cr_assert_neq(access(tpath("x.img"), F_OK), 0);
	run_free(&r);
	r = h2d("check", "--bogus", NULL);
	EXPECT_EXIT(r, 2);
	run_free(&r);
	r = h2d("check", "--help", NULL);
	EXPECT_EXIT(r, 0);
	cr_assert(strstr(r.out, "--json"), "%s", r.out);
	run_free(&r);
	r = h2d("format", "--help", NULL);
	EXPECT_EXIT(r, 0);
	cr_assert(strstr(r.out, "--force"), "%s", r.out);
	run_free(&r);
}
