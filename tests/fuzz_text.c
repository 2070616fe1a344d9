/* fuzz_text.c: libFuzzer target for the text parsers that read what citizens send: UTF-8 checks,
 * UTF-16BE (Kannel UCS-2) decoding, NFC and folding, SMS counting and splitting, phone numbers and
 * dossier codes. Every property below aborts when it does not hold. */
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"
#include "fuzz.h"

static regex_t	code_re;	/* DOSSIER_DEFAULT_PATTERN, compiled here independently of dossier.c */

/* Compile the reference code pattern once. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (regcomp(&code_re, DOSSIER_DEFAULT_PATTERN, REG_EXTENDED | REG_NOSUB) != 0) {
		fprintf(stderr, "fuzz_text: the default dossier pattern does not compile\n");
		abort();
	}
	return 0;
}

/* Valid UTF-8 as a C string. */
static int
valid(const char *s)
{
	return text_utf8_valid(s, strlen(s));
}

/* Units a part costs in the encoding chosen for the whole message. */
static size_t
part_units(const char *part, int ucs2)
{
	struct text_sms	 sms;
	size_t		 n;
	char		*u;

	if (ucs2) {
		u = text_utf8_to_utf16be(part, &n);
		free(u);
		return n / 2;
	}
	CHECK(text_is_gsm7(part));
	text_sms_count(part, &sms);
	CHECK(!sms.ucs2);
	return sms.units;
}

/* Split s with max_parts and check the parts: valid UTF-8, within the limits, and joined they give
 * back s, or (cut to max_parts) a prefix of s followed by "...". */
static void
check_split(const char *s, const struct text_sms *sms, size_t max_parts)
{
	char	**parts, *joined;
	size_t	  n, i, len = strlen(s), jlen = 0, limit, plen;

	n = text_sms_split(s, max_parts, &parts);
	CHECK(n >= 1);
	CHECK(max_parts == 0 || n <= max_parts);
	if (n == 1)
		limit = sms->ucs2 ? 70 : 160;
	else
		limit = sms->ucs2 ? 67 : 153;
	joined = xmalloc(len + 4 * n + 1);
	for (i = 0; i < n; i++) {
		plen = strlen(parts[i]);
		CHECK(valid(parts[i]));
		CHECK(n == 1 || plen > 0);
		CHECK(part_units(parts[i], sms->ucs2) <= limit);
		CHECK(jlen + plen <= len + 3);
		memcpy(joined + jlen, parts[i], plen);
		jlen += plen;
	}
	joined[jlen] = '\0';
	if (strcmp(joined, s) != 0) {
		/* Only a text cut to max_parts may differ, and only by its tail. */
		CHECK(max_parts != 0 && n == max_parts);
		CHECK(jlen >= 3 && memcmp(joined + jlen - 3, "...", 3) == 0);
		CHECK(jlen - 3 < len && memcmp(joined, s, jlen - 3) == 0);
	} else
		CHECK(sms->parts == 1 || n > 1 || max_parts == 1);
	free(joined);
	text_free_parts(parts, n);
}

/* The string functions on a NUL-terminated s; properties only when s is valid UTF-8. */
/* text_sms_count_plain counts what the SMS channel sends for valid UTF-8 s, unaccented and
 * GSM-7-replaced, as building it and counting would. (With invalid bytes it may differ: a stray
 * byte left next to another once a mark between them is dropped can decode as one character.) */
static void
check_plain_count(const char *s, const char *unacc)
{
	struct text_sms	 a, b;
	char		*g = text_gsm7_replace(unacc);

	text_sms_count(g, &a);
	text_sms_count_plain(s, &b);
	CHECK(a.ucs2 == b.ucs2 && a.units == b.units && a.parts == b.parts);
	free(g);
}

static void
check_string(const char *s)
{
	struct text_sms	 sms;
	size_t		 len = strlen(s), n, i;
	char		*nfc, *fold, *unacc, *trim, *again, *u16, *back;
	int		 ok = valid(s);

	nfc = text_nfc(s);
	fold = text_fold(s);
	unacc = text_unaccent(s);
	trim = text_trim(s);
	n = (size_t)text_is_gsm7(s);
	text_sms_count(s, &sms);
	if (!ok)
		goto out;
	check_plain_count(s, unacc);

	CHECK(valid(nfc) && strlen(nfc) <= len);
	again = text_nfc(nfc);
	CHECK(strcmp(again, nfc) == 0);
	free(again);

	CHECK(valid(fold) && strlen(fold) <= len);
	CHECK(fold[0] != ' ' && (fold[0] == '\0' || fold[strlen(fold) - 1] != ' '));
	CHECK(strstr(fold, "  ") == NULL);
	for (i = 0; fold[i] != '\0'; i++)
		CHECK(!(fold[i] >= 'A' && fold[i] <= 'Z'));
	again = text_fold(fold);
	CHECK(strcmp(again, fold) == 0);
	free(again);
	again = text_fold(unacc);		/* typing without accents matches the same */
	CHECK(strcmp(again, fold) == 0);
	free(again);

	CHECK(valid(unacc) && strlen(unacc) <= len);
	CHECK(valid(trim) && strlen(trim) <= len);
	CHECK(trim[0] != ' ' && (trim[0] == '\0' || trim[strlen(trim) - 1] != ' '));
	again = text_trim(trim);
	CHECK(strcmp(again, trim) == 0);
	free(again);

	CHECK(n == 0 || n == 1);
	CHECK(sms.ucs2 == !n);
	if (sms.units <= (sms.ucs2 ? 70u : 160u))
		CHECK(sms.parts == 1);
	else
		CHECK(sms.parts >= 2);
	u16 = text_utf8_to_utf16be(s, &n);
	CHECK(n % 2 == 0 && n <= 2 * len);
	if (sms.ucs2)
		CHECK(sms.units == n / 2);
	else
		CHECK(sms.units >= text_utf8_len(s));
	back = text_utf16be_to_utf8((const unsigned char *)u16, n, &again);
	CHECK(back != NULL && strcmp(back, s) == 0);
	free(back);
	free(u16);

	check_split(s, &sms, 0);
	check_split(s, &sms, 1);
	check_split(s, &sms, 2);
	check_split(s, &sms, 3);
out:
	free(trim);
	free(unacc);
	free(fold);
	free(nfc);
}

/* Phone numbers: 0 gives "84" + 9 digits, 1 a short code of 3-6 digits, -1 a reason. */
static void
check_phone(const char *s)
{
	char	 out[PHONE_MAX], masked[PHONE_MAX], *cause = NULL;
	size_t	 i;
	int	 rc;

	memset(out, 0x55, sizeof out);
	rc = phone_normalise(s, out, &cause);
	CHECK(rc >= -1 && rc <= 1);
	if (rc == -1) {
		CHECK(cause != NULL && *cause != '\0');
		free(cause);
		return;
	}
	CHECK(cause == NULL);
	CHECK(memchr(out, '\0', sizeof out) != NULL);
	for (i = 0; out[i] != '\0'; i++)
		CHECK(out[i] >= '0' && out[i] <= '9');
	if (rc == 1) {
		CHECK(i >= 3 && i <= 6);
		return;
	}
	CHECK(i == 11 && out[0] == '8' && out[1] == '4');
	CHECK(strchr("35789", out[2]) != NULL);
	phone_mask(out, masked);
	CHECK(strlen(masked) == 11 && memcmp(masked + 5, "***", 3) == 0);
	/* The canonical form is itself accepted unchanged. */
	rc = phone_normalise(out, masked, &cause);
	CHECK(rc == 0 && strcmp(masked, out) == 0);
}

/* Dossier codes: DCODE_OK output matches the default pattern and normalises to itself. */
static void
check_code(const char *s)
{
	char	 out[DOSSIER_CODE_MAX], again[DOSSIER_CODE_MAX], *cause = NULL;
	size_t	 n;
	int	 rc;

	memset(out, 0x55, sizeof out);
	rc = dossier_code_normalise(s, out, &cause);
	CHECK(memchr(out, '\0', sizeof out) != NULL);
	n = strlen(out);
	switch (rc) {
	case DCODE_OK:
		CHECK(cause == NULL);
		CHECK(regexec(&code_re, out, 0, NULL, 0) == 0);
		CHECK(dossier_code_normalise(out, again, NULL) == DCODE_OK);
		CHECK(strcmp(again, out) == 0);
		break;
	case DCODE_OTHER:
		CHECK(cause == NULL);
		CHECK(n >= 6 && n <= 40);
		CHECK(strspn(out, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-_/") == n);
		CHECK(dossier_code_normalise(out, again, NULL) == DCODE_OTHER);
		CHECK(strcmp(again, out) == 0);
		break;
	case DCODE_BAD:
		CHECK(cause != NULL && *cause != '\0');
		free(cause);
		break;
	default:
		CHECK(!"unknown dossier_code_normalise result");
	}

	memset(out, 0x55, sizeof out);
	if (dossier_code_guess(s, out)) {
		CHECK(memchr(out, '\0', sizeof out) != NULL);
		CHECK(regexec(&code_re, out, 0, NULL, 0) == 0);
		CHECK(dossier_code_normalise(out, again, NULL) == DCODE_OK);
		CHECK(strcmp(again, out) == 0);
	} else
		CHECK(out[0] == '\0');

	/* a code typed wrong: a word of the text, never a valid code */
	memset(out, 0x55, sizeof out);
	if (dossier_code_suspect(s, out)) {
		CHECK(memchr(out, '\0', sizeof out) != NULL && out[0] != '\0');
		CHECK(strstr(s, out) != NULL);
		CHECK(dossier_code_normalise(out, again, NULL) != DCODE_OTHER);
	} else
		CHECK(out[0] == '\0');
}

/* UTF-16BE (Kannel coding=2): any decoded text is valid UTF-8, and without U+0000 it encodes back
 * to the same bytes. */
static void
check_utf16(const uint8_t *data, size_t size)
{
	char	*s, *cause = NULL, *u16;
	size_t	 i, n;

	s = text_utf16be_to_utf8(data, size, &cause);
	if (s == NULL) {
		CHECK(cause != NULL && *cause != '\0');
		free(cause);
		return;
	}
	CHECK(cause == NULL && size % 2 == 0);
	CHECK(valid(s));
	for (i = 0; i + 1 < size; i += 2)		/* U+0000 is refused, never cut short */
		CHECK(data[i] != 0 || data[i + 1] != 0);
	u16 = text_utf8_to_utf16be(s, &n);
	CHECK(n == size && memcmp(u16, data, n) == 0);
	free(u16);
	free(s);
}

/* One input: the raw bytes, then the NUL-terminated copy up to the first NUL. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*s;
	int	 ok;

	ok = text_utf8_valid((const char *)data, size);
	check_utf16(data, size);

	s = xmalloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	if (ok)
		CHECK(valid(s));	/* a NUL is a character boundary */
	check_string(s);
	check_phone(s);
	check_code(s);
	free(s);
	return 0;
}
