/*
 * ctl_snapshot.c - h2ctl's snapshot commands: snapshot create, list,
 * delete; clone; rollback.
 *
 * A snapshot is named "VOLUME@SNAP" wherever one argument names it
 * (clone, read, export); the commands that act on a volume's snapshot
 * take VOLUME and SNAP as two arguments.  The JSON of a snapshot is the
 * same object in list and create: byte counts, tids and timestamps are
 * exact integers.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Longest volume or snapshot name (h2_snapshot_info keeps a NUL). */
#define SNAP_NAME_MAX (sizeof(((h2_snapshot_info *)0)->name) - 1)

/* Check a volume or snapshot name argument (what: "volume"). */
static int check_arg(struct ctl *ctl, const char *what, const char *name)
{
	if (!*name)
		return ctl_usage(ctl, "the %s name must not be empty", what);
	if (strlen(name) > SNAP_NAME_MAX)
		return ctl_usage(ctl, "%s name too long (at most %zu bytes)",
				 what, SNAP_NAME_MAX);
	if (strchr(name, '@'))
		return ctl_usage(ctl,
				 "a %s name cannot contain '@' (give VOLUME "
				 "and SNAPSHOT as two arguments)",
				 what);
	return CTL_EXIT_OK;
}

/* The JSON object of a snapshot, or NULL on allocation failure. */
static cJSON *snap_json(const h2_snapshot_info *s)
{
	cJSON *o = cJSON_CreateObject();
	char when[40];

	if (!o)
		return NULL;
	ctl_time_iso(s->ctime_ns, when, sizeof(when));
	if (!cJSON_AddStringToObject(o, "volume", s->volume) ||
	    !cJSON_AddStringToObject(o, "name", s->name) ||
	    !ctl_json_u64(o, "ctime_ns", s->ctime_ns) ||
	    !(s->ctime_ns ? cJSON_AddStringToObject(o, "created", when)
			  : cJSON_AddNullToObject(o, "created")) ||
	    !ctl_json_u64(o, "tid", s->tid) ||
	    !ctl_json_u64(o, "size", s->size) ||
	    !ctl_json_u64(o, "refer_bytes", s->refer_bytes) ||
	    !ctl_json_u64(o, "excl_bytes", s->excl_bytes) ||
	    !ctl_json_u64(o, "clones", s->clones)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

int ctl_snapshot_create(struct ctl *ctl, int argc, char **argv)
{
	h2_snapshot_info s;
	char ex[32];
	int rc, n, r;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &n)) ||
	    (rc = check_arg(ctl, "volume", argv[0])) ||
	    (rc = check_arg(ctl, "snapshot", argv[1])) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	r = h2_snapshot_create(ctl->client, argv[0], argv[1], &s);
	if (r < 0)
		return ctl_fail_h2(ctl, r,
				   "cannot snapshot volume \"%s\" as "
				   "\"%s\"",
				   argv[0], argv[1]);
	if (ctl->json)
		return ctl_json_print(snap_json(&s));
	printf("created snapshot \"%s@%s\" (tid %" PRIu64 ", %s referenced)\n",
	       s.volume, s.name, s.tid,
	       ctl_size(s.refer_bytes, ex, sizeof(ex)));
	return ctl_stdout_done();
}

/* Print the snapshots as {"snapshots": [...]}. */
static int list_json(const h2_snapshot_info *s, size_t n)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = root ? cJSON_AddArrayToObject(root, "snapshots") : NULL;

	for (size_t i = 0; arr && i < n; i++) {
		cJSON *o = snap_json(&s[i]);

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

/* Print the snapshots as an aligned table. */
static int list_table(const h2_snapshot_info *s, size_t n, const char *vol)
{
	static const char *const head[] = {"VOLUME", "SNAPSHOT", "CREATED",
					   "TID",    "SIZE",	 "EXCLUSIVE",
					   "CLONES"};
	static const enum ctl_align align[] = {CTL_LEFT,  CTL_LEFT,  CTL_LEFT,
					       CTL_RIGHT, CTL_RIGHT, CTL_RIGHT,
					       CTL_RIGHT};
	struct ctl_table *t;

	if (n == 0) {
		if (vol)
			printf("volume \"%s\" has no snapshots (take one with "
			       "\"h2ctl snapshot create %s NAME\")\n",
			       vol, vol);
		else
			printf("no snapshots (take one with \"h2ctl snapshot "
			       "create VOLUME NAME\")\n");
		return ctl_stdout_done();
	}
	t = ctl_table_new(7, head, align);
	if (!t)
		return ctl_fail("out of memory");
	for (size_t i = 0; i < n; i++) {
		char when[40], tid[24], size[32], excl[32], clones[16];

		snprintf(tid, sizeof(tid), "%" PRIu64, s[i].tid);
		snprintf(clones, sizeof(clones), "%" PRIu32, s[i].clones);
		if (!ctl_table_addv(
			t, s[i].volume, s[i].name,
			ctl_time(s[i].ctime_ns, when, sizeof(when)), tid,
			ctl_size(s[i].size, size, sizeof(size)),
			ctl_size(s[i].excl_bytes, excl, sizeof(excl)),
			clones)) {
			ctl_table_free(t);
			return ctl_fail("out of memory");
		}
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	return ctl_stdout_done();
}

int ctl_snapshot_list(struct ctl *ctl, int argc, char **argv)
{
	h2_snapshot_info *s = NULL;
	const char *vol;
	size_t n = 0;
	int rc, np, r;

	if ((rc = ctl_positional(ctl, argc, argv, 0, 1, &np)) ||
	    (np == 1 && (rc = check_arg(ctl, "volume", argv[0]))) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	vol = np == 1 ? argv[0] : NULL;
	r = h2_snapshot_list(ctl->client, vol, &s, &n);
	if (r < 0) {
		if (vol)
			return ctl_fail_h2(ctl, r,
					   "cannot list the snapshots of "
					   "volume \"%s\"",
					   vol);
		return ctl_fail_h2(ctl, r, "cannot list snapshots on %s",
				   ctl->server);
	}
	/* The server sorts them by volume, then age. */
	rc = ctl->json ? list_json(s, n) : list_table(s, n, vol);
	h2_snapshot_list_free(s);
	return rc;
}

int ctl_snapshot_delete(struct ctl *ctl, int argc, char **argv)
{
	cJSON *o;
	int rc, n, r;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &n)) ||
	    (rc = check_arg(ctl, "volume", argv[0])) ||
	    (rc = check_arg(ctl, "snapshot", argv[1])) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	r = h2_snapshot_delete(ctl->client, argv[0], argv[1]);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot delete snapshot \"%s@%s\"",
				   argv[0], argv[1]);
	if (!ctl->json) {
		printf("deleted snapshot \"%s@%s\"\n", argv[0], argv[1]);
		return ctl_stdout_done();
	}
	o = cJSON_CreateObject();
	if (o && (!cJSON_AddStringToObject(o, "volume", argv[0]) ||
		  !cJSON_AddStringToObject(o, "name", argv[1]) ||
		  !cJSON_AddTrueToObject(o, "deleted"))) {
		cJSON_Delete(o);
		o = NULL;
	}
	return ctl_json_print(o);
}

int ctl_clone(struct ctl *ctl, int argc, char **argv)
{
	char vol[SNAP_NAME_MAX + 1], *at, hs[32];
	const char *snap;
	h2_volume_info vi;
	cJSON *o;
	int rc, n, r;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &n)))
		return rc;
	at = strchr(argv[0], '@');
	if (!at)
		return ctl_usage(ctl,
				 "\"%s\" names no snapshot: expected "
				 "VOLUME@SNAPSHOT (see \"h2ctl snapshot "
				 "list\")",
				 argv[0]);
	if ((size_t)(at - argv[0]) > SNAP_NAME_MAX)
		return ctl_usage(ctl,
				 "volume name too long (at most %zu "
				 "bytes)",
				 SNAP_NAME_MAX);
	memcpy(vol, argv[0], (size_t)(at - argv[0]));
	vol[at - argv[0]] = '\0';
	snap = at + 1;
	if ((rc = check_arg(ctl, "volume", vol)) ||
	    (rc = check_arg(ctl, "snapshot", snap)) ||
	    (rc = check_arg(ctl, "new volume", argv[1])) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	r = h2_clone(ctl->client, vol, snap, argv[1], &vi);
	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot clone \"%s\" to \"%s\"",
				   argv[0], argv[1]);
	if (ctl->json) {
		o = cJSON_CreateObject();
		if (o && (!cJSON_AddStringToObject(o, "name", vi.name) ||
			  !cJSON_AddStringToObject(o, "origin", argv[0]) ||
			  !ctl_json_u64(o, "size", vi.size) ||
			  !cJSON_AddTrueToObject(o, "created"))) {
			cJSON_Delete(o);
			o = NULL;
		}
		return ctl_json_print(o);
	}
	printf("created volume \"%s\" (%s), a clone of \"%s\"\n", vi.name,
	       ctl_size(vi.size, hs, sizeof(hs)), argv[0]);
	return ctl_stdout_done();
}

int ctl_rollback(struct ctl *ctl, int argc, char **argv)
{
	bool force = ctl_take_flag(&argc, argv, "--force");
	cJSON *o;
	int rc, n, r;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &n)) ||
	    (rc = check_arg(ctl, "volume", argv[0])) ||
	    (rc = check_arg(ctl, "snapshot", argv[1])) ||
	    (rc = ctl_connect(ctl)))
		return rc;
	r = h2_rollback(ctl->client, argv[0], argv[1],
			force ? H2_ROLLBACK_FORCE : 0);
	if (r < 0)
		return ctl_fail_h2(ctl, r,
				   "cannot roll volume \"%s\" back to \"%s\"",
				   argv[0], argv[1]);
	if (!ctl->json) {
		printf("rolled volume \"%s\" back to snapshot \"%s@%s\"\n",
		       argv[0], argv[0], argv[1]);
		return ctl_stdout_done();
	}
	o = cJSON_CreateObject();
	if (o && (!cJSON_AddStringToObject(o, "volume", argv[0]) ||
		  !cJSON_AddStringToObject(o, "snapshot", argv[1]) ||
		  !cJSON_AddBoolToObject(o, "forced", force) ||
		  !cJSON_AddTrueToObject(o, "rolled_back"))) {
		cJSON_Delete(o);
		o = NULL;
	}
	return ctl_json_print(o);
}
