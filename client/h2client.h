/*
 * h2client.h - libh2client: talk to an h2d over TLS.
 *
 * Connect with h2_connect(), open a volume, read and write it:
 *
 *	h2_client_opts o = {.server = "127.0.0.1:7410",
 *			    .ca_file = "ca.crt", .cert_file = "client.crt",
 *			    .key_file = "client.key"};
 *	h2_client *c;
 *	h2_volume *v;
 *	if (h2_connect(&o, &c) < 0 || h2_volume_open(c, "vm1", H2_OPEN_RW,
 *						    &v) < 0) ...
 *	h2_pwrite(v, buf, 4096, 0, 0);
 *	h2_flush(v);
 *
 * Errors are negative H2_E* codes; h2_strerror() names them and
 * h2_last_error() gives the server's sentence for the calling thread's
 * last failed call.
 *
 * The server's certificate is verified against ca_file, and its name (or
 * IP SAN) against the host of `server` (or tls_server_name).
 *
 * With H2_RECONNECT in opts.flags the client survives server restarts:
 * see "H2_RECONNECT" below.
 *
 * Thread-safety: an h2_client may be used from several threads at once
 * for synchronous calls (requests are pipelined on the one connection;
 * each call waits for its own reply).  The asynchronous interface
 * (h2_aio_*) must be driven by one thread at a time: the thread that
 * calls h2_aio_poll runs the completion callbacks.  Handles (h2_volume,
 * h2_txn) belong to their client and die with it.  An h2_txn is used by
 * one thread at a time.  Nothing else may be running on a client when
 * h2_disconnect() is called.
 *
 * Limits: the server announces the largest payload it accepts
 * (max_payload) and how many requests it reads ahead (max_inflight).  The
 * library never has more than max_inflight requests outstanding (the rest
 * wait, in order, inside the library) and splits a read or write larger
 * than max_payload into several requests, sent pipelined.  Such a split
 * write is not atomic as a whole: after a crash any subset of its
 * max_payload-sized pieces may be durable.  Use an h2_txn for atomicity.
 *
 * Zero lengths: h2_pread/h2_pwrite/h2_trim/h2_write_zeroes with len 0 do
 * nothing and return 0 (as pread(2) does); the aio calls, h2_block_status
 * and the h2_txn_* ops refuse len 0 with H2_EINVAL.  Every call refuses
 * an off + len that overflows 64 bits with H2_ERANGE; the volume's size
 * is checked by the server.
 */
#ifndef H2CLIENT_H
#define H2CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define H2_CLIENT_VERSION "0.1.0"

/* Marks the library's exported functions; everything else is hidden. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define H2_PUBLIC __attribute__((visibility("default")))
#else
#define H2_PUBLIC
#endif

/* Error codes (negative). */
enum {
	H2_OK = 0,
	H2_EINVAL = -1,	       /* invalid argument */
	H2_ERANGE = -2,	       /* offset/length outside the volume */
	H2_ENOENT = -3,	       /* no such volume (or no right to see it) */
	H2_EEXIST = -4,	       /* already exists */
	H2_EPERM = -5,	       /* permission denied */
	H2_EROFS = -6,	       /* read-only (volume, handle or store) */
	H2_ENOSPC = -7,	       /* the store is full */
	H2_EIO = -8,	       /* I/O error on the server */
	H2_ECHECKSUM = -9,     /* a block failed its checksum */
	H2_ETOOBIG = -10,      /* request too large */
	H2_EUNSUPPORTED = -11, /* the server does not support it */
	H2_EINTERNAL = -12,    /* server-side internal error */
	H2_EBUSY = -13,	       /* in use (volume open elsewhere) */
	H2_EPROTO = -14,       /* protocol violation or unexpected reply */
	H2_EUNAVAILABLE = -15, /* server shutting down */
	H2_ECONNECT = -16,     /* cannot connect (address, refused) */
	H2_ETLS = -17,	       /* TLS failed (certificate, handshake) */
	H2_ECLOSED = -18,      /* the connection is gone */
	H2_ENOMEM = -19,       /* out of memory here */
	H2_ETIMEDOUT = -20,    /* no answer in time */
	H2_ECONNLOST = -21,    /* H2_RECONNECT: the connection was lost with
				  the request in flight; it may or may not
				  have been applied (not sent again) */
	H2_EUNSYNCED = -22,    /* H2_RECONNECT: the flush succeeded, but the
				  server restarted uncleanly since writes it
				  acknowledged: those may be lost */
	H2_EDEPENDENTS = -23,  /* snapshots or clones depend on it */
};

/* Name and description of an error code ("no such volume").  Thread-safe. */
H2_PUBLIC const char *h2_strerror(int err);
/*
 * The server's (or library's) sentence about this thread's last error:
 * valid until this thread's next failing call; "" if none.  Inside an aio
 * callback whose result is an error, the sentence about that request.
 */
H2_PUBLIC const char *h2_last_error(void);

typedef struct h2_client h2_client;
typedef struct h2_volume h2_volume;
typedef struct h2_txn h2_txn;

typedef struct h2_client_opts {
	const char *server;	     /* "HOST:PORT" (port default 7410) */
	const char *ca_file;	     /* CA that signed the server's cert */
	const char *cert_file;	     /* this client's certificate */
	const char *key_file;	     /* and its key */
	const char *tls_server_name; /* name to verify; default: HOST */
	unsigned connect_timeout_ms; /* 0: 10 s */
	unsigned flags;		     /* H2_RECONNECT, or 0 */
	const char *client_name;     /* sent in Hello, for server logs */
	/* Added last, and read only with H2_RECONNECT, so that programs
	 * built before it existed (without the flag) still work. */
	unsigned reconnect_timeout_ms; /* H2_RECONNECT: 0: 30 s */
} h2_client_opts;

enum h2_client_flags {
	H2_RECONNECT = 1u << 0, /* survive server restarts (see below) */
};

/*
 * H2_RECONNECT.  Without it, a lost connection fails every request in
 * flight with H2_ECLOSED and the client is dead.  With it, the client's
 * I/O thread connects again when the connection is lost (a reset, an EOF,
 * a TLS error, the server shutting down): at once, then after 50 ms,
 * 100 ms, ... doubling up to 2 s between attempts, each attempt given
 * connect_timeout_ms.  Once connected (TLS and Hello again; the address
 * resolved by h2_connect is reused) it opens every h2_volume that was open
 * again, with the same mode, and sends the requests that were in flight
 * again; callers just wait, and see their handles keep working.  Requests
 * made meanwhile wait too.  If no connection succeeds within
 * reconnect_timeout_ms of the loss, every waiting request fails with
 * H2_ECLOSED and the client is dead, as without the flag.  A connection
 * that fails soon after it was made gets no immediate retry (the waits
 * go on growing), and one ended by a protocol violation is not made
 * again.  h2_connect's own first connection is never retried.
 *
 * Sent again: reads, writes, trims, write-zeroes, flushes and syncs,
 * block status, batches (h2_txn: applying the same writes and trims at
 * the same offsets twice leaves the same data), volume info and list,
 * statistics, volume open and close.  Not sent again: volume create,
 * delete and resize; those fail with H2_ECONNLOST when the connection is
 * lost while they are in flight, except when the server said it did not
 * run them (see below).  A request sent again may be applied twice; as
 * on any block device, writes that overlap and are in flight at the same
 * time land in no defined order.  A volume that cannot be opened again
 * (deleted, rights withdrawn) fails every later call on it with the
 * server's error; h2_volume_close still frees it.
 *
 * A server that stops cleanly (h2d on SIGTERM, "systemctl restart h2d")
 * finishes what it started, answers what arrives afterwards with
 * "shutting down, not executed", syncs, and closes with a TLS
 * close_notify.  Requests it did not run are sent again whatever they
 * are, and nothing acknowledged is lost: a clean restart is invisible
 * except for the pause.  (Once a server has said it is shutting down,
 * nothing new is sent to it; if it has not closed within
 * reconnect_timeout_ms, at most 40 s, the library closes and connects
 * again.)
 *
 * Durability across a reconnect.  A write acknowledged without H2_FUA
 * becomes durable at the next successful flush (the server's contract).
 * If the connection is lost without close_notify (the server crashed, was
 * killed, or the network failed) and the new connection reaches a
 * different server process, writes acknowledged before the loss but not
 * yet covered by a successful flush may be lost.  The library tracks
 * this per volume: the next flush of such a volume (h2_flush or
 * h2_aio_flush), and separately the next h2_sync() of the client, does
 * the flush and, if it succeeded, returns H2_EUNSYNCED instead of 0: once
 * per loss, as fsync(2) reports a write-back error once per file.  The
 * application should treat the volume's unflushed writes since its last
 * successful flush as unknown (write them again, or check them).  Writes
 * acknowledged after the reconnect are covered as usual, and FUA writes
 * are never in doubt.  When the new connection reaches the same server
 * process (the network failed, not the server), its memory still holds
 * those writes and nothing is reported.  (The server says which process
 * it is in HelloResult.instance; a server that does not say counts as a
 * new one.)
 */

/*
 * Connect, handshake (TLS + Hello).  *out freed with h2_disconnect.
 * HOST may be a name, an IPv4 literal or a bracketed IPv6 literal.  The
 * TCP connect, TLS handshake and Hello together get connect_timeout_ms
 * (H2_ETIMEDOUT); the first connection is not retried, even with
 * H2_RECONNECT.  H2_ECONNECT: name or address unusable; H2_ETLS: the
 * handshake failed or the server refused our certificate (h2_last_error
 * names the reason: a verify result or the alert the server sent).
 * Unknown bits in opts.flags are H2_EINVAL.  Thread-safe.
 */
H2_PUBLIC int h2_connect(const h2_client_opts *opts, h2_client **out);
/*
 * Close the connection and free c with every h2_volume and h2_txn still
 * open on it.  Requests still outstanding are abandoned: the callbacks of
 * aio requests not yet run are run here, on the calling thread, with
 * H2_ECLOSED (or their result, if it had arrived).  NULL is a no-op.
 */
H2_PUBLIC void h2_disconnect(h2_client *c);

/* The identity the server mapped our certificate to.  Thread-safe. */
H2_PUBLIC const char *h2_client_identity(const h2_client *c);

typedef struct h2_volume_info {
	char name[128];
	uint64_t id;
	uint64_t size;
	uint64_t used_bytes; /* blocks its tree references, shared included */
	uint64_t ctime_ns;
	bool can_read, can_write, can_admin;
	uint32_t snapshots;  /* snapshots of this volume */
	uint64_t snap_bytes; /* held by its snapshots and not by it */
	char origin[256];    /* a clone: "VOLUME@SNAP" it came from, else "" */
} h2_volume_info;

/* Volume management; names are 1..127 bytes.  Thread-safe. */
H2_PUBLIC int h2_volume_create(h2_client *c, const char *name, uint64_t size);
/* A volume with snapshots is refused with H2_EDEPENDENTS. */
H2_PUBLIC int h2_volume_delete(h2_client *c, const char *name);

enum h2_delete_flags {
	/* Also delete the volume's snapshots and the clones made from
	 * them (recursively): needs admin on every volume deleted. */
	H2_DELETE_RECURSIVE = 1u << 0,
};

/* h2_volume_delete with flags (H2_DELETE_RECURSIVE).  Thread-safe. */
H2_PUBLIC int h2_volume_delete_flags(h2_client *c, const char *name,
				     unsigned flags);
H2_PUBLIC int h2_volume_resize(h2_client *c, const char *name, uint64_t size);
H2_PUBLIC int h2_volume_info_get(h2_client *c, const char *name,
				 h2_volume_info *out);
/* *out: array of *count; free with free() (NULL when *count is 0). */
H2_PUBLIC int h2_volume_list(h2_client *c, h2_volume_info **out, size_t *count);

enum h2_open_flags {
	H2_OPEN_RO = 0,
	H2_OPEN_RW = 1,
};

/*
 * Open a volume for I/O on this connection.  name "VOLUME@SNAP" opens a
 * snapshot: H2_OPEN_RO only (H2_OPEN_RW is H2_EROFS), read right on
 * VOLUME suffices.  Thread-safe.
 */
H2_PUBLIC int h2_volume_open(h2_client *c, const char *name, unsigned flags,
			     h2_volume **out);
/*
 * Close the handle on the server and free v, with any h2_txn still open
 * on it; v is freed even when an error is returned.  No other call on v
 * may be running, nor any aio request on it be waiting for its callback.
 */
H2_PUBLIC int h2_volume_close(h2_volume *v);
/* The size the volume had when it was opened.  Thread-safe. */
H2_PUBLIC uint64_t h2_volume_size(const h2_volume *v);

enum h2_io_flag {
	H2_FUA = 1u << 0,     /* durable before the call returns */
	H2_NO_HOLE = 1u << 1, /* write_zeroes: allocate zeros */
};

/*
 * Returns 0 (all bytes done) or an error.  Thread-safe; calls from several
 * threads are pipelined.  A read or write larger than the server's
 * max_payload is split (see "Limits" above).  flags: H2_FUA (and
 * H2_NO_HOLE for write_zeroes); other bits are H2_EINVAL.
 */
H2_PUBLIC int h2_pread(h2_volume *v, void *buf, size_t len, uint64_t off);
H2_PUBLIC int h2_pwrite(h2_volume *v, const void *buf, size_t len, uint64_t off,
			unsigned flags);
H2_PUBLIC int h2_trim(h2_volume *v, uint64_t off, uint64_t len, unsigned flags);
H2_PUBLIC int h2_write_zeroes(h2_volume *v, uint64_t off, uint64_t len,
			      unsigned flags);
/*
 * Everything acknowledged before this call becomes durable.  With
 * H2_RECONNECT, H2_EUNSYNCED says that some of it may have been lost
 * with an earlier connection (see "H2_RECONNECT").
 */
H2_PUBLIC int h2_flush(h2_volume *v);
/* The same for every volume of the store (Flush with handle 0). */
H2_PUBLIC int h2_sync(h2_client *c);

/*
 * Allocation map: cb per extent; a hole reads as zeros.  The extents are
 * consecutive and cover exactly [off, off + len) (the library asks again
 * when the server describes less).  A non-zero return from cb stops the
 * walk and is returned.
 */
typedef int (*h2_extent_fn)(void *arg, uint64_t off, uint64_t len, bool hole);
H2_PUBLIC int h2_block_status(h2_volume *v, uint64_t off, uint64_t len,
			      h2_extent_fn cb, void *arg);

/*
 * Atomic batches: all of it or none of it, after any crash.  A batch is
 * sent as one request: its data may not exceed the server's max_payload
 * and its ops must fit one frame header (about 2000 ops); an op that would
 * overflow either is refused with H2_ETOOBIG and the batch stays usable.
 */
H2_PUBLIC int h2_txn_begin(h2_volume *v, h2_txn **out);
/* The data is copied; buf may be reused at once. */
H2_PUBLIC int h2_txn_write(h2_txn *t, const void *buf, size_t len,
			   uint64_t off);
H2_PUBLIC int h2_txn_trim(h2_txn *t, uint64_t off, uint64_t len);
/* flags: H2_FUA.  An empty batch returns 0 without asking the server. */
H2_PUBLIC int h2_txn_commit(h2_txn *t, unsigned flags); /* frees t */
H2_PUBLIC void h2_txn_abort(h2_txn *t); /* frees t; NULL is a no-op */

/*
 * Statistics.  h2_stat fills the server-wide totals; h2_stat_report_get
 * gives everything: totals, connections, requests, bytes, errors and
 * latency per operation, and the same per volume.
 *
 * Server-wide numbers are for every client (they name no volume); a
 * volume's entry only for volumes the client has a right to.  The
 * operations are "read", "write", "trim", "write_zeroes", "flush", "txn",
 * "block_status" and "other" (Hello, Ping, volume admin, statistics...),
 * counting requests of both protocols ("native": this library, "nbd": the
 * NBD frontend).  bytes are what successful requests covered: data read
 * or written, the range trimmed, zeroed or mapped, a txn's ops summed.
 * Latency runs from a request's arrival at the server to its reply being
 * queued; percentiles are within 12.5% (log-linear buckets).
 *
 * ABI: h2_stats, h2_latency and h2_error_stats never change.  Fields are
 * only ever added at the end of h2_stat_report, h2_op_stats and
 * h2_volume_stats, which the library allocates; arrays are arrays of
 * pointers.  A program built against a newer header checks
 * H2_STAT_HAS(report, field) before reading a field a library older than
 * its header may not have filled.
 */
typedef struct h2_stats {
	uint64_t total_bytes, used_bytes, free_bytes, dirty_bytes;
	uint64_t flushes, flush_ns_total, durable_tid;
	uint64_t dev_bytes_written, client_bytes_written, client_bytes_read;
	uint64_t volumes, connections, requests, errors;
} h2_stats;

/* Server statistics (totals only).  Thread-safe. */
H2_PUBLIC int h2_stat(h2_client *c, h2_stats *out);

typedef struct h2_latency {
	uint64_t count; /* requests measured */
	uint64_t sum_ns, mean_ns, p50_ns, p99_ns, p999_ns;
} h2_latency;

typedef struct h2_op_stats {
	const char *op;	   /* "read", ... (see above) */
	uint64_t requests; /* native + nbd */
	uint64_t native_requests, nbd_requests;
	uint64_t bytes;
	uint64_t errors;
	h2_latency latency;
} h2_op_stats;

typedef struct h2_error_stats {
	const char *code; /* the status as in h2.proto: "OUT_OF_RANGE" */
	int err;	  /* the H2_E* code it becomes in this library */
	uint64_t count;
} h2_error_stats;

typedef struct h2_volume_stats {
	const char *name;
	uint64_t size, used_bytes; /* used: as of the last flush */
	uint64_t open_handles;	   /* handles and NBD exports open now */
	uint64_t requests, errors; /* over its operations */
	size_t nops;		   /* the operations it has seen */
	h2_op_stats **ops;
	size_t nerrors; /* codes with a non-zero count */
	h2_error_stats **errors_by_code;
} h2_volume_stats;

typedef struct h2_stat_report {
	size_t size;	 /* bytes of this struct the library filled */
	h2_stats totals; /* what h2_stat gives */
	uint64_t last_flush_ns, dev_bytes_read, dev_flushes;
	uint64_t write_waits;  /* writers held at the dirty hard limit */
	uint64_t cached_bytes; /* metadata and dirty data in memory */
	uint64_t block_size;
	uint64_t native_connections, nbd_connections; /* open now */
	uint64_t native_connections_total, nbd_connections_total;
	uint64_t connections_refused, tls_handshake_failures;
	uint64_t start_time_ns; /* when the server started (Unix time) */
	size_t nops;		/* every operation, server-wide */
	h2_op_stats **ops;
	size_t nerrors; /* codes with a non-zero count, server-wide */
	h2_error_stats **errors_by_code;
	size_t nvolumes;
	h2_volume_stats **volumes; /* sorted by name */
	uint64_t snapshots;	   /* in the store */
	uint64_t snapshot_bytes;   /* held only by snapshots */
} h2_stat_report;

/* Whether report r carries field (see "ABI" above). */
#define H2_STAT_HAS(r, field)                                                  \
	((r)->size >= offsetof(h2_stat_report, field) + sizeof((r)->field))

/*
 * Everything in one report.  volume NULL: every volume used since the
 * server started (opened by a handle or an NBD export) that this client
 * may see (asked for page by page when there are many); else only that
 * volume, used or not (H2_ENOENT if it does not exist or the client has
 * no right to it).  *out is freed with h2_stat_report_free.  Thread-safe.
 */
H2_PUBLIC int h2_stat_report_get(h2_client *c, const char *volume,
				 h2_stat_report **out);
/* NULL is a no-op. */
H2_PUBLIC void h2_stat_report_free(h2_stat_report *r);
/* An operation's entry in an array (NULL if absent).  Thread-safe. */
H2_PUBLIC const h2_op_stats *h2_op_stats_find(h2_op_stats *const *ops, size_t n,
					      const char *op);

/*
 * Snapshots and clones.  A snapshot is a read-only image of a volume,
 * taken at once without copying data; it holds the blocks the volume
 * overwrites after it.  Snapshot names follow volume names (1..127
 * bytes) and are unique per volume.  Creating, deleting, cloning and
 * rolling back need the admin right on the volume; listing needs read.
 * Errors beyond the usual: H2_EDEPENDENTS when a clone depends on the
 * snapshot (delete, rollback past newer snapshots); h2_last_error()
 * says what.  All thread-safe.
 */
typedef struct h2_snapshot_info {
	char volume[128];
	char name[128];
	uint64_t ctime_ns;
	uint64_t tid;	      /* the store transaction it is the image of */
	uint64_t size;	      /* the volume's size then */
	uint64_t refer_bytes; /* blocks it references */
	uint64_t excl_bytes;  /* held by it alone: freed by deleting it */
	uint32_t clones;      /* volumes cloned from it */
} h2_snapshot_info;

/* Snapshot volume as name; out (may be NULL) describes it. */
H2_PUBLIC int h2_snapshot_create(h2_client *c, const char *volume,
				 const char *name, h2_snapshot_info *out);
/*
 * The snapshots of volume (NULL: of every volume the caller can see),
 * sorted by volume, then age.  *out: array of *count, freed with
 * h2_snapshot_list_free (NULL when *count is 0).
 */
H2_PUBLIC int h2_snapshot_list(h2_client *c, const char *volume,
			       h2_snapshot_info **out, size_t *count);
H2_PUBLIC void h2_snapshot_list_free(h2_snapshot_info *list);
/* Its space comes back once the deletion is durable. */
H2_PUBLIC int h2_snapshot_delete(h2_client *c, const char *volume,
				 const char *name);
/*
 * A new writable volume new_volume sharing every block of
 * volume@snapshot (needs admin on volume and on the new name); out (may
 * be NULL) describes it.  The snapshot cannot be deleted while the clone
 * exists.
 */
H2_PUBLIC int h2_clone(h2_client *c, const char *volume, const char *snapshot,
		       const char *new_volume, h2_volume_info *out);

enum h2_rollback_flags {
	/* Even while a client has the volume open for writing. */
	H2_ROLLBACK_FORCE = 1u << 0,
};

/*
 * Make volume's contents snapshot's (its newest snapshot: delete newer
 * ones first, else H2_EDEPENDENTS).  H2_EBUSY while any client of the
 * server has the volume open for writing, unless H2_ROLLBACK_FORCE;
 * handles still open then read the snapshot's data.
 */
H2_PUBLIC int h2_rollback(h2_client *c, const char *volume,
			  const char *snapshot, unsigned flags);

/*
 * Asynchronous I/O: submit many requests, get callbacks as replies come
 * (in any order).  The callback's result is 0 or an error code; for reads
 * the data is in the caller's buffer.  Buffers must stay valid until the
 * callback runs.  A submit returns 0 (the callback will run exactly once)
 * or an error (it will not run).  Callbacks may submit more requests and
 * make synchronous calls, but not call h2_disconnect().
 */
typedef void (*h2_aio_cb)(void *arg, int result);

H2_PUBLIC int h2_aio_pread(h2_volume *v, void *buf, size_t len, uint64_t off,
			   h2_aio_cb cb, void *arg);
H2_PUBLIC int h2_aio_pwrite(h2_volume *v, const void *buf, size_t len,
			    uint64_t off, unsigned flags, h2_aio_cb cb,
			    void *arg);
H2_PUBLIC int h2_aio_flush(h2_volume *v, h2_aio_cb cb, void *arg);

/*
 * A descriptor that becomes readable when replies may be waiting (an
 * eventfd; do not read or close it).  Thread-safe.
 */
H2_PUBLIC int h2_aio_fd(const h2_client *c);
/* Requests submitted whose callback has not run.  Thread-safe. */
H2_PUBLIC unsigned h2_aio_inflight(const h2_client *c);
/*
 * Process replies, waiting up to timeout_ms (0: do not wait, -1: wait for
 * at least one) and run their callbacks.  Returns callbacks run, or an
 * error (the connection failed: every pending callback has then run with
 * H2_ECLOSED, and the call returns H2_ECLOSED from then on).  With
 * H2_RECONNECT a lost connection is not a failure until reconnecting
 * gives up: requests in flight wait for the new connection and their
 * callbacks run once, with its replies.  With nothing in flight it
 * returns 0 at once.  Other values of timeout_ms below 0 are treated as
 * -1.
 */
H2_PUBLIC int h2_aio_poll(h2_client *c, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* H2CLIENT_H */
