/* unit_pwhash.c: pwhash.c on a real event_base under a watchdog: verifications run on the worker
 * and are called back on the loop's thread, the right password matches and a wrong one or the dummy
 * (NULL hash) never does, the queue refuses beyond its bound without calling back, and the loop
 * keeps turning (a timer fires) while a hash is being computed. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sodium.h>

#include "dvcgw.h"
#include "unit.h"

#define WATCHDOG_MS 20000

static struct event_base *base;
static pthread_t loop_thread;
static int results[8], nresults, off_loop, ticks, ticks_at_first;

static void
watchdog_cb(evutil_socket_t fd, short events, void *arg)
{
	event_base_loopbreak(base);
}

static void
tick_cb(evutil_socket_t fd, short events, void *arg)
{
	ticks++;
}

static void
done_cb(int ok, void *arg)
{
	int want = (int)(intptr_t)arg;

	if (!pthread_equal(pthread_self(), loop_thread))
		off_loop++;
	if (nresults == 0)
		ticks_at_first = ticks;
	results[nresults++] = ok == want;
	if (nresults == 3)
		event_base_loopbreak(base);
}

int
main(void)
{
	char hash[crypto_pwhash_STRBYTES];
	struct event *wd, *tick;
	struct timeval wtv = { WATCHDOG_MS / 1000, 0 }, ttv = { 0, 1000 };

	if (sodium_init() < 0)
		return 1;
	log_set_level(LOG_ERROR + 1);
	CHECK(crypto_pwhash_str(hash, "right password", 14, crypto_pwhash_OPSLIMIT_INTERACTIVE,
	    crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0, "hashing");
	base = event_base_new();
	loop_thread = pthread_self();
	CHECK(pwhash_verify(hash, "x", done_cb, NULL) == -1, "no workers yet: refused");
	pwhash_init(base, 1, 3);
	CHECK(pwhash_verify(hash, "right password", done_cb, (void *)(intptr_t)1) == 0, "queued");
	CHECK(pwhash_verify(hash, "wrong password", done_cb, (void *)(intptr_t)0) == 0, "queued");
	CHECK(pwhash_verify(NULL, "right password", done_cb, (void *)(intptr_t)0) == 0, "queued");
	CHECK(pwhash_pending() == 3, "3 pending, got %d", pwhash_pending());
	CHECK(pwhash_verify(hash, "right password", done_cb, (void *)(intptr_t)1) == -1,
	    "a full queue refuses at once");
	wd = evtimer_new(base, watchdog_cb, NULL);
	evtimer_add(wd, &wtv);
	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(tick, &ttv);
	event_base_dispatch(base);
	CHECK(nresults == 3, "3 callbacks, got %d (watchdog?)", nresults);
	CHECK(results[0] && results[1] && results[2], "right, wrong, dummy: %d %d %d", results[0],
	    results[1], results[2]);
	CHECK(off_loop == 0, "%d callbacks off the loop's thread", off_loop);
	CHECK(ticks_at_first > 3, "the loop turned while hashing (%d ticks before the first answer)",
	    ticks_at_first);
	CHECK(pwhash_pending() == 0, "nothing pending, got %d", pwhash_pending());
	CHECK(pwhash_verify(hash, "right password", done_cb, (void *)(intptr_t)1) == 0,
	    "room again");
	pwhash_stop();
	CHECK(pwhash_pending() == 0, "stop drops what is queued");
	event_free(wd);
	event_free(tick);
	event_base_free(base);
	UNIT_END();
}
