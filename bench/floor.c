/* floor.c: the bench's "floor" server (scripts/bench.sh). It does per message only what any durable
 * gateway must: read the session; one MULTI writing the session, the de-duplication mark and the
 * reply onto a stream, answered after EXEC; a timer draining the stream in batches with XRANGE and
 * one variadic XDEL. No flows, no JSON library, no logging: the cost the gateway is measured against.
 *
 *   floor PORT REDIS_UNIX_SOCKET
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <hiredis.h>
#include <async.h>
#include <adapters/libevent.h>

static redisAsyncContext *floor_rc;
static struct event *floor_drain_ev;
static int floor_draining;

struct floor_req {
	struct evhttp_request	*req;
	char			 from[32];
	char			 id[64];
	char			 text[256];
};

/* Copies the string value of "key" in a flat JSON body into out (no escapes: the bench's bodies). */
static void
floor_field(const char *body, const char *key, char *out, size_t len)
{
	char pat[32];
	const char *p, *e;
	size_t n;

	out[0] = '\0';
	snprintf(pat, sizeof pat, "\"%s\":\"", key);
	if ((p = strstr(body, pat)) == NULL)
		return;
	p += strlen(pat);
	if ((e = strchr(p, '"')) == NULL)
		return;
	n = (size_t)(e - p);
	if (n >= len)
		n = len - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

static void
floor_exec_cb(redisAsyncContext *c, void *r, void *arg)
{
	struct floor_req *fr = arg;
	redisReply *reply = r;

	(void)c;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
		evhttp_send_reply(fr->req, 503, "Unavailable", NULL);
	else
		evhttp_send_reply(fr->req, 202, "Accepted", NULL);
	free(fr);
}

static void
floor_load_cb(redisAsyncContext *c, void *r, void *arg)
{
	struct floor_req *fr = arg;
	redisReply *reply = r;
	char key[64], seen[96], sess[400];
	long long v = 0;

	if (reply == NULL) {
		evhttp_send_reply(fr->req, 503, "Unavailable", NULL);
		free(fr);
		return;
	}
	if (reply->type == REDIS_REPLY_STRING)
		v = atoll(reply->str);
	/* the new session: what a flow step would leave (state, version, the last text) */
	snprintf(sess, sizeof sess, "{\"v\":%lld,\"state\":\"menu\",\"last\":\"%s\"}", v + 1, fr->text);
	snprintf(key, sizeof key, "floor:s:%s", fr->from);
	snprintf(seen, sizeof seen, "floor:seen:%s", fr->id);
	redisAsyncCommand(c, NULL, NULL, "MULTI");
	redisAsyncCommand(c, NULL, NULL, "HSET %s v %lld d %s", key, v + 1, sess);
	redisAsyncCommand(c, NULL, NULL, "EXPIRE %s 2592000", key);
	redisAsyncCommand(c, NULL, NULL, "SET %s 1 EX 86400", seen);
	redisAsyncCommand(c, NULL, NULL, "XADD floor:outbox * ch sms to %s text %s", fr->from,
	    "Ho so 000.00.20.H21-231125-0001: dang xu ly. Han tra: 30/11/2023.");
	redisAsyncCommand(c, floor_exec_cb, fr, "EXEC");
}

static void
floor_http_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct floor_req *fr;
	char body[1024], key[64];
	size_t n;

	(void)arg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		evhttp_send_reply(req, 200, "OK", NULL);	/* /livez */
		return;
	}
	n = evbuffer_get_length(in);
	if (n >= sizeof body)
		n = sizeof body - 1;
	evbuffer_remove(in, body, n);
	body[n] = '\0';
	fr = calloc(1, sizeof *fr);
	if (fr == NULL)
		abort();
	fr->req = req;
	floor_field(body, "from", fr->from, sizeof fr->from);
	floor_field(body, "id", fr->id, sizeof fr->id);
	floor_field(body, "text", fr->text, sizeof fr->text);
	snprintf(key, sizeof key, "floor:s:%s", fr->from);
	/* the de-duplication check rides in the load's round trip */
	redisAsyncCommand(floor_rc, NULL, NULL, "EXISTS floor:seen:%s", fr->id);
	redisAsyncCommand(floor_rc, floor_load_cb, fr, "HGET %s v", key);
}

static void
floor_xdel_cb(redisAsyncContext *c, void *r, void *arg)
{
	(void)c; (void)r; (void)arg;
	floor_draining = 0;
}

/* A batch of the stream "sent": one variadic XDEL for all of it. */
static void
floor_xrange_cb(redisAsyncContext *c, void *r, void *arg)
{
	redisReply *reply = r;
	const char **argv;
	size_t i, n;

	(void)arg;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
		floor_draining = 0;
		return;
	}
	n = reply->elements;
	argv = calloc(n + 2, sizeof *argv);
	if (argv == NULL)
		abort();
	argv[0] = "XDEL";
	argv[1] = "floor:outbox";
	for (i = 0; i < n; i++)
		argv[i + 2] = reply->element[i]->element[0]->str;
	redisAsyncCommandArgv(c, floor_xdel_cb, NULL, (int)n + 2, argv, NULL);
	free(argv);
}

static void
floor_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
	if (!floor_draining) {
		floor_draining = 1;
		redisAsyncCommand(floor_rc, floor_xrange_cb, NULL, "XRANGE floor:outbox - + COUNT 512");
	}
}

static void
floor_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	event_base_loopexit(arg, NULL);
}

int
main(int argc, char **argv)
{
	struct event_base *base;
	struct evhttp *http;
	struct timeval tv = { 0, 5000 };
	struct event *sig;

	if (argc != 3) {
		fprintf(stderr, "usage: floor PORT REDIS_UNIX_SOCKET\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	floor_rc = redisAsyncConnectUnix(argv[2]);
	if (floor_rc == NULL || floor_rc->err) {
		fprintf(stderr, "floor: cannot connect to %s\n", argv[2]);
		return 1;
	}
	redisLibeventAttach(floor_rc, base);
	http = evhttp_new(base);
	if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)atoi(argv[1])) != 0) {
		fprintf(stderr, "floor: cannot listen on %s\n", argv[1]);
		return 1;
	}
	evhttp_set_gencb(http, floor_http_cb, NULL);
	floor_drain_ev = event_new(base, -1, EV_PERSIST, floor_drain_cb, NULL);
	event_add(floor_drain_ev, &tv);
	sig = evsignal_new(base, SIGTERM, floor_stop_cb, base);
	event_add(sig, NULL);
	event_base_dispatch(base);
	return 0;
}
