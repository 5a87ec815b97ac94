/*
 * ctl_volume.c - h2ctl's volume management and server commands: volume
 * create, list, info, delete, resize; sync (stat is ctl_stat.c's).
 *
 * The JSON of a volume is the same object everywhere (list, info) so
 * that scripts can reuse one parser; byte counts and timestamps are
 * exact integers.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Longest name h2_volume_info can carry (its name[] keeps a NUL). */
#define NAME_MAX_LEN (sizeof(((h2_volume_info *)0)->name) - 1)

/* Check a volume name argument before sending it anywhere. */
static int check_name(struct ctl *ctl, const char *name)
{
	if (!*name)
		return ctl_usage(ctl, "the volume name must not be empty");
	if (strlen(name) > NAME_MAX_LEN)
		return ctl_usage(ctl,
				 "volume name too long (at most %zu bytes)",
				 NAME_MAX_LEN);
	return CTL_EXIT_OK;
}

/* "rwa" with "-" for each right missing. */
static const char *rights(const h2_volume_info *vi, char buf[4])
{
	buf[0] = vi->can_read ? 'r' : '-';
	buf[1] = vi->can_write ? 'w' : '-';
	buf[2] = vi->can_admin ? 'a' : '-';
	buf[3] = '\0';
	return buf;
}

/* The JSON object of a volume, or NULL on allocation failure. */
static cJSON *volume_json(const h2_volume_info *vi)
{
	cJSON *o = cJSON_CreateObject();
	char when[40];

	if (!o)
		return NULL;
	ctl_time_iso(vi->ctime_ns, when, sizeof(when));
	if (!cJSON_AddStringToObject(o, "name", vi->name) ||
	    !ctl_json_u64(o, "id", vi->id) ||
	    !ctl_json_u64(o, "size", vi->size) ||
	    !ctl_json_u64(o, "used_bytes", vi->used_bytes) ||
	    !ctl_json_u64(o, "ctime_ns", vi->ctime_ns) ||
	    !(vi->ctime_ns ? cJSON_AddStringToObject(o, "created", when)
			   : cJSON_AddNullToObject(o, "created")) ||
	    !cJSON_AddBoolToObject(o, "can_read", vi->can_read) ||
	    !cJSON_AddBoolToObject(o, "can_write", vi->can_write) ||
	    !cJSON_AddBoolToObject(o, "can_admin", vi->can_admin) ||
	    !ctl_json_u64(o, "snapshots", vi->snapshots) ||
	    !ctl_json_u64(o, "snap_bytes", vi->snap_bytes) ||
	    !(vi->origin[0] ? cJSON_AddStringToObject(o, "origin", vi->origin)
			    : cJSON_AddNullToObject(o, "origin"))) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* {"name": name, "size": size} plus one more key when extra is set. */
static int print_name_size(const char *name, const uint64_t *size,
			   const char *extra)
{
	cJSON *o = cJSON_CreateObject();

	if (o && (!cJSON_AddStringToObject(o, "name", name) ||
		  (size && !ctl_json_u64(o, "size", *size)) ||
		  (extra && !cJSON_AddTrueToObject(o, extra)))) {
		cJSON_Delete(o);
		o = NULL;
	}
	return ctl_json_print(o);
}

int ctl_volume_create(struct ctl *ctl, int argc, char **argv)
{
	uint64_t size;
	char hs[32];
	int n, rc, r;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &n)) ||
	    (rc = check_name(ctl, argv[0])) ||
	    (rc = ctl_parse_size(ctl, "SIZE", argv[1], &size)) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	r = h2_volume_create(ctl->client, argv[0], size);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot create volume \"%s\"",
				   argv[0]);
	if (ctl->json)
		return print_name_size(argv[0], &size, "created");
	printf("created volume \"%s\" (%s)\n", argv[0],
	       ctl_size(size, hs, sizeof(hs)));
	return ctl_stdout_done();
}

/* qsort order of volumes: by name. */
static int by_name(const void *a, const void *b)
{
	return strcmp(((const h2_volume_info *)a)->name,
		      ((const h2_volume_info *)b)->name);
}

/* Print the volumes as {"volumes": [...]}. */
static int list_json(const h2_volume_info *v, size_t n)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = root ? cJSON_AddArrayToObject(root, "volumes") : NULL;

	for (size_t i = 0; arr && i < n; i++) {
		cJSON *o = volume_json(&v[i]);

		if (!o) {
			arr = NULL;
			break;
		}
		cJSON_AddItemToArray(arr, o);
	}
	if (!arr) {
		cJSON_Delete(root);
		root = NULL;
	}
	return ctl_json_print(root);
}

/* Print the volumes as an aligned table. */
static int list_table(const h2_volume_info *v, size_t n)
{
	static const char *const head[] = {"NAME",  "SIZE",    "USED",
					   "SNAPS", "CREATED", "RIGHTS"};
	static const enum ctl_align align[] = {CTL_LEFT,  CTL_RIGHT, CTL_RIGHT,
					       CTL_RIGHT, CTL_LEFT,  CTL_LEFT};
	struct ctl_table *t;

	if (n == 0) {
		printf("no volumes (create one with \"h2ctl volume create "
		       "NAME SIZE\")\n");
		return ctl_stdout_done();
	}
	t = ctl_table_new(6, head, align);
	if (!t)
		return ctl_fail("out of memory");
	for (size_t i = 0; i < n; i++) {
		char size[32], used[32], snaps[16], when[40], r[4];

		snprintf(snaps, sizeof(snaps), "%" PRIu32, v[i].snapshots);
		if (!ctl_table_addv(
			t, v[i].name, ctl_size(v[i].size, size, sizeof(size)),
			ctl_size(v[i].used_bytes, used, sizeof(used)), snaps,
			ctl_time(v[i].ctime_ns, when, sizeof(when)),
			rights(&v[i], r))) {
			ctl_table_free(t);
			return ctl_fail("out of memory");
		}
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	return ctl_stdout_done();
}

int ctl_volume_list(struct ctl *ctl, int argc, char **argv)
{
	h2_volume_info *v = NULL;
	size_t n = 0;
	int rc, np, r;

	if ((rc = ctl_positional(ctl, argc, argv, 0, 0, &np)) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	r = h2_volume_list(ctl->client, &v, &n);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot list volumes on %s",
				   ctl->server);
	if (n > 1)
		qsort(v, n, sizeof(*v), by_name);
	rc = ctl->json ? list_json(v, n) : list_table(v, n);
	free(v);
	return rc;
}

/* "12 GiB (12884901888 bytes)" */
static const char *bytes(uint64_t v, char *buf, size_t n)
{
	char h[32];

	snprintf(buf, n, "%s (%" PRIu64 " bytes)", ctl_size(v, h, sizeof(h)),
		 v);
	return buf;
}

int ctl_volume_info(struct ctl *ctl, int argc, char **argv)
{
	h2_volume_info vi;
	struct ctl_table *t;
	char a[64], b[64], c[24], when[40], r4[4], sn[96], hs[32];
	bool ok;
	int rc, n, r;

	if ((rc = ctl_positional(ctl, argc, argv, 1, 1, &n)) ||
	    (rc = check_name(ctl, argv[0])) || (rc = ctl_connect(ctl)))
		return rc;
	r = h2_volume_info_get(ctl->client, argv[0], &vi);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot get volume \"%s\"", argv[0]);
	if (ctl->json)
		return ctl_json_print(volume_json(&vi));
	t = ctl_table_new(2, NULL, NULL);
	if (!t)
		return ctl_fail("out of memory");
	bytes(vi.size, a, sizeof(a));
	bytes(vi.used_bytes, b, sizeof(b));
	snprintf(c, sizeof(c), "%" PRIu64, vi.id);
	rights(&vi, r4);
	snprintf(sn, sizeof(sn), "%" PRIu32 " (holding %s only they use)",
		 vi.snapshots, ctl_size(vi.snap_bytes, hs, sizeof(hs)));
	ok = ctl_table_addv(t, "name", vi.name) && ctl_table_addv(t, "id", c) &&
	     ctl_table_addv(t, "size", a) && ctl_table_addv(t, "used", b) &&
	     ctl_table_addv(t, "snapshots", sn) &&
	     (!vi.origin[0] || ctl_table_addv(t, "clone of", vi.origin)) &&
	     ctl_table_addv(t, "created",
			    ctl_time(vi.ctime_ns, when, sizeof(when))) &&
	     ctl_table_addv(t, "rights", r4);
	if (!ok) {
		ctl_table_free(t);
		return ctl_fail("out of memory");
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	return ctl_stdout_done();
}

int ctl_volume_delete(struct ctl *ctl, int argc, char **argv)
{
	bool rec = ctl_take_flag(&argc, argv, "--recursive");
	int rc, n, r;

	if ((rc = ctl_positional(ctl, argc, argv, 1, 1, &n)) ||
	    (rc = check_name(ctl, argv[0])) || (rc = ctl_connect(ctl)))
		return rc;
	r = h2_volume_delete_flags(ctl->client, argv[0],
				   rec ? H2_DELETE_RECURSIVE : 0);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot delete volume \"%s\"",
				   argv[0]);
	if (ctl->json)
		return print_name_size(argv[0], NULL, "deleted");
	printf("deleted volume \"%s\"%s\n", argv[0],
	       rec ? " with its snapshots and clones" : "");
	return ctl_stdout_done();
}

int ctl_volume_resize(struct ctl *ctl, int argc, char **argv)
{
	uint64_t size;
	char hs[32];
	int n, rc, r;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &n)) ||
	    (rc = check_name(ctl, argv[0])) ||
	    (rc = ctl_parse_size(ctl, "SIZE", argv[1], &size)) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	r = h2_volume_resize(ctl->client, argv[0], size);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot resize volume \"%s\" to %s",
				   argv[0], argv[1]);
	if (ctl->json)
		return print_name_size(argv[0], &size, "resized");
	printf("resized volume \"%s\" to %s\n", argv[0],
	       ctl_size(size, hs, sizeof(hs)));
	return ctl_stdout_done();
}

int ctl_sync(struct ctl *ctl, int argc, char **argv)
{
	const char *name;
	struct timespec t0, t1;
	h2_volume *v = NULL;
	cJSON *o;
	int rc, np, r;

	if ((rc = ctl_positional(ctl, argc, argv, 0, 1, &np)) ||
	    (np == 1 && (rc = check_name(ctl, argv[0]))) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	name = np == 1 ? argv[0] : NULL;
	t0 = ctl_now();
	if (!name) {
		r = h2_sync(ctl->client);
		if (r < 0)
			return ctl_fail_h2(ctl, r, "cannot sync %s",
					   ctl->server);
	} else {
		/* Read-only is enough to flush, and never finds it busy. */
		r = h2_volume_open(ctl->client, name, H2_OPEN_RO, &v);
		if (r < 0)
			return ctl_fail_h2(ctl, r, "cannot open volume \"%s\"",
					   name);
		r = h2_flush(v);
		if (r < 0) {
			rc = ctl_fail_h2(ctl, r, "cannot sync volume \"%s\"",
					 name);
			h2_volume_close(v);
			return rc;
		}
		r = h2_volume_close(v);
		if (r < 0)
			return ctl_fail_h2(ctl, r, "cannot close volume \"%s\"",
					   name);
	}
	t1 = ctl_now();
	if (ctl->json) {
		o = cJSON_CreateObject();
		if (o && (!(name ? cJSON_AddStringToObject(o, "volume", name)
				 : cJSON_AddNullToObject(o, "volume")) ||
			  !cJSON_AddNumberToObject(o, "seconds",
						   ctl_elapsed(&t0, &t1)))) {
			cJSON_Delete(o);
			o = NULL;
		}
		return ctl_json_print(o);
	}
	if (name)
		printf("synced volume \"%s\" in %.1f ms\n", name,
		       ctl_elapsed(&t0, &t1) * 1e3);
	else
		printf("synced all volumes in %.1f ms\n",
		       ctl_elapsed(&t0, &t1) * 1e3);
	return ctl_stdout_done();
}
