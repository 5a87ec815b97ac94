/*
 * Observability against a real h2d: h2ctl stat (tables and --json),
 * libh2client's report and its visibility rules, and the Prometheus
 * endpoint scraped with curl.  The counts are exact: every request this
 * test makes is known.
 */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#ifndef H2CTL_PATH
#error "H2CTL_PATH must name the h2ctl binary"
#endif

#define MiB (1024 * 1024)

static struct h2t_srv srv;

static void setup(void)
{
	static const char *const extra[] = {"--metrics-listen", "127.0.0.1:0",
					    "--access", "limited=write:pub-*",
					    NULL};

	h2t_start(&srv, extra);
}

static void teardown(void)
{
	h2t_cleanup(&srv);
}

TestSuite(monitor, .init = setup, .fini = teardown);

/* Run h2ctl (admin) and return its stdout; exit status must be 0. */
static char *ctl(const char *arg0, ...)
{
	const char *argv[16] = {H2CTL_PATH, arg0};
	char out[256];
	int argc = 2, ws;
	va_list ap;
	pid_t pid;
	FILE *f;
	char *s;
	long n;

	va_start(ap, arg0);
	while (argc < 15 && (argv[argc] = va_arg(ap, const char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	snprintf(out, sizeof(out), "%s", h2t_path(&srv, "ctl.out"));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		dup2(fo, 1);
		setenv("H2_SERVER", srv.addr, 1);
		setenv("H2_TLS_DIR", srv.tls, 1);
		execv(H2CTL_PATH, (char *const *)argv);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "h2ctl %s failed",
		  arg0);
	f = fopen(out, "r");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	s = calloc(1, (size_t)n + 1);
	cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return s;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	cr_assert(cJSON_IsNumber(v), "\"%s\" missing", key);
	return v->valuedouble;
}

static const cJSON *obj(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	cr_assert(cJSON_IsObject(v) || cJSON_IsArray(v), "\"%s\" missing", key);
	return v;
}

/* volumes[] entry named name, or NULL. */
static const cJSON *json_volume(const cJSON *doc, const char *name)
{
	const cJSON *v;

	cJSON_ArrayForEach(v, obj(doc, "volume_stats"))
	{
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(v, "name");

		if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
			return v;
	}
	return NULL;
}

/*
 * The workload, on pub-a: 4 writes (3 x 4 KiB + 1000 B), 3 reads (2 x
 * 4 KiB and one past the end: OUT_OF_RANGE), 1 trim of 4 KiB, 1 flush;
 * on secret-b: 1 write of 4 KiB.
 */
static void workload(void)
{
	h2_client *c = h2t_connect(&srv);
	uint8_t buf[4096];
	h2_volume *a, *b;

	h2t_pattern(buf, sizeof(buf), 1);
	cr_assert_eq(h2_volume_create(c, "pub-a", MiB), 0);
	cr_assert_eq(h2_volume_create(c, "secret-b", MiB), 0);
	cr_assert_eq(h2_volume_open(c, "pub-a", H2_OPEN_RW, &a), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(h2_pwrite(a, buf, 4096, (uint64_t)i * 4096, 0), 0);
	cr_assert_eq(h2_pwrite(a, buf, 1000, 65536, 0), 0);
	cr_assert_eq(h2_pread(a, buf, 4096, 0), 0);
	cr_assert_eq(h2_pread(a, buf, 4096, 4096), 0);
	cr_assert_eq(h2_pread(a, buf, 4096, MiB), H2_ERANGE);
	cr_assert_eq(h2_trim(a, 8192, 4096, 0), 0);
	cr_assert_eq(h2_flush(a), 0);
	cr_assert_eq(h2_volume_open(c, "secret-b", H2_OPEN_RW, &b), 0);
	cr_assert_eq(h2_pwrite(b, buf, 4096, 0, 0), 0);
	cr_assert_eq(h2_volume_close(a), 0);
	cr_assert_eq(h2_volume_close(b), 0);
	h2_disconnect(c);
}

/* ops.<op>.<key> of a stat object. */
static double op_num(const cJSON *o, const char *op, const char *key)
{
	return num(obj(obj(o, "ops"), op), key);
}

Test(monitor, h2ctl_stat_json_counts_exactly)
{
	const cJSON *v, *lat;
	cJSON *doc;
	char *out;
	double sum = 0;
	const cJSON *op;

	workload();
	out = ctl("--json", "stat", NULL);
	doc = cJSON_Parse(out);
	cr_assert_not_null(doc, "not JSON: %s", out);

	/* Server-wide: both volumes. */
	cr_assert_eq(op_num(doc, "write", "requests"), 5);
	cr_assert_eq(op_num(doc, "write", "native_requests"), 5);
	cr_assert_eq(op_num(doc, "write", "nbd_requests"), 0);
	cr_assert_eq(op_num(doc, "write", "bytes"), 4 * 4096 + 1000);
	cr_assert_eq(op_num(doc, "read", "requests"), 3);
	cr_assert_eq(op_num(doc, "read", "bytes"), 2 * 4096);
	cr_assert_eq(op_num(doc, "read", "errors"), 1);
	cr_assert_eq(op_num(doc, "trim", "bytes"), 4096);
	cr_assert_eq(op_num(doc, "flush", "requests"), 1);
	cr_assert_eq(op_num(doc, "txn", "requests"), 0);
	cr_assert_eq(num(obj(doc, "errors_by_code"), "OUT_OF_RANGE"), 1);
	cr_assert_eq(num(doc, "errors"), 1);
	/* requests is the sum over the operations (Hello, volume admin and
	 * this Stat are "other"). */
	cJSON_ArrayForEach(op, obj(doc, "ops")) sum += num(op, "requests");
	cr_assert_eq(num(doc, "requests"), sum);
	cr_assert_geq(op_num(doc, "other", "requests"), 8);
	lat = obj(obj(obj(doc, "ops"), "write"), "latency");
	cr_assert_eq(num(lat, "count"), 5);
	cr_assert_gt(num(lat, "p50_ns"), 0);
	cr_assert_geq(num(lat, "p99_ns"), num(lat, "p50_ns"));
	cr_assert_geq(num(lat, "p999_ns"), num(lat, "p99_ns"));
	cr_assert_gt(num(lat, "mean_ns"), 0);
	cr_assert_geq(num(doc, "native_connections_total"), 2);
	cr_assert_eq(num(doc, "native_connections"), 1, "this h2ctl");

	/* pub-a alone. */
	v = json_volume(doc, "pub-a");
	cr_assert_not_null(v, "%s", out);
	cr_assert_eq(num(v, "requests"), 4 + 3 + 1 + 1);
	cr_assert_eq(num(v, "errors"), 1);
	cr_assert_eq(num(v, "size"), MiB);
	cr_assert_eq(num(v, "open_handles"), 0);
	cr_assert_eq(op_num(v, "write", "bytes"), 3 * 4096 + 1000);
	cr_assert_eq(op_num(v, "read", "errors"), 1);
	cr_assert_eq(num(obj(v, "errors_by_code"), "OUT_OF_RANGE"), 1);
	cr_assert_null(cJSON_GetObjectItem(obj(v, "ops"), "txn"),
		       "operations the volume never saw are left out");
	v = json_volume(doc, "secret-b");
	cr_assert_not_null(v);
	cr_assert_eq(num(v, "requests"), 1);
	cJSON_Delete(doc);
	free(out);

	/* One volume: the same shape, only that volume. */
	out = ctl("--json", "stat", "secret-b", NULL);
	doc = cJSON_Parse(out);
	cr_assert_not_null(doc, "not JSON: %s", out);
	cr_assert_eq(cJSON_GetArraySize(obj(doc, "volume_stats")), 1);
	cr_assert_not_null(json_volume(doc, "secret-b"));
	cJSON_Delete(doc);
	free(out);
}

Test(monitor, h2ctl_stat_tables)
{
	char *out;

	workload();
	out = ctl("stat", NULL);
	cr_assert(strstr(out, "OPERATION") && strstr(out, "P99") &&
		      strstr(out, "VOLUME") && strstr(out, "pub-a") &&
		      strstr(out, "secret-b") && strstr(out, "OUT_OF_RANGE 1"),
		  "%s", out);
	free(out);
	out = ctl("stat", "pub-a", NULL);
	cr_assert(strstr(out, "volume") && strstr(out, "pub-a") &&
		      strstr(out, "OPERATION") && !strstr(out, "secret-b"),
		  "%s", out);
	free(out);
}

Test(monitor, a_client_sees_only_its_volumes)
{
	h2_client *lim, *nocert = NULL;
	h2_stat_report *r;
	const h2_op_stats *w;

	workload();
	h2t_issue_client(&srv, "limited", "limited", 30, false);
	cr_assert_eq(h2t_connect_with(&srv, h2t_path(&srv, "limited.crt"),
				      h2t_path(&srv, "limited.key"), &lim),
		     0, "%s", h2_last_error());
	cr_assert_eq(h2_stat_report_get(lim, NULL, &r), 0, "%s",
		     h2_last_error());
	cr_assert_geq(r->size, sizeof(*r));
	cr_assert(H2_STAT_HAS(r, volumes));
	cr_assert_eq(r->nvolumes, 1);
	cr_assert_str_eq(r->volumes[0]->name, "pub-a");
	/* Server-wide numbers are for everyone. */
	w = h2_op_stats_find(r->ops, r->nops, "write");
	cr_assert_not_null(w);
	cr_assert_eq(w->requests, 5);
	cr_assert_eq(r->nerrors, 1);
	cr_assert_str_eq(r->errors_by_code[0]->code, "OUT_OF_RANGE");
	cr_assert_eq(r->errors_by_code[0]->err, H2_ERANGE);
	h2_stat_report_free(r);
	/* Invisible and missing look the same. */
	cr_assert_eq(h2_stat_report_get(lim, "secret-b", &r), H2_ENOENT);
	cr_assert_eq(h2_stat_report_get(lim, "no-such", &r), H2_ENOENT);
	cr_assert_eq(h2_stat_report_get(lim, "pub-a", &r), 0);
	cr_assert_eq(r->nvolumes, 1);
	cr_assert_eq(r->volumes[0]->requests, 9);
	h2_stat_report_free(r);
	h2_disconnect(lim);

	/* A refused handshake is counted. */
	cr_assert_eq(h2t_connect_with(&srv, NULL, NULL, &nocert), H2_ETLS);
	lim = h2t_connect(&srv);
	cr_assert_eq(h2_stat_report_get(lim, NULL, &r), 0);
	cr_assert_geq(r->tls_handshake_failures, 1);
	cr_assert_eq(r->nvolumes, 2);
	h2_stat_report_free(r);
	h2_disconnect(lim);
}

Test(monitor, a_deleted_volume_leaves_the_report)
{
	h2_client *c;
	h2_stat_report *r;
	h2_volume *v;
	uint8_t buf[512] = {0};

	workload();
	c = h2t_connect(&srv);
	cr_assert_eq(h2_volume_delete(c, "secret-b"), 0);
	cr_assert_eq(h2_stat_report_get(c, NULL, &r), 0);
	cr_assert_eq(r->nvolumes, 1);
	cr_assert_str_eq(r->volumes[0]->name, "pub-a");
	h2_stat_report_free(r);
	/* A new volume of that name starts from zero. */
	cr_assert_eq(h2_volume_create(c, "secret-b", MiB), 0);
	cr_assert_eq(h2_volume_open(c, "secret-b", H2_OPEN_RW, &v), 0);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), 0, 0), 0);
	cr_assert_eq(h2_stat_report_get(c, "secret-b", &r), 0);
	cr_assert_eq(r->volumes[0]->requests, 1);
	cr_assert_eq(r->volumes[0]->open_handles, 1);
	h2_stat_report_free(r);
	h2_volume_close(v);
	h2_disconnect(c);
}

Test(monitor, prometheus_endpoint_serves_the_same_counters)
{
	char *text;
	int code;

	workload();
	text = h2t_scrape(&srv, "GET", "/metrics", &code);
	cr_assert_eq(code, 200, "%s", text);
	h2t_check_exposition(&srv, text);
	cr_assert_eq(
	    h2t_metric(text,
		       "h2_requests_total{proto=\"native\",op=\"write\"}"),
	    5);
	cr_assert_eq(
	    h2t_metric(text, "h2_requests_total{proto=\"nbd\",op=\"write\"}"),
	    0);
	cr_assert_eq(h2t_metric(text, "h2_request_bytes_total{op=\"read\"}"),
		     2 * 4096);
	cr_assert_eq(h2t_metric(text, "h2_request_errors_total{op=\"read\","
				      "code=\"OUT_OF_RANGE\"}"),
		     1);
	cr_assert_eq(
	    h2t_metric(text, "h2_request_duration_seconds_count{op=\"write\"}"),
	    5);
	cr_assert_eq(h2t_metric(text, "h2_request_duration_seconds_bucket{op="
				      "\"write\",le=\"+Inf\"}"),
		     5);
	cr_assert_eq(h2t_metric(text,
				"h2_volume_requests_total{volume="
				"\"pub-a\",proto=\"native\",op=\"read\"}"),
		     3);
	cr_assert_eq(h2t_metric(text, "h2_volume_request_bytes_total{volume="
				      "\"pub-a\",op=\"write\"}"),
		     3 * 4096 + 1000);
	cr_assert_eq(h2t_metric(text, "h2_volume_request_errors_total{volume="
				      "\"pub-a\",op=\"read\",code="
				      "\"OUT_OF_RANGE\"}"),
		     1);
	cr_assert_eq(h2t_metric(text, "h2_volume_request_duration_seconds_"
				      "count{volume=\"pub-a\",op=\"write\"}"),
		     4);
	cr_assert_eq(h2t_metric(text, "h2_volume_requests_total{volume="
				      "\"secret-b\",proto=\"native\",op="
				      "\"write\"}"),
		     1);
	cr_assert_eq(h2t_metric(text, "h2_volume_size_bytes{volume=\"pub-a\"}"),
		     MiB);
	cr_assert_eq(h2t_metric(text, "h2_store_volumes"), 2);
	cr_assert_eq(h2t_metric(text, "h2_connections{proto=\"native\"}"), 0);
	cr_assert_geq(
	    h2t_metric(text, "h2_connections_total{proto=\"native\"}"), 1);
	cr_assert(strstr(text, "# TYPE h2_request_duration_seconds "
			       "histogram\n"));
	free(text);
}

Test(monitor, prometheus_endpoint_refuses_other_paths_and_methods)
{
	char *text;
	int code;

	text = h2t_scrape(&srv, "GET", "/", &code);
	cr_assert_eq(code, 404);
	free(text);
	text = h2t_scrape(&srv, "GET", "/metrics/x", &code);
	cr_assert_eq(code, 404);
	free(text);
	text = h2t_scrape(&srv, "POST", "/metrics", &code);
	cr_assert_eq(code, 405);
	free(text);
	text = h2t_scrape(&srv, "DELETE", "/metrics", &code);
	cr_assert_eq(code, 405);
	free(text);
	/* A query string does not change the path. */
	text = h2t_scrape(&srv, "GET", "/metrics?x=1", &code);
	cr_assert_eq(code, 200);
	free(text);
	/* And the server still stops cleanly. */
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
}

Test(monitor, metrics_port_in_use_stops_the_start_with_a_clear_error)
{
	char dir[] = "/tmp/h2-mon-XXXXXX", cmd[1024], line[512];
	bool said = false;
	FILE *f;
	int st;

	cr_assert_not_null(mkdtemp(dir));
	/* The running server holds srv.metrics. */
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && '%s' serve --dev --listen 127.0.0.1:0 "
		 "--nbd-listen '' --metrics-listen %s 2>&1",
		 dir, H2D_PATH, srv.metrics);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		said = said || strstr(line, "cannot listen for metrics on");
	st = pclose(f);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0,
		  "h2d started without its metrics port");
	cr_assert(said, "no error naming the metrics address");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(monitor, snapshot_space_is_a_gauge)
{
	h2_client *c = h2t_connect(&srv);
	uint8_t buf[4096];
	h2_volume *v;
	char *text;
	int code;

	h2t_pattern(buf, sizeof(buf), 7);
	cr_assert_eq(h2_volume_create(c, "snappy", MiB), 0);
	cr_assert_eq(h2_volume_open(c, "snappy", H2_OPEN_RW, &v), 0);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(h2_pwrite(v, buf, 4096, (uint64_t)i * 4096, 0), 0);
	cr_assert_eq(h2_snapshot_create(c, "snappy", "before", NULL), 0);
	h2t_pattern(buf, sizeof(buf), 8);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(h2_pwrite(v, buf, 4096, (uint64_t)i * 4096, 0), 0);
	cr_assert_eq(h2_flush(v), 0);
	cr_assert_eq(h2_volume_close(v), 0);
	h2_disconnect(c);
	text = h2t_scrape(&srv, "GET", "/metrics", &code);
	cr_assert_eq(code, 200, "%s", text);
	h2t_check_exposition(&srv, text);
	cr_assert_eq(h2t_metric(text, "h2_store_snapshots"), 1);
	cr_assert_eq(h2t_metric(text, "h2_volume_snapshots{volume=\"snappy\"}"),
		     1);
	/* The 8 overwritten data blocks (and the old tree path) are the
	 * snapshot's alone now. */
	cr_assert_geq(h2t_metric(text, "h2_volume_snapshot_bytes{volume="
				       "\"snappy\"}"),
		      8 * 4096);
	cr_assert_eq(h2t_metric(text, "h2_store_snapshot_bytes"),
		     h2t_metric(text, "h2_volume_snapshot_bytes{volume="
				      "\"snappy\"}"));
	free(text);
}
