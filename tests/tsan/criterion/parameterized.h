/*
 * parameterized.h - Criterion's parameterized tests for the
 * thread-sanitizer build (see criterion.h here): each parameter runs as
 * its own test, in its own process, named suite::name[i].
 */
#ifndef H2_TSAN_PARAMETERIZED_H
#define H2_TSAN_PARAMETERIZED_H

#include "criterion.h"

#define ParameterizedTestParameters(S, N)                                      \
	static struct h2mc_params H2MC_ID(h2mc_pp, S, N)(void)

#define ParameterizedTest(param, S, N, ...)                                    \
	static void H2MC_ID(h2mc_pfn, S, N)(param);                            \
	static void H2MC_ID(h2mc_pcall, S, N)(void *p)                         \
	{                                                                      \
		H2MC_ID(h2mc_pfn, S, N)(p);                                    \
	}                                                                      \
	static struct h2mc_test H2MC_ID(h2mc_t, S, N) = {                      \
	    .suite = #S,                                                       \
	    .name = #N,                                                        \
	    .pfn = H2MC_ID(h2mc_pcall, S, N),                                  \
	    .params = H2MC_ID(h2mc_pp, S, N),                                  \
	    .opt = {__VA_ARGS__},                                              \
	};                                                                     \
	__attribute__((constructor)) static void H2MC_ID(h2mc_reg, S, N)(void) \
	{                                                                      \
		h2mc_register(&H2MC_ID(h2mc_t, S, N));                         \
	}                                                                      \
	static void H2MC_ID(h2mc_pfn, S, N)(param)

/* cr_make_param_array(Type, Array, Len[, Cleanup]) */
#define cr_make_param_array(type, array, ...)                                  \
	((struct h2mc_params){sizeof(type), (void *)(array), __VA_ARGS__})

#endif
