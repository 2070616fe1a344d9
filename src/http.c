/* http.c: the HTTP/1.1 server: connections on bufferevents, a strict request parser, the route table
 * with each route's caller check, JSON error answers that are valid whatever bytes came in, query
 * parsing that keeps NUL bytes (UCS-2 text from Kannel), and graceful stop. Every connection is
 * bounded: one request handled at a time, pipelined input capped (reading stops at the cap), output
 * capped (no new request is read while an answer waits for the client), a deadline for each request
 * from its first byte and for idle keep-alive, a cap on connections, and a pause in accepting at the
 * file descriptor limit. */
#include <sys/socket.h>
#include <sys/queue.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <sodium.h>

#include "dvcgw.h"

#define HTTP_MAX_FIELDS		64		/* header fields per request */
#define HTTP_OUT_HIGH		(256 * 1024)	/* answers buffered before reading pauses */
#define HTTP_ACCEPT_PAUSE_MS	500		/* at the fd limit, stop accepting this long */
#define HTTP_CLOSE_GRACE_S	2		/* a last answer (408, 413) waits this long to leave */

/* One request, from its parsed head to its answer. It outlives its connection when the client hangs
 * up while a handler is still working: conn is then NULL and the answer is dropped. */
struct http_req {
	struct http_conn	*conn;
	int			 method;	/* HTTP_* */
	int			 minor;		/* HTTP/1.minor */
	int			 keepalive;
	char			*head;		/* the head, split in place */
	const char		*target;	/* as sent: path[?query] */
	char			*path;		/* up to '?', xmalloc'd */
	const char		*rest;		/* in path, after a prefix route's prefix */
	const char		*query;		/* after '?', or "" */
	int			 nfields;
	const char		*name[HTTP_MAX_FIELDS];
	const char		*value[HTTP_MAX_FIELDS];
	size_t			 clen;		/* Content-Length */
	int			 expect_continue;
	char			*body;		/* clen bytes + NUL */
	char			*out;		/* extra answer header lines, "Name: value\r\n"... */
	char			 peer[INET6_ADDRSTRLEN];
	int			 loopback;
	const struct http_route	*route;		/* matched; its handler runs once auth allows */
	void			*who;		/* auth.c's record of the caller (plain, free()d) */
};

struct http_conn {
	struct bufferevent	*bev;
	struct event		*timer;
	struct http_req		*req;		/* being read or handled: one at a time */
	int			 state;
#define HC_IDLE		0	/* between requests (keep-alive) */
#define HC_HEAD		1	/* reading a head */
#define HC_BODY		2	/* reading a body */
#define HC_HANDLING	3	/* a handler has the request */
#define HC_CLOSING	4	/* the last answer is leaving; then close */
	int			 eof, advancing;
	size_t			 scanned;	/* head bytes already searched for its end */
	char			 peer[INET6_ADDRSTRLEN];
	int			 loopback;
	LIST_ENTRY(http_conn)	 entry;
};

#define HTTP_CONSOLE_METHODS	(HTTP_GET | HTTP_POST | HTTP_PUT | HTTP_DELETE | HTTP_PATCH | \
    HTTP_OPTIONS)

static void	http_healthz(struct http_req *, void *);
static void	http_livez(struct http_req *, void *);
static json_t	*http_counters(void);
static void	http_advance(struct http_conn *);
static void	http_conn_free(struct http_conn *);

/* The gateway's own endpoints; each channel brings its own (struct channel routes). */
static const struct http_route http_routes[] = {
	{ "/healthz", HTTP_GET, AUTH_ANYONE, http_healthz, 0 },
	{ "/livez", HTTP_GET, AUTH_ANYONE, http_livez, 0 },
	{ "/metrics", HTTP_GET, AUTH_METRICS, metrics_serve, 0 },
	{ "/api/v1/otp", HTTP_POST, AUTH_PORTAL, otp_create, 0 },
	{ "/api/v1/otp/check", HTTP_POST, AUTH_PORTAL, otp_verify, 0 },
	{ "/api/v1/otp/", HTTP_GET | HTTP_DELETE, AUTH_PORTAL, otp_item, HTTP_ROUTE_PREFIX },
	{ "/api/v1/conversations/", HTTP_GET, AUTH_STAFF, conv_history,
	    HTTP_ROUTE_PREFIX | HTTP_ROUTE_SEGMENTS },
	{ "/api/v1/login", HTTP_POST, AUTH_ANYONE, staff_login, 0 },	/* checks the password */
	{ "/api/v1/logout", HTTP_POST, AUTH_STAFF, staff_logout, 0 },
	{ "/api/v1/dossiers/", HTTP_GET, AUTH_STAFF, hotline_dossier, HTTP_ROUTE_PREFIX },
	{ "/api/v1/messages", HTTP_POST, AUTH_STAFF, hotline_message, 0 },
	{ "/api/v1/audit", HTTP_GET, AUTH_STAFF, audit_list, 0 },
	{ "/api/v1/phones/*/otp", HTTP_GET, AUTH_STAFF, hotline_otp, HTTP_ROUTE_SEGMENT },
	{ "/api/v1/phones/*/otp/resend", HTTP_POST, AUTH_STAFF, hotline_otp, HTTP_ROUTE_SEGMENT },
	{ "/api/v1/users", HTTP_GET, AUTH_STAFF, staff_users, 0 },
	{ "/api/v1/users/*/disable", HTTP_POST, AUTH_STAFF, staff_user_able, HTTP_ROUTE_SEGMENT },
	{ "/api/v1/users/*/enable", HTTP_POST, AUTH_STAFF, staff_user_able, HTTP_ROUTE_SEGMENT },
	{ "/api/v1/dossiers/*/status", HTTP_POST, AUTH_STAFF_OR_ONESTOP, notify_status,
	    HTTP_ROUTE_SEGMENT },
	{ "/api/v1/dossiers/*/notify", HTTP_POST, AUTH_STAFF, notify_push, HTTP_ROUTE_SEGMENT },
	{ "/api/v1/onestop/events", HTTP_POST, AUTH_ONESTOP, notify_event, 0 },
	/* console.c answers every method and depth itself, so each answer has its headers */
	{ "/console", HTTP_GET, AUTH_ANYONE, console_redirect, 0 },
	{ "/console/", HTTP_CONSOLE_METHODS, AUTH_ANYONE, console_serve, 0 },	/* index.html */
	{ "/console/", HTTP_CONSOLE_METHODS, AUTH_ANYONE, console_serve,
	    HTTP_ROUTE_PREFIX | HTTP_ROUTE_SEGMENTS },
};

static const struct {
	const char	*name;
	int		 bit;
} http_methods[] = {
	{ "GET", HTTP_GET }, { "POST", HTTP_POST }, { "PUT", HTTP_PUT },
	{ "DELETE", HTTP_DELETE }, { "HEAD", HTTP_HEAD }, { "PATCH", HTTP_PATCH },
	{ "OPTIONS", HTTP_OPTIONS },
};

static struct {
	struct event_base	*base;
	struct evconnlistener	*listener;
	struct event		*resume;	/* re-enables accepting after a pause */
	const struct config	*cfg;
	struct timeval		 timeout;	/* listen.timeout, a common timeout */
	struct timeval		 grace;
	LIST_HEAD(, http_conn)	 conns;
	int			 nconns, paused, stopping;
	int			 inflight;	/* requests held for a later answer */
	size_t			 in_high;	/* input buffered per connection */
	unsigned long long	 refused_conns;
} http;

/* ---- answers -------------------------------------------------------------------------------- */

static const char *
http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 417: return "Expectation Failed";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Status";
	}
}

static void
http_req_free(struct http_req *req)
{
	if (req == NULL)
		return;
	free(req->head);
	free(req->path);
	if (req->body != NULL)		/* it may have held a password */
		sodium_memzero(req->body, req->clen);
	free(req->body);
	free(req->out);
	free(req->who);
	free(req);
}

/* Add a header line to the answer (before http_send). Values are the daemon's own, never a
 * client's bytes; CR and LF are refused all the same. */
void
http_add_header(struct http_req *req, const char *name, const char *value)
{
	char *line;

	if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL) {
		log_error("http: header %s not sent: it holds a CR or LF", name);
		return;
	}
	line = xasprintf("%s%s: %s\r\n", req->out ? req->out : "", name, value);
	free(req->out);
	req->out = line;
}

/* Answer req with status and body (len bytes of type ctype) and free req. The connection then reads
 * its next request, or closes when it must. */
void
http_send(struct http_req *req, int status, const char *ctype, const char *body, size_t len)
{
	struct http_conn *c = req->conn;
	struct evbuffer *out;
	int closing;

	if (c == NULL) {	/* the client hung up meanwhile */
		http_req_free(req);
		return;
	}
	if (status == 401 || status == 403)
		metrics_inc(MET_REFUSALS, "auth", NULL);
	else if (status == 429)
		metrics_inc(MET_REFUSALS, "rate_limit", NULL);
	else if (status == 413 || status == 431)
		metrics_inc(MET_REFUSALS, "size", NULL);
	closing = !req->keepalive || c->eof || http.stopping || status == 408 || status == 413 ||
	    status == 431 || (status == 400 && c->state != HC_HANDLING);
	out = bufferevent_get_output(c->bev);
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "%s%s\r\n", status, http_reason(status), ctype, len, req->out ? req->out : "",
	    closing ? "Connection: close\r\n" : "");
	if (req->method != HTTP_HEAD && len > 0)
		evbuffer_add(out, body, len);
	c->req = NULL;
	http_req_free(req);
	if (closing) {
		c->state = HC_CLOSING;
		bufferevent_disable(c->bev, EV_READ);
		evtimer_add(c->timer, &http.grace);
		return;
	}
	c->state = HC_IDLE;
	evtimer_add(c->timer, &http.timeout);
	if (!c->advancing)
		http_advance(c);
}

/* Answer with a JSON body; takes ownership of body. A NULL body (jansson refused something) is an
 * internal error, answered as such rather than crashing. */
void
http_json(struct http_req *req, int status, json_t *body)
{
	char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;

	json_decref(body);
	if (s == NULL) {
		log_error("http: an answer could not be encoded as JSON (status %d)", status);
		s = xstrdup("{\"error\":\"internal\",\"message\":\"The answer could not be encoded.\"}");
		status = 500;
	}
	s = xrealloc(s, strlen(s) + 2);
	strcat(s, "\n");
	http_send(req, status, "application/json; charset=utf-8", s, strlen(s));
	free(s);
}

/* Answer with the contract's error shape: {"error": code, "message": sentence}. The sentence may
 * quote what the client sent: it is made valid UTF-8 first, so this cannot fail. */
void
http_error(struct http_req *req, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	char *raw, *msg;
	const char *where = req->path ? req->path : "-";

	va_start(ap, fmt);
	raw = xvasprintf(fmt, ap);
	va_end(ap);
	msg = text_utf8_scrub(raw, strlen(raw), 0, 1024);
	free(raw);
	/* A route with a part in its path logs its pattern: the part may be a phone. */
	if (req->route != NULL && (req->route->flags & (HTTP_ROUTE_SEGMENT | HTTP_ROUTE_PREFIX)))
		where = req->route->path;
	if (status >= 500)
		log_warn_limited("http %d %s: %s", status, where, msg);
	else
		log_debug("http %d %s: %s", status, where, msg);
	http_json(req, status, json_pack("{s:s, s:s}", "error", code, "message", msg));
	free(msg);
}

/* Answer with a plain text body (USSD, Kannel). */
void
http_text(struct http_req *req, int status, const char *text)
{
	http_send(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* ---- the request, for handlers -------------------------------------------------------------- */

/* The request body as a NUL-terminated copy (it may itself contain NULs; *len tells). */
char *
http_body(struct http_req *req, size_t *len)
{
	char *p = xmalloc(req->clen + 1);

	if (req->clen > 0)
		memcpy(p, req->body, req->clen);
	p[req->clen] = '\0';
	if (len != NULL)
		*len = req->clen;
	return p;
}

/* The body as one JSON object, read in place: 415 without Content-Type: application/json, 400
 * for bytes that are not UTF-8 (or hold a NUL) or that are not one JSON object (duplicate keys
 * refused). NULL after answering. sha256, when not NULL, gets the body's digest in hex (65 bytes),
 * taken before any check (an Idempotency-Key compares it). */
json_t *
http_body_json(struct http_req *req, char *sha256)
{
	unsigned char h[crypto_hash_sha256_BYTES];
	const char *body = req->clen > 0 && req->body != NULL ? req->body : "";
	size_t len = body == req->body ? req->clen : 0;
	json_error_t jerr;
	json_t *j;

	if (sha256 != NULL) {
		crypto_hash_sha256(h, (const unsigned char *)body, len);
		sodium_bin2hex(sha256, 2 * sizeof h + 1, h, sizeof h);
	}
	if (!http_content_type_is(req, "application/json")) {
		http_error(req, 415, "unsupported_media_type", "Send the body as JSON with "
		    "Content-Type: application/json.");
		return NULL;
	}
	if (!text_utf8_valid(body, len) || memchr(body, '\0', len) != NULL) {
		http_error(req, 400, "invalid_json", "The body is not valid UTF-8.");
		return NULL;
	}
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(j)) {
		http_error(req, 400, "invalid_json", "The body is not a JSON object%s%s.",
		    j == NULL ? ": " : "", j == NULL ? jerr.text : "");
		json_decref(j);
		return NULL;
	}
	return j;
}

/* Overwrite the body (it held a password). */
void
http_body_wipe(struct http_req *req)
{
	if (req->body != NULL)
		sodium_memzero(req->body, req->clen);
}

/* auth.c's record of who is calling (NULL before auth_check let the request through). */
void *
http_who(struct http_req *req)
{
	return req->who;
}

/* Keep auth.c's record of the caller with the request (freed with it by free()). */
void
http_set_who(struct http_req *req, void *who)
{
	free(req->who);
	req->who = who;
}

/* The value of a header field (the first; http_parse refuses repeats of the ones that matter). */
const char *
http_header(struct http_req *req, const char *name)
{
	int i;

	for (i = 0; i < req->nfields; i++)
		if (strcasecmp(req->name[i], name) == 0)
			return req->value[i];
	return NULL;
}

int
http_method(struct http_req *req)
{
	return req->method;
}

const char *
http_path(struct http_req *req)
{
	return req->path;
}

/* What follows a prefix route's prefix in the path ("" for an exact route). */
const char *
http_path_rest(struct http_req *req)
{
	return req->rest != NULL ? req->rest : "";
}

/* The raw query string of a request ("" when none). */
const char *
http_query_string(struct http_req *req)
{
	return req->query;
}

/* The client's address, as text. */
const char *
http_peer(struct http_req *req)
{
	return req->peer;
}

/* 1 when the client is on this machine. */
int
http_peer_loopback(struct http_req *req)
{
	return req->loopback;
}

/* 1 when the body is larger than listen.max_body (never: such bodies are refused before reading;
 * kept for handlers with their own smaller limit). */
int
http_body_too_large(struct http_req *req)
{
	return req->clen > (size_t)http.cfg->max_body;
}

/* 1 when the Content-Type header's media type is type (parameters ignored). */
int
http_content_type_is(struct http_req *req, const char *type)
{
	const char *ct = http_header(req, "Content-Type");
	size_t n = strlen(type);

	return ct != NULL && strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' ||
	    ct[n] == ' ');
}

/* ---- query strings -------------------------------------------------------------------------- */

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

/* Percent-decode p[0..n) (in a query, plus_space: '+' is a space) into a new buffer; NUL bytes are
 * kept, *outlen tells the length. -1 on a malformed escape. */
static int
http_unescape(const char *p, size_t n, int plus_space, char **out, size_t *outlen)
{
	char *q = xmalloc(n + 1);
	size_t i, j = 0;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (p[i] == '+' && plus_space)
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

/* The path's variable part (http_path_rest, up to the next '/') percent-decoded as a path is ('+'
 * is a plus, '&' and '=' are themselves): a new string, or NULL when it is longer than max bytes,
 * has a malformed escape, a NUL byte or is not UTF-8. */
char *
http_path_segment(struct http_req *req, size_t max)
{
	const char *rest = http_path_rest(req), *slash = strchr(rest, '/');
	size_t n = slash ? (size_t)(slash - rest) : strlen(rest), len;
	char *v;

	if (n > max || http_unescape(rest, n, 0, &v, &len) != 0)
		return NULL;
	if (strlen(v) != len || !text_utf8_valid(v, len)) {
		free(v);
		return NULL;
	}
	return v;
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
		if (http_unescape(p, (size_t)(eq - p), 1, &k, &klen) != 0) {
			*cause = xstrdup("a parameter name has a malformed %-escape");
			goto fail;
		}
		if (memchr(k, '\0', klen) != NULL || !text_utf8_valid(k, klen)) {
			free(k);
			*cause = xstrdup("a parameter name is not valid UTF-8");
			goto fail;
		}
		if (http_unescape(eq < amp ? eq + 1 : amp, eq < amp ? (size_t)(amp - eq - 1) : 0, 1,
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

/* One parameter of a raw query string, decoded (NULL when absent or malformed); xmalloc'd. */
char *
http_query_value(const char *qs, const char *key)
{
	struct http_query q;
	char *cause = NULL, *v = NULL;
	const char *p;
	size_t len;

	if (http_query_parse(qs, strlen(qs), &q, &cause) != 0) {
		free(cause);
		return NULL;
	}
	if ((p = http_query_get(&q, key, &len)) != NULL && memchr(p, '\0', len) == NULL)
		v = xstrdup(p);
	http_query_free(&q);
	return v;
}

/* ---- parsing -------------------------------------------------------------------------------- */

static int
http_tchar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Cut the next line of the head at *p (CRLF or LF); NULL when a bare CR is in it. */
static char *
http_line(char **p)
{
	char *s = *p, *nl = strchr(s, '\n');

	if (nl == NULL)
		return NULL;
	*p = nl + 1;
	if (nl > s && nl[-1] == '\r')
		nl--;
	*nl = '\0';
	if (strchr(s, '\r') != NULL)
		return NULL;
	return s;
}

/* Parse a request head (NUL-terminated, the empty line included) into req. 0, or the HTTP status
 * to answer with and *cause (a sentence). Pure: the fuzz target calls it directly. */
int
http_parse(char *head, struct http_req *req, char **cause)
{
	char *p = head, *line, *sp, *name, *v, *e, *q;
	const char *te = NULL;
	size_t i, ml;
	int have_clen = 0, conn_close = 0, conn_keep = 0;
	unsigned long long n;

	req->method = 0;
	do {	/* RFC 9112 2.2: ignore empty lines before the request line */
		if ((line = http_line(&p)) == NULL)
			goto bad_line;
	} while (*line == '\0' && *p != '\0');
	if ((sp = strchr(line, ' ')) == NULL)
		goto bad_line;
	ml = (size_t)(sp - line);
	for (i = 0; i < sizeof http_methods / sizeof http_methods[0]; i++)
		if (strlen(http_methods[i].name) == ml && strncmp(line, http_methods[i].name, ml) == 0)
			req->method = http_methods[i].bit;
	for (i = 0; i < ml; i++)
		if (!http_tchar((unsigned char)line[i]))
			goto bad_line;
	if (ml == 0 || ml > 16)
		goto bad_line;
	if (req->method == 0)
		req->method = HTTP_OTHER;
	req->target = sp + 1;
	if ((sp = strchr(sp + 1, ' ')) == NULL)
		goto bad_line;
	*sp = '\0';
	if (strncmp(sp + 1, "HTTP/1.", 7) != 0 || sp[8] < '0' || sp[8] > '9' || sp[9] != '\0') {
		if (strncmp(sp + 1, "HTTP/", 5) == 0 && sp[6] >= '2' && sp[6] <= '9') {
			*cause = xstrdup("Only HTTP/1.0 and HTTP/1.1 are spoken here.");
			return 505;
		}
		goto bad_line;
	}
	req->minor = sp[8] - '0';
	if (req->target[0] != '/') {
		*cause = xstrdup("The request target must be a path starting with /.");
		return 400;
	}
	for (q = (char *)req->target; *q != '\0'; q++)
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7F) {
			*cause = xstrdup("The request target may hold only visible ASCII characters; "
			    "percent-encode the others.");
			return 400;
		}
	q = strchr(req->target, '?');
	req->path = q ? xstrndup(req->target, (size_t)(q - req->target)) : xstrdup(req->target);
	req->query = q ? q + 1 : "";

	req->nfields = 0;
	for (;;) {
		if ((line = http_line(&p)) == NULL) {
			*cause = xstrdup("A header line has a bare CR or no end.");
			return 400;
		}
		if (*line == '\0')
			break;
		if (*line == ' ' || *line == '\t') {
			*cause = xstrdup("Folded header lines are not accepted.");
			return 400;
		}
		if ((v = strchr(line, ':')) == NULL || v == line) {
			*cause = xstrdup("A header line has no name or no colon.");
			return 400;
		}
		name = line;
		*v++ = '\0';
		for (q = name; *q != '\0'; q++)
			if (!http_tchar((unsigned char)*q)) {
				*cause = xstrdup("A header name holds a character that is not allowed.");
				return 400;
			}
		while (*v == ' ' || *v == '\t')
			v++;
		e = v + strlen(v);
		while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		for (q = v; *q != '\0'; q++)
			if ((unsigned char)*q < 0x20 && *q != '\t') {
				*cause = xstrdup("A header value holds a control character.");
				return 400;
			}
		if (req->nfields == HTTP_MAX_FIELDS) {
			*cause = xasprintf("More than %d header fields.", HTTP_MAX_FIELDS);
			return 431;
		}
		if (strcasecmp(name, "Content-Length") == 0) {
			if (have_clen) {
				*cause = xstrdup("Content-Length is given more than once.");
				return 400;
			}
			have_clen = 1;
			if (*v == '\0' || strspn(v, "0123456789") != strlen(v) || strlen(v) > 12) {
				*cause = xstrdup("Content-Length must be a number of bytes.");
				return 400;
			}
			n = strtoull(v, NULL, 10);
			req->clen = (size_t)n;
		} else if (strcasecmp(name, "Transfer-Encoding") == 0)
			te = v;
		else if (strcasecmp(name, "Connection") == 0) {
			if (strcasestr(v, "close") != NULL)
				conn_close = 1;
			if (strcasestr(v, "keep-alive") != NULL)
				conn_keep = 1;
		} else if (strcasecmp(name, "Expect") == 0) {
			if (strcasecmp(v, "100-continue") != 0) {
				*cause = xstrdup("Only \"Expect: 100-continue\" is understood.");
				return 417;
			}
			req->expect_continue = req->minor >= 1;
		}
		req->name[req->nfields] = name;
		req->value[req->nfields] = v;
		req->nfields++;
	}
	if (te != NULL) {
		*cause = xstrdup("Send the body with a Content-Length header; Transfer-Encoding is not "
		    "accepted.");
		return 411;
	}
	req->keepalive = req->minor >= 1 ? !conn_close : conn_keep && !conn_close;
	return 0;
bad_line:
	*cause = xstrdup("The request line is not \"METHOD /path HTTP/1.1\".");
	return 400;
}

/* ---- connections ---------------------------------------------------------------------------- */

/* Does route r serve path? An exact route matches the whole path; a prefix route a path that is
 * its prefix and then one non-empty segment (no further '/'), which *rest points to; a segment
 * route a path with one non-empty segment where its '*' is (*rest points to it, up to the '/'). */
static int
http_route_match(const struct http_route *r, const char *path, const char **rest)
{
	size_t n;

	if (r->flags & HTTP_ROUTE_SEGMENT) {
		const char *star = strchr(r->path, '*'), *end;

		n = (size_t)(star - r->path);
		if (strncmp(r->path, path, n) != 0 || path[n] == '\0' || path[n] == '/' ||
		    (end = strchr(path + n, '/')) == NULL || strcmp(end, star + 1) != 0)
			return 0;
		*rest = path + n;
		return 1;
	}
	if (!(r->flags & HTTP_ROUTE_PREFIX))
		return strcmp(r->path, path) == 0;
	n = strlen(r->path);
	if (strncmp(r->path, path, n) != 0 || path[n] == '\0' ||
	    (!(r->flags & HTTP_ROUTE_SEGMENTS) && strchr(path + n, '/') != NULL))
		return 0;
	*rest = path + n;
	return 1;
}

/* Hand a complete request to its route: method, size, caller, then the handler. */
static void
http_dispatch(struct http_req *req)
{
	const struct http_route *r = NULL, *cr;
	const struct channel *c;
	size_t i;
	int status;
	char allow[64], *cause = NULL;

	for (i = 0; i < sizeof http_routes / sizeof http_routes[0]; i++)
		if (http_route_match(&http_routes[i], req->path, &req->rest)) {
			r = &http_routes[i];
			break;
		}
	for (i = 0; r == NULL && (c = channel_at(i)) != NULL; i++)
		for (cr = c->routes; cr != NULL && cr->path != NULL; cr++)
			if (http_route_match(cr, req->path, &req->rest)) {
				r = cr;
				break;
			}
	if (r == NULL) {
		http_error(req, 404, "not_found", "There is nothing at %s.", req->path);
		return;
	}
	if ((r->methods & req->method) == 0 &&
	    !(req->method == HTTP_HEAD && (r->methods & HTTP_GET))) {
		allow[0] = '\0';
		for (i = 0; i < sizeof http_methods / sizeof http_methods[0]; i++)
			if (r->methods & http_methods[i].bit) {
				if (allow[0] != '\0')
					strcat(allow, ", ");
				strcat(allow, http_methods[i].name);
			}
		http_add_header(req, "Allow", allow);
		http_error(req, 405, "method_not_allowed", "%s does not accept this method; use %s.",
		    req->path, allow);
		return;
	}
	req->route = r;
	if ((status = auth_check(req, r->role, &cause)) == AUTH_PENDING)
		return;		/* auth.c calls http_auth_done */
	http_auth_done(req, status, cause);
	free(cause);
}

/* auth.c decided about req: 0 runs the route's handler; otherwise answer status (401, 403, 503)
 * with the sentence cause. */
void
http_auth_done(struct http_req *req, int status, const char *cause)
{
	if (status == 0) {
		req->route->fn(req, NULL);
		return;
	}
	if (status == 401)
		http_add_header(req, "WWW-Authenticate", "Bearer realm=\"dvcgw\"");
	if (status == 503)
		http_add_header(req, "Retry-After", "1");
	http_error(req, status, status == 401 ? "unauthorized" : status == 403 ? "forbidden" :
	    "unavailable", "%s", cause ? cause : "");
}

/* Answer a request that could not be read whole, and close. */
static void
http_refuse(struct http_conn *c, int status, const char *code, const char *cause)
{
	struct http_req *req = c->req;

	if (req == NULL) {
		req = xcalloc(1, sizeof *req);
		req->conn = c;
		c->req = req;
	}
	req->keepalive = 0;
	log_info_limited("http: %s: %d %s", c->peer, status, cause);
	http_error(req, status, code, "%s", cause);
}

/* Read what the connection has buffered: the next head, a body, then the handler; again while
 * pipelined requests are waiting and the client reads its answers. */
static void
http_advance(struct http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct http_req *req;
	unsigned char *p;
	size_t n, lim, i, end;
	int status;
	char *cause = NULL;

	c->advancing = 1;
	while (c->state != HC_HANDLING && c->state != HC_CLOSING) {
		n = evbuffer_get_length(in);
		if (c->state == HC_IDLE) {
			if (n == 0 || evbuffer_get_length(bufferevent_get_output(c->bev)) >
			    HTTP_OUT_HIGH)
				break;
			c->state = HC_HEAD;
			c->scanned = 0;
			evtimer_add(c->timer, &http.timeout);	/* the whole request from here */
		}
		if (c->state == HC_HEAD) {
			lim = n < (size_t)http.cfg->max_headers + 2 ? n :
			    (size_t)http.cfg->max_headers + 2;
			p = evbuffer_pullup(in, (ev_ssize_t)lim);
			end = 0;
			for (i = c->scanned; i < lim && end == 0; i++)
				if (p[i] == '\n' && i > 0 && (p[i - 1] == '\n' ||
				    (p[i - 1] == '\r' && i > 1 && p[i - 2] == '\n')))
					end = i + 1;
			if (end == 0) {
				if (lim > (size_t)http.cfg->max_headers) {
					http_refuse(c, 431, "headers_too_large", "The request head is "
					    "larger than the limit.");
					break;
				}
				c->scanned = lim;
				break;
			}
			if (memchr(p, '\0', end) != NULL) {
				evbuffer_drain(in, end);
				http_refuse(c, 400, "bad_request", "The request head holds a NUL "
				    "byte.");
				break;
			}
			req = xcalloc(1, sizeof *req);
			req->conn = c;
			memcpy(req->peer, c->peer, sizeof req->peer);
			req->loopback = c->loopback;
			c->req = req;
			req->head = xmalloc(end + 1);
			evbuffer_remove(in, req->head, end);
			req->head[end] = '\0';
			if ((status = http_parse(req->head, req, &cause)) != 0) {
				http_refuse(c, status, status == 411 ? "length_required" :
				    status == 431 ? "headers_too_large" : status == 505 ?
				    "version_not_supported" : "bad_request", cause);
				free(cause);
				break;
			}
			if (req->clen > (size_t)http.cfg->max_body) {
				cause = xasprintf("The request body is larger than %d bytes.",
				    http.cfg->max_body);
				http_refuse(c, 413, "body_too_large", cause);
				free(cause);
				break;
			}
			c->state = HC_BODY;
			if (req->expect_continue && req->clen > evbuffer_get_length(in))
				evbuffer_add_printf(bufferevent_get_output(c->bev),
				    "HTTP/1.1 100 Continue\r\n\r\n");
			n = evbuffer_get_length(in);
		}
		if (c->state == HC_BODY) {
			req = c->req;
			if (n < req->clen)
				break;
			req->body = xmalloc(req->clen + 1);
			evbuffer_remove(in, req->body, req->clen);
			req->body[req->clen] = '\0';
			c->state = HC_HANDLING;
			evtimer_del(c->timer);
			http_dispatch(req);	/* may answer at once: the loop goes on */
		}
	}
	c->advancing = 0;
	if (c->eof && (c->state == HC_IDLE || c->state == HC_HEAD || c->state == HC_BODY)) {
		/* Nothing more will come: close once the answers already queued have left. */
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
			http_conn_free(c);
			return;
		}
		c->state = HC_CLOSING;
		evtimer_add(c->timer, &http.grace);
	}
}

static void
http_read_cb(struct bufferevent *bev, void *arg)
{
	http_advance(arg);
}

/* The output drained: close after a last answer, or read what waits. */
static void
http_write_cb(struct bufferevent *bev, void *arg)
{
	struct http_conn *c = arg;

	if (c->state == HC_CLOSING)
		http_conn_free(c);
	else if (c->state == HC_IDLE && !c->advancing)
		http_advance(c);
}

static void
http_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct http_conn *c = arg;

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		/* The client finished sending (it may still read): answer what it sent, then close. */
		c->eof = 1;
		bufferevent_disable(bev, EV_READ);
		if (c->state != HC_CLOSING && !c->advancing)
			http_advance(c);
		return;
	}
	http_conn_free(c);
}

/* A deadline passed: a request not read in time gets 408; an idle or stuck connection closes. */
static void
http_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct http_conn *c = arg;

	if (c->state == HC_HEAD || c->state == HC_BODY) {
		http_refuse(c, 408, "request_timeout", "The request was not received in time.");
		return;
	}
	http_conn_free(c);
}

static void
http_conn_free(struct http_conn *c)
{
	if (c->req != NULL) {
		if (c->state == HC_HANDLING)
			c->req->conn = NULL;	/* the handler answers into the void */
		else
			http_req_free(c->req);
	}
	LIST_REMOVE(c, entry);
	event_free(c->timer);
	bufferevent_free(c->bev);
	free(c);
	http.nconns--;
	if (http.paused == 2 && http.listener != NULL && !http.stopping) {
		http.paused = 0;
		evconnlistener_enable(http.listener);
	}
}

static int
http_is_loopback(const struct sockaddr *sa)
{
	const struct sockaddr_in6 *s6;

	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && s6->sin6_addr.s6_addr[12] == 127;
	}
	return sa->sa_family == AF_UNIX;
}

/* Start serving a new connection. */
void
http_conn_new(evutil_socket_t fd, const struct sockaddr *sa)
{
	struct http_conn *c = xcalloc(1, sizeof *c);

	c->bev = bufferevent_socket_new(http.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	c->timer = evtimer_new(http.base, http_timer_cb, c);
	c->loopback = sa ? http_is_loopback(sa) : 0;
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->peer,
		    sizeof c->peer);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->peer,
		    sizeof c->peer);
	else
		strcpy(c->peer, "local");
	bufferevent_setcb(c->bev, http_read_cb, http_write_cb, http_event_cb, c);
	/* Reading pauses while this much is buffered: one head and one body, and some pipelining. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, http.in_high);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	evtimer_add(c->timer, &http.timeout);
	LIST_INSERT_HEAD(&http.conns, c, entry);
	http.nconns++;
	if (http.nconns >= http.cfg->max_connections && http.listener != NULL) {
		evconnlistener_disable(http.listener);
		if (http.paused == 0)
			log_warn_limited("http: %d connections open (listen.max_connections); not "
			    "accepting more until one closes", http.nconns);
		http.paused = 2;
	}
}

static void
http_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
	http_conn_new(fd, sa);
}

static void
http_resume_cb(evutil_socket_t fd, short events, void *arg)
{
	if (http.listener != NULL && !http.stopping && http.nconns < http.cfg->max_connections) {
		http.paused = 0;
		evconnlistener_enable(http.listener);
	} else if (http.nconns >= http.cfg->max_connections)
		http.paused = 2;
}

/* accept() failed: at the descriptor limit (or out of memory), pause instead of spinning. */
static void
http_accept_error_cb(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { 0, HTTP_ACCEPT_PAUSE_MS * 1000 };

	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		evconnlistener_disable(l);
		http.paused = 1;
		http.refused_conns++;
		evtimer_add(http.resume, &tv);
		log_warn_limited("http: cannot accept connections (%s, %d open); pausing %d ms",
		    evutil_socket_error_to_string(err), http.nconns, HTTP_ACCEPT_PAUSE_MS);
		return;
	}
	log_warn_limited("http: accept: %s", evutil_socket_error_to_string(err));
}

/* ---- health --------------------------------------------------------------------------------- */

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

/* Connections open now (/metrics). */
int
http_nconns(void)
{
	return http.nconns;
}

static void
http_healthz_cb(struct redisReply *reply, void *arg, const char *err)
{
	struct http_req *req = arg;

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
	unsigned long long turns, conflicts, sent, retried, dead, reclaimed, recreated;
	unsigned long long n_changes, n_jobs, n_queued, n_held, n_sent, n_dead;
	int shards, instances;
	json_t *j;

	conv_stats(&turns, &conflicts);
	outbox_stats(&sent, &retried, &dead);
	outbox_recoveries(&reclaimed, &recreated);
	outbox_shares(&shards, &instances);
	notify_stats(&n_changes, &n_jobs, &n_queued, &n_held);
	outbox_notify_stats(&n_sent, &n_dead);
	j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:I, s:I, s:I, s:i, s:i, s:I}",
	    "turns",
	    (json_int_t)turns, "conflicts", (json_int_t)conflicts, "replies_sent", (json_int_t)sent,
	    "replies_retried", (json_int_t)retried, "replies_dead", (json_int_t)dead,
	    "redis_commands", (json_int_t)rds_ncommands(), "outbox_inflight", outbox_inflight(),
	    "connections", http.nconns, "accept_pauses", (json_int_t)http.refused_conns,
	    "outbox_reclaimed", (json_int_t)reclaimed, "outbox_groups_recreated",
	    (json_int_t)recreated, "outbox_shards", shards, "instances", instances,
	    "sms_not_answered", (json_int_t)sms_not_answered());
	if (j != NULL)
		json_object_update_new(j, otp_stats());
	if (j != NULL)
		json_object_update_new(j, store_onestop_stats());
	if (j != NULL)
		json_object_update_new(j, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
		    "notify_changes", (json_int_t)n_changes, "notify_jobs", (json_int_t)n_jobs,
		    "notify_queued", (json_int_t)n_queued, "notify_held", (json_int_t)n_held,
		    "notify_sent", (json_int_t)n_sent, "notify_dead", (json_int_t)n_dead));
	return j;
}

/* GET /healthz: 200 when Redis answers a PING now, 503 and why otherwise. */
static void
http_healthz(struct http_req *req, void *arg)
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
http_livez(struct http_req *req, void *arg)
{
	http_text(req, 200, "ok\n");
}

/* ---- start and stop ------------------------------------------------------------------------- */

/* Set up the server without listening (the fuzz target feeds connections by http_conn_new). */
void
http_init(struct event_base *base, const struct config *cfg)
{
	const struct timeval *tv;
	struct timeval t;

	http.base = base;
	http.cfg = cfg;
	LIST_INIT(&http.conns);
	t.tv_sec = cfg->request_timeout;
	t.tv_usec = 0;
	tv = event_base_init_common_timeout(base, &t);
	http.timeout = tv ? *tv : t;
	t.tv_sec = HTTP_CLOSE_GRACE_S;
	tv = event_base_init_common_timeout(base, &t);
	http.grace = tv ? *tv : t;
	http.in_high = (size_t)cfg->max_headers + (size_t)cfg->max_body + 4096;
	http.resume = evtimer_new(base, http_resume_cb, NULL);
}

/* Bind and start serving. fatal on failure (start-up). Returns the bound port. */
int
http_start(struct event_base *base, const struct config *cfg)
{
	struct evutil_addrinfo hints, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char port[16];
	int rc;

	http_init(base, cfg);
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG;
	snprintf(port, sizeof port, "%d", cfg->listen_port);
	if ((rc = evutil_getaddrinfo(cfg->listen_host, port, &hints, &ai)) != 0)
		fatalx("cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
		    evutil_gai_strerror(rc));
	http.listener = evconnlistener_new_bind(base, http_accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE |
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024, ai->ai_addr, (int)ai->ai_addrlen);
	evutil_freeaddrinfo(ai);
	if (http.listener == NULL)
		fatal("cannot listen on %s:%d", cfg->listen_host, cfg->listen_port);
	evconnlistener_set_error_cb(http.listener, http_accept_error_cb);
	getsockname(evconnlistener_get_fd(http.listener), (struct sockaddr *)&ss, &sl);
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
}

/* Stop accepting new connections and close the idle ones; requests already read still get their
 * answers, each with Connection: close. */
void
http_stop_accepting(void)
{
	struct http_conn *c, *next;

	http.stopping = 1;
	if (http.listener != NULL)
		evconnlistener_free(http.listener);
	http.listener = NULL;
	for (c = LIST_FIRST(&http.conns); c != NULL; c = next) {
		next = LIST_NEXT(c, entry);
		if (c->state == HC_IDLE && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
		    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			http_conn_free(c);
	}
}

/* Free the server (after draining). */
void
http_free(void)
{
	while (!LIST_EMPTY(&http.conns))
		http_conn_free(LIST_FIRST(&http.conns));
	if (http.listener != NULL)
		evconnlistener_free(http.listener);
	http.listener = NULL;
	if (http.resume != NULL)
		event_free(http.resume);
	http.resume = NULL;
}
