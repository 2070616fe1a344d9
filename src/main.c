/* main.c: the command table (run, check, chat, import, outbox, token, otp, user) and the daemon's life:
 * start-up, SIGHUP reload, and SIGTERM/SIGINT drain; the terminal chat simulator. */
#include <sys/resource.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "dvcgw.h"

#define DRAIN_DEADLINE_S 10

static struct {
	struct event_base	*base;
	struct config		*cfg;
	struct event		*sigterm, *sigint, *sighup, *drain;
	struct event		*sigusr1, *logtick;	/* log.file reopen; repeat summaries */
	struct timespec		 stop_at;
	int			 stopping, released;
	struct event		*sdwatch;	/* READY=1 / STATUS= for the service manager */
	int			 sd_state, port;	/* -1 not told yet, else rds_ready() last told */
} gw;

static int	cmd_run(struct config *, int, char **);
static int	cmd_check(struct config *, int, char **);
static int	cmd_chat(struct config *, int, char **);
static int	cmd_import(struct config *, int, char **);
static int	cmd_outbox(struct config *, int, char **);
static int	cmd_token(struct config *, int, char **);
static int	cmd_otp(struct config *, int, char **);
static int	cmd_user(struct config *, int, char **);

/* The commands: dvcgw NAME [-c FILE] [options] ARGS. One entry each; usage() is made from it. */
static const struct cmd_entry {
	const char	*name;
	const char	*args;		/* after -c FILE, for usage() */
	const char	*help;
	int		 min, max;	/* how many arguments after the options (-1: any) */
	int		(*fn)(struct config *, int, char **);
} cmd_table[] = {
	{ "run", "", "run the gateway (the default command)", 0, 0, cmd_run },
	{ "check", "", "validate the config and every flow", 0, 0, cmd_check },
	{ "chat", "--channel CHANNEL --user ID", "talk to the flows from the terminal", 0, 0,
	  cmd_chat },
	{ "import", "PATH", "load dossiers from JSON or CSV", 1, 1, cmd_import },
	{ "outbox", "[status|dead|requeue [ID...]]", "reply queue depth and dead letters", 0, -1,
	  cmd_outbox },
	{ "token", "new NAME ROLE", "a new API token (provider, portal, staff, onestop) and its "
	  "api.tokens entry", 0, -1, cmd_token },
	{ "otp", "[--token TOKEN] send PHONE [PURPOSE] | check ID CODE | status ID",
	  "act as a portal: the running daemon's OTP API (token: --token or DVCGW_TOKEN)", 1, 3,
	  cmd_otp },
	{ "user", "add|passwd|disable|enable|list [NAME] [--role agent|supervisor]", "staff "
	  "accounts; the password is read from the terminal (no echo) or stdin", 1, 2, cmd_user },
};

/* Options some commands read (chat, otp). */
static struct {
	const char	*channel, *user, *token, *role;
} opt;

/* The commands from cmd_table, on stderr with exit 2 (bad usage) or stdout with exit 0 (--help). */
static __dead void
usage_to(FILE *f, int rc)
{
	size_t i;

	for (i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++)
		fprintf(f, "%s dvcgw %s -c FILE%s%s\n%*s%s\n", i == 0 ? "usage:" : "      ",
		    cmd_table[i].name, *cmd_table[i].args ? " " : "", cmd_table[i].args, 10, "",
		    cmd_table[i].help);
	exit(rc);
}

static __dead void
usage(void)
{
	usage_to(stderr, 2);
}

/* Load the config or exit 1 with every problem. */
static struct config *
load_config(const char *path)
{
	struct config *cfg;
	json_t *errors, *e;
	size_t i;
	char *cause = NULL;

	if ((cfg = config_load(path, &errors)) == NULL) {
		json_array_foreach(errors, i, e)
			fprintf(stderr, "%s\n", json_string_value(e));
		json_decref(errors);
		exit(1);
	}
	rkey_init(cfg->redis_prefix);
	rds_set_connect_timeout(cfg->redis_connect_timeout_ms);
	rds_set_sentinels(cfg->redis_sentinels, cfg->redis_master_name);
	rds_set_wait(cfg->redis_wait_replicas, cfg->redis_wait_timeout_ms);
	setenv("TZ", cfg->time_zone, 1);
	tzset();
	log_set_level(strcmp(cfg->log_level, "debug") == 0 ? LOG_DEBUG :
	    strcmp(cfg->log_level, "warn") == 0 ? LOG_WARN :
	    strcmp(cfg->log_level, "error") == 0 ? LOG_ERROR : LOG_INFO);
	if (dossier_set_pattern(cfg->code_pattern, &cause) != 0) {
		fprintf(stderr, "config: dossier.code_pattern: %s\n", cause);
		exit(1);
	}
	return cfg;
}

/* Load the flow set named by the config; NULL and the problems printed to stderr on failure. */
static struct flowset *
load_flows(const struct config *cfg)
{
	struct flow_limits lim = { 0 };
	const struct channel *c;
	struct flowset *fs;
	json_t *errors, *e;
	size_t i;

	channel_init(NULL, cfg);	/* the limits; gw_setup sets the drivers up */
	for (i = 0; (c = channel_at(i)) != NULL && lim.n < FLOW_LIMITS_MAX; i++) {
		lim.lim[lim.n].what = c->what;
		lim.lim[lim.n].max_chars = c->max_chars;
		lim.lim[lim.n].max_segments = c->max_segments;
		lim.lim[lim.n++].channel = c->name;
	}
	if ((fs = flowset_load(cfg->flows_dir, cfg->flows_vars, &lim, &errors)) == NULL) {
		json_array_foreach(errors, i, e)
			fprintf(stderr, "%s\n", json_string_value(e));
		json_decref(errors);
	}
	return fs;
}

static void
gw_teardown(void)
{
	http_free();
	console_free();
	staff_stop();
	notify_stop();
	zalo_stop();
	outbox_free();
	smsout_free();
	channel_flush();
	fetch_stop();
	store_stop();
	rds_stop();
	conv_shutdown();
	event_free(gw.sigterm);
	event_free(gw.sigint);
	event_free(gw.sighup);
	if (gw.sigusr1 != NULL)
		event_free(gw.sigusr1);
	if (gw.logtick != NULL)
		event_free(gw.logtick);
	gw.sigusr1 = gw.logtick = NULL;
	if (gw.drain != NULL)
		event_free(gw.drain);
	if (gw.sdwatch != NULL)
		event_free(gw.sdwatch);
	gw.sdwatch = NULL;
	event_base_loopexit(gw.base, NULL);
}

/* While stopping: exit once every request, conversation, send and Redis call has settled, or at the
 * deadline. */
static void
gw_drain_cb(evutil_socket_t fd, short events, void *arg)
{
	struct timespec now;
	int busy;

	busy = http_inflight() + conv_inflight() + outbox_inflight() + fetch_active() + rds_npending();
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (busy > 0 && now.tv_sec < gw.stop_at.tv_sec)
		return;
	if (!gw.released && now.tv_sec < gw.stop_at.tv_sec) {
		/* Hand the outbox shards over now rather than when their leases expire. */
		gw.released = 1;
		outbox_release_leases();
		return;
	}
	if (busy > 0)
		log_warn("stop: %d operations still pending after %d s; exiting anyway", busy,
		    DRAIN_DEADLINE_S);
	else
		log_info("stop: drained");
	gw_teardown();
}

static void
gw_stop_cb(evutil_socket_t sig, short events, void *arg)
{
	struct timeval tv = { 0, 20000 };

	if (gw.stopping)
		return;
	gw.stopping = 1;
	log_info("stop: signal %d; no new connections, draining", (int)sig);
	sdnotify_send("STOPPING=1\nSTATUS=stopping: draining requests and sends");
	http_stop_accepting();
	outbox_stop_taking();
	clock_gettime(CLOCK_MONOTONIC, &gw.stop_at);
	gw.stop_at.tv_sec += DRAIN_DEADLINE_S;
	gw.drain = event_new(gw.base, -1, EV_PERSIST, gw_drain_cb, NULL);
	event_add(gw.drain, &tv);
}

/* SIGHUP: reload the API tokens and allowed networks from the config file, and the flows; keep the
 * current ones unless the new ones validate. */
static void
gw_reload_cb(evutil_socket_t sig, short events, void *arg)
{
	struct flowset *fs;
	struct config *ncfg;
	json_t *errors = NULL, *e;
	char *cause = NULL;
	size_t i;

	if ((ncfg = config_load(gw.cfg->path, &errors)) == NULL) {
		json_array_foreach(errors, i, e)
			log_error("reload: %s", json_string_value(e));
		json_decref(errors);
		log_error("reload: the config has errors; keeping the current tokens");
	} else {
		if (auth_init(ncfg, &cause) != 0) {
			log_error("reload: %s", cause);
			free(cause);
			auth_init(gw.cfg, &cause);
		} else
			log_info("reload: %zu API tokens, %zu allowed networks",
			    json_array_size(ncfg->api_tokens), json_array_size(ncfg->listen_allow));
		config_free(ncfg);
	}

	console_load(gw.cfg->console_dir);	/* the console's files, edited in place */
	if ((fs = load_flows(gw.cfg)) == NULL) {
		log_error("reload: the new flows have errors (above); keeping the current ones");
		return;
	}
	conv_set_flows(fs);
	log_info("reload: %zu states loaded from %s", flowset_nstates(fs), gw.cfg->flows_dir);
}

/* SIGUSR1: logrotate renamed log.file; write to a new one. */
static void
gw_reopen_cb(evutil_socket_t sig, short events, void *arg)
{
	log_reopen();
}

/* Once a second: the summaries of repeated log lines that were left out. */
static void
gw_logtick_cb(evutil_socket_t fd, short events, void *arg)
{
	log_flush();
}

/* Tell the service manager (NOTIFY_SOCKET) READY=1 once we listen and Redis is ready, and a STATUS=
 * line whenever Redis comes or goes. */
static void
gw_sdwatch_cb(evutil_socket_t fd, short events, void *arg)
{
	char why[200];
	size_t i;
	int ready = rds_ready();

	if (gw.stopping || ready == gw.sd_state || (gw.sd_state == -1 && !ready))
		return;
	if (ready)
		sdnotify_send("%sSTATUS=listening on %s:%d, Redis ready", gw.sd_state == -1 ?
		    "READY=1\n" : "", gw.cfg->listen_host, gw.port);
	else {
		snprintf(why, sizeof why, "%s", rds_error());
		for (i = 0; why[i] != '\0'; i++)	/* one line: the protocol is line-based */
			if ((unsigned char)why[i] < 0x20)
				why[i] = ' ';
		sdnotify_send("STATUS=listening on %s:%d, Redis unavailable: %s",
		    gw.cfg->listen_host, gw.port, why);
	}
	gw.sd_state = ready;
}

/* Wire the subsystems onto one event base. */
static void
gw_setup(struct config *cfg, struct flowset *fs)
{
	struct event_config *ecfg;
	char *cause = NULL;

	signal(SIGPIPE, SIG_IGN);
	/* The epoll changelist folds the add/del pairs of one loop pass into one epoll_ctl each. */
	if ((ecfg = event_config_new()) == NULL)
		fatalx("event_config_new failed");
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	gw.base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	if (gw.base == NULL)
		fatalx("event_base_new failed");
	gw.cfg = cfg;
	channel_init(gw.base, cfg);
	metrics_init();
	store_init(cfg);
	store_start(gw.base);
	conv_init(cfg, fs);
	otp_init(cfg);
	staff_init(gw.base, cfg);
	notify_init(gw.base, cfg);
	ussd_init(gw.base, cfg);
	fetch_init(gw.base);
	outbox_init(gw.base, cfg);
	zalo_init(gw.base, cfg);
	if (rds_start(gw.base, cfg->redis_url, cfg->redis_timeout_ms, &cause) != 0)
		fatalx("%s", cause);
}

static int
cmd_run(struct config *cfg, int argc, char **argv)
{
	struct flowset *fs;
	int port;

	struct rlimit rl;
	char *cause = NULL;
	int has_provider = 0;
	size_t i;
	json_t *t;

	if ((fs = load_flows(cfg)) == NULL)
		return 1;
	if (auth_init(cfg, &cause) != 0)
		fatalx("config: %s", cause);
	log_set_format(cfg->log_format);
	if (cfg->log_file != NULL && log_open(cfg->log_file) != 0)
		fatal("config: log.file: cannot open %s", cfg->log_file);
	/* Connections are capped by listen.max_connections, not by a low default descriptor limit. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	json_array_foreach(cfg->api_tokens, i, t)
		if (auth_role(json_string_value(json_object_get(t, "role"))) == AUTH_PROVIDER)
			has_provider = 1;
	if (!has_provider && json_array_size(cfg->listen_allow) == 0 &&
	    strncmp(cfg->listen_host, "127.", 4) != 0 && strcmp(cfg->listen_host, "::1") != 0 &&
	    strcmp(cfg->listen_host, "localhost") != 0)
		log_warn("listening on %s without a provider token: the SMS and USSD endpoints "
		    "will refuse every caller not on this machine (add a provider token to "
		    "api.tokens: dvcgw token new)", cfg->listen_host);
	gw_setup(cfg, fs);
	console_load(cfg->console_dir);
	port = http_start(gw.base, cfg);
	gw.sigterm = evsignal_new(gw.base, SIGTERM, gw_stop_cb, NULL);
	gw.sigint = evsignal_new(gw.base, SIGINT, gw_stop_cb, NULL);
	gw.sighup = evsignal_new(gw.base, SIGHUP, gw_reload_cb, NULL);
	event_add(gw.sigterm, NULL);
	event_add(gw.sigint, NULL);
	event_add(gw.sighup, NULL);
	{
		struct timeval sec = { 1, 0 };
		struct timeval tv = { 0, 50000 };

		gw.sigusr1 = evsignal_new(gw.base, SIGUSR1, gw_reopen_cb, NULL);
		gw.logtick = event_new(gw.base, -1, EV_PERSIST, gw_logtick_cb, NULL);
		event_add(gw.sigusr1, NULL);
		event_add(gw.logtick, &sec);
		gw.port = port;
		gw.sd_state = -1;
		gw.sdwatch = event_new(gw.base, -1, EV_PERSIST, gw_sdwatch_cb, NULL);
		event_add(gw.sdwatch, &tv);
	}
	log_info("dvcgw %s listening on %s:%d (sms driver %s, %zu flow states)", DVCGW_VERSION,
	    cfg->listen_host, port, cfg->sms_driver, flowset_nstates(fs));
	event_base_dispatch(gw.base);
	event_base_free(gw.base);
	auth_free();
	log_flush();
	log_close();
	return 0;
}

/* dvcgw token new NAME ROLE: a new random API token, printed once with the api.tokens entry that
 * accepts it (only its SHA-256 is ever stored). */
static int
cmd_token(struct config *cfg, int argc, char **argv)
{
	unsigned char raw[24], h[crypto_hash_sha256_BYTES];
	char tok[sizeof raw * 2 + 8], hex[sizeof h * 2 + 1];
	json_t *entry;
	char *line;

	if (argc != 3 || strcmp(argv[0], "new") != 0 || auth_role(argv[2]) < 0) {
		fprintf(stderr, "usage: dvcgw token new -c FILE NAME provider|portal|staff|onestop\n");
		return 1;
	}
	randombytes_buf(raw, sizeof raw);
	memcpy(tok, "dvcgw_", 6);
	sodium_bin2hex(tok + 6, sizeof tok - 6, raw, sizeof raw);
	crypto_hash_sha256(h, (const unsigned char *)tok, strlen(tok));
	sodium_bin2hex(hex, sizeof hex, h, sizeof h);
	entry = json_pack("{s:s, s:s, s:s}", "name", argv[1], "role", argv[2], "sha256", hex);
	if (entry == NULL || (line = json_dumps(entry, JSON_COMPACT)) == NULL) {
		fprintf(stderr, "dvcgw: the name must be valid UTF-8\n");
		json_decref(entry);
		return 1;
	}
	printf("token: %s\n(shown once; give it to the caller)\nadd to \"api.tokens\" in %s:\n"
	    "  %s\n", tok, cfg->path, line);
	free(line);
	json_decref(entry);
	sodium_memzero(tok, sizeof tok);
	return 0;
}

static int
cmd_check(struct config *cfg, int argc, char **argv)
{
	struct flowset *fs;

	if ((fs = load_flows(cfg)) == NULL)
		return 1;
	printf("%s: config ok; %s: %zu states ok\n", cfg->path, cfg->flows_dir, flowset_nstates(fs));
	flowset_free(fs);
	return 0;
}

/* The terminal simulator: one line in, the replies out, through the same conversation code and
 * Redis state as the daemon, but replies are printed instead of queued. */
static struct {
	const struct channel *channel;
	char		 user[128];
	char		 buf[4096];
	size_t		 len;
	int		 busy, eof, tty, waited;
	struct event	*ev, *wait;
} chat;

static void	chat_next(void);

static void
chat_prompt(void)
{
	if (chat.tty) {
		fputs("> ", stdout);
		fflush(stdout);
	}
}

static void
chat_quit(void)
{
	event_del(chat.ev);
	event_free(chat.ev);
	event_free(chat.wait);
	staff_stop();
	fetch_stop();
	outbox_free();
	smsout_free();
	channel_flush();
	rds_stop();
	conv_shutdown();
	event_base_loopexit(gw.base, NULL);
}

static void
chat_reply_cb(int status, json_t *replies, int end, const char *cause, void *arg)
{
	size_t i, j, n;
	json_t *r;
	char **parts;

	chat.busy = 0;
	if (status == CONV_DUP)
		printf("(duplicate)\n");
	else if (status != CONV_OK)
		printf("(error: %s)\n", cause ? cause : "unknown");
	json_array_foreach(replies, i, r) {
		n = channel_render(chat.channel, json_string_value(r), &parts);
		if (n == 0)
			printf("%s\n", json_string_value(r));
		for (j = 0; j < n; j++)
			printf("%s%s\n", n > 1 ? "+ " : "", parts[j]);
		text_free_parts(parts, n);
		printf("\n");
	}
	if (end && chat.channel->sessions_end)
		printf("(session ended)\n");
	fflush(stdout);
	chat_next();
}

/* Send the next complete line, if any and if nothing is in flight. */
static void
chat_next(void)
{
	char *nl, *line;
	struct conv_msg m;

	if (chat.busy || !rds_ready())
		return;
	nl = memchr(chat.buf, '\n', chat.len);
	if (nl == NULL && chat.eof && chat.len > 0)
		nl = chat.buf + chat.len;	/* last line without a newline */
	if (nl == NULL) {
		if (chat.eof)
			chat_quit();
		else
			chat_prompt();
		return;
	}
	line = xstrndup(chat.buf, (size_t)(nl - chat.buf));
	if (nl < chat.buf + chat.len)
		nl++;
	chat.len -= (size_t)(nl - chat.buf);
	memmove(chat.buf, nl, chat.len);
	if (*line == '\0' || !text_utf8_valid(line, strlen(line))) {
		if (*line != '\0')
			printf("(not valid UTF-8; ignored)\n");
		free(line);
		chat_next();
		return;
	}
	memset(&m, 0, sizeof m);
	m.channel = chat.channel->name;
	m.user = chat.user;
	m.text = line;
	chat.busy = 1;
	conv_handle(&m, chat_reply_cb, NULL);
	free(line);
}

static void
chat_read_cb(evutil_socket_t fd, short events, void *arg)
{
	ssize_t n;

	if (chat.len == sizeof chat.buf) {
		printf("(line too long; dropped)\n");
		chat.len = 0;
	}
	n = read(fd, chat.buf + chat.len, sizeof chat.buf - chat.len);
	if (n <= 0) {
		chat.eof = 1;
		event_del(chat.ev);
	} else
		chat.len += (size_t)n;
	chat_next();
}

/* Wait for Redis before the first line; give up after the Redis timeout x 5. */
static void
chat_wait_cb(evutil_socket_t fd, short events, void *arg)
{
	struct timeval tv = { 0, 50000 };

	if (rds_ready()) {
		chat_next();
		return;
	}
	if (++chat.waited * 50 > gw.cfg->redis_timeout_ms * 5) {
		fprintf(stderr, "dvcgw chat: %s\n", rds_error());
		chat.eof = 1;
		chat.len = 0;
		chat_quit();
		return;
	}
	evtimer_add(chat.wait, &tv);
}

static int
cmd_chat(struct config *cfg, int argc, char **argv)
{
	const char *channel = opt.channel, *user = opt.user;
	struct flowset *fs;
	char *cause = NULL;
	struct timeval tv = { 0, 0 };

	if (channel == NULL || user == NULL)
		usage();
	if ((chat.channel = channel_find(channel)) == NULL || chat.channel->outbound_only) {
		char names[128] = "";
		size_t i;

		for (i = 0; i < channel_count(); i++)
			if (!channel_at(i)->outbound_only)
				snprintf(names + strlen(names), sizeof names - strlen(names),
				    "%s%s", *names ? ", " : "", channel_at(i)->name);
		fprintf(stderr, "dvcgw chat: --channel must be one of %s\n", names);
		return 2;
	}
	if (chat.channel->user(user, chat.user, sizeof chat.user, &cause) != 0) {
		fprintf(stderr, "dvcgw chat: --user: %s\n", cause);
		free(cause);
		return 2;
	}
	if ((fs = load_flows(cfg)) == NULL)
		return 1;
	chat.tty = isatty(0);
	gw_setup(cfg, fs);
	chat.ev = event_new(gw.base, 0, EV_READ | EV_PERSIST, chat_read_cb, NULL);
	chat.wait = evtimer_new(gw.base, chat_wait_cb, NULL);
	event_add(chat.ev, NULL);
	evtimer_add(chat.wait, &tv);
	if (chat.tty)
		printf("dvcgw chat: %s as %s; type MENU to start, Ctrl-D to quit\n", channel,
		    chat.user);
	event_base_dispatch(gw.base);
	event_base_free(gw.base);
	return 0;
}

static int
cmd_import(struct config *cfg, int argc, char **argv)
{
	return store_import(cfg, argv[0]);
}

static int
cmd_outbox(struct config *cfg, int argc, char **argv)
{
	return outbox_cli(cfg, argc, argv);
}

static int
cmd_otp(struct config *cfg, int argc, char **argv)
{
	return otp_cli(cfg, opt.token, argc, argv);
}

static int
cmd_user(struct config *cfg, int argc, char **argv)
{
	return staff_cli(cfg, opt.role, argc, argv);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "channel", required_argument, NULL, 'C' },
		{ "user", required_argument, NULL, 'u' },
		{ "token", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ "role", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const struct cmd_entry *cmd = &cmd_table[0];
	const char *conf = "config/dvcgw.json";
	struct config *cfg;
	size_t i;
	int ch, rc;

	if (sodium_init() < 0)
		fatalx("libsodium cannot start");
	if (argc > 1 && argv[1][0] != '-') {
		for (cmd = NULL, i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++)
			if (strcmp(cmd_table[i].name, argv[1]) == 0)
				cmd = &cmd_table[i];
		if (cmd == NULL)
			usage();
		argc--;
		argv++;
	}
	while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': conf = optarg; break;
		case 'C': opt.channel = optarg; break;
		case 'u': opt.user = optarg; break;
		case 'T': opt.token = optarg; break;
		case 'r': opt.role = optarg; break;
		case 'h': usage_to(stdout, 0);
		default: usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < cmd->min || (cmd->max >= 0 && argc > cmd->max))
		usage();
	cfg = load_config(conf);
	rc = cmd->fn(cfg, argc, argv);
	rkey_free();
	config_free(cfg);
	return rc;
}
