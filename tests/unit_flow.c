/* unit_flow.c: the conversation engine: validation of the fixture flow sets under tests/flows and
 * step-by-step conversations through tests/flows/good, asserting the exact replies. */
#include <stdlib.h>
#include <string.h>

#include "dvcgw.h"
#include "flow_int.h"
#include "unit.h"

#define FLOWS	"tests/flows"
#define NOW	1700000000

#define FOOT	"\n0. Quay lại, MENU: về đầu"
#define MENU	"Chào mừng bạn đến với dịch vụ công Tây Ninh.\n1. Tra cứu hồ sơ\n" \
		"2. Thủ tục hành chính\n3. Giới thiệu"
#define ASK	"Nhập mã hồ sơ, ví dụ 000.00.20.H21-231125-0001" FOOT
#define PROCS	"Chọn lĩnh vực:\n1. Hộ tịch\n2. Đất đai" FOOT
#define CIVIL	"Hộ tịch:\n1. Đăng ký khai sinh\n2. Đất đai" FOOT
#define LAND	"Đất đai: nộp tại dichvucong.tayninh.gov.vn.\n1. Hộ tịch" FOOT
#define BIRTH	"Khai sinh: nộp tại dichvucong.tayninh.gov.vn. Hotline 1800 0000." FOOT
#define ABOUT	"Cổng dịch vụ công Tây Ninh: dichvucong.tayninh.gov.vn. Cảm ơn bạn!"
#define INVALID	"Lựa chọn không hợp lệ.\n"
#define FB_ASK	"Nhập góp ý của bạn (ít nhất 3 ký tự):" FOOT
#define AGAIN	"\n1. Tra cứu hồ sơ khác" FOOT

#define CODE	"000.00.20.H21-231125-0001"
#define FOUND(name, tail) "Hồ sơ " CODE " (Đăng ký khai sinh), người nộp " name \
		": Đang xử lý. Hạn trả 28/11/2023" tail AGAIN

static struct flowset	*fs;
static json_t		*dossier;

/* Load a fixture set; NULL and the errors when it does not validate. */
static struct flowset *
load(const char *dir, const char *vars, size_t sms, size_t zalo, json_t **errors)
{
	struct flow_limits	 lim = { 3, { { "an SMS reply", sms, 0, "sms" },
	    { "a Zalo message", zalo, 0, "zalo" }, { "a USSD screen", 0, 0, "ussd" } } };
	struct flowset		*set;
	json_t			*v = NULL;
	char			*path;

	if (vars != NULL)
		v = json_loads(vars, 0, NULL);
	path = xasprintf("%s/%s", FLOWS, dir);
	set = flowset_load(path, v, &lim, errors);
	free(path);
	json_decref(v);
	return set;
}

/* Print every error of a set, to explain a failure. */
static void
dump_errors(const char *dir, const json_t *errors)
{
	size_t	 i;
	json_t	*e;

	json_array_foreach((json_t *)errors, i, e)
		fprintf(stderr, "  %s: %s\n", dir, json_string_value(e));
}

/* Every invalid fixture fails with exactly the problems listed (naming the file and the state). */
static void
test_validation(void)
{
	static const struct {
		const char	*dir;
		const char	*vars;
		size_t		 sms, zalo;
		const char	*want[2];
		int		 prefix;	/* want[0] is only the start of the error */
	} t[] = {
		{ "bad-unknown-target", NULL, 480, 2000,
		  { "main.json: menu: option 2: unknown target state \"nowhere\"" }, 0 },
		{ "bad-unreachable", NULL, 480, 2000,
		  { "main.json: orphan: unreachable from the start state \"menu\"" }, 0 },
		{ "bad-dup-option-key", NULL, 480, 2000,
		  { "main.json: menu: option 2: duplicate option key \"1\"" }, 0 },
		{ "bad-dup-keyword", NULL, 480, 2000,
		  { "main.json: menu: option 2: duplicate keyword \"HOSO\"" }, 0 },
		{ "bad-dup-global-keyword", NULL, 480, 2000,
		  { "b.json: keywords: duplicate keyword \"MENU\" (also in a.json)" }, 0 },
		{ "bad-empty-message", NULL, 480, 2000,
		  { "main.json: a: empty message" }, 0 },
		{ "bad-too-long", NULL, 40, 2000,
		  { "main.json: a: message too long for an SMS reply: 42 characters after "
		    "unaccenting, with options and footer (limit 40)" }, 0 },
		{ "bad-too-long", NULL, 0, 41,
		  { "main.json: a: message too long for a Zalo message: 42 characters after "
		    "unaccenting, with options and footer (limit 41)" }, 0 },
		{ "bad-unknown-action", NULL, 480, 2000,
		  { "main.json: ask: capture: unknown action \"lookup_nothing\"" }, 0 },
		{ "bad-action-kind", NULL, 480, 2000,
		  { "main.json: ask: capture: action \"otp_status\" takes no captured value: it is "
		    "a state's \"action\"",
		    "main.json: status: action \"link_start\" needs a captured value: it belongs "
		    "in a \"capture\"" }, 0 },
		{ "bad-option-only", NULL, 480, 2000,
		  { "main.json: menu: option 2: unknown channel \"fax\" (known: sms, zalo, ussd)",
		    "main.json: menu: option 3: \"only\" must be a non-empty array of channel "
		    "names" }, 0 },
		{ "bad-regex", NULL, 480, 2000,
		  { "main.json: ask: capture: regex \"^([a-z\" does not compile: " }, 1 },
		{ "bad-unknown-var", NULL, 480, 2000,
		  { "main.json: a: unknown var {{hotlien}}" }, 0 },
		{ "bad-unknown-key", NULL, 480, 2000,
		  { "main.json: unknown key \"titel\"",
		    "main.json: a: unknown key \"mesage\"" }, 0 },
		{ "bad-missing-start", NULL, 480, 2000,
		  { "main.json: no file has a \"start\" state" }, 0 },
		{ "bad-two-starts", NULL, 480, 2000,
		  { "b.json: second \"start\" (a.json already has start \"menu\")" }, 0 },
		{ "bad-dup-state", NULL, 480, 2000,
		  { "b.json: a: duplicate state (also in a.json)" }, 0 },
		{ "bad-vars-conflict", NULL, 480, 2000,
		  { "b.json: vars.hotline: \"1900 2222\" differs from \"1900 1111\" in "
		    "a.json" }, 0 },
		{ "bad-channel-unknown", NULL, 480, 2000,
		  { "main.json: menu: unknown channel \"usd\" (known: sms, zalo, ussd)",
		    "main.json: channels: unknown channel \"smss\" (known: sms, zalo, ussd)" }, 0 },
		{ "bad-channel-label", NULL, 480, 2000,
		  { "main.json: menu: channels.ussd: \"message\" must be a non-empty string",
		    "main.json: menu: channels.ussd: label for \"2\", which is not an option key "
		    "of the state" }, 0 },
		{ "bad-channel-keys", NULL, 480, 2000,
		  { "main.json: a: channels.ussd: unknown key \"mesage\"",
		    "main.json: channels.ussd: unknown text \"footr\"" }, 0 },
		/* A channel's limit holds for its own wording: the Zalo labels are longer. */
		{ "good-channels", NULL, 480, 80,
		  { "main.json: menu: message too long for a Zalo message: 82 characters after "
		    "unaccenting, with options and footer (limit 80)" }, 0 },
		{ "no-such-dir", NULL, 480, 2000,
		  { FLOWS "/no-such-dir: cannot open: " }, 1 },
	};
	struct flowset	*set;
	json_t		*errors;
	const char	*got;
	size_t		 i, j, n, k, nwant;
	int		 found;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		errors = NULL;
		set = load(t[i].dir, t[i].vars, t[i].sms, t[i].zalo, &errors);
		CHECK(set == NULL, "%s: loaded", t[i].dir);
		flowset_free(set);
		if (!json_is_array(errors)) {
			CHECK(0, "%s: no error array", t[i].dir);
			continue;
		}
		nwant = t[i].want[1] != NULL ? 2 : 1;
		n = json_array_size(errors);
		CHECK(n == nwant, "%s: %zu errors, want %zu", t[i].dir, n, nwant);
		for (k = 0; k < nwant; k++) {
			found = 0;
			for (j = 0; j < n; j++) {
				got = json_string_value(json_array_get(errors, j));
				if (t[i].prefix ? strncmp(got, t[i].want[k],
				    strlen(t[i].want[k])) == 0 : strcmp(got, t[i].want[k]) == 0)
					found = 1;
			}
			CHECK(found, "%s: no error \"%s\"", t[i].dir, t[i].want[k]);
		}
		if (n != nwant)
			dump_errors(t[i].dir, errors);
		json_decref(errors);
	}

	/* The configuration's vars settle a conflict between files. */
	errors = NULL;
	set = load("bad-vars-conflict", "{\"hotline\": \"1800 0000\"}", 480, 2000, &errors);
	CHECK(set != NULL && errors == NULL, "bad-vars-conflict with config vars: not loaded");
	if (errors != NULL)
		dump_errors("bad-vars-conflict", errors);
	json_decref(errors);
	flowset_free(set);

	/* The config's vars must be strings. */
	errors = NULL;
	set = load("good", "{\"hotline\": 1800}", 480, 2000, &errors);
	CHECK(set == NULL, "good with a number var: loaded");
	CHECK(json_array_size(errors) == 1 && strcmp(json_string_value(json_array_get(errors,
	    0)), "config: vars.hotline: must be a string") == 0, "config vars error");
	json_decref(errors);
	flowset_free(set);
}

/* A config var that no flow file declares or uses is a misspelling, named by flowset_load; one that
 * only a message uses, or that only a file declares, is fine. */
static void
test_config_vars(void)
{
	struct flowset	*set;
	json_t		*errors = NULL;

	set = load("good", "{\"hotline\": \"1800 0000\", \"provinc\": \"Gia Lai\"}", 480, 2000,
	    &errors);
	CHECK(set == NULL, "good with config var provinc: loaded");
	CHECK(json_array_size(errors) == 1 && strcmp(json_string_value(json_array_get(errors, 0)),
	    "config: flows.vars: unknown variable \"provinc\" (no flow file declares or uses it)") ==
	    0, "config var provinc: no error naming it");
	if (json_array_size(errors) != 1)
		dump_errors("good", errors);
	json_decref(errors);
	flowset_free(set);

	/* Several misspellings: each is named. */
	errors = NULL;
	set = load("good", "{\"provinc\": \"x\", \"hotlin\": \"y\"}", 480, 2000, &errors);
	CHECK(set == NULL && json_array_size(errors) == 2, "two unknown config vars: %zu errors",
	    json_array_size(errors));
	json_decref(errors);
	flowset_free(set);

	/* Declared by a file only (portal), or used by a message only (hotlien): loads. */
	errors = NULL;
	set = load("good", "{\"portal\": \"dvc.example.vn\"}", 480, 2000, &errors);
	CHECK(set != NULL && errors == NULL, "good with config var portal: not loaded");
	if (errors != NULL)
		dump_errors("good", errors);
	json_decref(errors);
	flowset_free(set);
	errors = NULL;
	set = load("bad-unknown-var", "{\"hotlien\": \"1900 5678\"}", 480, 2000, &errors);
	CHECK(set != NULL && errors == NULL, "bad-unknown-var with config var hotlien: not loaded");
	if (errors != NULL)
		dump_errors("bad-unknown-var", errors);
	json_decref(errors);
	flowset_free(set);
}

/* The good set loads, with its start state and every state of both files. */
static void
test_good(void)
{
	json_t	*errors = NULL;

	fs = load("good", "{\"hotline\": \"1800 0000\"}", 480, 2000, &errors);
	CHECK(fs != NULL && errors == NULL, "good set did not load");
	if (errors != NULL) {
		dump_errors("good", errors);
		json_decref(errors);
	}
	if (fs == NULL)
		return;
	CHECK_STR(flowset_start(fs), "menu");
	CHECK(flowset_nstates(fs) == 10, "%zu states, want 10", flowset_nstates(fs));
}

/* Run one input with the data the caller fetched (ndata entries); returns the reply ("" when there
 * is none). */
static const char *
step_data(json_t *session, const char *text, const struct flow_data *data, size_t ndata,
    const char *user, const char *today, struct flow_result *res)
{
	static char		 reply[4096];
	struct flow_input	 in = {
		.text = text, .channel = "sms", .user = user, .now = NOW,
		.today = today != NULL ? today : "2023-12-01",
		.data = data, .ndata = ndata,
	};
	char			*cause = NULL;
	int			 rc;

	reply[0] = '\0';
	rc = flow_step(fs, session, &in, res, &cause);
	CHECK(rc == 0, "\"%s\": flow_step failed: %s", text, cause != NULL ? cause : "?");
	free(cause);
	if (rc == 0 && json_array_size(res->replies) == 1)
		snprintf(reply, sizeof reply, "%s",
		    json_string_value(json_array_get(res->replies, 0)));
	return reply;
}

/* Run one input with the dossier of code fetched (d NULL: it does not exist), or nothing fetched
 * when code is NULL. */
static const char *
step(json_t *session, const char *text, const char *code, const json_t *d, const char *user,
    const char *today, struct flow_result *res)
{
	struct flow_data	 data = { FLOW_DATA_DOSSIER, code, d };

	return step_data(session, text, &data, code != NULL ? 1 : 0, user, today, res);
}

/* Per-channel wording ("channels"): each channel sees its own message, labels and texts; one the set
 * was not loaded with, or none, sees the plain wording. */
static void
test_channels(void)
{
	static const struct {
		const char	*channel;
		const char	*text;
		const char	*want;
		int		 end;
	} t[] = {
		{ "sms", "", "Chào mừng bạn đến với dịch vụ công.\n1. Giới thiệu dịch vụ công\n"
		  "2. Kết thúc", 0 },
		{ "ussd", "", "DVC:\n1. Gioi thieu\n2. Kết thúc", 0 },
		{ "zalo", "", "Chào mừng bạn đến với dịch vụ công.\n1. Giới thiệu dịch vụ công\n"
		  "2. Tạm biệt bạn nhé", 0 },
		{ "web", "", "Chào mừng bạn đến với dịch vụ công.\n1. Giới thiệu dịch vụ công\n"
		  "2. Kết thúc", 0 },
		{ NULL, "", "Chào mừng bạn đến với dịch vụ công.\n1. Giới thiệu dịch vụ công\n"
		  "2. Kết thúc", 0 },
		{ "ussd", "1", "Giới thiệu.\n1. Kết thúc\n0. Quay lai", 0 },
		{ "sms", "1", "Giới thiệu.\n1. Kết thúc\n0. Quay lại - MENU: Menu chính", 0 },
		{ "ussd", "7", "Sai.\nDVC:\n1. Gioi thieu\n2. Kết thúc", 0 },
		{ "sms", "7", "Lựa chọn không hợp lệ.\nChào mừng bạn đến với dịch vụ công.\n"
		  "1. Giới thiệu dịch vụ công\n2. Kết thúc", 0 },
		{ "ussd", "2", "Cam on. Bam *8077# de bat dau lai.", 1 },
		{ "zalo", "2", "Cảm ơn. Gõ MENU để bắt đầu lại.", 1 },
	};
	struct flow_limits	 lim = { 3, { { "an SMS reply", 480, 0, "sms" },
	    { "a Zalo message", 2000, 0, "zalo" }, { "a USSD screen", 0, 0, "ussd" } } };
	struct flow_result	 res;
	struct flowset		*set;
	struct flow_input	 in;
	json_t			*errors = NULL, *session;
	char			*cause = NULL;
	const char		*got;
	size_t			 i;

	set = flowset_load(FLOWS "/good-channels", NULL, &lim, &errors);
	CHECK(set != NULL && errors == NULL, "good-channels did not load");
	if (errors != NULL)
		dump_errors("good-channels", errors);
	json_decref(errors);
	if (set == NULL)
		return;
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		session = json_object();
		memset(&in, 0, sizeof in);
		in.channel = t[i].channel;
		in.now = NOW;
		in.today = "2023-12-01";
		if (*t[i].text != '\0') {	/* from the menu */
			in.text = "";
			CHECK(flow_step(set, session, &in, &res, &cause) == 0, "menu: %s", cause);
			flow_result_clear(&res);
		}
		in.text = t[i].text;
		CHECK(flow_step(set, session, &in, &res, &cause) == 0, "step: %s", cause);
		got = json_string_value(json_array_get(res.replies, 0));
		CHECK(got != NULL && strcmp(got, t[i].want) == 0, "%s \"%s\": got \"%s\", want "
		    "\"%s\"", t[i].channel ? t[i].channel : "NULL", t[i].text, got ? got : "(none)",
		    t[i].want);
		CHECK(res.end == t[i].end, "%s \"%s\": end %d", t[i].channel ? t[i].channel :
		    "NULL", t[i].text, res.end);
		flow_result_clear(&res);
		json_decref(session);
	}
	flowset_free(set);
}

/* Conversations that need no dossier: start, options, keywords, back, menu, timeouts, end. */
static void
test_walks(void)
{
	static const struct {
		const char	*name;
		const char	*session;	/* before the first input */
		struct {
			const char	*in;
			const char	*want;
			int		 end;
		} steps[14];
		const char	*after;		/* the session after the last input, or NULL */
	} t[] = {
		{ "a greeting starts at the menu", "{}",
		  { { "xin chào", MENU, 0 } }, "{\"s\": \"menu\", \"t\": 1700000000}" },
		{ "a USSD dial string starts at the menu", "{}",
		  { { "*123#", MENU, 0 } }, NULL },
		{ "options by number", "{}",
		  { { "2", PROCS, 0 }, { "1", CIVIL, 0 }, { "1", BIRTH, 0 } },
		  "{\"s\": \"proc_birth\", \"b\": [\"menu\", \"proc_list\", \"proc_civil\"], "
		  "\"t\": 1700000000}" },
		{ "option keyword with diacritics", "{}", { { "Hồ sơ", ASK, 0 } }, NULL },
		{ "option keyword without", "{}", { { "ho so", ASK, 0 } }, NULL },
		{ "option keyword upper case, no space", "{}", { { "HOSO", ASK, 0 } }, NULL },
		{ "option keyword, spaces and punctuation", "{}",
		  { { "  hồ   SƠ! ", ASK, 0 } }, NULL },
		{ "option keyword decomposed (NFD)", "{}",
		  { { "Ho\xcc\x82\xcc\x80 so\xcc\x9b", ASK, 0 } }, NULL },
		{ "option key with a dot", "{}", { { "1.", ASK, 0 } }, NULL },
		{ "second option keyword", "{}",
		  { { "Thủ Tục", PROCS, 0 }, { "0", MENU, 0 }, { "thutuc", PROCS, 0 } }, NULL },
		{ "global MENU from a deep state, 0 goes back to it", "{}",
		  { { "2", PROCS, 0 }, { "1", CIVIL, 0 }, { "1", BIRTH, 0 }, { "MENU", MENU, 0 },
		    { "0", BIRTH, 0 }, { "Bắt đầu", MENU, 0 }, { "bat dau", MENU, 0 } }, NULL },
		{ "0 back through several steps and at the start", "{}",
		  { { "2", PROCS, 0 }, { "1", CIVIL, 0 }, { "1", BIRTH, 0 }, { "0", CIVIL, 0 },
		    { "0", PROCS, 0 }, { "0", MENU, 0 }, { "0", MENU, 0 },
		    { "Quay lại", MENU, 0 } },
		  "{\"s\": \"menu\", \"t\": 1700000000}" },
		{ "re-showing the same state does not push it", "{}",
		  { { "menu", MENU, 0 }, { "menu", MENU, 0 } },
		  "{\"s\": \"menu\", \"t\": 1700000000}" },
		{ "invalid choice repeats the state", "{}",
		  { { "2", PROCS, 0 }, { "9", INVALID PROCS, 0 }, { "xyz", INVALID PROCS, 0 },
		    { "1", CIVIL, 0 } }, NULL },
		{ "invalid choice at the menu", "{\"s\": \"menu\", \"t\": 1700000000}",
		  { { "9", INVALID MENU, 0 } }, NULL },
		{ "an end state ends and resets the session", "{}",
		  { { "3", ABOUT, 1 } }, "{}" },
		{ "after the end the next input starts fresh", "{}",
		  { { "3", ABOUT, 1 }, { "xin chào", MENU, 0 }, { "3", ABOUT, 1 },
		    { "2", PROCS, 0 }, { "0", MENU, 0 } }, NULL },
		{ "idle past the info flow's 300 s timeout", "{\"s\": \"proc_birth\", "
		  "\"b\": [\"menu\", \"proc_list\", \"proc_civil\"], \"t\": 1699999699}",
		  { { "2", PROCS, 0 } },
		  "{\"s\": \"proc_list\", \"b\": [\"menu\"], \"t\": 1700000000}" },
		{ "idle just under the info flow's timeout", "{\"s\": \"proc_birth\", "
		  "\"b\": [\"menu\", \"proc_list\", \"proc_civil\"], \"t\": 1699999701}",
		  { { "2", INVALID BIRTH, 0 }, { "0", CIVIL, 0 } }, NULL },
		{ "the main flow's 600 s timeout applies in its states", "{\"s\": "
		  "\"lookup_result\", \"v\": {\"code\": \"x\", \"result\": \"Kết quả cũ\"}, "
		  "\"t\": 1699999600}",
		  { { "2", INVALID "Kết quả cũ" AGAIN, 0 } }, NULL },
		{ "idle past the main flow's timeout clears the vars", "{\"s\": "
		  "\"lookup_result\", \"v\": {\"code\": \"x\", \"result\": \"Kết quả cũ\"}, "
		  "\"t\": 1699999399}",
		  { { "2", PROCS, 0 } },
		  "{\"s\": \"proc_list\", \"b\": [\"menu\"], \"t\": 1700000000}" },
		{ "idle, then an input the start state does not know", "{\"s\": \"proc_birth\", "
		  "\"t\": 1699990000}", { { "cảm ơn", MENU, 0 } }, NULL },
		{ "an unknown saved state returns to the start", "{\"s\": \"gone\", "
		  "\"b\": [\"menu\", \"proc_list\"], \"v\": {\"code\": \"x\"}, \"t\": 1700000000}",
		  { { "2", PROCS, 0 }, { "0", MENU, 0 } },
		  "{\"s\": \"menu\", \"t\": 1700000000}" },
		{ "an unknown saved state and unknown input", "{\"s\": \"gone\"}",
		  { { "hello", MENU, 0 } }, NULL },
		{ "back skips states that no longer exist", "{\"s\": \"proc_birth\", "
		  "\"b\": [\"menu\", \"gone\"], \"t\": 1700000000}",
		  { { "0", MENU, 0 } }, NULL },
		{ "back with an empty stack goes to the start", "{\"s\": \"proc_birth\", "
		  "\"t\": 1700000000}", { { "quay lai", MENU, 0 } }, NULL },
		{ "a capture without an action fills its var (whole match)", "{}",
		  { { "góp ý", FB_ASK, 0 }, { "ab", INVALID FB_ASK, 0 },
		    { "Đường xấu", "Cảm ơn góp ý: Đường xấu", 1 } }, "{}" },
		{ "a capture takes regex group 1", "{\"s\": \"proc_land\", \"t\": 1700000000}",
		  { { "Gop Y", FB_ASK, 0 },
		    { "góp ý: đèn hỏng", "Cảm ơn góp ý: đèn hỏng", 1 } }, "{}" },
		{ "the back stack keeps the last 10 states", "{}",
		  { { "2", PROCS, 0 }, { "2", LAND, 0 }, { "1", CIVIL, 0 }, { "2", LAND, 0 },
		    { "1", CIVIL, 0 }, { "2", LAND, 0 }, { "1", CIVIL, 0 }, { "2", LAND, 0 },
		    { "1", CIVIL, 0 }, { "2", LAND, 0 }, { "1", CIVIL, 0 }, { "2", LAND, 0 } },
		  "{\"s\": \"proc_land\", \"b\": [\"proc_land\", \"proc_civil\", \"proc_land\", "
		  "\"proc_civil\", \"proc_land\", \"proc_civil\", \"proc_land\", \"proc_civil\", "
		  "\"proc_land\", \"proc_civil\"], \"t\": 1700000000}" },
	};
	struct flow_result	 res;
	json_t			*session, *after;
	const char		*got;
	size_t			 i, j;
	char			*dump;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		session = json_loads(t[i].session, 0, NULL);
		for (j = 0; j < 14 && t[i].steps[j].in != NULL; j++) {
			got = step(session, t[i].steps[j].in, NULL, NULL, NULL, NULL, &res);
			CHECK(strcmp(got, t[i].steps[j].want) == 0, "%s, step %zu \"%s\": got "
			    "\"%s\", want \"%s\"", t[i].name, j + 1, t[i].steps[j].in, got,
			    t[i].steps[j].want);
			CHECK(res.end == t[i].steps[j].end, "%s, step %zu: end %d", t[i].name,
			    j + 1, res.end);
			CHECK(res.need.kind == FLOW_DATA_NONE, "%s: need", t[i].name);
			flow_result_clear(&res);
		}
		if (t[i].after != NULL) {
			after = json_loads(t[i].after, 0, NULL);
			dump = json_dumps(session, JSON_COMPACT);
			CHECK(json_equal(session, after), "%s: session %s, want %s", t[i].name,
			    dump, t[i].after);
			free(dump);
			json_decref(after);
		}
		json_decref(session);
	}
}

/* Dossier lookups: prefetched, not found, invalid, glued, and asking the caller to fetch. */
static void
test_lookups(void)
{
	static const struct {
		const char	*name;
		const char	*session;
		const char	*in;
		const char	*lookup_code;	/* the dossier fetched, NULL none */
		int		 have;		/* the prefetched dossier exists */
		const char	*user;
		const char	*today;
		const char	*want;		/* NULL: need a dossier */
		const char	*need;
	} t[] = {
		{ "code typed at lookup_ask", "{\"s\": \"lookup_ask\", \"b\": [\"menu\"], "
		  "\"t\": 1700000000}", CODE, CODE, 1, "84987654321", "2023-12-01",
		  FOUND("Nguyễn V** A**", " quá hạn 3 ngày"), NULL },
		{ "HS <code> from the start", "{}", "HS " CODE, CODE, 1, "84987654321",
		  "2023-12-01", FOUND("Nguyễn V** A**", " quá hạn 3 ngày"), NULL },
		{ "glued HS<code>", "{}", "HS" CODE, CODE, 1, "84987654321", "2023-12-01",
		  FOUND("Nguyễn V** A**", " quá hạn 3 ngày"), NULL },
		{ "tra cứu <code> from a deep state", "{\"s\": \"proc_birth\", "
		  "\"t\": 1700000000}", "tra cứu " CODE, CODE, 1, NULL, "2023-12-01",
		  FOUND("Nguyễn V** A**", " quá hạn 3 ngày"), NULL },
		{ "tracuu <code>", "{}", "tracuu " CODE, CODE, 1, NULL, "2023-12-01",
		  FOUND("Nguyễn V** A**", " quá hạn 3 ngày"), NULL },
		{ "TRA CUU: <code>", "{}", "TRA CUU: " CODE, CODE, 1, NULL, "2023-12-01",
		  FOUND("Nguyễn V** A**", " quá hạn 3 ngày"), NULL },
		{ "the applicant sees their own name", "{}", "hs " CODE, CODE, 1, "84912345678",
		  "2023-12-01", FOUND("Nguyễn Văn An", " quá hạn 3 ngày"), NULL },
		{ "not overdue before the due date", "{}", "HS " CODE, CODE, 1, "84987654321",
		  "2023-11-26", FOUND("Nguyễn V** A**", ""), NULL },
		{ "bare code at the menu", "{}", CODE, CODE, 1, NULL, "2023-11-26",
		  FOUND("Nguyễn V** A**", ""), NULL },
		{ "code in words and quotes at lookup_ask", "{\"s\": \"lookup_ask\", "
		  "\"t\": 1700000000}", "ho so cua toi \u201c" CODE "\u201d \u1ea1?", CODE, 1, NULL,
		  "2023-11-26", FOUND("Nguyễn V** A**", ""), NULL },
		{ "Mã hồ sơ: <code>? from a deep state", "{\"s\": \"proc_birth\", "
		  "\"t\": 1700000000}", "Mã hồ sơ: 000.00.20.h21 - 231125 - 0001? 🙏", CODE, 1,
		  NULL, "2023-11-26", FOUND("Nguyễn V** A**", ""), NULL },
		{ "not found", "{}", "HS " CODE, CODE, 0, NULL, NULL,
		  "Không tìm thấy hồ sơ " CODE ". Gọi 1800 0000." AGAIN, NULL },
		{ "not a code after HS", "{}", "HS abc", NULL, 0, NULL, NULL,
		  "\"abc\" không phải mã hồ sơ." AGAIN, NULL },
		{ "not a code at lookup_ask", "{\"s\": \"lookup_ask\", \"t\": 1700000000}",
		  "xin chào", NULL, 0, NULL, NULL,
		  "\"xin chào\" không phải mã hồ sơ." AGAIN, NULL },
		{ "not prefetched", "{\"s\": \"proc_birth\", \"b\": [\"menu\"], "
		  "\"t\": 1699999999}", "hs 000.00.20.h21-231125-0001", NULL, 0, NULL, NULL,
		  NULL, CODE },
		{ "not prefetched, glued, fresh session", "{}", "HS" CODE, NULL, 0, NULL, NULL,
		  NULL, CODE },
		{ "another code was prefetched", "{\"s\": \"lookup_ask\", \"t\": 1700000000}",
		  "000.00.20.H21-231125-0002", CODE, 1, NULL, NULL,
		  NULL, "000.00.20.H21-231125-0002" },
	};
	struct flow_result	 res;
	json_t			*session, *before;
	const char		*got;
	size_t			 i;
	char			*dump;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		session = json_loads(t[i].session, 0, NULL);
		before = json_deep_copy(session);
		got = step(session, t[i].in, t[i].lookup_code, t[i].have ? dossier : NULL,
		    t[i].user, t[i].today, &res);
		if (t[i].want != NULL) {
			CHECK(strcmp(got, t[i].want) == 0, "%s: got \"%s\", want \"%s\"",
			    t[i].name, got, t[i].want);
			CHECK(res.need.kind == FLOW_DATA_NONE, "%s: need \"%s\"", t[i].name,
			    res.need.key);
			CHECK_STR(json_string_value(json_object_get(session, "s")),
			    "lookup_result");
		} else {
			CHECK(res.replies == NULL, "%s: replies", t[i].name);
			CHECK(res.need.kind == FLOW_DATA_DOSSIER, "%s: need kind %d", t[i].name,
			    (int)res.need.kind);
			CHECK(strcmp(res.need.key, t[i].need) == 0, "%s: need \"%s\", want \"%s\"",
			    t[i].name, res.need.key, t[i].need);
			dump = json_dumps(session, JSON_COMPACT);
			CHECK(json_equal(session, before), "%s: session changed: %s", t[i].name,
			    dump);
			free(dump);
		}
		CHECK(res.end == 0, "%s: end", t[i].name);
		flow_result_clear(&res);
		json_decref(before);
		json_decref(session);
	}
}

/* The data array: the engine takes the entry of the right kind and key, wherever it is, and asks for
 * what is missing; flow_result_clear forgets the request. */
static void
test_data(void)
{
	struct flow_data	 other[3] = {
		{ FLOW_DATA_DOSSIER, "000.00.20.H21-231125-0002", NULL },
		{ FLOW_DATA_NONE, CODE, NULL },		/* same key, not a dossier */
		{ FLOW_DATA_DOSSIER, CODE, NULL },
	};
	struct flow_result	 res;
	json_t			*session;
	const char		*got;

	other[2].value = dossier;
	session = json_object();
	got = step_data(session, "HS " CODE, other, 3, "84987654321", "2023-12-01", &res);
	CHECK_STR(got, FOUND("Nguyễn V** A**", " quá hạn 3 ngày"));
	CHECK(res.need.kind == FLOW_DATA_NONE, "found third: need %d", (int)res.need.kind);
	flow_result_clear(&res);
	json_decref(session);

	/* Only the first two: neither is this dossier, so it is asked for. */
	session = json_object();
	got = step_data(session, "HS " CODE, other, 2, NULL, NULL, &res);
	CHECK_STR(got, "");
	CHECK(res.replies == NULL, "replies with a need");
	CHECK(res.need.kind == FLOW_DATA_DOSSIER, "need kind %d", (int)res.need.kind);
	CHECK_STR(res.need.key, CODE);
	CHECK(json_object_size(session) == 0, "session changed while data is needed");
	flow_result_clear(&res);
	CHECK(res.need.kind == FLOW_DATA_NONE && res.need.key[0] == '\0', "cleared need");

	/* Fetched and it does not exist (value NULL). */
	other[2].value = NULL;
	got = step_data(session, "HS " CODE, other, 3, NULL, NULL, &res);
	CHECK_STR(got, "Không tìm thấy hồ sơ " CODE ". Gọi 1800 0000." AGAIN);
	CHECK(res.need.kind == FLOW_DATA_NONE, "not found: need %d", (int)res.need.kind);
	flow_result_clear(&res);
	json_decref(session);
}

/* After a lookup the session remembers the code and the result: back and invalid input show it. */
static void
test_lookup_session(void)
{
	struct flow_result	 res;
	json_t			*session, *v;
	const char		*got;
	char			*dump;

	session = json_object();
	got = step(session, "1", NULL, NULL, NULL, NULL, &res);
	CHECK_STR(got, ASK);
	flow_result_clear(&res);

	got = step(session, "HS" CODE, NULL, NULL, NULL, NULL, &res);
	CHECK_STR(got, "");
	CHECK(res.need.kind == FLOW_DATA_DOSSIER, "need kind %d", (int)res.need.kind);
	CHECK_STR(res.need.key, CODE);
	flow_result_clear(&res);
	got = step(session, "HS" CODE, CODE, dossier, NULL, NULL, &res);
	CHECK_STR(got, FOUND("Nguyễn V** A**", " quá hạn 3 ngày"));
	flow_result_clear(&res);

	v = json_object_get(session, "v");
	CHECK_STR(json_string_value(json_object_get(v, "code")), CODE);
	CHECK_STR(json_string_value(json_object_get(session, "s")), "lookup_result");
	dump = json_dumps(json_object_get(session, "b"), JSON_COMPACT);
	CHECK_STR(dump, "[\"menu\",\"lookup_ask\"]");
	free(dump);

	got = step(session, "5", NULL, NULL, NULL, NULL, &res);
	CHECK_STR(got, INVALID FOUND("Nguyễn V** A**", " quá hạn 3 ngày"));
	flow_result_clear(&res);
	got = step(session, "1", NULL, NULL, NULL, NULL, &res);
	CHECK_STR(got, ASK);
	flow_result_clear(&res);
	got = step(session, "0", NULL, NULL, NULL, NULL, &res);
	CHECK_STR(got, FOUND("Nguyễn V** A**", " quá hạn 3 ngày"));
	flow_result_clear(&res);
	got = step(session, "0", NULL, NULL, NULL, NULL, &res);
	CHECK_STR(got, ASK);
	flow_result_clear(&res);
	got = step(session, "0", NULL, NULL, NULL, NULL, &res);
	CHECK_STR(got, MENU);
	flow_result_clear(&res);
	json_decref(session);
}

/* The shipped flows' TB / HUY TB: the keyword with a code asks the caller to record it (not a
 * lookup, though the text holds a code), a short answer at the offer means the code looked up, and
 * the notification text renders with the dossier's fields. */
static void
test_follow(void)
{
	struct flowset		*saved = fs;
	struct flow_result	 res;
	struct flow_data	 data[2];
	json_t			*session, *errors = NULL, *v, *vars;
	const char		*got;
	char			*notice;

	fs = load("../../flows", NULL, 0, 0, &errors);
	CHECK(fs != NULL, "the shipped flows load");
	if (fs == NULL) {
		dump_errors("flows", errors);
		json_decref(errors);
		fs = saved;
		return;
	}
	session = json_object();
	got = step_data(session, "TB " CODE, NULL, 0, "84987000001", NULL, &res);
	CHECK(res.need.kind == FLOW_DATA_FOLLOW, "TB: need kind %d", (int)res.need.kind);
	CHECK_STR(res.need.key, CODE);
	flow_result_clear(&res);
	v = json_pack("{s:s, s:b}", "code", CODE, "full", 0);
	data[0] = (struct flow_data){ FLOW_DATA_FOLLOW, CODE, v };
	got = step_data(session, "TB " CODE, data, 1, "84987000001", NULL, &res);
	CHECK(strncmp(got, "Bạn sẽ nhận tin nhắn khi hồ sơ " CODE " đổi trạng thái.\nGõ HUY TB "
	    CODE " để ngừng nhận.", 90) == 0, "TB reply: %s", got);
	CHECK_STR(json_string_value(json_object_get(session, "s")), "follow_result");
	flow_result_clear(&res);
	json_object_set_new(v, "full", json_true());
	got = step_data(session, "theo doi " CODE, data, 1, NULL, NULL, &res);
	CHECK(strstr(got, "quá nhiều người theo dõi") != NULL, "full: %s", got);
	flow_result_clear(&res);
	got = step_data(session, "HUY TB " CODE, NULL, 0, NULL, NULL, &res);
	CHECK(res.need.kind == FLOW_DATA_UNFOLLOW, "HUY TB: need kind %d", (int)res.need.kind);
	flow_result_clear(&res);
	data[1] = (struct flow_data){ FLOW_DATA_UNFOLLOW, CODE, NULL };
	got = step_data(session, "huỷ tb " CODE, data, 2, NULL, NULL, &res);
	CHECK(strncmp(got, "Không tìm thấy hồ sơ " CODE, 40) == 0, "unknown: %s", got);
	flow_result_clear(&res);
	got = step_data(session, "TB abc", NULL, 0, NULL, NULL, &res);
	CHECK(strncmp(got, "Mã hồ sơ \"abc\" không đúng dạng.", 30) == 0, "bad code: %s", got);
	flow_result_clear(&res);
	/* After a lookup: option 4, then "1" follows the dossier looked up. */
	json_decref(session);
	session = json_object();
	data[0] = (struct flow_data){ FLOW_DATA_DOSSIER, CODE, dossier };
	got = step_data(session, "HS " CODE, data, 1, NULL, NULL, &res);
	flow_result_clear(&res);
	got = step_data(session, "4", NULL, 0, NULL, NULL, &res);
	CHECK(strncmp(got, "Nhận tin nhắn khi hồ sơ " CODE, 40) == 0, "offer: %s", got);
	flow_result_clear(&res);
	json_object_set_new(v, "full", json_false());
	data[0] = (struct flow_data){ FLOW_DATA_FOLLOW, CODE, v };
	got = step_data(session, "1", NULL, 0, NULL, NULL, &res);
	CHECK(res.need.kind == FLOW_DATA_FOLLOW, "1 at the offer: need kind %d",
	    (int)res.need.kind);
	CHECK_STR(res.need.key, CODE);
	flow_result_clear(&res);
	json_decref(session);
	json_decref(v);

	vars = json_pack("{s:s, s:s}", "code", CODE, "status_text", "Đã xử lý xong");
	notice = flow_render_notice(fs, "zalo", vars);
	CHECK_STR(notice, "Hồ sơ " CODE " chuyển sang: Đã xử lý xong.\nGõ HUY TB " CODE
	    " để ngừng nhận tin.");
	free(notice);
	json_decref(vars);
	flowset_free(fs);
	fs = saved;
}

/* A session that is not an object is the caller's bug: -1 with a cause. */
static void
test_bad_session(void)
{
	struct flow_input	 in = { .text = "1", .channel = "sms", .now = NOW };
	struct flow_result	 res;
	json_t			*session = json_array();
	char			*cause = NULL;

	CHECK(flow_step(fs, session, &in, &res, &cause) == -1, "array session accepted");
	CHECK(cause != NULL, "no cause");
	CHECK(res.replies == NULL, "replies");
	free(cause);
	json_decref(session);
}

/* Template sections: {{#v}}...{{/v}} shown only when v is set and not empty, nested, and every
 * misuse reported at compile time. */
static void
test_sections(void)
{
	static const struct {
		const char	*src;
		const char	*vars;		/* the run-time values */
		const char	*want;		/* the rendering, or the first problem */
	} t[] = {
		{ "A{{#note}}\nGhi chú: {{note}}{{/note}}\nB", "{\"note\": \"x\"}",
		  "A\nGhi chú: x\nB" },
		{ "A{{#note}}\nGhi chú: {{note}}{{/note}}\nB", "{\"note\": \"\"}", "A\nB" },
		{ "A{{#note}}\nGhi chú: {{note}}{{/note}}\nB", "{}", "A\nB" },
		{ "{{#a}}a{{#b}}b{{/b}}{{/a}}.", "{\"a\": \"1\"}", "a." },
		{ "{{#a}}a{{#b}}b{{/b}}{{/a}}.", "{\"b\": \"1\"}", "." },
		{ "{{#a}}a{{#b}}b{{/b}}{{/a}}.", "{\"a\": \"1\", \"b\": 2}", "ab." },
		{ "{{#hotline}}Gọi {{hotline}}{{/hotline}}", "{}", "Gọi 1900" },
		{ "{{ #note }}x{{ /note }}", "{\"note\": \"y\"}", "x" },
		{ "{{#note}}x", "{}", "{{#note}} is not closed" },
		{ "x{{/note}}", "{}", "{{/note}} closes no {{#note}}" },
		{ "{{#a}}{{#b}}x{{/a}}{{/b}}", "{}", "{{/a}} where {{/b}} was expected" },
		{ "{{#nosuch}}x{{/nosuch}}", "{}", "unknown var {{#nosuch}}" },
		{ "{{#}}x", "{}", "bad placeholder {{#}}" },
	};
	json_t		*runtime = json_pack("{sbsbsbsb}", "note", 1, "a", 1, "b", 1, "x", 1);
	json_t		*vars = json_pack("{ss}", "hotline", "1900");
	json_t		*problems, *v;
	const json_t	*chain[2];
	struct flow_tmpl tm;
	struct flow_buf	 b;
	size_t		 i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		memset(&tm, 0, sizeof tm);
		problems = json_array();
		flow_tmpl_compile(&tm, t[i].src, NULL, runtime, vars, NULL, problems);
		if (json_array_size(problems) > 0)
			CHECK_STR(json_string_value(json_array_get(problems, 0)), t[i].want);
		else {
			v = json_loads(t[i].vars, 0, NULL);
			chain[0] = v;
			chain[1] = vars;
			memset(&b, 0, sizeof b);
			flow_tmpl_buf_add(&b, "", 0);
			flow_tmpl_render(&b, &tm, chain, 2);
			CHECK_STR(b.p, t[i].want);
			free(b.p);
			json_decref(v);
		}
		json_decref(problems);
		flow_tmpl_clear(&tm);
	}
	json_decref(runtime);
	json_decref(vars);
}

/* One input through the shipped flows as channel/user/phone with the data given. */
static const char *
step_shipped(struct flowset *set, json_t *session, const char *channel, const char *user,
    const char *phone, const char *text, const struct flow_data *data, size_t ndata,
    struct flow_result *res)
{
	static char		 reply[4096];
	struct flow_input	 in = {
		.text = text, .channel = channel, .user = user, .phone = phone, .now = NOW,
		.today = "2023-12-01", .data = data, .ndata = ndata,
	};
	char			*cause = NULL;
	int			 rc;

	reply[0] = '\0';
	flow_result_clear(res);
	rc = flow_step(set, session, &in, res, &cause);
	CHECK(rc == 0, "\"%s\": flow_step failed: %s", text, cause != NULL ? cause : "?");
	free(cause);
	if (rc == 0 && json_array_size(res->replies) == 1)
		snprintf(reply, sizeof reply, "%s",
		    json_string_value(json_array_get(res->replies, 0)));
	return reply;
}

/* The OTP and Zalo link actions of the shipped flows: a state's action asks for live data before
 * the session changes, the sender's phone is the SMS user or the Zalo user's linked phone, a code
 * typed is never kept in the session, and a linked Zalo user sees their own dossier unmasked. */
static void
test_otp_actions(void)
{
	struct flow_limits	 lim = { 3, { { "an SMS reply", 0, 0, "sms" },
	    { "a Zalo message", 2000, 0, "zalo" }, { "a USSD screen", 0, 0, "ussd" } } };
	struct flowset		*set;
	struct flow_result	 res;
	struct flow_data	 d[2];
	json_t			*errors = NULL, *session, *none, *live, *sent, *wrong;
	const char		*got, *zu = "5817296487162953217";
	char			*dump;

	memset(&res, 0, sizeof res);
	set = flowset_load("flows", NULL, &lim, &errors);
	CHECK(set != NULL, "the shipped flows load");
	if (set == NULL) {
		dump_errors("flows", errors);
		json_decref(errors);
		return;
	}
	none = json_pack("{sb}", "live", 0);
	live = json_pack("{sb ss ss sI sI sI s[{ss sI ss}]}", "live", 1, "purpose", "login",
	    "channel", "sms", "expires", (json_int_t)NOW * 1000 + 300000, "last_send",
	    (json_int_t)NOW * 1000, "sends", (json_int_t)2, "log", "channel", "sms", "at",
	    (json_int_t)NOW * 1000, "delivery", "queued");

	/* SMS: the sender's number is asked about, the session untouched until it is known. */
	session = json_object();
	got = step_shipped(set, session, "sms", "84912345678", NULL, "khong nhan duoc ma", NULL,
	    0, &res);
	CHECK(res.need.kind == FLOW_DATA_OTP_STATUS, "need kind %d", (int)res.need.kind);
	CHECK_STR(res.need.key, "84912345678");
	CHECK(json_object_size(session) == 0, "session changed while data is needed");
	d[0] = (struct flow_data){ FLOW_DATA_OTP_STATUS, "84912345678", none };
	got = step_shipped(set, session, "sms", "84912345678", NULL, "khong nhan duoc ma", d, 1,
	    &res);
	CHECK(strstr(got, "Hiện không có mã OTP nào đang chờ cho số 84912***678") != NULL &&
	    strstr(got, "GUI LAI") == NULL, "no live code: %s", got);
	d[0].value = live;
	got = step_shipped(set, session, "sms", "84912345678", NULL, "OTP", d, 1, &res);
	CHECK(strstr(got, "còn hiệu lực") != NULL && strstr(got, "(lần 2)") != NULL &&
	    strstr(got, "chưa có báo nhận") != NULL && strstr(got, "GUI LAI") != NULL,
	    "live code: %s", got);
	/* Shown again after an invalid choice: asked again (live data is never kept). */
	got = step_shipped(set, session, "sms", "84912345678", NULL, "7", NULL, 0, &res);
	CHECK(res.need.kind == FLOW_DATA_OTP_STATUS, "re-shown: need kind %d", (int)res.need.kind);
	json_decref(session);

	/* Zalo without a linked phone: nothing is asked, the user is told to link. */
	session = json_object();
	got = step_shipped(set, session, "zalo", zu, NULL, "OTP", NULL, 0, &res);
	CHECK(res.need.kind == FLOW_DATA_NONE && strstr(got, "LIEN KET") != NULL, "unlinked: %s",
	    got);
	json_decref(session);

	/* LIEN KET: the phone normalised, then the code: never kept in the session. */
	session = json_object();
	got = step_shipped(set, session, "zalo", zu, NULL, "Liên kết +84 912 345 678", NULL, 0,
	    &res);
	CHECK(res.need.kind == FLOW_DATA_LINK_START, "need kind %d", (int)res.need.kind);
	CHECK_STR(res.need.key, "84912345678 5817296487162953217");
	sent = json_pack("{ss ss}", "status", "sent", "phone", "84912***678");
	d[0] = (struct flow_data){ FLOW_DATA_LINK_START, "84912345678 5817296487162953217", sent };
	got = step_shipped(set, session, "zalo", zu, NULL, "Liên kết +84 912 345 678", d, 1,
	    &res);
	CHECK(strstr(got, "Đã gửi mã xác nhận bằng SMS tới số 84912***678") != NULL, "sent: %s",
	    got);
	got = step_shipped(set, session, "zalo", zu, NULL, "123 456", NULL, 0, &res);
	CHECK(res.need.kind == FLOW_DATA_LINK_CHECK, "need kind %d", (int)res.need.kind);
	CHECK_STR(res.need.key, "5817296487162953217 123456");
	wrong = json_pack("{ss sI}", "status", "pending", "left", (json_int_t)4);
	d[0] = (struct flow_data){ FLOW_DATA_LINK_CHECK, "5817296487162953217 123456", wrong };
	got = step_shipped(set, session, "zalo", zu, NULL, "123 456", d, 1, &res);
	CHECK(strstr(got, "Còn 4 lần thử") != NULL, "wrong code: %s", got);
	dump = json_dumps(session, JSON_COMPACT);
	CHECK(strstr(dump, "123") == NULL, "the code typed is kept in the session: %s", dump);
	free(dump);
	json_decref(session);

	/* A foreign number: nothing is asked for. */
	session = json_object();
	got = step_shipped(set, session, "zalo", zu, NULL, "LIEN KET +1 202 555 0100", NULL, 0,
	    &res);
	CHECK(res.need.kind == FLOW_DATA_NONE && strstr(got, "không phải số di động Việt Nam"),
	    "foreign: %s", got);
	/* On SMS linking is refused without asking anything. */
	got = step_shipped(set, session, "sms", "84912345678", NULL, "LIEN KET 0912345678", NULL,
	    0, &res);
	CHECK(res.need.kind == FLOW_DATA_NONE && strstr(got, "chỉ dùng trong Zalo"),
	    "sms: %s", got);
	json_decref(session);

	/* The link entry of the menu is offered on Zalo only. */
	session = json_object();
	got = step_shipped(set, session, "zalo", zu, NULL, "menu", NULL, 0, &res);
	CHECK(strstr(got, "\n9. Liên kết Zalo") != NULL, "zalo menu: %s", got);
	got = step_shipped(set, session, "zalo", zu, NULL, "9", NULL, 0, &res);
	CHECK(strstr(got, "nhập số di động của bạn") != NULL, "zalo 9: %s", got);
	got = step_shipped(set, session, "sms", "84912345678", NULL, "menu", NULL, 0, &res);
	CHECK(strstr(got, "Liên kết") == NULL && strstr(got, "\n9.") == NULL, "sms menu: %s", got);
	got = step_shipped(set, session, "sms", "84912345678", NULL, "9", NULL, 0, &res);
	CHECK(strstr(got, "Lựa chọn không hợp lệ") != NULL, "sms 9: %s", got);
	got = step_shipped(set, session, "ussd", "84912345678", NULL, "menu", NULL, 0, &res);
	CHECK(strstr(got, "\n9.") == NULL, "ussd menu: %s", got);
	json_decref(session);

	/* A dossier from Zalo: masked, unless the Zalo user's linked phone is the dossier's. */
	session = json_object();
	d[0] = (struct flow_data){ FLOW_DATA_DOSSIER, CODE, dossier };
	got = step_shipped(set, session, "zalo", zu, NULL, "HS " CODE, d, 1, &res);
	CHECK(strstr(got, "Nguyễn V** A**") != NULL, "unlinked: %s", got);
	got = step_shipped(set, session, "zalo", zu, "84912345678", "HS " CODE, d, 1, &res);
	CHECK(strstr(got, "Nguyễn Văn An") != NULL, "linked: %s", got);
	got = step_shipped(set, session, "zalo", zu, "84987654321", "HS " CODE, d, 1, &res);
	CHECK(strstr(got, "Nguyễn V** A**") != NULL, "linked to another phone: %s", got);
	json_decref(session);

	flow_result_clear(&res);
	json_decref(none);
	json_decref(live);
	json_decref(sent);
	json_decref(wrong);
	flowset_free(set);
}

int
main(void)
{
	test_sections();
	test_validation();
	test_config_vars();
	test_good();
	test_channels();
	if (fs == NULL)
		UNIT_END();
	dossier = json_pack("{ss ss ss ss ss ss ss si ss}", "code", CODE,
	    "procedure", "Đăng ký khai sinh", "applicant", "Nguyễn Văn An",
	    "phone", "0912345678", "agency", "UBND xã Tân Bình", "received_at", "2023-11-25",
	    "due_at", "2023-11-28", "status", 4, "note", "");
	test_walks();
	test_lookups();
	test_data();
	test_lookup_session();
	test_follow();
	test_bad_session();
	test_otp_actions();
	json_decref(dossier);
	flowset_free(fs);
	UNIT_END();
}
