/* dossier.c: dossier codes (mã hồ sơ), national status texts, reply variables and checking and
 * parsing import rows. The compiled code pattern is the only state. */
#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"

static regex_t	dossier_re;
static int	dossier_re_set;
static int	dossier_re_default;	/* the pattern is DOSSIER_DEFAULT_PATTERN */

static const char *dossier_statuses[] = {
	"Mới đăng ký",
	"Được tiếp nhận",
	"Không được tiếp nhận",
	"Đang xử lý",
	"Yêu cầu bổ sung giấy tờ",
	"Yêu cầu thực hiện nghĩa vụ tài chính",
	"Công dân yêu cầu rút hồ sơ",
	"Dừng xử lý",
	"Đã xử lý xong",
	"Đã trả kết quả",
};

/* The fields a dossier may carry, in the order dossier_check writes them. */
static const char *dossier_fields[] = {
	"code", "national_code", "procedure", "applicant", "phone", "agency", "received_at", "due_at",
	"status", "note",
};
#define DOSSIER_NFIELDS (sizeof dossier_fields / sizeof dossier_fields[0])

#define DOSSIER_SHAPE "Mã hồ sơ có dạng 000.00.20.H21-231125-0001: mã cơ quan tiếp nhận, ngày " \
	"nhận (năm, tháng, ngày) và số thứ tự, cách nhau bằng dấu gạch ngang."

/* Compile the code pattern, keeping the old one if the new one does not compile. */
int
dossier_set_pattern(const char *pattern, char **cause)
{
	regex_t	re;
	char	err[256];
	int	rc;

	if (pattern == NULL)
		pattern = DOSSIER_DEFAULT_PATTERN;
	if ((rc = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB)) != 0) {
		regerror(rc, &re, err, sizeof err);
		*cause = xasprintf("bad dossier code pattern \"%s\": %s", pattern, err);
		return -1;
	}
	if (dossier_re_set)
		regfree(&dossier_re);
	dossier_re = re;
	dossier_re_set = 1;
	dossier_re_default = strcmp(pattern, DOSSIER_DEFAULT_PATTERN) == 0;
	return 0;
}

/* Whether s matches the code pattern (the default one until dossier_set_pattern is called). */
static int
dossier_match(const char *s)
{
	char	*cause;

	if (!dossier_re_set && dossier_set_pattern(NULL, &cause) != 0)
		fatalx("%s", cause);
	return regexec(&dossier_re, s, 0, NULL, 0) == 0;
}

/* Length of a dash-like character at s (hyphen, en and em dash, minus sign...), else 0. */
static size_t
dossier_dash(const unsigned char *s)
{
	if (s[0] == 0xE2 && s[1] == 0x80 && s[2] >= 0x90 && s[2] <= 0x95)	/* U+2010-2015 */
		return 3;
	if (s[0] == 0xE2 && s[1] == 0x88 && s[2] == 0x92)			/* U+2212 */
		return 3;
	if (s[0] == 0xEF && s[1] == 0xBC && s[2] == 0x8D)			/* U+FF0D */
		return 3;
	if (s[0] == 0xEF && s[1] == 0xB9 && (s[2] == 0x98 || s[2] == 0xA3))	/* U+FE58, FE63 */
		return 3;
	return 0;
}

/* Length of a white space character at s (ASCII, no-break and other Unicode spaces), else 0. */
static size_t
dossier_space(const unsigned char *s)
{
	if (s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r'))
		return 1;
	if (s[0] == 0xC2 && s[1] == 0xA0)					/* U+00A0 */
		return 2;
	if (s[0] == 0xE2 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8B) || s[2] == 0xAF))
		return 3;							/* U+2000-200B, 202F */
	if (s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80)			/* U+3000 */
		return 3;
	if (s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF)			/* U+FEFF */
		return 3;
	return 0;
}

/* Whether s looks like some other authority's code: 6-40 of [0-9A-Z._/-] with a digit. */
static int
dossier_other(const char *s)
{
	size_t	len = strlen(s);

	if (len < 6 || len > 40 || strpbrk(s, "0123456789") == NULL)
		return 0;
	return strspn(s, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-_/") == len;
}

/* Restore the dots of a unit part typed without them ("0000020H21-..." -> "000.00.20.H21-...") when
 * the placement matches the pattern: a first group of 2 or 3, groups of 2, a last group of 3. The
 * parity of the length allows only one first group, so there is never more than one candidate. */
static int
dossier_dots(const char *s, char *out)
{
	char		 try[DOSSIER_CODE_MAX];
	const char	*dash = strchr(s, '-');
	size_t		 unit, first, at, i;

	if (dash == NULL || (unit = (size_t)(dash - s)) < 5 || memchr(s, '.', unit) != NULL)
		return 0;
	first = unit % 2 == 1 ? 2 : 3;
	if (strlen(s) + (unit - first - 3) / 2 + 2 > sizeof try)
		return 0;
	for (i = at = 0; i < unit; i++) {	/* dots at first, first + 2, ..., unit - 3 */
		if (i >= first && i <= unit - 3 && (i - first) % 2 == 0)
			try[at++] = '.';
		try[at++] = s[i];
	}
	strcpy(try + at, dash);
	if (!dossier_match(try))
		return 0;
	strcpy(out, try);
	return 1;
}

/* Whether s (upper case, no spaces) is a provincial code typed wrong rather than another
 * authority's code: it carries the receiving unit's marker (".H21-", ".H21" at its end) or three
 * dots, which national portal codes ("G22.99-231125-0107") never do. */
static int
dossier_damaged(const char *s)
{
	const char	*p;
	int		 dots = 0;

	if (!dossier_re_default)
		return 0;	/* an operator's own pattern: no guessing at its shape */
	for (p = s; *p != '\0'; p++) {
		dots += *p == '.';
		if (p[0] == '.' && p[1] >= 'A' && p[1] <= 'Z' && isdigit((unsigned char)p[2]) &&
		    isdigit((unsigned char)p[3]) && (p[4] == '-' || p[4] == '\0'))
			return 1;
	}
	return dots >= 3;
}

/* Rebuild a code typed with its separators lost or swapped for spaces ("000 00 20 H21 231125
 * 0001", "000.00.20.H21-2311250001"): digits and the unit's one letter alone, then the dashes
 * before the last 4 and 10 characters (date and number) and the unit part's dots. */
static int
dossier_rebuild(const char *s, char *out)
{
	char	 bare[DOSSIER_CODE_MAX], try[DOSSIER_CODE_MAX];
	size_t	 n = 0, letters = 0;

	if (!isdigit((unsigned char)*s) || strspn(s, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-") !=
	    strlen(s))
		return 0;	/* "HS000..." is a keyword glued to a code; "#" is no separator */
	for (; *s != '\0'; s++)
		if (isalnum((unsigned char)*s)) {
			letters += isalpha((unsigned char)*s) != 0;
			bare[n++] = *s;
		}
	bare[n] = '\0';
	if (n < 15 || n + 3 > sizeof try || letters != 1)
		return 0;
	snprintf(try, sizeof try, "%.*s-%.6s-%.4s", (int)(n - 10), bare, bare + n - 10,
	    bare + n - 4);
	if (dossier_match(try)) {
		strcpy(out, try);
		return 1;
	}
	return dossier_dots(try, out);
}

/* Normalise a dossier code typed by a citizen; cause may be NULL when the reason is not wanted. */
int
dossier_code_normalise(const char *in, char *out, char **cause)
{
	const unsigned char	*p = (const unsigned char *)in;
	char			 s[DOSSIER_CODE_MAX];
	size_t			 n = 0, k;

	out[0] = '\0';
	while (*p != '\0') {
		if ((k = dossier_space(p)) != 0) {
			p += k;
			continue;
		}
		if (n == sizeof s - 1)
			goto bad;
		if ((k = dossier_dash(p)) != 0) {
			s[n++] = '-';
			p += k;
		} else if (*p >= 'a' && *p <= 'z')
			s[n++] = (char)(*p++ - 'a' + 'A');
		else
			s[n++] = (char)*p++;
	}
	while (n > 0 && strchr(".,;", s[n - 1]) != NULL)
		n--;
	s[n] = '\0';
	if (n == 0)
		goto bad;
	if (dossier_match(s)) {
		memcpy(out, s, n + 1);
		return DCODE_OK;
	}
	if (dossier_dots(s, out) || dossier_rebuild(s, out))
		return DCODE_OK;
	if (dossier_other(s) && !dossier_damaged(s)) {
		memcpy(out, s, n + 1);
		return DCODE_OTHER;
	}
bad:
	if (cause != NULL)
		*cause = xstrdup(DOSSIER_SHAPE);
	return DCODE_BAD;
}

/* Find a code anywhere in a message: every run of up to DOSSIER_GUESS_WORDS words (a spaced code
 * "h21 - 231125 - 0001" is five), with quotes, emoji and punctuation around it dropped. */
#define DOSSIER_GUESS_WORDS 7
int
dossier_code_guess(const char *text, char *out)
{
	char		 buf[DOSSIER_CODE_MAX * 2];
	const char	*p, *e;
	size_t		 n;
	int		 words;

	for (p = text; *p != '\0'; p += strcspn(p, " \t\r\n")) {
		p += strspn(p, " \t\r\n");
		while (*p != '\0' && strchr(" \t\r\n", *p) == NULL && !isalnum((unsigned char)*p))
			p++;
		if (*p == '\0' || !isalnum((unsigned char)*p))
			continue;
		for (e = p, words = 0; *e != '\0' && words < DOSSIER_GUESS_WORDS; words++) {
			e += strcspn(e, " \t\r\n");
			for (n = e - p; n > 0 && !isalnum((unsigned char)p[n - 1]); n--)
				continue;
			if (n < sizeof buf) {
				memcpy(buf, p, n);
				buf[n] = '\0';
				if (dossier_code_normalise(buf, out, NULL) == DCODE_OK)
					return 1;
			}
			e += strspn(e, " \t\r\n");
		}
	}
	out[0] = '\0';
	return 0;
}

/* Find a word that is a provincial code typed wrong (see dossier_damaged): 1 and the word in out
 * (DOSSIER_CODE_MAX), so the citizen is told the expected shape rather than nothing. */
int
dossier_code_suspect(const char *text, char *out)
{
	const char	*p, *e;
	size_t		 n, i;

	for (p = text; *p != '\0'; p = e) {
		p += strspn(p, " \t\r\n");
		e = p + strcspn(p, " \t\r\n");
		while (p < e && !isalnum((unsigned char)*p))
			p++;
		for (n = (size_t)(e - p); n > 0 && !isalnum((unsigned char)p[n - 1]); n--)
			continue;
		if (n == 0 || n >= DOSSIER_CODE_MAX)
			continue;
		for (i = 0; i < n; i++)
			out[i] = (char)toupper((unsigned char)p[i]);
		out[n] = '\0';
		if (dossier_damaged(out)) {
			memcpy(out, p, n);
			return 1;
		}
	}
	out[0] = '\0';
	return 0;
}

/* Status text for a national status code. */
const char *
dossier_status_text(int status)
{
	if (status < 1 || status > 10)
		return NULL;
	return dossier_statuses[status - 1];
}

/* Mask every word of a name but the first: "Nguyễn Văn An" -> "Nguyễn V** A**". */
char *
dossier_mask_name(const char *name)
{
	char	*t, *out, *q, *w;
	size_t	 k;

	t = text_trim(name);
	out = q = xmalloc(strlen(t) * 3 + 1);	/* "V" -> "V**" at worst */
	k = strcspn(t, " ");
	memcpy(q, t, k);
	q += k;
	for (w = t + k; *w == ' '; w += strcspn(w, " ")) {
		w++;
		for (k = 1; (w[k] & 0xC0) == 0x80; k++)
			continue;
		*q++ = ' ';
		memcpy(q, w, k);
		memcpy(q + k, "**", 2);
		q += k + 2;
	}
	*q = '\0';
	free(t);
	return out;
}

/* A string field of a dossier, or "" when it is missing or not a string. */
static const char *
dossier_get(const json_t *d, const char *key)
{
	const char	*s = json_string_value(json_object_get(d, key));

	return s != NULL ? s : "";
}

/* The status of a dossier as an integer (stored as integer or string of digits), 0 if absent. */
static int
dossier_get_status(const json_t *d)
{
	const json_t	*v = json_object_get(d, "status");
	const char	*s;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 1 || json_integer_value(v) > 10)
			return 0;
		return (int)json_integer_value(v);
	}
	if ((s = json_string_value(v)) == NULL || strlen(s) < 1 || strlen(s) > 2 ||
	    strspn(s, "0123456789") != strlen(s))
		return 0;
	return atoi(s);
}

/* Whether s is a calendar date "YYYY-MM-DD". */
static int
dossier_date_valid(const char *s)
{
	static const int	days[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int			y, m, d, i;

	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return 0;
	for (i = 0; i < 10; i++) {
		if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
			return 0;
	}
	y = atoi(s);
	m = atoi(s + 5);
	d = atoi(s + 8);
	if (y < 1 || m < 1 || m > 12 || d < 1 || d > days[m - 1])
		return 0;
	if (m == 2 && d == 29 && (y % 4 != 0 || (y % 100 == 0 && y % 400 != 0)))
		return 0;
	return 1;
}

/* Set key to a date "YYYY-MM-DD" rendered "DD/MM/YYYY"; anything else is passed through. */
static void
dossier_set_date(json_t *vars, const char *key, const char *s)
{
	char	d[11];

	if (!dossier_date_valid(s)) {
		json_object_set_new(vars, key, json_string(s));
		return;
	}
	memcpy(d, s + 8, 2);
	d[2] = '/';
	memcpy(d + 3, s + 5, 2);
	d[5] = '/';
	memcpy(d + 6, s, 4);
	d[10] = '\0';
	json_object_set_new(vars, key, json_string(d));
}

/* Days from 0000-03-01 to a valid date "YYYY-MM-DD" (only differences matter). */
static long
dossier_day_number(const char *s)
{
	long	y = atol(s), m = atol(s + 5), d = atol(s + 8);

	if (m <= 2) {
		y--;
		m += 12;
	}
	return 365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + d - 1;
}

/* Whether a dossier in this status is still being handled, so that its due date can pass: received
 * or registered, processing, waiting for papers or for a payment. Refused, withdrawn, stopped and
 * finished dossiers are never "overdue". */
static int
dossier_in_progress(int status)
{
	return status == 1 || status == 2 || status == 4 || status == 5 || status == 6;
}

/* Template variables for a reply about a dossier. Empty fields are set to "" (a template's
 * {{#field}} section leaves them out); "overdue" is "quá hạn N ngày" or "". */
json_t *
dossier_vars(const json_t *dossier, const char *sender, const char *today)
{
	json_t		*vars = json_object();
	const char	*due = dossier_get(dossier, "due_at"), *st;
	char		 phone[PHONE_MAX], *cause, *name, *late, num[4];
	int		 status = dossier_get_status(dossier), own = 0;

	json_object_set_new(vars, "code", json_string(dossier_get(dossier, "code")));
	json_object_set_new(vars, "procedure", json_string(dossier_get(dossier, "procedure")));
	if (sender != NULL) {
		switch (phone_normalise(dossier_get(dossier, "phone"), phone, &cause)) {
		case 0:
			own = strcmp(phone, sender) == 0;
			break;
		case -1:
			free(cause);
			break;
		}
	}
	if (own)
		json_object_set_new(vars, "applicant", json_string(dossier_get(dossier, "applicant")));
	else {
		name = dossier_mask_name(dossier_get(dossier, "applicant"));
		json_object_set_new(vars, "applicant", json_string(name));
		free(name);
	}
	json_object_set_new(vars, "agency", json_string(dossier_get(dossier, "agency")));
	dossier_set_date(vars, "received", dossier_get(dossier, "received_at"));
	dossier_set_date(vars, "due", due);
	num[0] = '\0';
	if (status != 0)
		snprintf(num, sizeof num, "%d", status);
	json_object_set_new(vars, "status", json_string(num));
	st = dossier_status_text(status);
	json_object_set_new(vars, "status_text", json_string(st != NULL ? st : ""));
	if (dossier_in_progress(status) && dossier_date_valid(due) && today != NULL &&
	    dossier_date_valid(today) && strcmp(due, today) < 0) {
		late = xasprintf("quá hạn %ld ngày", dossier_day_number(today) -
		    dossier_day_number(due));
		json_object_set_new(vars, "overdue", json_string(late));
		free(late);
	} else
		json_object_set_new(vars, "overdue", json_string(""));
	json_object_set_new(vars, "note", json_string(dossier_get(dossier, "note")));
	return vars;
}

/* Check and canonicalise one dossier object for import. */
json_t *
dossier_check(const json_t *in, char **cause)
{
	json_t		*out, *v;
	const char	*key, *s;
	char		 buf[DOSSIER_CODE_MAX], *t, *why;
	size_t		 i;
	json_int_t	 st;

	if (!json_is_object(in)) {
		*cause = xstrdup("A dossier must be a JSON object.");
		return NULL;
	}
	json_object_foreach((json_t *)in, key, v) {
		for (i = 0; i < DOSSIER_NFIELDS; i++) {
			if (strcmp(key, dossier_fields[i]) == 0)
				break;
		}
		if (i == DOSSIER_NFIELDS) {
			*cause = xasprintf("Unknown field \"%s\".", key);
			return NULL;
		}
	}
	out = json_object();
	for (i = 0; i < DOSSIER_NFIELDS; i++) {
		key = dossier_fields[i];
		v = json_object_get(in, key);
		if (v == NULL || json_is_null(v) ||
		    ((s = json_string_value(v)) != NULL && *s == '\0')) {
			if (strcmp(key, "code") == 0) {
				*cause = xstrdup("Field \"code\" is required.");
				goto fail;
			}
			continue;
		}
		if (strcmp(key, "status") == 0) {
			st = json_is_integer(v) ? json_integer_value(v) : dossier_get_status(in);
			if (st < 1 || st > 10) {
				*cause = xstrdup("Field \"status\" must be a status code from 1 to 10.");
				goto fail;
			}
			json_object_set_new(out, key, json_integer(st));
			continue;
		}
		if (s == NULL) {
			*cause = xasprintf("Field \"%s\" must be a string.", key);
			goto fail;
		}
		if (strcmp(key, "code") == 0 || strcmp(key, "national_code") == 0) {
			if (dossier_code_normalise(s, buf, NULL) == DCODE_BAD) {
				*cause = xasprintf("Field \"%s\" is not a dossier code.", key);
				goto fail;
			}
			json_object_set_new(out, key, json_string(buf));
		} else if (strcmp(key, "phone") == 0) {
			switch (phone_normalise(s, buf, &why)) {
			case 1:
				*cause = xstrdup("Field \"phone\" is a short code, not a mobile number.");
				goto fail;
			case -1:
				*cause = xasprintf("Field \"phone\": %s", why);
				free(why);
				goto fail;
			}
			json_object_set_new(out, key, json_string(buf));
		} else if (strcmp(key, "received_at") == 0 || strcmp(key, "due_at") == 0) {
			if (!dossier_date_valid(s)) {
				*cause = xasprintf("Field \"%s\" must be a date YYYY-MM-DD.", key);
				goto fail;
			}
			json_object_set_new(out, key, json_string(s));
		} else {
			t = text_trim(s);
			if (*t != '\0')
				json_object_set_new(out, key, json_string(t));
			free(t);
		}
	}
	return out;
fail:
	json_decref(out);
	return NULL;
}

/* A CSV record being read: its fields NUL-separated in buf. */
struct dossier_csv {
	char	*buf;
	size_t	 len;
	size_t	 size;
	size_t	*off;		/* where each field starts in buf */
	size_t	 nf;
	size_t	 maxf;
};

/* Append byte ch to the current field. */
static void
dossier_csv_add(struct dossier_csv *c, char ch)
{
	if (c->len == c->size) {
		c->size = c->size * 2 + 64;
		c->buf = xrealloc(c->buf, c->size);
	}
	c->buf[c->len++] = ch;
}

/* Read one RFC 4180 record at *pp, counting newlines in *line. 1 for a record, 0 at the end of the
 * text, -1 for a quoted field that is never closed. */
static int
dossier_csv_read(const char **pp, struct dossier_csv *c, int *line)
{
	const char	*p = *pp;

	if (*p == '\0')
		return 0;
	c->len = c->nf = 0;
	for (;;) {
		if (c->nf == c->maxf) {
			c->maxf = c->maxf * 2 + 16;
			c->off = xrealloc(c->off, c->maxf * sizeof *c->off);
		}
		c->off[c->nf++] = c->len;
		if (*p == '"') {
			for (p++;; p++) {
				if (*p == '\0') {
					*pp = p;
					return -1;
				}
				if (*p == '"' && *++p != '"')
					break;
				if (*p == '\n')
					(*line)++;
				dossier_csv_add(c, *p);
			}
		}
		/* Text after a closing quote is kept rather than refused. */
		while (*p != '\0' && *p != ',' && *p != '\n' && !(p[0] == '\r' && p[1] == '\n'))
			dossier_csv_add(c, *p++);
		dossier_csv_add(c, '\0');
		if (*p != ',')
			break;
		p++;
	}
	if (*p == '\r')
		p++;
	if (*p == '\n') {
		p++;
		(*line)++;
	}
	*pp = p;
	return 1;
}

/* Parse dossier rows from CSV text with a header row. */
json_t *
dossier_parse_csv(const char *text, json_t **errors, json_t **lines, char **cause)
{
	struct dossier_csv	 c = { 0 };
	const char		*p = text, *f;
	char			*cols = NULL;
	size_t			*col = NULL, ncols, i, j;
	json_t			*rows = NULL, *row, *v;
	int			 line = 1, start, rc;

	*errors = NULL;
	if (lines != NULL)
		*lines = NULL;
	if (strncmp(p, "\xEF\xBB\xBF", 3) == 0)		/* a byte order mark, as Excel writes */
		p += 3;
	if ((rc = dossier_csv_read(&p, &c, &line)) != 1) {
		*cause = xstrdup(rc == 0 ? "The CSV text is empty." :
		    "The CSV header has a quoted field that is never closed.");
		goto done;
	}
	ncols = c.nf;
	cols = xmalloc(c.len);
	memcpy(cols, c.buf, c.len);
	col = xmalloc(ncols * sizeof *col);
	for (i = 0; i < ncols; i++) {
		col[i] = c.off[i];
		for (j = 0; j < DOSSIER_NFIELDS; j++) {
			if (strcmp(cols + col[i], dossier_fields[j]) == 0)
				break;
		}
		if (j == DOSSIER_NFIELDS) {
			*cause = xasprintf("The CSV header has an unknown column \"%s\".", cols + col[i]);
			goto done;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(cols + col[i], cols + col[j]) == 0) {
				*cause = xasprintf("The CSV header names column \"%s\" twice.",
				    cols + col[i]);
				goto done;
			}
		}
	}
	for (i = 0; i < ncols && strcmp(cols + col[i], "code") != 0; i++)
		continue;
	if (i == ncols) {
		*cause = xstrdup("The CSV header has no \"code\" column.");
		goto done;
	}

	rows = json_array();
	*errors = json_array();
	if (lines != NULL)
		*lines = json_array();
	for (;;) {
		start = line;
		if ((rc = dossier_csv_read(&p, &c, &line)) == 0)
			break;
		if (rc == -1) {
			json_array_append_new(*errors, json_sprintf("line %d: a quoted field is "
			    "never closed", start));
			break;
		}
		if (c.nf == 1 && c.buf[0] == '\0')	/* an empty line */
			continue;
		if (c.nf != ncols) {
			json_array_append_new(*errors, json_sprintf("line %d: expected %zu fields, "
			    "found %zu", start, ncols, c.nf));
			continue;
		}
		row = json_object();
		for (i = 0; i < ncols; i++) {
			f = c.buf + c.off[i];
			if (*f == '\0')
				continue;
			if ((v = json_string(f)) == NULL) {
				json_array_append_new(*errors, json_sprintf("line %d: field \"%s\" is "
				    "not valid UTF-8", start, cols + col[i]));
				json_decref(row);
				row = NULL;
				break;
			}
			json_object_set_new(row, cols + col[i], v);
		}
		if (row != NULL) {
			json_array_append_new(rows, row);
			if (lines != NULL)
				json_array_append_new(*lines, json_integer(start));
		}
	}
done:
	free(c.buf);
	free(c.off);
	free(cols);
	free(col);
	return rows;
}
