/*
 * notify_listen.c - stand in for systemd's notification socket, so a test
 * can see what h2d tells systemd under Type=notify.
 *
 *   notify_listen SOCKET OUT
 *
 * Binds an AF_UNIX datagram socket at SOCKET (the path to give h2d as
 * $NOTIFY_SOCKET), creates OUT, then appends every message received to
 * OUT, one per line, until a message holds "STOPPING=1" or nothing has
 * come for 120 s.  OUT exists as soon as the socket is bound, so a test
 * can wait for the file instead of sleeping.  Exit status 0 after
 * STOPPING=1, 1 on a timeout or an error.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NOTIFY_TIMEOUT_MS 120000

int main(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char buf[4096];
	FILE *out = NULL;
	int fd, rc = 1;

	if (argc != 3 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "usage: notify_listen SOCKET OUT\n");
		return 2;
	}
	memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
	unlink(argv[1]);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("notify_listen: socket");
		goto out;
	}
	out = fopen(argv[2], "w");
	if (!out) {
		perror("notify_listen: output");
		goto out;
	}
	fflush(out);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, NOTIFY_TIMEOUT_MS) <= 0) {
			fprintf(stderr, "notify_listen: nothing for %d ms\n",
				NOTIFY_TIMEOUT_MS);
			goto out;
		}
		n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n < 0) {
			perror("notify_listen: recv");
			goto out;
		}
		buf[n] = '\0';
		fprintf(out, "%s\n", buf);
		fflush(out);
		if (strstr(buf, "STOPPING=1")) {
			rc = 0;
			goto out;
		}
	}
out:
	if (out)
		fclose(out);
	if (fd >= 0)
		close(fd);
	unlink(argv[1]);
	return rc;
}
