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

/* One run of the program. */
struct ctl {
	struct qm_conf *conf;
	struct redis_pool *pool;	/* one connection */
	struct month_table *months;	/* the conf's time zone */
	bool	json;			/* --json */
	char	events[KEYS_MAX];	/* PREFIXevents */
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
 * limit suspended (acct) and HMGET usage total messages refused
 * would_refuse CATEGORY... plan limit (usage). For a month other than
 * the current one, the plan and limit are those its usage recorded (of
 * its last charge or refusal: what it was counted under), if any; for
 * the current month, the account's now (what the next message meets).
 * Returns false with err when a reply is not what those commands answer
 * (a key of another type, say).
 */
void	row_init(struct ctl *ctl, struct ctl_row *row, const char *account);
void	row_free(struct ctl_row *row);
bool	row_fill(struct ctl *ctl, struct ctl_row *row, const char *month,
		const redisReply *acct, const redisReply *usage, char *err, size_t errlen);

/*
 * row_commands - the two commands row_fill() wants, into cmds[0..1].
 * The argv arrays live in store, which must outlive the commands.
 */
struct row_store {
	char	akey[KEYS_MAX];
	char	ukey[KEYS_MAX];
	const char *aargv[5];
	const char **uargv;		/* malloc'd: 8 + categories */
};
bool	row_commands(struct ctl *ctl, const char *account, const char *month,
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

/* fleet_hosts, fleet_metrics - the hosts and metrics commands (ctl/fleet.c) */
int	fleet_hosts(struct ctl *ctl);
int	fleet_metrics(struct ctl *ctl, const char *month);

/* top_run - the n accounts with the highest total in month */
int	top_run(struct ctl *ctl, const char *month, size_t n);

/* export_run - every account with usage in month, as CSV (or JSON) */
int	export_run(struct ctl *ctl, const char *month);

/* Output helpers, ctl/output.c. */
struct table;
struct table *table_create(size_t ncols, const char *const *heads, const bool *right);
void	table_add(struct table *t, const char *const *cells);
void	table_print(struct table *t, FILE *fp);
void	table_free(struct table *t);

void	json_str(FILE *fp, const char *s, size_t len);
void	json_cstr(FILE *fp, const char *s);
void	csv_field(FILE *fp, const char *s);
char   *text_clean(const char *s, size_t len);

/* row_limit_text etc. - a row's cells for people */
const char *row_limit_text(const struct ctl_row *row, char *buf, size_t len);
const char *row_remaining_text(const struct ctl_row *row, char *buf, size_t len);
const char *row_percent_text(const struct ctl_row *row, char *buf, size_t len);
bool	row_remaining(const struct ctl_row *row, long long *out);
bool	row_percent(const struct ctl_row *row, long long *out);

/*
 * row_json - the row as a JSON object left open (the caller adds "}"):
 * month if not NULL; full adds messages, categories, refused, would_refuse.
 */
void	row_json(struct ctl *ctl, const struct ctl_row *row, const char *month, bool full, FILE *fp);

#endif
