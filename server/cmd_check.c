/*
 * cmd_check.c - "h2d check": verify a store offline.
 *
 * Opens the device read-only and runs h2_check() (core/check.h), which
 * never writes.  Human output is one line per problem ("where: what") and
 * a summary; --json prints one JSON object with every report field and
 * the problems, for scripts.  The exit status is the report's status:
 * 0 clean, 1 problems found, 2 no store could be read (no valid header,
 * unreadable directory, or the device itself cannot be opened).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "check.h"
#include "cli.h"
#include "h2core.h"
#include "h2d.h"

struct check_args {
	const char *device;
	bool json;
};

/* Print the command's help. */
static void check_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: h2d check --device PATH [--json]\n"
	    "\n"
	    "Verify the h2 store on PATH without changing it: every header\n"
	    "copy, every block's checksum, the tree invariants, and the\n"
	    "freemap against the blocks in use (leaks, blocks both free and\n"
	    "in use).  Run it while no h2d serves the store.\n"
	    "\n"
	    "  --device PATH  file or block device holding the store\n"
	    "  --json         print the report as one JSON object\n"
	    "  --help         show this help\n"
	    "\n"
	    "Exit status: 0 clean, 1 problems found, 2 no readable store\n"
	    "(or usage error).\n");
}

/* Parse the command line; returns -1 to go on, else an exit code. */
static int check_parse(int argc, char **argv, struct check_args *a)
{
	static const struct option opts[] = {
	    {"device", required_argument, NULL, 'd'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int ch;

	optind = 0; /* glibc: start afresh */
	while ((ch = getopt_long(argc, argv, "d:jh", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			a->device = optarg;
			break;
		case 'j':
			a->json = true;
			break;
		case 'h':
			check_usage(stdout);
			return H2D_EXIT_OK;
		default:
			check_usage(stderr);
			return H2D_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "h2d check: unexpected argument \"%s\"\n\n",
			argv[optind]);
		check_usage(stderr);
		return H2D_EXIT_USAGE;
	}
	if (!a->device) {
		fprintf(stderr, "h2d check: --device PATH is required\n\n");
		check_usage(stderr);
		return H2D_EXIT_USAGE;
	}
	return -1;
}

static const char *status_text(enum h2_check_status s)
{
	switch (s) {
	case H2_CHECK_CLEAN:
		return "clean";
	case H2_CHECK_PROBLEMS:
		return "problems";
	default:
		return "unopenable";
	}
}

/* Print a JSON object to stdout and free it; false if it could not be. */
static bool json_print(cJSON *o)
{
	char *s = o ? cJSON_PrintUnformatted(o) : NULL;

	cJSON_Delete(o);
	if (!s)
		return false;
	printf("%s\n", s);
	free(s);
	return true;
}

/* --json when no report exists: {"device", "status": 2, "error"}. */
static void json_error(const char *device, const char *msg)
{
	cJSON *o = cJSON_CreateObject();

	if (o) {
		cJSON_AddStringToObject(o, "device", device);
		cJSON_AddNumberToObject(o, "status", H2_CHECK_UNOPENABLE);
		cJSON_AddStringToObject(o, "status_text",
					status_text(H2_CHECK_UNOPENABLE));
		cJSON_AddStringToObject(o, "error", msg);
	}
	if (!json_print(o))
		fprintf(stderr, "h2d check: out of memory printing JSON\n");
}

/* The report as JSON; false on allocation failure. */
static bool report_json(const char *device, const struct h2_check_report *r)
{
	cJSON *o = cJSON_CreateObject(), *arr;
	bool ok = o != NULL;

	ok = ok && cJSON_AddStringToObject(o, "device", device);
	ok = ok && cJSON_AddNumberToObject(o, "status", r->status);
	ok = ok &&
	     cJSON_AddStringToObject(o, "status_text", status_text(r->status));
#define NUM(field)                                                             \
	(ok = ok && cJSON_AddNumberToObject(o, #field, (double)r->field))
	NUM(header_copies);
	NUM(headers_valid);
	NUM(tid);
	NUM(volumes);
	NUM(blocks_total);
	NUM(blocks_used);
	NUM(blocks_reserved);
	NUM(blocks_referenced);
	NUM(blocks_verified);
	NUM(leaked_blocks);
	NUM(free_referenced);
	NUM(nproblems);
#undef NUM
	arr = ok ? cJSON_AddArrayToObject(o, "problems") : NULL;
	ok = ok && arr;
	for (size_t i = 0; ok && i < r->nproblems; i++) {
		cJSON *p = cJSON_CreateObject();

		ok = p && cJSON_AddItemToArray(arr, p);
		if (!ok) {
			cJSON_Delete(p);
			break;
		}
		ok =
		    cJSON_AddStringToObject(p, "where", r->problems[i].where) &&
		    cJSON_AddStringToObject(p, "what", r->problems[i].what);
	}
	if (!ok) {
		cJSON_Delete(o);
		return false;
	}
	return json_print(o);
}

/* The report for humans. */
static void report_text(const char *device, const struct h2_check_report *r)
{
	for (size_t i = 0; i < r->nproblems; i++)
		printf("%s: %s\n", r->problems[i].where, r->problems[i].what);
	if (r->nproblems)
		printf("\n");
	printf("store:    %s\n", device);
	if (r->headers_valid) {
		printf("tid:      %" PRIu64 "\n", r->tid);
		printf("volumes:  %" PRIu64 "\n", r->volumes);
		printf("blocks:   %" PRIu64 " total, %" PRIu64 " used (%" PRIu64
		       " reserved), %" PRIu64 " referenced, %" PRIu64
		       " verified\n",
		       r->blocks_total, r->blocks_used, r->blocks_reserved,
		       r->blocks_referenced, r->blocks_verified);
		printf("          %" PRIu64 " leaked, %" PRIu64
		       " referenced but free\n",
		       r->leaked_blocks, r->free_referenced);
	}
	printf("headers:  %u/%u valid\n", r->headers_valid, r->header_copies);
	switch (r->status) {
	case H2_CHECK_CLEAN:
		printf("status:   clean\n");
		break;
	case H2_CHECK_PROBLEMS:
		printf("status:   %zu problem%s found\n", r->nproblems,
		       r->nproblems == 1 ? "" : "s");
		break;
	default:
		printf("status:   no readable store (%zu problem%s)\n",
		       r->nproblems, r->nproblems == 1 ? "" : "s");
		break;
	}
}

int h2d_cmd_check(int argc, char **argv)
{
	struct check_args a = {0};
	struct h2_check_report *rep = NULL;
	struct h2_dev *dev = NULL;
	char msg[600];
	int rc, r;

	rc = check_parse(argc, argv, &a);
	if (rc >= 0)
		return rc;
	r = h2_dev_open_file(a.device, H2_DEV_RDONLY, &dev);
	if (r == 0) {
		r = h2_check(dev, &rep);
		if (r < 0)
			snprintf(msg, sizeof(msg), "checking %s failed: %s",
				 a.device, h2_core_errmsg());
	} else {
		snprintf(msg, sizeof(msg),
			 "cannot open the device: %s (check the path and that "
			 "you may read it)",
			 h2_core_errmsg());
	}
	if (r < 0) {
		fprintf(stderr, "h2d check: %s\n", msg);
		if (a.json)
			json_error(a.device, msg);
		rc = H2_CHECK_UNOPENABLE;
		goto out;
	}
	if (a.json) {
		if (!report_json(a.device, rep)) {
			fprintf(stderr, "h2d check: out of memory printing "
					"JSON\n");
			rc = H2_CHECK_UNOPENABLE;
			goto out;
		}
	} else {
		report_text(a.device, rep);
	}
	rc = (int)rep->status;
out:
	h2_check_report_free(rep);
	h2_dev_close(dev);
	return rc;
}
