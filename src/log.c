/* log.c: one-line logging to stderr and the two fatal exits for start-up and impossible states. */
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

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s ", ts, now.tv_nsec / 1000000, tag);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
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
