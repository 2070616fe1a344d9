/* dossier.h: dossier codes, national status texts, reply fields and import rows. Pure: no I/O.
 * The code pattern is module state, set once at start-up (and again on reload) by dossier_set_pattern. */
#ifndef DVCGW_DOSSIER_H
#define DVCGW_DOSSIER_H

#include <jansson.h>
#include <stddef.h>

#define DOSSIER_CODE_MAX 64
#define DOSSIER_DEFAULT_PATTERN \
	"^[0-9A-Z]{2,3}(\\.[0-9A-Z]{2}){2,3}\\.[A-Z][0-9]{2}-[0-9]{6}-[0-9]{4}$"

#define DCODE_BAD	-1	/* not a code: *cause says the expected shape */
#define DCODE_OK	 0	/* matches the configured pattern; out is canonical */
#define DCODE_OTHER	 1	/* plausible other code (national portal code): upper-cased, spaces removed */

/* Compile the code pattern (POSIX extended regex). 0, or -1 with *cause. NULL restores the default. */
int	 dossier_set_pattern(const char *pattern, char **cause);
/* Normalise what a citizen typed: upper-case, spaces removed, unicode dashes to '-', trailing
 * punctuation dropped, missing dots in the unit part restored when exactly one placement matches,
 * separators lost or typed as spaces rebuilt (dashes before the last 10 and 4 characters). A
 * string with the unit marker (".H21-") that still does not match is DCODE_BAD, not another code.
 * out has DOSSIER_CODE_MAX bytes. Returns DCODE_OK, DCODE_OTHER or DCODE_BAD. */
int	 dossier_code_normalise(const char *in, char *out, char **cause);
/* Find a code in a whole message ("HS 000.00.20.H21-231125-0001", "tra cứu 000...", or the code
 * alone): 1 and out filled (DOSSIER_CODE_MAX) when some suffix of the text after at most three
 * leading words normalises to DCODE_OK, else 0. Used to prefetch the dossier with the session. */
int	 dossier_code_guess(const char *text, char *out);
/* A word of the message that is a provincial code typed wrong (it has the unit marker ".H21" or
 * three dots but does not normalise): 1 and the word in out (DOSSIER_CODE_MAX), else 0. */
int	 dossier_code_suspect(const char *text, char *out);
/* Status text for a national status code 1-10 (with diacritics), NULL when out of range. */
const char *dossier_status_text(int status);
/* "Nguyễn Văn An" -> "Nguyễn V** A**": first word kept, every later word its first letter + "**". */
char	*dossier_mask_name(const char *name);
/* Template variables for a reply about a dossier: code, procedure, applicant (masked unless sender,
 * a canonical phone or NULL, equals the dossier's phone after normalisation), agency, received and due
 * (DD/MM/YYYY), status (number as string), status_text, overdue ("quá hạn" when status < 9 and
 * due < today, else ""), note. today is "YYYY-MM-DD". Missing fields become "". New reference. */
json_t	*dossier_vars(const json_t *dossier, const char *sender, const char *today);
/* Check one dossier object for import and return its canonical form (code normalised, phone
 * normalised, dates YYYY-MM-DD, status 1-10, national_code optional, unknown keys refused).
 * New reference, or NULL with *cause. */
json_t	*dossier_check(const json_t *in, char **cause);
/* Parse CSV (RFC 4180 quoting, header row with the dossier field names) into an array of objects with
 * string values ("status" stays a string; dossier_check accepts "7"). Rows that cannot be parsed are
 * reported in *errors as "line N: reason" strings (a JSON array). When lines is not NULL, *lines gets
 * the line each returned row starts on (a JSON array of integers, parallel to the rows). New
 * reference, or NULL with *cause when the header itself is unusable. */
json_t	*dossier_parse_csv(const char *text, json_t **errors, json_t **lines, char **cause);

#endif
