/* flow.h: the conversation engine. Pure: (flow set, session, input) -> (session, replies, need).
 * No I/O apart from reading the flow files in flowset_load. The schema is in flows/README.md.
 *
 * Data from outside (a dossier, a phone's OTP, a Zalo link; later subscriptions, a backend answer)
 * is never fetched by the engine, and what an action does outside (resend a code, send a link code,
 * check one) is such a fetch too: an action that needs it sets result.need {kind, key} and leaves
 * the session alone; the caller fetches it and runs the same step again with it in input.data, repeating until
 * need.kind is FLOW_DATA_NONE, at most FLOW_DATA_MAX fetches per turn. A new kind is one enum entry
 * here, its action in flow.c and one entry (with its fetch function) in conv.c's conv_sources[]. */
#ifndef DVCGW_FLOW_H
#define DVCGW_FLOW_H

#include <jansson.h>
#include <stdint.h>

struct flowset;				/* opaque, immutable once loaded: share it freely */

/* The channels, from the channel table: the longest message each can carry (every state's message,
 * rendered for that channel with its options and footer and unaccented, must fit it) and the name
 * the flows' "channels" overrides use for it (flow_input.channel). An entry without a name only
 * limits the flows' own wording; an entry with max_chars 0 only names a channel. */
#define FLOW_LIMITS_MAX 8
struct flow_limits {
	size_t	n;
	struct {
		const char	*what;		/* "an SMS reply", for the problem sentence */
		size_t		 max_chars;	/* 0: no limit */
		size_t		 max_segments;	/* SMS segments after unaccenting, 0: not counted */
		const char	*channel;	/* its name ("sms"), or NULL */
	} lim[FLOW_LIMITS_MAX];
};

/* Load and validate every *.json file in dir. vars (may be NULL, borrowed) overrides the files' "vars";
 * each of its names must be declared in some file's "vars" or used by some message (else an error).
 * On success returns the set and *errors is NULL. On any problem returns NULL and *errors is a new JSON
 * array of strings "FILE: STATE: problem" (or "FILE: problem"), every problem found, not just the first. */
struct flowset	*flowset_load(const char *dir, const json_t *vars, const struct flow_limits *lim,
		    json_t **errors);
void		 flowset_free(struct flowset *);
const char	*flowset_start(const struct flowset *);	/* name of the start state */
size_t		 flowset_nstates(const struct flowset *);

/* What an action can ask the caller to fetch. */
enum flow_data_kind {
	FLOW_DATA_NONE,			/* nothing */
	FLOW_DATA_DOSSIER,		/* key: normalised dossier code; value: the dossier object */
	FLOW_DATA_OTP_STATUS,		/* key: phone; value: {"live", ...} (otp_conv_status) */
	FLOW_DATA_OTP_RESEND,		/* key: phone; value: {"status", ...} (otp_conv_resend) */
	FLOW_DATA_LINK_START,		/* key: "phone zalo_user"; value: {"status", ...} */
	FLOW_DATA_LINK_CHECK,		/* key: "zalo_user code"; value: {"status", ...} */
	FLOW_DATA_UNLINK,		/* key: zalo_user; value: {"status", ...} (link_remove) */
	FLOW_DATA_FOLLOW,		/* key: a dossier code; fetching it follows the dossier;
					 * value: {code, full} */
	FLOW_DATA_UNFOLLOW,		/* the same, stops following */
};

#define FLOW_DATA_KEY_MAX	64	/* bytes of a key, NUL included */
#define FLOW_DATA_MAX		4	/* fetches one turn may do, so that a flow cannot loop */

/* One piece of data the caller fetched for this turn. */
struct flow_data {
	enum flow_data_kind	 kind;
	const char		*key;
	const json_t		*value;		/* borrowed; NULL: it does not exist */
};

/* What the caller must fetch before the step can finish. */
struct flow_need {
	enum flow_data_kind	 kind;		/* FLOW_DATA_NONE: nothing */
	char			 key[FLOW_DATA_KEY_MAX];
};

struct flow_input {
	const char		*text;		/* valid UTF-8 as the user sent it */
	const char		*channel;	/* "sms", "ussd", "zalo": picks the flows'
						 * "channels" overrides; NULL or a name the
						 * set was not loaded with: the plain texts */
	const char		*user;		/* canonical phone (84...) or channel user id; NULL
						 * if unknown */
	const char		*phone;		/* the phone the sender is proven to own: on
						 * "zalo" the linked one; NULL: none, or user
						 * when the channel is not "zalo" */
	int64_t			 now;		/* unix seconds */
	const char		*today;		/* "YYYY-MM-DD" in the deployment's time zone (for
						 * "quá hạn") */
	/* What the caller fetched so far this turn (asked for by result.need, or prefetched because
	 * the text names it): ndata entries, borrowed, none when ndata is 0. */
	const struct flow_data	*data;
	size_t			 ndata;
};

struct flow_result {
	json_t			*replies;	/* new array of reply strings (UTF-8 with diacritics) */
	int			 end;		/* the conversation reached a terminal state (USSD
						 * answers END) */
	/* Set (kind not FLOW_DATA_NONE) when an action needs data that is not in input.data: the
	 * caller fetches need.key of need.kind, adds it to input.data (value NULL when it does not
	 * exist) and calls flow_step again with the same session. The session is left unchanged and
	 * replies is NULL in that case. */
	struct flow_need	 need;
	int			 squeeze;	/* set by flow_step for an action it runs again to
						 * make the reply fit: how much to shorten (0: not) */
};

/* Run one input through the flows. session is a JSON object owned by the caller and updated in place
 * ({} or a value from a previous step; its layout is the engine's business). Returns 0, or -1 with
 * *cause on an impossible state (a session naming a state that no longer exists is NOT an error: the
 * user is returned to the start state). */
int		 flow_step(const struct flowset *, json_t *session, const struct flow_input *,
		    struct flow_result *, char **cause);
void		 flow_result_clear(struct flow_result *);

/* A dossier's status notification (texts.dossier_status_changed) for channel with the dossier's
 * variables (dossier_vars): xmalloc'd, or NULL when the set has no such text. */
char		*flow_render_notice(const struct flowset *, const char *channel, const json_t *vars);

#endif
