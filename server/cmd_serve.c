/*
 * cmd_serve.c - h2d serve: open the store and serve it until told to stop.
 *
 * Startup order: configuration (file, flags, --dev defaults), store open,
 * listener bound, then the ready file and systemd's READY=1, so anything
 * waiting on either can connect at once.  Shutdown (SIGTERM/SIGINT):
 * the server finishes in-flight requests, then the store's close runs a
 * final flush; exit status 0 only if that flush succeeded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <systemd/sd-daemon.h>

#include "cli.h"
#include "config.h"
#include "dev.h"
#include "h2core.h"
#include "h2d.h"
#include "log.h"
#include "metrics_http.h"
#include "nbd.h"
#include "server.h"
#include "tls.h"

/* Write the ready file atomically (temp file + rename); nbd_listen and
 * nbd_plain and metrics_listen are NULL when that listener is off. */
static int write_ready_file(const char *path, const char *listen,
			    const char *nbd_listen, const char *nbd_plain,
			    const char *metrics_listen)
{
	char tmp[4096], *text;
	cJSON *o = cJSON_CreateObject();
	FILE *f;
	int r = 0;

	if (!o)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "listen", listen);
	if (nbd_listen)
		cJSON_AddStringToObject(o, "nbd_listen", nbd_listen);
	if (nbd_plain)
		cJSON_AddStringToObject(o, "nbd_plain_listen", nbd_plain);
	if (metrics_listen)
		cJSON_AddStringToObject(o, "metrics_listen", metrics_listen);
	cJSON_AddNumberToObject(o, "pid", (double)getpid());
	cJSON_AddStringToObject(o, "version", H2_CORE_VERSION);
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!text)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	f = fopen(tmp, "w");
	if (!f) {
		r = -errno;
	} else {
		fprintf(f, "%s\n", text);
		if (fclose(f) != 0)
			r = -errno;
		else if (rename(tmp, path) != 0)
			r = -errno;
		if (r < 0)
			unlink(tmp);
	}
	free(text);
	return r;
}

/* Descriptors h2d needs besides one per connection: the store, the
 * listeners, the loop's and the pool's, a lingering close's duplicate. */
#define FD_RESERVE 64

/*
 * Raise the soft limit on open files to the hard one.  The soft limit is
 * what a login shell or systemd (1024) gives by default, for programs
 * that use select(); h2d uses epoll, and one descriptor per connection,
 * so the soft limit would refuse clients long before max_connections.
 * The hard limit is the administrator's (LimitNOFILE=), and is kept.
 */
static void raise_fd_limit(const struct h2_config *cfg)
{
	struct rlimit rl;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	was = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			h2_log_warn("serve", "cannot raise the open files limit "
					     "from %llu to %llu: %s",
				    (unsigned long long)was,
				    (unsigned long long)rl.rlim_max,
				    strerror(errno));
			rl.rlim_cur = was;
		}
	}
	if (rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < (rlim_t)cfg->max_connections + FD_RESERVE)
		h2_log_warn("serve", "open files limit %llu is below "
				     "max_connections (%u) + %d: connections "
				     "past it are refused (raise LimitNOFILE= "
				     "or lower max_connections)",
			    (unsigned long long)rl.rlim_cur,
			    cfg->max_connections, FD_RESERVE);
	else if (was != rl.rlim_cur)
		h2_log_debug("serve", "open files limit raised from %llu to "
				      "%llu",
			     (unsigned long long)was,
			     (unsigned long long)rl.rlim_cur);
}

/*
 * --check-config: what would stop "serve" from starting, without starting
 * it: the TLS files load and match, the device opens and holds an h2
 * store.  For ExecStartPre= and for operators before a restart.
 */
static int check_config(const struct h2_config *cfg)
{
	struct h2_tls_files files = {cfg->tls_ca, cfg->tls_cert, cfg->tls_key};
	struct h2_dev *dev = NULL;
	char err[1024];
	SSL_CTX *ctx;
	bool ok;
	int r;

	ctx = h2_tls_server_ctx(&files, cfg->allow_tls12, err, sizeof(err));
	if (!ctx) {
		fprintf(stderr, "h2d serve: %s\n", err);
		return H2D_EXIT_FAIL;
	}
	SSL_CTX_free(ctx);
	r = h2_dev_open_file(cfg->device, H2_DEV_RDONLY, &dev);
	if (r < 0) {
		fprintf(stderr, "h2d serve: cannot open device %s: %s\n",
			cfg->device, strerror(-r));
		return H2D_EXIT_FAIL;
	}
	ok = h2_store_probe(dev);
	h2_dev_close(dev);
	if (!ok) {
		fprintf(stderr,
			"h2d serve: %s holds no h2 store; format it with "
			"\"h2d format --device %s\"\n",
			cfg->device, cfg->device);
		return H2D_EXIT_FAIL;
	}
	printf("configuration OK: device=%s listen=%s\n", cfg->device,
	       cfg->listen);
	return H2D_EXIT_OK;
}

int h2d_cmd_serve(int argc, char **argv)
{
	struct h2_config cfg;
	struct h2_store_opts so = {0};
	struct h2_server *srv = NULL;
	struct h2_store *st = NULL;
	struct h2_dev *dev = NULL;
	char err[1024];
	int r, rc = H2D_EXIT_FAIL;

	h2_config_defaults(&cfg);
	r = h2_config_from_args(&cfg, argc, argv, err, sizeof(err));
	if (r == 1) {
		h2_config_free(&cfg);
		return H2D_EXIT_OK;
	}
	if (r < 0) {
		fprintf(stderr, "h2d serve: %s\n", err);
		h2_config_free(&cfg);
		return H2D_EXIT_USAGE;
	}
	h2_log_set_level(cfg.log_level);
	if (cfg.dev && h2_config_apply_dev(&cfg, err, sizeof(err)) < 0) {
		h2_log_error("serve", "--dev setup failed: %s", err);
		goto out;
	}
	if (!cfg.device || !cfg.tls_ca || !cfg.tls_cert || !cfg.tls_key) {
		fprintf(stderr, "h2d serve: %s is not set; give it in the "
				"config file or as a flag (or use --dev for a "
				"development setup under ./var)\n",
			!cfg.device ? "--device" : "the TLS files (--ca, "
						   "--cert, --key)");
		rc = H2D_EXIT_USAGE;
		goto out;
	}
	if (cfg.check_only) {
		rc = check_config(&cfg);
		goto out;
	}
	raise_fd_limit(&cfg);
	r = h2_dev_open_file(cfg.device, 0, &dev);
	if (r < 0) {
		h2_log_error("serve", "cannot open device %s: %s", cfg.device,
			     strerror(-r));
		goto out;
	}
	so.flush_interval_ms = cfg.flush_interval_ms;
	so.dirty_max = cfg.dirty_max;
	so.dirty_hard = cfg.dirty_hard;
	so.cache_max = cfg.cache_max;
	r = h2_store_open(dev, &so, &st);
	dev = NULL; /* the store owns it now, even on failure */
	if (r < 0) {
		h2_log_error("serve", "cannot open the store on %s: %s (format "
				      "it with \"h2d format --device %s\")",
			     cfg.device, h2_core_errmsg(), cfg.device);
		goto out;
	}
	r = h2_server_new(&cfg, st, &srv, err, sizeof(err));
	if (r < 0) {
		h2_log_error("serve", "%s", err);
		goto out;
	}
	h2_log_info("serve", "h2d %s serving device=%s listen=%s nbd_listen=%s"
			     "%s%s metrics_listen=%s workers=%u tls=%s",
		    H2_CORE_VERSION, cfg.device, h2_server_listen_addr(srv),
		    h2_nbdsrv_listen_addr(srv) ? h2_nbdsrv_listen_addr(srv)
					       : "off",
		    h2_nbdsrv_plain_addr(srv) ? " nbd_plain_listen=" : "",
		    h2_nbdsrv_plain_addr(srv) ? h2_nbdsrv_plain_addr(srv) : "",
		    h2_metrics_http_addr(srv) ? h2_metrics_http_addr(srv)
					      : "off",
		    cfg.workers, cfg.allow_tls12 ? "1.2+" : "1.3");
	if (cfg.ready_file) {
		r = write_ready_file(cfg.ready_file,
				     h2_server_listen_addr(srv),
				     h2_nbdsrv_listen_addr(srv),
				     h2_nbdsrv_plain_addr(srv),
				     h2_metrics_http_addr(srv));
		if (r < 0) {
			h2_log_error("serve", "cannot write ready file %s: %s",
				     cfg.ready_file, strerror(-r));
			goto out;
		}
	}
	if (cfg.dev) {
		char cwd[2048];

		if (!getcwd(cwd, sizeof(cwd)))
			snprintf(cwd, sizeof(cwd), ".");
		fprintf(stderr,
			"\nDevelopment server ready. In another shell:\n"
			"  export H2_SERVER=%s\n"
			"  export H2_TLS_DIR=%s/var/h2/tls\n"
			"  h2ctl volume create demo 1G\n\n",
			h2_server_listen_addr(srv), cwd);
	}
	sd_notify(0, "READY=1");
	h2_server_run(srv);
	sd_notify(0, "STOPPING=1");
	h2_server_free(srv);
	srv = NULL;
	r = h2_store_close(st);
	st = NULL;
	if (r < 0) {
		h2_log_error("serve", "final flush failed: %s",
			     h2_core_errmsg());
		goto out;
	}
	h2_log_info("serve", "stopped cleanly; everything acknowledged is "
			     "durable");
	rc = H2D_EXIT_OK;
out:
	h2_server_free(srv);
	if (st)
		h2_store_close(st);
	h2_dev_close(dev);
	h2_config_free(&cfg);
	return rc;
}
