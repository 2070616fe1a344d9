/* unit_metrics.c: the exposition text metrics.c writes: escaping, counters by label, cumulative
 * histogram buckets up to +Inf, HELP and TYPE once per metric, unknown series left out. */
#include <stdlib.h>

#include <event2/buffer.h>

#include "dvcgw.h"
#include "unit.h"

static char *
render(void)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	metrics_write(b);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

static int
count(const char *hay, const char *needle)
{
	int n = 0;

	for (; (hay = strstr(hay, needle)) != NULL; hay++)
		n++;
	return n;
}

static void
test_escape(void)
{
	struct evbuffer *b = evbuffer_new();
	char out[64];
	size_t n;

	metrics_escape(b, "a\\b\"c\nd");
	n = evbuffer_get_length(b);
	evbuffer_remove(b, out, n);
	out[n] = '\0';
	CHECK_STR(out, "a\\\\b\\\"c\\nd");
	evbuffer_free(b);
}

static void
test_write(void)
{
	char *s, *p;

	metrics_init();
	metrics_inc(MET_INBOUND, "sms", "ok");
	metrics_inc(MET_INBOUND, "sms", "ok");
	metrics_inc(MET_INBOUND, "sms", "no such result");	/* not a series: not counted */
	metrics_inc(MET_INBOUND, "sms", NULL);
	metrics_inc(MET_REFUSALS, "size", NULL);
	metrics_observe(MET_TURN_SECONDS, 0.003, "sms");
	metrics_observe(MET_TURN_SECONDS, 20, "sms");		/* past the last bound */
	metrics_observe(MET_TURN_SECONDS, -1, "ussd");		/* a clock step: counted as 0 */
	metrics_add3(MET_REPLIES, 2, "zalo", "otp", "dead");
	s = render();
	CHECK(strstr(s, "dvcgw_inbound_total{channel=\"sms\",result=\"ok\"} 2\n") != NULL, "%s", s);
	CHECK(strstr(s, "dvcgw_inbound_total{channel=\"sms\",result=\"error\"} 0\n") != NULL, "0s");
	CHECK(strstr(s, "dvcgw_refusals_total{reason=\"size\"} 1\n") != NULL, "refusal");
	CHECK(strstr(s, "dvcgw_replies_total{channel=\"zalo\",lane=\"otp\",result=\"dead\"} 2\n") !=
	    NULL, "three labels");
	CHECK(strstr(s, "dvcgw_turn_seconds_bucket{channel=\"sms\",le=\"0.0025\"} 0\n") != NULL,
	    "below");
	CHECK(strstr(s, "dvcgw_turn_seconds_bucket{channel=\"sms\",le=\"0.005\"} 1\n") != NULL,
	    "its bucket");
	CHECK(strstr(s, "dvcgw_turn_seconds_bucket{channel=\"sms\",le=\"10\"} 1\n") != NULL,
	    "cumulative");
	CHECK(strstr(s, "dvcgw_turn_seconds_bucket{channel=\"sms\",le=\"+Inf\"} 2\n") != NULL,
	    "+Inf");
	CHECK(strstr(s, "dvcgw_turn_seconds_count{channel=\"sms\"} 2\n") != NULL, "count");
	CHECK(strstr(s, "dvcgw_turn_seconds_sum{channel=\"sms\"} 20.003\n") != NULL, "sum");
	CHECK(strstr(s, "dvcgw_turn_seconds_bucket{channel=\"ussd\",le=\"0.001\"} 1\n") != NULL,
	    "negative as 0");
	CHECK(strstr(s, "dvcgw_queue_depth{") == NULL, "depths not read: no samples");
	CHECK(strstr(s, "# TYPE dvcgw_queue_depth gauge\n") != NULL, "but the family is there");
	CHECK(count(s, "# HELP dvcgw_turn_seconds ") == 1 && count(s, "# TYPE ") ==
	    count(s, "# HELP "), "HELP and TYPE once each");
	CHECK(count(s, "# TYPE dvcgw_backend_calls_total counter\n") == 1 &&
	    strstr(s, "dvcgw_backend_seconds_count 0\n") != NULL, "the backend's place");
	CHECK(s[strlen(s) - 1] == '\n', "ends in a newline");
	for (p = s; (p = strstr(p, "# TYPE ")) != NULL; p++) {
		char name[128], type[32];

		if (sscanf(p, "# TYPE %127s %31s", name, type) == 2 && strcmp(type, "counter") == 0)
			CHECK(strlen(name) > 6 && strcmp(name + strlen(name) - 6, "_total") == 0,
			    "counter %s without _total", name);
	}
	metrics_set(MET_QUEUE_DEPTH, 7, "3", "otp");
	free(s);
	s = render();
	CHECK(strstr(s, "dvcgw_queue_depth{shard=\"3\",lane=\"otp\"} 7\n") != NULL, "a depth");
	free(s);
}

int
main(void)
{
	test_escape();
	test_write();
	UNIT_END();
}
