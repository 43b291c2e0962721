/*
 * policy.h - what counts, whose it is, what fits: plain C, no libmilter
 *
 * The milter callbacks gather facts about a message into a struct
 * policy_msg and ask these functions; they only translate the answers
 * into milter replies. Tests drive this module directly.
 */
#ifndef QM_POLICY_H
#define QM_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "../conf/conf.h"
#include "../counters/counters.h"

#define POLICY_HEADER_MAX	4096	/* longest header value kept */
#define POLICY_HEADERS_MAX	64	/* most interesting headers kept */

/* A header the policy looks at (account or category header). */
struct policy_header {
	char   *name;
	char   *value;			/* leading/trailing blanks removed */
};

/* What is known of a message so far. */
struct policy_msg {
	const struct sockaddr *client;	/* SMTP client; NULL if unknown */
	const char *sasl;		/* {auth_authen}; NULL or "" if none */
	const char *sender;		/* envelope sender without <>; "" null sender */
	const char *daemon;		/* {daemon_name}; NULL if unknown */
	bool	local;			/* submitted on the MTA host (policy_local()) */
	const struct policy_header *headers;	/* NULL before end of headers */
	size_t	header_count;
	bool	headers_truncated;	/* an interesting header was dropped */
};

#define POLICY_CLASS_NONE	(-1)	/* no category: not counted */
#define POLICY_CLASS_LATER	(-2)	/* depends on headers not seen yet */

/*
 * policy_classify - index of the first category whose matchers all hold,
 * POLICY_CLASS_NONE, or (when msg->headers is NULL and a header matcher
 * decides) POLICY_CLASS_LATER.
 */
int	policy_classify(const struct qm_conf *conf, const struct policy_msg *msg);

/*
 * policy_header_slot - for the account header or a category header, a
 * number in 0..conf->category_count shared by every spelling of that name
 * (the index of the first category naming it, or category_count for the
 * account header alone); -1 for any other header. These are the headers
 * the policy reads and strip_headers removes.
 */
int	policy_header_slot(const struct qm_conf *conf, const char *name);

/* policy_slot_header - the header name of a slot, or NULL */
const char *policy_slot_header(const struct qm_conf *conf, int slot);

/*
 * policy_local - is a connection the MTA's own submission on its host?
 * Postfix's non_smtpd_milters (sendmail(1), pickup) present a made-up
 * client "localhost" at 127.0.0.1 port 0; a real SMTP client never has
 * port 0. Such mail sees no RCPT-stage refusal, and names an account in a
 * header only with trust_local_submissions.
 */
bool	policy_local(const char *hostname, const struct sockaddr *addr);

/* policy_account_early - is the account known before DATA (sasl, sender-domain)? */
bool	policy_account_early(const struct qm_conf *conf);

/* What a conf needs of the MTA: the events it reads, the replies that may refuse. */
struct policy_needs {
	bool	headers;		/* an account or category header is read */
	bool	strip;			/* and removed: uncounted mail is followed too */
	bool	rcpt;			/* recipients are counted or refused */
	bool	rcpt_reply;		/* RCPT may refuse (account at MAIL, enforce) */
	bool	mail_reply;		/* MAIL may let uncounted mail pass, RCPT does not */
};

/* policy_needs - what the conf needs of the MTA for every message */
struct policy_needs policy_needs(const struct qm_conf *conf);

enum policy_account {
	POLICY_ACCOUNT_OK,
	POLICY_ACCOUNT_NONE,		/* no account in the message */
	POLICY_ACCOUNT_BAD,		/* fails account_valid() */
	POLICY_ACCOUNT_UNTRUSTED,	/* header from a client not trusted to name one */
	POLICY_ACCOUNT_CONFLICT		/* two different account headers */
};

/*
 * policy_account - find the sending account. On POLICY_ACCOUNT_OK the id
 * is in out (QM_ACCOUNT_MAX + 1 bytes); otherwise *reason says why, as a
 * fixed string that never contains message data.
 */
enum policy_account policy_account(const struct qm_conf *conf, const struct policy_msg *msg,
		char *out, const char **reason);

/* policy_account_reply - the reply for an account result other than OK */
enum qm_reply_id policy_account_reply(enum policy_account result);

/*
 * policy_status_reply - the reply for a refused quota status. `race` is
 * true when the recipients were accepted at RCPT stage and the quota ran
 * out before end of message (another host took it): 451, retry decides.
 * Returns QM_REPLY_COUNT for statuses that are not refusals.
 */
enum qm_reply_id policy_status_reply(enum qm_status status, bool race);

/*
 * policy_rcpt_decides - does enforce mode decide a message of category
 * (from the envelope) recipient by recipient? Only with an account known
 * before DATA, and not for a local submission (no RCPT refusals there).
 */
bool	policy_rcpt_decides(const struct qm_conf *conf, int category, bool local);

/* policy_rcpt_units - units one more recipient costs after `accepted` */
long long policy_rcpt_units(const struct qm_conf *conf, long long accepted);

/* policy_message_units - units a whole message with nrcpt recipients costs */
long long policy_message_units(const struct qm_conf *conf, long long nrcpt);

/*
 * The room a peeked quota leaves: how many more units fit the month and
 * every capped window (struct qm_window with a cap >= 0) at once, and the
 * status that refuses a unit beyond. On a tie the month binds, then the
 * day, then the hour: the order in which quota.lua decides.
 */
struct policy_room {
	long long units;		/* units that still fit (0 or more); LLONG_MAX: no limit */
	enum qm_status beyond;		/* QM_STATUS_EXHAUSTED, _DAILY_CAP or _HOURLY_CAP;
					 * QM_STATUS_OK when nothing limits */
};

/* policy_room - the room q leaves with `reserved` units already promised */
struct policy_room policy_room(const struct qm_quota *q, long long reserved);

/*
 * policy_fits - do `more` units fit the peeked quota q (the month and
 * every capped window), with `reserved` units already promised to earlier
 * recipients of this message?
 */
bool	policy_fits(const struct qm_quota *q, long long reserved, long long more);

/*
 * policy_far_from_limit - does q (status ok) let `more` units fit with
 * `reserved` promised and still leave a tenth of its limit, at least
 * POLICY_FAR_MIN units, in the month and in every capped window? Then a
 * quota under a second old may accept a recipient without a peek at
 * Redis: the rest of the fleet is unlikely to send that much within the
 * second, and the charge at end of message still refuses what does not
 * fit (451, retried).
 */
#define POLICY_FAR_MIN	100
bool	policy_far_from_limit(const struct qm_quota *q, long long reserved, long long more);

/*
 * policy_status_window - the window a cap status speaks of (&q->day for
 * QM_STATUS_DAILY_CAP, &q->hour for QM_STATUS_HOURLY_CAP), else NULL
 */
const struct qm_window *policy_status_window(const struct qm_quota *q, enum qm_status status);

/* Values a reply template may use. NULL strings print as "-". */
struct policy_vars {
	const char *account;
	const char *plan;
	const char *category;
	const char *header;
	const char *reason;
	const char *window;		/* a cap's window, "2026-12-03T14" */
	const char *retry_after;	/* when it reopens, "15:00 UTC" */
	long long limit;		/* QM_UNLIMITED prints "unlimited" */
	long long used;
};

/*
 * policy_quota_vars - the reply variables a quota status gives: $plan,
 * and for a cap $limit and $used of its window, $window and $retry_after
 * (when the window ends on the clock of months: the hour as "15:00 UTC",
 * the day with its date), written into clock (clocklen bytes); for any
 * other status $limit and $used of the month. The other fields of v are
 * left as they are.
 */
void	policy_quota_vars(struct policy_vars *v, const struct qm_quota *q, enum qm_status status,
		const struct month_table *months, char *clock, size_t clocklen);

/*
 * policy_format_reply - expand a template into buf, safe for
 * smfi_setreply(): '%' becomes "%%", CR, LF and other control bytes
 * become a space, bytes outside ASCII become '?'. The result is always
 * terminated and never ends inside a "%%" pair. Returns its length.
 */
size_t	policy_format_reply(char *buf, size_t len, const char *tmpl,
		const struct policy_vars *vars);

/* policy_sanitize - copy text for a log line: printable ASCII only */
void	policy_sanitize(char *buf, size_t len, const char *text);

#endif
