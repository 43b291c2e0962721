/*
 * policy.c - classification, account extraction, fit and reply texts
 *
 * Nothing here talks to the MTA or to Redis: every function reads the
 * immutable conf and the facts gathered about one message.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../counters/keys.h"
#include "policy.h"

/* header_holds - does any occurrence of the header satisfy the matcher? */
static bool
header_holds(const struct qm_category *cat, const struct policy_msg *msg)
{
	size_t	i;

	for (i = 0; i < msg->header_count; i++) {
		const struct policy_header *h = &msg->headers[i];

		if (strcasecmp(h->name, cat->header) != 0)
			continue;
		if (!cat->has_match || regexec(&cat->match, h->value, 0, NULL, 0) == 0)
			return true;
	}
	return false;
}

/* envelope_holds - do the matchers known before DATA all hold? */
static bool
envelope_holds(const struct qm_category *cat, const struct policy_msg *msg)
{
	const char *sasl = msg->sasl ? msg->sasl : "";
	const char *sender = msg->sender ? msg->sender : "";

	if (cat->has_sasl && (*sasl == 0 || regexec(&cat->sasl, sasl, 0, NULL, 0) != 0))
		return false;
	if (cat->has_sender && regexec(&cat->sender, sender, 0, NULL, 0) != 0)
		return false;
	if (cat->client.count > 0
	    && (msg->client == NULL || !cidr_match_sockaddr(&cat->client, msg->client)))
		return false;
	if (cat->daemon != NULL
	    && (msg->daemon == NULL || strcmp(cat->daemon, msg->daemon) != 0))
		return false;
	return true;
}

/* has_envelope_matcher - does the category have a matcher known before DATA? */
static bool
has_envelope_matcher(const struct qm_category *cat)
{
	return cat->has_sasl || cat->has_sender || cat->client.count > 0 || cat->daemon != NULL;
}

/* policy_classify - first category whose matchers all hold */
int
policy_classify(const struct qm_conf *conf, const struct policy_msg *msg)
{
	size_t	i;

	for (i = 0; i < conf->category_count; i++) {
		const struct qm_category *cat = &conf->categories[i];

		if (!envelope_holds(cat, msg))
			continue;
		if (cat->header == NULL)
			return (int) i;
		if (msg->headers == NULL)
			return POLICY_CLASS_LATER;
		if (header_holds(cat, msg))
			return (int) i;
	}
	return POLICY_CLASS_NONE;
}

/* policy_header_slot - which account/category header this is, or -1 */
int
policy_header_slot(const struct qm_conf *conf, const char *name)
{
	size_t	i;

	for (i = 0; i < conf->category_count; i++)
		if (conf->categories[i].header != NULL
		    && strcasecmp(name, conf->categories[i].header) == 0)
			return (int) i;
	if (conf->account.header != NULL && strcasecmp(name, conf->account.header) == 0)
		return (int) conf->category_count;
	return -1;
}

/* policy_slot_header - the header name of a slot, or NULL */
const char *
policy_slot_header(const struct qm_conf *conf, int slot)
{
	if (slot < 0 || (size_t) slot > conf->category_count)
		return NULL;
	if ((size_t) slot == conf->category_count)
		return conf->account.header;
	return conf->categories[slot].header;
}

/* policy_account_early - is the account known before DATA? */
bool
policy_account_early(const struct qm_conf *conf)
{
	return conf->account.source != QM_SOURCE_HEADER;
}

/*
 * policy_needs - what the conf needs of the MTA. A category with no
 * envelope matcher stops policy_classify() before the headers, whatever
 * the envelope: then no mail passes at MAIL.
 */
struct policy_needs
policy_needs(const struct qm_conf *conf)
{
	struct policy_needs n = { .headers = conf->account.source == QM_SOURCE_HEADER };
	bool	mail_may_pass = true;
	size_t	i;

	for (i = 0; i < conf->category_count; i++) {
		n.headers |= conf->categories[i].header != NULL;
		mail_may_pass &= has_envelope_matcher(&conf->categories[i]);
	}
	n.strip = n.headers && conf->account.strip_headers;
	n.rcpt_reply = policy_account_early(conf) && conf->mode == QM_MODE_ENFORCE;
	n.rcpt = n.rcpt_reply || conf->unit == QM_UNIT_RECIPIENTS;
	n.mail_reply = mail_may_pass && !n.rcpt_reply;
	return n;
}

/* policy_rcpt_decides - are this message's recipients decided one by one? */
bool
policy_rcpt_decides(const struct qm_conf *conf, int category, bool local)
{
	return policy_account_early(conf) && category >= 0 && !local;
}

/* policy_local - the MTA's own submission on its host */
bool
policy_local(const char *hostname, const struct sockaddr *addr)
{
	return addr != NULL && addr->sa_family == AF_INET
	    && ((const struct sockaddr_in *) addr)->sin_port == 0
	    && ntohl(((const struct sockaddr_in *) addr)->sin_addr.s_addr) == INADDR_LOOPBACK
	    && hostname != NULL && strcmp(hostname, "localhost") == 0;
}

/* login_trusted - is a SASL login in trusted_logins? */
static bool
login_trusted(const struct qm_account_conf *acc, const char *login)
{
	for (size_t i = 0; i < acc->login_count; i++) {
		const struct qm_login *l = &acc->logins[i];

		if (l->name != NULL ? strcmp(l->name, login) == 0
		    : regexec(&l->rx, login, 0, NULL, 0) == 0)
			return true;
	}
	return false;
}

/*
 * client_trusted - may this client name an account in a header? An
 * authenticated client when its login is in trusted_logins (wherever it
 * connects from); the MTA's own local submissions with
 * trust_local_submissions; any other client from trusted_networks. NULL,
 * or why not.
 */
static const char *
client_trusted(const struct qm_conf *conf, const struct policy_msg *msg)
{
	if (msg->sasl != NULL && *msg->sasl != 0)
		return login_trusted(&conf->account, msg->sasl) ? NULL
		    : "the SMTP AUTH login is not in trusted_logins";
	if (msg->local)
		return conf->account.trust_local ? NULL
		    : "local submission, trust_local_submissions is off";
	if (msg->client != NULL && cidr_match_sockaddr(&conf->account.trusted, msg->client))
		return NULL;
	return "client is outside trusted_networks and not authenticated";
}

/*
 * header_account - the one value of the account header. Any account
 * header from an untrusted client is refused first; two occurrences with
 * the same value are one declaration, different values conflict.
 */
static enum policy_account
header_account(const struct qm_conf *conf, const struct policy_msg *msg,
	       const char **value, const char **reason)
{
	size_t	i;
	bool	conflict = false;

	*value = NULL;
	for (i = 0; i < msg->header_count; i++) {
		const struct policy_header *h = &msg->headers[i];

		if (strcasecmp(h->name, conf->account.header) != 0)
			continue;
		if (*value != NULL && strcmp(*value, h->value) != 0)
			conflict = true;
		if (*value == NULL)
			*value = h->value;
	}
	if (msg->headers_truncated) {
		*reason = "account or category headers too long or too many";
		return POLICY_ACCOUNT_BAD;
	}
	if (*value == NULL) {
		*reason = "no account header";
		return POLICY_ACCOUNT_NONE;
	}
	if ((*reason = client_trusted(conf, msg)) != NULL)
		return POLICY_ACCOUNT_UNTRUSTED;
	if (conflict) {
		*reason = "more than one account header";
		return POLICY_ACCOUNT_CONFLICT;
	}
	return POLICY_ACCOUNT_OK;
}

/* sender_domain - the domain of the envelope sender, or NULL */
static const char *
sender_domain(const char *sender)
{
	const char *at;

	if (sender == NULL || (at = strrchr(sender, '@')) == NULL || at[1] == 0)
		return NULL;
	return at + 1;
}

/* policy_account - find and validate the sending account */
enum policy_account
policy_account(const struct qm_conf *conf, const struct policy_msg *msg,
	       char *out, const char **reason)
{
	const char *value = NULL;
	const char *why;
	char	buf[POLICY_HEADER_MAX + 1];
	regmatch_t m[2];
	size_t	len;
	enum policy_account res;

	*out = 0;
	switch (conf->account.source) {
	case QM_SOURCE_HEADER:
		if (msg->headers == NULL) {
			*reason = "no account header";
			return POLICY_ACCOUNT_NONE;
		}
		if ((res = header_account(conf, msg, &value, reason)) != POLICY_ACCOUNT_OK)
			return res;
		break;
	case QM_SOURCE_SASL:
		value = msg->sasl;
		if (value == NULL || *value == 0) {
			*reason = "client is not authenticated";
			return POLICY_ACCOUNT_NONE;
		}
		break;
	case QM_SOURCE_SENDER_DOMAIN:
		if ((value = sender_domain(msg->sender)) == NULL) {
			*reason = "envelope sender has no domain";
			return POLICY_ACCOUNT_NONE;
		}
		break;
	}

	if (conf->account.has_pattern) {
		if (regexec(&conf->account.pattern, value, 2, m, 0) != 0 || m[1].rm_so < 0) {
			*reason = "account does not match the account pattern";
			return POLICY_ACCOUNT_NONE;
		}
		len = (size_t) (m[1].rm_eo - m[1].rm_so);
		if (len >= sizeof(buf))
			len = sizeof(buf) - 1;
		memcpy(buf, value + m[1].rm_so, len);
		buf[len] = 0;
		value = buf;
	}
	if (!account_valid(value, &why)) {
		*reason = why;
		return POLICY_ACCOUNT_BAD;
	}
	len = strlen(value);
	memcpy(out, value, len + 1);
	/* Domains are case-insensitive: one account, however it is spelled. */
	if (conf->account.source == QM_SOURCE_SENDER_DOMAIN)
		for (char *cp = out; *cp; cp++)
			*cp = (char) tolower((unsigned char) *cp);
	*reason = "";
	return POLICY_ACCOUNT_OK;
}

/* policy_account_reply - the reply for an account result other than OK */
enum qm_reply_id
policy_account_reply(enum policy_account result)
{
	switch (result) {
	case POLICY_ACCOUNT_BAD:
		return QM_REPLY_BAD_ACCOUNT;
	case POLICY_ACCOUNT_UNTRUSTED:
		return QM_REPLY_UNTRUSTED;
	case POLICY_ACCOUNT_CONFLICT:
		return QM_REPLY_CONFLICT;
	case POLICY_ACCOUNT_NONE:
	case POLICY_ACCOUNT_OK:
		break;
	}
	return QM_REPLY_NO_ACCOUNT;
}

/* policy_status_reply - the reply for a refused quota status */
enum qm_reply_id
policy_status_reply(enum qm_status status, bool race)
{
	switch (status) {
	case QM_STATUS_EXHAUSTED:
		return race ? QM_REPLY_RACE : QM_REPLY_EXHAUSTED;
	case QM_STATUS_NO_MAIL:
		return QM_REPLY_NO_MAIL;
	case QM_STATUS_SUSPENDED:
		return QM_REPLY_SUSPENDED;
	case QM_STATUS_NO_PLAN:
		return QM_REPLY_NO_PLAN;
	case QM_STATUS_UNKNOWN_PLAN:
		return QM_REPLY_UNKNOWN_PLAN;
	case QM_STATUS_UNAVAILABLE:
		return QM_REPLY_UNAVAILABLE;
	case QM_STATUS_DAILY_CAP:
		return QM_REPLY_DAILY_CAP;
	case QM_STATUS_HOURLY_CAP:
		return QM_REPLY_HOURLY_CAP;
	case QM_STATUS_OK:
	case QM_STATUS_OVER:
		break;
	}
	return QM_REPLY_COUNT;
}

/* policy_rcpt_units - units one more recipient costs after `accepted` */
long long
policy_rcpt_units(const struct qm_conf *conf, long long accepted)
{
	if (conf->unit == QM_UNIT_RECIPIENTS)
		return 1;
	return accepted == 0 ? 1 : 0;
}

/* policy_message_units - units a whole message with nrcpt recipients costs */
long long
policy_message_units(const struct qm_conf *conf, long long nrcpt)
{
	return conf->unit == QM_UNIT_RECIPIENTS ? nrcpt : 1;
}

/*
 * window_room - units that still fit a limit (QM_UNLIMITED or below:
 * LLONG_MAX) with used and reserved taken; 0 when none, or when the
 * numbers make no sense (Redis should never give them)
 */
static long long
window_room(long long limit, long long used, long long reserved)
{
	long long room;

	if (limit < 0)
		return LLONG_MAX;
	if (used < 0 || reserved < 0 || __builtin_sub_overflow(limit, used, &room)
	    || __builtin_sub_overflow(room, reserved, &room) || room < 0)
		return 0;
	return room;
}

/* policy_room - the room q leaves with `reserved` units already promised */
struct policy_room
policy_room(const struct qm_quota *q, long long reserved)
{
	const struct {
		long long limit, used;
		enum qm_status beyond;
	} windows[] = {		/* quota.lua's order: the first binds on a tie */
		{ q->limit, q->used, QM_STATUS_EXHAUSTED },
		{ q->day.cap, q->day.used, QM_STATUS_DAILY_CAP },
		{ q->hour.cap, q->hour.used, QM_STATUS_HOURLY_CAP },
	};
	struct policy_room r = { LLONG_MAX, QM_STATUS_OK };
	size_t	i;

	for (i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
		long long room = window_room(windows[i].limit, windows[i].used, reserved);

		if (windows[i].limit >= 0 && (r.beyond == QM_STATUS_OK || room < r.units)) {
			r.units = room;
			r.beyond = windows[i].beyond;
		}
	}
	return r;
}

/* policy_fits - do `more` units fit every window, with `reserved` already promised? */
bool
policy_fits(const struct qm_quota *q, long long reserved, long long more)
{
	return more <= policy_room(q, reserved).units;
}

/*
 * far_from - do `more` units fit a limit with `reserved` promised and
 * leave a tenth of it, at least POLICY_FAR_MIN units?
 */
static bool
far_from(long long limit, long long used, long long reserved, long long more)
{
	long long margin;
	long long need;

	if (limit < 0)
		return true;
	margin = limit / 10 > POLICY_FAR_MIN ? limit / 10 : POLICY_FAR_MIN;
	if (used < 0 || reserved < 0 || more < 0
	    || __builtin_add_overflow(used, reserved, &need)
	    || __builtin_add_overflow(need, more, &need)
	    || __builtin_add_overflow(need, margin, &need))
		return false;
	return need <= limit;
}

/* policy_far_from_limit - far from the month's limit and from every cap? */
bool
policy_far_from_limit(const struct qm_quota *q, long long reserved, long long more)
{
	return q->status == QM_STATUS_OK
	    && far_from(q->limit, q->used, reserved, more)
	    && far_from(q->day.cap, q->day.used, reserved, more)
	    && far_from(q->hour.cap, q->hour.used, reserved, more);
}

/* policy_status_window - the window a cap status speaks of, or NULL */
const struct qm_window *
policy_status_window(const struct qm_quota *q, enum qm_status status)
{
	if (status == QM_STATUS_DAILY_CAP)
		return &q->day;
	if (status == QM_STATUS_HOURLY_CAP)
		return &q->hour;
	return NULL;
}

/* policy_quota_vars - the reply variables of a quota status */
void
policy_quota_vars(struct policy_vars *v, const struct qm_quota *q, enum qm_status status,
		  const struct month_table *months, char *clock, size_t clocklen)
{
	const struct qm_window *w = policy_status_window(q, status);

	v->plan = q->plan[0] ? q->plan : NULL;
	v->limit = q->limit;
	v->used = q->used;
	if (w == NULL)
		return;
	v->limit = w->cap;
	v->used = w->used;
	v->window = w->name[0] ? w->name : NULL;
	if (months != NULL && w->end > 0 && clocklen > 0
	    && month_clock(months, w->end, status == QM_STATUS_DAILY_CAP, clock, clocklen))
		v->retry_after = clock;
}

/* Output of policy_format_reply(): stops at the first byte that does not fit. */
struct reply_out {
	char   *buf;
	size_t	len;
	size_t	pos;
	bool	full;
};

/* put_char - append one output byte, escaped for smfi_setreply */
static void
put_char(struct reply_out *o, unsigned char c)
{
	size_t	need = (c == '%') ? 2 : 1;

	if (o->full || o->pos + need >= o->len) {
		o->full = true;
		return;
	}
	if (c == '%')
		o->buf[o->pos++] = '%';
	else if (c < 0x20 || c == 0x7f)
		c = ' ';
	else if (c > 0x7f)
		c = '?';
	o->buf[o->pos++] = (char) c;
}

/* put_text - append a string, escaped */
static void
put_text(struct reply_out *o, const char *text)
{
	if (text == NULL)
		text = "-";
	while (*text)
		put_char(o, (unsigned char) *text++);
}

/* put_number - append a count, or "unlimited" */
static void
put_number(struct reply_out *o, long long n)
{
	char	num[32];

	if (n == QM_UNLIMITED)
		put_text(o, "unlimited");
	else {
		snprintf(num, sizeof(num), "%lld", n);
		put_text(o, num);
	}
}

/* policy_format_reply - expand a template, safe for smfi_setreply() */
size_t
policy_format_reply(char *buf, size_t len, const char *tmpl,
		    const struct policy_vars *v)
{
	struct reply_out o = { buf, len, 0, false };
	size_t	n;

	if (len == 0)
		return 0;
	while (*tmpl && !o.full) {
		if (*tmpl != '$') {
			put_char(&o, (unsigned char) *tmpl++);
			continue;
		}
		tmpl++;
		if (*tmpl == '$') {
			put_char(&o, '$');
			tmpl++;
			continue;
		}
		switch (conf_reply_var(tmpl, &n)) {
		case QM_VAR_ACCOUNT: put_text(&o, v->account); break;
		case QM_VAR_PLAN: put_text(&o, v->plan); break;
		case QM_VAR_LIMIT: put_number(&o, v->limit); break;
		case QM_VAR_USED: put_number(&o, v->used); break;
		case QM_VAR_CATEGORY: put_text(&o, v->category); break;
		case QM_VAR_HEADER: put_text(&o, v->header); break;
		case QM_VAR_REASON: put_text(&o, v->reason); break;
		case QM_VAR_WINDOW: put_text(&o, v->window); break;
		case QM_VAR_RETRY_AFTER: put_text(&o, v->retry_after); break;
		case QM_VAR_COUNT:
			/* conf_load() refuses unknown variables; print it as is. */
			put_char(&o, '$');
			continue;
		}
		tmpl += n;
	}
	buf[o.pos] = 0;
	return o.pos;
}

/* policy_sanitize - copy text for a log line: printable ASCII only */
void
policy_sanitize(char *buf, size_t len, const char *text)
{
	size_t	pos = 0;

	if (len == 0)
		return;
	for (; text != NULL && *text && pos + 1 < len; text++) {
		unsigned char c = (unsigned char) *text;

		buf[pos++] = (c >= 0x21 && c < 0x7f) ? (char) c : '?';
	}
	buf[pos] = 0;
}
