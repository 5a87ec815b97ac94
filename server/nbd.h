/*
 * nbd.h - h2d's NBD frontend: volumes served over the NBD protocol, so
 * qemu, nbd-client, libnbd's tools and fio use them unchanged.
 *
 * A second listener on the server's event loop.  Connections start in
 * plaintext and must upgrade with NBD_OPT_STARTTLS (same CA, server
 * certificate, client certificates and access rules as the native
 * protocol); the export name is the volume name.
 *
 * Optionally a third, plaintext listener (nbd_plain_listen): loopback
 * addresses only, no TLS at all, and every connection acts as the one
 * configured identity (nbd_plain_identity) under the normal access
 * rules.  Any local user can reach a loopback port, so that identity's
 * rights are everyone's on the machine; it exists for benchmarks and
 * local tools (fio's nbd engine cannot present a client certificate).  The protocol itself
 * (handshake, options, parsing, replies) is nbd_proto.h's engine; this
 * module is the I/O around it.  Commands run as normal transactions on
 * the server's worker pool, exactly like native requests.
 *
 * Naming: the engine owns the h2_nbd_ prefix (struct h2_nbd), so this
 * module's functions are h2_nbdsrv_.
 *
 * Loop thread only.
 */
#ifndef H2D_NBD_H
#define H2D_NBD_H

#include <stdbool.h>
#include <stddef.h>

struct h2_server;

/*
 * Bind srv->cfg->nbd_listen and srv->cfg->nbd_plain_listen (those that
 * are non-empty; at least one should be) and start accepting into
 * srv->nbd.  The plaintext listener binds only loopback addresses
 * (h2_config_loopback_addr) and logs a warning.  On error returns -errno
 * with a sentence in err, and srv->nbd stays NULL.
 */
int h2_nbdsrv_start(struct h2_server *srv, char *err, size_t errlen);

/* The TLS address bound ("127.0.0.1:10809"), or NULL if it is off. */
const char *h2_nbdsrv_listen_addr(const struct h2_server *srv);

/* The plaintext address bound, or NULL if it is off. */
const char *h2_nbdsrv_plain_addr(const struct h2_server *srv);

/* Shutdown starts: stop accepting; connections still negotiating stop
 * being read, those transmitting answer ESHUTDOWN to new commands. */
void h2_nbdsrv_stop(struct h2_server *srv);

/* Close every connection once its replies are sent (nothing in flight). */
void h2_nbdsrv_close_all(struct h2_server *srv);

/* Tear every connection down at once (clients that do not read). */
void h2_nbdsrv_teardown_all(struct h2_server *srv);

/*
 * Whether an NBD client has volume open for writing or is opening it so
 * (its GO is running).  Loop thread.
 */
bool h2_nbdsrv_writing(const struct h2_server *srv, const char *volume);

/* Open NBD connections (0 when the frontend is off). */
unsigned h2_nbdsrv_conns(const struct h2_server *srv);

/*
 * Free the frontend.  Connections must be torn down first, and the
 * worker pool freed (its done callbacks still see connections).
 */
void h2_nbdsrv_free(struct h2_server *srv);

#endif
