/*
 * ctl.h - quota-milter-ctl: what its parts share
 *
 * quota-milter-ctl reads the daemon's conf, talks to the same Redis
 * through the same pool (counters/redis.h) and names keys only through
 * counters/keys.h. This header holds the run's context, the account row
 * that usage, top and export print, and the helpers of ctl/output.c and
 * ctl/scan.c.
 *
 * Exit codes: 0 done, 1 runtime error (conf, Redis, output), 2 usage
 * error (bad command line, account id, month, count or plan).
 */
#ifndef QM_CTL_H
#define QM_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <hiredis/hiredis.h>

#include "../conf/conf.h"
#include "../counters/counters.h"
#include "../counters/keys.h"
#include "../counters/month.h"
#include "../counters/redis.h"

#define CTL_NAME	"quota-milter-ctl"
#define CTL_EXIT_RUNTIME	1
#define CTL_EXIT_USAGE		2
#define CTL_ERR_MAX	1024
#define CTL_BATCH	500		/* accounts per pipelined round trip */
#define CTL_SCAN_COUNT	"1000"		/* SCAN's COUNT hint */

/*
 * The two capped windows, indexed by enum month_window: the name usage's
 * JSON, top --by and set-limit's flag (--daily, --hourly) give a kind,
 * and the account hash field of its override.
 */
struct ctl_kind {
	const char *name;		/* "daily", "hourly" */
	const char *field;		/* "limit_daily", "limit_hourly" */
};
extern const struct ctl_kind ctl_kinds[2];

/* ctl_kind_find - the kind of that name ("daily", "hourly"), or false */
bool	ctl_kind_find(const char *name, enum month_window *kind);

/* One window of now: its name and the instant the next one opens. */
struct ctl_now {
	char	name[MONTH_WINDOW_LEN];	/* "2026-12-03", "2026-12-03T14" */
	time_t	end;
};

/* One run of the program. */
struct ctl {
	struct qm_conf *conf;
	struct redis_pool *pool;	/* one connection */
	struct month_table *months;	/* the conf's time zone */
	bool	json;			/* --json */
	char	events[KEYS_MAX];	/* PREFIXevents */
	char	month_now[MONTH_KEY_LEN];	/* this month, this day, this hour: */
	struct ctl_now now[2];		/* read once (ctl_clock()), by month_window */
};

/* ctl_clock - set ctl's month and windows of now; false outside 1970-2199 */
bool	ctl_clock(struct ctl *ctl);

/* ctl_usage_key - keys_usage() of a month "YYYY-MM", else keys_usage_window() */
size_t	ctl_usage_key(struct ctl *ctl, char *buf, const char *account, const char *period);

/*
 * A window's use and cap, for a row of the current month. The cap
 * follows quota.lua as the limit does: the account's override
 * (limit_daily, limit_hourly) when it holds an integer >= -1, else the
 * plan's daily or hourly (QM_UNLIMITED: no cap).
 */
struct ctl_window {
	bool	has_cap;		/* cap is known */
	long long cap;			/* QM_UNLIMITED or >= 0, if has_cap */
	bool	override;		/* cap comes from the account's override */
	long long used;			/* the window hash's total; 0 when absent */
	long long messages;
	long long would_refuse;
	bool	exists;			/* the window hash had any of those fields */
};

/*
 * What usage, top and export say about one account in one month. The
 * limit follows quota.lua: the override (an integer >= -1) when set,
 * else the monthly of the plan (the account's, or default_plan).
 */
struct ctl_row {
	char	account[QM_ACCOUNT_MAX + 1];
	char   *plan;			/* in force; NULL: none (no plan, no default) */
	bool	plan_default;		/* from default_plan, not the account */
	bool	recorded;		/* plan and limit from the month's usage (row_fill) */
	bool	has_limit;		/* limit is known */
	long long limit;		/* QM_UNLIMITED or >= 0, if has_limit */
	bool	override;		/* limit comes from the account's override */
	bool	suspended;
	enum qm_status status;		/* what the milter would decide now */
	long long used;			/* total */
	long long messages;
	long long refused;
	long long would_refuse;
	long long *cats;		/* conf->category_count, in conf order */
	bool	exists;			/* the usage hash had any field */
	bool	windows;		/* the month is this one: win[] filled */
	struct ctl_window win[2];	/* this day, this hour (enum month_window) */
	long long rank;			/* what top sorts by */
};

/* ctl_fail - print "quota-milter-ctl: ..." on stderr and exit with status */
void	ctl_fail(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

/* ctl_warn - print "quota-milter-ctl: warning: ..." on stderr */
void	ctl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ctl_int - parse an optional '-' and 1..18 digits; false if anything else */
bool	ctl_int(const char *s, size_t len, long long *out);

/*
 * row_init - an empty row for account; row_free releases what it holds.
 * row_fill - the row of month from the replies of HMGET account plan
 * limit suspended limit_daily limit_hourly (acct) and HMGET usage total
 * messages refused would_refuse CATEGORY... plan limit (usage), and for
 * the current month HMGET of this day's and this hour's hashes total
 * messages would_refuse (win[], NULL for another month). For a month other than
 * the current one, the plan and limit are those its usage recorded (of
 * its last charge or refusal: what it was counted under), if any; for
 * the current month, the account's now (what the next message meets).
 * Returns false with err when a reply is not what those commands answer
 * (a key of another type, say).
 */
void	row_init(struct ctl *ctl, struct ctl_row *row, const char *account);
void	row_free(struct ctl_row *row);
bool	row_fill(struct ctl *ctl, struct ctl_row *row, const char *month,
		const redisReply *acct, const redisReply *usage, redisReply *const *win,
		char *err, size_t errlen);

/*
 * row_commands - the commands row_fill() wants, into cmds[0..ROW_CMDS-1]:
 * the account, the month, and for the current month its day and hour.
 * Returns how many (2 or 4), 0 when a key cannot be built. The argv
 * arrays live in store, which must outlive the commands.
 */
#define ROW_CMDS	4
struct row_store {
	char	akey[KEYS_MAX];
	char	ukey[KEYS_MAX];
	char	wkey[2][KEYS_MAX];
	const char *aargv[7];
	const char *wargv[2][5];
	const char **uargv;		/* malloc'd: 8 + categories */
};
size_t	row_commands(struct ctl *ctl, const char *account, const char *month,
		struct row_store *store, struct redis_cmd *cmds);
void	row_store_free(struct row_store *store);

/* rows_fetch - fill rows[0..count-1] (row_init done) in pipelined batches */
int	rows_fetch(struct ctl *ctl, struct ctl_row *rows, size_t count, const char *month,
		char *err, size_t errlen);

/*
 * scan_usage - every account with a usage hash in month, by SCAN with
 * MATCH and COUNT (never KEYS). fn gets the accounts batch by batch (an
 * account may come twice: SCAN's own guarantee); a non-zero return
 * stops the scan and is returned.
 */
typedef int (*scan_fn) (struct ctl *ctl, char **accounts, size_t count, void *arg,
			char *err, size_t errlen);
int	scan_usage(struct ctl *ctl, const char *month, scan_fn fn, void *arg,
		char *err, size_t errlen);

/*
 * scan_keys - every key built like sample (a key made with the id "X"
 * where its braces go), by SCAN MATCH COUNT: fn gets each batch's ids,
 * the untrusted bytes between the braces of keys with exactly sample's
 * head and tail (pointers valid during the call only)
 */
#define SCAN_PLACEHOLDER	"X"
typedef int (*scan_keys_fn) (struct ctl *ctl, const char **ids, const size_t *lens,
			     size_t count, void *arg, char *err, size_t errlen);
int	scan_keys(struct ctl *ctl, const char *sample, scan_keys_fn fn, void *arg,
		char *err, size_t errlen);

/* utc_text - unix seconds as 2026-01-31T12:00:00Z into buf, "-" when out of range */
const char *utc_text(long long t, char *buf, size_t len);

/* fleet_hosts, fleet_metrics - the hosts and metrics commands (ctl/fleet.c) */
int	fleet_hosts(struct ctl *ctl);
int	fleet_metrics(struct ctl *ctl, const char *month);

/*
 * What top ranks by: the month's total, or this day's or this hour's
 * (CTL_BY_DAY and CTL_BY_HOUR are the month_window values).
 */
enum ctl_by { CTL_BY_DAY = MONTH_WINDOW_DAY, CTL_BY_HOUR = MONTH_WINDOW_HOUR, CTL_BY_MONTH };

/* top_run - the n accounts with the highest total in month, or in now's window */
int	top_run(struct ctl *ctl, const char *month, enum ctl_by by, size_t n);

/* export_run - every account with usage in month, as CSV (or JSON) */
int	export_run(struct ctl *ctl, const char *month);

/* Output helpers, ctl/output.c. */
struct table;
struct table *table_create(size_t ncols, const char *const *heads, const bool *right);
void	table_add(struct table *t, const char *const *cells);

/* xcalloc - calloc, or exit on out of memory */
void   *xcalloc(size_t n, size_t size);

/*
 * ctl_grow - v (capacity *cap elements of size bytes) with room for need,
 * its capacity doubled from first as often as needed; exits on out of memory
 */
void   *ctl_grow(void *v, size_t *cap, size_t need, size_t size, size_t first);
void	table_print(struct table *t, FILE *fp);
void	table_free(struct table *t);

void	json_str(FILE *fp, const char *s, size_t len);
void	json_cstr(FILE *fp, const char *s);
void	csv_field(FILE *fp, const char *s);
char   *text_clean(const char *s, size_t len);

/*
 * limit_left - limit - used, at least 0; -1 when unlimited; false when
 * the limit is not known. limit_text, left_text - the limit and that for
 * people: "10000", "unlimited" or "-" (unknown), into buf when a number.
 * row_limit_text etc. - a row's cells.
 */
bool	limit_left(bool known, long long limit, long long used, long long *out);
const char *limit_text(bool known, long long limit, char *buf, size_t len);
const char *left_text(bool known, long long limit, long long used, char *buf, size_t len);
const char *row_limit_text(const struct ctl_row *row, char *buf, size_t len);
const char *row_remaining_text(const struct ctl_row *row, char *buf, size_t len);
const char *row_percent_text(const struct ctl_row *row, char *buf, size_t len);
bool	row_remaining(const struct ctl_row *row, long long *out);
bool	row_percent(const struct ctl_row *row, long long *out);

/*
 * limit_source - where a limit or cap comes from, for people and JSON:
 * "override", "plan", or NULL when not known
 */
const char *limit_source(bool override, bool known);

/*
 * row_json - the row as a JSON object left open (the caller adds "}"):
 * month if not NULL; then "daily" and "hourly" (null but for the current
 * month); full adds messages, categories, refused, would_refuse.
 */
void	row_json(struct ctl *ctl, const struct ctl_row *row, const char *month, bool full, FILE *fp);

#endif
