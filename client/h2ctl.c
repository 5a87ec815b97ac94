/*
 * h2ctl.c - the h2 command-line client: global flags, the dispatch table
 * and help.
 *
 * The command line is parsed in one pass: the global flags (--server,
 * --ca, --cert, --key, --json, --help, --version) are taken wherever they
 * appear, before or after the command, and everything else is kept in
 * order for the command: its words ("volume create"), then its own
 * arguments and flags.  After "--" nothing is a global flag any more.
 *
 * Settings come from flags first, then the environment (H2_SERVER,
 * H2_TLS_DIR), then the development setup of "h2d serve --dev"
 * (./var/h2/tls when it holds a ca.crt), then the built-in default
 * server 127.0.0.1:7410.
 *
 * Every command is one row of the table below; adding one is adding a
 * row and a function in the file of its group.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ctl.h"

static const struct ctl_cmd cmds[] = {
    {"volume", "create", ctl_volume_create, "NAME SIZE",
     "create a volume of SIZE bytes",
     "Create an empty volume NAME of SIZE bytes.  Fails if NAME exists.\n"},
    {"volume", "list", ctl_volume_list, "", "list the volumes you can see",
     "List the volumes your certificate gives you a right on: size, space\n"
     "used, snapshots, creation time and your rights (r read, w write,\n"
     "a admin).\n"
     "With --json: {\"volumes\": [{\"name\", \"id\", \"size\", "
     "\"used_bytes\",\n"
     "\"ctime_ns\", \"created\", \"can_read\", \"can_write\", "
     "\"can_admin\",\n"
     "\"snapshots\", \"snap_bytes\", \"origin\"}, ...]} (origin: "
     "\"VOLUME@SNAP\"\n"
     "for a clone, else null).\n"},
    {"volume", "info", ctl_volume_info, "NAME", "show one volume",
     "Show volume NAME: id, size, space used, creation time, your rights,\n"
     "its snapshots and the space only they hold, and for a clone the\n"
     "snapshot it was cloned from.\n"
     "With --json: one object with the keys of \"volume list --json\".\n"},
    {"volume", "delete", ctl_volume_delete, "NAME [--recursive]",
     "delete a volume and its data",
     "Delete volume NAME and all its data.  There is no undo.\n"
     "A volume with snapshots is refused unless --recursive, which also\n"
     "deletes its snapshots and every clone made from them (and theirs):\n"
     "that needs the admin right on each of those volumes.\n"},
    {"volume", "resize", ctl_volume_resize, "NAME SIZE",
     "change the size of a volume",
     "Set the size of volume NAME to SIZE bytes.  Growing adds a range\n"
     "that reads as zeros; shrinking drops the data beyond SIZE.\n"},
    {"snapshot", "create", ctl_snapshot_create, "VOLUME SNAPSHOT",
     "take a snapshot of a volume",
     "Take a read-only snapshot VOLUME@SNAPSHOT of VOLUME's current\n"
     "contents: every write acknowledged before the command is in it.\n"
     "It copies no data; the blocks the volume overwrites afterwards stay\n"
     "with the snapshot.  Needs the admin right on VOLUME.\n"
     "Read it with \"h2ctl read/export VOLUME@SNAPSHOT\" or over NBD\n"
     "(export name VOLUME@SNAPSHOT, read-only).\n"
     "With --json: the snapshot's object as in \"snapshot list "
     "--json\".\n"},
    {"snapshot", "list", ctl_snapshot_list, "[VOLUME]", "list snapshots",
     "List the snapshots of VOLUME, or of every volume you can see:\n"
     "name, creation time, transaction id (TID), the volume's size then,\n"
     "the space the snapshot alone holds (freed by deleting it) and the\n"
     "number of clones made from it.\n"
     "With --json: {\"snapshots\": [{\"volume\", \"name\", "
     "\"ctime_ns\",\n"
     "\"created\", \"tid\", \"size\", \"refer_bytes\", "
     "\"excl_bytes\", \"clones\"},\n"
     "...]}.\n"},
    {"snapshot", "delete", ctl_snapshot_delete, "VOLUME SNAPSHOT",
     "delete a snapshot",
     "Delete snapshot VOLUME@SNAPSHOT; the space it alone held comes\n"
     "back.  A snapshot that a clone was made from is refused: delete\n"
     "the clone first.  Needs the admin right on VOLUME.\n"},
    {NULL, "clone", ctl_clone, "VOLUME@SNAPSHOT NEWVOLUME",
     "make a writable volume from a snapshot",
     "Create NEWVOLUME, a writable volume whose contents are the\n"
     "snapshot's.  It shares every block with the snapshot (nothing is\n"
     "copied) until either is written.  Needs the admin right on VOLUME\n"
     "and on NEWVOLUME.\n"},
    {NULL, "rollback", ctl_rollback, "VOLUME SNAPSHOT [--force]",
     "make a volume's contents a snapshot's",
     "Make VOLUME's contents those of VOLUME@SNAPSHOT, which must be its\n"
     "newest snapshot (delete newer ones first).  The snapshot is kept.\n"
     "Refused while a client (native or NBD) has VOLUME open for writing,\n"
     "unless --force: that client's writes then land on the rolled-back\n"
     "contents.  Needs the admin right on VOLUME.\n"},
    {NULL, "sync", ctl_sync, "[VOLUME]", "make acknowledged writes durable",
     "Make every write the server acknowledged so far durable: on VOLUME,\n"
     "or on every volume of the store when VOLUME is not given.\n"
     "With --json: {\"volume\": NAME or null, \"seconds\": S}.\n"},
    {NULL, "stat", ctl_stat, "[VOLUME]", "show the server's statistics",
     "Show the server's space (total, used, free, dirty), flushes, write\n"
     "amplification (device bytes written / client bytes written),\n"
     "connections, requests and errors by status code; then, per operation\n"
     "(read, write, trim, write_zeroes, flush, txn, block_status, other),\n"
     "requests, NBD requests, errors, bytes and latency (mean, p50, p99,\n"
     "p99.9, from a request's arrival at the server to its reply); then the\n"
     "volumes used since the server started that you may see.  With VOLUME:\n"
     "that volume's numbers and operations.  Counters count both the native\n"
     "protocol and NBD, since the server started.\n"
     "With --json: one object with every counter (sizes in bytes, times in\n"
     "ns), \"ops\" keyed by operation, \"errors_by_code\" keyed by status,\n"
     "and \"volume_stats\": [{\"name\", \"size\", \"used_bytes\",\n"
     "\"open_handles\", \"requests\", \"errors\", \"errors_by_code\",\n"
     "\"ops\"}, ...] (\"volumes\" is the number of volumes in the store).\n"},
    {NULL, "write", ctl_write, "VOLUME OFFSET [FILE|-]",
     "write a file or stdin into a volume",
     "Write the bytes of FILE (\"-\" or no FILE: standard input, until end\n"
     "of file) into VOLUME starting at OFFSET, then flush so they are\n"
     "durable.  Fails, after writing what fits, if the data runs past the\n"
     "end of the volume.\n"},
    {NULL, "read", ctl_read, "VOLUME OFFSET LENGTH [FILE|-]",
     "read part of a volume to a file or stdout",
     "Read LENGTH bytes of VOLUME starting at OFFSET into FILE (created or\n"
     "truncated) or to standard output (\"-\" or no FILE).\n"
     "VOLUME may be a snapshot, VOLUME@SNAPSHOT.\n"},
    {NULL, "import", ctl_import, "VOLUME FILE", "copy a disk image in",
     "Copy the disk image FILE into VOLUME so that the volume reads exactly\n"
     "as FILE, followed by zeros when the volume is larger.  Holes and\n"
     "all-zero blocks of FILE are not sent: those ranges of the volume are\n"
     "zeroed on the server, which keeps them unallocated.  The volume must\n"
     "be at least as large as FILE.  The data is flushed before h2ctl\n"
     "exits.  A progress bar is shown when stderr is a terminal.\n"},
    {NULL, "export", ctl_export, "VOLUME FILE", "copy a volume out",
     "Copy VOLUME into FILE (created or truncated) as a sparse file of the\n"
     "volume's size: holes of the volume and all-zero blocks stay holes in\n"
     "FILE.  A progress bar is shown when stderr is a terminal.\n"
     "VOLUME may be a snapshot, VOLUME@SNAPSHOT: a consistent backup of a\n"
     "volume in use.\n"},
    {NULL, "bench", ctl_bench, "VOLUME [OPTIONS]",
     "measure IOPS, throughput and latency",
     "Keep QD requests in flight against VOLUME for SECONDS and report\n"
     "IOPS, MB/s (10^6 bytes) and latency percentiles in microseconds.\n"
     "\n"
     "  --pattern rand|seq  random or sequential offsets (default rand)\n"
     "  --rw read|write     read or write (default read); write OVERWRITES\n"
     "                      the region with random data\n"
     "  --bs SIZE           request size (default 4K)\n"
     "  --qd N              requests in flight (default 32)\n"
     "  --time SECONDS      how long to run (default 10)\n"
     "  --size SIZE         region at the start of the volume to use\n"
     "                      (default: the whole volume)\n"
     "\n"
     "Reading blocks never written measures holes, not the disk: write the\n"
     "region first for realistic read figures.\n"},
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

/* Print "  volume create NAME SIZE   summary" lines for group (or all). */
static void list_cmds(FILE *f, const char *group)
{
	char syn[NCMDS][96];
	int w = 0;

	for (size_t i = 0; i < NCMDS; i++) {
		const struct ctl_cmd *c = &cmds[i];
		int n = snprintf(syn[i], sizeof(syn[i]), "%s%s%s%s%s",
				 c->group ? c->group : "", c->group ? " " : "",
				 c->name, c->args[0] ? " " : "", c->args);

		if ((!group || (c->group && !strcmp(c->group, group))) && n > w)
			w = n;
	}
	for (size_t i = 0; i < NCMDS; i++)
		if (!group || (cmds[i].group && !strcmp(cmds[i].group, group)))
			fprintf(f, "  %-*s  %s\n", w, syn[i], cmds[i].summary);
}

/* The global options, for the main help and every command's help. */
static void global_help(FILE *f)
{
	fprintf(
	    f,
	    "global options (before or after the command):\n"
	    "  --server HOST:PORT  server to use (env H2_SERVER; default "
	    "%s)\n"
	    "  --ca FILE           CA certificate that signed the server's\n"
	    "  --cert FILE         this client's certificate\n"
	    "  --key FILE          this client's private key\n"
	    "  --json              machine-readable output on stdout\n"
	    "  --help, --version\n"
	    "\n"
	    "TLS files not given as flags are taken from $H2_TLS_DIR "
	    "(ca.crt,\n"
	    "client.crt, client.key), else from %s if it exists\n"
	    "(the setup of \"h2d serve --dev\").\n"
	    "Sizes and offsets take suffixes K, M, G, T (powers of "
	    "1024).\n"
	    "Exit status: 0 done, 1 failed, 2 usage error.\n",
	    CTL_DEFAULT_SERVER, CTL_DEV_TLS_DIR);
}

/* The main help; the short one (for usage errors) has no options. */
static void usage(FILE *f, bool full)
{
	fprintf(f, "usage: h2ctl [OPTIONS] COMMAND [ARGS]\n"
		   "\n"
		   "Manage and use the volumes of an h2 server.\n"
		   "\n"
		   "commands:\n");
	list_cmds(f, NULL);
	fputc('\n', f);
	if (full) {
		global_help(f);
		fputc('\n', f);
	}
	fprintf(f, "Run \"h2ctl %s--help\" for %s.\n", full ? "COMMAND " : "",
		full ? "a command's details" : "the options");
}

/* Help of one command. */
static void cmd_help(const struct ctl_cmd *c, FILE *f)
{
	fprintf(f, "usage: h2ctl %s%s%s%s%s\n\n", c->group ? c->group : "",
		c->group ? " " : "", c->name, c->args[0] ? " " : "", c->args);
	if (c->help)
		fprintf(f, "%s\n", c->help);
	global_help(f);
}

/* Help of a group of commands ("volume"). */
static void group_help(const char *group, FILE *f)
{
	fprintf(f, "usage: h2ctl %s COMMAND [ARGS]\n\ncommands:\n", group);
	list_cmds(f, group);
	fprintf(f,
		"\nRun \"h2ctl %s COMMAND --help\" for a command's "
		"details.\n",
		group);
}

static bool is_group(const char *w)
{
	for (size_t i = 0; i < NCMDS; i++)
		if (cmds[i].group && !strcmp(cmds[i].group, w))
			return true;
	return false;
}

/*
 * Find the command named by the first words of argv.  Returns it and the
 * number of words used in *used; NULL with *used = 1 for a group named
 * alone ("volume"), NULL with *used = 0 when nothing matches.
 */
static const struct ctl_cmd *find_cmd(int argc, char **argv, int *used)
{
	*used = 0;
	if (argc < 1)
		return NULL;
	for (size_t i = 0; i < NCMDS; i++)
		if (!cmds[i].group && !strcmp(cmds[i].name, argv[0])) {
			*used = 1;
			return &cmds[i];
		}
	if (!is_group(argv[0]))
		return NULL;
	*used = 1;
	if (argc < 2)
		return NULL;
	for (size_t i = 0; i < NCMDS; i++)
		if (cmds[i].group && !strcmp(cmds[i].group, argv[0]) &&
		    !strcmp(cmds[i].name, argv[1])) {
			*used = 2;
			return &cmds[i];
		}
	return NULL;
}

/* Report that argv's first words name no command; returns 2. */
static int unknown_cmd(int argc, char **argv, int used)
{
	if (used == 1 && argc < 2) {
		fprintf(stderr, "h2ctl: \"%s\" needs a command\n\n", argv[0]);
		group_help(argv[0], stderr);
	} else if (used == 1 && argv[1][0] == '-') {
		fprintf(stderr, "h2ctl: unknown option \"%s\"\n\n", argv[1]);
		group_help(argv[0], stderr);
	} else if (used == 1) {
		fprintf(stderr, "h2ctl: unknown command \"%s %s\"\n\n", argv[0],
			argv[1]);
		group_help(argv[0], stderr);
	} else if (argv[0][0] == '-' && strcmp(argv[0], "-")) {
		fprintf(stderr, "h2ctl: unknown option \"%s\"\n", argv[0]);
		fprintf(stderr,
			"Run \"h2ctl --help\" for the options and commands.\n");
	} else {
		fprintf(stderr, "h2ctl: unknown command \"%s\"\n", argv[0]);
		fprintf(stderr, "Run \"h2ctl --help\" for the list of "
				"commands.\n");
	}
	return CTL_EXIT_USAGE;
}

/* Print help for the command named by argv (all of it if argc == 0). */
static int help(int argc, char **argv)
{
	const struct ctl_cmd *c;
	int used;

	if (argc == 0) {
		usage(stdout, true);
		return CTL_EXIT_OK;
	}
	c = find_cmd(argc, argv, &used);
	if (c)
		cmd_help(c, stdout);
	else if (used == 1 && (argc < 2 || argv[1][0] == '-'))
		group_help(argv[0], stdout);
	else
		return unknown_cmd(argc, argv, used);
	return CTL_EXIT_OK;
}

/* Global flags that take a value, and where each is stored. */
struct global_flag {
	const char *name;
	const char *what;
	size_t len;
};

static const struct global_flag value_flags[] = {
    {"--server", "HOST:PORT", sizeof("--server") - 1},
    {"--ca", "FILE", sizeof("--ca") - 1},
    {"--cert", "FILE", sizeof("--cert") - 1},
    {"--key", "FILE", sizeof("--key") - 1},
};

struct globals {
	const char *value[4]; /* parallel to value_flags */
	bool json, help, version;
};

/*
 * Take the global flags out of argv; the rest stays in order in
 * rest[0..*nrest).  Returns -1 to go on, else an exit code.
 */
static int parse_globals(int argc, char **argv, struct globals *g, char **rest,
			 int *nrest)
{
	bool options = true;

	*nrest = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool taken = false;

		if (options && !strcmp(a, "--")) {
			options = false;
		} else if (options && !strcmp(a, "--json")) {
			g->json = taken = true;
		} else if (options &&
			   (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
			g->help = taken = true;
		} else if (options && !strcmp(a, "--version")) {
			g->version = taken = true;
		}
		for (size_t f = 0; options && !taken && f < 4; f++) {
			const struct global_flag *gf = &value_flags[f];
			const char *v;

			if (strncmp(a, gf->name, gf->len) ||
			    (a[gf->len] && a[gf->len] != '='))
				continue;
			if (a[gf->len] == '=') {
				v = a + gf->len + 1;
			} else if (i + 1 < argc) {
				v = argv[++i];
			} else {
				fprintf(stderr,
					"h2ctl: %s needs a value (%s)\n",
					gf->name, gf->what);
				return CTL_EXIT_USAGE;
			}
			if (!*v) {
				fprintf(stderr, "h2ctl: %s must not be empty\n",
					gf->name);
				return CTL_EXIT_USAGE;
			}
			g->value[f] = v;
			taken = true;
		}
		if (!taken)
			rest[(*nrest)++] = argv[i];
	}
	rest[*nrest] = NULL;
	return -1;
}

/* "dir/name" into buf; false if it does not fit. */
static bool join(char *buf, size_t n, const char *dir, const char *name)
{
	int len = snprintf(buf, n, "%s/%s", dir, name);

	return len >= 0 && (size_t)len < n;
}

/*
 * Fill in the server and the TLS files from the flags, the environment
 * and the development setup.  Paths are kept in paths[].  Returns -1 to
 * go on, else an exit code.
 */
static int resolve(struct ctl *ctl, const struct globals *g,
		   char paths[3][PATH_MAX])
{
	static const char *const names[3] = {"ca.crt", "client.crt",
					     "client.key"};
	static char dirdesc[PATH_MAX + 16];
	const char **files[3] = {&ctl->ca_file, &ctl->cert_file,
				 &ctl->key_file};
	const char *env = getenv("H2_SERVER");
	const char *dir = getenv("H2_TLS_DIR");

	ctl->server = g->value[0]   ? g->value[0]
		      : env && *env ? env
				    : CTL_DEFAULT_SERVER;
	ctl->ca_file = g->value[1];
	ctl->cert_file = g->value[2];
	ctl->key_file = g->value[3];
	ctl->json = g->json;
	for (int i = 0; i < 3; i++)
		ctl->flagged[i] = g->value[i + 1] != NULL;
	if (ctl->ca_file && ctl->cert_file && ctl->key_file)
		return -1;
	if (dir && *dir) {
		snprintf(dirdesc, sizeof(dirdesc), "H2_TLS_DIR=%s", dir);
	} else {
		char probe[PATH_MAX];

		join(probe, sizeof(probe), CTL_DEV_TLS_DIR, names[0]);
		if (access(probe, F_OK) != 0)
			return -1;
		dir = CTL_DEV_TLS_DIR;
		snprintf(dirdesc, sizeof(dirdesc), "%s",
			 CTL_DEV_TLS_DIR " (h2d serve --dev)");
	}
	ctl->tls_dir = dirdesc;
	for (int i = 0; i < 3; i++) {
		if (*files[i])
			continue;
		if (!join(paths[i], PATH_MAX, dir, names[i])) {
			fprintf(stderr, "h2ctl: H2_TLS_DIR is too long\n");
			return CTL_EXIT_USAGE;
		}
		*files[i] = paths[i];
	}
	return -1;
}

/*
 * Print the reason connecting failed, without saying the address twice
 * (the library's sentence may already be "connect to ADDR: refused").
 */
static int connect_fail(const struct ctl *ctl, int err, const char *hint)
{
	const char *why = ctl_h2_reason(err);

	/* A name that does not resolve is not a server that is down. */
	if (strstr(why, "resolve"))
		hint = " (check the host name; set --server or H2_SERVER)";
	if (!strncmp(why, "connect to ", 11) && strstr(why, ctl->server))
		return ctl_fail("cannot %s%s", why, hint);
	return ctl_fail("cannot connect to %s: %s%s", ctl->server, why, hint);
}

int ctl_connect(struct ctl *ctl)
{
	const char *files[3] = {ctl->ca_file, ctl->cert_file, ctl->key_file};
	static const char *const what[3] = {"CA certificate",
					    "client certificate", "client key"};
	static const char *const flag[3] = {"--ca", "--cert", "--key"};
	h2_client_opts o = {
	    .server = ctl->server,
	    .ca_file = ctl->ca_file,
	    .cert_file = ctl->cert_file,
	    .key_file = ctl->key_file,
	    .client_name = "h2ctl",
	};
	int r;

	if (ctl->client)
		return CTL_EXIT_OK;
	/*
	 * The server wants a client certificate.  Without a CA the library
	 * trusts the system's; without a key it reads it from the
	 * certificate file.
	 */
	if (!ctl->cert_file)
		return ctl_fail("no client certificate to connect to %s with: "
				"pass --ca, --cert and --key, or set "
				"H2_TLS_DIR to a folder with ca.crt, "
				"client.crt and client.key (\"h2d serve "
				"--dev\" prints one)",
				ctl->server);
	/* Say where a bad path came from: the library cannot know. */
	for (int i = 0; i < 3; i++)
		if (files[i] && access(files[i], R_OK) != 0)
			return ctl_fail("cannot read the %s %s: %s (from %s)",
					what[i], files[i], strerror(errno),
					ctl->flagged[i] ? flag[i]
							: ctl->tls_dir);
	r = h2_connect(&o, &ctl->client);
	if (r == 0)
		return CTL_EXIT_OK;
	ctl->client = NULL;
	switch (r) {
	case H2_ECONNECT:
		return connect_fail(ctl, r,
				    " (is h2d running? set --server or "
				    "H2_SERVER)");
	case H2_ETIMEDOUT:
		return connect_fail(ctl, r,
				    " (no answer in time: is the address "
				    "right? set --server or H2_SERVER)");
	case H2_ETLS:
		return ctl_fail("TLS with %s failed: %s (check --ca, --cert "
				"and --key%s%s)",
				ctl->server, ctl_h2_reason(r),
				ctl->tls_dir ? ", or the files in " : "",
				ctl->tls_dir ? ctl->tls_dir : "");
	case H2_EINVAL:
		fprintf(stderr,
			"h2ctl: cannot use server address \"%s\": %s "
			"(expected HOST:PORT)\n",
			ctl->server, ctl_h2_reason(r));
		return CTL_EXIT_USAGE;
	default:
		return connect_fail(ctl, r, "");
	}
}

int ctl_positional(struct ctl *ctl, int argc, char **argv, int min, int max,
		   int *npos)
{
	bool options = true;
	int n = 0;

	for (int i = 0; i < argc; i++) {
		char *a = argv[i];

		if (options && !strcmp(a, "--")) {
			options = false;
			continue;
		}
		if (options && a[0] == '-' && a[1])
			return ctl_usage(ctl, "unknown option \"%s\"", a);
		argv[n++] = a;
	}
	if (n < min)
		return ctl_usage(ctl, "missing arguments (expected %s)",
				 ctl->cmd->args);
	if (n > max)
		return ctl_usage(ctl, "too many arguments (expected %s)",
				 ctl->cmd->args[0] ? ctl->cmd->args : "none");
	*npos = n;
	return CTL_EXIT_OK;
}

bool ctl_take_flag(int *argc, char **argv, const char *flag)
{
	bool found = false;
	int n = 0, i;

	for (i = 0; i < *argc && strcmp(argv[i], "--"); i++) {
		if (!strcmp(argv[i], flag))
			found = true;
		else
			argv[n++] = argv[i];
	}
	for (; i < *argc; i++)
		argv[n++] = argv[i];
	*argc = n;
	return found;
}

int ctl_parse_size(struct ctl *ctl, const char *what, const char *s,
		   uint64_t *out)
{
	int r = h2d_parse_size(s, out);

	if (r == -ERANGE)
		return ctl_usage(ctl, "%s \"%s\" is too large", what, s);
	if (r < 0)
		return ctl_usage(ctl,
				 "invalid %s \"%s\": expected a number of "
				 "bytes with an optional suffix K, M, G or T",
				 what, s);
	return CTL_EXIT_OK;
}

int main(int argc, char **argv)
{
	static char paths[3][PATH_MAX];
	struct globals g = {0};
	struct ctl ctl = {0};
	const struct ctl_cmd *c;
	char **rest;
	int nrest, used, rc;

	/*
	 * A reader that goes away (h2ctl read ... | head) must not kill us
	 * in the middle of a TLS write; writes then fail with EPIPE.
	 */
	signal(SIGPIPE, SIG_IGN);
	rest = calloc((size_t)argc + 1, sizeof(*rest));
	if (!rest) {
		fprintf(stderr, "h2ctl: out of memory\n");
		return CTL_EXIT_FAIL;
	}
	rc = parse_globals(argc, argv, &g, rest, &nrest);
	if (rc >= 0)
		goto out;
	if (g.version) {
		printf("h2ctl %s\n", H2_CLIENT_VERSION);
		rc = CTL_EXIT_OK;
		goto out;
	}
	if (nrest > 0 && !strcmp(rest[0], "help")) {
		rc = help(nrest - 1, rest + 1);
		goto out;
	}
	if (g.help) {
		rc = help(nrest, rest);
		goto out;
	}
	if (nrest == 0) {
		fprintf(stderr, "h2ctl: missing command\n\n");
		usage(stderr, false);
		rc = CTL_EXIT_USAGE;
		goto out;
	}
	c = find_cmd(nrest, rest, &used);
	if (!c) {
		rc = unknown_cmd(nrest, rest, used);
		goto out;
	}
	rc = resolve(&ctl, &g, paths);
	if (rc >= 0)
		goto out;
	ctl.cmd = c;
	rc = c->run(&ctl, nrest - used, rest + used);
	h2_disconnect(ctl.client);
out:
	free(rest);
	return rc;
}
