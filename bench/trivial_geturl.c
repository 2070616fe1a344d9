/* trivial_geturl.c: the bench's trivial Kannel get-url application. A bare libevent evhttp server that
 * answers every request 200 with one fixed text body; smsbox sends that body back as the reply. It
 * is what a get-url service costs Kannel with no application work at all, the yardstick for dvcgw
 * behind the same smsbox (bench/kannel.sh). Usage: trivial_geturl PORT [BODY]; PORT 0 takes a free
 * port. It prints the port it listens on, then serves until SIGTERM. */
#include <sys/socket.h>
#include <netinet/in.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

static const char *body = "Ho so 000.00.20.H21-231125-0001: Cap giay chung nhan quyen su dung dat. "
    "Trang thai: Dang xu ly.";

static void
answer(struct evhttp_request *req, void *arg)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add(b, body, strlen(body));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
stop(evutil_socket_t fd, short ev, void *arg)
{
	event_base_loopexit(arg, NULL);
}

int
main(int argc, char **argv)
{
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct event *term;
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	int port;

	if (argc < 2 || (port = atoi(argv[1])) < 0 || port > 65535) {
		fprintf(stderr, "usage: trivial_geturl PORT [BODY]\n");
		return 2;
	}
	if (argc > 2)
		body = argv[2];
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL || (http = evhttp_new(base)) == NULL)
		return 1;
	if ((bound = evhttp_bind_socket_with_handle(http, "127.0.0.1", (unsigned short)port)) == NULL ||
	    getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &len) != 0) {
		fprintf(stderr, "trivial_geturl: cannot listen on 127.0.0.1:%d\n", port);
		return 1;
	}
	printf("%d\n", ntohs(sin.sin_port));
	fflush(stdout);
	evhttp_set_gencb(http, answer, NULL);
	term = evsignal_new(base, SIGTERM, stop, base);
	event_add(term, NULL);
	event_base_dispatch(base);
	event_free(term);
	evhttp_free(http);
	event_base_free(base);
	return 0;
}
