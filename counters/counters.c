/*
 * counters.c - one run of quota.lua per call (see its header), with keys
 * and arguments built here and the reply checked strictly: anything but
 * {status, plan, limit, used, day_cap, day_used, hour_cap, hour_used}
 * with sane values is an error.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "counters.h"
#include "journal.h"
#include "keys.h"
#include "month.h"
#include "redis.h"
#include "quota_lua.h"

#define COUNTERS_KEYS	7		/* KEYS[] of quota.lua, the windows' included */
#define COUNTERS_MONTH_KEYS 5		/* KEYS[] of a call without windows */
#define COUNTERS_ARGS	13		/* ARGV[] that change from call to call */
#define COUNTERS_NUM	24		/* room for a long long in text */
#define COUNTERS_WINDOW_KEEP 3600	/* a window's hash outlives it by this (s) */

struct counters {
	const struct qm_conf *conf;
	const struct month_table *months;	/* the caller's, not freed here */
	struct redis_pool *pool;
	struct redis_script script;
	char    events[KEYS_MAX];	/* PREFIXevents */
	struct redis_args tail;		/* default plan, warn, the plan table: encoded */
	struct quota_cache *recent;	/* the latest answer per busy account */
};

static const char *const counters_status_names[] = {
	[QM_STATUS_OK] = "ok",
	[QM_STATUS_OVER] = "over",
	[QM_STATUS_EXHAUSTED] = "exhausted",
	[QM_STATUS_NO_MAIL] = "no_mail",
	[QM_STATUS_SUSPENDED] = "suspended",
	[QM_STATUS_NO_PLAN] = "no_plan",
	[QM_STATUS_UNKNOWN_PLAN] = "unknown_plan",
	[QM_STATUS_UNAVAILABLE] = "unavailable",
	[QM_STATUS_DAILY_CAP] = "daily_cap",
	[QM_STATUS_HOURLY_CAP] = "hourly_cap",
};

#define COUNTERS_STATUS_COUNT \
	(sizeof(counters_status_names) / sizeof(counters_status_names[0]))

/* counters_status_name - "ok", "exhausted", ... for logs */
const char *
counters_status_name(enum qm_status status)
{
	if ((size_t) status < COUNTERS_STATUS_COUNT && counters_status_names[status] != NULL)
		return counters_status_names[status];
	return "unknown";
}

/* counters_num - a count in decimal, into buf (COUNTERS_NUM bytes), without printf */
static const char *
counters_num(char *buf, long long n)
{
	char   *p = buf + COUNTERS_NUM - 1;
	unsigned long long u = n < 0 ? 0 - (unsigned long long) n : (unsigned long long) n;

	*p = 0;
	do
		*--p = (char) ('0' + u % 10);
	while ((u /= 10) > 0);
	if (n < 0)
		*--p = '-';
	return p;
}

/*
 * counters_tail - encode the script's last arguments, which only the conf
 * decides: default plan, warn percents ("80,100"), the plan table (name,
 * monthly, daily, hourly). -1 when out of memory.
 */
static int
counters_tail(struct counters *ctr, const struct qm_conf *conf)
{
	size_t	argc = 2 + 4 * conf->plan_count;
	size_t	len = 1 + conf->warn_count * 12;
	const char **argv = calloc(argc, sizeof(*argv));
	char   *warn = malloc(len);
	char   *nums = calloc(3 * conf->plan_count + 1, COUNTERS_NUM);
	int	rc = -1;

	if (argv != NULL && warn != NULL && nums != NULL) {
		warn[0] = 0;
		for (size_t i = 0, pos = 0; i < conf->warn_count; i++)
			pos += (size_t) snprintf(warn + pos, len - pos, "%s%d", i ? "," : "",
						 conf->warn_percent[i]);
		argv[0] = conf->default_plan ? conf->default_plan : "";
		argv[1] = warn;
		for (size_t i = 0; i < conf->plan_count; i++) {
			char   *num = nums + 3 * i * COUNTERS_NUM;

			argv[2 + 4 * i] = conf->plans[i].name;
			argv[3 + 4 * i] = counters_num(num, conf->plans[i].monthly);
			argv[4 + 4 * i] = counters_num(num + COUNTERS_NUM, conf->plans[i].daily);
			argv[5 + 4 * i] = counters_num(num + 2 * COUNTERS_NUM, conf->plans[i].hourly);
		}
		rc = redis_args_make(&ctr->tail, (int) argc, argv);
	}
	free(argv);
	free(warn);
	free(nums);
	return rc;
}

/* counters_create - make the pool for a conf, months from the caller's table */
struct counters *
counters_create(const struct qm_conf *conf, const struct month_table *months,
		char *err, size_t errlen)
{
	struct counters *ctr;

	if ((ctr = calloc(1, sizeof(*ctr))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctr->conf = conf;
	ctr->months = months;
	redis_script_init(&ctr->script, quota_lua);
	if (keys_events(ctr->events, conf->redis.prefix) == 0) {
		snprintf(err, errlen, "Redis prefix \"%s\": up to 64 printable characters, "
			 "no spaces or braces", conf->redis.prefix ? conf->redis.prefix : "");
		goto fail;
	}
	if (conf->keep_months < 0) {
		snprintf(err, errlen, "keep_months must not be negative");
		goto fail;
	}
	if ((ctr->pool = redis_pool_create(&conf->redis, err, errlen)) == NULL)
		goto fail;
	if (counters_tail(ctr, conf) < 0
	    || (ctr->recent = quota_cache_create(QUOTA_CACHE_SLOTS)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	return ctr;

fail:
	counters_free(ctr);
	return NULL;
}

/* counters_free - close every connection and free */
void
counters_free(struct counters *ctr)
{
	if (ctr == NULL)
		return;
	redis_pool_free(ctr->pool);
	redis_script_destroy(&ctr->script);
	redis_args_free(&ctr->tail);
	quota_cache_free(ctr->recent);
	free(ctr);
}

/* counters_pool - the pool inside, for stats */
struct redis_pool *
counters_pool(struct counters *ctr)
{
	return ctr->pool;
}

/* counters_status_parse - the status of a script reply, or -1 */
static int
counters_status_parse(const redisReply *r)
{
	for (size_t i = 0; i < COUNTERS_STATUS_COUNT; i++) {
		if (i == QM_STATUS_UNAVAILABLE)
			continue;
		if (r->len == strlen(counters_status_names[i])
		    && memcmp(r->str, counters_status_names[i], r->len) == 0)
			return (int) i;
	}
	return -1;
}

/* counters_reply - check a script reply and copy it into out */
static int
counters_reply(const redisReply *r, struct qm_quota *out, char *err, size_t errlen)
{
	int     status;
	size_t  len;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 8
	    || r->element[0]->type != REDIS_REPLY_STRING
	    || r->element[1]->type != REDIS_REPLY_STRING
	    || (status = counters_status_parse(r->element[0])) < 0)
		goto bad;
	/* limit, used, day_cap, day_used, hour_cap, hour_used */
	for (size_t i = 2; i < 8; i++)
		if (r->element[i]->type != REDIS_REPLY_INTEGER
		    || r->element[i]->integer < (i % 2 == 0 ? QM_UNLIMITED : 0))
			goto bad;
	out->status = (enum qm_status) status;
	/* A plan name longer than any in the conf is unknown: shortened, for logs. */
	len = r->element[1]->len;
	if (len > QM_NAME_MAX)
		len = QM_NAME_MAX;
	memcpy(out->plan, r->element[1]->str, len);
	out->plan[len] = 0;
	out->limit = r->element[2]->integer;
	out->used = r->element[3]->integer;
	out->day.cap = r->element[4]->integer;
	out->day.used = r->element[5]->integer;
	out->hour.cap = r->element[6]->integer;
	out->hour.used = r->element[7]->integer;
	return 0;

bad:
	snprintf(err, errlen, "Redis: unexpected reply from the quota script");
	return -1;
}

/* A call of the script: what varies from one to the next. */
struct counters_args {
	const char *op;			/* peek, charge, refused, replay, cancel, reset */
	const char *account;
	const char *category;		/* NULL or "": none */
	long long units;
	long long refused;		/* refused units of an older journal entry */
	enum counters_mode mode;
	const char *month;		/* NULL: the month of `now` */
	time_t	now;
	const char *id;			/* refused, replay, cancel: its id; else "" */
	const char *charge_id;		/* charge: its id, NULL for a fresh one */
	const char *hour;		/* replay, cancel: the charge's hour window, ""
					 * none; the other ops: NULL */
};

/* The code that starts every error quota.lua raises itself. */
#define COUNTERS_SCRIPT_ERROR	REDIS_ERROR_PREFIX "QUOTA "

/* counters_fail - format err; COUNTERS_REJECTED: the call can never succeed */
static int
counters_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
counters_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return COUNTERS_REJECTED;
}

/* counters_charge_id_new - a fresh charge id: 64 random bits in hex */
void
counters_charge_id_new(char id[KEYS_CHARGE_ID_LEN + 1])
{
	static _Atomic unsigned long long seq;
	unsigned long long rnd;

	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
		rnd = ((unsigned long long) time(NULL) << 20) ^ ((unsigned long long) getpid() << 40)
		    ^ ++seq;
	for (int i = KEYS_CHARGE_ID_LEN - 1; i >= 0; i--, rnd >>= 4)
		id[i] = "0123456789abcdef"[rnd & 15];
	id[KEYS_CHARGE_ID_LEN] = 0;
}


/*
 * counters_charge_id - the id of the call's charge key: the charge's own
 * (fresh unless the caller chose it), a refusal's, that of a journaled
 * charge, or zeros for the other ops, which never touch the charge key. The
 * pool may send a request twice when a connection ends before any reply
 * byte; the script keeps each outcome under its id for 10 minutes, so
 * the second run counts nothing.
 */
static const char *
counters_charge_id(const struct counters_args *a, char *buf)
{
	/* A refusal, or a journal entry of a charge that may have run. */
	if (keys_charge_id_valid(a->id))
		return a->id;
	if (strcmp(a->op, "charge") != 0)
		return "0000000000000000";
	if (a->charge_id != NULL)
		return a->charge_id;
	counters_charge_id_new(buf);
	return buf;
}

/*
 * counters_window_end - when the window of a name ("YYYY-MM-DD" or
 * "YYYY-MM-DDTHH") ends: the instant its clock time would have with no
 * offset change since its month began, then each half hour on either
 * side up to 6 hours (offset changes, DST) until month_window_of() names
 * it. False when no instant has that name (an hour the clock skips).
 */
static bool
counters_window_end(const struct counters *ctr, const char *name, enum month_window kind,
		    time_t *end)
{
	char	month[MONTH_KEY_LEN], got[MONTH_WINDOW_LEN];
	time_t	guess;
	int	day = (name[8] - '0') * 10 + (name[9] - '0');
	int	hour = kind == MONTH_WINDOW_HOUR ? (name[11] - '0') * 10 + (name[12] - '0') : 0;

	memcpy(month, name, MONTH_KEY_LEN - 1);
	month[MONTH_KEY_LEN - 1] = 0;
	if ((guess = month_start(ctr->months, month, 0)) == (time_t) -1)
		return false;
	guess += ((time_t) (day - 1) * 24 + hour) * 3600;
	for (int k = 0; k <= 24; k++) {
		time_t	t = guess + (k % 2 ? -1 : 1) * (time_t) ((k + 1) / 2) * 1800;

		if (month_window_of(ctr->months, t, kind, got, end) && strcmp(got, name) == 0)
			return true;
	}
	return false;
}

/*
 * counters_windows - the day and hour a call counts in, into out->day and
 * out->hour (name, end): those of `now` for a peek or a charge; for a
 * replay or a cancel, the journaled charge's hour (in the entry's month)
 * and its day, the hour's first 10 characters. The other ops and entries
 * of older versions have none. A window gone (its hash expired) gets no
 * name in the script's ARGV: *live tells which. 1 windows, 0 none, or
 * COUNTERS_REJECTED with err.
 */
static int
counters_windows(const struct counters *ctr, const struct counters_args *a,
		 struct qm_quota *out, bool live[2], char *err, size_t errlen)
{
	time_t	wall = time(NULL);

	live[0] = live[1] = true;
	if (a->hour == NULL && (strcmp(a->op, "peek") == 0 || strcmp(a->op, "charge") == 0)) {
		if (!month_window_of(ctr->months, a->now, MONTH_WINDOW_DAY, out->day.name,
				     &out->day.end)
		    || !month_window_of(ctr->months, a->now, MONTH_WINDOW_HOUR, out->hour.name,
					&out->hour.end))
			return counters_fail(err, errlen, "time %lld outside the months 1970-2199",
					     (long long) a->now);
		return 1;
	}
	if (a->hour == NULL || a->hour[0] == 0)
		return 0;
	if (!month_hour_of(a->hour, out->month))
		return counters_fail(err, errlen, "invalid hour \"%.16s\" of month %s", a->hour,
				     out->month);
	snprintf(out->hour.name, sizeof(out->hour.name), "%s", a->hour);
	snprintf(out->day.name, sizeof(out->day.name), "%.10s", a->hour);
	if (!counters_window_end(ctr, out->day.name, MONTH_WINDOW_DAY, &out->day.end)
	    || !counters_window_end(ctr, out->hour.name, MONTH_WINDOW_HOUR, &out->hour.end))
		return counters_fail(err, errlen, "hour %s: not a time of this time zone",
				     a->hour);
	live[0] = out->day.end + COUNTERS_WINDOW_KEEP > wall;
	live[1] = out->hour.end + COUNTERS_WINDOW_KEEP > wall;
	return 1;
}

/* counters_call - one run of the quota script */
static int
counters_call(struct counters *ctr, const struct counters_args *a, struct qm_quota *out,
	      char *err, size_t errlen)
{
	char    kaccount[KEYS_MAX], kusage[KEYS_MAX], kwarned[KEYS_MAX], kcharge[KEYS_MAX];
	char    kday[KEYS_MAX], khour[KEYS_MAX];
	char    charge_id[KEYS_CHARGE_ID_LEN + 1];
	char    units_text[COUNTERS_NUM], expire_text[COUNTERS_NUM], refused_text[COUNTERS_NUM];
	char    day_expire[COUNTERS_NUM], hour_expire[COUNTERS_NUM];
	const char *why, *id, *category = a->category ? a->category : "";
	const char *argv[COUNTERS_KEYS + COUNTERS_ARGS];
	const char **arg;
	redisReply *reply;
	time_t  expireat;
	bool	live[2];
	int     rc, nkeys, windows;

	memset(out, 0, sizeof(*out));
	out->status = QM_STATUS_UNAVAILABLE;
	out->day.cap = out->hour.cap = QM_UNLIMITED;
	if (!account_valid(a->account, &why))
		return counters_fail(err, errlen, "invalid account: %s", why);
	if (*category != 0 && (keys_reserved_field(category) || !conf_name_valid(category)))
		return counters_fail(err, errlen, "invalid category name \"%.64s\"", category);
	if (a->units < 0 || a->refused < 0)
		return counters_fail(err, errlen, "negative units");
	if (a->charge_id != NULL && !keys_charge_id_valid(a->charge_id))
		return counters_fail(err, errlen, "invalid charge id");
	if (a->month != NULL) {
		if (!month_valid(a->month))
			return counters_fail(err, errlen, "invalid month \"%.16s\"", a->month);
		memcpy(out->month, a->month, MONTH_KEY_LEN);
	} else if (!month_of(ctr->months, a->now, out->month)) {
		return counters_fail(err, errlen, "time %lld outside the months 1970-2199",
				     (long long) a->now);
	}
	if ((expireat = month_start(ctr->months, out->month, ctr->conf->keep_months + 1))
	    == (time_t) -1)
		return counters_fail(err, errlen, "month %s plus keep_months outside 1970-2199",
				     out->month);
	if ((windows = counters_windows(ctr, a, out, live, err, errlen)) < 0)
		return windows;
	if (keys_account(kaccount, ctr->conf->redis.prefix, a->account) == 0
	    || keys_usage(kusage, ctr->conf->redis.prefix, a->account, out->month) == 0
	    || keys_warned(kwarned, ctr->conf->redis.prefix, a->account, out->month) == 0
	    || keys_charge(kcharge, ctr->conf->redis.prefix, a->account,
			   (id = counters_charge_id(a, charge_id))) == 0
	    || (windows
		&& (keys_usage_window(kday, ctr->conf->redis.prefix, a->account,
				      out->day.name) == 0
		    || keys_usage_window(khour, ctr->conf->redis.prefix, a->account,
					 out->hour.name) == 0)))
		return counters_fail(err, errlen, "cannot build the Redis keys of account %s",
				     a->account);
	if (strcmp(a->op, "charge") == 0)
		snprintf(out->charge_id, sizeof(out->charge_id), "%s", id);

	arg = argv;
	*arg++ = kaccount;
	*arg++ = kusage;
	*arg++ = kwarned;
	*arg++ = ctr->events;
	*arg++ = kcharge;
	if (windows) {
		*arg++ = kday;
		*arg++ = khour;
	}
	nkeys = (int) (arg - argv);
	*arg++ = a->op;
	*arg++ = counters_num(units_text, a->units);
	*arg++ = category;
	*arg++ = a->mode == COUNTERS_MONITOR_RCPT ? "2" : a->mode == COUNTERS_MONITOR ? "1" : "0";
	*arg++ = counters_num(expire_text, (long long) expireat);
	*arg++ = out->month;
	*arg++ = a->account;
	*arg++ = counters_num(refused_text, a->refused);
	*arg++ = a->id;
	*arg++ = windows && live[0] ? out->day.name : "";
	*arg++ = counters_num(day_expire, windows ? (long long) out->day.end + COUNTERS_WINDOW_KEEP
			      : 0);
	*arg++ = windows && live[1] ? out->hour.name : "";
	*arg++ = counters_num(hour_expire, windows ? (long long) out->hour.end + COUNTERS_WINDOW_KEEP
			      : 0);

	reply = redis_pool_eval(ctr->pool, &ctr->script, nkeys, (int) (arg - argv), argv, NULL,
				&ctr->tail, &out->may_have_run, err, errlen);
	if (reply == NULL)
		return strncmp(err, COUNTERS_SCRIPT_ERROR, strlen(COUNTERS_SCRIPT_ERROR)) == 0
		    ? COUNTERS_REJECTED : -1;
	rc = counters_reply(reply, out, err, errlen);
	freeReplyObject(reply);
	if (rc < 0)
		out->status = QM_STATUS_UNAVAILABLE;
	return rc;
}

/* mono_ms - milliseconds on the monotonic clock */
static long long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* counters_remember - keep what a peek or charge answered (rc 0); rc */
static int
counters_remember(struct counters *ctr, const char *account, const struct qm_quota *q, int rc)
{
	if (rc == 0)
		quota_cache_put(ctr->recent, account, q, mono_ms());
	return rc;
}

/* counters_recent - the account's latest answer, if under QUOTA_CACHE_MS old */
bool
counters_recent(struct counters *ctr, const char *account, struct qm_quota *out)
{
	return quota_cache_get(ctr->recent, account, mono_ms(), out);
}

/* counters_peek - plan, limit, suspension and total, writing nothing */
int
counters_peek(struct counters *ctr, const char *account, time_t now,
	      struct qm_quota *out, char *err, size_t errlen)
{
	struct counters_args a = {"peek", account, "", 0, 0, COUNTERS_ENFORCE, NULL, now, "", NULL,
		NULL};

	return counters_remember(ctr, account, out, counters_call(ctr, &a, out, err, errlen));
}

/* counters_charge - count units if they fit (or monitor), under charge_id */
int
counters_charge(struct counters *ctr, const char *charge_id, const char *account,
		const char *category, long long units, enum counters_mode mode,
		time_t now, struct qm_quota *out, char *err, size_t errlen)
{
	struct counters_args a = {"charge", account, category, units, 0, mode, NULL,
		now, "", charge_id, NULL};

	return counters_remember(ctr, account, out, counters_call(ctr, &a, out, err, errlen));
}

/* counters_refused - record units refused for good, once per id, in their month */
int
counters_refused(struct counters *ctr, const char *id, const char *account,
		 const char *month, long long units, time_t now, char *err, size_t errlen)
{
	struct counters_args a = {"refused", account, "", units, 0, COUNTERS_ENFORCE, month,
		now, id, NULL, NULL};
	struct qm_quota out;

	if (!keys_charge_id_valid(id))
		return counters_fail(err, errlen, "invalid refusal id");
	return counters_call(ctr, &a, &out, err, errlen);
}

/* counters_reset - delete a month's usage and its announced thresholds */
int
counters_reset(struct counters *ctr, const char *account, const char *month,
	       bool *deleted, char *err, size_t errlen)
{
	struct counters_args a = {"reset", account, "", 0, 0, COUNTERS_ENFORCE, month,
		0, "", NULL, NULL};
	struct qm_quota out;
	int	rc = counters_call(ctr, &a, &out, err, errlen);

	*deleted = rc == 0 && out.used > 0;
	return rc;
}

/* counters_month - the month of an instant in the conf's time zone */
int
counters_month(struct counters *ctr, time_t t, char *buf)
{
	return month_of(ctr->months, t, buf) ? 0 : -1;
}

/* counters_hour - the hour window of an instant in the conf's time zone */
int
counters_hour(struct counters *ctr, time_t t, char *buf)
{
	return month_window_of(ctr->months, t, MONTH_WINDOW_HOUR, buf, NULL) ? 0 : -1;
}

/*
 * counters_replay - apply a journaled count once, to its own month, or
 * settle a journaled charge in doubt
 */
int
counters_replay(struct counters *ctr, const struct journal_entry *entry,
		char *err, size_t errlen)
{
	struct counters_args a = {entry->cancel ? "cancel" : "replay", entry->account,
		entry->category, entry->units, entry->refused, COUNTERS_MONITOR, entry->month, 0,
		entry->id, NULL, entry->window};
	struct qm_quota out;
	time_t  expireat;

	if (!journal_entry_valid(entry))
		return counters_fail(err, errlen, "invalid journal entry");

	/*
	 * A month whose usage hash has expired already: EXPIREAT in the past
	 * would delete the hash with the rest of that month. Nothing to add to.
	 */
	if (month_valid(entry->month)
	    && (expireat = month_start(ctr->months, entry->month, ctr->conf->keep_months + 1))
	    != (time_t) -1 && expireat <= time(NULL))
		return 0;
	if (entry->refusal)
		return counters_refused(ctr, entry->id, entry->account, entry->month,
					entry->refused, 0, err, errlen);
	return counters_call(ctr, &a, &out, err, errlen);
}

/* counters_journal_apply - counters_replay() for journal_replay() */
int
counters_journal_apply(void *ctr, const struct journal_entry *entry, char *err, size_t errlen)
{
	int	rc = counters_replay(ctr, entry, err, errlen);

	return rc == COUNTERS_REJECTED ? JOURNAL_REJECTED : rc;
}
