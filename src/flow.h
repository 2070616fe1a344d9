/* flow.h: the conversation engine. Pure: (flow set, session, input) -> (session, replies, need).
 * No I/O apart from reading the flow files in flowset_load. The schema is in flows/README.md. */
#ifndef DVCGW_FLOW_H
#define DVCGW_FLOW_H

#include <jansson.h>
#include <stdint.h>

struct flowset;				/* opaque, immutable once loaded: share it freely */

struct flow_limits {
	size_t	sms_chars;		/* longest message (after unaccenting) an SMS reply may carry */
	size_t	zalo_chars;		/* longest Zalo message (2000) */
};

/* Load and validate every *.json file in dir. vars (may be NULL, borrowed) overrides the files' "vars".
 * On success returns the set and *errors is NULL. On any problem returns NULL and *errors is a new JSON
 * array of strings "FILE: STATE: problem" (or "FILE: problem"), every problem found, not just the first. */
struct flowset	*flowset_load(const char *dir, const json_t *vars, const struct flow_limits *lim,
		    json_t **errors);
void		 flowset_free(struct flowset *);
const char	*flowset_start(const struct flowset *);	/* name of the start state */
size_t		 flowset_nstates(const struct flowset *);

struct flow_input {
	const char	*text;		/* valid UTF-8 as the user sent it */
	const char	*channel;	/* "sms", "ussd", "zalo" */
	const char	*user;		/* canonical phone (84...) or channel user id; NULL if unknown */
	int64_t		 now;		/* unix seconds */
	const char	*today;		/* "YYYY-MM-DD" in the deployment's time zone (for "quá hạn") */
	/* Dossier prefetched by the caller: code is the normalised code that was looked up, dossier the
	 * object (borrowed), or NULL with code set when it does not exist. code NULL: nothing fetched. */
	const char	*lookup_code;
	const json_t	*lookup_dossier;
};

struct flow_result {
	json_t	*replies;		/* new array of reply strings (UTF-8 with diacritics) */
	int	 end;			/* the conversation reached a terminal state (USSD answers END) */
	/* Set when a lookup_dossier action needs a dossier the caller did not prefetch: the caller fetches
	 * need_lookup (normalised code) and calls flow_step again with the same session and input. The
	 * session is left unchanged and replies is NULL in that case. */
	char	 need_lookup[64];
};

/* Run one input through the flows. session is a JSON object owned by the caller and updated in place
 * ({} or a value from a previous step; its layout is the engine's business). Returns 0, or -1 with
 * *cause on an impossible state (a session naming a state that no longer exists is NOT an error: the
 * user is returned to the start state). */
int		 flow_step(const struct flowset *, json_t *session, const struct flow_input *,
		    struct flow_result *, char **cause);
void		 flow_result_clear(struct flow_result *);

#endif
