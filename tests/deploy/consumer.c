/*
 * consumer.c - a program built the way a user of the installed
 * libh2client builds one: only <h2client.h> and the flags
 * "pkg-config --cflags --libs h2client" give (test_install.sh compiles it
 * twice, against the shared and the static library).
 *
 *   consumer closed CA CERT KEY       connect to a port nobody listens on:
 *                                     must fail with H2_ECONNECT
 *   consumer connect ADDR CA CERT KEY connect to a real h2d: must succeed;
 *                                     prints the identity it was given
 *
 * Exit status 0 when the expectation holds, 1 otherwise.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2client.h>

/*
 * A port on 127.0.0.1 that refuses connections: bound (so nobody else can
 * take it while we hold fd) but never listening.  0 on failure.
 */
static unsigned closed_port(int *fd)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	*fd = socket(AF_INET, SOCK_STREAM, 0);
	if (*fd < 0 || bind(*fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(*fd, (struct sockaddr *)&sa, &len) < 0) {
		perror("consumer: socket");
		return 0;
	}
	return ntohs(sa.sin_port);
}

/* Expect H2_ECONNECT from a server address that refuses connections. */
static int expect_refused(const char *ca, const char *cert, const char *key)
{
	h2_client_opts o = {.ca_file = ca,
			    .cert_file = cert,
			    .key_file = key,
			    .connect_timeout_ms = 5000};
	h2_client *c = NULL;
	char addr[64];
	unsigned port;
	int fd = -1, r;

	port = closed_port(&fd);
	if (port == 0)
		return 1;
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	o.server = addr;
	r = h2_connect(&o, &c);
	close(fd);
	printf("h2_connect(%s) = %d: %s (%s)\n", addr, r, h2_strerror(r),
	       h2_last_error());
	if (r != H2_ECONNECT) {
		fprintf(stderr, "consumer: expected H2_ECONNECT (%d)\n",
			H2_ECONNECT);
		h2_disconnect(c);
		return 1;
	}
	return 0;
}

/* Expect a connection to a real server; print our identity. */
static int expect_connected(const char *addr, const char *ca, const char *cert,
			    const char *key)
{
	h2_client_opts o = {.server = addr,
			    .ca_file = ca,
			    .cert_file = cert,
			    .key_file = key,
			    .client_name = "consumer"};
	h2_client *c = NULL;
	int r;

	r = h2_connect(&o, &c);
	if (r < 0) {
		fprintf(stderr, "consumer: h2_connect(%s): %s (%s)\n", addr,
			h2_strerror(r), h2_last_error());
		return 1;
	}
	printf("identity=%s\n", h2_client_identity(c));
	h2_disconnect(c);
	return 0;
}

int main(int argc, char **argv)
{
	/* The header's version and the library's names must agree. */
	if (strcmp(H2_CLIENT_VERSION, "") == 0 ||
	    strlen(h2_strerror(H2_ECONNECT)) == 0) {
		fprintf(stderr, "consumer: empty version or error name\n");
		return 1;
	}
	if (argc == 5 && strcmp(argv[1], "closed") == 0)
		return expect_refused(argv[2], argv[3], argv[4]);
	if (argc == 6 && strcmp(argv[1], "connect") == 0)
		return expect_connected(argv[2], argv[3], argv[4], argv[5]);
	fprintf(stderr, "usage: consumer closed CA CERT KEY | "
			"consumer connect ADDR CA CERT KEY\n");
	return 2;
}
