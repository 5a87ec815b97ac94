/*
 * h2d.h - the h2d subcommands.  Each one is a file (cmd_<name>.c) with an
 * entry point that takes the arguments after "h2d" (argv[0] is the
 * subcommand's name), prints its own messages, and returns an exit code
 * (enum h2d_exit in cli.h).  h2d.c dispatches by name.
 */
#ifndef H2D_H
#define H2D_H

/* h2d format --device PATH [--size SIZE] [--force] */
int h2d_cmd_format(int argc, char **argv);

/* h2d check --device PATH [--json] */
int h2d_cmd_check(int argc, char **argv);

/* h2d serve [--config FILE] [--dev] [flags] */
int h2d_cmd_serve(int argc, char **argv);

#endif /* H2D_H */
