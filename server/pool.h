/*
 * pool.h - worker threads for disk work.
 *
 * The event loop hands a job to the pool; a worker runs job->run, then
 * queues the job on the done list and wakes the loop, which calls
 * job->done on the loop thread.  Only the loop thread touches libevent.
 *
 * Thread-safety: h2_pool_submit is called from the loop thread; run
 * functions run on workers; done functions run on the loop thread.
 */
#ifndef H2D_POOL_H
#define H2D_POOL_H

#include <sys/queue.h>

struct event_base;
struct h2_pool;

struct h2_job {
	TAILQ_ENTRY(h2_job) link;
	void (*run)(struct h2_job *job);  /* worker thread */
	void (*done)(struct h2_job *job); /* loop thread */
};

/* Start nworkers threads feeding completions back into base. */
struct h2_pool *h2_pool_new(struct event_base *base, unsigned nworkers);

/* Queue a job (loop thread). */
void h2_pool_submit(struct h2_pool *pool, struct h2_job *job);

/* Jobs submitted whose done has not run yet. */
unsigned h2_pool_pending(const struct h2_pool *pool);

/* Stop the workers after the queue drains, then free (loop thread). */
void h2_pool_free(struct h2_pool *pool);

#endif
