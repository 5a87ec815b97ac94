/*
 * fuzz_main.c - the plain driver of a fuzz harness (see fuzz.h), for
 * builds without libFuzzer: gcc in CI, and the ASan+UBSan build.
 *
 *   fuzz_NAME_run [-n MUTANTS] [-s SEED] [-x INDEX] [-w DIR] PATH...
 *
 * Every file in PATH (a file, or a directory: its files, by name) runs
 * as it is; then MUTANTS inputs (default 2000) made from those files by
 * libFuzzer's kind of mutations (bit flips, interesting integers, byte
 * runs inserted, erased or copied, splices of two files), from a fixed
 * seed, so every run and every host sees the same inputs.  -x INDEX
 * writes mutant INDEX to ./mutant-INDEX instead of running anything
 * (to replay a failure under a debugger or libFuzzer).  -w DIR writes
 * the harness's own seeds (fuzz_seeds) into DIR and exits.
 *
 * Exit status: 0 when every input ran and fuzz_report (if the harness
 * has one) is satisfied; a crash is a crash, reported by the sanitizers
 * or the harness's FUZZ_CHECK, after a line naming the input.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

/* Optional harness entry points and a sanitizer hook. */
#pragma weak LLVMFuzzerInitialize
#pragma weak fuzz_report
#pragma weak fuzz_seeds
void __sanitizer_set_death_callback(void (*cb)(void));
#pragma weak __sanitizer_set_death_callback

#define FUZZ_MAX_INPUT (1u << 20) /* mutants never grow past this */

struct input {
	char *name;
	uint8_t *data;
	size_t len;
};

static struct input *inputs;
static size_t ninputs;

/* What is running, for the crash message (set before each input). */
static char current[512];

static void say_current(void)
{
	static const char pre[] = "fuzz_main: crashed on input: ";
	ssize_t r;

	r = write(2, pre, sizeof(pre) - 1);
	r = write(2, current, strlen(current));
	r = write(2, "\n", 1);
	(void)r;
}

static void on_signal(int sig)
{
	say_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fprintf(stderr, "fuzz_main: out of memory\n");
		exit(2);
	}
	return p;
}

static void add_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	struct input *in;
	long n;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) < 0) {
		fprintf(stderr, "fuzz_main: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	inputs = realloc(inputs, (ninputs + 1) * sizeof(*inputs));
	if (!inputs)
		exit(2);
	in = &inputs[ninputs++];
	in->name = strdup(path);
	in->len = (size_t)n;
	in->data = xmalloc(in->len);
	if (!in->name || fread(in->data, 1, in->len, f) != in->len) {
		fprintf(stderr, "fuzz_main: %s: short read\n", path);
		exit(2);
	}
	fclose(f);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A file, or every regular file of a directory in name order. */
static void add_path(const char *path)
{
	struct stat sb;
	char **names = NULL;
	size_t n = 0;
	struct dirent *e;
	DIR *d;

	if (stat(path, &sb) < 0) {
		fprintf(stderr, "fuzz_main: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	if (!S_ISDIR(sb.st_mode)) {
		add_file(path);
		return;
	}
	d = opendir(path);
	if (!d)
		exit(2);
	while ((e = readdir(d)) != NULL) {
		char *full;

		if (e->d_name[0] == '.')
			continue;
		full = xmalloc(strlen(path) + strlen(e->d_name) + 2);
		sprintf(full, "%s/%s", path, e->d_name);
		if (stat(full, &sb) < 0 || !S_ISREG(sb.st_mode)) {
			free(full);
			continue;
		}
		names = realloc(names, (n + 1) * sizeof(*names));
		if (!names)
			exit(2);
		names[n++] = full;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n; i++) {
		add_file(names[i]);
		free(names[i]);
	}
	free(names);
}

/* ---------------------------------------------------------------------- */
/* Mutations (splitmix64 from the seed: the same on every host).          */

static uint64_t rng;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A number in [0, n); n > 0. */
static size_t below(size_t n)
{
	return (size_t)(rnd() % n);
}

static const uint64_t interesting[] = {
    0,		1,	     2,
    0x7f,	0x80,	     0xff,
    0x100,	0x1000,	     0x7fff,
    0x8000,	0xffff,	     0x10000,
    0x7fffffff, 0x80000000u, 0xffffffffu,
    1ull << 32, 1ull << 40,  1ull << 50,
    1ull << 63, UINT64_MAX,  UINT64_MAX - 1,
};
#define NINTERESTING (sizeof(interesting) / sizeof(interesting[0]))

/* Write the low `width` bytes of v at p, in either byte order. */
static void put_int(uint8_t *p, unsigned width, uint64_t v, bool big)
{
	for (unsigned i = 0; i < width; i++)
		p[big ? width - 1 - i : i] = (uint8_t)(v >> (8 * i));
}

/* One mutation of buf[0..*len), cap bytes available. */
static void mutate_once(uint8_t *buf, size_t *len, size_t cap)
{
	size_t n = *len, pos, k;
	const struct input *o;

	switch (below(9)) {
	case 0: /* flip a bit */
		if (n)
			buf[below(n)] ^= (uint8_t)(1u << below(8));
		break;
	case 1: /* a random byte */
		if (n)
			buf[below(n)] = (uint8_t)rnd();
		break;
	case 2: { /* an interesting integer of 1, 2, 4 or 8 bytes */
		unsigned width = 1u << below(4);
		uint64_t v = interesting[below(NINTERESTING)];

		if (below(4) == 0)
			v += below(5) - 2; /* off by a little */
		if (n >= width)
			put_int(buf + below(n - width + 1), width, v,
				below(2) == 0);
		break;
	}
	case 3: /* insert random bytes */
		k = 1 + below(16);
		if (n + k > cap)
			break;
		pos = below(n + 1);
		memmove(buf + pos + k, buf + pos, n - pos);
		for (size_t i = 0; i < k; i++)
			buf[pos + i] = (uint8_t)rnd();
		*len = n + k;
		break;
	case 4: /* erase a run */
		if (!n)
			break;
		pos = below(n);
		k = 1 + below(n - pos < 64 ? n - pos : 64);
		memmove(buf + pos, buf + pos + k, n - pos - k);
		*len = n - k;
		break;
	case 5: /* copy a run elsewhere in the input */
		if (n < 2)
			break;
		pos = below(n);
		k = 1 + below(n - pos < 64 ? n - pos : 64);
		memmove(buf + below(n - k + 1), buf + pos, k);
		break;
	case 6: /* truncate */
		*len = below(n + 1);
		break;
	case 7: /* this input's head, another's tail */
		o = &inputs[below(ninputs)];
		pos = below(n + 1);
		k = o->len ? below(o->len) : 0;
		if (pos + (o->len - k) <= cap) {
			memcpy(buf + pos, o->data + k, o->len - k);
			*len = pos + (o->len - k);
		}
		break;
	default: /* a run of one byte value */
		if (!n)
			break;
		pos = below(n);
		k = 1 + below(n - pos < 32 ? n - pos : 32);
		memset(buf + pos, below(2) ? 0 : 0xff, k);
		break;
	}
}

/* Mutant number i: depends only on the seed, i and the corpus. */
static size_t make_mutant(uint64_t seed, size_t i, uint8_t *buf, size_t cap)
{
	const struct input *in;
	size_t len, rounds;

	rng = seed ^ (0x51ed270b0a2c3d4full * (i + 1));
	in = &inputs[below(ninputs)];
	len = in->len < cap ? in->len : cap;
	memcpy(buf, in->data, len);
	rounds = 1 + below(4);
	while (rounds--)
		mutate_once(buf, &len, cap);
	snprintf(current, sizeof(current), "mutant %zu of %s (-x %zu)", i,
		 in->name, i);
	return len;
}

/* ---------------------------------------------------------------------- */

static void write_seed(void *arg, const char *name, const void *data,
		       size_t len)
{
	const char *dir = arg;
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "fuzz_main: %s: %s\n", path, strerror(errno));
		exit(2);
	}
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [-n MUTANTS] [-s SEED] [-x INDEX] [-w DIR] "
		"PATH...\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	size_t mutants = 2000, only = SIZE_MAX, cap = FUZZ_MAX_INPUT;
	uint64_t seed = 1;
	const char *seed_dir = NULL;
	struct timespec t0, t1;
	uint8_t *buf;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "n:s:x:w:")) != -1) {
		switch (opt) {
		case 'n':
			mutants = strtoull(optarg, NULL, 0);
			break;
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'x':
			only = strtoull(optarg, NULL, 0);
			break;
		case 'w':
			seed_dir = optarg;
			break;
		default:
			usage(argv[0]);
		}
	}
	if (seed_dir) {
		if (!fuzz_seeds) {
			fprintf(stderr, "%s: this harness has no seeds\n",
				argv[0]);
			return 2;
		}
		fuzz_seeds(write_seed, (void *)seed_dir);
		return 0;
	}
	if (optind >= argc)
		usage(argv[0]);
	for (int i = optind; i < argc; i++)
		add_path(argv[i]);
	if (ninputs == 0) {
		fprintf(stderr, "%s: no inputs\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < ninputs; i++)
		if (inputs[i].len > cap)
			cap = inputs[i].len;
	buf = xmalloc(cap);
	if (only != SIZE_MAX) {
		size_t len = make_mutant(seed, only, buf, cap);
		char name[64];

		snprintf(name, sizeof(name), "mutant-%zu", only);
		write_seed(".", name, buf, len);
		printf("wrote %s (%zu bytes): %s\n", name, len, current);
		return 0;
	}

	signal(SIGABRT, on_signal);
	signal(SIGSEGV, on_signal);
	signal(SIGBUS, on_signal);
	signal(SIGFPE, on_signal);
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(say_current);
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Each input runs from a buffer of exactly its size, so that
	 * ASan sees a read past its end. */
	for (size_t i = 0; i < ninputs; i++) {
		uint8_t *exact = xmalloc(inputs[i].len);

		snprintf(current, sizeof(current), "%s", inputs[i].name);
		memcpy(exact, inputs[i].data, inputs[i].len);
		LLVMFuzzerTestOneInput(exact, inputs[i].len);
		free(exact);
	}
	for (size_t i = 0; i < mutants; i++) {
		size_t len = make_mutant(seed, i, buf, cap);
		uint8_t *exact = xmalloc(len);

		memcpy(exact, buf, len);
		LLVMFuzzerTestOneInput(exact, len);
		free(exact);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	snprintf(current, sizeof(current), "(report)");
	printf("%s: %zu corpus inputs and %zu mutants (seed %llu) in %.1f s\n",
	       argv[0], ninputs, mutants, (unsigned long long)seed,
	       (double)(t1.tv_sec - t0.tv_sec) +
		   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	if (fuzz_report)
		rc = fuzz_report(stdout);
	if (rc)
		printf("%s: the inputs did not reach what they should\n",
		       argv[0]);
	free(buf);
	for (size_t i = 0; i < ninputs; i++) {
		free(inputs[i].name);
		free(inputs[i].data);
	}
	free(inputs);
	return rc ? 1 : 0;
}
