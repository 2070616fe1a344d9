/* unit_text.c: UTF-8/UTF-16, Vietnamese NFC, folding, GSM-7 and SMS splitting. */
#include <stdlib.h>

#include "dvcgw.h"
#include "unit.h"

/* Check text_utf8_valid on well-formed and broken byte strings. */
static void
test_utf8_valid(void)
{
	static const struct {
		const char	*s;
		size_t		 len;
		int		 want;
	} t[] = {
		{ "", 0, 1 },
		{ "tra cuu", 7, 1 },
		{ "tra c\xe1\xbb\xa9u", 9, 1 },			/* "tra cứu" */
		{ "\xf0\x9f\x98\x80", 4, 1 },			/* U+1F600 */
		{ "\xf4\x8f\xbf\xbf", 4, 1 },			/* U+10FFFF */
		{ "a\0b", 3, 1 },				/* NUL is a code point */
		{ "\xc0\xaf", 2, 0 },				/* overlong '/' */
		{ "\xe0\x80\xaf", 3, 0 },			/* overlong, 3 bytes */
		{ "\xf0\x80\x80\xaf", 4, 0 },			/* overlong, 4 bytes */
		{ "\xed\xa0\x80", 3, 0 },			/* U+D800 surrogate */
		{ "\xed\xbf\xbf", 3, 0 },			/* U+DFFF surrogate */
		{ "\xe1\xbb", 2, 0 },				/* truncated */
		{ "\xe1\xbb\xa9", 2, 0 },			/* truncated by len */
		{ "ab\xc3", 3, 0 },				/* truncated at the end */
		{ "\xf4\x90\x80\x80", 4, 0 },			/* U+110000 */
		{ "\xf5\x80\x80\x80", 4, 0 },			/* lead byte past U+10FFFF */
		{ "\x80", 1, 0 },				/* lone continuation */
		{ "\xc3\x28", 2, 0 },				/* bad continuation */
		{ "\xff", 1, 0 },
	};
	size_t	i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++)
		CHECK(text_utf8_valid(t[i].s, t[i].len) == t[i].want, "case %zu", i);
	CHECK(text_utf8_len("tra c\xe1\xbb\xa9u") == 7, "len");
	CHECK(text_utf8_len("") == 0, "len empty");
	CHECK(text_utf8_len("\xf0\x9f\x98\x80x") == 2, "len astral");
}

/* Check the UTF-16BE conversions both ways. */
static void
test_utf16(void)
{
	static const unsigned char	tracuu[] = {
		0x00, 0x74, 0x00, 0x72, 0x00, 0x61, 0x00, 0x20, 0x00, 0x63, 0x1E, 0xE9, 0x00, 0x75
	};
	static const unsigned char	pair[] = { 0xD8, 0x3D, 0xDE, 0x00, 0x00, 0x41 };
	static const unsigned char	odd[] = { 0x00, 0x74, 0x00 };
	static const unsigned char	lone_hi[] = { 0x00, 0x41, 0xD8, 0x3D, 0x00, 0x41 };
	static const unsigned char	lone_end[] = { 0xD8, 0x3D };
	static const unsigned char	lone_lo[] = { 0xDE, 0x00, 0x00, 0x41 };
	char				*s, *cause;
	size_t				 len;

	cause = NULL;
	s = text_utf16be_to_utf8(tracuu, sizeof tracuu, &cause);
	CHECK_STR(s, "tra c\xe1\xbb\xa9u");
	CHECK(cause == NULL, "no cause");
	free(s);

	s = text_utf16be_to_utf8(pair, sizeof pair, &cause);
	CHECK_STR(s, "\xf0\x9f\x98\x80" "A");
	free(s);

	s = text_utf16be_to_utf8(tracuu, 0, &cause);
	CHECK_STR(s, "");
	free(s);

	s = text_utf16be_to_utf8(odd, sizeof odd, &cause);
	CHECK(s == NULL, "odd length accepted");
	CHECK_STR(cause, "UTF-16 text has an odd number of bytes (3)");
	free(cause);

	s = text_utf16be_to_utf8(lone_hi, sizeof lone_hi, &cause);
	CHECK(s == NULL, "lone high surrogate accepted");
	CHECK_STR(cause, "UTF-16 text has an unpaired surrogate at byte 2");
	free(cause);

	s = text_utf16be_to_utf8(lone_end, sizeof lone_end, &cause);
	CHECK(s == NULL, "high surrogate at the end accepted");
	CHECK_STR(cause, "UTF-16 text has an unpaired surrogate at byte 0");
	free(cause);

	s = text_utf16be_to_utf8(lone_lo, sizeof lone_lo, &cause);
	CHECK(s == NULL, "lone low surrogate accepted");
	CHECK_STR(cause, "UTF-16 text has an unpaired surrogate at byte 0");
	free(cause);

	{
		static const unsigned char nul[] = { 0x00, 0x61, 0x00, 0x00, 0x00, 0x62 };

		s = text_utf16be_to_utf8(nul, sizeof nul, &cause);
		CHECK(s == NULL, "U+0000 accepted (the C string would be cut short)");
		CHECK_STR(cause, "UTF-16 text contains U+0000 at byte 2");
		free(cause);
	}

	s = text_utf8_to_utf16be("tra c\xe1\xbb\xa9u", &len);
	CHECK(len == sizeof tracuu && memcmp(s, tracuu, len) == 0, "to utf16 len %zu", len);
	free(s);
	s = text_utf8_to_utf16be("\xf0\x9f\x98\x80" "A", &len);
	CHECK(len == sizeof pair && memcmp(s, pair, len) == 0, "to utf16 pair len %zu", len);
	free(s);
	s = text_utf8_to_utf16be("a\xff", &len);		/* an invalid byte becomes U+FFFD */
	CHECK(len == 4 && memcmp(s, "\x00\x61\xff\xfd", 4) == 0, "to utf16 invalid len %zu", len);
	free(s);
}

/* Check NFC, folding, unaccenting and trimming against expected strings. */
static void
test_transforms(void)
{
	static const struct {
		char		*(*fn)(const char *);
		const char	*name;
		const char	*in;
		const char	*want;
	} t[] = {
		/* "Việt" typed as V i e + circumflex + dot below + t. */
		{ text_nfc, "nfc", "Vie\xcc\x82\xcc\xa3t", "Vi\xe1\xbb\x87t" },
		/* The same marks in the other order. */
		{ text_nfc, "nfc", "Vie\xcc\xa3\xcc\x82t", "Vi\xe1\xbb\x87t" },
		/* e + U+0302 + U+0301 = ế */
		{ text_nfc, "nfc", "e\xcc\x82\xcc\x81", "\xe1\xba\xbf" },
		/* precomposed ê + U+0301 = ế */
		{ text_nfc, "nfc", "\xc3\xaa\xcc\x81", "\xe1\xba\xbf" },
		/* U + horn + hook above = Ử */
		{ text_nfc, "nfc", "U\xcc\x9b\xcc\x89", "\xe1\xbb\xac" },
		/* a + breve + tilde = ẵ */
		{ text_nfc, "nfc", "a\xcc\x86\xcc\x83", "\xe1\xba\xb5" },
		/* Two tones: the second one is left alone. */
		{ text_nfc, "nfc", "a\xcc\x81\xcc\x80", "\xc3\xa1\xcc\x80" },
		/* No Vietnamese letter with a circumflex on y: unchanged. */
		{ text_nfc, "nfc", "y\xcc\x82", "y\xcc\x82" },
		{ text_nfc, "nfc", "\xcc\x81" "abc", "\xcc\x81" "abc" },
		{ text_nfc, "nfc", "H\xe1\xbb\x93 s\xc6\xa1", "H\xe1\xbb\x93 s\xc6\xa1" },
		/* Invalid bytes pass through. */
		{ text_nfc, "nfc", "a\xff\xc3", "a\xff\xc3" },
		{ text_nfc, "nfc", "", "" },

		{ text_fold, "fold", "H\xe1\xbb\x93 s\xc6\xa1", "ho so" },
		{ text_fold, "fold", "  TRA   C\xe1\xbb\xa8U! ", "tra cuu" },
		{ text_fold, "fold", "\xc4\x90\xc4\x83ng k\xc3\xbd", "dang ky" },
		{ text_fold, "fold", "Vie\xcc\x82\xcc\xa3t Nam", "viet nam" },
		{ text_fold, "fold", "HS:000.00.20.H21-231125", "hs 000 00 20 h21 231125" },
		{ text_fold, "fold", "\xe2\x80\x9cXin ch\xc3\xa0o\xe2\x80\x9d\xc2\xa0" "b\xe1\xba\xa1n",
		    "xin chao ban" },
		{ text_fold, "fold", "\xe1\xbb\xb0 \xc6\xaf \xe1\xbb\xb2 \xc3\x82", "u u y a" },
		{ text_fold, "fold", "a\xffz", "a z" },
		{ text_fold, "fold", "?!...", "" },
		{ text_fold, "fold", "", "" },
		/* Telex and VNI typed with the Vietnamese mode off, full-width forms */
		{ text_fold, "fold", "huongs daanx", "huong dan" },
		{ text_fold, "fold", "tra cuuw", "tra cuu" },
		{ text_fold, "fold", "hu7o71ng da64n", "huong dan" },
		{ text_fold, "fold", "tieesp theo", "tiep theo" },
		{ text_fold, "fold", "queen maatj khaaur", "quen mat khau" },
		{ text_fold, "fold", "ddawng kys", "dang ky" },
		{ text_fold, "fold", "\xef\xbc\x91", "1" },			/* full-width 1 */
		{ text_fold, "fold", "\xef\xbc\xad\xef\xbc\xa5\xef\xbc\xae\xef\xbc\xb5", "menu" },
		/* left alone: codes, digits, words that only look typed */
		{ text_fold, "fold", "H21 G22 2024", "h21 g22 2024" },
		{ text_fold, "fold", "sms otp website vneid cccd", "sms otp website vneid cccd" },
		{ text_fold, "fold", "hs", "hs" },

		{ text_unaccent, "unaccent", "\xc4\x90\xc3\xa3 x\xe1\xbb\xad l\xc3\xbd xong",
		    "Da xu ly xong" },
		{ text_unaccent, "unaccent", "Tr\xe1\xba\xa3 K\xe1\xba\xbeT QU\xe1\xba\xa2, #1!",
		    "Tra KET QUA, #1!" },
		{ text_unaccent, "unaccent", "\xc4\x91\xc6\xb0\xe1\xbb\x9dng \xc4\x90\xe1\xbb\x98I",
		    "duong DOI" },
		{ text_unaccent, "unaccent", "Vie\xcc\x82\xcc\xa3t", "Viet" },
		{ text_unaccent, "unaccent", "  a  b  ", "  a  b  " },

		{ text_trim, "trim", "  xin \t\n ch\xc3\xa0o  ", "xin ch\xc3\xa0o" },
		{ text_trim, "trim", "\xc2\xa0" "a\xe3\x80\x80" "b\xc2\xa0", "a b" },
		{ text_trim, "trim", "e\xcc\x82\xcc\x81 ", "\xe1\xba\xbf" },
		{ text_trim, "trim", " \t ", "" },
	};
	size_t	i;
	char	*s;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		s = t[i].fn(t[i].in);
		CHECK(strcmp(s, t[i].want) == 0, "%s case %zu: got \"%s\", want \"%s\"",
		    t[i].name, i, s, t[i].want);
		free(s);
	}
}

/* Every precomposed Vietnamese vowel must compose from its decomposition and fold to its base. */
static void
test_all_vowels(void)
{
	static const char	*marks[6] = { "", "\xcc\x80", "\xcc\x81", "\xcc\x89", "\xcc\x83",
	    "\xcc\xa3" };
	/* base letter, shape mark, precomposed lower-case row. */
	static const struct {
		const char	*base;
		const char	*shape;
		const char	*row[6];
	} v[] = {
		{ "a", "", { "a", "à", "á", "ả", "ã", "ạ" } },
		{ "a", "\xcc\x86", { "ă", "ằ", "ắ", "ẳ", "ẵ", "ặ" } },
		{ "a", "\xcc\x82", { "â", "ầ", "ấ", "ẩ", "ẫ", "ậ" } },
		{ "e", "", { "e", "è", "é", "ẻ", "ẽ", "ẹ" } },
		{ "e", "\xcc\x82", { "ê", "ề", "ế", "ể", "ễ", "ệ" } },
		{ "i", "", { "i", "ì", "í", "ỉ", "ĩ", "ị" } },
		{ "o", "", { "o", "ò", "ó", "ỏ", "õ", "ọ" } },
		{ "o", "\xcc\x82", { "ô", "ồ", "ố", "ổ", "ỗ", "ộ" } },
		{ "o", "\xcc\x9b", { "ơ", "ờ", "ớ", "ở", "ỡ", "ợ" } },
		{ "u", "", { "u", "ù", "ú", "ủ", "ũ", "ụ" } },
		{ "u", "\xcc\x9b", { "ư", "ừ", "ứ", "ử", "ữ", "ự" } },
		{ "y", "", { "y", "ỳ", "ý", "ỷ", "ỹ", "ỵ" } },
	};
	char	 in[16], *s;
	size_t	 i, j;
	int	 bad = 0;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		for (j = 0; j < 6; j++) {
			snprintf(in, sizeof in, "%s%s%s", v[i].base, v[i].shape, marks[j]);
			s = text_nfc(in);
			bad += strcmp(s, v[i].row[j]) != 0;
			free(s);
			s = text_fold(v[i].row[j]);
			bad += strcmp(s, v[i].base) != 0;
			free(s);
			/* Upper case: the base upper-cased composes to the upper row. */
			in[0] = (char)(v[i].base[0] - 'a' + 'A');
			s = text_nfc(in);
			bad += text_utf8_len(s) != 1;
			free(s);
			s = text_unaccent(in);
			bad += s[0] != in[0] || s[1] != '\0';
			free(s);
		}
	}
	CHECK(bad == 0, "%d vowel forms wrong", bad);
}

/* Check GSM-7 detection and segment counting. */
static void
test_gsm(void)
{
	static const struct {
		const char	*s;
		int		 gsm;
	} t[] = {
		{ "Ho so da xu ly xong", 1 },
		{ "Gia 10\xe2\x82\xac [ok] {x} ~^|\\", 1 },		/* extension table */
		{ "\xc3\xa0 \xc3\xa8 \xc3\xa9 \xc3\xac \xc3\xb2 \xc3\xb9 \xc3\x89 @\xc2\xa3$\n\r", 1 },
		{ "\xc4\x83n", 0 },					/* ă */
		{ "\xe1\xbb\xa9", 0 },					/* ứ */
		{ "back`tick", 0 },
		{ "tab\there", 0 },
		{ "page\fbreak", 1 },
		{ "\xff", 0 },
		{ "", 1 },
	};
	struct text_sms	 sms;
	char		 buf[400];
	size_t		 i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++)
		CHECK(text_is_gsm7(t[i].s) == t[i].gsm, "gsm case %zu", i);

	/* The count of the unaccented SMS, without building it: Vietnamese, stand-ins, the
	 * extension table, a stray byte, a combining mark. */
	{
		static const char *const plain[] = {
			"\xc4\x90\xc3\xa3 x\xe1\xbb\xad l\xc3\xbd xong",
			"\xe2\x80\x9cquoted\xe2\x80\x9d \xe2\x80\xa6 \xf0\x9f\x98\x80 [a] {b} ~ | \\ ^ \xe2\x82\xac `x`",
			"bad \xff byte, Vie\xcc\x82\xcc\xa3t, \xd0\x96, \xe4\xb8\xad",
			"",
		};
		struct text_sms	 a, b;
		char		*u, *g;

		for (i = 0; i < sizeof plain / sizeof plain[0]; i++) {
			u = text_unaccent(plain[i]);
			g = text_gsm7_replace(u);
			text_sms_count(g, &a);
			text_sms_count_plain(plain[i], &b);
			CHECK(a.ucs2 == b.ucs2 && a.units == b.units && a.parts == b.parts,
			    "plain count %zu: %d %zu %zu against %d %zu %zu", i, b.ucs2, b.units,
			    b.parts, a.ucs2, a.units, a.parts);
			free(g);
			free(u);
		}
		memset(buf, 'a', 200);
		memcpy(buf, "\xc4\x91", 2);	/* đ: one septet, d */
		buf[200] = '\0';
		text_sms_count_plain(buf, &sms);
		CHECK(sms.ucs2 == 0 && sms.units == 199 && sms.parts == 2, "plain 199: %zu %zu",
		    sms.units, sms.parts);
	}

	memset(buf, 'a', 160);
	buf[160] = '\0';
	text_sms_count(buf, &sms);
	CHECK(sms.ucs2 == 0 && sms.units == 160 && sms.parts == 1, "160: %d %zu %zu",
	    sms.ucs2, sms.units, sms.parts);
	buf[160] = 'a';
	buf[161] = '\0';
	text_sms_count(buf, &sms);
	CHECK(sms.ucs2 == 0 && sms.units == 161 && sms.parts == 2, "161: %zu %zu", sms.units,
	    sms.parts);
	memset(buf, 'a', 306);
	buf[306] = '\0';
	text_sms_count(buf, &sms);
	CHECK(sms.units == 306 && sms.parts == 2, "306: %zu", sms.parts);
	buf[306] = 'a';
	buf[307] = '\0';
	text_sms_count(buf, &sms);
	CHECK(sms.units == 307 && sms.parts == 3, "307: %zu", sms.parts);

	/* 79 'a' + 41 '{' = 161 septets, though 120 characters. */
	memset(buf, 'a', 79);
	memset(buf + 79, '{', 41);
	buf[120] = '\0';
	text_sms_count(buf, &sms);
	CHECK(sms.ucs2 == 0 && sms.units == 161 && sms.parts == 2, "ext: %zu %zu", sms.units,
	    sms.parts);
	/* 156 'a' + one euro sign (3 bytes, 2 septets) = 158. */
	memset(buf, 'a', 156);
	memcpy(buf + 156, "\xe2\x82\xac", 4);
	text_sms_count(buf, &sms);
	CHECK(sms.ucs2 == 0 && sms.units == 158 && sms.parts == 1, "euro: %zu", sms.units);

	/* 69 'a' + 'ă' = 70 UCS-2 units, one part; one more is 71, two parts. */
	memset(buf, 'a', 69);
	memcpy(buf + 69, "\xc4\x83", 3);
	text_sms_count(buf, &sms);
	CHECK(sms.ucs2 == 1 && sms.units == 70 && sms.parts == 1, "70: %d %zu %zu", sms.ucs2,
	    sms.units, sms.parts);
	memcpy(buf + 69, "a\xc4\x83", 4);
	text_sms_count(buf, &sms);
	CHECK(sms.ucs2 == 1 && sms.units == 71 && sms.parts == 2, "71: %zu %zu", sms.units,
	    sms.parts);
	/* An emoji is a surrogate pair: two units. */
	text_sms_count("\xf0\x9f\x98\x80", &sms);
	CHECK(sms.ucs2 == 1 && sms.units == 2 && sms.parts == 1, "emoji: %zu", sms.units);
	/* In UCS-2 '{' is one unit. */
	text_sms_count("\xc4\x83{", &sms);
	CHECK(sms.ucs2 == 1 && sms.units == 2, "ucs2 ext: %zu", sms.units);
	text_sms_count("a\fb", &sms);
	CHECK(sms.ucs2 == 0 && sms.units == 4, "form feed: %zu", sms.units);
	text_sms_count("", &sms);
	CHECK(sms.ucs2 == 0 && sms.units == 0 && sms.parts == 1, "empty");
}

/* Join parts back together into buf. */
static void
join(char **parts, size_t n, char *buf)
{
	size_t	i;

	buf[0] = '\0';
	for (i = 0; i < n; i++)
		strcat(buf, parts[i]);
}

/* Check SMS splitting: cuts at spaces, never inside characters, "..." at max_parts. */
static void
test_split(void)
{
	char		 text[1200], joined[1200], **parts;
	struct text_sms	 sms;
	size_t		 n, i;

	/* Short: one part, copied. */
	n = text_sms_split("Xin chao", 3, &parts);
	CHECK(n == 1, "short: %zu", n);
	CHECK_STR(parts[0], "Xin chao");
	text_free_parts(parts, n);

	/* 40 words "abcdefghi " = 400 septets: cut after a space, joined back exactly. */
	text[0] = '\0';
	for (i = 0; i < 40; i++)
		strcat(text, "abcdefghi ");
	n = text_sms_split(text, 0, &parts);
	CHECK(n == 3, "words: %zu parts", n);
	CHECK(strlen(parts[0]) == 150 && parts[0][149] == ' ', "part 0 cut at a space: %zu",
	    strlen(parts[0]));
	CHECK(strlen(parts[1]) == 150, "part 1: %zu", strlen(parts[1]));
	CHECK(strlen(parts[2]) == 100, "part 2: %zu", strlen(parts[2]));
	join(parts, n, joined);
	CHECK_STR(joined, text);
	text_free_parts(parts, n);

	/* The same text limited to 2 parts: the second ends with "..." after a word. */
	n = text_sms_split(text, 2, &parts);
	CHECK(n == 2, "max 2: %zu", n);
	CHECK(strlen(parts[0]) == 150, "max 2 part 0: %zu", strlen(parts[0]));
	CHECK(strlen(parts[1]) == 149 + 3 && strcmp(parts[1] + 149, "...") == 0 &&
	    parts[1][148] == 'i', "max 2 part 1: \"%s\"", parts[1]);
	text_free_parts(parts, n);

	/* One part allowed: the whole 160 minus "...". */
	memset(text, 'x', 200);
	text[200] = '\0';
	n = text_sms_split(text, 1, &parts);
	CHECK(n == 1 && strlen(parts[0]) == 160 && strcmp(parts[0] + 157, "...") == 0,
	    "max 1: %zu", strlen(parts[0]));
	text_free_parts(parts, n);

	/* No spaces: hard cut at 153. */
	n = text_sms_split(text, 0, &parts);
	CHECK(n == 2 && strlen(parts[0]) == 153 && strlen(parts[1]) == 47, "hard cut");
	text_free_parts(parts, n);

	/* A space early in the part is not worth a short part: "ab " then 300 'x' cut hard. */
	memcpy(text, "ab ", 3);
	memset(text + 3, 'x', 300);
	text[303] = '\0';
	n = text_sms_split(text, 0, &parts);
	CHECK(n == 2 && strlen(parts[0]) == 153 && strlen(parts[1]) == 150, "early space: %zu %zu",
	    n, strlen(parts[0]));
	text_free_parts(parts, n);

	/* Extension characters are never split from their escape: 152 'x' then '['. */
	memset(text, 'x', 152);
	memset(text + 152, '[', 10);
	text[162] = '\0';
	n = text_sms_split(text, 0, &parts);
	CHECK(n == 2 && strlen(parts[0]) == 152, "ext pair: %zu", strlen(parts[0]));
	text_sms_count(parts[0], &sms);
	CHECK(sms.units == 152, "ext pair units %zu", sms.units);
	text_free_parts(parts, n);

	/* UCS-2: 100 'ă' (2 bytes each) cut at 67 characters, never inside one. */
	text[0] = '\0';
	for (i = 0; i < 100; i++)
		strcat(text, "\xc4\x83");
	n = text_sms_split(text, 0, &parts);
	CHECK(n == 2 && text_utf8_len(parts[0]) == 67 && text_utf8_len(parts[1]) == 33,
	    "ucs2: %zu", n);
	CHECK(text_utf8_valid(parts[0], strlen(parts[0])), "ucs2 part valid");
	text_free_parts(parts, n);

	/* UCS-2 with surrogate pairs: 66 'a' then emoji; the pair moves whole to part 2. */
	memset(text, 'a', 66);
	text[66] = '\0';
	for (i = 0; i < 10; i++)
		strcat(text, "\xf0\x9f\x98\x80");
	n = text_sms_split(text, 0, &parts);
	CHECK(n == 2 && strlen(parts[0]) == 66, "pair: %zu", strlen(parts[0]));
	join(parts, n, joined);
	CHECK_STR(joined, text);
	text_free_parts(parts, n);
}

/* Characters outside GSM-7 (from a citizen's input) replaced, and a reply cut to its segments. */
static void
test_json_string(void)
{
	static const struct { const char *in, *out; } t[] = {
		{ "", "\"\"" },
		{ "a\"b\\c", "\"a\\\"b\\\\c\"" },
		{ "line\nnext\ttab\x01\x1f\x7f", "\"line\\nnext\\u0009tab\\u0001\\u001f\\u007f\"" },
		{ "Tr\xe1\xba\xa3 l\xe1\xbb\x9di", "\"Tr\xe1\xba\xa3 l\xe1\xbb\x9di\"" },
	};
	size_t i;
	char *s;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		s = text_json_string(t[i].in);
		CHECK(s != NULL && strcmp(s, t[i].out) == 0, "json string %zu: %s", i, s ? s : "NULL");
		free(s);
	}
	CHECK(text_json_string("bad \xff") == NULL, "json string of invalid UTF-8");
	CHECK(text_json_string("\xed\xa0\x80") == NULL, "json string of a surrogate");
}

static void
test_gsm7_replace(void)
{
	static const struct {
		const char	*in;
		const char	*want;
	} t[] = {
		{ "Ma \xe2\x80\x9c" "abc\xe2\x80\x9d", "Ma \"abc\"" },		/* smart double quotes */
		{ "it\xe2\x80\x99s \xe2\x80\x98x\xe2\x80\x99", "it's 'x'" },	/* smart single quotes */
		{ "a \xe2\x80\x93 b \xe2\x80\x94 c", "a - b - c" },		/* en and em dash */
		{ "cho\xe2\x80\xa6", "cho..." },				/* ellipsis */
		{ "cam on \xf0\x9f\x99\x8f", "cam on " },			/* emoji dropped */
		{ "ok \xe2\x9d\xa4\xef\xb8\x8f!", "ok !" },		/* heart + VS16 */
		{ "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "" },		/* thumbs up, skin tone */
		{ "a\xc2\xa0" "b", "a b" },					/* no-break space */
		{ "\xe4\xb8\xad", "?" },					/* CJK: not GSM-7 */
		{ "`x`", "'x'" },
		{ "\xff", "?" },						/* an invalid byte */
		{ "\xc3\xa9\xc3\xa0 \xe2\x82\xac{}", "\xc3\xa9\xc3\xa0 \xe2\x82\xac{}" },	/* é à € {} are GSM-7 */
	};
	char	*s, buf[400];
	size_t	 i;
	struct text_sms sms;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		s = text_gsm7_replace(t[i].in);
		CHECK_STR(s, t[i].want);
		CHECK(text_is_gsm7(s), "replace case %zu not GSM-7", i);
		free(s);
	}
	/* text_sms_fit: unchanged within the budget, else cut to it with "..." at the end */
	memset(buf, 'a', 306);
	buf[306] = '\0';
	s = text_sms_fit(buf, 2);
	CHECK_STR(s, buf);
	free(s);
	buf[306] = 'b';
	buf[307] = '\0';
	s = text_sms_fit(buf, 2);
	text_sms_count(s, &sms);
	CHECK(strlen(s) == 306 && sms.parts == 2 && strcmp(s + 303, "...") == 0,
	    "fit: %zu chars, %zu parts", strlen(s), sms.parts);
	free(s);
	for (i = 0; i < 60; i++)
		memcpy(buf + i * 6, "abcde ", 6);
	buf[360] = '\0';
	s = text_sms_fit(buf, 2);
	CHECK(strlen(s) <= 306 && strcmp(s + strlen(s) - 4, "e...") == 0, "fit at a space: %s", s);
	free(s);
	s = text_sms_fit(buf, 0);
	CHECK_STR(s, buf);
	free(s);
}

int
main(void)
{
	test_gsm7_replace();
	test_json_string();
	test_utf8_valid();
	test_utf16();
	test_transforms();
	test_all_vowels();
	test_gsm();
	test_split();
	UNIT_END();
}
