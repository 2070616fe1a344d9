/* unit_notify.c: notify.c's quiet hours: when an SMS notification wanted at a given time may leave
 * (local time, the config's time_zone), and which notify.quiet_hours values are refused. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dvcgw.h"
#include "unit.h"

/* 2025-12-02 00:00:00 in Asia/Ho_Chi_Minh (UTC+7), in ms. */
#define DAY	(1764608400LL * 1000)
#define AT(h, m, s)	(DAY + ((h) * 3600LL + (m) * 60 + (s)) * 1000)

static void
test_quiet_until(void)
{
	static const struct {
		const char	*quiet;
		long long	 now, want;
	} t[] = {
		{ "", AT(22, 0, 0), 0 },
		{ "21:00-07:00", AT(12, 0, 0), 0 },
		{ "21:00-07:00", AT(20, 59, 59), 0 },
		{ "21:00-07:00", AT(21, 0, 0), AT(31, 0, 0) },
		{ "21:00-07:00", AT(23, 30, 0), AT(31, 0, 0) },
		{ "21:00-07:00", AT(6, 59, 30), AT(7, 0, 0) },
		{ "21:00-07:00", AT(7, 0, 0), 0 },
		{ "12:00-13:30", AT(12, 15, 0), AT(13, 30, 0) },
		{ "12:00-13:30", AT(13, 30, 0), 0 },
		{ "12:00:00-12:00:05", AT(12, 0, 2), AT(12, 0, 5) },
		{ "07:00-07:00", AT(7, 0, 0), 0 },		/* an empty window: off */
		{ "bad", AT(22, 0, 0), 0 },
	};
	size_t i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		long long got = notify_quiet_until(t[i].quiet, t[i].now);

		CHECK(got == t[i].want, "\"%s\" at %lld: got %lld, want %lld", t[i].quiet,
		    (t[i].now - DAY) / 1000, got, t[i].want);
	}
}

static void
test_check_config(void)
{
	static const struct {
		const char	*quiet;
		int		 ok;
	} t[] = {
		{ "", 1 }, { "21:00-07:00", 1 }, { "00:00-23:59:59", 1 }, { "7:05-8:00", 1 },
		{ "21:00", 0 }, { "25:00-07:00", 0 }, { "21:60-07:00", 0 }, { "21:00-07:00x", 0 },
		{ "night", 0 }, { "-", 0 }, { "21:00:61-07:00", 0 },
	};
	struct config cfg;
	char *why;
	size_t i;

	memset(&cfg, 0, sizeof cfg);
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		cfg.notify_quiet_hours = (char *)t[i].quiet;
		why = notify_check_config(&cfg);
		CHECK((why == NULL) == t[i].ok, "\"%s\": %s", t[i].quiet, why ? why : "accepted");
		free(why);
	}
}

int
main(void)
{
	setenv("TZ", "Asia/Ho_Chi_Minh", 1);
	tzset();
	test_quiet_until();
	test_check_config();
	UNIT_END();
}
