/* log.c: one-line logging to stderr or to log.file (reopened on SIGUSR1 for logrotate), as text or
 * as one JSON object a line (log.format); repeats of an identical line are rate-limited with a
 * "suppressed N" summary; rate-limited lines for what a flood can repeat, and the two fatal exits
 * for start-up and impossible states. Every line is scrubbed: whatever a caller formats (a
 * provider's field, a URL), a line stays one valid UTF-8 line. Event-loop thread only. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dvcgw.h"

#define LOG_REPEAT_SLOTS	64	/* distinct lines tracked for repeats */
#define LOG_REPEAT_SAMPLE	200	/* bytes of a suppressed line quoted in its summary */

static int log_level = LOG_INFO;
static const char *log_tags[] = { "debug", "info", "warn", "error" };

static struct {
	int	 json;		/* log.format "json" */
	int	 fd;		/* log.file, or -1: stderr */
	char	*path;
} lg = { 0, -1, NULL };

/* One line seen lately: how often it was printed and left out in its LOG_LIMIT_PERIOD. */
struct log_repeat {
	uint64_t	 hash;		/* 0: free */
	long long	 start;		/* monotonic seconds */
	unsigned	 shown;
	unsigned long long dropped;
	int		 level;
	char		 sample[LOG_REPEAT_SAMPLE];
};
static struct log_repeat log_repeats[LOG_REPEAT_SLOTS];

static void	log_repeat_summary(struct log_repeat *);

/* Set the lowest level that is printed. */
void
log_set_level(int level)
{
	log_level = level;
}

/* "text" or "json" (log.format). */
void
log_set_format(const char *format)
{
	lg.json = format != NULL && strcmp(format, "json") == 0;
}

static int
log_open_fd(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* Write to path from now on (log.file). 0, or -1 with errno (start-up: the caller exits). */
int
log_open(const char *path)
{
	int fd;

	if ((fd = log_open_fd(path)) < 0)
		return -1;
	if (lg.fd >= 0)
		close(lg.fd);
	lg.fd = fd;
	free(lg.path);
	lg.path = xstrdup(path);
	return 0;
}

/* SIGUSR1: open log.file again (logrotate renamed it); keep the old one if that fails. */
void
log_reopen(void)
{
	int fd;

	if (lg.path == NULL)
		return;
	if ((fd = log_open_fd(lg.path)) < 0) {
		log_error("log: cannot reopen %s: %s; still writing to the old file", lg.path,
		    strerror(errno));
		return;
	}
	close(lg.fd);
	lg.fd = fd;
	log_info("log: reopened %s", lg.path);
}

/* Say what repeats were left out, and close log.file (stop). */
void
log_close(void)
{
	size_t i;

	for (i = 0; i < LOG_REPEAT_SLOTS; i++)
		if (log_repeats[i].hash != 0)
			log_repeat_summary(&log_repeats[i]);
	if (lg.fd >= 0)
		close(lg.fd);
	lg.fd = -1;
	free(lg.path);
	lg.path = NULL;
}

static long long
log_mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec;
}

/* The subsystem a message names first ("http: ..." -> "http"), into out; "" when none. */
static void
log_subsystem(const char *msg, char *out, size_t len)
{
	size_t n = strspn(msg, "abcdefghijklmnopqrstuvwxyz_");

	out[0] = '\0';
	if (n > 0 && n < len && msg[n] == ':' && msg[n + 1] == ' ') {
		memcpy(out, msg, n);
		out[n] = '\0';
	}
}

/* Write one line (clean: valid UTF-8 with no control characters) in the configured format, with
 * a single write so concurrent appenders never interleave a line. suppressed > 0: a summary. */
static void
log_emit(int level, const char *clean, unsigned long long suppressed)
{
	char ts[40], sys[16], *line = NULL;
	struct timespec now;
	struct tm tm;
	json_t *j;
	size_t len;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + strlen(ts), sizeof ts - strlen(ts), ".%03ldZ", now.tv_nsec / 1000000);
	if (lg.json) {
		log_subsystem(clean, sys, sizeof sys);
		j = json_pack("{s:s, s:s, s:s}", "ts", ts, "level", log_tags[level], "msg", clean);
		if (j != NULL && *sys != '\0')
			json_object_set_new(j, "subsystem", json_string(sys));
		if (j != NULL && suppressed > 0)
			json_object_set_new(j, "suppressed", json_integer((json_int_t)suppressed));
		if (j != NULL)
			line = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
		json_decref(j);
		if (line != NULL) {
			char *nl = xasprintf("%s\n", line);

			free(line);
			line = nl;
		}
	}
	if (line == NULL)
		line = xasprintf("%s %s %s\n", ts, log_tags[level], clean);
	len = strlen(line);
	if (write(lg.fd >= 0 ? lg.fd : 2, line, len) < 0) {
		/* nowhere else to say it */
	}
	free(line);
}

/* The summary of a slot's left-out repeats, then forget them. */
static void
log_repeat_summary(struct log_repeat *r)
{
	char *msg;

	if (r->dropped == 0)
		return;
	msg = xasprintf("log: suppressed %llu repeats of this line in %d s: %s", r->dropped,
	    LOG_LIMIT_PERIOD, r->sample);
	log_emit(r->level, msg, r->dropped);
	free(msg);
	r->dropped = 0;
}

static uint64_t
log_hash(int level, const char *s)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)level;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h ? h : 1;
}

/* 1 when this exact line was already printed LOG_LIMIT_BURST times in its period (it is counted,
 * not printed); 0 to print it. */
static int
log_repeated(int level, const char *clean)
{
	uint64_t h = log_hash(level, clean);
	long long now = log_mono_s();
	struct log_repeat *r, *victim = NULL;
	size_t i;

	for (i = 0; i < LOG_REPEAT_SLOTS; i++) {
		r = &log_repeats[i];
		if (r->hash == h)
			break;
		if (victim == NULL || r->hash == 0 || (victim->hash != 0 && r->start < victim->start))
			victim = r;
	}
	if (i == LOG_REPEAT_SLOTS) {
		r = victim;
		log_repeat_summary(r);
		r->hash = h;
		r->start = now;
		r->shown = 0;
		r->level = level;
		{
			char *cut = text_utf8_scrub(clean, strlen(clean), 1, sizeof r->sample - 1);

			snprintf(r->sample, sizeof r->sample, "%s", cut);	/* fits */
			free(cut);
		}
	} else if (now - r->start >= LOG_LIMIT_PERIOD) {
		log_repeat_summary(r);
		r->start = now;
		r->shown = 0;
	}
	if (r->shown >= LOG_LIMIT_BURST) {
		r->dropped++;
		return 1;
	}
	r->shown++;
	return 0;
}

/* Once a second (the daemon's timer): the summaries of repeats whose period is over. */
void
log_flush(void)
{
	long long now = log_mono_s();
	size_t i;

	for (i = 0; i < LOG_REPEAT_SLOTS; i++)
		if (log_repeats[i].hash != 0 && now - log_repeats[i].start >= LOG_LIMIT_PERIOD) {
			log_repeat_summary(&log_repeats[i]);
			log_repeats[i].hash = 0;
		}
}

static void
log_vwrite(int level, const char *fmt, va_list ap) printflike(2, 0);

static void
log_vwrite(int level, const char *fmt, va_list ap)
{
	char *msg, *clean;

	msg = xvasprintf(fmt, ap);
	clean = text_utf8_scrub(msg, strlen(msg), 1, LOG_LINE_MAX);
	if (!log_repeated(level, clean))
		log_emit(level, clean, 0);
	free(clean);
	free(msg);
}

/* Print a message at the given level. */
void
log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	if (level < 0 || level > LOG_ERROR || level < log_level)
		return;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
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
	if (lg.fd >= 0)
		log_error("fatal: %s: %s", msg ? msg : fmt, strerror(saved));
	exit(1);
}

/* Log and exit: start-up failures and impossible states only. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	fprintf(stderr, "dvcgw: fatal: %s\n", msg ? msg : fmt);
	if (lg.fd >= 0)
		log_error("fatal: %s", msg ? msg : fmt);
	exit(1);
}
