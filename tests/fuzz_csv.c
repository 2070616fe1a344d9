/* fuzz_csv.c: libFuzzer target for the dossier CSV import: dossier_parse_csv on the input (up to its
 * first NUL) must give the rows and errors of a small reference RFC 4180 reader written here; then
 * dossier_check on every row, and every accepted dossier must come back unchanged through its JSON
 * text and dossier_check again. Every property below aborts when it does not hold. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"
#include "fuzz.h"

/* The dossier fields as dossier.h documents them (written here, not taken from dossier.c). */
static const char *fields[] = {
	"code", "national_code", "procedure", "applicant", "phone", "agency", "received_at", "due_at",
	"status", "note",
};
#define NFIELDS (sizeof fields / sizeof fields[0])

/* One record of the reference reader: its fields as C strings. */
struct rec {
	char	**f;
	size_t	  n;
};

/* The reference reader's position in the text. */
struct ref {
	const char	*s;
	size_t		 len, i;
	int		 line;
};

static int
is_field(const char *s)
{
	size_t	i;

	for (i = 0; i < NFIELDS; i++) {
		if (strcmp(s, fields[i]) == 0)
			return 1;
	}
	return 0;
}

static void
rec_clear(struct rec *r)
{
	size_t	i;

	for (i = 0; i < r->n; i++)
		free(r->f[i]);
	free(r->f);
	r->f = NULL;
	r->n = 0;
}

/* Read one record the RFC 4180 way, with the documented leniencies: a quote opens a quoted field only
 * as its first byte, text after the closing quote is kept, a lone CR is data. 1 a record, 0 the end
 * of the text, -1 a quoted field never closed (the rest of the text is gone). */
static int
ref_read(struct ref *r, struct rec *rec)
{
	const char	*s = r->s;
	size_t		 n = r->len, i = r->i, fl;
	char		*f;

	rec_clear(rec);
	if (i == n)
		return 0;
	for (;;) {
		f = xmalloc(n - i + 1);
		fl = 0;
		if (i < n && s[i] == '"') {
			for (i++;; i++) {
				if (i == n) {
					free(f);
					r->i = n;
					return -1;
				}
				if (s[i] == '"') {
					if (i + 1 < n && s[i + 1] == '"')
						i++;		/* "" is one quote */
					else {
						i++;
						break;
					}
				} else if (s[i] == '\n')
					r->line++;
				f[fl++] = s[i];
			}
		}
		while (i < n && s[i] != ',' && s[i] != '\n' &&
		    !(s[i] == '\r' && i + 1 < n && s[i + 1] == '\n'))
			f[fl++] = s[i++];
		f[fl] = '\0';
		rec->f = xrealloc(rec->f, (rec->n + 1) * sizeof *rec->f);
		rec->f[rec->n++] = f;
		if (i < n && s[i] == ',') {
			i++;
			continue;
		}
		break;
	}
	if (i < n && s[i] == '\r')
		i++;
	if (i < n && s[i] == '\n') {
		i++;
		r->line++;
	}
	r->i = i;
	return 1;
}

/* What dossier_parse_csv should give for s: 0 and *rows, *errors, or -1 when the header is
 * unusable. */
static int
ref_parse(const char *s, json_t **rows, json_t **errors)
{
	struct ref	 r = { s, strlen(s), 0, 1 };
	struct rec	 hdr = { NULL, 0 }, rec = { NULL, 0 };
	json_t		*row;
	size_t		 i, j;
	int		 start, rc;

	*rows = *errors = NULL;
	if (r.len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
		r.i = 3;
	if (ref_read(&r, &hdr) != 1)
		goto bad;
	for (i = 0; i < hdr.n; i++) {
		if (!is_field(hdr.f[i]))
			goto bad;
		for (j = 0; j < i; j++) {
			if (strcmp(hdr.f[i], hdr.f[j]) == 0)
				goto bad;
		}
	}
	for (i = 0; i < hdr.n && strcmp(hdr.f[i], "code") != 0; i++)
		continue;
	if (i == hdr.n)
		goto bad;

	*rows = json_array();
	*errors = json_array();
	for (;;) {
		start = r.line;
		if ((rc = ref_read(&r, &rec)) == 0)
			break;
		if (rc == -1) {
			json_array_append_new(*errors, json_sprintf("line %d: a quoted field is "
			    "never closed", start));
			break;
		}
		if (rec.n == 1 && rec.f[0][0] == '\0')
			continue;
		if (rec.n != hdr.n) {
			json_array_append_new(*errors, json_sprintf("line %d: expected %zu fields, "
			    "found %zu", start, hdr.n, rec.n));
			continue;
		}
		row = json_object();
		for (i = 0; i < rec.n; i++) {
			if (rec.f[i][0] == '\0')
				continue;
			if (!text_utf8_valid(rec.f[i], strlen(rec.f[i]))) {
				json_array_append_new(*errors, json_sprintf("line %d: field \"%s\" "
				    "is not valid UTF-8", start, hdr.f[i]));
				json_decref(row);
				row = NULL;
				break;
			}
			json_object_set_new(row, hdr.f[i], json_string(rec.f[i]));
		}
		if (row != NULL)
			json_array_append_new(*rows, row);
	}
	rec_clear(&rec);
	rec_clear(&hdr);
	return 0;
bad:
	rec_clear(&rec);
	rec_clear(&hdr);
	return -1;
}

/* Whether s is "YYYY-MM-DD" in shape (dossier_check also checks the calendar). */
static int
date_shaped(const char *s)
{
	int	i;

	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return 0;
	for (i = 0; i < 10; i++) {
		if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
			return 0;
	}
	return 1;
}

/* A dossier as dossier_check returns it: known keys, a canonical code, a canonical mobile number,
 * dates, a status 1-10 and trimmed non-empty texts. */
static void
check_canonical(const json_t *d)
{
	const char	*key, *s;
	char		 buf[DOSSIER_CODE_MAX], *t;
	json_t		*v;
	int		 rc;

	CHECK(json_is_object(d));
	CHECK(json_is_string(json_object_get(d, "code")));
	json_object_foreach((json_t *)d, key, v) {
		CHECK(is_field(key));
		if (strcmp(key, "status") == 0) {
			CHECK(json_is_integer(v));
			CHECK(json_integer_value(v) >= 1 && json_integer_value(v) <= 10);
			continue;
		}
		CHECK(json_is_string(v));
		s = json_string_value(v);
		CHECK(*s != '\0' && strlen(s) == json_string_length(v));
		CHECK(text_utf8_valid(s, strlen(s)));
		if (strcmp(key, "code") == 0 || strcmp(key, "national_code") == 0) {
			rc = dossier_code_normalise(s, buf, NULL);
			CHECK(rc == DCODE_OK || rc == DCODE_OTHER);
			CHECK(strcmp(buf, s) == 0);
		} else if (strcmp(key, "phone") == 0) {
			CHECK(strlen(s) == 11 && strncmp(s, "84", 2) == 0);
			CHECK(strspn(s, "0123456789") == 11);
		} else if (strcmp(key, "received_at") == 0 || strcmp(key, "due_at") == 0)
			CHECK(date_shaped(s));
		else {
			t = text_trim(s);
			CHECK(strcmp(t, s) == 0);
			free(t);
		}
	}
}

/* One row: checked, and when accepted, the same again through its JSON text. */
static void
check_row(const json_t *row)
{
	json_t		*out, *back, *again, *vars, *v;
	json_error_t	 jerr;
	const char	*key;
	char		*cause = NULL, *dump;

	if ((out = dossier_check(row, &cause)) == NULL) {
		CHECK(cause != NULL && *cause != '\0');
		free(cause);
		return;
	}
	CHECK(cause == NULL);
	check_canonical(out);

	dump = json_dumps(out, JSON_SORT_KEYS);
	CHECK(dump != NULL);
	back = json_loads(dump, 0, &jerr);
	CHECK(back != NULL && json_equal(back, out));
	again = dossier_check(back, &cause);
	if (again == NULL)
		fprintf(stderr, "dossier_check refused its own output %s: %s\n", dump, cause);
	CHECK(again != NULL && cause == NULL);
	CHECK(json_equal(again, out));

	/* What a reply about it shows: strings only, valid UTF-8. */
	vars = dossier_vars(out, "84912345678", "2026-11-26");
	CHECK(json_is_object(vars));
	json_object_foreach(vars, key, v) {
		CHECK(json_is_string(v));
		CHECK(text_utf8_valid(json_string_value(v), json_string_length(v)));
	}
	json_decref(vars);
	json_decref(again);
	json_decref(back);
	free(dump);
	json_decref(out);
}

/* One input: the text up to its first NUL is a CSV file. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t	*rows, *errors = NULL, *want_rows, *want_errors, *row, *e;
	char	*s, *cause = NULL;
	size_t	 len, i;
	int	 line, nl = 1;

	len = strnlen((const char *)data, size);
	s = xmalloc(len + 1);
	memcpy(s, data, len);
	s[len] = '\0';
	for (i = 0; i < len; i++)
		nl += s[i] == '\n';

	rows = dossier_parse_csv(s, &errors, NULL, &cause);
	if (ref_parse(s, &want_rows, &want_errors) != 0) {
		CHECK(rows == NULL && errors == NULL);
		CHECK(cause != NULL && *cause != '\0');
		free(cause);
		free(s);
		return 0;
	}
	CHECK(rows != NULL && cause == NULL);
	CHECK(json_is_array(rows) && json_is_array(errors));
	json_array_foreach(errors, i, e) {
		CHECK(json_is_string(e));
		CHECK(sscanf(json_string_value(e), "line %d: ", &line) == 1);
		CHECK(line >= 2 && line <= nl);
	}
	if (!json_equal(rows, want_rows) || !json_equal(errors, want_errors)) {
		fprintf(stderr, "rows:   %s\nwanted: %s\nerrors: %s\nwanted: %s\n",
		    json_dumps(rows, JSON_COMPACT), json_dumps(want_rows, JSON_COMPACT),
		    json_dumps(errors, JSON_COMPACT), json_dumps(want_errors, JSON_COMPACT));
		CHECK(!"dossier_parse_csv differs from the reference reader");
	}
	json_array_foreach(rows, i, row) {
		CHECK(json_is_object(row));
		check_row(row);
	}
	json_decref(want_errors);
	json_decref(want_rows);
	json_decref(errors);
	json_decref(rows);
	free(s);
	return 0;
}
