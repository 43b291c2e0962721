/*
 * callbacks.c - the libmilter callbacks: each gathers facts about the
 * message, asks milter/policy.c what they mean and counters/ what fits,
 * and replies. One line is logged per decision. Each connection asks the
 * MTA only for the events and replies its conf needs (policy_needs()).
 * How and when a message is decided: README.md, "How a message is decided".
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmilter/mfapi.h>

#include "log.h"
#include "milter.h"
#include "stats.h"

 /* Per-message state, reset at MAIL, end of message and abort. */
struct msg_ctx {
	bool	may_count;		/* a category matches, or may once headers are seen */
	char   *sender;			/* envelope sender without <> */
	char   *sasl;			/* {auth_authen} */
	int	category;		/* index, POLICY_CLASS_NONE or _LATER */
	bool	rcpt_decides;		/* recipients decided one by one (policy_rcpt_decides()) */
	bool	decide_at_rcpt;		/* and refused at RCPT: enforce, Redis answering */
	enum policy_account account_result;	/* of an account known at MAIL */
	const char *account_reason;	/* why, when not POLICY_ACCOUNT_OK */
	char	account[QM_ACCOUNT_MAX + 1];
	bool	quota_from_peek;	/* quota: Redis's answer at the first RCPT */
	bool	quota_from_cache;	/* quota: this process's of the last second (counters_recent()) */
	struct qm_quota quota;		/* what RCPT decided on, then the charge's answer */
	long long rcpt_ok;		/* recipients accepted */
	long long reserved;		/* units promised to them */
	long long refused;		/* units refused for good, not yet recorded */
	char	refused_month[8];	/* the month they were decided in */
	char	refused_id[KEYS_CHARGE_ID_LEN + 1]; /* their id (counters_refused()) */
	struct policy_header headers[POLICY_HEADERS_MAX];
	size_t	header_count;
	bool	headers_truncated;
	unsigned *slot_seen;		/* occurrences per policy_header_slot() */
	bool	failed;			/* out of memory where no reply could say so */
	bool	pass_at_rcpt;		/* no category: let through at the first RCPT */
	bool	strip_uncounted;	/* no category, but its headers go (needs.strip) */
};

 /* Per-connection state. */
struct conn_ctx {
	struct runtime *rt;		/* pinned at negotiation */
	unsigned long noreply;		/* SMFIP_NR_* asked for: no reply there */
	bool	failed;			/* out of memory at connect: tempfail mail */
	struct sockaddr_storage client;
	bool	has_client;
	bool	non_smtp;		/* a local submission (policy_local()): no RCPT refusals */
	char   *daemon;			/* {daemon_name} */
	struct msg_ctx msg;
};

static bool listen_unix;		/* the milter listens on a unix socket */

static void strip_headers(SMFICTX *ctx, struct conn_ctx *cc);

/* msg_reset - free per-message state */
static void
msg_reset(struct msg_ctx *m)
{
	size_t	i;

	free(m->sender);
	free(m->sasl);
	for (i = 0; i < m->header_count; i++) {
		free(m->headers[i].name);
		free(m->headers[i].value);
	}
	free(m->slot_seen);
	memset(m, 0, sizeof(*m));
	m->category = POLICY_CLASS_NONE;
}

/* queue_id - the MTA's queue id, or NOQUEUE before it has one */
static const char *
queue_id(SMFICTX *ctx)
{
	const char *id = smfi_getsymval(ctx, "i");

	return id != NULL && *id ? id : "NOQUEUE";
}

/* policy_view - the policy's view of the message so far */
static void
policy_view(const struct conn_ctx *cc, bool with_headers, struct policy_msg *pm)
{
	const struct msg_ctx *m = &cc->msg;

	memset(pm, 0, sizeof(*pm));
	pm->client = cc->has_client ? (const struct sockaddr *) &cc->client : NULL;
	pm->sasl = m->sasl;
	pm->sender = m->sender;
	pm->daemon = cc->daemon;
	pm->local = cc->non_smtp;
	if (with_headers) {
		pm->headers = m->headers;
		pm->header_count = m->header_count;
		pm->headers_truncated = m->headers_truncated;
	}
}

/* category_name - name of a category index, or "-" */
static const char *
category_name(const struct qm_conf *conf, int category)
{
	return category >= 0 ? conf->categories[category].name : "-";
}

/*
 * decision_log - the one line per decision: queue id, account, plan,
 * category, units, used/limit and what was decided.
 */
static void
decision_log(SMFICTX *ctx, const struct conn_ctx *cc, long long units,
	     const char *decision, const char *detail)
{
	const struct msg_ctx *m = &cc->msg;
	char	plan[QM_NAME_MAX + 1];
	char	limit[32];
	char	qid[64];

	policy_sanitize(plan, sizeof(plan), m->quota.plan[0] ? m->quota.plan : "-");
	if (m->quota.limit == QM_UNLIMITED)
		snprintf(limit, sizeof(limit), "unlimited");
	else
		snprintf(limit, sizeof(limit), "%lld", m->quota.limit);
	policy_sanitize(qid, sizeof(qid), queue_id(ctx));
	msg_info("%s: account=%s plan=%s category=%s units=%lld used=%lld/%s decision=%s%s%s",
		 qid, m->account[0] ? m->account : "-", plan,
		 category_name(cc->rt->conf, m->category), units, m->quota.used,
		 limit, decision, detail && *detail ? " reason=" : "",
		 detail ? detail : "");
}

/*
 * reply_status - set the SMTP reply of a conf reply, its variables those
 * of quota status st (policy_quota_vars(): a cap's window and when it
 * reopens), and return the matching milter status: SMFIS_TEMPFAIL for
 * 4xx, SMFIS_REJECT for 5xx.
 */
static sfsistat
reply_status(SMFICTX *ctx, const struct conn_ctx *cc, enum qm_reply_id id, enum qm_status st,
	     const char *reason)
{
	const struct qm_conf *conf = cc->rt->conf;
	const struct qm_reply *r = &conf->replies[id];
	const struct msg_ctx *m = &cc->msg;
	struct policy_vars v = {
		.account = m->account[0] ? m->account : NULL,
		.category = category_name(conf, m->category),
		.header = conf->account.header,
		.reason = reason,
	};
	char	clock[64];
	char	text[512];

	policy_quota_vars(&v, &m->quota, st, cc->rt->months, clock, sizeof(clock));
	policy_format_reply(text, sizeof(text), r->text, &v);
	stats_reply(id, r->code[0] == '5');
	if (smfi_setreply(ctx, (char *) r->code, (char *) r->xcode, text) != MI_SUCCESS)
		msg_warn("%s: smfi_setreply %s %s failed", queue_id(ctx), r->code, r->xcode);
	return r->code[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

/* reply - reply_status() for a reply that is not about a cap: the month's numbers */
static sfsistat
reply(SMFICTX *ctx, const struct conn_ctx *cc, enum qm_reply_id id, const char *reason)
{
	return reply_status(ctx, cc, id, QM_STATUS_OK, reason);
}

/*
 * status_detail - a quota status for the decision's log line; a cap's
 * names its window and the window's use, "hourly_cap window=2026-12-03T14
 * used=3/3"
 */
static const char *
status_detail(char *buf, size_t len, const struct qm_quota *q, enum qm_status st)
{
	const struct qm_window *w = policy_status_window(q, st);

	if (w == NULL)
		return counters_status_name(st);
	snprintf(buf, len, "%s window=%s used=%lld/%lld", counters_status_name(st),
		 w->name[0] ? w->name : "-", w->used, w->cap);
	return buf;
}

/* reply_final - is the conf's reply a permanent (5xx) refusal? */
static bool
reply_final(const struct conn_ctx *cc, enum qm_reply_id id)
{
	return cc->rt->conf->replies[id].code[0] == '5';
}

/* copy_str - copy what fits of src into dst (size bytes), NUL-terminated */
static void
copy_str(char *dst, size_t size, const char *src)
{
	size_t	len = strnlen(src, size - 1);

	memcpy(dst, src, len);
	dst[len] = 0;
}

/*
 * msg_entry - the message's charge as a journal entry (once per charge: no
 * printf), in the month and hour window (counters_hour()) it was made in
 */
static void
msg_entry(const struct conn_ctx *cc, const char *id, const char *month, const char *hour,
	  long long units, struct journal_entry *e)
{
	const struct msg_ctx *m = &cc->msg;

	memset(e, 0, sizeof(*e));
	copy_str(e->id, sizeof(e->id), id);
	copy_str(e->month, sizeof(e->month), month);
	copy_str(e->window, sizeof(e->window), hour);
	copy_str(e->account, sizeof(e->account), m->account);
	copy_str(e->category, sizeof(e->category), category_name(cc->rt->conf, m->category));
	e->units = units;
}

/*
 * charge_cancel - the charge failed in doubt and its message will not be
 * accepted: Redis may have run it, or may still run it. A cancel entry in
 * the journal takes it back once Redis answers (see counters_replay), so
 * that nothing stays counted for mail that was not accepted.
 */
static void
charge_cancel(SMFICTX *ctx, struct conn_ctx *cc, struct journal *jr, long long units)
{
	struct msg_ctx *m = &cc->msg;
	struct journal_entry e;
	char	jerr[256] = "no journal (see the journal setting)";

	msg_entry(cc, m->quota.charge_id, m->quota.month, m->quota.hour.name, units, &e);
	e.cancel = true;
	stats_count(STATS_CHARGES_IN_DOUBT);
	if (jr != NULL && journal_append(jr, &e, jerr, sizeof(jerr)) == 0) {
		stats_count(STATS_CHARGES_CANCELLED);
		msg_info("%s: account %s: charge %s in doubt, cancel journaled", queue_id(ctx),
			 m->account, e.id);
		return;
	}
	msg_warn("%s: account %s: charge %s of %lld units may have been counted in Redis, "
		 "and cannot be cancelled: %s", queue_id(ctx), m->account, e.id, units, jerr);
}

/* entry_now - a journal entry's month and hour: those of now; 0, or -1 */
static int
entry_now(const struct conn_ctx *cc, struct journal_entry *e)
{
	time_t	now = time(NULL);

	if (counters_month(cc->rt->ctr, now, e->month) < 0
	    || counters_hour(cc->rt->ctr, now, e->window) < 0)
		return -1;
	return 0;
}

/*
 * unavailable - Redis failed: apply on_redis_error. In accept mode the
 * message's counts go to the journal first; if even that fails, the
 * message is tempfailed rather than let through uncounted.
 */
static sfsistat
unavailable(SMFICTX *ctx, struct conn_ctx *cc, long long units, const char *err)
{
	struct msg_ctx *m = &cc->msg;
	struct journal *jr = journal_get(NULL);
	struct journal_entry e;
	char	jerr[256] = "no month for the current time";

	if (cc->rt->conf->on_redis_error == QM_ON_ERROR_ACCEPT && units > 0 && jr != NULL) {
		/*
		 * If the failed charge ran after all, its id keeps it from
		 * counting twice; in the charge's month, which its cancel uses.
		 */
		msg_entry(cc, m->quota.charge_id, m->quota.month, m->quota.hour.name, units, &e);
		if ((e.month[0] != 0 || entry_now(cc, &e) == 0)
		    && journal_append(jr, &e, jerr, sizeof(jerr)) == 0) {
			strip_headers(ctx, cc);
			stats_count(STATS_ACCEPTED);
			decision_log(ctx, cc, units, "accept-journaled", err);
			return SMFIS_CONTINUE;
		}
		msg_warn("%s: cannot journal the count: %s", queue_id(ctx), jerr);
	}
	if (m->quota.may_have_run && m->quota.charge_id[0] != 0 && units > 0)
		charge_cancel(ctx, cc, jr, units);
	decision_log(ctx, cc, units, "tempfail", err);
	return reply(ctx, cc, QM_REPLY_UNAVAILABLE, err);
}

/* conn_get - the connection state, made on demand (connect may be skipped) */
static struct conn_ctx *
conn_get(SMFICTX *ctx)
{
	struct conn_ctx *cc = smfi_getpriv(ctx);

	if (cc == NULL) {
		if ((cc = calloc(1, sizeof(*cc))) == NULL)
			return NULL;
		cc->rt = runtime_acquire();
		cc->msg.category = POLICY_CLASS_NONE;
		smfi_setpriv(ctx, cc);
		stats_session(1);
	}
	return cc;
}

/*
 * stage_reply - status, unless the stage was negotiated without a reply
 * (SMFIP_NR_*): then a failure is kept, for the connection or the message,
 * and tempfails the next event that replies (deferred_failure()).
 */
static sfsistat
stage_reply(struct conn_ctx *cc, unsigned long nr, sfsistat status)
{
	if ((cc->noreply & nr) == 0)
		return status;
	if (status != SMFIS_CONTINUE) {
		if (status != SMFIS_TEMPFAIL)
			msg_warn("status %d where no reply was negotiated: tempfail later", (int) status);
		if (nr == SMFIP_NR_CONN)
			cc->failed = true;
		else
			cc->msg.failed = true;
	}
	return SMFIS_NOREPLY;
}

/*
 * deferred_failure - a callback that could not reply failed earlier in
 * this connection or message: log it and return true. The caller, an
 * event that replies, tempfails.
 */
static bool
deferred_failure(SMFICTX *ctx, const struct conn_ctx *cc)
{
	if (!cc->failed && !cc->msg.failed)
		return false;
	msg_warn("%s: out of memory earlier in this %s: tempfail", queue_id(ctx),
		 cc->failed ? "connection" : "message");
	return true;
}

/*
 * refusals_record - record the units refused for good so far, in the
 * month they were decided in, under their id; when Redis fails, in the
 * journal, applied once Redis answers (a call that ran in doubt is not
 * recorded twice: same id).
 */
static void
refusals_record(struct conn_ctx *cc)
{
	struct msg_ctx *m = &cc->msg;
	struct journal *jr;
	struct journal_entry e;
	char	err[256];
	char	jerr[256] = "no journal (see the journal setting)";
	int	rc;

	if (m->refused == 0 || m->account[0] == 0)
		return;
	rc = counters_refused(cc->rt->ctr, m->refused_id, m->account, m->refused_month,
			      m->refused, time(NULL), err, sizeof(err));
	if (rc == -1) {
		memset(&e, 0, sizeof(e));
		copy_str(e.id, sizeof(e.id), m->refused_id);
		copy_str(e.month, sizeof(e.month), m->refused_month);
		copy_str(e.account, sizeof(e.account), m->account);
		e.refused = m->refused;
		e.refusal = true;
		if ((jr = journal_get(NULL)) != NULL && journal_append(jr, &e, jerr, sizeof(jerr)) == 0)
			msg_info("account %s: %lld refused journaled (%s)", m->account, m->refused, err);
		else
			msg_warn("account %s: cannot record %lld refused: %s; %s", m->account,
				 m->refused, err, jerr);
	} else if (rc < 0) {
		msg_warn("account %s: cannot record %lld refused: %s", m->account, m->refused, err);
	}
	m->refused = 0;
}

/*
 * refusal_add - units refused for good (a 5xx), decided on the usage of
 * month: recorded with the others of that month at the message's end
 */
static void
refusal_add(struct conn_ctx *cc, long long units, const char *month)
{
	struct msg_ctx *m = &cc->msg;

	if (units <= 0)
		return;
	if (m->refused > 0 && strcmp(m->refused_month, month) != 0)
		refusals_record(cc);
	if (m->refused == 0) {
		copy_str(m->refused_month, sizeof(m->refused_month), month);
		counters_charge_id_new(m->refused_id);
	}
	m->refused += units;
}

/* msg_finish - end a message: record its refusals */
static void
msg_finish(struct conn_ctx *cc)
{
	refusals_record(cc);
	msg_reset(&cc->msg);
}

/*
 * negotiate_steps - the steps (SMFIP_NO*, SMFIP_NR_*) to ask the MTA for:
 * no event the conf does not read, no reply where it never refuses
 * (policy_needs()). Over a unix socket DATA is skipped; over TCP it stays
 * (see qm_data()).
 */
static unsigned long
negotiate_steps(const struct policy_needs *needs)
{
	unsigned long steps = SMFIP_NOHELO | SMFIP_NOEOH | SMFIP_NOBODY | SMFIP_NOUNKNOWN
	    | SMFIP_NR_CONN;

	if (listen_unix)
		steps |= SMFIP_NODATA;
	if (!needs->mail_reply)
		steps |= SMFIP_NR_MAIL;
	if (!needs->rcpt)
		steps |= SMFIP_NORCPT;
	else if (!needs->rcpt_reply)
		steps |= SMFIP_NR_RCPT;
	steps |= needs->headers ? SMFIP_NR_HDR : SMFIP_NOHDRS;
	return steps;
}

/*
 * qm_negotiate - pin the runtime for the connection (a reload applies to
 * the next: a session never needs an event it negotiated away); ask for
 * what its conf needs and the macros read. Without memory: every event
 * and reply, and each callback tempfails.
 */
static sfsistat
qm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
	     unsigned long f2, unsigned long f3, unsigned long *pf0,
	     unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	struct conn_ctx *cc = conn_get(ctx);

	(void) f2;
	(void) f3;
	if (cc == NULL)
		return SMFIS_ALL_OPTS;		/* every event and reply */
	*pf0 = SMFIF_CHGHDRS;
	*pf1 = negotiate_steps(&cc->rt->needs) & f1;
	*pf2 = 0;
	*pf3 = 0;
	cc->noreply = *pf1 & (SMFIP_NR_CONN | SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_HDR);

	/*
	 * Macros: {daemon_name} at connect, {auth_authen} at MAIL, the queue
	 * id for the log lines at RCPT and end of message. An MTA that cannot
	 * take the lists sends its defaults, which include these.
	 */
	if (f0 & SMFIF_SETSYMLIST) {
		*pf0 |= SMFIF_SETSYMLIST;
		if (smfi_setsymlist(ctx, SMFIM_CONNECT, "{daemon_name}") != MI_SUCCESS
		    || smfi_setsymlist(ctx, SMFIM_ENVFROM, "{auth_authen}") != MI_SUCCESS
		    || smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i") != MI_SUCCESS
		    || smfi_setsymlist(ctx, SMFIM_EOM, "i") != MI_SUCCESS)
			msg_warn("smfi_setsymlist failed: the MTA sends its default macros");
	}
	return SMFIS_CONTINUE;
}

/* qm_connect - remember the client; never refuses (SMFIP_NR_CONN) */
static sfsistat
qm_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *hostaddr)
{
	struct conn_ctx *cc = conn_get(ctx);
	const char *daemon;
	socklen_t len = 0;

	if (cc == NULL)
		return SMFIS_TEMPFAIL;		/* no negotiation: a reply is expected */
	if (hostaddr != NULL) {
		if (hostaddr->sa_family == AF_INET)
			len = sizeof(struct sockaddr_in);
		else if (hostaddr->sa_family == AF_INET6)
			len = sizeof(struct sockaddr_in6);
		if (len > 0) {
			memcpy(&cc->client, hostaddr, len);
			cc->has_client = true;
		}
	}

	cc->non_smtp = cc->has_client
	    && policy_local(hostname, (const struct sockaddr *) &cc->client);
	if ((daemon = smfi_getsymval(ctx, "{daemon_name}")) != NULL
	    && (cc->daemon = strdup(daemon)) == NULL)
		return stage_reply(cc, SMFIP_NR_CONN, SMFIS_TEMPFAIL);
	return stage_reply(cc, SMFIP_NR_CONN, SMFIS_CONTINUE);
}

/* envfrom - qm_envfrom() */
static sfsistat
envfrom(SMFICTX *ctx, struct conn_ctx *cc, char **argv)
{
	struct msg_ctx *m = &cc->msg;
	const struct qm_conf *conf = cc->rt->conf;
	struct policy_msg pm;
	const char *sender;
	const char *sasl;
	size_t	len;

	msg_finish(cc);
	stats_count(STATS_MESSAGES);
	if ((cc->noreply & SMFIP_NR_MAIL) == 0 && deferred_failure(ctx, cc))
		return SMFIS_TEMPFAIL;

	sender = argv[0] != NULL ? argv[0] : "";
	len = strlen(sender);
	if (len >= 2 && sender[0] == '<' && sender[len - 1] == '>')
		m->sender = strndup(sender + 1, len - 2);
	else
		m->sender = strdup(sender);
	sasl = smfi_getsymval(ctx, "{auth_authen}");
	m->sasl = sasl != NULL ? strdup(sasl) : NULL;
	if (m->sender == NULL || (sasl != NULL && m->sasl == NULL))
		return SMFIS_TEMPFAIL;

	policy_view(cc, false, &pm);
	m->category = policy_classify(conf, &pm);
	if (m->category == POLICY_CLASS_NONE) {
		/*
		 * Not counted mail: let it pass, Redis never asked; at the first
		 * RCPT when MAIL gets no reply. When the internal headers are
		 * stripped, it is followed to its end for them.
		 */
		stats_count(STATS_UNCOUNTED);
		msg_reset(m);
		if (cc->rt->needs.strip) {
			m->strip_uncounted = true;
			return SMFIS_CONTINUE;
		}
		if ((cc->noreply & SMFIP_NR_MAIL) == 0)
			return SMFIS_ACCEPT;
		m->pass_at_rcpt = true;
		return SMFIS_CONTINUE;
	}
	m->may_count = true;
	if (policy_account_early(conf)) {
		m->account_result = policy_account(conf, &pm, m->account, &m->account_reason);
		m->rcpt_decides = policy_rcpt_decides(conf, m->category, cc->non_smtp);
		m->decide_at_rcpt = m->rcpt_decides && conf->mode == QM_MODE_ENFORCE;
	}
	return SMFIS_CONTINUE;
}

/*
 * qm_envfrom - start a message; classify on the envelope. Without a reply
 * (SMFIP_NR_MAIL) when the conf can never let mail pass here, or when
 * RCPT replies anyway and can let it pass there.
 */
static sfsistat
qm_envfrom(SMFICTX *ctx, char **argv)
{
	struct conn_ctx *cc = conn_get(ctx);

	if (cc == NULL)
		return SMFIS_TEMPFAIL;
	return stage_reply(cc, SMFIP_NR_MAIL, envfrom(ctx, cc, argv));
}

/*
 * rcpt_quota - the quota to decide a recipient of `units` on, in
 * m->quota: this process's answer of the last second while the account
 * is far from its limit (policy_far_from_limit()), else one peek at Redis
 * a message. 0, or -1 with err when Redis failed.
 */
static int
rcpt_quota(struct conn_ctx *cc, long long units, char *err, size_t errlen)
{
	struct msg_ctx *m = &cc->msg;

	if (m->quota_from_peek)
		return 0;
	if (!m->quota_from_cache)
		m->quota_from_cache = counters_recent(cc->rt->ctr, m->account, &m->quota);
	if (m->quota_from_cache && policy_far_from_limit(&m->quota, m->reserved, units))
		return 0;
	m->quota_from_cache = false;	/* decided on Redis's answer from here on */
	if (counters_peek(cc->rt->ctr, m->account, time(NULL), &m->quota, err, errlen) < 0)
		return -1;
	m->quota_from_peek = true;
	return 0;
}

/*
 * rcpt_refuse - refuse a recipient the quota has no room for, with the
 * reply of what binds (policy_room(): the month 550, a cap 451); a final
 * refusal (5xx) is recorded, once a message for unit messages
 */
static sfsistat
rcpt_refuse(SMFICTX *ctx, struct conn_ctx *cc, long long units)
{
	struct msg_ctx *m = &cc->msg;
	enum qm_status st = m->quota.status == QM_STATUS_OK
	    ? policy_room(&m->quota, m->reserved).beyond : m->quota.status;
	enum qm_reply_id id = policy_status_reply(st, false);
	char	detail[128];

	if (reply_final(cc, id))
		refusal_add(cc, cc->rt->conf->unit == QM_UNIT_RECIPIENTS ? units
			    : (m->refused == 0 && m->rcpt_ok == 0), m->quota.month);
	decision_log(ctx, cc, units, "refuse-rcpt",
		     status_detail(detail, sizeof(detail), &m->quota, st));
	return reply_status(ctx, cc, id, st, counters_status_name(st));
}

/*
 * qm_envrcpt - with an early account, accept recipients while they fit;
 * otherwise count them, without a reply (SMFIP_NR_RCPT).
 */
static sfsistat
qm_envrcpt(SMFICTX *ctx, char **argv)
{
	struct conn_ctx *cc = conn_get(ctx);
	struct msg_ctx *m;
	long long units;
	char	err[256];

	(void) argv;
	if (cc == NULL)
		return SMFIS_TEMPFAIL;
	m = &cc->msg;
	if ((cc->noreply & SMFIP_NR_RCPT) == 0) {
		if (deferred_failure(ctx, cc))
			return SMFIS_TEMPFAIL;
		if (m->pass_at_rcpt) {
			msg_reset(m);
			return SMFIS_ACCEPT;
		}
	}
	if (!m->decide_at_rcpt) {
		if (m->may_count)
			m->rcpt_ok++;
		return stage_reply(cc, SMFIP_NR_RCPT, SMFIS_CONTINUE);
	}
	units = policy_rcpt_units(cc->rt->conf, m->rcpt_ok);
	if (m->account_result != POLICY_ACCOUNT_OK) {
		decision_log(ctx, cc, units, "refuse", m->account_reason);
		return reply(ctx, cc, policy_account_reply(m->account_result), m->account_reason);
	}
	if (rcpt_quota(cc, units, err, sizeof(err)) < 0) {
		if (cc->rt->conf->on_redis_error != QM_ON_ERROR_ACCEPT)
			return unavailable(ctx, cc, units, err);
		m->decide_at_rcpt = false;	/* at end of message: counted or journaled */
		m->rcpt_ok++;
		return SMFIS_CONTINUE;
	}
	if (m->quota.status != QM_STATUS_OK || !policy_fits(&m->quota, m->reserved, units))
		return rcpt_refuse(ctx, cc, units);
	m->rcpt_ok++;
	m->reserved += units;
	return SMFIS_CONTINUE;
}

/*
 * header_unfold - a header value as RFC 5322 reads it: line breaks of a
 * folded header removed, blanks at both ends trimmed. NULL when out of
 * memory.
 */
static char *
header_unfold(const char *value)
{
	char   *out = malloc(strlen(value) + 1);
	char   *end;
	char   *dst;

	if (out == NULL)
		return NULL;
	for (dst = out; *value; value++)
		if (*value != '\r' && *value != '\n')
			*dst++ = *value;
	*dst = 0;
	for (end = dst; end > out && (end[-1] == ' ' || end[-1] == '\t'); end--)
		end[-1] = 0;
	dst = out + strspn(out, " \t");
	memmove(out, dst, strlen(dst) + 1);
	return out;
}

/*
 * header_keep - keep a header if the policy reads it. The account header
 * is one only with source = header: with sasl or sender-domain accounts
 * it is neither read nor stripped, so that such a conf needs no header
 * at all (SMFIP_NOHDRS) and behaves the same whatever was negotiated.
 */
static sfsistat
header_keep(struct conn_ctx *cc, const char *name, const char *value)
{
	const struct qm_conf *conf = cc->rt->conf;
	struct msg_ctx *m = &cc->msg;
	struct policy_header *h;
	int	slot;

	if ((!m->may_count && !m->strip_uncounted) || name == NULL || value == NULL
	    || (slot = policy_header_slot(conf, name)) < 0
	    || ((size_t) slot == conf->category_count
		&& conf->account.source != QM_SOURCE_HEADER))
		return SMFIS_CONTINUE;
	if (m->slot_seen == NULL
	    && (m->slot_seen = calloc(conf->category_count + 1, sizeof(unsigned))) == NULL)
		return SMFIS_TEMPFAIL;
	m->slot_seen[slot]++;
	if (strlen(value) > POLICY_HEADER_MAX || m->header_count >= POLICY_HEADERS_MAX) {
		m->headers_truncated = true;
		return SMFIS_CONTINUE;
	}
	h = &m->headers[m->header_count];
	if ((h->name = strdup(name)) == NULL || (h->value = header_unfold(value)) == NULL) {
		free(h->name);
		h->name = NULL;
		return SMFIS_TEMPFAIL;
	}
	m->header_count++;
	return SMFIS_CONTINUE;
}

/* qm_header - keep the headers the policy reads; no reply (SMFIP_NR_HDR) */
static sfsistat
qm_header(SMFICTX *ctx, char *name, char *value)
{
	struct conn_ctx *cc = conn_get(ctx);

	if (cc == NULL)
		return SMFIS_TEMPFAIL;
	return stage_reply(cc, SMFIP_NR_HDR, header_keep(cc, name, value));
}

/*
 * strip_headers - remove every account and category header. Deleting
 * from the last occurrence down keeps the indexes of the others valid.
 */
static void
strip_headers(SMFICTX *ctx, struct conn_ctx *cc)
{
	const struct qm_conf *conf = cc->rt->conf;
	char	name[256];
	int	slot;
	int	idx;

	if (!conf->account.strip_headers || cc->msg.slot_seen == NULL)
		return;
	for (slot = 0; (size_t) slot <= conf->category_count; slot++) {
		if (cc->msg.slot_seen[slot] == 0)
			continue;
		snprintf(name, sizeof(name), "%s", policy_slot_header(conf, slot));
		for (idx = (int) cc->msg.slot_seen[slot]; idx >= 1; idx--)
			if (smfi_chgheader(ctx, name, idx, NULL) != MI_SUCCESS)
				msg_warn("%s: cannot remove header %s", queue_id(ctx), name);
	}
}

/*
 * inflight_charge - keep the charge about to be sent in the inflight
 * file: should the milter die before its verdict, the next start cancels
 * it. The slot, or -1 when it cannot be kept.
 */
static int
inflight_charge(struct conn_ctx *cc, struct inflight *inf, const char *charge_id, time_t now,
		long long units)
{
	struct journal_entry e;
	char	month[8];
	char	hour[MONTH_WINDOW_LEN];

	if (inf == NULL || counters_month(cc->rt->ctr, now, month) < 0
	    || counters_hour(cc->rt->ctr, now, hour) < 0)
		return -1;
	msg_entry(cc, charge_id, month, hour, units, &e);
	return inflight_begin(inf, &e);
}

/*
 * charge_verdict - the reply to the charge's answer (m->quota): accept,
 * or refuse and record the units refused when the refusal is final (5xx)
 */
static sfsistat
charge_verdict(SMFICTX *ctx, struct conn_ctx *cc, long long units)
{
	struct msg_ctx *m = &cc->msg;
	const char *status = counters_status_name(m->quota.status);
	enum qm_reply_id id;
	char	detail[128];
	sfsistat rc;

	if (m->quota.status == QM_STATUS_OK || m->quota.status == QM_STATUS_OVER) {
		strip_headers(ctx, cc);
		stats_count(STATS_ACCEPTED);
		decision_log(ctx, cc, units, "accept",
			     m->quota.status == QM_STATUS_OVER ? "monitor: would refuse" : NULL);
		return SMFIS_CONTINUE;
	}
	id = policy_status_reply(m->quota.status, m->quota_from_peek || m->quota_from_cache);
	decision_log(ctx, cc, units, reply_final(cc, id) ? "refuse" : "tempfail",
		     status_detail(detail, sizeof(detail), &m->quota, m->quota.status));
	rc = reply_status(ctx, cc, id, m->quota.status, status);
	/* A 451 (race, unknown plan, a cap) is retried: only a 5xx is recorded. */
	if (reply_final(cc, id)) {
		refusal_add(cc, units, m->quota.month);
		refusals_record(cc);
	}
	return rc;
}

/*
 * eom_charge - charge the message's units in one atomic call, named and
 * kept in the inflight file until its verdict is returned
 */
static sfsistat
eom_charge(SMFICTX *ctx, struct conn_ctx *cc, long long units)
{
	const struct qm_conf *conf = cc->rt->conf;
	struct msg_ctx *m = &cc->msg;
	enum counters_mode mode = conf->mode != QM_MODE_MONITOR ? COUNTERS_ENFORCE
	    : m->rcpt_decides ? COUNTERS_MONITOR_RCPT : COUNTERS_MONITOR;
	time_t	now = time(NULL);
	struct inflight *inf;
	char	charge_id[KEYS_CHARGE_ID_LEN + 1];
	char	err[256];
	sfsistat rc;
	int	slot;

	counters_charge_id_new(charge_id);
	(void) journal_get(&inf);
	slot = inflight_charge(cc, inf, charge_id, now, units);
	if (counters_charge(cc->rt->ctr, charge_id, m->account,
			       conf->categories[m->category].name, units, mode,
			       now, &m->quota, err, sizeof(err)) < 0)
		rc = unavailable(ctx, cc, units, err);
	else
		rc = charge_verdict(ctx, cc, units);
	inflight_end(inf, slot);
	return rc;
}

/*
 * eom_decide - classify the message and find its account if not done
 * yet, then charge it; refused when either fails
 */
static sfsistat
eom_decide(SMFICTX *ctx, struct conn_ctx *cc)
{
	const struct qm_conf *conf = cc->rt->conf;
	struct msg_ctx *m = &cc->msg;
	struct policy_msg pm;
	enum policy_account res;
	const char *reason;
	long long units;

	policy_view(cc, true, &pm);
	if (m->category < 0 && (m->category = policy_classify(conf, &pm)) < 0) {
		/* What decides the category may be among headers dropped: never pass it. */
		if (m->headers_truncated) {
			reason = "account or category headers too long or too many";
			decision_log(ctx, cc, 0, "refuse", reason);
			return reply(ctx, cc, QM_REPLY_BAD_ACCOUNT, reason);
		}
		strip_headers(ctx, cc);		/* no category, or an unknown one */
		stats_count(STATS_UNCOUNTED);
		return SMFIS_CONTINUE;
	}
	units = policy_message_units(conf, m->rcpt_ok);
	if (policy_account_early(conf)) {
		res = m->account_result;
		reason = m->account_reason;
	} else {
		res = policy_account(conf, &pm, m->account, &reason);
	}
	if (res == POLICY_ACCOUNT_OK)
		return eom_charge(ctx, cc, units);
	/* Not a quota decision: monitor mode refuses it too. */
	decision_log(ctx, cc, units, "refuse", reason);
	return reply(ctx, cc, policy_account_reply(res), reason);
}

/* qm_eom - decide the message: one atomic charge */
static sfsistat
qm_eom(SMFICTX *ctx)
{
	struct conn_ctx *cc = conn_get(ctx);
	sfsistat rc;

	if (cc == NULL)
		return SMFIS_TEMPFAIL;
	refusals_record(cc);
	if (deferred_failure(ctx, cc)) {
		msg_finish(cc);
		return SMFIS_TEMPFAIL;
	}
	if (!cc->msg.may_count) {
		strip_headers(ctx, cc);		/* if strip_uncounted: slots seen */
		return SMFIS_CONTINUE;
	}
	rc = eom_decide(ctx, cc);
	msg_reset(&cc->msg);
	return rc;
}

/*
 * qm_data - nothing to decide at DATA but an earlier failure that could
 * not be replied. Over TCP the event is kept, with its reply: without it
 * the MTA's last write before end of message gets no answer, and Nagle on
 * its side then waits for the milter's delayed ACK (about 40 ms).
 */
static sfsistat
qm_data(SMFICTX *ctx)
{
	struct conn_ctx *cc = conn_get(ctx);

	if (cc == NULL || deferred_failure(ctx, cc))
		return SMFIS_TEMPFAIL;
	return SMFIS_CONTINUE;
}

/* qm_abort - the message ended without EOM (RSET, refusal, disconnect) */
static sfsistat
qm_abort(SMFICTX *ctx)
{
	struct conn_ctx *cc = smfi_getpriv(ctx);

	if (cc != NULL)
		msg_finish(cc);
	return SMFIS_CONTINUE;
}

/* qm_close - end of connection; may come without connect */
static sfsistat
qm_close(SMFICTX *ctx)
{
	struct conn_ctx *cc = smfi_getpriv(ctx);

	if (cc == NULL)
		return SMFIS_CONTINUE;
	msg_finish(cc);
	stats_session(-1);
	runtime_release(cc->rt);
	free(cc->daemon);
	free(cc);
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc qm_desc = {
	.xxfi_name = QM_NAME,
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = SMFIF_CHGHDRS,
	.xxfi_connect = qm_connect,
	.xxfi_envfrom = qm_envfrom,
	.xxfi_envrcpt = qm_envrcpt,
	.xxfi_header = qm_header,
	.xxfi_eom = qm_eom,
	.xxfi_abort = qm_abort,
	.xxfi_close = qm_close,
	.xxfi_data = qm_data,
	.xxfi_negotiate = qm_negotiate,
};

/* callbacks_register - hand the callbacks to libmilter */
int
callbacks_register(bool unix_socket)
{
	listen_unix = unix_socket;
	return smfi_register(qm_desc);
}
