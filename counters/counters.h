/*
 * counters.h - the account's plan, limit and monthly usage, in Redis
 *
 * Every call is one atomic run of quota.lua. A struct counters is
 * thread-safe and keeps a pointer to its conf: free it before the conf.
 */
#ifndef QM_COUNTERS_H
#define QM_COUNTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "../conf/conf.h"
#include "keys.h"
#include "month.h"

enum qm_status {
	QM_STATUS_OK,			/* fits (charge: counted) */
	QM_STATUS_OVER,			/* monitor mode: did not fit, counted anyway */
	QM_STATUS_EXHAUSTED,		/* does not fit the monthly limit */
	QM_STATUS_NO_MAIL,		/* the plan allows 0 and no override */
	QM_STATUS_SUSPENDED,		/* suspended = 1 */
	QM_STATUS_NO_PLAN,		/* no plan in Redis and no default_plan */
	QM_STATUS_UNKNOWN_PLAN,		/* plan in Redis not in the conf */
	QM_STATUS_UNAVAILABLE,		/* Redis could not answer in time */
	QM_STATUS_DAILY_CAP,		/* fits the month, not today's cap */
	QM_STATUS_HOURLY_CAP		/* fits the month and the day, not this hour's cap */
};

/*
 * A window with a cap: the calendar day or hour (month.h) a call counted
 * in, the account's cap there and its use. No cap (QM_UNLIMITED): no key
 * in Redis, used 0. The cap is the account's limit_daily / limit_hourly
 * when valid (-1 lifts the plan's), else its plan's daily / hourly.
 * Filled by peek and charge (name and end also when Redis failed: the
 * cancel of a charge in doubt names its hour); the other calls leave cap
 * QM_UNLIMITED and used 0.
 */
struct qm_window {
	char	name[MONTH_WINDOW_LEN];	/* "2026-12-03" or "2026-12-03T14" */
	long long cap;			/* the effective cap, QM_UNLIMITED for none */
	long long used;			/* the window's total, as used in qm_quota */
	time_t	end;			/* when it ends: the next window opens */
};

struct qm_quota {
	enum qm_status status;
	char	plan[QM_NAME_MAX + 1];	/* plan name in force ("" if none) */
	long long limit;		/* effective limit, QM_UNLIMITED for none */
	long long used;			/* month's total: before (peek), after (charge) */
	char	month[8];		/* "YYYY-MM" the call used */
	struct qm_window day;		/* its calendar day */
	struct qm_window hour;		/* its calendar hour */
	char	charge_id[KEYS_CHARGE_ID_LEN + 1];	/* charge: its id, also when it failed */
	bool	may_have_run;		/* failed, yet Redis may have run it (redis.h) */
};

struct counters;

/* How a charge treats what does not fit (quota.lua's ARGV[4]). */
enum counters_mode {
	COUNTERS_ENFORCE,		/* refuse it */
	COUNTERS_MONITOR,		/* count it; would_refuse: the whole message */
	COUNTERS_MONITOR_RCPT		/* count it; would_refuse: the units beyond the
					 * limit, as enforce refuses recipient by recipient */
};

/*
 * What every call below returns when Redis refused the call for good (the
 * script's own error code, or arguments that can never be valid): running
 * it again cannot succeed. Other failures return -1.
 */
#define COUNTERS_REJECTED	(-2)

/*
 * counters_create - make the pool for a conf, counting months in the
 * table months (the caller's, which must outlive the counters; the conf's
 * timezone is not read here, see month.h). Does not connect yet:
 * connections are made on first use, so a milter can start while Redis
 * is down. NULL with a reason in err on a bad Redis setting.
 */
struct counters *counters_create(const struct qm_conf *conf, const struct month_table *months,
				 char *err, size_t errlen);

/* counters_free - close every connection and free; NULL is allowed */
void	counters_free(struct counters *ctr);

/*
 * counters_peek - read plan, limit, suspension, this month's total, and
 * the caps and totals of this day and hour of an account, writing
 * nothing. Its status is the first reason not to take one more unit:
 * suspended, ..., exhausted (the month), daily_cap, hourly_cap; else ok.
 * Returns 0 with the result in out, or -1 (out->status
 * QM_STATUS_UNAVAILABLE) when Redis failed; err says why.
 */
int	counters_peek(struct counters *ctr, const char *account, time_t now,
		struct qm_quota *out, char *err, size_t errlen);

/*
 * counters_recent - what the last peek or charge of this process said of
 * an account, if under a second old (counters/cache.h): true with it in
 * out, the day and hour windows included. What may stand in for a peek
 * where the account is far from its limit and from every cap of its
 * windows (policy_far_from_limit() must look at out->day and out->hour
 * too; a window that has ended since only had more room).
 */
bool	counters_recent(struct counters *ctr, const char *account, struct qm_quota *out);

/*
 * counters_charge - under charge_id (see keys_charge_id_valid(); the
 * caller names it before sending, see inflight.h; NULL: a fresh one),
 * atomically: if `units` more fit the account's limit and the caps of
 * this day and hour (or in a monitor mode), add them to total and to the
 * category field, add one to messages, in the month and in each capped
 * window, keep the plan and limit in force in the month's usage (the cap
 * in the window's), and announce every threshold the month's total has
 * reached, each at most once per account and month, and each cap reached,
 * once per account and window. If they do not fit (enforce), nothing of
 * the message is written but the month's one "exhausted" event or the
 * window's one "cap" event; the status says what refused, in the order
 * month (QM_STATUS_EXHAUSTED), day, hour. The caller records refused
 * units with counters_refused() once it knows the refusal is final (a
 * 5xx: never a cap's 451), so that a 451 and the retry that follows are
 * not recorded twice. In monitor mode would_refuse gets what enforce
 * would have refused, in the month and in each window it did not fit.
 * out->hour.name names the charge's hour: journal and in-flight entries
 * carry it (journal_entry.window), so that its cancel takes it back from
 * the same windows. Returns as counters_peek().
 */
int	counters_charge(struct counters *ctr, const char *charge_id, const char *account,
		const char *category, long long units, enum counters_mode mode,
		time_t now, struct qm_quota *out, char *err, size_t errlen);

/* counters_charge_id_new - a fresh charge id, 64 random bits in hex, into id */
void	counters_charge_id_new(char id[KEYS_CHARGE_ID_LEN + 1]);

/*
 * counters_refused - record units refused for good (a 5xx) in the month
 * they were decided in (NULL: the month of now), once per id (a charge
 * id): a resend, or the journal entry of a call that failed in doubt,
 * records nothing more within 10 minutes. Also spends the month's "exhausted" event and
 * announces thresholds reached. Returns 0, -1 or COUNTERS_REJECTED with err.
 */
int	counters_refused(struct counters *ctr, const char *id, const char *account,
		const char *month, long long units, time_t now, char *err, size_t errlen);

/*
 * counters_reset - delete an account's usage of a month and its announced
 * thresholds (announced again); a cancel that comes after takes nothing
 * back from the usage counted since. *deleted: there was usage.
 */
int	counters_reset(struct counters *ctr, const char *account, const char *month,
		bool *deleted, char *err, size_t errlen);

/*
 * counters_month - the "YYYY-MM" of instant t in the conf's time zone,
 * into buf (8 bytes). Returns 0, or -1 when t is outside 1970-2199.
 */
int	counters_month(struct counters *ctr, time_t t, char *buf);

/*
 * counters_hour - the hour window "YYYY-MM-DDTHH" of instant t in the
 * conf's time zone, into buf (MONTH_WINDOW_LEN bytes): what a journal or
 * in-flight entry of a charge made at t carries (journal_entry.window;
 * with the month of the same t). Returns 0, or -1 outside 1970-2199.
 */
int	counters_hour(struct counters *ctr, time_t t, char *buf);

struct journal_entry;

/*
 * counters_replay - apply a journal entry once, however often replayed.
 * A count (a message accepted while Redis was away) goes to its month,
 * and to the capped windows of its hour (entry->window) that have not
 * expired, as a monitor charge, unless it names a failed charge that did
 * run and count, which then counts nothing should it run later. A cancel
 * settles a charge whose message was not accepted and that failed in
 * doubt (may_have_run): taken back if it ran, from the month and from
 * each window it counted in, never run if not. An entry without a window
 * (older versions) touches no window. A refusal is counters_refused()
 * under its id, in its month only.
 * Returns 0, -1 or COUNTERS_REJECTED (never applicable) with err.
 */
int	counters_replay(struct counters *ctr, const struct journal_entry *entry,
		char *err, size_t errlen);

/*
 * counters_journal_apply - journal_replay()'s apply (arg: the counters):
 * counters_replay(), with JOURNAL_REJECTED for an entry Redis can never
 * take (COUNTERS_REJECTED), which is then kept aside while the replay
 * goes on; any other failure (Redis away, loading, busy) is waited out.
 */
int	counters_journal_apply(void *ctr, const struct journal_entry *entry,
		char *err, size_t errlen);

/* counters_status_name - "ok", "exhausted", ... for logs */
const char *counters_status_name(enum qm_status status);

#endif
