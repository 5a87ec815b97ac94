/*
 * fuzz.h - what a fuzz harness in tests/fuzz exports, for the two
 * programs each one is linked into:
 *
 *   fuzz_NAME      libFuzzer (clang, -fsanitize=fuzzer,address,undefined):
 *                  calls LLVMFuzzerTestOneInput with inputs it mutates;
 *   fuzz_NAME_run  fuzz_main.c (any compiler, registered with ctest):
 *                  runs the committed corpus tests/fuzz/corpus/NAME and a
 *                  fixed-seed set of mutants of it, then asks the harness
 *                  (fuzz_report) whether the inputs reached the code
 *                  they are meant to reach.
 *
 * A harness traps (FUZZ_CHECK, abort) on anything that must not happen;
 * the sanitizers catch the rest.
 */
#ifndef H2_FUZZ_H
#define H2_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

/* Run one input.  Always returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Optional: once per process, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * Optional, fuzz_main only: print what the inputs reached to f and
 * return 0 if it is what the corpus is meant to reach (non-zero fails
 * the run: a harness that silently stopped looking).
 */
int fuzz_report(FILE *f);

/* Receives one seed: a short name (file name) and its bytes. */
typedef void (*fuzz_seed_fn)(void *arg, const char *name, const void *data,
			     size_t len);

/*
 * Optional, fuzz_main -w DIR only: call emit for each seed the harness
 * can build (the files of tests/fuzz/corpus/NAME are made this way).
 */
void fuzz_seeds(fuzz_seed_fn emit, void *arg);

#endif /* H2_FUZZ_H */
