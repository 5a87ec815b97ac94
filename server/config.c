/*
 * config.c - h2d serve's configuration: defaults, then the INI file, then
 * the command-line flags, then (with --dev) the development defaults.
 *
 * Every scalar setting is one row of cfg_keys: its [section] and key in
 * the file, its flag, its type and its bounds.  The file and the flags
 * share one setter (cfg_set), so a value means the same in both places
 * and is checked the same way; only the prefix of the error sentence
 * differs ("h2d.conf:12: [store] dirty_max" or "--dirty-max").
 *
 * libinih does not tell the handler which line it is on (this build has
 * INI_HANDLER_LINENO 0), so the file is read through our own line reader,
 * which counts lines and also catches what inih would let through
 * silently: a line too long for its buffer (inih would parse the rest as
 * a line of its own) and an unknown section with no keys in it.
 *
 * Ownership: every string in struct h2_config is heap-allocated and owned
 * by it; h2_config_free releases them all.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "cli.h"
#include "h2core.h"
#include "log.h"
#include "tls.h"

#define CFG_DEFAULT_LISTEN "127.0.0.1:7410"
#define CFG_DEFAULT_NBD_LISTEN "127.0.0.1:10809" /* IANA's NBD port */

/* --dev: everything lives under ./var/h2 of the current directory. */
#define CFG_DEV_ROOT	 "./var"
#define CFG_DEV_DIR	 "./var/h2"
#define CFG_DEV_DEVICE	 "./var/h2/store.img"
#define CFG_DEV_TLS	 "./var/h2/tls"
#define CFG_DEV_SIZE	 (4ull << 30)
#define CFG_DEV_IDENTITY "admin"

enum cfg_type {
	CFG_STR,    /* char *, non-empty */
	CFG_LISTEN, /* char *, HOST:PORT */
	CFG_LISTEN_OPT, /* char *, HOST:PORT or "" (off) */
	CFG_LISTEN_LOOP, /* char *, HOST:PORT on loopback only, or "" */
	CFG_IDENT,  /* char *, an identity: non-empty, printable */
	CFG_U32,    /* uint32_t in [min, max] */
	CFG_UNS,    /* unsigned in [min, max] */
	CFG_SIZE,   /* uint64_t, h2d_parse_size, in [min, max] */
	CFG_BOOL,   /* bool */
	CFG_LEVEL,  /* int, enum h2_log_level */
};

struct cfg_key {
	const char *section;
	const char *key;
	const char *flag; /* without "--"; NULL: file only */
	enum cfg_type type;
	size_t off; /* into struct h2_config */
	uint64_t min, max;
};

#define CFG_OFF(f) offsetof(struct h2_config, f)

static const struct cfg_key cfg_keys[] = {
    {"store", "device", "device", CFG_STR, CFG_OFF(device), 0, 0},
    {"store", "flush_interval_ms", "flush-interval", CFG_U32,
     CFG_OFF(flush_interval_ms), 1, 3600000},
    {"store", "dirty_max", "dirty-max", CFG_SIZE, CFG_OFF(dirty_max), 1,
     UINT64_MAX},
    /* 0: twice dirty_max (the engine's default). */
    {"store", "dirty_hard", "dirty-hard", CFG_SIZE, CFG_OFF(dirty_hard), 0,
     UINT64_MAX},
    {"store", "cache_max", "cache-max", CFG_SIZE, CFG_OFF(cache_max), 1,
     UINT64_MAX},
    {"server", "listen", "listen", CFG_LISTEN, CFG_OFF(listen), 0, 0},
    {"server", "nbd_listen", "nbd-listen", CFG_LISTEN_OPT, CFG_OFF(nbd_listen),
     0, 0},
    {"server", "nbd_plain_listen", "nbd-plain-listen", CFG_LISTEN_LOOP,
     CFG_OFF(nbd_plain_listen), 0, 0},
    {"server", "nbd_plain_identity", "nbd-plain-identity", CFG_IDENT,
     CFG_OFF(nbd_plain_identity), 0, 0},
    {"server", "metrics_listen", "metrics-listen", CFG_LISTEN_OPT,
     CFG_OFF(metrics_listen), 0, 0},
    {"server", "workers", "workers", CFG_UNS, CFG_OFF(workers), 1, 1024},
    {"server", "max_connections", "max-connections", CFG_UNS,
     CFG_OFF(max_connections), 1, 1000000},
    {"server", "max_inflight", "max-inflight", CFG_UNS, CFG_OFF(max_inflight),
     1, 65536},
    {"server", "max_inflight_bytes", "max-inflight-bytes", CFG_SIZE,
     CFG_OFF(max_inflight_bytes), 1, UINT64_MAX},
    {"server", "handshake_timeout_ms", NULL, CFG_UNS,
     CFG_OFF(handshake_timeout_ms), 1, 3600000},
    {"server", "log_level", "log-level", CFG_LEVEL, CFG_OFF(log_level), 0, 0},
    {"server", "ready_file", "ready-file", CFG_STR, CFG_OFF(ready_file), 0, 0},
    {"tls", "ca", "ca", CFG_STR, CFG_OFF(tls_ca), 0, 0},
    {"tls", "cert", "cert", CFG_STR, CFG_OFF(tls_cert), 0, 0},
    {"tls", "key", "key", CFG_STR, CFG_OFF(tls_key), 0, 0},
    {"tls", "allow_tls12", "allow-tls12", CFG_BOOL, CFG_OFF(allow_tls12), 0, 0},
};

#define CFG_NKEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

static const char *const cfg_sections[] = {"store", "server", "tls", "access"};

/* strdup for startup paths that cannot report failure: abort on OOM. */
static char *cfg_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p) {
		fprintf(stderr, "h2d: out of memory\n");
		abort();
	}
	return p;
}

void h2_config_defaults(struct h2_config *c)
{
	memset(c, 0, sizeof(*c));
	c->flush_interval_ms = 1000;
	c->dirty_max = 256ull << 20;
	c->dirty_hard = 0;
	c->cache_max = 512ull << 20;
	c->listen = cfg_xstrdup(CFG_DEFAULT_LISTEN);
	c->nbd_listen = cfg_xstrdup(CFG_DEFAULT_NBD_LISTEN);
	c->workers = 4;
	c->max_connections = 1024;
	c->max_inflight = 64;
	c->max_inflight_bytes = 32ull << 20;
	c->handshake_timeout_ms = 10000;
	c->log_level = H2_LOG_INFO;
	c->allow_tls12 = false;
}

void h2_config_free(struct h2_config *c)
{
	if (!c)
		return;
	free(c->device);
	free(c->listen);
	free(c->nbd_listen);
	free(c->nbd_plain_listen);
	free(c->nbd_plain_identity);
	free(c->metrics_listen);
	free(c->ready_file);
	free(c->tls_ca);
	free(c->tls_cert);
	free(c->tls_key);
	h2_acl_free(c->acl);
	for (size_t i = 0; i < c->nflag_rules; i++) {
		free(c->flag_rules[i].identity);
		free(c->flag_rules[i].spec);
	}
	free(c->flag_rules);
	free(c->config_path);
	memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------------- */
/* Values.                                                                */

/* Strict unsigned decimal (no sign, blanks or junk): 0, -EINVAL, -ERANGE. */
static int cfg_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s; s++) {
		unsigned d;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* true/false, yes/no, on/off, 1/0 (any case); -EINVAL otherwise. */
static int cfg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * A plausible HOST:PORT: a non-empty host (a name, an IPv4 address or a
 * bracketed IPv6 address) and a port 0..65535.  The listener resolves it.
 */
static bool cfg_listen_valid(const char *s)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;

	if (!colon || colon == s || cfg_parse_u64(colon + 1, &port) < 0 ||
	    port > 65535)
		return false;
	if (s[0] == '[')
		return colon > s + 2 && colon[-1] == ']';
	for (const char *p = s; p < colon; p++)
		if (*p == ':' || isspace((unsigned char)*p))
			return false;
	return true;
}

/* Is sa a loopback address (127.0.0.0/8, ::1, or ::ffff:127.x.y.z)? */
static bool cfg_sa_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return false;
}

bool h2_config_sa_loopback(const struct sockaddr *sa)
{
	return cfg_sa_loopback(sa);
}

int h2_config_loopback_addr(const char *hostport, struct sockaddr_storage *ss,
			    int *sslen, char *err, size_t errlen)
{
	struct addrinfo hints = {0}, *res = NULL, *ai;
	char host[256], ip[INET6_ADDRSTRLEN];
	const char *colon = hostport ? strrchr(hostport, ':') : NULL;
	const char *h = hostport;
	size_t hl;
	int r;

	if (!colon || !cfg_listen_valid(hostport)) {
		snprintf(err, errlen, "\"%s\" is not HOST:PORT",
			 hostport ? hostport : "");
		return -EINVAL;
	}
	hl = (size_t)(colon - hostport);
	if (h[0] == '[') {
		h++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		snprintf(err, errlen, "the host name in \"%s\" is too long",
			 hostport);
		return -EINVAL;
	}
	memcpy(host, h, hl);
	host[hl] = 0;
	hints.ai_flags = AI_NUMERICSERV;
	hints.ai_socktype = SOCK_STREAM;
	r = getaddrinfo(host, colon + 1, &hints, &res);
	if (r != 0 || !res) {
		snprintf(err, errlen, "cannot resolve \"%s\": %s", host,
			 r ? gai_strerror(r) : "no address");
		return -EINVAL;
	}
	/* Every address the name has must be loopback: a name that also
	 * resolves elsewhere could be bound elsewhere another day. */
	for (ai = res; ai; ai = ai->ai_next) {
		if (cfg_sa_loopback(ai->ai_addr))
			continue;
		ip[0] = 0;
		getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL,
			    0, NI_NUMERICHOST);
		snprintf(err, errlen,
			 "\"%s\" is not a loopback address (%s%s%s): "
			 "plaintext NBD is served on 127.0.0.0/8 or ::1 only; "
			 "for other addresses use nbd_listen, which requires "
			 "TLS",
			 hostport, strcmp(ip, host) ? host : "",
			 strcmp(ip, host) ? " resolves to " : "", ip);
		freeaddrinfo(res);
		return -EADDRNOTAVAIL;
	}
	if (ss) {
		memcpy(ss, res->ai_addr, res->ai_addrlen);
		*sslen = (int)res->ai_addrlen;
	}
	freeaddrinfo(res);
	return 0;
}

/* Replace the string at *slot with a copy of value. */
static int cfg_set_str(char **slot, const char *value)
{
	char *p = strdup(value);

	if (!p)
		return -ENOMEM;
	free(*slot);
	*slot = p;
	return 0;
}

/*
 * Set key k of c from the text value.  where names the setting for the
 * error sentence: "FILE:LINE: [section] key" or "--flag".
 */
static int cfg_set(struct h2_config *c, const struct cfg_key *k,
		   const char *value, const char *where, char *err,
		   size_t errlen)
{
	void *slot = (char *)c + k->off;
	uint64_t v = 0;
	bool b = false;
	int r, level = 0;

	switch (k->type) {
	case CFG_STR:
		if (!*value) {
			snprintf(err, errlen,
				 "%s: the value is empty; give a "
				 "path",
				 where);
			return -EINVAL;
		}
		break;
	case CFG_LISTEN:
	case CFG_LISTEN_OPT:
	case CFG_LISTEN_LOOP:
		if (k->type != CFG_LISTEN && !*value)
			break; /* empty: this listener is off */
		if (k->type == CFG_LISTEN_LOOP && cfg_listen_valid(value)) {
			char why[512];

			if (h2_config_loopback_addr(value, NULL, NULL, why,
						    sizeof(why)) < 0) {
				snprintf(err, errlen, "%s: %s", where, why);
				return -EINVAL;
			}
			break;
		}
		if (!cfg_listen_valid(value)) {
			snprintf(err, errlen,
				 "%s: \"%s\" is not HOST:PORT; write for "
				 "example 127.0.0.1:7410, [::1]:7410 or "
				 "0.0.0.0:0 (port 0: any free port)",
				 where, value);
			return -EINVAL;
		}
		break;
	case CFG_IDENT:
		if (!*value || strlen(value) >= H2_CONFIG_IDENT_MAX) {
			snprintf(err, errlen,
				 "%s: give an identity of 1 to %d characters "
				 "(a name used in [access] rules)",
				 where, H2_CONFIG_IDENT_MAX - 1);
			return -EINVAL;
		}
		for (const char *q = value; *q; q++)
			if (iscntrl((unsigned char)*q)) {
				snprintf(err, errlen,
					 "%s: the identity contains a control "
					 "character",
					 where);
				return -EINVAL;
			}
		break;
	case CFG_U32:
	case CFG_UNS:
		r = cfg_parse_u64(value, &v);
		if (r < 0 || v < k->min || v > k->max) {
			snprintf(err, errlen,
				 "%s: \"%s\" is not a whole number between "
				 "%" PRIu64 " and %" PRIu64,
				 where, value, k->min, k->max);
			return -EINVAL;
		}
		break;
	case CFG_SIZE:
		r = h2d_parse_size(value, &v);
		if (r == -ERANGE) {
			snprintf(err, errlen,
				 "%s: \"%s\" is too large (more "
				 "than 16 EiB)",
				 where, value);
			return -EINVAL;
		}
		if (r < 0) {
			snprintf(err, errlen,
				 "%s: \"%s\" is not a size; write a number of "
				 "bytes with an optional K, M, G or T suffix, "
				 "for example 256M",
				 where, value);
			return -EINVAL;
		}
		if (v < k->min) {
			snprintf(err, errlen,
				 "%s: must be at least %" PRIu64 " bytes",
				 where, k->min);
			return -EINVAL;
		}
		break;
	case CFG_BOOL:
		if (cfg_parse_bool(value, &b) < 0) {
			snprintf(err, errlen,
				 "%s: \"%s\" is not a boolean; "
				 "write true or false",
				 where, value);
			return -EINVAL;
		}
		break;
	case CFG_LEVEL:
		level = h2_log_level_parse(value);
		if (level < 0) {
			snprintf(err, errlen,
				 "%s: \"%s\" is not a log level; "
				 "use error, warn, info or debug",
				 where, value);
			return -EINVAL;
		}
		break;
	}

	/* Checked: store it. */
	switch (k->type) {
	case CFG_STR:
	case CFG_LISTEN:
	case CFG_LISTEN_OPT:
	case CFG_LISTEN_LOOP:
	case CFG_IDENT:
		if (cfg_set_str(slot, value) < 0) {
			snprintf(err, errlen, "%s: out of memory", where);
			return -ENOMEM;
		}
		break;
	case CFG_U32:
		*(uint32_t *)slot = (uint32_t)v;
		break;
	case CFG_UNS:
		*(unsigned *)slot = (unsigned)v;
		break;
	case CFG_SIZE:
		*(uint64_t *)slot = v;
		break;
	case CFG_BOOL:
		*(bool *)slot = b;
		break;
	case CFG_LEVEL:
		*(int *)slot = level;
		break;
	}
	return 0;
}

/* Add the access rule identity = spec, creating the rule list if needed. */
static int cfg_add_access(struct h2_config *c, const char *identity,
			  const char *spec, const char *where, char *err,
			  size_t errlen)
{
	char why[512];
	int r;

	if (!c->acl) {
		c->acl = h2_acl_new();
		if (!c->acl) {
			snprintf(err, errlen, "%s: out of memory", where);
			return -ENOMEM;
		}
	}
	r = h2_acl_add(c->acl, identity, spec, why, sizeof(why));
	/* (A long message is cut; the length is looked at only to keep
	 * -Wformat-truncation quiet at -O3.) */
	if (r < 0 && snprintf(err, errlen, "%s: %s", where, why) < 0)
		err[0] = '\0';
	return r;
}

/*
 * Add a rule given outside the file (where: "--access" or "--dev") and
 * remember it, so that a reload keeps it whatever the file says.
 */
static int cfg_add_kept_access(struct h2_config *c, const char *identity,
			       const char *spec, const char *where, char *err,
			       size_t errlen)
{
	struct h2_config_rule *rules, *r;
	int rc = cfg_add_access(c, identity, spec, where, err, errlen);

	if (rc < 0)
		return rc;
	rules = realloc(c->flag_rules,
			(c->nflag_rules + 1) * sizeof(*c->flag_rules));
	if (!rules)
		goto oom;
	c->flag_rules = rules;
	r = &rules[c->nflag_rules];
	r->identity = strdup(identity);
	r->spec = strdup(spec);
	r->where = where;
	if (!r->identity || !r->spec) {
		free(r->identity);
		free(r->spec);
		goto oom;
	}
	c->nflag_rules++;
	return 0;
oom:
	snprintf(err, errlen, "%s: out of memory", where);
	return -ENOMEM;
}

int h2_config_reload_access(const struct h2_config *c, struct h2_acl **out,
			    char *err, size_t errlen)
{
	struct h2_config fresh;
	int r = 0;

	h2_config_defaults(&fresh);
	if (c->config_path)
		r = h2_config_load(&fresh, c->config_path, err, errlen);
	for (size_t i = 0; r == 0 && i < c->nflag_rules; i++)
		r = cfg_add_access(&fresh, c->flag_rules[i].identity,
				   c->flag_rules[i].spec,
				   c->flag_rules[i].where, err, errlen);
	if (r == 0) {
		*out = fresh.acl;
		fresh.acl = NULL;
	}
	h2_config_free(&fresh);
	return r;
}

/* Cross-checks between settings, once all of them are known. */
static int cfg_check(const struct h2_config *c, const char *where, char *err,
		     size_t errlen)
{
	if (c->dirty_hard && c->dirty_hard < c->dirty_max) {
		char hard[32], max[32];

		snprintf(
		    err, errlen,
		    "%sdirty_hard (%s) is below dirty_max (%s), so writers "
		    "would be held back before dirty data starts a "
		    "flush: raise dirty_hard or leave it unset (twice "
		    "dirty_max)",
		    where, h2d_format_size(c->dirty_hard, hard, sizeof(hard)),
		    h2d_format_size(c->dirty_max, max, sizeof(max)));
		return -EINVAL;
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* The INI file.                                                          */

struct cfg_load {
	struct h2_config *c;
	const char *path;
	FILE *f;
	unsigned line;		    /* lines handed to inih so far */
	unsigned set_on[CFG_NKEYS]; /* line each key was set on, 0: not */
	int r;			    /* first error, 0 if none */
	char *err;
	size_t errlen;
};

/* Record the first error of a load (later ones are consequences). */
static void cfg_load_fail(struct cfg_load *L, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cfg_load_fail(struct cfg_load *L, int r, const char *fmt, ...)
{
	va_list ap;

	if (L->r)
		return;
	L->r = r;
	va_start(ap, fmt);
	vsnprintf(L->err, L->errlen, fmt, ap);
	va_end(ap);
}

static bool cfg_section_known(const char *name)
{
	for (size_t i = 0; i < sizeof(cfg_sections) / sizeof(cfg_sections[0]);
	     i++)
		if (strcmp(name, cfg_sections[i]) == 0)
			return true;
	return false;
}

/* If line is a section header naming an unknown section, fail L. */
static void cfg_check_section_line(struct cfg_load *L, const char *line)
{
	char name[128];
	const char *p = line, *end;
	size_t n;

	if (L->line == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3; /* UTF-8 byte order mark */
	while (isspace((unsigned char)*p))
		p++;
	if (*p != '[')
		return;
	end = strchr(++p, ']');
	if (!end)
		return; /* inih reports the syntax error */
	while (p < end && isspace((unsigned char)*p))
		p++;
	while (end > p && isspace((unsigned char)end[-1]))
		end--;
	n = (size_t)(end - p);
	if (n < sizeof(name)) {
		memcpy(name, p, n);
		name[n] = '\0';
		if (cfg_section_known(name))
			return;
	}
	cfg_load_fail(L, -EINVAL,
		      "%s:%u: unknown section [%.*s]; the sections are "
		      "[store], [server], [tls] and [access]",
		      L->path, L->line, (int)(n < 64 ? n : 64), p);
}

/*
 * inih's line reader: fgets, counting lines, refusing lines longer than
 * inih's buffer and unknown sections.  Returning NULL ends the parse.
 */
static char *cfg_reader(char *str, int num, void *stream)
{
	struct cfg_load *L = stream;
	size_t len;
	int ch;

	if (L->r || !fgets(str, num, L->f))
		return NULL;
	L->line++;
	len = strlen(str);
	if (len > 0 && str[len - 1] != '\n' && (ch = fgetc(L->f)) != EOF) {
		if (ch != '\n') {
			cfg_load_fail(L, -EINVAL,
				      "%s:%u: the line is longer than %d "
				      "characters; shorten it",
				      L->path, L->line, num - 2);
			return NULL;
		}
		/* The line fit exactly; its newline was left behind. */
	}
	cfg_check_section_line(L, str);
	return L->r ? NULL : str;
}

/* Append "a, b, c" (the keys of section) to buf. */
static void cfg_list_keys(const char *section, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < CFG_NKEYS && o < len; i++) {
		if (strcmp(cfg_keys[i].section, section) != 0)
			continue;
		o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? ", " : "",
				      cfg_keys[i].key);
	}
}

/* inih's handler: one "name = value" of one section. */
static int cfg_handler(void *user, const char *section, const char *name,
		       const char *value)
{
	struct cfg_load *L = user;
	char where[512], keys[512];
	size_t i;

	if (L->r)
		return 1; /* the first error is already recorded */
	snprintf(where, sizeof(where), "%s:%u: [%s] %s", L->path, L->line,
		 section, name);
	if (!*section) {
		cfg_load_fail(L, -EINVAL,
			      "%s:%u: \"%s\" comes before any section; put it "
			      "under [store], [server], [tls] or [access]",
			      L->path, L->line, name);
		return 1;
	}
	if (strcmp(section, "access") == 0) {
		char why[1024];
		int r;

		snprintf(where, sizeof(where), "%s:%u", L->path, L->line);
		r = cfg_add_access(L->c, name, value, where, why, sizeof(why));

		if (r < 0)
			cfg_load_fail(L, r, "%s", why);
		return 1;
	}
	if (!cfg_section_known(section)) {
		cfg_load_fail(L, -EINVAL,
			      "%s:%u: unknown section [%s]; the sections are "
			      "[store], [server], [tls] and [access]",
			      L->path, L->line, section);
		return 1;
	}
	for (i = 0; i < CFG_NKEYS; i++)
		if (strcmp(cfg_keys[i].section, section) == 0 &&
		    strcmp(cfg_keys[i].key, name) == 0)
			break;
	if (i == CFG_NKEYS) {
		cfg_list_keys(section, keys, sizeof(keys));
		cfg_load_fail(L, -EINVAL,
			      "%s:%u: unknown key \"%s\" in [%s]; the keys "
			      "there are %s",
			      L->path, L->line, name, section, keys);
		return 1;
	}
	if (L->set_on[i]) {
		/* Also what an indented continuation line looks like. */
		cfg_load_fail(L, -EINVAL,
			      "%s: already set on line %u; keep one of the two",
			      where, L->set_on[i]);
		return 1;
	}
	L->set_on[i] = L->line;
	{
		char why[1024];
		int r =
		    cfg_set(L->c, &cfg_keys[i], value, where, why, sizeof(why));

		if (r < 0)
			cfg_load_fail(L, r, "%s", why);
	}
	return 1;
}

int h2_config_load(struct h2_config *c, const char *path, char *err,
		   size_t errlen)
{
	struct cfg_load L = {
	    .c = c, .path = path, .err = err, .errlen = errlen};
	char where[1024];
	int r;

	if (!path || !*path) {
		snprintf(err, errlen, "no configuration file given");
		return -EINVAL;
	}
	L.f = fopen(path, "re");
	if (!L.f) {
		r = -errno;
		snprintf(err, errlen,
			 "cannot open the configuration file %s: "
			 "%s",
			 path, strerror(-r));
		return r;
	}
	r = ini_parse_stream(cfg_reader, &L, cfg_handler, &L);
	if (!L.r && ferror(L.f))
		cfg_load_fail(&L, -EIO, "cannot read %s: %s", path,
			      strerror(EIO));
	fclose(L.f);
	if (L.r)
		return L.r;
	if (r == -2) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	if (r != 0) {
		snprintf(err, errlen,
			 "%s:%d: syntax error; a line must be \"[section]\", "
			 "\"key = value\" or a comment starting with ; or #",
			 path, r);
		return -EINVAL;
	}
	snprintf(where, sizeof(where), "%s: ", path);
	r = cfg_check(c, where, err, errlen);
	if (r < 0)
		return r;
	if (cfg_set_str(&c->config_path, path) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Flags.                                                                 */

enum {
	OPT_HELP = 'h',
	OPT_CONFIG = 256,
	OPT_ACCESS,
	OPT_DEV,
	OPT_CHECK,
	OPT_KEY = 512, /* + index into cfg_keys */
};

/* Print h2d serve's help. */
static void cfg_usage(FILE *f)
{
	fprintf(f,
		"usage: h2d serve [--config PATH] [OPTIONS]\n"
		"       h2d serve --dev\n"
		"\n"
		"Serve the volumes of a store over TLS.  Flags override the "
		"configuration\nfile; --config is read first wherever it "
		"appears.\n"
		"\n"
		"  --config PATH              INI configuration file\n"
		"  --dev                      development setup under ./var/h2 "
		"(store, CA,\n"
		"                             certificates, admin = admin:*)\n"
		"  --device PATH              store device or image file\n"
		"  --listen HOST:PORT         address to listen on "
		"(default " CFG_DEFAULT_LISTEN ")\n"
		"  --nbd-listen HOST:PORT     NBD frontend address (default "
		CFG_DEFAULT_NBD_LISTEN ";\n"
		"                             \"\" turns it off)\n"
		"  --nbd-plain-listen HOST:PORT\n"
		"                             also serve NBD without TLS there "
		"(loopback only;\n"
		"                             default off; for benchmarks and "
		"local tools)\n"
		"  --nbd-plain-identity NAME  the identity whose access rules "
		"apply to\n"
		"                             plaintext NBD connections "
		"(required with it)\n"
		"  --metrics-listen HOST:PORT Prometheus metrics over plain "
		"HTTP (default off;\n"
		"                             no authentication: keep it on "
		"loopback)\n"
		"  --ca PATH                  CA that client certificates "
		"chain to\n"
		"  --cert PATH, --key PATH    server certificate and key\n"
		"  --allow-tls12              accept TLS 1.2 (default: 1.3 "
		"only)\n"
		"  --access ID=RIGHT:GLOB,... access rule (repeatable), e.g. "
		"alice=write:vm-*\n"
		"  --flush-interval MS        flush at least this often "
		"(default 1000)\n"
		"  --dirty-max SIZE           flush when this much is dirty "
		"(default 256M)\n"
		"  --dirty-hard SIZE          writers wait above this (default "
		"2 x dirty-max)\n"
		"  --cache-max SIZE           clean metadata kept in memory "
		"(default 512M)\n"
		"  --workers N                I/O worker threads (default 4)\n"
		"  --max-connections N        (default 1024)\n"
		"  --max-inflight N           requests read ahead per "
		"connection (default 64)\n"
		"  --max-inflight-bytes SIZE  requests in flight plus replies "
		"not yet sent,\n"
		"                             per connection (default 32M)\n"
		"  --log-level LEVEL          error, warn, info or debug "
		"(default info)\n"
		"  --ready-file PATH          write {\"listen\": ...} there "
		"once serving\n"
		"  --check-config             check the configuration, TLS "
		"files and store,\n"
		"                             then exit (0: all good)\n"
		"  -h, --help                 this help\n"
		"\n"
		"Sizes take K, M, G, T suffixes (binary).\n");
}

/* The option table: the fixed flags plus one per cfg_keys row with a flag. */
static void cfg_options(struct option *o)
{
	size_t n = 0;

	o[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
	o[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
	o[n++] = (struct option){"access", required_argument, NULL, OPT_ACCESS};
	o[n++] = (struct option){"dev", no_argument, NULL, OPT_DEV};
	o[n++] = (struct option){"check-config", no_argument, NULL, OPT_CHECK};
	for (size_t i = 0; i < CFG_NKEYS; i++) {
		if (!cfg_keys[i].flag)
			continue;
		o[n++] = (struct option){cfg_keys[i].flag,
					 cfg_keys[i].type == CFG_BOOL
					     ? no_argument
					     : required_argument,
					 NULL, OPT_KEY + (int)i};
	}
	o[n] = (struct option){NULL, 0, NULL, 0};
}

/* The flag getopt just rejected, for the error sentence. */
static const char *cfg_bad_flag(int argc, char **argv, char *buf, size_t len)
{
	if (optopt > 0 && optopt < 256) {
		snprintf(buf, len, "-%c", optopt);
		return buf;
	}
	if (optind > 0 && optind <= argc)
		return argv[optind - 1];
	return "?";
}

/* --access ID=SPEC */
static int cfg_access_flag(struct h2_config *c, const char *arg, char *err,
			   size_t errlen)
{
	const char *eq = strchr(arg, '=');
	char *id;
	int r;

	if (!eq) {
		snprintf(err, errlen,
			 "--access \"%s\": expected IDENTITY=RIGHT:PATTERN, "
			 "for example --access 'alice=write:vm-*'",
			 arg);
		return -EINVAL;
	}
	id = strndup(arg, (size_t)(eq - arg));
	if (!id) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* Same shape as the file, where inih strips the blanks. */
	{
		char *s = id, *e;

		while (isspace((unsigned char)*s))
			s++;
		e = s + strlen(s);
		while (e > s && isspace((unsigned char)e[-1]))
			*--e = '\0';
		r = cfg_add_kept_access(c, s, eq + 1, "--access", err,
					errlen);
	}
	free(id);
	return r;
}

int h2_config_from_args(struct h2_config *c, int argc, char **argv, char *err,
			size_t errlen)
{
	/* "+": stop at the first non-option, so argv is never permuted. */
	static const char optstring[] = "+:h";
	struct option opts[CFG_NKEYS + 6];
	const char *config = NULL;
	char flag[64], bad[8];
	int ch, r;

	cfg_options(opts);
	opterr = 0;

	/*
	 * Pass 1: find --config (the last one wins) and --help, and reject
	 * unknown flags, before anything is applied: the file must sit
	 * under the flags whatever their order.
	 */
	optind = 0;
	while ((ch = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
		switch (ch) {
		case OPT_HELP:
			cfg_usage(stdout);
			return 1;
		case OPT_CONFIG:
			config = optarg;
			break;
		case ':':
			snprintf(err, errlen, "%s needs a value",
				 cfg_bad_flag(argc, argv, bad, sizeof(bad)));
			return -EINVAL;
		case '?':
			snprintf(err, errlen,
				 "unknown or ambiguous option %s; "
				 "see h2d serve --help",
				 cfg_bad_flag(argc, argv, bad, sizeof(bad)));
			return -EINVAL;
		default:
			break;
		}
	}
	if (optind < argc) {
		snprintf(err, errlen,
			 "unexpected argument \"%s\"; h2d serve "
			 "takes only options (see --help)",
			 argv[optind]);
		return -EINVAL;
	}
	if (config) {
		r = h2_config_load(c, config, err, errlen);
		if (r < 0)
			return r;
	}

	/* Pass 2: everything else, in order (a repeated flag: last wins). */
	optind = 0;
	while ((ch = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
		const struct cfg_key *k;

		switch (ch) {
		case OPT_ACCESS:
			r = cfg_access_flag(c, optarg, err, errlen);
			if (r < 0)
				return r;
			break;
		case OPT_DEV:
			c->dev = true;
			break;
		case OPT_CHECK:
			c->check_only = true;
			break;
		default:
			if (ch < OPT_KEY || ch >= OPT_KEY + (int)CFG_NKEYS)
				break; /* --config, done in pass 1 */
			k = &cfg_keys[ch - OPT_KEY];
			snprintf(flag, sizeof(flag), "--%s", k->flag);
			r = cfg_set(c, k, optarg ? optarg : "true", flag, err,
				    errlen);
			if (r < 0)
				return r;
			break;
		}
	}
	optind = 0;
	r = cfg_check(c, "", err, errlen);
	if (r < 0)
		return r;
	/*
	 * Only here, once file and flags are merged (a reload reads the
	 * file alone, for its access rules): the plaintext listener has no
	 * certificates to tell clients apart, so every connection on it
	 * acts as one configured identity, which must be named.
	 */
	if (c->nbd_plain_listen && *c->nbd_plain_listen &&
	    !c->nbd_plain_identity) {
		snprintf(err, errlen,
			 "nbd_plain_listen (--nbd-plain-listen %s) needs "
			 "nbd_plain_identity (--nbd-plain-identity NAME): "
			 "the identity whose [access] rules apply to every "
			 "connection on the plaintext listener, which any "
			 "local user can open",
			 c->nbd_plain_listen);
		return -EINVAL;
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* --dev.                                                                 */

/* mkdir path (0700) unless it exists as a directory. */
static int cfg_mkdir(const char *path, char *err, size_t errlen)
{
	struct stat stt;
	int r;

	if (mkdir(path, 0700) == 0 || errno == EEXIST) {
		if (stat(path, &stt) == 0 && S_ISDIR(stt.st_mode))
			return 0;
		snprintf(err, errlen,
			 "%s exists and is not a directory; move "
			 "it away or run --dev elsewhere",
			 path);
		return -ENOTDIR;
	}
	r = -errno;
	snprintf(err, errlen,
		 "cannot create %s: %s; run h2d serve --dev from "
		 "a directory you can write to",
		 path, strerror(-r));
	return r;
}

/*
 * Create the development store: a sparse image formatted under a
 * temporary name and renamed into place, so an interrupted run never
 * leaves an unformatted store.img behind.
 */
static int cfg_dev_store(const char *path, char *err, size_t errlen)
{
	struct h2_format_opts fo = {.force = true};
	struct h2_dev *dev = NULL;
	char tmp[256];
	int r;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	r = h2_dev_create_file(tmp, CFG_DEV_SIZE, true, &dev);
	if (r < 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp,
			 h2_core_errmsg());
		return r;
	}
	r = h2_store_format(dev, &fo);
	if (r < 0) {
		snprintf(err, errlen, "cannot format %s: %s", tmp,
			 h2_core_errmsg());
		h2_dev_close(dev);
		unlink(tmp);
		return r;
	}
	h2_dev_close(dev);
	if (rename(tmp, path) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path,
			 strerror(-r));
		unlink(tmp);
		return r;
	}
	h2_log_info("dev", "created a 4 GiB development store device=%s", path);
	return 0;
}

int h2_config_apply_dev(struct h2_config *c, char *err, size_t errlen)
{
	struct stat stt;
	char why[768];
	int r;

	r = cfg_mkdir(CFG_DEV_ROOT, err, errlen);
	if (r < 0)
		return r;
	r = cfg_mkdir(CFG_DEV_DIR, err, errlen);
	if (r < 0)
		return r;

	if (!c->device) {
		if (stat(CFG_DEV_DEVICE, &stt) < 0) {
			if (errno != ENOENT) {
				r = -errno;
				snprintf(err, errlen, "cannot stat %s: %s",
					 CFG_DEV_DEVICE, strerror(-r));
				return r;
			}
			r = cfg_dev_store(CFG_DEV_DEVICE, err, errlen);
			if (r < 0)
				return r;
		}
		if (cfg_set_str(&c->device, CFG_DEV_DEVICE) < 0)
			goto oom;
	}

	if (!c->tls_ca || !c->tls_cert || !c->tls_key) {
		r = h2_tls_dev_certs(CFG_DEV_TLS, CFG_DEV_IDENTITY, why,
				     sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "development certificates: %s",
				 why);
			return r;
		}
		if ((!c->tls_ca &&
		     cfg_set_str(&c->tls_ca, CFG_DEV_TLS "/ca.crt") < 0) ||
		    (!c->tls_cert && cfg_set_str(&c->tls_cert, CFG_DEV_TLS
						 "/server.crt") < 0) ||
		    (!c->tls_key &&
		     cfg_set_str(&c->tls_key, CFG_DEV_TLS "/server.key") < 0))
			goto oom;
	}

	/* The development client certificate always administers everything,
	 * even when --access adds rules for other identities. */
	r = cfg_add_kept_access(c, CFG_DEV_IDENTITY, "admin:*", "--dev", err,
				errlen);
	if (r < 0)
		return r;
	if (!c->listen && cfg_set_str(&c->listen, CFG_DEFAULT_LISTEN) < 0)
		goto oom;
	if (!c->nbd_listen &&
	    cfg_set_str(&c->nbd_listen, CFG_DEFAULT_NBD_LISTEN) < 0)
		goto oom;
	return 0;

oom:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}
