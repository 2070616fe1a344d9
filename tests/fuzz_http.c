/* fuzz_http.c: the whole HTTP surface. Each input is raw bytes a client sends on one connection:
 * the real server (parser, limits, route table, caller check) and the real handlers (SMS, USSD,
 * Zalo, health) answer it, with Redis stubbed (tests/rds_stub.c: down, erroring or dropping, picked
 * by the input's first byte). The connection comes from 127.0.0.1 so provider routes reach their
 * handlers. Checks: no crash or sanitizer report, every answer starts with a status line, and the
 * daemon closes the connection once the client has finished sending. */
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "dvcgw.h"
#include "fuzz.h"
#include "rds_stub.h"

static struct event_base	*base;
static struct config		*cfg;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[] = "/tmp/dvcgw-fuzz-http-XXXXXX";
	json_t *errors = NULL;
	struct flowset *fs;
	struct flow_limits lim = { 3, { { "an SMS reply", 3 * 153, 3, "sms" },
	    { "a Zalo message", ZALO_MAX_CHARS, 0, "zalo" }, { "a USSD screen", 0, 0, "ussd" } } };
	int fd;
	FILE *f;

	if ((fd = mkstemp(path)) < 0 || (f = fdopen(fd, "w")) == NULL)
		abort();
	fprintf(f, "{\"listen\": {\"max_body\": 4096, \"max_headers\": 2048},"
	    "\"sms\": {\"driver\": \"file\", \"file\": {\"path\": \"/dev/null\"},"
	    " \"kannel\": {\"from\": \"8077\"}},"
	    "\"zalo\": {\"app_id\": \"123\", \"oa_secret_key\": \"s\"},"
	    "\"otp\": {\"secret\": \"%064d\"},"
	    "\"ussd\": {\"budget_ms\": 100}, \"log\": {\"level\": \"error\"}}", 7);
	fclose(f);
	if ((cfg = config_load(path, &errors)) == NULL)
		abort();
	unlink(path);
	log_set_level(LOG_ERROR + 1);
	if ((fs = flowset_load("flows", NULL, &lim, &errors)) == NULL) {
		fprintf(stderr, "fuzz_http: run from the project root (flows/ is needed)\n");
		abort();
	}
	if (dossier_set_pattern(cfg->code_pattern, NULL) != 0)
		abort();
	base = event_base_new();
	channel_init(base, cfg);
	store_init(cfg);
	conv_init(cfg, fs);
	ussd_init(base, cfg);
	fetch_init(base);
	outbox_init(base, cfg);
	zalo_init(base, cfg);
	otp_init(cfg);
	staff_init(base, cfg);
	rds_start(base, "stub", 100, NULL);
	if (auth_init(cfg, NULL) != 0)
		abort();
	http_init(base, cfg);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_in sin;
	int sv[2], i, closed = 0;
	char head[16], tmp[65536];
	size_t got = 0, off = 0;
	ssize_t n;

	if (base == NULL)
		LLVMFuzzerInitialize(NULL, NULL);
	if (size == 0)
		return 0;
	rds_stub_mode = data[0] % 3;
	data++;
	size--;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		abort();
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	http_conn_new(sv[0], (struct sockaddr *)&sin);
	if (size == 0)
		shutdown(sv[1], SHUT_WR);
	/* Feed the input as the socket takes it, then half-close: the server answers what it got. */
	for (i = 0; i < 20000 && !closed; i++) {
		if (off < size) {
			n = write(sv[1], data + off, size - off);
			if (n > 0)
				off += (size_t)n;
			if (off == size)
				shutdown(sv[1], SHUT_WR);
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		while ((n = read(sv[1], tmp, sizeof tmp)) > 0) {
			if (got < sizeof head)
				memcpy(head + got, tmp, (size_t)n < sizeof head - got ? (size_t)n :
				    sizeof head - got);
			got += (size_t)n;
		}
		if (n == 0)
			closed = 1;
	}
	/* The whole input sent and the sending side closed: the server must have closed too (it
	 * never waits on a client that has nothing more to say), unless a handler still works. */
	if (off == size)
		CHECK(closed || http_inflight() > 0);
	if (got >= 9)
		CHECK(memcmp(head, "HTTP/1.1 ", 9) == 0);
	close(sv[1]);
	http_free();
	http_init(base, cfg);
	/* Let timers of abandoned work (USSD budget, outbox) run out between inputs. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	return 0;
}
