/*
 * What an operator relies on: systemd readiness, the handshake timeout,
 * the connection limit, a config file.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct h2t_srv srv;

static void teardown(void)
{
	h2t_cleanup(&srv);
	unsetenv("NOTIFY_SOCKET");
}

/* A plain TCP connection to the server (no TLS). */
static int tcp_connect(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {30, 0}; /* guard against hangs only */
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	sa.sin_port = htons((uint16_t)atoi(strrchr(srv.addr, ':') + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

Test(ops, notifies_systemd_when_ready_and_stopping, .fini = teardown)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {30, 0};
	char buf[256];
	ssize_t n;
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

	cr_assert_geq(fd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/h2-notify-%d",
		 (int)getpid());
	unlink(sa.sun_path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	h2t_start(&srv, NULL);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	cr_assert_gt(n, 0, "no notification from h2d");
	buf[n] = 0;
	cr_assert(strstr(buf, "READY=1"), "got \"%s\"", buf);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	cr_assert_gt(n, 0);
	buf[n] = 0;
	cr_assert(strstr(buf, "STOPPING=1"), "got \"%s\"", buf);
	close(fd);
	unlink(sa.sun_path);
}

Test(ops, handshake_timeout_and_connection_limit_from_config_file,
     .fini = teardown)
{
	static const char *const extra[] = {"--config", "h2d.conf", NULL};
	char conf[256], buf[16];
	h2_client *c;
	double t0, waited;
	FILE *f;
	int fd, fd2;

	/* The config must exist before h2d starts in its directory. */
	memset(&srv, 0, sizeof(srv));
	snprintf(srv.dir, sizeof(srv.dir), "/tmp/h2-it-XXXXXX");
	cr_assert_not_null(mkdtemp(srv.dir));
	snprintf(conf, sizeof(conf), "%s/h2d.conf", srv.dir);
	f = fopen(conf, "w");
	cr_assert_not_null(f);
	fprintf(f, "[server]\nhandshake_timeout_ms = 300\n"
		   "max_connections = 2\n");
	fclose(f);
	srv.extra[0] = extra[0];
	srv.extra[1] = extra[1];
	h2t_restart(&srv);

	/* A client that never starts TLS is dropped after the timeout. */
	fd = tcp_connect();
	t0 = now_s();
	cr_assert_eq(recv(fd, buf, sizeof(buf), 0), 0, "expected EOF");
	waited = now_s() - t0;
	cr_assert_geq(waited, 0.25, "closed after %.3f s", waited);
	close(fd);

	/* Two connections fill the limit: a third is closed at once, and
	 * a slot frees when one leaves. */
	fd = tcp_connect();
	fd2 = tcp_connect();
	{
		int fd3 = tcp_connect();

		cr_assert_eq(recv(fd3, buf, sizeof(buf), 0), 0);
		close(fd3);
	}
	close(fd);
	close(fd2);
	/* Wait until the server has noticed both closes: connecting works
	 * again once it has. */
	for (int i = 0; i < 200; i++) {
		int r = h2t_connect_with(&srv, h2t_path(&srv,
							"var/h2/tls/client.crt"),
					 h2t_path(&srv, "var/h2/tls/client.key"),
					 &c);

		if (r == 0) {
			h2_disconnect(c);
			return;
		}
	}
	cr_assert_fail("the server never accepted a connection again");
}

/* Run h2d serve ARGS... --check-config in the server's directory. */
static int check_config(const char *device)
{
	int ws;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (chdir(srv.dir) != 0)
			_exit(126);
		if (device)
			execl(H2D_PATH, H2D_PATH, "serve", "--dev", "--device",
			      device, "--check-config", (char *)NULL);
		else
			execl(H2D_PATH, H2D_PATH, "serve", "--dev",
			      "--check-config", (char *)NULL);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

Test(ops, check_config_validates_tls_files_and_store, .fini = teardown)
{
	FILE *f;

	h2t_start(&srv, NULL);
	cr_assert_eq(check_config(NULL), 0);
	f = fopen(h2t_path(&srv, "not-a-store.img"), "w");
	cr_assert_not_null(f);
	cr_assert_eq(ftruncate(fileno(f), 64 << 20), 0);
	fclose(f);
	cr_assert_eq(check_config("not-a-store.img"), 1);
	cr_assert_eq(check_config("missing.img"), 1);
}
