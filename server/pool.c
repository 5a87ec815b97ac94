/*
 * pool.c - a fixed set of worker threads fed by a queue (memcached's
 * pattern): the loop pushes jobs under a mutex and signals a condition;
 * workers push finished jobs onto a done list and activate one libevent
 * event, whose callback drains that list on the loop thread.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "log.h"
#include "pool.h"

TAILQ_HEAD(h2_jobq, h2_job);

struct h2_pool {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct h2_jobq todo;
	struct h2_jobq done;
	bool stop;
	unsigned nthreads;
	pthread_t *threads;
	struct event *done_ev;
	unsigned pending; /* loop thread only */
};

static void *worker_main(void *arg)
{
	struct h2_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct h2_job *job = TAILQ_FIRST(&p->todo);

		if (!job) {
			if (p->stop)
				break;
			pthread_cond_wait(&p->cv, &p->lock);
			continue;
		}
		TAILQ_REMOVE(&p->todo, job, link);
		pthread_mutex_unlock(&p->lock);
		job->run(job);
		pthread_mutex_lock(&p->lock);
		TAILQ_INSERT_TAIL(&p->done, job, link);
		event_active(p->done_ev, EV_READ, 0);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Loop thread: run the done callbacks of finished jobs. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_pool *p = arg;
	struct h2_jobq batch = TAILQ_HEAD_INITIALIZER(batch);
	struct h2_job *job;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&p->lock);
	TAILQ_CONCAT(&batch, &p->done, link);
	pthread_mutex_unlock(&p->lock);
	while ((job = TAILQ_FIRST(&batch))) {
		TAILQ_REMOVE(&batch, job, link);
		p->pending--;
		job->done(job);
	}
}

struct h2_pool *h2_pool_new(struct event_base *base, unsigned nworkers)
{
	struct h2_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cv, NULL);
	TAILQ_INIT(&p->todo);
	TAILQ_INIT(&p->done);
	p->done_ev = event_new(base, -1, 0, done_cb, p);
	p->threads = calloc(nworkers ? nworkers : 1, sizeof(*p->threads));
	if (!p->done_ev || !p->threads)
		goto fail;
	for (unsigned i = 0; i < nworkers; i++) {
		if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
			goto fail;
		p->nthreads++;
	}
	return p;
fail:
	h2_pool_free(p);
	return NULL;
}

void h2_pool_submit(struct h2_pool *p, struct h2_job *job)
{
	p->pending++;
	pthread_mutex_lock(&p->lock);
	TAILQ_INSERT_TAIL(&p->todo, job, link);
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->lock);
}

unsigned h2_pool_pending(const struct h2_pool *p)
{
	return p->pending;
}

void h2_pool_free(struct h2_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	/* Finish what completed; their done callbacks free the jobs. */
	done_cb(-1, 0, p);
	if (p->done_ev)
		event_free(p->done_ev);
	free(p->threads);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cv);
	free(p);
}
