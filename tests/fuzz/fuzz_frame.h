/*
 * fuzz_frame.h - the frame-decoder fuzz harness, shared by the libFuzzer
 * binary and the Criterion test that runs it in ordinary CI.
 */
#ifndef H2_FUZZ_FRAME_H
#define H2_FUZZ_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Outcomes of the stateless decode at each frame boundary, for tests to
 * prove that the inputs reached every path. */
struct fuzz_frame_stats {
	uint64_t ok, need_more, too_big_header, invalid, too_big_payload;
};
extern struct fuzz_frame_stats fuzz_frame_stats;

/* Decode data as a stream of frames every way there is; traps on any
 * inconsistency.  Always returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* H2_FUZZ_FRAME_H */
