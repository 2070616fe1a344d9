/* unit_log.c: log.c's lines: one line whatever bytes a message holds (invalid UTF-8, newlines,
 * control characters), valid JSON in the json format, log.file reopened, repeats suppressed with a
 * summary. */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>

#include "dvcgw.h"
#include "unit.h"

static char dir[] = "/tmp/unit_log.XXXXXX";	/* mkdtemp: this run's own */
static const char hostile[] = "a\nb\r\"c\\\xff\xfe\xc0\xaf\xed\xa0\x80\x01\x1b[2J\x7f end";

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *s = calloc(1, 1 << 16);
	size_t n = 0;

	if (f != NULL) {
		n = fread(s, 1, (1 << 16) - 1, f);
		fclose(f);
	}
	s[n] = '\0';
	return s;
}

static int
lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void
test_hostile(void)
{
	char *path = xasprintf("%s/text.log", dir), *s, *p;
	json_t *j;
	json_error_t e;

	CHECK(log_open(path) == 0, "open");
	log_set_format("text");
	log_info("x: %s", hostile);
	s = slurp(path);
	CHECK(lines(s) == 1 && strstr(s, " info x: a") != NULL, "one text line: %s", s);
	for (p = s; *p != '\0' && *p != '\n'; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "a control byte %02x", *p);
	CHECK(text_utf8_valid(s, strlen(s)), "valid UTF-8");
	free(s);
	unlink(path);
	free(path);

	path = xasprintf("%s/json.log", dir);
	CHECK(log_open(path) == 0, "open");
	log_set_format("json");
	log_warn("x: %s", hostile);
	s = slurp(path);
	CHECK(lines(s) == 1, "one JSON line: %s", s);
	j = json_loads(s, 0, &e);
	CHECK(json_is_object(j), "valid JSON: %s", e.text);
	CHECK_STR(json_string_value(json_object_get(j, "level")), "warn");
	CHECK_STR(json_string_value(json_object_get(j, "subsystem")), "x");
	CHECK(json_string_value(json_object_get(j, "ts")) != NULL, "ts");
	CHECK(json_string_value(json_object_get(j, "msg")) != NULL &&
	    strchr(json_string_value(json_object_get(j, "msg")), '\n') == NULL &&
	    strstr(json_string_value(json_object_get(j, "msg")), "end") != NULL, "msg");
	json_decref(j);
	free(s);
	free(path);
}

static void
test_reopen_and_repeats(void)
{
	char *path = xasprintf("%s/rot.log", dir), *old = xasprintf("%s/rot.log.1", dir), *s;
	int i;

	CHECK(log_open(path) == 0, "open");
	log_set_format("text");
	log_info("first");
	CHECK(rename(path, old) == 0, "rename");
	log_reopen();
	log_info("second");
	s = slurp(path);
	CHECK(strstr(s, "log: reopened") != NULL && strstr(s, "second") != NULL &&
	    strstr(s, "first") == NULL, "the new file: %s", s);
	free(s);
	s = slurp(old);
	CHECK(strstr(s, "first") != NULL && strstr(s, "second") == NULL, "the old file: %s", s);
	free(s);

	for (i = 0; i < 12; i++)
		log_info("again and again");
	log_info("something else");
	s = slurp(path);
	CHECK(lines(s) == 2 + 5 + 1, "5 of 12 repeats: %s", s);
	free(s);
	log_close();	/* says what was left out */
	s = slurp(path);
	CHECK(strstr(s, "suppressed 7 repeats of this line in 10 s: again and again\n") != NULL,
	    "the summary: %s", s);
	free(s);
	free(path);
	free(old);
}

int
main(void)
{
	if (mkdtemp(dir) == NULL)
		return 1;
	test_hostile();
	test_reopen_and_repeats();
	log_close();
	{
		const char *names[] = { "json.log", "rot.log", "rot.log.1" };
		size_t i;
		char *p;

		for (i = 0; i < sizeof names / sizeof names[0]; i++) {
			p = xasprintf("%s/%s", dir, names[i]);
			unlink(p);
			free(p);
		}
		rmdir(dir);
	}
	UNIT_END();
}
