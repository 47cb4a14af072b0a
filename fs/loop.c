/* SPDX-License-Identifier: MIT */
/*
 * The FUSE request loop.
 *
 * libfuse's multithreaded loop serves each request on a thread that was asleep in read(2) on
 * /dev/fuse. A client that sends one request at a time (cp -a, tar, pip unpacking a wheel)
 * then pays for the daemon going to sleep and being woken once per request, and in a VM that
 * is a good part of a small file's cost (docs/benchmarks.md, "The request loop").
 *
 * Here one thread holds the device: it reads a request, serves it itself and then, before it
 * blocks in read(2) for the next, polls the device for up to a spin window: such a client's
 * next request comes a few µs after the reply. The window adapts as the kernel's haltpoll
 * governor does: it grows when a request came later than the window but within the most it
 * may be, and shrinks when the wait was longer, so a mount that is idle, or asked only now
 * and then, does not spin.
 *
 * Requests are still served in parallel when they come in parallel. The holder hands the
 * device to another thread before serving when another request is already waiting, and a
 * watchdog takes it away when the holder has been serving one request for over RESCUE_NS (a
 * fetch from the remote, an fsync), so that a slow request holds up the others that long at
 * most. Threads start on demand, up to max_threads, as in libfuse's loop.
 *
 * Locks: everything in struct loop below mu is under mu; spin_ns belongs to the holder.
 */
#include "loop.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "util.h"

#define MAX_THREADS 64
#define SPIN_START_NS 10000   /* the window a growing spin starts from */
#define RESCUE_NS 1000000     /* a request served longer than this loses the device */
#define WATCH_TICK_NS 1000000 /* the watchdog's period while requests are served */
#define WATCH_IDLE_TICKS 10   /* ticks with nothing served before it sleeps until woken */

struct worker {
	struct loop *l;
	pthread_t tid;
	struct fuse_buf buf;
};

struct loop {
	struct fuse_session *se;
	int fd;
	unsigned max_threads;
	int64_t spin_max_ns;
	int64_t spin_ns; /* the holder's current window */
	sem_t finish;    /* posted by a thread that saw the session end */
	pthread_t watchdog;

	pthread_mutex_t mu;
	pthread_cond_t follow; /* threads without the device wait here */
	pthread_cond_t wake;   /* the sleeping watchdog waits here */
	bool stop;
	struct worker *holder; /* the thread holding the device, or NULL */
	struct worker *workers[MAX_THREADS];
	unsigned nworkers, waiting;
	bool serving; /* the holder is serving a request */
	int64_t serving_since;
	bool watch_asleep;
	int status;
	struct loop_stats stats;
};

static void *worker_main(void *arg);

/* Start one more thread, if allowed; mu held. */
static void start_worker(struct loop *l)
{
	struct worker *w;

	if (l->nworkers >= l->max_threads)
		return;
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->l = l;
	if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
		free(w);
		return;
	}
	l->workers[l->nworkers++] = w;
	if (l->nworkers > l->stats.threads)
		l->stats.threads = l->nworkers;
}

/* Take the device from its holder, for a waiting thread or a new one; mu held. */
static void hand_over(struct loop *l)
{
	l->holder = NULL;
	l->serving = false;
	if (l->waiting)
		pthread_cond_signal(&l->follow);
	else
		start_worker(l);
}

/* Grow or shrink the spin window after a wait of waited ns (as haltpoll does). */
static void adapt_spin(struct loop *l, int64_t waited)
{
	if (waited <= l->spin_ns)
		return;
	if (waited <= l->spin_max_ns)
		l->spin_ns = MIN(l->spin_max_ns, MAX(2 * l->spin_ns, (int64_t)SPIN_START_NS));
	else
		l->spin_ns = l->spin_ns / 2 < SPIN_START_NS ? 0 : l->spin_ns / 2;
}

/* The next request into w->buf: the fuse_session_receive_buf result. Run by the holder. */
static int next_request(struct loop *l, struct worker *w)
{
	int64_t start = now_ns(), t = start;
	struct pollfd p = {.fd = l->fd, .events = POLLIN};
	int r;

	while (t - start < l->spin_ns) {
		if (poll(&p, 1, 0) != 0)
			break; /* a request, or the connection is gone: read says which */
		t = now_ns();
	}
	if (t - start < l->spin_ns)
		l->stats.spun++;
	else
		l->stats.blocked++;
	/* The one place a thread may be cancelled: asleep in read, once the loop stops. */
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	r = fuse_session_receive_buf(l->se, &w->buf);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	adapt_spin(l, now_ns() - start);
	return r;
}

/* Another request waits behind the one just read. */
static bool request_waiting(struct loop *l)
{
	struct pollfd p = {.fd = l->fd, .events = POLLIN};

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* Mark the loop stopped, with status r (< 0) unless one is set; mu held. */
static void stop_locked(struct loop *l, int r)
{
	if (r < 0 && l->status == 0)
		l->status = r;
	if (!l->stop) {
		l->stop = true;
		fuse_session_exit(l->se);
		pthread_cond_broadcast(&l->follow);
		pthread_cond_broadcast(&l->wake);
		sem_post(&l->finish);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop *l = w->l;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_mutex_lock(&l->mu);
	for (;;) {
		bool more;
		int r;

		while (!l->stop && l->holder && l->holder != w) {
			l->waiting++;
			pthread_cond_wait(&l->follow, &l->mu);
			l->waiting--;
		}
		if (l->stop || fuse_session_exited(l->se)) {
			/* A signal may have ended the session: tell the main thread. */
			stop_locked(l, 0);
			break;
		}
		l->holder = w;
		pthread_mutex_unlock(&l->mu);
		r = next_request(l, w);
		more = r > 0 && request_waiting(l);
		pthread_mutex_lock(&l->mu);
		/* A signal (the main thread sees whether it stopped us), or a restart. */
		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r <= 0 || fuse_session_exited(l->se)) {
			stop_locked(l, r);
			break;
		}
		if (more) {
			l->stats.handovers++;
			hand_over(l);
		} else {
			l->serving = true;
			l->serving_since = now_ns();
			if (l->watch_asleep) {
				l->watch_asleep = false;
				pthread_cond_signal(&l->wake);
			}
		}
		pthread_mutex_unlock(&l->mu);
		fuse_session_process_buf(l->se, &w->buf);
		pthread_mutex_lock(&l->mu);
		if (l->holder == w)
			l->serving = false;
	}
	if (l->holder == w)
		l->holder = NULL;
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

/* Takes the device from a holder serving one request for too long. */
static void *watchdog_main(void *arg)
{
	struct loop *l = arg;
	unsigned idle = 0;

	pthread_mutex_lock(&l->mu);
	while (!l->stop) {
		struct timespec tick = {0, WATCH_TICK_NS};

		if (idle >= WATCH_IDLE_TICKS) {
			l->watch_asleep = true;
			while (l->watch_asleep && !l->stop)
				pthread_cond_wait(&l->wake, &l->mu);
			idle = 0;
			continue;
		}
		pthread_mutex_unlock(&l->mu);
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&l->mu);
		if (!l->serving) {
			idle++;
			continue;
		}
		idle = 0;
		if (now_ns() - l->serving_since > RESCUE_NS) {
			l->stats.rescues++;
			hand_over(l);
		}
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

int loop_run(struct fuse_session *se, unsigned max_threads, unsigned spin_us,
	     struct loop_stats *ret_stats)
{
	struct loop *l = calloc(1, sizeof(*l));
	bool watching;
	int r;

	if (!l)
		return -ENOMEM;
	l->se = se;
	l->fd = fuse_session_fd(se);
	l->max_threads = MAX(1u, MIN(max_threads, (unsigned)MAX_THREADS));
	l->spin_max_ns = (int64_t)spin_us * 1000;
	l->spin_ns = l->spin_max_ns;
	sem_init(&l->finish, 0, 0);
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->follow, NULL);
	pthread_cond_init(&l->wake, NULL);

	pthread_mutex_lock(&l->mu);
	start_worker(l);
	r = l->nworkers ? -pthread_create(&l->watchdog, NULL, watchdog_main, l) : -EAGAIN;
	watching = r == 0;
	if (r < 0)
		stop_locked(l, r);
	pthread_mutex_unlock(&l->mu);

	/* A signal (TERM, INT, HUP: libfuse's handlers) ends the session and interrupts this. */
	while (!fuse_session_exited(se) && sem_wait(&l->finish) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&l->mu);
	stop_locked(l, 0);
	pthread_mutex_unlock(&l->mu);
	/* The holder may be asleep in read: that is where cancelling it takes effect. */
	for (unsigned i = 0; i < l->nworkers; i++)
		pthread_cancel(l->workers[i]->tid);
	for (unsigned i = 0; i < l->nworkers; i++) {
		pthread_join(l->workers[i]->tid, NULL);
		free(l->workers[i]->buf.mem);
		free(l->workers[i]);
	}
	if (watching)
		pthread_join(l->watchdog, NULL);
	r = l->status;
	if (ret_stats)
		*ret_stats = l->stats;
	pthread_cond_destroy(&l->wake);
	pthread_cond_destroy(&l->follow);
	pthread_mutex_destroy(&l->mu);
	sem_destroy(&l->finish);
	free(l);
	return r;
}
