/* The Prometheus text exposition: label escaping, families, histogram
 * buckets agreeing with the counters. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prom.h"

/* Render with the given pieces into a string (caller frees). */
static char *render(struct h2_metrics *m, const struct h2_vol_info *vols,
		    size_t nvols)
{
	struct h2_store_stats st = {.total_bytes = 1 << 30,
				    .used_bytes = 4096,
				    .free_bytes = (1 << 30) - 4096,
				    .dirty_bytes = 8192,
				    .flushes = 3,
				    .flush_ns_total = 1500000000,
				    .last_flush_ns = 250000000,
				    .volumes = nvols};
	struct h2_prom_input in = {
	    .m = m, .st = &st, .vols = vols, .nvols = nvols, .version = "9.9"};
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	cr_assert_eq(h2_prom_write(f, &in), 0);
	cr_assert_eq(fclose(f), 0);
	return text;
}

/* The value of the sample line that starts with prefix (name and
 * labels), or -1 if there is none. */
static long long value_of(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);

	for (const char *p = text; p && *p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
			return strtoll(p + n + 1, NULL, 10);
	}
	return -1;
}

static char *escaped(const char *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	h2_prom_label_value(f, s);
	fclose(f);
	return text;
}

Test(prom, label_values_are_escaped)
{
	char *e = escaped("a\\b\"c\nd");

	cr_assert_str_eq(e, "a\\\\b\\\"c\\nd");
	free(e);
	e = escaped("vm-1.data_x");
	cr_assert_str_eq(e, "vm-1.data_x");
	free(e);
}

Test(prom, every_family_has_help_and_type_before_its_samples)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vmetrics *v = h2_metrics_volume_get(m, "vm1");
	struct h2_vol_info vi = {.name = "vm1", .size = 1 << 20};
	char *text, *line, *save = NULL, family[128] = "";
	bool typed = false;

	h2_metrics_request(m, v, H2_MPROTO_NBD, H2_MOP_READ, 0, 512,
			   h2_metrics_now());
	text = render(m, &vi, 1);
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char name[128];

		if (strncmp(line, "# HELP ", 7) == 0) {
			cr_assert_eq(sscanf(line + 7, "%127s", family), 1);
			typed = false;
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char t[32];

			cr_assert_eq(sscanf(line + 7, "%127s %31s", name, t),
				     2);
			cr_assert_str_eq(name, family);
			cr_assert(strcmp(t, "counter") == 0 ||
				      strcmp(t, "gauge") == 0 ||
				      strcmp(t, "histogram") == 0,
				  "%s", line);
			if (strcmp(t, "counter") == 0)
				cr_assert(strstr(name, "_total"), "%s", name);
			typed = true;
			continue;
		}
		cr_assert(typed, "sample before its TYPE: %s", line);
		cr_assert_eq(strncmp(line, family, strlen(family)), 0,
			     "sample %s outside family %s", line, family);
		cr_assert(strchr(line, ' '), "%s", line);
	}
	free(text);
	h2_metrics_volume_put(v);
	h2_metrics_free(m);
}

Test(prom, histogram_buckets_are_cumulative_and_match_the_count)
{
	struct h2_metrics *m = h2_metrics_new();
	struct h2_vmetrics *v = h2_metrics_volume_get(m, "vm1");
	struct h2_vol_info vi = {.name = "vm1", .size = 1 << 20};
	uint64_t now = h2_metrics_now();
	char *text, key[256];
	long long prev = 0, inf, count;

	/* 3 fast requests, 2 at least 5 ms old. */
	for (int i = 0; i < 3; i++)
		h2_metrics_request(m, v, H2_MPROTO_NATIVE, H2_MOP_WRITE, 0,
				   4096, now);
	for (int i = 0; i < 2; i++)
		h2_metrics_request(m, v, H2_MPROTO_NATIVE, H2_MOP_WRITE, 5,
				   4096, now - 5000000);
	text = render(m, &vi, 1);

	for (unsigned k = H2_HIST_MIN_SHIFT; k <= H2_HIST_MAX_SHIFT; k++) {
		long long b;

		snprintf(key, sizeof(key),
			 "h2_request_duration_seconds_bucket{op=\"write\","
			 "le=\"%.12g\"}",
			 (double)(1ull << k) / 1e9);
		b = value_of(text, key);
		cr_assert_geq(b, prev, "%s", key);
		prev = b;
		/* Under 4.19 ms: only the three fast ones. */
		if (k == 22)
			cr_assert_eq(b, 3, "%s", key);
	}
	inf = value_of(text, "h2_request_duration_seconds_bucket{op=\"write\","
			     "le=\"+Inf\"}");
	count =
	    value_of(text, "h2_request_duration_seconds_count{op=\"write\"}");
	cr_assert_eq(inf, 5);
	cr_assert_eq(count, 5);
	cr_assert_eq(prev, 5);
	cr_assert_eq(value_of(text, "h2_requests_total{proto=\"native\","
				    "op=\"write\"}"),
		     5);
	cr_assert_eq(value_of(text, "h2_request_bytes_total{op=\"write\"}"),
		     3 * 4096);
	cr_assert_eq(value_of(text, "h2_request_errors_total{op=\"write\","
				    "code=\"PERMISSION_DENIED\"}"),
		     2);
	/* No series for errors that never happened. */
	cr_assert_eq(value_of(text, "h2_request_errors_total{op=\"read\","
				    "code=\"PERMISSION_DENIED\"}"),
		     -1);
	/* The volume's families, with its label. */
	cr_assert_eq(value_of(text, "h2_volume_requests_total{volume=\"vm1\","
				    "proto=\"native\",op=\"write\"}"),
		     5);
	cr_assert_eq(value_of(text, "h2_volume_request_duration_seconds_count{"
				    "volume=\"vm1\",op=\"write\"}"),
		     5);
	/* Operations the volume never saw have no series. */
	cr_assert_eq(value_of(text, "h2_volume_requests_total{volume=\"vm1\","
				    "proto=\"native\",op=\"read\"}"),
		     -1);
	cr_assert_eq(value_of(text, "h2_volume_size_bytes{volume=\"vm1\"}"),
		     1 << 20);
	cr_assert_eq(value_of(text, "h2_store_dirty_bytes"), 8192);
	cr_assert_eq(value_of(text, "h2_flushes_total"), 3);
	cr_assert(strstr(text, "\nh2_flush_seconds_total 1.500000000\n"));
	cr_assert(strstr(text, "\nh2_build_info{version=\"9.9\"} 1\n"));
	free(text);
	h2_metrics_volume_put(v);
	h2_metrics_free(m);
}

Test(prom, volume_labels_are_escaped_in_samples)
{
	struct h2_metrics *m = h2_metrics_new();
	/* The registry takes any string; the engine's names never hold
	 * these characters, the renderer must cope anyway. */
	struct h2_vmetrics *v = h2_metrics_volume_get(m, "a\"b\\c\nd");
	struct h2_vol_info vi = {.name = "a\"b\\c\nd"};
	char *text;

	h2_metrics_volume_handle(v, true);
	text = render(m, &vi, 1);
	cr_assert(strstr(text, "h2_volume_open_handles{volume=\"a\\\"b\\\\c"
			       "\\nd\"} 1\n"),
		  "%s", text);
	cr_assert(strstr(text, "h2_volume_size_bytes{volume=\"a\\\"b\\\\c\\nd"
			       "\"} 0\n"));
	free(text);
	h2_metrics_volume_handle(v, false);
	h2_metrics_volume_put(v);
	h2_metrics_free(m);
}
