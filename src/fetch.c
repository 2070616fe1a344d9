/* fetch.c: outbound HTTP on the daemon's event loop: curl multi driven by libevent in the shape of
 * curl's hiperfifo example — one global {multi, timer}, a struct per socket (curl_multi_assign), a
 * struct per transfer (CURLOPT_PRIVATE), and check_multi_info after every socket action. */
#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "dvcgw.h"

#define FETCH_MAX_RESPONSE (256 * 1024)

/* One transfer; owns its easy handle. */
struct fetch {
	CURL			*easy;
	struct curl_slist	*headers;
	char			*body;		/* request body copy */
	char			*resp;
	size_t			 resplen;
	char			 errbuf[CURL_ERROR_SIZE];
	fetch_cb		*cb;
	void			*arg;
	TAILQ_ENTRY(fetch)	 entry;
};
TAILQ_HEAD(fetches, fetch);

/* One socket curl asked us to watch. */
struct fetch_sock {
	curl_socket_t	 fd;
	struct event	*ev;
};

static struct {
	struct event_base	*base;
	CURLM			*multi;
	struct event		*timer;
	int			 running;
	int			 active;
	struct fetches		 list;
} fetch;

static void
fetch_free(struct fetch *f)
{
	TAILQ_REMOVE(&fetch.list, f, entry);
	fetch.active--;
	curl_easy_cleanup(f->easy);
	curl_slist_free_all(f->headers);
	free(f->body);
	free(f->resp);
	free(f);
}

static void
fetch_check_multi_info(void)
{
	CURLMsg *msg;
	int left;
	struct fetch *f;
	long status = 0;

	while ((msg = curl_multi_info_read(fetch.multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&f);
		if (msg->data.result == CURLE_OK)
			curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
		else
			status = 0;
		curl_multi_remove_handle(fetch.multi, f->easy);
		f->cb(status, f->resp ? f->resp : "", f->resplen,
		    status == 0 ? (f->errbuf[0] ? f->errbuf :
		    curl_easy_strerror(msg->data.result)) : NULL, f->arg);
		fetch_free(f);
	}
}

static void
fetch_event_cb(evutil_socket_t fd, short kind, void *arg)
{
	int action = ((kind & EV_READ) ? CURL_CSELECT_IN : 0) |
	    ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(fetch.multi, fd, action, &fetch.running);
	/* No "running == 0: delete the timer" here, unlike hiperfifo: a completion callback may have
	 * started a new transfer whose kick-off timer curl just armed. */
	fetch_check_multi_info();
}

static void
fetch_timer_cb(evutil_socket_t fd, short kind, void *arg)
{
	curl_multi_socket_action(fetch.multi, CURL_SOCKET_TIMEOUT, 0, &fetch.running);
	fetch_check_multi_info();
}

/* curl's timer callback: only arms or deletes our timer. */
static int
fetch_multi_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(fetch.timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(fetch.timer, &tv);
	return 0;
}

/* curl's socket callback: watch, re-watch or forget a socket. */
static int
fetch_sock_cb(CURL *e, curl_socket_t s, int what, void *cbp, void *sockp)
{
	struct fetch_sock *fs = sockp;
	short kind;

	if (what == CURL_POLL_REMOVE) {
		if (fs != NULL) {
			event_free(fs->ev);
			free(fs);
		}
		return 0;
	}
	kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
	    ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
	if (fs == NULL) {
		fs = xcalloc(1, sizeof *fs);
		fs->fd = s;
		curl_multi_assign(fetch.multi, s, fs);
	} else
		event_free(fs->ev);
	fs->ev = event_new(fetch.base, s, kind, fetch_event_cb, NULL);
	event_add(fs->ev, NULL);
	return 0;
}

static size_t
fetch_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct fetch *f = arg;
	size_t n = size * nmemb;

	if (f->resplen + n > FETCH_MAX_RESPONSE)
		return 0;	/* aborts the transfer: nobody we call should answer this much */
	f->resp = xrealloc(f->resp, f->resplen + n + 1);
	memcpy(f->resp + f->resplen, ptr, n);
	f->resplen += n;
	f->resp[f->resplen] = '\0';
	return n;
}

/* Start a transfer. body NULL means GET. headers is a NULL-terminated list or NULL. cb gets the HTTP
 * status (0 on a transport failure, with err saying why) and the response body (borrowed). */
void
fetch_start(const char *url, const char *body, size_t bodylen, const char *const *headers,
    long timeout_ms, fetch_cb *cb, void *arg)
{
	struct fetch *f = xcalloc(1, sizeof *f);

	f->cb = cb;
	f->arg = arg;
	if ((f->easy = curl_easy_init()) == NULL)
		fatalx("curl_easy_init failed");
	curl_easy_setopt(f->easy, CURLOPT_URL, url);
	curl_easy_setopt(f->easy, CURLOPT_PRIVATE, f);
	curl_easy_setopt(f->easy, CURLOPT_WRITEFUNCTION, fetch_write_cb);
	curl_easy_setopt(f->easy, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(f->easy, CURLOPT_ERRORBUFFER, f->errbuf);
	curl_easy_setopt(f->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(f->easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	curl_easy_setopt(f->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(f->easy, CURLOPT_USERAGENT, "dvcgw/" DVCGW_VERSION);
	if (body != NULL) {
		f->body = xmalloc(bodylen + 1);
		memcpy(f->body, body, bodylen);
		f->body[bodylen] = '\0';
		curl_easy_setopt(f->easy, CURLOPT_POSTFIELDS, f->body);
		curl_easy_setopt(f->easy, CURLOPT_POSTFIELDSIZE, (long)bodylen);
	}
	for (; headers != NULL && *headers != NULL; headers++)
		f->headers = curl_slist_append(f->headers, *headers);
	if (f->headers != NULL)
		curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, f->headers);
	fetch.active++;
	TAILQ_INSERT_TAIL(&fetch.list, f, entry);
	curl_multi_add_handle(fetch.multi, f->easy);
}

/* Transfers in flight. */
int
fetch_active(void)
{
	return fetch.active;
}

/* URL-encode n bytes (may contain NULs) into a new string. */
char *
fetch_escape(const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = xmalloc(n * 3 + 1), *q = out;
	size_t i;
	unsigned char c;

	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~')
			*q++ = (char)c;
		else {
			*q++ = '%';
			*q++ = hex[c >> 4];
			*q++ = hex[c & 15];
		}
	}
	*q = '\0';
	return out;
}

/* Set up curl multi on base. */
void
fetch_init(struct event_base *base)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		fatalx("curl_global_init failed");
	fetch.base = base;
	fetch.multi = curl_multi_init();
	fetch.timer = evtimer_new(base, fetch_timer_cb, NULL);
	TAILQ_INIT(&fetch.list);
	curl_multi_setopt(fetch.multi, CURLMOPT_SOCKETFUNCTION, fetch_sock_cb);
	curl_multi_setopt(fetch.multi, CURLMOPT_TIMERFUNCTION, fetch_multi_timer_cb);
}

/* Abandon transfers still running (after the drain deadline, their callbacks are not called) and
 * free everything. */
void
fetch_stop(void)
{
	struct fetch *f;

	if (fetch.multi == NULL)
		return;
	while ((f = TAILQ_FIRST(&fetch.list)) != NULL) {
		curl_multi_remove_handle(fetch.multi, f->easy);
		fetch_free(f);
	}
	curl_multi_cleanup(fetch.multi);
	event_free(fetch.timer);
	fetch.multi = NULL;
	curl_global_cleanup();
}
