/* unit_async.c: the event-driven parts on a real event_base, each under a watchdog timer (hiredis
 * test.c shape): the Redis command deadline (rds.c's sweep), the Redis connect timeout, and a curl
 * transfer's timeout (fetch.c). The peers are sockets of this process that accept connections (the
 * kernel completes the handshake) and never answer. The outbox retry timer is not covered here: it
 * needs outbox.c's Redis streams and scripts. */
#include <sys/socket.h>
#include <sys/time.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "dvcgw.h"
#include "unit.h"

#define WATCHDOG_MS 5000

static struct event_base *base;
static int watchdog_fired;

/* Monotonic milliseconds. */
static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The watchdog: the feature under test never called back. */
static void
watchdog_cb(evutil_socket_t fd, short events, void *arg)
{
	watchdog_fired = 1;
	event_base_loopbreak(base);
}

/* Run the loop until a callback breaks it or the watchdog fires; 0 when the callback did. */
static int
run_loop(void)
{
	struct event *wd = evtimer_new(base, watchdog_cb, NULL);
	struct timeval tv = { WATCHDOG_MS / 1000, (WATCHDOG_MS % 1000) * 1000 };

	watchdog_fired = 0;
	evtimer_add(wd, &tv);
	event_base_dispatch(base);
	event_free(wd);
	return watchdog_fired ? -1 : 0;
}

/* A loopback socket listening with the given backlog; its port in *port. */
static int
listener(int backlog, int *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
	    listen(fd, backlog) != 0 || getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		perror("listener");
		exit(2);
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

/* Fill port's accept queue with non-blocking connections, so that further SYNs are dropped. */
static void
fill_backlog(int port, int *fds, int n)
{
	struct sockaddr_in sin;
	int i;

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(port);
	for (i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		fcntl(fds[i], F_SETFL, O_NONBLOCK);
		connect(fds[i], (struct sockaddr *)&sin, sizeof sin);
	}
	usleep(200000);
}

/* What the last callback saw. */
static struct {
	int		 called;
	int		 had_reply;
	long		 status;
	char		 err[256];
	long long	 at_ms;
} got;

/* Poll: stop the loop once Redis is ready. */
static void
ready_check_cb(evutil_socket_t fd, short events, void *arg)
{
	if (rds_ready())
		event_base_loopbreak(base);
}

/* The command's callback: record what it got and stop the loop. */
static void
rds_test_cb(struct redisReply *r, void *arg, const char *err)
{
	got.called++;
	got.had_reply = r != NULL;
	snprintf(got.err, sizeof got.err, "%s", err ? err : "");
	got.at_ms = now_ms();
	event_base_loopbreak(base);
}

/* A command to a Redis that accepted the connection and never answers gets an error after
 * redis.timeout_ms, from the sweep, and the connection is given up. */
static void
test_rds_command_deadline(void)
{
	struct event *poll;
	struct timeval tv = { 0, 20000 };
	char url[64], *cause = NULL;
	long long t0, took;
	int lfd, port;

	lfd = listener(16, &port);
	snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
	CHECK(rds_start(base, url, 300, &cause) == 0, "rds_start: %s", cause ? cause : "");
	poll = event_new(base, -1, EV_PERSIST, ready_check_cb, NULL);
	event_add(poll, &tv);
	CHECK(run_loop() == 0 && rds_ready(), "no connection to the silent peer: %s", rds_error());
	event_free(poll);

	memset(&got, 0, sizeof got);
	t0 = now_ms();
	CHECK(rds_command(rds_test_cb, NULL, "PING") == 0, "PING not sent");
	CHECK(rds_npending() == 1, "pending %d", rds_npending());
	CHECK(run_loop() == 0, "the watchdog fired: no callback within %d ms", WATCHDOG_MS);
	took = got.at_ms - t0;
	CHECK(got.called == 1 && !got.had_reply, "called %d, reply %d", got.called, got.had_reply);
	CHECK(strstr(got.err, "did not answer within 300 ms") != NULL, "err \"%s\"", got.err);
	CHECK(took >= 250 && took < 1500, "answered after %lld ms, deadline 300", took);
	CHECK(!rds_ready() && rds_npending() == 0, "ready %d, pending %d", rds_ready(),
	    rds_npending());
	rds_stop();
	close(lfd);
}

/* Poll: stop the loop once Redis reports the connect timeout. */
static void
error_check_cb(evutil_socket_t fd, short events, void *arg)
{
	if (strstr(rds_error(), "connect_timeout_ms") != NULL) {
		got.at_ms = now_ms();
		event_base_loopbreak(base);
	}
}

/* A connection attempt nobody answers (the accept queue is full) is given up after
 * redis.connect_timeout_ms and says so; the retry after it fails the same way. */
static void
test_rds_connect_timeout(void)
{
	struct event *poll;
	struct timeval tv = { 0, 10000 };
	char url[64], *cause = NULL;
	long long t0, took;
	int lfd, port, fill[4], i;

	lfd = listener(0, &port);
	fill_backlog(port, fill, 4);
	snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
	memset(&got, 0, sizeof got);
	rds_set_connect_timeout(250);
	t0 = now_ms();
	CHECK(rds_start(base, url, 5000, &cause) == 0, "rds_start: %s", cause ? cause : "");
	poll = event_new(base, -1, EV_PERSIST, error_check_cb, NULL);
	event_add(poll, &tv);
	CHECK(run_loop() == 0, "the watchdog fired: still \"%s\" after %d ms", rds_error(),
	    WATCHDOG_MS);
	took = got.at_ms - t0;
	CHECK(took >= 200 && took < 1500, "gave up after %lld ms, timeout 250", took);
	CHECK(!rds_ready(), "ready");
	event_free(poll);
	rds_stop();
	rds_set_connect_timeout(0);
	for (i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
}

/* The transfer's callback: record what it got and stop the loop. */
static void
fetch_test_cb(long status, const char *body, size_t len, const char *err, void *arg)
{
	got.called++;
	got.status = status;
	snprintf(got.err, sizeof got.err, "%s", err ? err : "");
	got.at_ms = now_ms();
	event_base_loopbreak(base);
}

/* A transfer to a server that accepts and never answers ends with an error at its timeout. */
static void
test_fetch_timeout(void)
{
	char url[64];
	long long t0, took;
	int lfd, port;

	lfd = listener(16, &port);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/v3.0/oa/message/cs", port);
	fetch_init(base);
	memset(&got, 0, sizeof got);
	t0 = now_ms();
	fetch_start(url, "{}", 2, NULL, 400, fetch_test_cb, NULL);
	CHECK(fetch_active() == 1, "active %d", fetch_active());
	CHECK(run_loop() == 0, "the watchdog fired: no callback within %d ms", WATCHDOG_MS);
	took = got.at_ms - t0;
	CHECK(got.called == 1 && got.status == 0, "called %d, status %ld", got.called, got.status);
	CHECK(got.err[0] != '\0', "no error text");
	CHECK(took >= 350 && took < 2000, "ended after %lld ms, timeout 400", took);
	CHECK(fetch_active() == 0, "active %d", fetch_active());
	fetch_stop();
	close(lfd);
}

int
main(void)
{
	log_set_level(LOG_ERROR);
	if ((base = event_base_new()) == NULL)
		return 2;
	test_rds_command_deadline();
	test_rds_connect_timeout();
	test_fetch_timeout();
	event_base_free(base);
	UNIT_END();
}
