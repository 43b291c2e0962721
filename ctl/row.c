/*
 * row.c - one account's plan, limit and month, as the milter sees them
 *
 * The rules are those of counters/quota.lua, so that what the operator
 * reads is what the next message meets: the limit is the account's
 * override when it holds an integer >= -1 (up to QM_COUNT_DIGITS
 * digits), else the monthly of its plan, else of default_plan; suspended
 * means the field is exactly "1". The caps of this day and this hour
 * follow the same rule with limit_daily, limit_hourly and the plan's
 * daily, hourly.
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

const struct ctl_kind ctl_kinds[2] = {
	[MONTH_WINDOW_DAY] = {"daily", "limit_daily"},
	[MONTH_WINDOW_HOUR] = {"hourly", "limit_hourly"},
};

/* ctl_kind_find - the kind of that name */
bool
ctl_kind_find(const char *name, enum month_window *kind)
{
	for (int k = MONTH_WINDOW_DAY; k <= MONTH_WINDOW_HOUR; k++) {
		if (strcmp(ctl_kinds[k].name, name) == 0) {
			*kind = (enum month_window) k;
			return true;
		}
	}
	return false;
}

/* ctl_clock - this month, day and hour in the conf's time zone, of one reading of the clock */
bool
ctl_clock(struct ctl *ctl)
{
	time_t	now = time(NULL);

	return month_of(ctl->months, now, ctl->month_now)
	    && month_window_of(ctl->months, now, MONTH_WINDOW_DAY, ctl->now[MONTH_WINDOW_DAY].name,
			       &ctl->now[MONTH_WINDOW_DAY].end)
	    && month_window_of(ctl->months, now, MONTH_WINDOW_HOUR, ctl->now[MONTH_WINDOW_HOUR].name,
			       &ctl->now[MONTH_WINDOW_HOUR].end);
}

/* ctl_usage_key - the usage key of a month or of a window */
size_t
ctl_usage_key(struct ctl *ctl, char *buf, const char *account, const char *period)
{
	if (month_valid(period))
		return keys_usage(buf, ctl->conf->redis.prefix, account, period);
	return keys_usage_window(buf, ctl->conf->redis.prefix, account, period);
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

/* row_window - one window's cap and use, from the account's override and the window hash */
static void
row_window(struct ctl *ctl, struct ctl_row *row, enum month_window kind, const redisReply *over,
	   const struct qm_plan *plan, const redisReply *hash)
{
	struct ctl_window *w = &row->win[kind];
	const char *name = ctl->now[kind].name;
	char	field[MONTH_WINDOW_LEN + 32];
	long long v;

	w->override = override_int(reply_str(over), &v);
	w->has_cap = w->override || plan != NULL;
	w->cap = w->override ? v : plan == NULL ? 0
	    : kind == MONTH_WINDOW_DAY ? plan->daily : plan->hourly;
	w->exists = false;
	snprintf(field, sizeof(field), "%s of %s", USAGE_TOTAL, name);
	w->used = row_count(row, hash->element[0], field, &w->exists);
	snprintf(field, sizeof(field), "%s of %s", USAGE_MESSAGES, name);
	w->messages = row_count(row, hash->element[1], field, &w->exists);
	snprintf(field, sizeof(field), "%s of %s", USAGE_WOULD_REFUSE, name);
	w->would_refuse = row_count(row, hash->element[2], field, &w->exists);
}

/* row_full - is the window's cap known, set and reached? */
static bool
row_full(const struct ctl_window *w)
{
	return w->has_cap && w->cap != QM_UNLIMITED && w->used >= w->cap;
}

/* row_fill - the row from its HMGET replies */
bool
row_fill(struct ctl *ctl, struct ctl_row *row, const char *month, const redisReply *acct,
	 const redisReply *usage, redisReply *const *win, char *err, size_t errlen)
{
	const struct qm_conf *conf = ctl->conf;
	const struct qm_plan *plan = NULL;
	const redisReply *p;
	size_t	ncat = conf->category_count;
	long long override, recorded;

	for (int i = 0; i < 4; i++) {
		const redisReply *r = i == 0 ? acct : i == 1 ? usage : win != NULL ? win[i - 2] : NULL;
		size_t	want = i == 0 ? 5 : i == 1 ? 6 + ncat : 3;

		if (r == NULL)
			continue;
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
	row->recorded = strcmp(month, ctl->month_now) != 0
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
	else if (row->limit != QM_UNLIMITED && row->used >= row->limit)
		row->status = QM_STATUS_EXHAUSTED;
	else
		row->status = QM_STATUS_OK;

	/* The windows of now, and their caps after the month (quota.lua's order). */
	row->windows = win != NULL;
	if (row->windows) {
		for (int k = MONTH_WINDOW_DAY; k <= MONTH_WINDOW_HOUR; k++)
			row_window(ctl, row, (enum month_window) k, acct->element[3 + k], plan, win[k]);
		if (row->status == QM_STATUS_OK && row_full(&row->win[MONTH_WINDOW_DAY]))
			row->status = QM_STATUS_DAILY_CAP;
		else if (row->status == QM_STATUS_OK && row_full(&row->win[MONTH_WINDOW_HOUR]))
			row->status = QM_STATUS_HOURLY_CAP;
	}
	return true;
}

/* row_commands - HMGET of the account hash, the month's usage hash, and now's windows */
size_t
row_commands(struct ctl *ctl, const char *account, const char *month,
	     struct row_store *store, struct redis_cmd *cmds)
{
	const struct qm_conf *conf = ctl->conf;
	size_t	ncat = conf->category_count;
	bool	windows = strcmp(month, ctl->month_now) == 0;

	store->uargv = NULL;
	if (keys_account(store->akey, conf->redis.prefix, account) == 0
	    || keys_usage(store->ukey, conf->redis.prefix, account, month) == 0)
		return 0;
	store->aargv[0] = "HMGET";
	store->aargv[1] = store->akey;
	store->aargv[2] = "plan";
	store->aargv[3] = "limit";
	store->aargv[4] = "suspended";
	store->aargv[5] = ctl_kinds[MONTH_WINDOW_DAY].field;
	store->aargv[6] = ctl_kinds[MONTH_WINDOW_HOUR].field;
	for (int k = MONTH_WINDOW_DAY; windows && k <= MONTH_WINDOW_HOUR; k++) {
		if (keys_usage_window(store->wkey[k], conf->redis.prefix, account, ctl->now[k].name) == 0)
			return 0;
		store->wargv[k][0] = "HMGET";
		store->wargv[k][1] = store->wkey[k];
		store->wargv[k][2] = USAGE_TOTAL;
		store->wargv[k][3] = USAGE_MESSAGES;
		store->wargv[k][4] = USAGE_WOULD_REFUSE;
		cmds[2 + k] = (struct redis_cmd) {5, store->wargv[k], NULL};
	}
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
	cmds[0] = (struct redis_cmd) {7, store->aargv, NULL};
	cmds[1] = (struct redis_cmd) {(int) (8 + ncat), store->uargv, NULL};
	return windows ? 4 : 2;
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
	size_t	per = strcmp(month, ctl->month_now) == 0 ? 4 : 2;	/* commands per row */
	int	rc = 0;

	store = calloc(CTL_BATCH, sizeof(*store));
	cmds = calloc(ROW_CMDS * CTL_BATCH, sizeof(*cmds));
	replies = calloc(ROW_CMDS * CTL_BATCH, sizeof(*replies));
	if (store == NULL || cmds == NULL || replies == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	for (size_t done = 0; done < count && rc == 0; done += CTL_BATCH) {
		size_t	n = count - done < CTL_BATCH ? count - done : CTL_BATCH;

		for (size_t i = 0; i < n; i++) {
			if (row_commands(ctl, rows[done + i].account, month, &store[i], &cmds[per * i]) != per) {
				/* Accounts come from keys that keys_usage() rebuilt: cannot happen. */
				snprintf(err, errlen, "account %s: cannot build its keys", rows[done + i].account);
				for (size_t j = 0; j <= i; j++)
					row_store_free(&store[j]);
				rc = -1;
				break;
			}
		}
		if (rc != 0)
			break;
		if (redis_pool_run(ctl->pool, cmds, per * n, replies, err, errlen) < 0)
			rc = -1;
		for (size_t i = 0; i < n; i++) {
			redisReply **r = &replies[per * i];

			if (rc == 0 && !row_fill(ctl, &rows[done + i], month, r[0], r[1],
						 per == 4 ? r + 2 : NULL, err, errlen))
				rc = -1;
			for (size_t j = 0; j < per; j++)
				freeReplyObject(r[j]);
			row_store_free(&store[i]);
		}
	}
	free(store);
	free(cmds);
	free(replies);
	return rc;
}

/* limit_left - limit - used, at least 0; -1 when unlimited; false when unknown */
bool
limit_left(bool known, long long limit, long long used, long long *out)
{
	if (!known)
		return false;
	if (limit == QM_UNLIMITED)
		*out = -1;
	else
		*out = used < limit ? limit - used : 0;
	return true;
}

/* row_remaining - the month's limit - used (limit_left()) */
bool
row_remaining(const struct ctl_row *row, long long *out)
{
	return limit_left(row->has_limit, row->limit, row->used, out);
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

/* limit_text - "10000", "unlimited" or "-" (unknown) */
const char *
limit_text(bool known, long long limit, char *buf, size_t len)
{
	if (!known)
		return "-";
	if (limit == QM_UNLIMITED)
		return "unlimited";
	snprintf(buf, len, "%lld", limit);
	return buf;
}

/* left_text - what is left under a limit: "1000", "unlimited" or "-" (unknown) */
const char *
left_text(bool known, long long limit, long long used, char *buf, size_t len)
{
	long long v;

	if (!limit_left(known, limit, used, &v))
		return "-";
	return limit_text(true, v < 0 ? QM_UNLIMITED : v, buf, len);
}

/* limit_source - "override", "plan" or NULL (unknown) */
const char *
limit_source(bool override, bool known)
{
	return override ? "override" : known ? "plan" : NULL;
}

/* row_limit_text - the month's limit for people */
const char *
row_limit_text(const struct ctl_row *row, char *buf, size_t len)
{
	return limit_text(row->has_limit, row->limit, buf, len);
}

/* row_remaining_text - the month's remaining for people */
const char *
row_remaining_text(const struct ctl_row *row, char *buf, size_t len)
{
	return left_text(row->has_limit, row->limit, row->used, buf, len);
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
 * window_json - a window of now as an object: its name, used, cap
 * (-1 none, null unknown), cap_source, remaining, and when it ends, on
 * the zone's clock as the replies' $retry_after says it and in UTC;
 * full adds messages and would_refuse.
 */
static void
window_json(struct ctl *ctl, const struct ctl_row *row, enum month_window kind, bool full, FILE *fp)
{
	const struct ctl_window *w = &row->win[kind];
	const struct ctl_now *now = &ctl->now[kind];
	char	when[64];
	long long v;
	bool	known;

	fputs("{\"window\":", fp);
	json_cstr(fp, now->name);
	fprintf(fp, ",\"used\":%lld,\"cap\":", w->used);
	json_num_or_null(fp, w->has_cap, w->cap);
	fputs(",\"cap_source\":", fp);
	json_cstr(fp, limit_source(w->override, w->has_cap));
	fputs(",\"remaining\":", fp);
	known = limit_left(w->has_cap, w->cap, w->used, &v);
	json_num_or_null(fp, known, v);
	fputs(",\"reopens\":", fp);
	json_cstr(fp, month_clock(ctl->months, now->end, kind == MONTH_WINDOW_DAY, when, sizeof(when))
		  ? when : NULL);
	fputs(",\"reopens_utc\":", fp);
	json_cstr(fp, utc_text(now->end, when, sizeof(when)));
	if (full)
		fprintf(fp, ",\"messages\":%lld,\"would_refuse\":%lld", w->messages, w->would_refuse);
	putc('}', fp);
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
	json_cstr(fp, row->recorded ? "month" : limit_source(row->override, row->has_limit));
	fprintf(fp, ",\"used\":%lld,\"remaining\":", row->used);
	known = row_remaining(row, &v);
	json_num_or_null(fp, known, v);
	fputs(",\"percent\":", fp);
	known = row_percent(row, &v);
	json_num_or_null(fp, known, v);
	fprintf(fp, ",\"status\":\"%s\",\"suspended\":%s", counters_status_name(row->status),
		row->suspended ? "true" : "false");
	for (int k = MONTH_WINDOW_DAY; k <= MONTH_WINDOW_HOUR; k++) {
		fprintf(fp, ",\"%s\":", ctl_kinds[k].name);
		if (row->windows)
			window_json(ctl, row, (enum month_window) k, full, fp);
		else
			fputs("null", fp);
	}
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
