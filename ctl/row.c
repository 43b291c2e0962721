/*
 * row.c - one account's plan, limit and month, as the milter sees them
 *
 * The rules are those of counters/quota.lua, so that what the operator
 * reads is what the next message meets: the limit is the account's
 * override when it holds an integer >= -1 (up to QM_COUNT_DIGITS
 * digits), else the monthly of its plan, else of default_plan; suspended
 * means the field is exactly "1".
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* reply_str - a string reply's text, or NULL for nil (or anything else) */
static const redisReply *
reply_str(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_STRING ? r : NULL;
}

/* ctl_int - an optional '-' and 1..18 digits */
bool
ctl_int(const char *s, size_t len, long long *out)
{
	size_t	i = 0;
	long long v = 0;
	bool	neg = false;

	if (len > 0 && s[0] == '-') {
		neg = true;
		i = 1;
	}
	if (len == i || len - i > 18)
		return false;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = neg ? -v : v;
	return true;
}

/* override_int - the limit field as quota.lua reads it: '-'? and 1..QM_COUNT_DIGITS digits, >= -1 */
static bool
override_int(const redisReply *r, long long *out)
{
	size_t	digits;

	if (r == NULL)
		return false;
	digits = r->len - (r->len > 0 && r->str[0] == '-');
	return digits >= 1 && digits <= QM_COUNT_DIGITS && ctl_int(r->str, r->len, out) && *out >= -1;
}

/* this_month - the month of now in the conf's time zone, "" outside 1970-2199 */
static const char *
this_month(struct ctl *ctl)
{
	static char month[MONTH_KEY_LEN];

	if (!month_of(ctl->months, time(NULL), month))
		month[0] = 0;
	return month;
}

/* row_init - an empty row for an account */
void
row_init(struct ctl *ctl, struct ctl_row *row, const char *account)
{
	memset(row, 0, sizeof(*row));
	snprintf(row->account, sizeof(row->account), "%s", account);
	if ((row->cats = calloc(ctl->conf->category_count + 1, sizeof(long long))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	row->status = QM_STATUS_OK;
}

/* row_free - release what a row holds */
void
row_free(struct ctl_row *row)
{
	free(row->plan);
	free(row->cats);
	row->plan = NULL;
	row->cats = NULL;
}

/* row_count - one usage field: 0 when absent; warned and 0 when not an integer */
static long long
row_count(const struct ctl_row *row, const redisReply *r, const char *field, bool *exists)
{
	long long v;

	if (reply_str(r) == NULL)
		return 0;
	*exists = true;
	if (!ctl_int(r->str, r->len, &v) || v < 0) {
		ctl_warn("usage of account %s: field %s is not a count, taken as 0", row->account, field);
		return 0;
	}
	return v;
}

/* row_fill - the row from its two HMGET replies */
bool
row_fill(struct ctl *ctl, struct ctl_row *row, const char *month, const redisReply *acct,
	 const redisReply *usage, char *err, size_t errlen)
{
	const struct qm_conf *conf = ctl->conf;
	const struct qm_plan *plan = NULL;
	const redisReply *p;
	size_t	ncat = conf->category_count;
	long long override, recorded;

	for (int i = 0; i < 2; i++) {
		const redisReply *r = i == 0 ? acct : usage;
		size_t	want = i == 0 ? 3 : 6 + ncat;

		if (r->type == REDIS_REPLY_ERROR) {
			snprintf(err, errlen, "account %s: Redis: %.*s", row->account, (int) r->len, r->str);
			return false;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != want) {
			snprintf(err, errlen, "account %s: unexpected reply from Redis", row->account);
			return false;
		}
	}

	/*
	 * The plan: of the month's usage for another month, else of the
	 * account hash (plan, limit, suspended).
	 */
	free(row->plan);
	row->plan = NULL;
	row->recorded = strcmp(month, this_month(ctl)) != 0
	    && reply_str(usage->element[4 + ncat]) != NULL
	    && override_int(reply_str(usage->element[5 + ncat]), &recorded);
	if ((p = reply_str(row->recorded ? usage->element[4 + ncat] : acct->element[0])) != NULL
	    && p->len > 0) {
		/* A NUL inside would cut the name short: make it a '?', no plan's name. */
		if ((row->plan = malloc(p->len + 1)) == NULL)
			ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
		for (size_t i = 0; i < p->len; i++)
			row->plan[i] = p->str[i] ? p->str[i] : '?';
		row->plan[p->len] = 0;
		row->plan_default = false;
	} else if (row->recorded) {
		row->plan = NULL;
	} else if (conf->default_plan != NULL) {
		if ((row->plan = strdup(conf->default_plan)) == NULL)
			ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
		row->plan_default = true;
	}
	if (row->plan != NULL)
		plan = conf_plan(conf, row->plan);
	row->override = override_int(reply_str(acct->element[1]), &override);
	p = reply_str(acct->element[2]);
	row->suspended = p != NULL && p->len == 1 && p->str[0] == '1';

	/* The usage hash. */
	row->exists = false;
	row->used = row_count(row, usage->element[0], USAGE_TOTAL, &row->exists);
	row->messages = row_count(row, usage->element[1], USAGE_MESSAGES, &row->exists);
	row->refused = row_count(row, usage->element[2], USAGE_REFUSED, &row->exists);
	row->would_refuse = row_count(row, usage->element[3], USAGE_WOULD_REFUSE, &row->exists);
	for (size_t i = 0; i < ncat; i++)
		row->cats[i] = row_count(row, usage->element[4 + i], conf->categories[i].name,
					 &row->exists);

	/* The limit and the decision, in quota.lua's order. */
	row->has_limit = row->override || plan != NULL;
	row->limit = row->override ? override : plan != NULL ? plan->monthly : 0;
	if (row->recorded) {
		row->override = false;
		row->has_limit = true;
		row->limit = recorded;
	}
	if (row->recorded)
		row->status = row->limit == QM_UNLIMITED || row->used < row->limit
		    ? QM_STATUS_OK : QM_STATUS_EXHAUSTED;
	else if (row->suspended)
		row->status = QM_STATUS_SUSPENDED;
	else if (row->plan == NULL)
		row->status = QM_STATUS_NO_PLAN;
	else if (plan == NULL)
		row->status = QM_STATUS_UNKNOWN_PLAN;
	else if (plan->monthly == 0 && !row->override)
		row->status = QM_STATUS_NO_MAIL;
	else if (row->limit == QM_UNLIMITED || row->used < row->limit)
		row->status = QM_STATUS_OK;
	else
		row->status = QM_STATUS_EXHAUSTED;
	return true;
}

/* row_commands - HMGET of the account hash and of the month's usage hash */
bool
row_commands(struct ctl *ctl, const char *account, const char *month,
	     struct row_store *store, struct redis_cmd *cmds)
{
	const struct qm_conf *conf = ctl->conf;
	size_t	ncat = conf->category_count;

	store->uargv = NULL;
	if (keys_account(store->akey, conf->redis.prefix, account) == 0
	    || keys_usage(store->ukey, conf->redis.prefix, account, month) == 0)
		return false;
	store->aargv[0] = "HMGET";
	store->aargv[1] = store->akey;
	store->aargv[2] = "plan";
	store->aargv[3] = "limit";
	store->aargv[4] = "suspended";
	if ((store->uargv = calloc(8 + ncat, sizeof(char *))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	store->uargv[0] = "HMGET";
	store->uargv[1] = store->ukey;
	store->uargv[2] = USAGE_TOTAL;
	store->uargv[3] = USAGE_MESSAGES;
	store->uargv[4] = USAGE_REFUSED;
	store->uargv[5] = USAGE_WOULD_REFUSE;
	for (size_t i = 0; i < ncat; i++)
		store->uargv[6 + i] = conf->categories[i].name;
	store->uargv[6 + ncat] = USAGE_PLAN;
	store->uargv[7 + ncat] = USAGE_LIMIT;
	cmds[0] = (struct redis_cmd) {5, store->aargv, NULL};
	cmds[1] = (struct redis_cmd) {(int) (8 + ncat), store->uargv, NULL};
	return true;
}

/* row_store_free - release what row_commands() allocated */
void
row_store_free(struct row_store *store)
{
	free(store->uargv);
	store->uargv = NULL;
}

/* rows_fetch - fill rows in batches of CTL_BATCH accounts, one round trip each */
int
rows_fetch(struct ctl *ctl, struct ctl_row *rows, size_t count, const char *month,
	   char *err, size_t errlen)
{
	struct row_store *store;
	struct redis_cmd *cmds;
	redisReply **replies;
	int	rc = 0;

	store = calloc(CTL_BATCH, sizeof(*store));
	cmds = calloc(2 * CTL_BATCH, sizeof(*cmds));
	replies = calloc(2 * CTL_BATCH, sizeof(*replies));
	if (store == NULL || cmds == NULL || replies == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	for (size_t done = 0; done < count && rc == 0; done += CTL_BATCH) {
		size_t	n = count - done < CTL_BATCH ? count - done : CTL_BATCH;

		for (size_t i = 0; i < n; i++) {
			if (!row_commands(ctl, rows[done + i].account, month, &store[i], &cmds[2 * i])) {
				/* Accounts come from keys that keys_usage() rebuilt: cannot happen. */
				snprintf(err, errlen, "account %s: cannot build its keys", rows[done + i].account);
				for (size_t j = 0; j < i; j++)
					row_store_free(&store[j]);
				rc = -1;
				break;
			}
		}
		if (rc != 0)
			break;
		if (redis_pool_run(ctl->pool, cmds, 2 * n, replies, err, errlen) < 0)
			rc = -1;
		for (size_t i = 0; i < n; i++) {
			if (rc == 0 && !row_fill(ctl, &rows[done + i], month, replies[2 * i],
						 replies[2 * i + 1], err, errlen))
				rc = -1;
			freeReplyObject(replies[2 * i]);
			freeReplyObject(replies[2 * i + 1]);
			row_store_free(&store[i]);
		}
	}
	free(store);
	free(cmds);
	free(replies);
	return rc;
}

/* row_remaining - limit - used, at least 0; -1 when unlimited; false when unknown */
bool
row_remaining(const struct ctl_row *row, long long *out)
{
	if (!row->has_limit)
		return false;
	if (row->limit == QM_UNLIMITED)
		*out = -1;
	else
		*out = row->used < row->limit ? row->limit - row->used : 0;
	return true;
}

/* row_percent - used * 100 / limit, rounded down; false for an unknown, 0 or unlimited limit */
bool
row_percent(const struct ctl_row *row, long long *out)
{
	if (!row->has_limit || row->limit <= 0)
		return false;
	if (row->used <= LLONG_MAX / 100)
		*out = row->used * 100 / row->limit;
	else
		*out = (long long) ((long double) row->used * 100 / row->limit);
	return true;
}

/* row_limit_text - "10000", "unlimited" or "-" (unknown) */
const char *
row_limit_text(const struct ctl_row *row, char *buf, size_t len)
{
	if (!row->has_limit)
		return "-";
	if (row->limit == QM_UNLIMITED)
		return "unlimited";
	snprintf(buf, len, "%lld", row->limit);
	return buf;
}

/* row_remaining_text - "1000", "unlimited" or "-" (unknown) */
const char *
row_remaining_text(const struct ctl_row *row, char *buf, size_t len)
{
	long long v;

	if (!row_remaining(row, &v))
		return "-";
	if (v < 0)
		return "unlimited";
	snprintf(buf, len, "%lld", v);
	return buf;
}

/* row_percent_text - "90%" or "-" */
const char *
row_percent_text(const struct ctl_row *row, char *buf, size_t len)
{
	long long v;

	if (!row_percent(row, &v))
		return "-";
	snprintf(buf, len, "%lld%%", v);
	return buf;
}

/* json_num_or_null - a number, or null when not known */
static void
json_num_or_null(FILE *fp, bool known, long long v)
{
	if (known)
		fprintf(fp, "%lld", v);
	else
		fputs("null", fp);
}

/*
 * row_json - one account as a JSON object, left open: the caller may add
 * members and closes it. Unlimited is -1 in limit and remaining; a value
 * that cannot be known (no plan, a plan the conf does not define, a
 * percent of a limit 0 or unlimited) is null.
 */
void
row_json(struct ctl *ctl, const struct ctl_row *row, const char *month, bool full, FILE *fp)
{
	long long v;
	bool	known;

	fputs("{\"account\":", fp);
	json_cstr(fp, row->account);
	if (month != NULL) {
		fputs(",\"month\":", fp);
		json_cstr(fp, month);
	}
	fputs(",\"plan\":", fp);
	json_cstr(fp, row->plan);
	fputs(",\"plan_source\":", fp);
	json_cstr(fp, row->recorded ? "month" : row->plan == NULL ? NULL
		  : row->plan_default ? "default_plan" : "account");
	fputs(",\"limit\":", fp);
	json_num_or_null(fp, row->has_limit, row->limit);
	fputs(",\"limit_source\":", fp);
	json_cstr(fp, row->recorded ? "month" : row->override ? "override"
		  : row->has_limit ? "plan" : NULL);
	fprintf(fp, ",\"used\":%lld,\"remaining\":", row->used);
	known = row_remaining(row, &v);
	json_num_or_null(fp, known, v);
	fputs(",\"percent\":", fp);
	known = row_percent(row, &v);
	json_num_or_null(fp, known, v);
	fprintf(fp, ",\"status\":\"%s\",\"suspended\":%s", counters_status_name(row->status),
		row->suspended ? "true" : "false");
	if (full) {
		fprintf(fp, ",\"messages\":%lld,\"categories\":{", row->messages);
		for (size_t i = 0; i < ctl->conf->category_count; i++) {
			if (i > 0)
				putc(',', fp);
			json_cstr(fp, ctl->conf->categories[i].name);
			fprintf(fp, ":%lld", row->cats[i]);
		}
		fprintf(fp, "},\"refused\":%lld,\"would_refuse\":%lld", row->refused, row->would_refuse);
	}
}
