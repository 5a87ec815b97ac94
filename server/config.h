/*
 * config.h - h2d serve's configuration: an INI file (libinih) plus
 * command-line flags, flags winning.
 *
 *   [store]
 *   device = /var/lib/h2/store.img
 *   flush_interval_ms = 1000
 *   dirty_max = 256M
 *   dirty_hard = 512M
 *   cache_max = 512M
 *
 *   [server]
 *   listen = 127.0.0.1:7410
 *   nbd_listen = 127.0.0.1:10809   ; NBD frontend; empty: off
 *   nbd_plain_listen = 127.0.0.1:10810 ; NBD without TLS, loopback only;
 *                                      ; default off
 *   nbd_plain_identity = bench     ; whose [access] rules apply there
 *   metrics_listen = 127.0.0.1:9410 ; Prometheus GET /metrics; default off
 *   workers = 4
 *   max_connections = 1024
 *   max_inflight = 64              ; requests read ahead per connection
 *   max_inflight_bytes = 32M       ; per connection: requests in flight
 *                                  ; plus replies not yet sent
 *   handshake_timeout_ms = 10000
 *   log_level = info
 *   ready_file = /run/h2d/ready.json
 *
 *   [tls]
 *   ca = /etc/h2/tls/ca.crt
 *   cert = /etc/h2/tls/server.crt
 *   key = /etc/h2/tls/server.key
 *   allow_tls12 = false
 *
 *   [access]
 *   admin = admin:*
 *   alice = write:vm-*, read:golden-*
 *
 * Sizes take K/M/G/T suffixes (binary).
 */
#ifndef H2D_CONFIG_H
#define H2D_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "acl.h"

/* An access rule from --access or --dev: kept across reloads. */
struct h2_config_rule {
	char *identity;
	char *spec;
	const char *where; /* "--access" or "--dev" */
};

struct h2_config {
	char *device;
	uint32_t flush_interval_ms;
	uint64_t dirty_max, dirty_hard, cache_max;

	char *listen;		/* "HOST:PORT"; port 0 = any free port */
	char *nbd_listen;	/* NBD frontend "HOST:PORT"; "" = off */
	char *nbd_plain_listen;	/* NBD without TLS, loopback only; NULL or
				   "" = off */
	char *nbd_plain_identity; /* the identity of every plaintext NBD
				     connection; required with it */
	char *metrics_listen;	/* plain HTTP GET /metrics "HOST:PORT";
				   NULL or "" = off */
	unsigned workers;
	unsigned max_connections;
	unsigned max_inflight;
	uint64_t max_inflight_bytes;
	unsigned handshake_timeout_ms;
	int log_level;		/* enum h2_log_level */
	char *ready_file;	/* NULL: none */

	char *tls_ca, *tls_cert, *tls_key;
	bool allow_tls12;

	struct h2_acl *acl;	/* owned: file, flag and --dev rules */
	struct h2_config_rule *flag_rules; /* --access and --dev, owned */
	size_t nflag_rules;
	bool dev;		/* --dev: embedded development defaults */
	bool check_only;	/* --check-config: validate, then exit */
	char *config_path;	/* the file it came from, for reloads */
};

/*
 * Defaults: no device, flush every 1000 ms, dirty_max 256M, dirty_hard 0
 * (= twice dirty_max, as the engine does), cache_max 512M, listen
 * 127.0.0.1:7410, nbd_listen 127.0.0.1:10809, no plaintext NBD, no
 * metrics_listen, 4 workers, 1024 connections, 64 requests and 32M in
 * flight per connection, 10 s handshake timeout, log level info, no
 * ready file, no TLS files, TLS 1.3 only, acl NULL (no rules), not dev.
 * Overwrites all of c (call it first); aborts if out of memory.
 */
void h2_config_defaults(struct h2_config *c);

/*
 * Load an INI file into c (keys not in the file keep their values;
 * [access] rules add to c->acl, creating it).  Unknown sections or keys,
 * a key set twice, bad values: -EINVAL with err naming the file, line and
 * key.  On success c->config_path is set to path.  On error c may be
 * partly updated; h2_config_free() it either way.
 */
int h2_config_load(struct h2_config *c, const char *path, char *err,
		   size_t errlen);

/*
 * Apply `h2d serve` flags (argv without the subcommand).  Recognized:
 * --config PATH (loaded first, before the other flags apply), --device,
 * --listen, --nbd-listen ("" turns NBD off), --nbd-plain-listen (loopback
 * only) with --nbd-plain-identity (required with it), --metrics-listen,
 * --ca, --cert, --key, --allow-tls12, --access ID=SPEC
 * (repeatable), --flush-interval MS, --dirty-max SIZE, --dirty-hard SIZE,
 * --cache-max SIZE, --workers N, --max-connections N, --max-inflight N,
 * --max-inflight-bytes SIZE, --log-level L, --ready-file PATH, --dev.
 * -EINVAL with err set on a bad flag; 1 if --help was given (usage
 * printed to stdout).  Also checks settings against each other
 * (dirty_hard >= dirty_max unless 0; nbd_plain_listen needs
 * nbd_plain_identity).  Uses getopt_long: not thread-safe.
 */
int h2_config_from_args(struct h2_config *c, int argc, char **argv, char *err,
			size_t errlen);

/*
 * --dev: fill what is missing with the embedded development defaults:
 * device ./var/h2/store.img (created sparse, 4 GiB, and formatted if
 * missing), TLS files under ./var/h2/tls/ (created by h2_tls_dev_certs
 * with client identity "admin"), access "admin = admin:*".
 * Directories ./var and ./var/h2 are created with mode 0700; the store is
 * formatted under a temporary name and renamed into place.  Only unset
 * fields are filled: a device that is set is used as is, a TLS file that
 * is set is kept.  The rule "admin = admin:*" is always added (rules
 * from --access or the file add to it).  0 or -errno with err set.
 */
int h2_config_apply_dev(struct h2_config *c, char *err, size_t errlen);

/* Longest identity (with its NUL), as connections store it. */
#define H2_CONFIG_IDENT_MAX 256

/*
 * Resolve "HOST:PORT" (a name, an IPv4 address or a bracketed IPv6
 * address) and check that every address it has is loopback (127.0.0.0/8,
 * ::1, ::ffff:127.0.0.0/104).  0 with the first address in *ss and its
 * length in *sslen (both may be NULL); -EINVAL (not HOST:PORT, does not
 * resolve) or -EADDRNOTAVAIL (an address is not loopback) with a
 * sentence naming the address in err.  May block on a name lookup.
 */
int h2_config_loopback_addr(const char *hostport, struct sockaddr_storage *ss,
			    int *sslen, char *err, size_t errlen);

/* Is sa a loopback address (as h2_config_loopback_addr counts them)? */
bool h2_config_sa_loopback(const struct sockaddr *sa);

/*
 * The access rules a reload (SIGHUP) puts in force: the config file's
 * [access] rules as the file is now (none when it has no [access]
 * section, or when c came from no file), plus every rule c was given
 * with --access or --dev, which always stay.  *out: the new rule list
 * (caller frees with h2_acl_free), NULL when there is no rule at all.
 * -EINVAL (-ENOMEM) with err set if the file no longer loads; c is not
 * changed either way.
 */
int h2_config_reload_access(const struct h2_config *c, struct h2_acl **out,
			    char *err, size_t errlen);

/* Free everything c owns and zero it (c itself is the caller's). */
void h2_config_free(struct h2_config *c);

#endif
