/* http.c: the HTTP server: the route table, size limits and timeouts, JSON error answers, query
 * parsing that keeps NUL bytes (UCS-2 text from Kannel), and graceful stop. */
#include <sys/socket.h>

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "dvcgw.h"

/* libevent answers bodies beyond this itself (status 413, its own HTML body); bodies between
 * listen.max_body and this get our JSON 413. */
#define HTTP_HARD_BODY_FACTOR 4

static void	http_healthz(struct evhttp_request *, void *);
static void	http_livez(struct evhttp_request *, void *);
static json_t	*http_counters(void);

static const struct http_route {
	const char	*path;
	int		 methods;	/* EVHTTP_REQ_* bits */
	void		(*fn)(struct evhttp_request *, void *);
} http_routes[] = {
	{ "/healthz", EVHTTP_REQ_GET, http_healthz },
	{ "/livez", EVHTTP_REQ_GET, http_livez },
	{ "/sms/kannel", EVHTTP_REQ_GET | EVHTTP_REQ_POST, sms_kannel },
	{ "/sms/inbound", EVHTTP_REQ_POST, sms_inbound },
	{ "/sms/dlr", EVHTTP_REQ_GET | EVHTTP_REQ_POST, sms_dlr },
	{ "/zalo/webhook", EVHTTP_REQ_POST, zalo_webhook },
	{ "/ussd", EVHTTP_REQ_POST, ussd_callback },
	{ "/ussd/end", EVHTTP_REQ_POST, ussd_end },
};

static struct {
	struct evhttp			*http;
	struct evhttp_bound_socket	*bound;
	const struct config		*cfg;
	int				 inflight;
} http;

/* Answer with a JSON body; takes ownership of body. */
void
http_json(struct evhttp_request *req, int status, json_t *body)
{
	struct evbuffer *buf = evbuffer_new();
	char *s;

	s = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	evbuffer_add(buf, s, strlen(s));
	evbuffer_add(buf, "\n", 1);
	free(s);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "application/json; charset=utf-8");
	evhttp_send_reply(req, status, NULL, buf);
	evbuffer_free(buf);
}

/* Answer with the contract's error shape: {"error": code, "message": sentence}. */
void
http_error(struct evhttp_request *req, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	if (status >= 500)
		log_warn("http %d %s: %s", status, evhttp_request_get_uri(req), msg);
	else
		log_debug("http %d %s: %s", status, evhttp_request_get_uri(req), msg);
	http_json(req, status, json_pack("{s:s, s:s}", "error", code, "message", msg));
	free(msg);
}

/* Answer with a plain text body (USSD, Kannel). */
void
http_text(struct evhttp_request *req, int status, const char *text)
{
	struct evbuffer *buf = evbuffer_new();

	evbuffer_add(buf, text, strlen(text));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; charset=utf-8");
	evhttp_send_reply(req, status, NULL, buf);
	evbuffer_free(buf);
}

/* The request body as a NUL-terminated copy (it may itself contain NULs; *len tells). */
char *
http_body(struct evhttp_request *req, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	char *p = xmalloc(n + 1);

	evbuffer_copyout(in, p, n);
	p[n] = '\0';
	if (len != NULL)
		*len = n;
	return p;
}

/* 1 when the body is larger than listen.max_body (the caller answers 413). */
int
http_body_too_large(struct evhttp_request *req)
{
	return evbuffer_get_length(evhttp_request_get_input_buffer(req)) > (size_t)http.cfg->max_body;
}

/* 1 when the Content-Type header's media type is type (parameters ignored). */
int
http_content_type_is(struct evhttp_request *req, const char *type)
{
	const char *ct;
	size_t n = strlen(type);

	ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	return ct != NULL && strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' ||
	    ct[n] == ' ');
}

static int
http_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode p[0..n) ('+' is a space) into a new buffer; NUL bytes are kept, *outlen tells the
 * length. -1 on a malformed escape. */
static int
http_unescape(const char *p, size_t n, char **out, size_t *outlen)
{
	char *q = xmalloc(n + 1);
	size_t i, j = 0;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (p[i] == '+')
			q[j++] = ' ';
		else if (p[i] == '%') {
			if (i + 2 >= n || (hi = http_hexval((unsigned char)p[i + 1])) < 0 ||
			    (lo = http_hexval((unsigned char)p[i + 2])) < 0)
				goto bad;
			q[j++] = (char)(hi << 4 | lo);
			i += 2;
		} else
			q[j++] = p[i];
	}
	q[j] = '\0';
	*out = q;
	*outlen = j;
	return 0;
bad:
	free(q);
	return -1;
}

/* Parse "a=1&b=2" into q. Values keep NUL bytes. 0, or -1 with *cause naming the parameter. */
int
http_query_parse(const char *s, size_t n, struct http_query *q, char **cause)
{
	const char *p = s, *end = s + n, *amp, *eq;
	char *k, *v;
	size_t klen, vlen;

	memset(q, 0, sizeof *q);
	while (p < end) {
		amp = memchr(p, '&', (size_t)(end - p));
		if (amp == NULL)
			amp = end;
		if (amp == p) {
			p++;
			continue;
		}
		eq = memchr(p, '=', (size_t)(amp - p));
		if (eq == NULL)
			eq = amp;
		if (http_unescape(p, (size_t)(eq - p), &k, &klen) != 0) {
			*cause = xstrdup("a parameter name has a malformed %-escape");
			goto fail;
		}
		if (http_unescape(eq < amp ? eq + 1 : amp, eq < amp ? (size_t)(amp - eq - 1) : 0,
		    &v, &vlen) != 0) {
			*cause = xasprintf("parameter \"%s\" has a malformed %%-escape", k);
			free(k);
			goto fail;
		}
		if (q->n == HTTP_QUERY_MAX) {
			free(k);
			free(v);
			*cause = xasprintf("more than %d parameters", HTTP_QUERY_MAX);
			goto fail;
		}
		q->key[q->n] = k;
		q->val[q->n] = v;
		q->len[q->n] = vlen;
		q->n++;
		p = amp + 1;
	}
	return 0;
fail:
	http_query_free(q);
	return -1;
}

/* The first value of a parameter (NULL when absent); *len gets its length when len is not NULL. */
const char *
http_query_get(const struct http_query *q, const char *key, size_t *len)
{
	int i;

	for (i = 0; i < q->n; i++)
		if (strcmp(q->key[i], key) == 0) {
			if (len != NULL)
				*len = q->len[i];
			return q->val[i];
		}
	return NULL;
}

/* Free what http_query_parse allocated. */
void
http_query_free(struct http_query *q)
{
	int i;

	for (i = 0; i < q->n; i++) {
		free(q->key[i]);
		free(q->val[i]);
	}
	q->n = 0;
}

/* The raw query string of a request ("" when none). */
const char *
http_query_string(struct evhttp_request *req)
{
	const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));

	return q ? q : "";
}

/* Count a request whose answer comes later (drain on stop). */
void
http_hold(void)
{
	http.inflight++;
}

/* The later answer was sent. */
void
http_release(void)
{
	http.inflight--;
}

/* Requests still waiting for an answer. */
int
http_inflight(void)
{
	return http.inflight;
}

static void
http_healthz_cb(struct redisReply *reply, void *arg, const char *err)
{
	struct evhttp_request *req = arg;

	if (reply == NULL || err != NULL)
		http_json(req, 503, json_pack("{s:s, s:s, s:s}", "status", "unavailable", "redis",
		    "down", "message", err ? err : rds_error()));
	else
		http_json(req, 200, json_pack("{s:s, s:s, s:s, s:o}", "status", "ok", "redis", "ok",
		    "version", DVCGW_VERSION, "counters", http_counters()));
	http_release();
}

/* What this process has done since it started, for /healthz. */
static json_t *
http_counters(void)
{
	unsigned long long turns, conflicts, sent, retried, dead;

	conv_stats(&turns, &conflicts);
	outbox_stats(&sent, &retried, &dead);
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:i}", "turns", (json_int_t)turns,
	    "conflicts", (json_int_t)conflicts, "replies_sent", (json_int_t)sent,
	    "replies_retried", (json_int_t)retried, "replies_dead", (json_int_t)dead,
	    "redis_commands", (json_int_t)rds_ncommands(), "outbox_inflight", outbox_inflight());
}

/* GET /healthz: 200 when Redis answers a PING now, 503 and why otherwise. */
static void
http_healthz(struct evhttp_request *req, void *arg)
{
	if (!rds_ready() || rds_command(http_healthz_cb, req, "PING") != 0) {
		http_json(req, 503, json_pack("{s:s, s:s, s:s}", "status", "unavailable", "redis",
		    "down", "message", rds_error()));
		return;
	}
	http_hold();
}

/* GET /livez: the process answers; no Redis work (also the benchmark's bare route). */
static void
http_livez(struct evhttp_request *req, void *arg)
{
	http_text(req, 200, "ok\n");
}

static const char *
http_method_name(int m)
{
	switch (m) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PATCH: return "PATCH";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	default: return "this method";
	}
}

/* Every request: find the route by path, check the method, the body size, then dispatch. */
static void
http_dispatch_cb(struct evhttp_request *req, void *arg)
{
	const char *path;
	const struct http_route *r = NULL;
	size_t i;
	int m = evhttp_request_get_command(req);
	char allow[64];

	path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (path == NULL)
		path = "/";
	for (i = 0; i < sizeof http_routes / sizeof http_routes[0]; i++)
		if (strcmp(http_routes[i].path, path) == 0) {
			r = &http_routes[i];
			break;
		}
	if (r == NULL) {
		http_error(req, 404, "not_found", "There is nothing at %s.", path);
		return;
	}
	if ((r->methods & m) == 0) {
		allow[0] = '\0';
		if (r->methods & EVHTTP_REQ_GET)
			strcat(allow, "GET");
		if (r->methods & EVHTTP_REQ_POST)
			strcat(allow, *allow ? ", POST" : "POST");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
		http_error(req, 405, "method_not_allowed", "%s does not accept %s; use %s.", path,
		    http_method_name(m), allow);
		return;
	}
	if (http_body_too_large(req)) {
		http_error(req, 413, "body_too_large", "The request body is larger than %d bytes.",
		    http.cfg->max_body);
		return;
	}
	r->fn(req, NULL);
}

/* Bind and start serving. fatal on failure (start-up). Returns the bound port. */
int
http_start(struct event_base *base, const struct config *cfg)
{
	struct evhttp_bound_socket *bound;
	struct sockaddr_storage ss;
	ev_socklen_t sl = sizeof ss;
	int port;

	http.cfg = cfg;
	if ((http.http = evhttp_new(base)) == NULL)
		fatalx("evhttp_new failed");
	evhttp_set_max_body_size(http.http, (ev_ssize_t)cfg->max_body * HTTP_HARD_BODY_FACTOR);
	evhttp_set_max_headers_size(http.http, cfg->max_headers);
	evhttp_set_timeout(http.http, cfg->request_timeout);
	evhttp_set_allowed_methods(http.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	    EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(http.http, http_dispatch_cb, NULL);
	bound = evhttp_bind_socket_with_handle(http.http, cfg->listen_host,
	    (ev_uint16_t)cfg->listen_port);
	if (bound == NULL)
		fatal("cannot listen on %s:%d", cfg->listen_host, cfg->listen_port);
	http.bound = bound;
	getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl);
	port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
	return port;
}

/* Stop accepting new connections; requests already read still get their answers. */
void
http_stop_accepting(void)
{
	if (http.bound != NULL)
		evhttp_del_accept_socket(http.http, http.bound);
	http.bound = NULL;
}

/* Free the server (after draining). */
void
http_free(void)
{
	if (http.http != NULL)
		evhttp_free(http.http);
	http.http = NULL;
}
