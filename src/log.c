/* log.c: one-line logging to stderr, rate-limited lines for what a flood can repeat, and the two
 * fatal exits for start-up and impossible states. Every line is scrubbed: whatever a caller formats
 * (a provider's field, a URL), a line stays one valid UTF-8 line. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dvcgw.h"

static int log_level = LOG_INFO;

/* Set the lowest level that is printed. */
void
log_set_level(int level)
{
	log_level = level;
}

static void
log_vwrite(const char *tag, const char *fmt, va_list ap) printflike(2, 0);

static void
log_vwrite(const char *tag, const char *fmt, va_list ap)
{
	char ts[32];
	struct timespec now;
	struct tm tm;

	char *msg, *clean;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	msg = xvasprintf(fmt, ap);
	clean = text_utf8_scrub(msg, strlen(msg), 1, LOG_LINE_MAX);
	fprintf(stderr, "%s.%03ldZ %s %s\n", ts, now.tv_nsec / 1000000, tag, clean);
	free(clean);
	free(msg);
}

/* Print a message at the given level. */
void
log_msg(int level, const char *fmt, ...)
{
	static const char *tags[] = { "debug", "info", "warn", "error" };
	va_list ap;

	if (level < log_level)
		return;
	va_start(ap, fmt);
	log_vwrite(tags[level], fmt, ap);
	va_end(ap);
}

/* Print a message unless its call site already printed LOG_LIMIT_BURST lines in this
 * LOG_LIMIT_PERIOD; the first line after a quiet spell says how many were left out. */
void
log_limited(struct log_limit *ll, int level, const char *fmt, ...)
{
	va_list ap;
	time_t now = time(NULL);
	char *msg;

	if (level < log_level)
		return;
	if (now - ll->start >= LOG_LIMIT_PERIOD) {
		ll->start = now;
		ll->shown = 0;
	}
	if (ll->shown >= LOG_LIMIT_BURST) {
		ll->dropped++;
		return;
	}
	ll->shown++;
	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	if (ll->dropped > 0)
		log_msg(level, "%s (%llu more like this in the last %d s were not logged)", msg,
		    ll->dropped, LOG_LIMIT_PERIOD);
	else
		log_msg(level, "%s", msg);
	ll->dropped = 0;
	free(msg);
}

/* Log with strerror(errno) and exit: start-up failures only. */
void
fatal(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;
	char *msg;

	va_start(ap, fmt);
	msg = NULL;
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	fprintf(stderr, "dvcgw: fatal: %s: %s\n", msg ? msg : fmt, strerror(saved));
	exit(1);
}

/* Log and exit: start-up failures and impossible states only. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	fputs("dvcgw: fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}
