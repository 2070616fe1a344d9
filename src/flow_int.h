/* flow_int.h: the flow engine's insides, shared by flow_load.c (loading and validation),
 * flow_tmpl.c (templates) and flow.c (stepping). Nothing outside those three files includes it. */
#ifndef DVCGW_FLOW_INT_H
#define DVCGW_FLOW_INT_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "flow.h"

/* One piece of a template: literal text, the name of a variable filled at run time, or the start or
 * end of a conditional section ({{#name}}...{{/name}}: shown only when name is set, non-empty). */
struct flow_tmpl_seg {
	char	*s;
	size_t	 len;
	int	 var;
#define FLOW_SEG_TEXT	0
#define FLOW_SEG_VAR	1
#define FLOW_SEG_IF	2
#define FLOW_SEG_END	3
};

/* A compiled reply: set-only variables already substituted, run-time ones left as segments. */
struct flow_tmpl {
	struct flow_tmpl_seg	*segs;
	size_t			 n;
};

/* A growing NUL-terminated string that templates render into. */
struct flow_buf {
	char	*p;
	size_t	 len;
	size_t	 size;
};

/* A state's or a global keyword's "capture": what free text it takes, where it goes, what runs. */
struct flow_capture {
	regex_t				 re;
	int				 has_re;
	char				*var;
	const struct flow_action	*action;	/* NULL: none */
	int				 next;
};

/* One numbered choice of a state. */
struct flow_option {
	char		*key;
	int		 next;
	unsigned	 hide;		/* bit per variant (flow_variant) it is not offered on */
};

/* A folded keyword, spaces removed, that picks option idx (in a state) or global keyword idx. */
struct flow_keyword {
	char	*ns;
	size_t	 idx;
	char	*sp;		/* "anywhere" keywords: the fold with its spaces, else NULL */
};

/* A text exists once per variant: [0] the flows' plain wording, [1 + i] as channel i (flowset.chans)
 * shows it, with that channel's "channels" overrides. */
#define FLOW_VARIANTS	(FLOW_LIMITS_MAX + 1)

/* A reply built from data that does not fit its channel is built again with the data shortened:
 * the procedure's name to 100 characters, then 80, 60, 40. */
#define FLOW_SQUEEZE_MAX	4
#define FLOW_SQUEEZE_FIRST	100
#define FLOW_SQUEEZE_STEP	20

struct flow_state {
	char			*name;
	size_t			 flow;		/* index in flowset.flows */
	int			 end;
	struct flow_tmpl	 reply[FLOW_VARIANTS];	/* message, options and footer */
	struct flow_option	*opts;
	size_t			 nopts;
	struct flow_keyword	*words;		/* the options' keywords */
	size_t			 nwords;
	struct flow_capture	*cap;
	const struct flow_action *enter;	/* "action": runs each time the state is shown */
};

/* An entry of a file's top-level "keywords": works in every state. */
struct flow_global_keyword {
	int			 go;		/* -1 when none */
	int			 back;
	struct flow_capture	*cap;
};

/* One flow (one file): its name and idle timeout. */
struct flow_def {
	char	*name;
	int64_t	 idle;
};

/* A state's name and index, for bsearch. */
struct flow_byname {
	const char	*name;
	int		 idx;
};

/* The set's texts (the "texts" object of the files). */
enum {
	TEXT_INVALID_CHOICE,
	TEXT_FOOTER,
	TEXT_DOSSIER_FOUND,
	TEXT_DOSSIER_NOT_FOUND,
	TEXT_DOSSIER_INVALID,
	TEXT_SESSION_EXPIRED,	/* optional: first line after an idle restart */
	TEXT_OTP_LIVE,
	TEXT_OTP_NONE,
	TEXT_OTP_UNLINKED,
	TEXT_OTP_RESENT,
	TEXT_OTP_LIMITED,
	TEXT_LINK_SENT,
	TEXT_LINK_INVALID,
	TEXT_LINK_ZALO_ONLY,
	TEXT_LINK_DONE,
	TEXT_LINK_WRONG,
	TEXT_LINK_DEAD,
	TEXT_LINK_NONE,
	TEXT_UNLINK_DONE,
	TEXT_UNLINK_NONE,
	TEXT_FOLLOW_OK,
	TEXT_FOLLOW_FULL,
	TEXT_UNFOLLOW_OK,
	TEXT_STATUS_CHANGED,	/* optional: a follower's notification (notify.c) */
	TEXT_DOSSIER_PENDING,	/* optional: the one-stop backend is slow (store_onestop.c) */
	TEXT_DOSSIER_UNAVAILABLE, /* optional: the one-stop backend is down */
	TEXT_COUNT
};

struct flowset {
	struct flow_def			*flows;
	size_t				 nflows;
	struct flow_state		*states;
	size_t				 nstates;
	struct flow_byname		*byname;	/* sorted by name */
	int				 start;
	struct flow_global_keyword	*kws;
	size_t				 nkws;
	struct flow_keyword		*kwords;	/* the global keywords' match words */
	size_t				 nkwords;
	int				 argkw;		/* some keyword takes an argument */
	char				**fillers;	/* folded words ignored at the input's end */
	size_t				 nfillers;
	json_t				*vars;		/* set vars: files merged, config on top */
	char				*chans[FLOW_LIMITS_MAX];	/* channel names */
	size_t				 nchans;
	struct flow_tmpl		 texts[FLOW_VARIANTS][TEXT_COUNT];
	size_t				 fit_segments[FLOW_VARIANTS];	/* per variant: SMS
								 * segments, 0: not counted */
	int				 have[FLOW_VARIANTS][TEXT_COUNT];
};

/* An action run on a captured value (the table is in flow.c). Returns 0 with its variables in out,
 * or 1 after flow_need when the caller must fetch something first (res->need). */
struct flow_action {
	const char	*name;
	const char	*output;	/* the variable it sets */
	unsigned	 texts;		/* bit per text it needs */
	int		 flags;
#define FLOW_ACTION_ENTER	0x1	/* a state's "action" (no value), not a capture's */
#define FLOW_ACTION_SECRET	0x2	/* the captured value is not kept in the session */
	int		(*fn)(const struct flowset *, const struct flow_input *, const char *,
			    const json_t *, json_t *, struct flow_result *);
	int		 squeezes;	/* can shorten its variables (res->squeeze) to fit */
};

/* flow.c */
const struct flow_action *flow_action_find(const char *);
size_t		 flow_variant(const struct flowset *, const char *);
const struct flow_action *flow_action_needing(unsigned);
int		 flow_cmp_byname(const void *, const void *);

/* flow_tmpl.c */
void		 flow_tmpl_buf_add(struct flow_buf *, const char *, size_t);
void		 flow_tmpl_buf_adds(struct flow_buf *, const char *);
int		 flow_tmpl_var_name(const char *);
void		 flow_tmpl_literal(struct flow_tmpl *, const char *, size_t);
void		 flow_tmpl_var(struct flow_tmpl *, const char *);
void		 flow_tmpl_append(struct flow_tmpl *, const struct flow_tmpl *);
void		 flow_tmpl_clear(struct flow_tmpl *);
void		 flow_tmpl_compile(struct flow_tmpl *, const char *, const char *const *,
		    const json_t *, const json_t *, json_t *, json_t *);
void		 flow_tmpl_render(struct flow_buf *, const struct flow_tmpl *,
		    const json_t *const *, size_t);

#endif
