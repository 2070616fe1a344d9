/* unit_async.c: the event-driven parts on a real event_base, each under a watchdog timer (hiredis
 * test.c shape): the Redis command deadline (rds.c's sweep), the Redis connect timeout, and a curl
 * transfer's timeout (fetch.c). The peers are sockets of this process that accept connections (the
 * kernel completes the handshake) and never answer. The outbox retry timer runs against a real
 * redis-server started here and an HTTP provider of this process that refuses the first send; the
 * Zalo-phone links of link.c against another one. */
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>

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


/* The fake SMS provider: answers 503 to its first request and 200 to the others, noting when
 * each arrived. */
static struct {
	int		 n;
	long long	 at_ms[8];
	char		 body[512];
	struct bufferevent *conns[8];	/* open connections, freed at the end of the test */
} prov;

static void
prov_read_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end;
	size_t hdr, clen = 0;
	char *h, *cl;

	end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (end.pos < 0)
		return;
	hdr = (size_t)end.pos + 4;
	h = xmalloc(hdr + 1);
	evbuffer_copyout(in, h, hdr);
	h[hdr] = '\0';
	if ((cl = strcasestr(h, "\ncontent-length:")) != NULL)
		clen = (size_t)strtoul(cl + 16, NULL, 10);
	free(h);
	if (evbuffer_get_length(in) < hdr + clen)
		return;
	evbuffer_drain(in, hdr);
	if (clen < sizeof prov.body) {
		evbuffer_remove(in, prov.body, clen);
		prov.body[clen] = '\0';
	} else
		evbuffer_drain(in, clen);
	if (prov.n < 8)
		prov.at_ms[prov.n] = now_ms();
	evbuffer_add_printf(bufferevent_get_output(bev), prov.n++ == 0 ?
	    "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy" :
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

static void
prov_event_cb(struct bufferevent *bev, short what, void *arg)
{
	size_t i;

	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) == 0)
		return;
	for (i = 0; i < sizeof prov.conns / sizeof prov.conns[0]; i++)
		if (prov.conns[i] == bev)
			prov.conns[i] = NULL;
	bufferevent_free(bev);
}

static void
prov_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
    void *arg)
{
	struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	size_t i;

	for (i = 0; i < sizeof prov.conns / sizeof prov.conns[0]; i++)
		if (prov.conns[i] == NULL) {
			prov.conns[i] = bev;
			break;
		}
	bufferevent_setcb(bev, prov_read_cb, NULL, prov_event_cb, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* A private redis-server on a free port; its pid. */
static pid_t
redis_start(int port)
{
	char ps[16], cmd[64];
	redisContext *c;
	pid_t pid;
	int i;

	snprintf(ps, sizeof ps, "%d", port);
	if ((pid = fork()) == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, 1);
		dup2(fd, 2);
		execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1",
		    "--save", "", "--appendonly", "no", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 100; i++) {
		struct timeval tv = { 0, 100000 };

		if ((c = redisConnectWithTimeout("127.0.0.1", port, tv)) != NULL && c->err == 0) {
			redisReply *r = redisCommand(c, "PING");

			freeReplyObject(r);
			redisFree(c);
			if (r != NULL)
				return pid;
		}
		if (c != NULL)
			redisFree(c);
		usleep(50000);
	}
	snprintf(cmd, sizeof cmd, "redis-server did not start on %d", port);
	CHECK(0, "%s", cmd);
	return pid;
}

/* Poll: stop the loop once the queued reply is sent and settled (the stream is empty). */
static redisContext *obx_sync;

static void
settled_check_cb(evutil_socket_t fd, short events, void *arg)
{
	redisReply *r;

	if (prov.n < 2)
		return;
	r = redisCommand(obx_sync, "XLEN ut:{0}:outbox");
	if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
		event_base_loopbreak(base);
	freeReplyObject(r);
}

/* A reply the provider refuses with 503 is retried by the outbox's timer after the backoff
 * (retry_base_ms 200: between 100 and 200 ms with jitter), sent once it is accepted, and
 * settled. */
static void
test_outbox_retry_timer(void)
{
	char path[] = "/tmp/dvcgw-unit-async-XXXXXX", *cause = NULL, url[64];
	struct evconnlistener *l;
	struct sockaddr_in sin;
	struct config *cfg;
	struct event *poll;
	struct timeval tv = { 0, 20000 };
	unsigned long long sent, retried, dead;
	json_t *errors = NULL;
	redisReply *r;
	socklen_t len = sizeof sin;
	int rport, pport, lfd, fd, status;
	pid_t pid;
	FILE *f;

	lfd = listener(16, &rport);	/* a free port for Redis */
	close(lfd);
	pid = redis_start(rport);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = evconnlistener_new_bind(base, prov_accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE |
	    LEV_OPT_REUSEABLE, 16, (struct sockaddr *)&sin, sizeof sin);
	CHECK(l != NULL, "no provider listener");
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &len);
	pport = ntohs(sin.sin_port);

	if ((fd = mkstemp(path)) < 0 || (f = fdopen(fd, "w")) == NULL)
		exit(2);
	fprintf(f, "{\"redis\": {\"url\": \"redis://127.0.0.1:%d/0\", \"prefix\": \"ut:\"},"
	    "\"sms\": {\"driver\": \"http\", \"http\": {\"url\": \"http://127.0.0.1:%d/send\"},"
	    " \"kannel\": {\"from\": \"8077\"}},"
	    "\"outbox\": {\"retry_base_ms\": 200, \"retry_max_ms\": 400, \"max_attempts\": 5,"
	    " \"lease_ms\": 1500}}", rport, pport);
	fclose(f);
	cfg = config_load(path, &errors);
	unlink(path);
	CHECK(cfg != NULL, "config: %s", errors ? json_string_value(json_array_get(errors, 0)) :
	    "");
	if (cfg == NULL)
		return;
	rkey_init(cfg->redis_prefix);
	snprintf(url, sizeof url, "%s", cfg->redis_url);
	{
		struct timeval ctv = { 1, 0 };

		obx_sync = redisConnectWithTimeout("127.0.0.1", rport, ctv);
	}
	r = redisCommand(obx_sync, "XADD ut:{0}:outbox * ch sms to 84912345678 from x text %s att 0",
	    "Ho so da tiep nhan");
	CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "XADD failed");
	freeReplyObject(r);

	fetch_init(base);
	channel_init(base, cfg);
	outbox_init(base, cfg);
	CHECK(rds_start(base, url, 1000, &cause) == 0, "rds_start: %s", cause ? cause : "");
	memset(&prov, 0, sizeof prov);
	poll = event_new(base, -1, EV_PERSIST, settled_check_cb, NULL);
	event_add(poll, &tv);
	CHECK(run_loop() == 0, "the watchdog fired: %d sends, none settled within %d ms", prov.n,
	    WATCHDOG_MS);
	event_free(poll);
	outbox_stats(&sent, &retried, &dead);
	CHECK(prov.n == 2, "%d sends, want 2 (refused, then accepted)", prov.n);
	CHECK(prov.n < 2 || (prov.at_ms[1] - prov.at_ms[0] >= 90 &&
	    prov.at_ms[1] - prov.at_ms[0] < 1500), "retried after %lld ms, backoff 100-200",
	    prov.at_ms[1] - prov.at_ms[0]);
	CHECK(sent == 1 && retried == 1 && dead == 0, "sent %llu retried %llu dead %llu", sent,
	    retried, dead);
	CHECK(strstr(prov.body, "\"to\":\"84912345678\"") != NULL &&
	    strstr(prov.body, "\"from\":\"8077\"") != NULL, "body %s", prov.body);

	outbox_stop_taking();
	outbox_free();
	smsout_free();
	channel_flush();
	fetch_stop();
	rds_stop();
	rkey_free();
	config_free(cfg);
	evconnlistener_free(l);
	for (fd = 0; fd < (int)(sizeof prov.conns / sizeof prov.conns[0]); fd++)
		if (prov.conns[fd] != NULL)
			bufferevent_free(prov.conns[fd]);
	redisFree(obx_sync);
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
}

/* What a link.c call answered. */
static struct {
	int	 calls, rc;
	char	 got[128];
} lk;

static void
link_answer_cb(int rc, json_t *value, const char *err, void *arg)
{
	const char *st = json_string_value(json_object_get(value, "status"));

	lk.calls++;
	lk.rc = rc;
	snprintf(lk.got, sizeof lk.got, "%s", json_is_string(value) ? json_string_value(value) :
	    st != NULL ? st : err != NULL ? err : "");
	event_base_loopbreak(base);
}

/* Run one link.c call to its answer. */
static void
link_call(int rc)
{
	lk.calls = 0;
	lk.got[0] = '\0';
	CHECK(rc == 0, "the call was refused: %s", rds_error());
	if (rc == 0)
		CHECK(run_loop() == 0 && lk.calls == 1, "no answer within %d ms", WATCHDOG_MS);
}

/* Zalo users linked to phones, both ways, against a real redis-server: a phone's Zalo user
 * (link_zalo_of) follows the latest link, the user it replaced is unlinked, HUY LIEN KET
 * (link_remove) removes both sides, and a user's new phone frees the old one. */
static void
test_link_zalo_of(void)
{
	const char *a = "5817296487162953217", *b = "5817296487162953299", *p = "84912345678";
	struct timeval tv = { 0, 20000 };
	struct event *poll;
	char url[64], *cause = NULL;
	int rport, lfd, status;
	pid_t pid;

	lfd = listener(16, &rport);
	close(lfd);
	pid = redis_start(rport);
	rkey_init("ut:");
	link_init();
	snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", rport);
	CHECK(rds_start(base, url, 1000, &cause) == 0, "rds_start: %s", cause ? cause : "");
	poll = event_new(base, -1, EV_PERSIST, ready_check_cb, NULL);
	event_add(poll, &tv);
	CHECK(run_loop() == 0, "Redis not ready within %d ms", WATCHDOG_MS);
	event_free(poll);

	link_call(link_zalo_of(p, link_answer_cb, NULL));
	CHECK(lk.rc == 1, "no link yet: rc %d (%s)", lk.rc, lk.got);
	link_set(a, p);
	link_call(link_zalo_of(p, link_answer_cb, NULL));
	CHECK(lk.rc == 0 && strcmp(lk.got, a) == 0, "linked to a: rc %d %s", lk.rc, lk.got);
	link_set(b, p);
	link_call(link_zalo_of(p, link_answer_cb, NULL));
	CHECK(lk.rc == 0 && strcmp(lk.got, b) == 0, "relinked to b: rc %d %s", lk.rc, lk.got);
	link_call(link_remove(a, link_answer_cb, NULL));
	CHECK(lk.rc == 0 && strcmp(lk.got, "none") == 0, "a was unlinked by b's link: %s", lk.got);
	link_call(link_zalo_of(p, link_answer_cb, NULL));
	CHECK(lk.rc == 0 && strcmp(lk.got, b) == 0, "a's unlink left b: rc %d %s", lk.rc, lk.got);
	link_call(link_remove(b, link_answer_cb, NULL));
	CHECK(lk.rc == 0 && strcmp(lk.got, "unlinked") == 0, "b unlinked: %s", lk.got);
	link_call(link_zalo_of(p, link_answer_cb, NULL));
	CHECK(lk.rc == 1, "after HUY LIEN KET: rc %d (%s)", lk.rc, lk.got);
	/* A Zalo user who links another phone leaves the first one without a Zalo user. */
	link_set(a, p);
	link_set(a, "84987654321");
	link_call(link_zalo_of("84987654321", link_answer_cb, NULL));
	CHECK(lk.rc == 0 && strcmp(lk.got, a) == 0, "a's new phone: rc %d %s", lk.rc, lk.got);
	link_call(link_zalo_of(p, link_answer_cb, NULL));
	CHECK(lk.rc == 1, "a's old phone still names a: rc %d (%s)", lk.rc, lk.got);

	rds_stop();
	rkey_free();
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
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
	test_outbox_retry_timer();
	test_link_zalo_of();
	event_base_free(base);
	UNIT_END();
}
