/* text.c: UTF-8 and UTF-16 conversion, Vietnamese NFC, folding and unaccenting, GSM 03.38 and SMS
 * segments. Bytes that are not valid UTF-8 travel as the code points U+DC80-U+DCFF (like Python's
 * "surrogateescape"), so they come out unchanged and no decoder ever reads past the end. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"

#define TEXT_RAW(b)	(0xDC00 | (uint32_t)(b))	/* an invalid byte carried as a code point */
#define TEXT_IS_RAW(c)	((c) >= 0xDC80 && (c) <= 0xDCFF)

/* Vowel bases, in the order of the rows of text_vowels. */
enum { V_A, V_AB, V_AC, V_E, V_EC, V_I, V_O, V_OC, V_OH, V_U, V_UH, V_Y, V_NBASES };

/* The 12 Vietnamese vowel bases by 6 tones (none, grave, acute, hook above, tilde, dot below), lower
 * then upper case. */
static const uint16_t text_vowels[2][V_NBASES][6] = {
	{
		{ 0x0061, 0x00E0, 0x00E1, 0x1EA3, 0x00E3, 0x1EA1 },	/* a */
		{ 0x0103, 0x1EB1, 0x1EAF, 0x1EB3, 0x1EB5, 0x1EB7 },	/* ă */
		{ 0x00E2, 0x1EA7, 0x1EA5, 0x1EA9, 0x1EAB, 0x1EAD },	/* â */
		{ 0x0065, 0x00E8, 0x00E9, 0x1EBB, 0x1EBD, 0x1EB9 },	/* e */
		{ 0x00EA, 0x1EC1, 0x1EBF, 0x1EC3, 0x1EC5, 0x1EC7 },	/* ê */
		{ 0x0069, 0x00EC, 0x00ED, 0x1EC9, 0x0129, 0x1ECB },	/* i */
		{ 0x006F, 0x00F2, 0x00F3, 0x1ECF, 0x00F5, 0x1ECD },	/* o */
		{ 0x00F4, 0x1ED3, 0x1ED1, 0x1ED5, 0x1ED7, 0x1ED9 },	/* ô */
		{ 0x01A1, 0x1EDD, 0x1EDB, 0x1EDF, 0x1EE1, 0x1EE3 },	/* ơ */
		{ 0x0075, 0x00F9, 0x00FA, 0x1EE7, 0x0169, 0x1EE5 },	/* u */
		{ 0x01B0, 0x1EEB, 0x1EE9, 0x1EED, 0x1EEF, 0x1EF1 },	/* ư */
		{ 0x0079, 0x1EF3, 0x00FD, 0x1EF7, 0x1EF9, 0x1EF5 },	/* y */
	},
	{
		{ 0x0041, 0x00C0, 0x00C1, 0x1EA2, 0x00C3, 0x1EA0 },	/* A */
		{ 0x0102, 0x1EB0, 0x1EAE, 0x1EB2, 0x1EB4, 0x1EB6 },	/* Ă */
		{ 0x00C2, 0x1EA6, 0x1EA4, 0x1EA8, 0x1EAA, 0x1EAC },	/* Â */
		{ 0x0045, 0x00C8, 0x00C9, 0x1EBA, 0x1EBC, 0x1EB8 },	/* E */
		{ 0x00CA, 0x1EC0, 0x1EBE, 0x1EC2, 0x1EC4, 0x1EC6 },	/* Ê */
		{ 0x0049, 0x00CC, 0x00CD, 0x1EC8, 0x0128, 0x1ECA },	/* I */
		{ 0x004F, 0x00D2, 0x00D3, 0x1ECE, 0x00D5, 0x1ECC },	/* O */
		{ 0x00D4, 0x1ED2, 0x1ED0, 0x1ED4, 0x1ED6, 0x1ED8 },	/* Ô */
		{ 0x01A0, 0x1EDC, 0x1EDA, 0x1EDE, 0x1EE0, 0x1EE2 },	/* Ơ */
		{ 0x0055, 0x00D9, 0x00DA, 0x1EE6, 0x0168, 0x1EE4 },	/* U */
		{ 0x01AF, 0x1EEA, 0x1EE8, 0x1EEC, 0x1EEE, 0x1EF0 },	/* Ư */
		{ 0x0059, 0x1EF2, 0x00DD, 0x1EF6, 0x1EF8, 0x1EF4 },	/* Y */
	},
};
static const char text_bases[V_NBASES] = "aaaeeiooouuy";	/* each row without diacritics */

/* Combining tone marks, indexed like the columns of text_vowels. */
static const uint16_t text_tones[6] = { 0, 0x0300, 0x0301, 0x0309, 0x0303, 0x0323 };

/* Combining marks that change a vowel's shape: a + breve = ă, o + horn = ơ, ... */
static const struct {
	uint8_t		from;
	uint8_t		to;
	uint16_t	mark;
} text_shapes[] = {
	{ V_A, V_AB, 0x0306 }, { V_A, V_AC, 0x0302 }, { V_E, V_EC, 0x0302 },
	{ V_O, V_OC, 0x0302 }, { V_O, V_OH, 0x031B }, { V_U, V_UH, 0x031B },
};

/* GSM 03.38 basic table characters outside printable ASCII (all of which are in it except '`'). */
static const uint16_t text_gsm_basic[] = {
	'\n', '\r', 0x00A3, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC, 0x00F2, 0x00C7, 0x00D8, 0x00F8,
	0x00C5, 0x00E5, 0x0394, 0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0, 0x03A8, 0x03A3, 0x0398,
	0x039E, 0x00C6, 0x00E6, 0x00DF, 0x00C9, 0x00A4, 0x00A1, 0x00C4, 0x00D6, 0x00D1, 0x00DC,
	0x00A7, 0x00BF, 0x00E4, 0x00F6, 0x00F1, 0x00FC, 0x00E0,
};
/* GSM 03.38 extension table: each costs an escape septet too. */
static const uint16_t text_gsm_ext[] = {
	'\f', '^', '{', '}', '\\', '[', '~', ']', '|', 0x20AC,
};

/* Ranges of non-ASCII code points text_fold keeps as letters: Latin, Greek, Cyrillic, CJK, Hangul. */
static const uint32_t text_letters[][2] = {
	{ 0x00C0, 0x00D6 }, { 0x00D8, 0x00F6 }, { 0x00F8, 0x024F }, { 0x0370, 0x03FF },
	{ 0x0400, 0x052F }, { 0x1E00, 0x1EFF }, { 0x3040, 0x30FF }, { 0x3400, 0x9FFF },
	{ 0xAC00, 0xD7A3 },
};

/* Decode one code point from s (len > 0 bytes); returns its length. A byte that does not start a
 * valid sequence (overlong, surrogate, > U+10FFFF, truncated) comes back alone as TEXT_RAW(byte). */
static size_t
text_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	uint32_t	c = s[0];
	size_t		n, i;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		c &= 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		c &= 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		c &= 0x07;
	} else
		goto raw;
	if (n > len)
		goto raw;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			goto raw;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10FFFF)) ||
	    (c >= 0xD800 && c <= 0xDFFF))
		goto raw;
	*cp = c;
	return n;
raw:
	*cp = TEXT_RAW(s[0]);
	return 1;
}

/* Write c as UTF-8 at p (a carried invalid byte as itself) and return the new end. */
static char *
text_encode(char *p, uint32_t c)
{
	if (c < 0x80 || TEXT_IS_RAW(c))
		*p++ = (char)(c & 0xFF);
	else if (c < 0x800) {
		*p++ = (char)(0xC0 | c >> 6);
		*p++ = (char)(0x80 | (c & 0x3F));
	} else if (c < 0x10000) {
		*p++ = (char)(0xE0 | c >> 12);
		*p++ = (char)(0x80 | (c >> 6 & 0x3F));
		*p++ = (char)(0x80 | (c & 0x3F));
	} else {
		*p++ = (char)(0xF0 | c >> 18);
		*p++ = (char)(0x80 | (c >> 12 & 0x3F));
		*p++ = (char)(0x80 | (c >> 6 & 0x3F));
		*p++ = (char)(0x80 | (c & 0x3F));
	}
	return p;
}

/* Every code point up to the last Vietnamese vowel: 0, or 1 + its place in text_vowels (case, base
 * row, tone), filled on first use. A lookup instead of a scan of the 144 vowels: this runs for every
 * character of every text in and out. */
static uint8_t text_vowel_at[0x1EFA];
static int text_vowel_ready;

/* Find c among the Vietnamese vowels: 1 with its case, base row and tone, else 0. */
static int
text_vowel(uint32_t c, int *upper, int *v, int *t)
{
	int	u, i, j, k;

	if (!text_vowel_ready) {
		/* backwards, so that where a code point appears twice the first place wins */
		for (u = 1; u >= 0; u--)
			for (i = V_NBASES - 1; i >= 0; i--)
				for (j = 5; j >= 0; j--)
					text_vowel_at[text_vowels[u][i][j]] =
					    (uint8_t)(1 + (u * V_NBASES + i) * 6 + j);
		text_vowel_ready = 1;
	}
	if (c < 0x41 || c >= sizeof text_vowel_at || (k = text_vowel_at[c]) == 0)
		return 0;
	k--;
	*upper = k / (V_NBASES * 6);
	*v = k / 6 % V_NBASES;
	*t = k % 6;
	return 1;
}

/* Apply combining mark m to vowel (v, t) if it composes: 1 when it did, 0 when it does not apply. */
static int
text_compose(uint32_t m, int *v, int *t)
{
	size_t	i;

	for (i = 1; i < 6; i++) {
		if (text_tones[i] == m) {
			if (*t != 0)
				return 0;
			*t = (int)i;
			return 1;
		}
	}
	for (i = 0; i < sizeof text_shapes / sizeof text_shapes[0]; i++) {
		if (text_shapes[i].mark == m && text_shapes[i].from == *v) {
			*v = text_shapes[i].to;
			return 1;
		}
	}
	return 0;
}

/* Decode one character from s (len > 0), composing the Vietnamese combining marks that follow a
 * vowel into it, in any order (e + U+0302 + U+0301 and ê + U+0301 both give ế). */
static size_t
text_next(const unsigned char *s, size_t len, uint32_t *cp)
{
	uint32_t	c, m;
	size_t		n, k;
	int		upper, v, t;

	n = text_decode(s, len, &c);
	if (text_vowel(c, &upper, &v, &t)) {
		/* Every mark of the set is U+03xx, two bytes starting 0xCC. */
		while (n < len && s[n] == 0xCC) {
			k = text_decode(s + n, len - n, &m);
			if (!text_compose(m, &v, &t))
				break;
			n += k;
		}
		c = text_vowels[upper][v][t];
	}
	*cp = c;
	return n;
}

/* Whether c is white space (ASCII and the Unicode spaces people paste). */
static int
text_is_space(uint32_t c)
{
	return (c == ' ' || (c >= '\t' && c <= '\r') || c == 0x00A0 || (c >= 0x2000 && c <= 0x200A) ||
	    c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000);
}

/* Whether c is a combining diacritical mark. */
static int
text_is_mark(uint32_t c)
{
	return (c >= 0x0300 && c <= 0x036F);
}

/* Septets c costs in GSM 03.38: 1 basic, 2 extension, 0 not representable, from the tables. */
static int
text_gsm_cost_scan(uint32_t c)
{
	size_t	i;

	for (i = 0; i < sizeof text_gsm_ext / sizeof text_gsm_ext[0]; i++) {
		if (text_gsm_ext[i] == c)
			return 2;
	}
	if (c >= 0x20 && c < 0x7F && c != '`')
		return 1;
	for (i = 0; i < sizeof text_gsm_basic / sizeof text_gsm_basic[0]; i++) {
		if (text_gsm_basic[i] == c)
			return 1;
	}
	return 0;
}

/* The same for ASCII, nearly every character of a reply, by table (built on first use). */
static signed char text_gsm_ascii[128];
static int text_gsm_ascii_ready;

static int
text_gsm_cost(uint32_t c)
{
	uint32_t	i;

	if (c >= 128)
		return text_gsm_cost_scan(c);
	if (!text_gsm_ascii_ready) {
		for (i = 0; i < 128; i++)
			text_gsm_ascii[i] = (signed char)text_gsm_cost_scan(i);
		text_gsm_ascii_ready = 1;
	}
	return text_gsm_ascii[c];
}

/* Return 1 if s[0..len) is valid UTF-8. */
int
text_utf8_valid(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	uint32_t		 c;
	size_t			 i;

	for (i = 0; i < len;) {
		i += text_decode(p + i, len - i, &c);
		if (TEXT_IS_RAW(c))
			return 0;
	}
	return 1;
}

/* A copy of s[0..len) that is valid UTF-8 and safe on one line: invalid bytes become U+FFFD; with
 * oneline, control characters (C0, DEL, C1, U+2028/2029) become "\\xNN" / "\\uNNNN" escapes and
 * NUL bytes "\\x00", so neither a log line nor an error sentence can be forged or broken. At most
 * max bytes of output (then "..."); 0: no limit. */
char *
text_utf8_scrub(const char *s, size_t len, int oneline, size_t max)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i, n, j = 0;
	uint32_t		 c;
	char			*out = xmalloc(len * 4 + 8), *e;	/* 1 byte -> 4 at most */

	for (i = 0; i < len; i += n) {
		n = text_decode(p + i, len - i, &c);
		if (max != 0 && j + 10 > max) {
			memcpy(out + j, "...", 3);
			j += 3;
			break;
		}
		if (TEXT_IS_RAW(c))
			c = 0xFFFD;
		if (oneline && (c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0) ||
		    c == 0x2028 || c == 0x2029)) {
			j += (size_t)snprintf(out + j, 8, c < 0x100 ? "\\x%02x" : "\\u%04x",
			    (unsigned)c);
			continue;
		}
		e = text_encode(out + j, c);
		j = (size_t)(e - out);
	}
	out[j] = '\0';
	return out;
}

/* Count the code points of a valid UTF-8 string: the bytes that are not continuation bytes. */
size_t
text_utf8_len(const char *s)
{
	size_t	n = 0;

	for (; *s != '\0'; s++) {
		if (((unsigned char)*s & 0xC0) != 0x80)
			n++;
	}
	return n;
}

/* Convert UTF-16BE bytes (Kannel's coding=2) to a UTF-8 string. */
char *
text_utf16be_to_utf8(const unsigned char *p, size_t len, char **cause)
{
	char		*out, *q;
	uint32_t	 c, d;
	size_t		 i;

	if (len % 2 != 0) {
		*cause = xasprintf("UTF-16 text has an odd number of bytes (%zu)", len);
		return NULL;
	}
	out = q = xmalloc(len / 2 * 3 + 1);
	for (i = 0; i < len; i += 2) {
		c = (uint32_t)p[i] << 8 | p[i + 1];
		if (c == 0) {
			/* The result is a C string: a U+0000 would silently cut it short. */
			free(out);
			*cause = xasprintf("UTF-16 text contains U+0000 at byte %zu", i);
			return NULL;
		}
		if (c >= 0xD800 && c <= 0xDFFF) {
			if (c > 0xDBFF || i + 4 > len)
				goto lone;
			d = (uint32_t)p[i + 2] << 8 | p[i + 3];
			if (d < 0xDC00 || d > 0xDFFF)
				goto lone;
			c = 0x10000 + ((c - 0xD800) << 10) + (d - 0xDC00);
			i += 2;
		}
		q = text_encode(q, c);
	}
	*q = '\0';
	return out;
lone:
	free(out);
	*cause = xasprintf("UTF-16 text has an unpaired surrogate at byte %zu", i);
	return NULL;
}

/* Convert a UTF-8 string to UTF-16BE bytes; invalid bytes become U+FFFD. */
char *
text_utf8_to_utf16be(const char *s, size_t *outlen)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i, n;
	unsigned char		*out, *q;
	uint32_t		 c;

	out = q = xmalloc(2 * len + 1);
	for (i = 0; i < len; i += n) {
		n = text_decode(p + i, len - i, &c);
		if (TEXT_IS_RAW(c))
			c = 0xFFFD;
		if (c >= 0x10000) {
			c -= 0x10000;
			*q++ = (unsigned char)(0xD8 | c >> 18);
			*q++ = (unsigned char)(c >> 10 & 0xFF);
			c = 0xDC00 | (c & 0x3FF);
		}
		*q++ = (unsigned char)(c >> 8);
		*q++ = (unsigned char)(c & 0xFF);
	}
	*outlen = (size_t)(q - out);
	return (char *)out;
}

/* Compose Vietnamese letters to NFC. Composition never makes text longer. */
char *
text_nfc(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i;
	char			*out, *q;
	uint32_t		 c;

	out = q = xmalloc(len + 1);
	for (i = 0; i < len; q = text_encode(q, c))
		i += text_next(p + i, len - i, &c);
	*q = '\0';
	return out;
}

/* Undo what Telex or VNI typing leaves when the keyboard's Vietnamese mode was off, in one folded
 * word (lower-case ASCII letters and digits): VNI's tone and vowel digits inside a word that
 * starts with a letter ("hu7o71ng" -> "huong"), Telex's tone letter after a syllable ("huongs",
 * "daanx" -> "huong", "daan"), then its doubled vowels and w ("daan", "cuuw" -> "dan", "cuu").
 * Folding both the keywords and the input this way keeps them comparable. Returns the new end. */
static char *text_fold_typed_once(char *, char *);

static char *
text_fold_typed(char *w, char *e)
{
	char *n;

	/* Each pass only removes letters; repeat until none goes, so folding a fold changes
	 * nothing ("tawf" -> "taf" -> "ta"). */
	while ((n = text_fold_typed_once(w, e)) != e)
		e = n;
	return e;
}

/* One pass of text_fold_typed. */
static char *
text_fold_typed_once(char *w, char *e)
{
	static const char vowels[] = "aeiouy";
	char *p, *q;
	int letters = 0, digits = 0;

	for (p = w; p < e; p++) {
		letters += *p >= 'a' && *p <= 'z';
		digits += *p >= '1' && *p <= '9';
	}
	if (letters == 0 || !(*w >= 'a' && *w <= 'z'))
		return e;
	if (digits > 0 && letters >= 2 && digits <= letters && digits + letters == e - w) {
		for (p = q = w; p < e; p++)
			if (!(*p >= '1' && *p <= '9'))
				*q++ = *p;
		e = q;
	}
	for (p = w + 1; p < e - 1; p++)		/* "tieesp": the tone typed before the final */
		if (strchr("sfrxj", *p) != NULL && strchr(vowels, p[-1]) != NULL &&
		    strspn(p + 1, "cghmnpt") >= (size_t)(e - p - 1)) {
			memmove(p, p + 1, (size_t)(e - p - 1));
			e--;
			break;
		}
	if (e - w >= 3 && strchr("sfrxj", e[-1]) != NULL &&
	    (strchr(vowels, e[-2]) != NULL || strchr("cghmnpt", e[-2]) != NULL)) {
		for (p = w; p < e - 1 && strchr(vowels, *p) == NULL; p++)
			;
		if (p < e - 1)
			e--;
	}
	for (p = q = w; p < e; p++) {
		if (q > w && *p == q[-1] && strchr("aeod", *p) != NULL)
			continue;			/* aa ee oo dd */
		if (*p == 'w' && q > w && strchr("aou", q[-1]) != NULL)
			continue;			/* aw ow uw */
		*q++ = *p;
	}
	return q;
}

/* Fold for keyword matching: "  TRA   CỨU! " -> "tra cuu"; full-width forms as ASCII; Telex and
 * VNI leftovers undone word by word (text_fold_typed). */
char *
text_fold(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i, j;
	char			*out, *q, *word;
	uint32_t		 c;
	int			 upper, v, t, gap = 0;

	out = q = word = xmalloc(len + 1);
	for (i = 0; i < len;) {
		i += text_next(p + i, len - i, &c);
		if (c >= 0xFF01 && c <= 0xFF5E)
			c -= 0xFF01 - 0x21;	/* full-width forms: "１", "Ｍ" */
		if (text_vowel(c, &upper, &v, &t))
			c = (uint32_t)text_bases[v];
		else if (c == 0x0110 || c == 0x0111)
			c = 'd';
		else if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		else if (text_is_mark(c))
			continue;
		else if (c >= 0x80) {
			for (j = 0; j < sizeof text_letters / sizeof text_letters[0]; j++) {
				if (c >= text_letters[j][0] && c <= text_letters[j][1])
					break;
			}
			if (j == sizeof text_letters / sizeof text_letters[0]) {
				gap = 1;
				continue;
			}
		} else if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9')) {
			gap = 1;
			continue;
		}
		if (gap && q != out) {
			q = text_fold_typed(word, q);
			*q++ = ' ';
		}
		if (gap || q == out)
			word = q;
		gap = 0;
		q = text_encode(q, c);
	}
	if (q != out)
		q = text_fold_typed(word, q);
	*q = '\0';
	return out;
}

/* c without its diacritics, keeping case (đ -> d, Đ -> D), or 0 for a combining mark, which goes. */
static uint32_t
text_unaccent_char(uint32_t c)
{
	int	upper, v, t;

	if (text_vowel(c, &upper, &v, &t))
		return (uint32_t)text_bases[v] - (upper ? 'a' - 'A' : 0);
	if (c == 0x0110)
		return 'D';
	if (c == 0x0111)
		return 'd';
	return text_is_mark(c) ? 0 : c;
}

/* Remove diacritics keeping case: "Đã xử lý xong" -> "Da xu ly xong". */
char *
text_unaccent(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i;
	char			*out, *q;
	uint32_t		 c;

	out = q = xmalloc(len + 1);
	for (i = 0; i < len;) {
		i += text_next(p + i, len - i, &c);
		if ((c = text_unaccent_char(c)) != 0)
			q = text_encode(q, c);
	}
	*q = '\0';
	return out;
}

/* NFC with white space trimmed and inner runs collapsed to one space. */
char *
text_trim(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i;
	char			*out, *q;
	uint32_t		 c;
	int			 gap = 0;

	out = q = xmalloc(len + 1);
	for (i = 0; i < len;) {
		i += text_next(p + i, len - i, &c);
		if (text_is_space(c)) {
			gap = 1;
			continue;
		}
		if (gap && q != out)
			*q++ = ' ';
		gap = 0;
		q = text_encode(q, c);
	}
	*q = '\0';
	return out;
}

/* Return 1 if every character of s is in the GSM 03.38 basic or extension table. */
int
text_is_gsm7(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i;
	uint32_t		 c;

	for (i = 0; i < len;) {
		i += text_decode(p + i, len - i, &c);
		if (text_gsm_cost(c) == 0)
			return 0;
	}
	return 1;
}

/* What an SMS shows for c, a character outside GSM 03.38: an ASCII look-alike, "" (dropped: emoji,
 * pictographs, joiners, variation selectors, marks) or "?". */
static const char *
text_gsm7_stand_in(uint32_t c)
{
	if (c == 0x2018 || c == 0x2019 || c == 0x201A || c == 0x201B || c == 0x2032 ||
	    c == 0x00B4 || c == '`' || c == 0x02BC)
		return "'";
	if (c == 0x201C || c == 0x201D || c == 0x201E || c == 0x201F || c == 0x2033 ||
	    c == 0x00AB || c == 0x00BB)
		return "\"";
	if ((c >= 0x2010 && c <= 0x2015) || c == 0x2212)
		return "-";
	if (c == 0x2026)
		return "...";
	if (c == 0x2022 || c == 0x00B7)
		return "-";
	if (text_is_space(c))
		return " ";
	if (text_is_mark(c) || (c >= 0x200B && c <= 0x200F) || c == 0x2060 || c == 0xFEFF ||
	    (c >= 0xFE00 && c <= 0xFE0F) || (c >= 0x2190 && c <= 0x21FF) ||
	    (c >= 0x2300 && c <= 0x23FF) || (c >= 0x2460 && c <= 0x27BF) ||
	    (c >= 0x2900 && c <= 0x2BFF) || (c >= 0x1F000 && c <= 0x1FAFF) ||
	    (c >= 0xE0000 && c <= 0xE007F) || c == 0x20E3 || c == 0x3030 || c == 0x303D ||
	    c == 0x3297 || c == 0x3299)
		return "";
	return "?";
}

/* Replace every character outside GSM 03.38 by its stand-in, so text echoed from a citizen (smart
 * quotes, emoji) cannot turn a whole unaccented reply into UCS-2. */
char *
text_gsm7_replace(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i, n;
	char			*out, *q;
	const char		*r;
	uint32_t		 c;

	out = q = xmalloc(len * 3 + 1);		/* "…" (3 bytes) -> "..." is the most it grows */
	for (i = 0; i < len; i += n) {
		n = text_decode(p + i, len - i, &c);
		if (!TEXT_IS_RAW(c) && text_gsm_cost(c) > 0) {
			memcpy(q, s + i, n);
			q += n;
			continue;
		}
		r = TEXT_IS_RAW(c) ? "?" : text_gsm7_stand_in(c);
		memcpy(q, r, strlen(r));
		q += strlen(r);
	}
	*q = '\0';
	return out;
}

/* Cost of c in the chosen encoding: septets for GSM-7, UTF-16 units for UCS-2. */
static size_t
text_sms_cost(uint32_t c, int ucs2)
{
	if (ucs2)
		return (c >= 0x10000 && !TEXT_IS_RAW(c)) ? 2 : 1;
	return (size_t)text_gsm_cost(c);
}

/* Count the encoding, units and parts an SMS with text s needs. */
void
text_sms_count(const char *s, struct text_sms *out)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i;
	uint32_t		 c;

	out->ucs2 = !text_is_gsm7(s);
	out->units = 0;
	for (i = 0; i < len;) {
		i += text_decode(p + i, len - i, &c);
		out->units += text_sms_cost(c, out->ucs2);
	}
	if (out->units <= (out->ucs2 ? 70 : 160))
		out->parts = 1;
	else if (out->ucs2)
		out->parts = (out->units + 66) / 67;
	else
		out->parts = (out->units + 152) / 153;
}

/* What text_sms_count says of text_gsm7_replace(text_unaccent(s)), the SMS an unaccented reply
 * becomes, without building it: the flows ask for every reply they render. s is valid UTF-8 (a
 * reply); with stray bytes the two may differ by a character. */
void
text_sms_count_plain(const char *s, struct text_sms *out)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i;
	uint32_t		 c;
	int			 cost;

	out->ucs2 = 0;		/* every character is GSM-7 once replaced */
	out->units = 0;
	for (i = 0; i < len;) {
		i += text_next(p + i, len - i, &c);
		if ((c = text_unaccent_char(c)) == 0)
			continue;
		if (!TEXT_IS_RAW(c) && (cost = text_gsm_cost(c)) > 0)
			out->units += (size_t)cost;
		else	/* each stand-in is ASCII of cost 1 a character */
			out->units += TEXT_IS_RAW(c) ? 1 : strlen(text_gsm7_stand_in(c));
	}
	out->parts = out->units <= 160 ? 1 : (out->units + 152) / 153;
}

/* s as a JSON string, quotes included (" \\ and control characters escaped), or NULL when s is
 * not valid UTF-8. For the few hot lines written without building a jansson tree. */
char *
text_json_string(const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t	 len = strlen(s), i;
	char	*out, *q;

	if (!text_utf8_valid(s, len))
		return NULL;
	out = q = xmalloc(len * 6 + 3);
	*q++ = '"';
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			*q++ = '\\';
			*q++ = (char)c;
		} else if (c == '\n') {
			*q++ = '\\';
			*q++ = 'n';
		} else if (c < 0x20 || c == 0x7F) {
			memcpy(q, "\\u00", 4);
			q[4] = hex[c >> 4];
			q[5] = hex[c & 15];
			q += 6;
		} else
			*q++ = (char)c;
	}
	*q++ = '"';
	*q = '\0';
	return out;
}

/* Split s into SMS parts. max_parts 0 means no limit. A single part may use the whole single-SMS
 * size (160/70); concatenated parts lose room to the header (153/67). A cut goes after the last
 * space or newline that lies in the second half of the part, else after the last whole character;
 * the space stays at the end of the part so joined parts give back the text exactly. */
size_t
text_sms_split(const char *s, size_t max_parts, char ***parts)
{
	const unsigned char	*p = (const unsigned char *)s;
	struct text_sms		 sms;
	size_t			 len = strlen(s), i = 0, n = 0, cap, left, limit, used, cut, cutu;
	size_t			 j, k;
	char			*part;
	uint32_t		 c;

	text_sms_count(s, &sms);
	if (sms.parts == 1) {
		*parts = xmalloc(sizeof **parts);
		(*parts)[0] = xstrdup(s);
		return 1;
	}
	cap = sms.parts;
	*parts = xmalloc(cap * sizeof **parts);
	left = sms.units;
	while (i < len) {
		if (n == cap)	/* cutting at spaces can take more parts than the count */
			*parts = xrealloc(*parts, ++cap * sizeof **parts);
		limit = max_parts == 1 ? (sms.ucs2 ? 70 : 160) : (sms.ucs2 ? 67 : 153);
		if (left <= limit) {
			(*parts)[n++] = xstrdup(s + i);
			break;
		}
		if (n + 1 == max_parts)
			limit -= 3;	/* room for "..." */
		cut = cutu = 0;
		for (j = i, used = 0; j < len; j += k) {
			k = text_decode(p + j, len - j, &c);
			if (used + text_sms_cost(c, sms.ucs2) > limit)
				break;
			used += text_sms_cost(c, sms.ucs2);
			if ((c == ' ' || c == '\n') && used > limit / 2) {
				cut = j + k;
				cutu = used;
			}
		}
		if (cut == 0) {
			cut = j;
			cutu = used;
		}
		if (n + 1 == max_parts) {
			while (cut > i && (s[cut - 1] == ' ' || s[cut - 1] == '\n'))
				cut--;
			part = xmalloc(cut - i + 4);
			memcpy(part, s + i, cut - i);
			memcpy(part + (cut - i), "...", 4);
			(*parts)[n++] = part;
			break;
		}
		(*parts)[n++] = xstrndup(s + i, cut - i);
		i = cut;
		left -= cutu;
	}
	return n;
}

/* s cut to fit max_parts SMS segments (0: no limit), ending with "..." when cut: the text one
 * concatenated SMS carries. The cut goes after the last space or newline in the last segment's
 * second half, else after the last whole character; the carrier splits the rest exactly. */
char *
text_sms_fit(const char *s, size_t max_parts)
{
	const unsigned char	*p = (const unsigned char *)s;
	struct text_sms		 sms;
	size_t			 len = strlen(s), j, k, used = 0, limit, cut = 0, cost;
	uint32_t		 c;
	char			*out;

	text_sms_count(s, &sms);
	if (max_parts == 0 || sms.parts <= max_parts)
		return xstrdup(s);
	if (max_parts == 1)
		limit = (sms.ucs2 ? 70 : 160) - 3;
	else
		limit = max_parts * (sms.ucs2 ? 67 : 153) - 3;	/* room for "..." */
	for (j = 0; j < len; j += k) {
		k = text_decode(p + j, len - j, &c);
		cost = text_sms_cost(c, sms.ucs2);
		if (used + cost > limit)
			break;
		used += cost;
		if ((c == ' ' || c == '\n') && used > limit - (sms.ucs2 ? 67 : 153) / 2)
			cut = j;
	}
	if (cut == 0)
		cut = j;
	while (cut > 0 && (s[cut - 1] == ' ' || s[cut - 1] == '\n'))
		cut--;
	out = xmalloc(cut + 4);
	memcpy(out, s, cut);
	memcpy(out + cut, "...", 4);
	return out;
}

/* Free what text_sms_split returned. */
void
text_free_parts(char **parts, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		free(parts[i]);
	free(parts);
}
