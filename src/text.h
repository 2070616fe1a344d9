/* text.h: pure text utilities — UTF-8/UTF-16, Vietnamese NFC and folding, GSM-7 and SMS segments,
 * Vietnamese phone numbers. No I/O, no global state. Every returned string is xmalloc'd and owned
 * by the caller. */
#ifndef DVCGW_TEXT_H
#define DVCGW_TEXT_H

#include <stddef.h>

/* text.c */
int	 text_utf8_valid(const char *s, size_t len);	/* 1 valid (no overlongs, surrogates, > U+10FFFF), 0 not */
char	*text_utf8_scrub(const char *s, size_t len, int oneline, size_t max); /* valid, one-line-safe copy */
size_t	 text_utf8_len(const char *s);			/* code points in a valid UTF-8 string */
char	*text_utf16be_to_utf8(const unsigned char *p, size_t len, char **cause); /* NULL + cause: odd length, lone surrogate, U+0000 */
char	*text_utf8_to_utf16be(const char *s, size_t *outlen);	/* valid UTF-8 in; bytes out (not NUL-terminated) */
char	*text_nfc(const char *s);		/* compose base + combining marks (Vietnamese set) to precomposed */
char	*text_fold(const char *s);		/* NFC, lower-case, no diacritics, đ→d, punctuation→space, spaces collapsed, trimmed */
char	*text_unaccent(const char *s);		/* NFC, diacritics removed keeping case, đ→d Đ→D, rest unchanged */
char	*text_trim(const char *s);		/* NFC, leading/trailing whitespace removed, inner runs of whitespace → one space */
int	 text_is_gsm7(const char *s);		/* 1 when every character is in GSM 03.38 (basic or extension table) */
char	*text_gsm7_replace(const char *s);	/* characters outside GSM 03.38: quotes/dashes to ASCII, emoji dropped, rest '?' */

struct text_sms {
	int	ucs2;		/* 0 GSM-7, 1 UCS-2 */
	size_t	units;		/* septets (GSM-7, extension chars count 2) or UTF-16 units (UCS-2) */
	size_t	parts;		/* 1 when units fit 160/70, else ceil(units / 153 or 67) */
};
void	 text_sms_count(const char *s, struct text_sms *out);
char	*text_json_string(const char *s);	/* quoted and escaped; NULL if not UTF-8 */
void	 text_sms_count_plain(const char *s, struct text_sms *out);	/* of the unaccented, GSM-7-replaced s (valid UTF-8) */
/* Split s into SMS parts by the GSM-7 (160/153) or UCS-2 (70/67) rules, preferring to cut at a space or
 * newline, never inside a character, an extension pair or a surrogate pair. When more than max_parts
 * would be needed the text is cut to max_parts and the last part ends with "...". Returns the number of
 * parts; *parts is an xmalloc'd array of xmalloc'd strings. */
size_t	 text_sms_split(const char *s, size_t max_parts, char ***parts);
void	 text_free_parts(char **parts, size_t n);
/* s cut to at most max_parts segments (0: no limit) by the same rules, "..." at the end when cut: the
 * text of one concatenated SMS. */
char	*text_sms_fit(const char *s, size_t max_parts);

/* phone.c */
#define PHONE_MAX 24
/* Normalise a Vietnamese mobile number ("0912345678", "+84 912 345 678", "84912345678", "0912.345.678")
 * to "84" + 9 digits in out (PHONE_MAX bytes). Returns 0 on success, 1 when the input is a short code
 * (3-6 digits, copied unchanged), -1 with *cause (xmalloc'd, a sentence a person understands) for
 * anything else, including old 11-digit numbers (01xx...). */
int	 phone_normalise(const char *in, char *out, char **cause);
int	 phone_user(const char *in, char *out, size_t len, char **cause);
/* Mask a canonical number for logs: "84912345678" -> "84912***678". out is PHONE_MAX bytes. */
void	 phone_mask(const char *in, char *out);

#endif
