/* fuzz_zalo.c: libFuzzer target for the pure helpers of the Zalo webhook, the input being a raw
 * webhook body: zalo_json_number gives the exact token of a top-level number (agreeing with jansson
 * wherever the webhook would parse the body), zalo_mac is the plain SHA-256 of app_id, body,
 * timestamp and secret (computed here independently), and zalo_send_night_wait_ms waits at most a day, to
 * the next 06:00 at night. Every property below aborts when it does not hold. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "dvcgw.h"
#include "fuzz.h"

#define APP_ID		"1234"			/* when the body has no usable app_id */
#define TIMESTAMP	"1700000000000"		/* when the body has no usable timestamp */
#define SECRET		"oa-secret-key"
#define DAY_MS		(24LL * 3600 * 1000)
#define MS_RANGE	(1LL << 45)		/* night waits for 1970 to year 3084 */
#define DAY0_MS		1795626000000LL		/* 2026-11-26 00:00 in Asia/Ho_Chi_Minh */

/* The gateway runs with TZ set from time_zone, Asia/Ho_Chi_Minh by default; sodium as in main. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	setenv("TZ", "Asia/Ho_Chi_Minh", 1);
	tzset();
	if (sodium_init() < 0)
		abort();
	return 0;
}

/* zalo_json_number(body, key) and its agreement with j (the body as the webhook parses it, or
 * NULL when the webhook would refuse it). Returns the token (caller frees) or NULL. */
static char *
check_number(const char *body, size_t len, const json_t *j, const char *key)
{
	json_t		*v, *t;
	json_error_t	 jerr;
	char		*tok;
	size_t		 n = 0;

	tok = zalo_json_number(body, len, key);
	if (tok != NULL) {
		/* One scalar token of the body, starting like a number. */
		n = strlen(tok);
		CHECK(n > 0 && n <= len);
		CHECK(tok[0] == '-' || (tok[0] >= '0' && tok[0] <= '9'));
		CHECK(strcspn(tok, ",}] \t\r\n") == n);
		CHECK(memmem(body, len, tok, n) != NULL);
	}
	if (j == NULL)
		return tok;
	v = json_object_get(j, key);
	if (json_is_integer(v)) {
		CHECK(tok != NULL);
		t = json_loads(tok, JSON_DECODE_ANY, &jerr);
		CHECK(json_is_integer(t) && json_integer_value(t) == json_integer_value(v));
		/* what Zalo signs: the digits as sent ("-0" stays "-0") */
		CHECK(strspn(tok + (tok[0] == '-'), "0123456789") == n - (tok[0] == '-'));
		json_decref(t);
	} else if (json_is_real(v)) {
		CHECK(tok != NULL);
		t = json_loads(tok, JSON_DECODE_ANY, &jerr);
		CHECK(json_is_real(t) && json_real_value(t) == json_real_value(v));
		json_decref(t);
	} else
		CHECK(tok == NULL);	/* a string (the usual digit string), absent, or other */
	return tok;
}

/* The member as the webhook signs it: a string's value, a number's token (tok), else fallback. */
static char *
member_text(const json_t *j, const char *tok, const char *fallback)
{
	if (json_is_string(j))
		return xstrdup(json_string_value(j));
	if (tok != NULL)
		return xstrdup(tok);
	return xstrdup(fallback);
}

/* zalo_mac against crypto_hash_sha256 of the concatenation, hex-encoded here. */
static void
check_mac(const char *app, const char *body, size_t len, const char *ts)
{
	static const char	 digits[] = "0123456789abcdef";
	unsigned char		 h[crypto_hash_sha256_BYTES], *cat;
	char			*hex, want[2 * crypto_hash_sha256_BYTES + 1];
	size_t			 na = strlen(app), nt = strlen(ts), ns = strlen(SECRET), i;

	cat = xmalloc(na + len + nt + ns + 1);
	memcpy(cat, app, na);
	memcpy(cat + na, body, len);
	memcpy(cat + na + len, ts, nt);
	memcpy(cat + na + len + nt, SECRET, ns);
	crypto_hash_sha256(h, cat, na + len + nt + ns);
	for (i = 0; i < sizeof h; i++) {
		want[2 * i] = digits[h[i] >> 4];
		want[2 * i + 1] = digits[h[i] & 15];
	}
	want[sizeof want - 1] = '\0';
	hex = xmalloc(sizeof want);	/* exactly 65 bytes: a longer write is caught by ASan */
	zalo_mac(app, body, len, ts, SECRET, hex);
	CHECK(strcmp(hex, want) == 0);
	free(hex);
	free(cat);
}

/* zalo_send_night_wait_ms(ms), ms >= 0: within [0, 24 h]; 5 minutes when the local time is day
 * (06:00-22:00), else exactly to the next 06:00:00.000 (the same day before 06:00, the next day
 * after 22:00). */
static void
check_night(long long ms)
{
	struct tm	 tm, at;
	time_t		 t;
	long long	 w;

	CHECK(ms >= 0);
	w = zalo_send_night_wait_ms(ms);
	CHECK(w >= 0 && w <= DAY_MS);
	t = (time_t)(ms / 1000);
	CHECK(localtime_r(&t, &tm) != NULL);
	if (tm.tm_hour >= 6 && tm.tm_hour < 22) {
		CHECK(w == 300000);
		return;
	}
	CHECK(w > 0 && (ms + w) % 1000 == 0);
	t = (time_t)((ms + w) / 1000);
	CHECK(localtime_r(&t, &at) != NULL);
	CHECK(at.tm_hour == 6 && at.tm_min == 0 && at.tm_sec == 0);
	if (tm.tm_hour < 6)
		CHECK(at.tm_year == tm.tm_year && at.tm_yday == tm.tm_yday);
	else {
		/* the next calendar day */
		tm.tm_mday++;
		tm.tm_hour = 12;
		tm.tm_isdst = -1;
		t = mktime(&tm);
		CHECK(localtime_r(&t, &tm) != NULL);
		CHECK(at.tm_year == tm.tm_year && at.tm_yday == tm.tm_yday);
	}
}

/* One input: a webhook body as received. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*body = (const char *)data;
	json_t		*j = NULL;
	json_error_t	 jerr;
	char		*ts_tok, *app_tok, *ts, *app, *end;
	uint64_t	 v = 0;
	long long	 ms;
	size_t		 i;

	/* What the webhook parses: no NUL, valid UTF-8, a JSON object without duplicate keys. */
	if (memchr(body, '\0', size) == NULL && text_utf8_valid(body, size)) {
		j = json_loadb(body, size, JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(j)) {
			json_decref(j);
			j = NULL;
		}
	}
	ts_tok = check_number(body, size, j, "timestamp");
	app_tok = check_number(body, size, j, "app_id");

	ts = member_text(json_object_get(j, "timestamp"), ts_tok, TIMESTAMP);
	app = member_text(json_object_get(j, "app_id"), app_tok, APP_ID);
	check_mac(app, body, size, ts);
	check_mac(APP_ID, body, size, TIMESTAMP);

	/* Night waits: from the input's first bytes, any time of a day in 2026, and the timestamp. */
	for (i = 0; i < size && i < 8; i++)
		v |= (uint64_t)data[i] << (8 * i);
	check_night((long long)(v % (uint64_t)MS_RANGE));
	check_night(DAY0_MS + (long long)(v % (uint64_t)DAY_MS));
	ms = strtoll(ts, &end, 10);
	if (*ts >= '0' && *ts <= '9' && *end == '\0' && ms < MS_RANGE)
		check_night(ms);

	free(app);
	free(ts);
	free(app_tok);
	free(ts_tok);
	json_decref(j);
	return 0;
}
