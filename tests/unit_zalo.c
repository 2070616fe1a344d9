/* unit_zalo.c: the pure pieces of the Zalo channel: the webhook signature, the exact text of a
 * signed number, and the wait until the end of Zalo's night window. */
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

#include "dvcgw.h"
#include "unit.h"

/* zalo_mac against vectors computed independently (Python hashlib). */
static void
test_mac(void)
{
	static const char body1[] = "{\"app_id\":\"1234\",\"event_name\":\"user_send_text\","
	    "\"timestamp\":\"1700000000000\"}";
	static const char body2[] = "{\"timestamp\": 1700000000000, \"app_id\":\"1234\"}";
	char hex[65];

	zalo_mac("1234", body1, sizeof body1 - 1, "1700000000000", "oa-secret", hex);
	CHECK_STR(hex, "cd8c2c7e7c81f1dff51386abbfc44650d51b6a86dac6f5ef951ab72370530604");
	zalo_mac("1234", body2, sizeof body2 - 1, "1700000000000", "oa-secret", hex);
	CHECK_STR(hex, "b5ee6f474a49064aed8dba9caba962619162057e0ea5f1dcd96bf8eaa50ca26c");
	/* the other secret, or one byte of the body, changes everything */
	zalo_mac("1234", body2, sizeof body2 - 1, "1700000000000", "app-secret", hex);
	CHECK(strcmp(hex, "b5ee6f474a49064aed8dba9caba962619162057e0ea5f1dcd96bf8eaa50ca26c") != 0,
	    "%s", hex);
	zalo_mac("1234", body2, sizeof body2 - 2, "1700000000000", "oa-secret", hex);
	CHECK(strcmp(hex, "b5ee6f474a49064aed8dba9caba962619162057e0ea5f1dcd96bf8eaa50ca26c") != 0,
	    "%s", hex);
}

/* zalo_json_number: the exact token of a top-level number, whatever surrounds it. */
static void
test_json_number(void)
{
	static const struct {
		const char	*json;
		const char	*key;
		const char	*want;		/* NULL: none */
	} t[] = {
		{ "{\"timestamp\":1700000000000}", "timestamp", "1700000000000" },
		{ " { \"a\" : \"x\" , \"timestamp\" :\t-12.50e+3 } ", "timestamp", "-12.50e+3" },
		{ "{\"timestamp\":\"1700\"}", "timestamp", NULL },	/* a string: not here */
		{ "{\"nested\":{\"timestamp\":1},\"timestamp\":2}", "timestamp", "2" },
		{ "{\"s\":\"}\\\"timestamp\\\":3\",\"timestamp\":4}", "timestamp", "4" },
		{ "{\"a\":[1,{\"b\":[2]}],\"time\\u0073tamp\":99}", "timestamp", "99" },
		{ "{\"timestamps\":1,\"timestam\":2}", "timestamp", NULL },
		{ "{\"app_id\":12345678901234567890123}", "app_id", "12345678901234567890123" },
		{ "{}", "timestamp", NULL },
		{ "[1,2]", "timestamp", NULL },
		{ "", "timestamp", NULL },
		{ "{\"timestamp\"", "timestamp", NULL },
		{ "{\"timestamp\":", "timestamp", NULL },
		{ "{\"x\":\"unterminated", "timestamp", NULL },
		{ "{\"x\":[[[", "timestamp", NULL },
		{ "{\"x\" 1, \"timestamp\":1}", "timestamp", NULL },
	};
	size_t i;
	char *got;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		got = zalo_json_number(t[i].json, strlen(t[i].json), t[i].key);
		if (t[i].want == NULL)
			CHECK(got == NULL, "%s: got \"%s\"", t[i].json, got);
		else
			CHECK(got != NULL && strcmp(got, t[i].want) == 0, "%s: got \"%s\", want "
			    "\"%s\"", t[i].json, got ? got : "(null)", t[i].want);
		free(got);
	}
}

/* zalo_send_night_wait_ms in Asia/Ho_Chi_Minh (UTC+7, no DST). */
static void
test_night_wait(void)
{
	static const struct {
		long long	 now;		/* unix s */
		long long	 want_ms;
		const char	*what;
	} t[] = {
		{ 1710086400, 7LL * 3600 * 1000, "23:00 -> 06:00 next day" },
		{ 1710082800, 8LL * 3600 * 1000, "22:00 sharp" },
		{ 1710025199, 1000, "05:59:59" },
		{ 1710014400, 3LL * 3600 * 1000, "03:00" },
		{ 1735662600, 6LL * 3600 * 1000 + 30 * 60 * 1000, "23:30 on 31 Dec -> 1 Jan" },
		{ 1710046800, 300000, "noon: clocks disagree, short wait" },
		{ 1710025200, 300000, "06:00 sharp is day" },
	};
	size_t i;
	long long got;

	setenv("TZ", "Asia/Ho_Chi_Minh", 1);
	tzset();
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		got = zalo_send_night_wait_ms(t[i].now * 1000);
		CHECK(got == t[i].want_ms, "%s: got %lld ms, want %lld", t[i].what, got,
		    t[i].want_ms);
	}
	/* milliseconds count too */
	got = zalo_send_night_wait_ms(1710086400LL * 1000 + 250);
	CHECK(got == 7LL * 3600 * 1000 - 250, "23:00:00.250: got %lld", got);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	test_mac();
	test_json_number();
	test_night_wait();
	UNIT_END();
}
