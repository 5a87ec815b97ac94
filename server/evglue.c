/*
 * evglue.c - libevent's memory hooks and guarded sections (evglue.h).
 *
 * The hooks are malloc, realloc and free, plus the reserve: slots of
 * EV_RESERVE_SIZE bytes that only a guarded section draws on, when the
 * real allocation failed.  libevent's unchecked allocations are callback
 * entries of a few dozen bytes; but the OpenSSL bufferevents also
 * mishandle a failure of the evbuffers they make once their own object
 * is allocated (bufferevent_free on a half-made bufferevent: a crash), so
 * a slot takes a whole bufferevent: inside a section, libevent's
 * constructors do not fail for want of memory, they come back damaged
 * and the section says so.  A larger allocation fails, which libevent
 * handles.  A slot goes back when libevent frees it, which the caller of
 * a failed section makes happen at once by freeing what the section
 * made.
 */
#include "evglue.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define EV_RESERVE_SLOTS 8
#define EV_RESERVE_SIZE	 1024 /* an OpenSSL bufferevent is 696 bytes */

static _Alignas(16) unsigned char ev_reserve[EV_RESERVE_SLOTS][EV_RESERVE_SIZE];
static bool ev_reserve_used[EV_RESERVE_SLOTS]; /* __atomic */
static _Thread_local bool ev_guarded, ev_guard_failed;

/* A free reserve slot for n bytes, or NULL. */
static void *ev_reserve_take(size_t n)
{
	if (n > EV_RESERVE_SIZE)
		return NULL;
	for (unsigned i = 0; i < EV_RESERVE_SLOTS; i++)
		if (!__atomic_exchange_n(&ev_reserve_used[i], true,
					 __ATOMIC_ACQ_REL))
			return ev_reserve[i];
	return NULL;
}

/* The reserve slot p is, or -1 if it is not one. */
static int ev_reserve_slot(const void *p)
{
	uintptr_t a = (uintptr_t)p, base = (uintptr_t)ev_reserve;

	if (a < base || a >= base + sizeof(ev_reserve))
		return -1;
	return (int)((a - base) / EV_RESERVE_SIZE);
}

static void *ev_malloc(size_t n)
{
	void *p = malloc(n);

	if (!p && ev_guarded) {
		ev_guard_failed = true;
		p = ev_reserve_take(n);
	}
	return p;
}

static void *ev_realloc(void *old, size_t n)
{
	int slot = ev_reserve_slot(old);
	void *p;

	if (slot < 0) {
		p = realloc(old, n);
		if (!p && n && ev_guarded)
			ev_guard_failed = true;
		return p;
	}
	p = ev_malloc(n);
	if (p) {
		memcpy(p, old, n < EV_RESERVE_SIZE ? n : EV_RESERVE_SIZE);
		__atomic_store_n(&ev_reserve_used[slot], false,
				 __ATOMIC_RELEASE);
	}
	return p;
}

static void ev_free(void *p)
{
	int slot = ev_reserve_slot(p);

	if (slot >= 0)
		__atomic_store_n(&ev_reserve_used[slot], false,
				 __ATOMIC_RELEASE);
	else
		free(p);
}

void h2_ev_init(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
}

void h2_ev_guard_begin(void)
{
	ev_guarded = true;
	ev_guard_failed = false;
}

bool h2_ev_guard_end(void)
{
	ev_guarded = false;
	return ev_guard_failed;
}

/* The ex_data index whose free callback notes an SSL's destruction. */
static int ev_ssl_index = -1;

static void ev_ssl_freed(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
			 int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (ptr)
		*(bool *)ptr = true;
}

int h2_ev_ssl_watch(SSL *ssl, bool *freed)
{
	*freed = false;
	if (ev_ssl_index < 0)
		ev_ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL,
						    ev_ssl_freed);
	if (ev_ssl_index < 0 || !SSL_set_ex_data(ssl, ev_ssl_index, freed)) {
		ERR_clear_error();
		return -ENOMEM;
	}
	return 0;
}

void h2_ev_ssl_unwatch(SSL *ssl)
{
	/* The slot exists now: this allocates nothing. */
	SSL_set_ex_data(ssl, ev_ssl_index, NULL);
}
