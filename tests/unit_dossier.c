/* unit_dossier.c: dossier codes, status texts, name masking, reply variables, import checks, CSV. */
#include <stdlib.h>

#include "dvcgw.h"
#include "unit.h"

#define SHAPE "Mã hồ sơ có dạng 000.00.20.H21-231125-0001"

/* Compare a JSON value with its expected compact serialisation. */
static void
check_json(const json_t *j, const char *want, const char *what)
{
	char	*s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

	CHECK(s != NULL && strcmp(s, want) == 0, "%s: got %s, want %s", what, s ? s : "(null)",
	    want);
	free(s);
}

/* Check code normalisation: canonical codes, missing dots, other codes, refusals. */
static void
test_codes(void)
{
	static const struct {
		const char	*in;
		int		 rc;
		const char	*want;
	} t[] = {
		{ "000.00.20.H21-231125-0001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000.00.20.h21 - 231125 - 0001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ " 000.00.20.H21-231125-0001.", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000.00.20.H21-231125-0001;,", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000.00.20.H21\xe2\x80\x93" "231125\xe2\x80\x94" "0001", DCODE_OK,
		    "000.00.20.H21-231125-0001" },			/* en and em dash */
		{ "000.00.20.H21\xc2\xa0-\xc2\xa0" "231125-0001", DCODE_OK,
		    "000.00.20.H21-231125-0001" },			/* no-break spaces */
		{ "0000020H21-231125-0001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000 00 20 h21-231125-0001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000020H21-231125-0001", DCODE_OK, "00.00.20.H21-231125-0001" },
		{ "000002001H21-231125-0001", DCODE_OK, "000.00.20.01.H21-231125-0001" },
		{ "00.00.20.H21-231125-0001", DCODE_OK, "00.00.20.H21-231125-0001" },
		{ "G22.99-240101-0001", DCODE_OTHER, "G22.99-240101-0001" },
		{ "g22.99 - 240101 - 0001", DCODE_OTHER, "G22.99-240101-0001" },
		{ "H21.999-ABC-1", DCODE_OTHER, "H21.999-ABC-1" },
		{ "000.00.20.H21-23112-0001", DCODE_BAD, "" },	/* ours, typed wrong */
		{ "000.00.20.H21-2311250001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000 00 20 H21 231125 0001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "0000020H212311250001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000.00.20.H21.231125.0001", DCODE_OK, "000.00.20.H21-231125-0001" },
		{ "000.00.20.H21", DCODE_BAD, "" },
		{ "HS0000020H212311250001", DCODE_OTHER, "HS0000020H212311250001" },
		{ "abc123", DCODE_OTHER, "ABC123" },
		{ "hello", DCODE_BAD, "" },
		{ "helloworld", DCODE_BAD, "" },			/* no digit */
		{ "12345", DCODE_BAD, "" },				/* too short */
		{ "", DCODE_BAD, "" },
		{ " .,; ", DCODE_BAD, "" },
		{ "tra c\xe1\xbb\xa9u 123", DCODE_BAD, "" },
		{ "000.00.20.H21-231125-0001#", DCODE_BAD, "" },
		{ "00000000000000000000000000000000000000000", DCODE_BAD, "" },	/* 41 */
		{ "0000000000000000000000000000000000000000000000000000000000000000000000",
		    DCODE_BAD, "" },
	};
	char	 out[DOSSIER_CODE_MAX], *cause;
	size_t	 i;
	int	 rc;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		cause = NULL;
		rc = dossier_code_normalise(t[i].in, out, &cause);
		CHECK(rc == t[i].rc, "\"%s\": rc %d, want %d", t[i].in, rc, t[i].rc);
		CHECK(strcmp(out, t[i].want) == 0, "\"%s\": got \"%s\", want \"%s\"", t[i].in, out,
		    t[i].want);
		if (t[i].rc == DCODE_BAD)
			CHECK(cause != NULL && strncmp(cause, SHAPE, strlen(SHAPE)) == 0,
			    "\"%s\": cause %s", t[i].in, cause ? cause : "(null)");
		else
			CHECK(cause == NULL, "\"%s\": cause set", t[i].in);
		free(cause);
	}
	/* NULL cause is allowed. */
	CHECK(dossier_code_normalise("hello", out, NULL) == DCODE_BAD, "NULL cause");
}

/* Check a configured pattern replaces the default, a bad one is refused, NULL restores. */
static void
test_pattern(void)
{
	char	out[DOSSIER_CODE_MAX], *cause = NULL;

	CHECK(dossier_set_pattern("^HS-[0-9]{4}$", &cause) == 0, "set pattern");
	CHECK(dossier_code_normalise("hs - 1234", out, &cause) == DCODE_OK, "custom ok");
	CHECK_STR(out, "HS-1234");
	CHECK(dossier_code_normalise("000.00.20.H21-231125-0001", out, &cause) == DCODE_OTHER,
	    "default code is other under a custom pattern");
	CHECK(dossier_set_pattern("([", &cause) == -1, "bad pattern accepted");
	CHECK(cause != NULL && strncmp(cause, "bad dossier code pattern \"([\": ", 31) == 0,
	    "cause %s", cause ? cause : "(null)");
	free(cause);
	CHECK(dossier_code_normalise("HS-1234", out, NULL) == DCODE_OK, "kept after bad pattern");
	CHECK(dossier_set_pattern(NULL, &cause) == 0, "restore default");
	CHECK(dossier_code_normalise("000.00.20.H21-231125-0001", out, NULL) == DCODE_OK,
	    "default restored");
	CHECK(dossier_code_normalise("HS-1234", out, NULL) == DCODE_OTHER, "custom gone");
}

/* Check finding a code inside a message. */
static void
test_guess(void)
{
	static const struct {
		const char	*in;
		int		 rc;
		const char	*want;
	} t[] = {
		{ "HS 000.00.20.H21-231125-0001", 1, "000.00.20.H21-231125-0001" },
		{ "tra c\xe1\xbb\xa9u 000.00.20.h21 - 231125 - 0001", 1, "000.00.20.H21-231125-0001" },
		{ "0000020H21-231125-0001", 1, "000.00.20.H21-231125-0001" },
		{ "  ma ho so: 000.00.20.H21-231125-0001.", 1, "000.00.20.H21-231125-0001" },
		{ "hs000.00.20.H21-231125-0001", 0, "" },
		{ "a b c d 000.00.20.H21-231125-0001", 1, "000.00.20.H21-231125-0001" },
		{ "ho so cua toi \xe2\x80\x9c" "000.00.20.h21-231125-0001\xe2\x80\x9d \xe1\xba\xa1?", 1,
		    "000.00.20.H21-231125-0001" },
		{ "M\xc3\xa3 h\xe1\xbb\x93 s\xc6\xa1: 000.00.20.H21-231125-0001? \xf0\x9f\x99\x8f", 1,
		    "000.00.20.H21-231125-0001" },
		{ "HS G22.99-240101-0001", 0, "" },
		{ "HS 000.00.20.H21-231125-0001 cam on", 1, "000.00.20.H21-231125-0001" },
		{ "xin chao", 0, "" },
		{ "", 0, "" },
	};
	char	out[DOSSIER_CODE_MAX];
	size_t	i;
	int	rc;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		rc = dossier_code_guess(t[i].in, out);
		CHECK(rc == t[i].rc && strcmp(out, t[i].want) == 0, "\"%s\": %d \"%s\"", t[i].in,
		    rc, out);
	}
}

/* Check status texts and name masking. */
static void
test_status_mask(void)
{
	static const struct {
		const char	*in;
		const char	*want;
	} t[] = {
		{ "Nguyễn Văn An", "Nguyễn V** A**" },
		{ "  Trần   Thị\tÁnh  ", "Trần T** Á**" },
		{ "Đặng Ứng", "Đặng Ứ**" },
		{ "Lò E\xcc\x82\xcc\x81", "Lò Ế**" },			/* decomposed Ế */
		{ "Lê", "Lê" },
		{ "", "" },
	};
	size_t	i;
	char	*s;

	CHECK_STR(dossier_status_text(1), "Mới đăng ký");
	CHECK_STR(dossier_status_text(2), "Được tiếp nhận");
	CHECK_STR(dossier_status_text(3), "Không được tiếp nhận");
	CHECK_STR(dossier_status_text(4), "Đang xử lý");
	CHECK_STR(dossier_status_text(5), "Yêu cầu bổ sung giấy tờ");
	CHECK_STR(dossier_status_text(6), "Yêu cầu thực hiện nghĩa vụ tài chính");
	CHECK_STR(dossier_status_text(7), "Công dân yêu cầu rút hồ sơ");
	CHECK_STR(dossier_status_text(8), "Dừng xử lý");
	CHECK_STR(dossier_status_text(9), "Đã xử lý xong");
	CHECK_STR(dossier_status_text(10), "Đã trả kết quả");
	CHECK(dossier_status_text(0) == NULL, "status 0");
	CHECK(dossier_status_text(11) == NULL, "status 11");
	CHECK(dossier_status_text(-1) == NULL, "status -1");

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		s = dossier_mask_name(t[i].in);
		CHECK_STR(s, t[i].want);
		free(s);
	}
}

/* Check reply variables: dates, masking, overdue. */
static void
test_vars(void)
{
	static const struct {
		const char	*dossier;
		const char	*sender;
		const char	*today;
		const char	*want;
	} t[] = {
		/* Not the owner, one day past due: masked and overdue. */
		{ "{\"code\":\"000.00.20.H21-231125-0001\",\"procedure\":\"Cấp phép xây dựng\","
		  "\"applicant\":\"Nguyễn Văn An\",\"phone\":\"84912345678\",\"agency\":\"UBND xã\","
		  "\"received_at\":\"2023-11-25\",\"due_at\":\"2023-12-10\",\"status\":4,"
		  "\"note\":\"Chờ\"}", NULL, "2023-12-11",
		  "{\"code\":\"000.00.20.H21-231125-0001\",\"procedure\":\"Cấp phép xây dựng\","
		  "\"applicant\":\"Nguyễn V** A**\",\"agency\":\"UBND xã\",\"received\":\"25/11/2023\","
		  "\"due\":\"10/12/2023\",\"status\":\"4\",\"status_text\":\"Đang xử lý\","
		  "\"overdue\":\"quá hạn 1 ngày\",\"note\":\"Chờ\"}" },
		/* The owner asks on the due day: full name, not overdue. */
		{ "{\"code\":\"X\",\"applicant\":\"Nguyễn Văn An\",\"phone\":\"84912345678\","
		  "\"due_at\":\"2023-12-10\",\"status\":4}", "84912345678", "2023-12-10",
		  "{\"code\":\"X\",\"procedure\":\"\",\"applicant\":\"Nguyễn Văn An\",\"agency\":\"\","
		  "\"received\":\"\",\"due\":\"10/12/2023\",\"status\":\"4\","
		  "\"status_text\":\"Đang xử lý\",\"overdue\":\"\",\"note\":\"\"}" },
		/* The dossier's phone is not canonical: it is normalised before comparing. */
		{ "{\"applicant\":\"Trần Thị Bình\",\"phone\":\"0912 345 678\",\"status\":\"7\"}",
		  "84912345678", "2023-12-10",
		  "{\"code\":\"\",\"procedure\":\"\",\"applicant\":\"Trần Thị Bình\",\"agency\":\"\","
		  "\"received\":\"\",\"due\":\"\",\"status\":\"7\","
		  "\"status_text\":\"Công dân yêu cầu rút hồ sơ\",\"overdue\":\"\",\"note\":\"\"}" },
		/* Another sender: masked. */
		{ "{\"applicant\":\"Trần Thị Bình\",\"phone\":\"0912 345 678\",\"status\":8,"
		  "\"due_at\":\"2023-01-01\"}", "84987654321", "2023-12-10",
		  "{\"code\":\"\",\"procedure\":\"\",\"applicant\":\"Trần T** B**\",\"agency\":\"\","
		  "\"received\":\"\",\"due\":\"01/01/2023\",\"status\":\"8\","
		  "\"status_text\":\"Dừng xử lý\",\"overdue\":\"\",\"note\":\"\"}" },
		/* Status 9 and 10 are never overdue. */
		{ "{\"due_at\":\"2023-01-01\",\"status\":9}", NULL, "2023-12-10",
		  "{\"code\":\"\",\"procedure\":\"\",\"applicant\":\"\",\"agency\":\"\","
		  "\"received\":\"\",\"due\":\"01/01/2023\",\"status\":\"9\","
		  "\"status_text\":\"Đã xử lý xong\",\"overdue\":\"\",\"note\":\"\"}" },
		{ "{\"due_at\":\"2023-01-01\",\"status\":10}", NULL, "2023-12-10",
		  "{\"code\":\"\",\"procedure\":\"\",\"applicant\":\"\",\"agency\":\"\","
		  "\"received\":\"\",\"due\":\"01/01/2023\",\"status\":\"10\","
		  "\"status_text\":\"Đã trả kết quả\",\"overdue\":\"\",\"note\":\"\"}" },
		/* Nothing known: every variable is "". */
		{ "{}", NULL, "2023-12-10",
		  "{\"code\":\"\",\"procedure\":\"\",\"applicant\":\"\",\"agency\":\"\","
		  "\"received\":\"\",\"due\":\"\",\"status\":\"\",\"status_text\":\"\","
		  "\"overdue\":\"\",\"note\":\"\"}" },
		/* A date in another shape passes through; no overdue without a real date. */
		{ "{\"due_at\":\"sắp tới\",\"status\":2}", NULL, "2023-12-10",
		  "{\"code\":\"\",\"procedure\":\"\",\"applicant\":\"\",\"agency\":\"\","
		  "\"received\":\"\",\"due\":\"sắp tới\",\"status\":\"2\","
		  "\"status_text\":\"Được tiếp nhận\",\"overdue\":\"\",\"note\":\"\"}" },
	};
	json_t	*d, *v;
	size_t	 i;
	char	 what[32];

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		d = json_loads(t[i].dossier, 0, NULL);
		CHECK(d != NULL, "case %zu: bad test JSON", i);
		v = dossier_vars(d, t[i].sender, t[i].today);
		snprintf(what, sizeof what, "vars case %zu", i);
		check_json(v, t[i].want, what);
		json_decref(v);
		json_decref(d);
	}
}

/* Check import checking: canonical output and refusals naming the field. */
static void
test_check(void)
{
	static const struct {
		const char	*in;
		const char	*want;		/* canonical JSON, or the cause */
	} t[] = {
		{ "{\"code\":\"000.00.20.h21 - 231125 - 0001\",\"phone\":\"0912 345 678\","
		  "\"status\":\"7\",\"applicant\":\"  Nguyễn  Văn An \",\"note\":\"\","
		  "\"national_code\":\"g22.99-240101-0001\",\"received_at\":\"2024-02-29\","
		  "\"due_at\":\"2024-03-15\",\"procedure\":\"Cấp phép\",\"agency\":\"UBND\"}",
		  "{\"code\":\"000.00.20.H21-231125-0001\",\"national_code\":\"G22.99-240101-0001\","
		  "\"procedure\":\"Cấp phép\",\"applicant\":\"Nguyễn Văn An\",\"phone\":\"84912345678\","
		  "\"agency\":\"UBND\",\"received_at\":\"2024-02-29\",\"due_at\":\"2024-03-15\","
		  "\"status\":7}" },
		{ "{\"code\":\"0000020H21-231125-0001\",\"status\":10,\"phone\":null}",
		  "{\"code\":\"000.00.20.H21-231125-0001\",\"status\":10}" },
		{ "{\"code\":\"G22.99-240101-0001\"}", "{\"code\":\"G22.99-240101-0001\"}" },
		{ "{}", "Field \"code\" is required." },
		{ "{\"code\":\"\"}", "Field \"code\" is required." },
		{ "[]", "A dossier must be a JSON object." },
		{ "{\"code\":\"hello\"}", "Field \"code\" is not a dossier code." },
		{ "{\"code\":5}", "Field \"code\" must be a string." },
		{ "{\"code\":\"G22.99-240101-0001\",\"national_code\":\"x\"}",
		  "Field \"national_code\" is not a dossier code." },
		{ "{\"code\":\"G22.99-240101-0001\",\"foo\":\"1\"}", "Unknown field \"foo\"." },
		{ "{\"code\":\"G22.99-240101-0001\",\"phone\":\"01629123456\"}",
		  "Field \"phone\": 11-digit mobile numbers (01...) were converted to 10 digits in "
		  "2018; use the new 10-digit number." },
		{ "{\"code\":\"G22.99-240101-0001\",\"phone\":\"8077\"}",
		  "Field \"phone\" is a short code, not a mobile number." },
		{ "{\"code\":\"G22.99-240101-0001\",\"due_at\":\"2023-02-29\"}",
		  "Field \"due_at\" must be a date YYYY-MM-DD." },
		{ "{\"code\":\"G22.99-240101-0001\",\"due_at\":\"1900-02-29\"}",
		  "Field \"due_at\" must be a date YYYY-MM-DD." },
		{ "{\"code\":\"G22.99-240101-0001\",\"received_at\":\"25/11/2023\"}",
		  "Field \"received_at\" must be a date YYYY-MM-DD." },
		{ "{\"code\":\"G22.99-240101-0001\",\"received_at\":\"2023-04-31\"}",
		  "Field \"received_at\" must be a date YYYY-MM-DD." },
		{ "{\"code\":\"G22.99-240101-0001\",\"status\":0}",
		  "Field \"status\" must be a status code from 1 to 10." },
		{ "{\"code\":\"G22.99-240101-0001\",\"status\":11}",
		  "Field \"status\" must be a status code from 1 to 10." },
		{ "{\"code\":\"G22.99-240101-0001\",\"status\":\"4a\"}",
		  "Field \"status\" must be a status code from 1 to 10." },
		{ "{\"code\":\"G22.99-240101-0001\",\"status\":4.0}",
		  "Field \"status\" must be a status code from 1 to 10." },
		{ "{\"code\":\"G22.99-240101-0001\",\"procedure\":1}",
		  "Field \"procedure\" must be a string." },
	};
	json_t	*in, *out;
	char	*cause, what[32];
	size_t	 i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		in = json_loads(t[i].in, JSON_DECODE_ANY, NULL);
		CHECK(in != NULL, "case %zu: bad test JSON", i);
		cause = NULL;
		out = dossier_check(in, &cause);
		if (t[i].want[0] == '{') {
			snprintf(what, sizeof what, "check case %zu", i);
			check_json(out, t[i].want, what);
			CHECK(cause == NULL, "case %zu: cause %s", i, cause);
		} else {
			CHECK(out == NULL, "case %zu accepted", i);
			CHECK_STR(cause, t[i].want);
		}
		json_decref(out);
		json_decref(in);
		free(cause);
	}
}

/* Check CSV parsing: quoting, CRLF, a bad row reported and skipped, header problems. */
static void
test_csv(void)
{
	static const struct {
		const char	*csv;
		const char	*rows;		/* NULL: the header is refused with cause errs */
		const char	*errs;
	} t[] = {
		{ "code,applicant,phone,status,note\r\n"
		  "000.00.20.H21-231125-0001,\"Nguyễn Văn An\",0912345678,4,\"Ghi chú, có phẩy\"\r\n"
		  "000.00.20.H21-231125-0002,Trần Thị Bình,,9,\"Dòng 1\nDòng \"\"2\"\"\"\r\n"
		  "bad,row\r\n"
		  "\r\n"
		  "000.00.20.H21-231125-0003,Lê C,0987654321,10,\n",
		  "[{\"code\":\"000.00.20.H21-231125-0001\",\"applicant\":\"Nguyễn Văn An\","
		  "\"phone\":\"0912345678\",\"status\":\"4\",\"note\":\"Ghi chú, có phẩy\"},"
		  "{\"code\":\"000.00.20.H21-231125-0002\",\"applicant\":\"Trần Thị Bình\","
		  "\"status\":\"9\",\"note\":\"Dòng 1\\nDòng \\\"2\\\"\"},"
		  "{\"code\":\"000.00.20.H21-231125-0003\",\"applicant\":\"Lê C\","
		  "\"phone\":\"0987654321\",\"status\":\"10\"}]",
		  "[\"line 5: expected 5 fields, found 2\"]" },
		{ "\xef\xbb\xbf" "code\nG22.99-240101-0001", "[{\"code\":\"G22.99-240101-0001\"}]",
		  "[]" },
		{ "code,note\n1,\"abc\n", "[]", "[\"line 2: a quoted field is never closed\"]" },
		{ "code,note\n1,2,3\n\xff,x\n4,\"\"\n",
		  "[{\"code\":\"4\"}]",
		  "[\"line 2: expected 2 fields, found 3\","
		  "\"line 3: field \\\"code\\\" is not valid UTF-8\"]" },
		{ "", NULL, "The CSV text is empty." },
		{ "code,foo\n", NULL, "The CSV header has an unknown column \"foo\"." },
		{ "phone,status\n", NULL, "The CSV header has no \"code\" column." },
		{ "code,note,code\n", NULL, "The CSV header names column \"code\" twice." },
		{ "\"code\n", NULL, "The CSV header has a quoted field that is never closed." },
	};
	json_t	*rows, *errs, *out;
	char	*cause, what[32];
	size_t	 i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		cause = NULL;
		errs = NULL;
		rows = dossier_parse_csv(t[i].csv, &errs, NULL, &cause);
		snprintf(what, sizeof what, "csv case %zu", i);
		if (t[i].rows != NULL) {
			check_json(rows, t[i].rows, what);
			check_json(errs, t[i].errs, what);
			CHECK(cause == NULL, "%s: cause %s", what, cause);
		} else {
			CHECK(rows == NULL, "%s accepted", what);
			CHECK_STR(cause, t[i].errs);
		}
		json_decref(rows);
		json_decref(errs);
		free(cause);
	}

	/* A parsed row goes through dossier_check: status "4" becomes 4, phone canonical. */
	rows = dossier_parse_csv(t[0].csv, &errs, NULL, &cause);
	out = dossier_check(json_array_get(rows, 0), &cause);
	check_json(out, "{\"code\":\"000.00.20.H21-231125-0001\",\"applicant\":\"Nguyễn Văn An\","
	    "\"phone\":\"84912345678\",\"status\":4,\"note\":\"Ghi chú, có phẩy\"}", "csv check");
	json_decref(out);
	json_decref(rows);
	json_decref(errs);
}

int
main(void)
{
	test_codes();
	test_pattern();
	test_guess();
	test_status_mask();
	test_vars();
	test_check();
	test_csv();
	UNIT_END();
}
