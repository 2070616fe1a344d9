/* pwhash.c: password verification off the event loop. crypto_pwhash_str_verify (Argon2id, ~64 MiB,
 * tens of ms) runs on a few worker threads fed by a bounded queue; each finished job is put on a
 * done list and one byte written to a pipe whose read end is an event on the loop, which calls the
 * job's callback there. The loop never waits for a hash: a full queue is refused at once. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "dvcgw.h"

#define PWHASH_MAX_WORKERS 8

/* One verification. The worker owns it between taking it and putting it on the done list. */
struct pwhash_job {
	char			*hash;		/* NULL: verify against the dummy (unknown account) */
	char			*password;	/* wiped and freed once verified */
	int			 ok;
	pwhash_cb		*cb;
	void			*arg;
	struct pwhash_job	*next;
};

static struct {
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	pthread_t		 threads[PWHASH_MAX_WORKERS];
	int			 nthreads;
	struct pwhash_job	*todo, *todo_tail;	/* under lock */
	struct pwhash_job	*done;			/* under lock */
	int			 queued;	/* taken by pwhash_verify and not called back yet */
	int			 limit;		/* staff.hash_queue */
	int			 stopping;	/* under lock */
	int			 pipe[2];
	struct event		*ev;
	char			 dummy[crypto_pwhash_STRBYTES];	/* under lock until ready */
	int			 dummy_ready;
} pw = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
    .pipe = { -1, -1 } };

/* A worker: make the dummy hash once (so unknown accounts cost as much as known ones), then verify
 * jobs until told to stop. */
static void *
pwhash_worker(void *arg)
{
	struct pwhash_job *j;
	unsigned char junk[32];
	char dummy[crypto_pwhash_STRBYTES];
	char b = 'x';
	ssize_t n;

	pthread_mutex_lock(&pw.lock);
	if (!pw.dummy_ready) {
		pthread_mutex_unlock(&pw.lock);
		randombytes_buf(junk, sizeof junk);
		if (crypto_pwhash_str(dummy, (const char *)junk, sizeof junk,
		    crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
			dummy[0] = '\0';	/* out of memory: every verify then fails */
		pthread_mutex_lock(&pw.lock);
		if (!pw.dummy_ready) {
			memcpy(pw.dummy, dummy, sizeof dummy);
			pw.dummy_ready = 1;
		}
	}
	memcpy(dummy, pw.dummy, sizeof dummy);
	for (;;) {
		while (pw.todo == NULL && !pw.stopping)
			pthread_cond_wait(&pw.cond, &pw.lock);
		if (pw.todo == NULL)
			break;
		j = pw.todo;
		if ((pw.todo = j->next) == NULL)
			pw.todo_tail = NULL;
		pthread_mutex_unlock(&pw.lock);

		if (j->hash != NULL && strnlen(j->hash, crypto_pwhash_STRBYTES) <
		    crypto_pwhash_STRBYTES)
			j->ok = crypto_pwhash_str_verify(j->hash, j->password,
			    strlen(j->password)) == 0;
		else {
			/* Same work, never a match (no logging here: log.c is the loop's). */
			int same = crypto_pwhash_str_verify(dummy, j->password, strlen(j->password));

			(void)same;
			j->ok = 0;
		}
		sodium_memzero(j->password, strlen(j->password));

		pthread_mutex_lock(&pw.lock);
		j->next = pw.done;
		pw.done = j;
		pthread_mutex_unlock(&pw.lock);
		do
			n = write(pw.pipe[1], &b, 1);
		while (n < 0 && errno == EINTR);	/* EAGAIN: a wake-up is already pending */
		pthread_mutex_lock(&pw.lock);
	}
	pthread_mutex_unlock(&pw.lock);
	return NULL;
}

static void
pwhash_job_free(struct pwhash_job *j)
{
	free(j->hash);
	free(j->password);
	free(j);
}

/* On the loop: call back every finished job (oldest first). */
static void
pwhash_wake_cb(evutil_socket_t fd, short events, void *arg)
{
	struct pwhash_job *list, *rev = NULL, *j;
	char buf[64];

	while (read(fd, buf, sizeof buf) > 0)
		;
	pthread_mutex_lock(&pw.lock);
	list = pw.done;
	pw.done = NULL;
	pthread_mutex_unlock(&pw.lock);
	while ((j = list) != NULL) {
		list = j->next;
		j->next = rev;
		rev = j;
	}
	while ((j = rev) != NULL) {
		rev = j->next;
		pw.queued--;
		j->cb(j->ok, j->arg);
		pwhash_job_free(j);
	}
}

/* Start the workers (staff.hash_workers) with room for staff.hash_queue verifications. */
void
pwhash_init(struct event_base *base, int workers, int queue)
{
	int i;

	if (pw.ev != NULL)
		return;
	if (pipe2(pw.pipe, O_NONBLOCK | O_CLOEXEC) != 0)
		fatal("pwhash: pipe");
	pw.ev = event_new(base, pw.pipe[0], EV_READ | EV_PERSIST, pwhash_wake_cb, NULL);
	event_add(pw.ev, NULL);
	pw.limit = queue;
	pw.stopping = 0;
	if (workers > PWHASH_MAX_WORKERS)
		workers = PWHASH_MAX_WORKERS;
	for (i = 0; i < workers; i++) {
		if (pthread_create(&pw.threads[i], NULL, pwhash_worker, NULL) != 0)
			fatalx("pwhash: cannot start a worker thread");
		pw.nthreads++;
	}
}

/* Verify password against hash (NULL: the dummy, for an unknown or unusable account) on a worker;
 * cb is called on the loop, exactly once, unless -1 is returned (the queue is full or there are no
 * workers): then it is never called. The strings are copied. */
int
pwhash_verify(const char *hash, const char *password, pwhash_cb *cb, void *arg)
{
	struct pwhash_job *j;

	if (pw.nthreads == 0 || pw.queued >= pw.limit)
		return -1;
	j = xcalloc(1, sizeof *j);
	j->hash = hash != NULL ? xstrdup(hash) : NULL;
	j->password = xstrdup(password);
	j->cb = cb;
	j->arg = arg;
	pw.queued++;
	pthread_mutex_lock(&pw.lock);
	if (pw.todo_tail != NULL)
		pw.todo_tail->next = j;
	else
		pw.todo = j;
	pw.todo_tail = j;
	pthread_cond_signal(&pw.cond);
	pthread_mutex_unlock(&pw.lock);
	return 0;
}

/* Verifications not called back yet (the drain on stop waits for them through http_inflight). */
int
pwhash_pending(void)
{
	return pw.queued;
}

/* Stop the workers once they finish what they hold; jobs still queued are dropped uncalled (only
 * after the drain deadline). */
void
pwhash_stop(void)
{
	struct pwhash_job *j;
	int i;

	if (pw.ev == NULL)
		return;
	pthread_mutex_lock(&pw.lock);
	pw.stopping = 1;
	while ((j = pw.todo) != NULL) {
		pw.todo = j->next;
		pwhash_job_free(j);
	}
	pw.todo_tail = NULL;
	pthread_cond_broadcast(&pw.cond);
	pthread_mutex_unlock(&pw.lock);
	for (i = 0; i < pw.nthreads; i++)
		pthread_join(pw.threads[i], NULL);
	pw.nthreads = 0;
	while ((j = pw.done) != NULL) {
		pw.done = j->next;
		pwhash_job_free(j);
	}
	event_free(pw.ev);
	pw.ev = NULL;
	close(pw.pipe[0]);
	close(pw.pipe[1]);
	pw.pipe[0] = pw.pipe[1] = -1;
	pw.queued = 0;
}
