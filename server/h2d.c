/*
 * h2d.c - the h2 daemon's front door: picks the subcommand.
 *
 * Every subcommand lives in its own file (cmd_format.c, cmd_check.c, ...)
 * and is one row of the table below; adding one is adding a row.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "h2core.h"
#include "h2d.h"

struct h2d_cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct h2d_cmd cmds[] = {
    {"format", h2d_cmd_format, "write a new, empty store onto a device"},
    {"check", h2d_cmd_check, "verify a store offline (read only)"},
    {"serve", h2d_cmd_serve, "serve volumes over TLS (--dev: local setup)"},
};

/* Print the list of subcommands. */
static void usage(FILE *f)
{
	fprintf(f, "usage: h2d COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(f, "\nRun \"h2d COMMAND --help\" for a command's options.\n");
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : NULL;

	if (!name) {
		usage(stderr);
		return H2D_EXIT_USAGE;
	}
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 ||
	    strcmp(name, "help") == 0) {
		usage(stdout);
		return H2D_EXIT_OK;
	}
	if (strcmp(name, "--version") == 0) {
		printf("h2d %s\n", H2_CORE_VERSION);
		return H2D_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(name, cmds[i].name) == 0)
			return cmds[i].run(argc - 1, argv + 1);
	fprintf(stderr, "h2d: unknown command \"%s\"\n\n", name);
	usage(stderr);
	return H2D_EXIT_USAGE;
}
