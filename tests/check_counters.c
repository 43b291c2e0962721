/*
 * check_counters.c - counters.c, quota.lua and the Redis pool against a real Redis
 *
 * Every test starts its own redis-server (tests/redis_helper.c) in a
 * checked fixture and stops it afterwards. The conf is built here by
 * hand, not by conf_load(). Times are measured on the monotonic clock;
 * the bounds asserted are the contract (about 2 x timeout_ms) plus a
 * margin for slow machines, sanitizers and valgrind
 * (QM_TEST_SLACK_MS, default 400).
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "counters/cache.h"
#include "counters/counters.h"
#include "counters/inflight.h"
#include "counters/journal.h"
#include "counters/keys.h"
#include "counters/month.h"
#include "counters/quota_lua.h"
#include "counters/redis.h"
#include "redis_helper.h"
#include "check_run.h"

#define TIMEOUT_MS	250

static struct redis_server server;	/* this test's Redis */
static redisContext *direct;		/* our own connection to it, for set-up and checks */
static struct qm_conf conf;		/* built by hand for each test */
static time_t now;			/* the instant every call of a test uses */
static char month[MONTH_KEY_LEN];	/* now's month in UTC, by gmtime() */
static char day[MONTH_WINDOW_LEN];	/* now's day in UTC, "YYYY-MM-DD" */
static char hour[MONTH_WINDOW_LEN];	/* now's hour in UTC, "YYYY-MM-DDTHH" */
static long slack_ms;			/* margin on time bounds */

static struct qm_plan plans[] = {
	{"free", 0, QM_UNLIMITED, QM_UNLIMITED},
	{"trial", 0, QM_UNLIMITED, QM_UNLIMITED},
	{"basic", 10000, QM_UNLIMITED, QM_UNLIMITED},
	{"standard", 50000, QM_UNLIMITED, QM_UNLIMITED},
	{"tiny", 5, QM_UNLIMITED, QM_UNLIMITED},
	{"hundred", 100, QM_UNLIMITED, QM_UNLIMITED},
	{"enterprise", -1, QM_UNLIMITED, QM_UNLIMITED},
	{"hourly3", 1000, QM_UNLIMITED, 3},
	{"daily5", 1000, 5, QM_UNLIMITED},
	{"capped", 10, 6, 4},
	{"nohour", 1000, QM_UNLIMITED, 0},
};
static int warn[] = {80, 100};

/* conf_base - the conf every test starts from, pointing at server */
static void
conf_base(const char *address)
{
	memset(&conf, 0, sizeof(conf));
	conf.mode = QM_MODE_ENFORCE;
	conf.unit = QM_UNIT_RECIPIENTS;
	conf.timezone = "UTC";
	conf.keep_months = 13;
	conf.warn_percent = warn;
	conf.warn_count = sizeof(warn) / sizeof(warn[0]);
	conf.default_plan = "free";
	conf.plans = plans;
	conf.plan_count = sizeof(plans) / sizeof(plans[0]);
	conf.redis.address = (char *) address;
	conf.redis.password = "";
	conf.redis.database = 0;
	conf.redis.timeout_ms = TIMEOUT_MS;
	conf.redis.prefix = "qm:";
	conf.redis.pool_size = 4;
}

/* setup - a fresh Redis and conf for each test */
static void
setup(void)
{
	struct tm tm;
	const char *slack = getenv("QM_TEST_SLACK_MS");

	slack_ms = slack != NULL ? atol(slack) : 400;
	ck_assert_msg(redis_server_start(&server, false) == 0, "cannot start redis-server");
	direct = redis_server_connect(&server);
	ck_assert_ptr_nonnull(direct);
	conf_base(redis_server_address(&server));
	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(month, sizeof(month), "%Y-%m", &tm);
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	strftime(hour, sizeof(hour), "%Y-%m-%dT%H", &tm);
}

/* teardown - stop this test's Redis */
static void
teardown(void)
{
	if (direct != NULL)
		redisFree(direct);
	direct = NULL;
	redis_server_stop(&server);
}

/* cmd - run a command on our own connection; the reply must come */
static redisReply *
cmd(const char *fmt, ...)
{
	redisReply *r;
	va_list ap;

	va_start(ap, fmt);
	r = redisvCommand(direct, fmt, ap);
	va_end(ap);
	ck_assert_msg(r != NULL, "direct Redis command failed: %s", direct->errstr);
	return r;
}

/* cmd_ok - run a command, ignore a non-error reply */
static void
cmd_ok(const char *fmt, ...)
{
	redisReply *r;
	va_list ap;

	va_start(ap, fmt);
	r = redisvCommand(direct, fmt, ap);
	va_end(ap);
	ck_assert_msg(r != NULL, "direct Redis command failed: %s", direct->errstr);
	ck_assert_msg(r->type != REDIS_REPLY_ERROR, "Redis: %s", r->str);
	freeReplyObject(r);
}

/* cmd_int - a command's integer reply */
static long long
cmd_int(const char *fmt, ...)
{
	redisReply *r;
	long long v;
	va_list ap;

	va_start(ap, fmt);
	r = redisvCommand(direct, fmt, ap);
	va_end(ap);
	ck_assert_msg(r != NULL, "direct Redis command failed: %s", direct->errstr);
	ck_assert_msg(r->type == REDIS_REPLY_INTEGER, "not an integer reply (type %d)", r->type);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

/* usage_key - qm:usage:{ACCOUNT}:MONTH, written out here, not by keys.c */
static const char *
usage_key(const char *account)
{
	static char key[KEYS_MAX];

	snprintf(key, sizeof(key), "qm:usage:{%s}:%s", account, month);
	return key;
}

/* window_key - qm:usage:{ACCOUNT}:WINDOW (a month, day or hour), written out here */
static const char *
window_key(const char *account, const char *window)
{
	static char key[KEYS_MAX];

	snprintf(key, sizeof(key), "qm:usage:{%s}:%s", account, window);
	return key;
}

/* wusage - a field of the account's usage hash of a window; -1 if absent */
static long long
wusage(const char *account, const char *window, const char *field)
{
	redisReply *r = cmd("HGET %s %s", window_key(account, window), field);
	long long v = -1;

	if (r->type == REDIS_REPLY_STRING)
		v = strtoll(r->str, NULL, 10);
	else
		ck_assert_int_eq(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
	return v;
}

/* usage - a field of the account's usage hash this month; -1 if absent */
static long long
usage(const char *account, const char *field)
{
	return wusage(account, month, field);
}

/* months - the month table of the conf's zone (the tests run one thread here) */
static const struct month_table *
months(void)
{
	char    err[256] = "";
	const struct month_table *t = month_table_shared(conf.timezone, err, sizeof(err));

	ck_assert_msg(t != NULL, "month_table_shared: %s", err);
	return t;
}

/* make - counters for the current conf, or a failed test */
static struct counters *
make(void)
{
	char    err[256] = "";
	struct counters *ctr = counters_create(&conf, months(), err, sizeof(err));

	ck_assert_msg(ctr != NULL, "counters_create: %s", err);
	return ctr;
}

/* charge - counters_charge that must reach Redis */
static struct qm_quota
charge_mode(struct counters *ctr, const char *account, const char *category, long long units,
	    enum counters_mode mode)
{
	struct qm_quota q;
	char    err[256] = "";
	int     rc = counters_charge(ctr, NULL, account, category, units, mode, now, &q,
				     err, sizeof(err));

	ck_assert_msg(rc == 0, "counters_charge(%s): %s", account, err);
	return q;
}

/* charge - charge_mode, enforce or monitor */
static struct qm_quota
charge(struct counters *ctr, const char *account, const char *category, long long units,
       bool monitor)
{
	return charge_mode(ctr, account, category, units,
			   monitor ? COUNTERS_MONITOR : COUNTERS_ENFORCE);
}

/* peek - counters_peek that must reach Redis */
static struct qm_quota
peek(struct counters *ctr, const char *account)
{
	struct qm_quota q;
	char    err[256] = "";

	ck_assert_msg(counters_peek(ctr, account, now, &q, err, sizeof(err)) == 0,
		      "counters_peek(%s): %s", account, err);
	return q;
}

/* expect_at - compare a result with what a case wants */
static void
expect_at(int line, struct qm_quota q, enum qm_status status, const char *plan,
	  long long limit, long long used)
{
	ck_assert_msg(q.status == status && strcmp(q.plan, plan) == 0 && q.limit == limit
		      && q.used == used && strcmp(q.month, month) == 0,
		      "line %d: got %s %s %lld %lld %s, want %s %s %lld %lld %s", line,
		      counters_status_name(q.status), q.plan, q.limit, q.used, q.month,
		      counters_status_name(status), plan, limit, used, month);
}

#define expect(q, status, plan, limit, used) \
	expect_at(__LINE__, (q), (status), (plan), (limit), (used))

/* the cache alone: age, clock going back, one account per slot, long ids */
START_TEST(test_cache)
{
	struct quota_cache *qc = quota_cache_create(1);
	struct qm_quota q = { .status = QM_STATUS_OK, .plan = "basic", .limit = 10, .used = 3,
		.day = { .cap = QM_UNLIMITED }, .hour = { "2026-12-03T14", 4, 2, 0 } };
	struct qm_quota got;
	char	longid[QM_ACCOUNT_MAX + 2];

	ck_assert_ptr_null(quota_cache_create(3));	/* not a power of two */
	ck_assert_ptr_nonnull(qc);
	ck_assert(!quota_cache_get(qc, "acme", 0, &got));
	quota_cache_put(qc, "acme", &q, 5000);
	ck_assert(quota_cache_get(qc, "acme", 5000, &got));
	ck_assert(got.used == 3 && got.limit == 10 && strcmp(got.plan, "basic") == 0);
	ck_assert(got.hour.cap == 4 && got.hour.used == 2 && strcmp(got.hour.name, "2026-12-03T14") == 0);
	ck_assert(got.day.cap == QM_UNLIMITED);
	ck_assert(quota_cache_get(qc, "acme", 5000 + QUOTA_CACHE_MS - 1, &got));
	ck_assert(!quota_cache_get(qc, "acme", 5000 + QUOTA_CACHE_MS, &got));
	ck_assert(!quota_cache_get(qc, "acme", 4999, &got));	/* a clock gone back */
	ck_assert(!quota_cache_get(qc, "acm", 5000, &got));
	ck_assert(!quota_cache_get(qc, "acmee", 5000, &got));

	/* One slot: the next account takes it. */
	q.used = 7;
	quota_cache_put(qc, "other", &q, 6000);
	ck_assert(!quota_cache_get(qc, "acme", 6000, &got));
	ck_assert(quota_cache_get(qc, "other", 6000, &got) && got.used == 7);

	/* An id too long to be valid is not kept, and leaves the slot alone. */
	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = 0;
	quota_cache_put(qc, longid, &q, 6000);
	ck_assert(!quota_cache_get(qc, longid, 6000, &got));
	ck_assert(quota_cache_get(qc, "other", 6000, &got));
	quota_cache_free(qc);
	quota_cache_free(NULL);
}
END_TEST

/* counters_recent: what the last peek or charge said, not what failed */
START_TEST(test_recent)
{
	struct counters *ctr;
	struct qm_quota q;
	char	err[256];

	cmd_ok("HSET qm:account:{busy} plan basic");
	cmd_ok("HSET %s total 40", usage_key("busy"));
	ctr = make();
	ck_assert(!counters_recent(ctr, "busy", &q));
	(void) peek(ctr, "busy");
	ck_assert(counters_recent(ctr, "busy", &q));
	expect(q, QM_STATUS_OK, "basic", 10000, 40);
	(void) charge(ctr, "busy", "crm", 2, false);
	ck_assert(counters_recent(ctr, "busy", &q));
	expect(q, QM_STATUS_OK, "basic", 10000, 42);
	/* With the windows: what policy_far_from_limit() needs of the caps. */
	cmd_ok("HSET qm:account:{busy} limit_hourly 5");
	(void) charge(ctr, "busy", "crm", 2, false);
	ck_assert(counters_recent(ctr, "busy", &q));
	ck_assert(q.hour.cap == 5 && q.hour.used == 2 && strcmp(q.hour.name, hour) == 0);
	ck_assert(q.day.cap == QM_UNLIMITED && q.day.used == 0);

	/* A refusal is kept too (and policy_far_from_limit() never decides on it). */
	cmd_ok("HSET qm:account:{busy} suspended 1");
	(void) peek(ctr, "busy");
	ck_assert(counters_recent(ctr, "busy", &q) && q.status == QM_STATUS_SUSPENDED);
	ck_assert(!counters_recent(ctr, "idle", &q));
	counters_free(ctr);

	/* Redis away: nothing is kept. */
	conf.redis.address = "127.0.0.1:1";
	ctr = make();
	ck_assert_int_eq(counters_peek(ctr, "busy", now, &q, err, sizeof(err)), -1);
	ck_assert(!counters_recent(ctr, "busy", &q));
	counters_free(ctr);
}
END_TEST

/* peek: plan, limit override, suspension, default plan, unknown plans */
START_TEST(test_peek_plans)
{
	static const struct {
		const char *account;
		const char *fields[6];		/* HSET field value ..., NULL-ended */
		long long total;		/* usage total set first, -1 none */
		enum qm_status status;
		const char *plan;
		long long limit, used;
	} cases[] = {
		{"nobody", {NULL}, -1, QM_STATUS_NO_MAIL, "free", 0, 0},
		{"basic1", {"plan", "basic", NULL}, -1, QM_STATUS_OK, "basic", 10000, 0},
		{"basic2", {"plan", "basic", NULL}, 9999, QM_STATUS_OK, "basic", 10000, 9999},
		{"basic3", {"plan", "basic", NULL}, 10000, QM_STATUS_EXHAUSTED, "basic", 10000, 10000},
		{"ent", {"plan", "enterprise", NULL}, 123456789, QM_STATUS_OK, "enterprise", -1, 123456789},
		{"lim3", {"plan", "basic", "limit", "3", NULL}, 3, QM_STATUS_EXHAUSTED, "basic", 3, 3},
		{"limunl", {"plan", "tiny", "limit", "-1", NULL}, 50, QM_STATUS_OK, "tiny", -1, 50},
		{"lim0", {"plan", "basic", "limit", "0", NULL}, -1, QM_STATUS_EXHAUSTED, "basic", 0, 0},
		{"freelim", {"plan", "free", "limit", "50", NULL}, -1, QM_STATUS_OK, "free", 50, 0},
		{"trial", {"plan", "trial", NULL}, -1, QM_STATUS_NO_MAIL, "trial", 0, 0},
		{"susp", {"plan", "basic", "suspended", "1", NULL}, -1, QM_STATUS_SUSPENDED, "basic", 10000, 0},
		{"susp0", {"plan", "basic", "suspended", "0", NULL}, -1, QM_STATUS_OK, "basic", 10000, 0},
		{"gold", {"plan", "gold", NULL}, -1, QM_STATUS_UNKNOWN_PLAN, "gold", 0, 0},
		{"goldlim", {"plan", "gold", "limit", "7", NULL}, -1, QM_STATUS_UNKNOWN_PLAN, "gold", 7, 0},
		{"badlim", {"plan", "basic", "limit", "12abc", NULL}, -1, QM_STATUS_OK, "basic", 10000, 0},
		{"hexlim", {"plan", "basic", "limit", "0x10", NULL}, -1, QM_STATUS_OK, "basic", 10000, 0},
		{"neglim", {"plan", "basic", "limit", "-5", NULL}, -1, QM_STATUS_OK, "basic", 10000, 0},
		{"emptyplan", {"plan", "", NULL}, -1, QM_STATUS_NO_MAIL, "free", 0, 0},
		{"limonly", {"limit", "20", NULL}, -1, QM_STATUS_OK, "free", 20, 0},
	};
	struct counters *ctr;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int f = 0; cases[i].fields[f] != NULL; f += 2)
			cmd_ok("HSET qm:account:{%s} %s %s", cases[i].account, cases[i].fields[f],
			       cases[i].fields[f + 1]);
		if (cases[i].total >= 0)
			cmd_ok("HSET %s total %lld", usage_key(cases[i].account), cases[i].total);
	}
	ctr = make();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct qm_quota q = peek(ctr, cases[i].account);

		ck_assert_msg(q.status == cases[i].status && strcmp(q.plan, cases[i].plan) == 0
			      && q.limit == cases[i].limit && q.used == cases[i].used
			      && strcmp(q.month, month) == 0,
			      "peek %s = %s %s %lld %lld %s", cases[i].account,
			      counters_status_name(q.status), q.plan, q.limit, q.used, q.month);
	}
	/* peek writes nothing. */
	ck_assert_int_eq(cmd_int("EXISTS %s", usage_key("nobody")), 0);
	ck_assert_int_eq(cmd_int("EXISTS qm:events"), 0);
	counters_free(ctr);

	/* Without a default plan, an account without a plan has none. */
	conf.default_plan = NULL;
	ctr = make();
	expect(peek(ctr, "nobody"), QM_STATUS_NO_PLAN, "", 0, 0);
	expect(peek(ctr, "emptyplan"), QM_STATUS_NO_PLAN, "", 0, 0);
	expect(peek(ctr, "basic1"), QM_STATUS_OK, "basic", 10000, 0);
	counters_free(ctr);

	/* A plan change in Redis counts from the next call on. */
	ctr = make();
	cmd_ok("HSET qm:account:{basic1} plan tiny");
	expect(peek(ctr, "basic1"), QM_STATUS_OK, "tiny", 5, 0);
	counters_free(ctr);
}
END_TEST

/* charge: counting, categories, messages, refusal at the limit */
START_TEST(test_charge_limit)
{
	struct counters *ctr;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 2, false), QM_STATUS_OK, "tiny", 5, 2);
	expect(charge(ctr, "acme", "marketing", 3, false), QM_STATUS_OK, "tiny", 5, 5);
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_EXHAUSTED, "tiny", 5, 5);
	expect(charge(ctr, "acme", "crm", 4, false), QM_STATUS_EXHAUSTED, "tiny", 5, 5);
	expect(peek(ctr, "acme"), QM_STATUS_EXHAUSTED, "tiny", 5, 5);
	ck_assert_int_eq(usage("acme", "total"), 5);
	ck_assert_int_eq(usage("acme", "messages"), 2);
	ck_assert_int_eq(usage("acme", "crm"), 2);
	ck_assert_int_eq(usage("acme", "marketing"), 3);
	/* Refusals are the caller's to record (counters_refused) once final. */
	ck_assert_int_eq(usage("acme", "refused"), -1);
	ck_assert_int_eq(usage("acme", "would_refuse"), -1);

	/* A charge that fits exactly to the last unit is counted. */
	cmd_ok("HSET qm:account:{acme2} plan tiny");
	expect(charge(ctr, "acme2", NULL, 5, false), QM_STATUS_OK, "tiny", 5, 5);
	expect(charge(ctr, "acme2", "", 6, false), QM_STATUS_EXHAUSTED, "tiny", 5, 5);
	ck_assert_int_eq(usage("acme2", "messages"), 1);

	/* Raising the limit lets mail through again at once. */
	cmd_ok("HSET qm:account:{acme} limit 7");
	expect(charge(ctr, "acme", "crm", 2, false), QM_STATUS_OK, "tiny", 7, 7);

	/* Unlimited. */
	cmd_ok("HSET qm:account:{big} plan enterprise");
	expect(charge(ctr, "big", "crm", 1000000000, false), QM_STATUS_OK, "enterprise", -1,
	       1000000000);
	expect(charge(ctr, "big", "crm", 1000000000, false), QM_STATUS_OK, "enterprise", -1,
	       2000000000);
	counters_free(ctr);
}
END_TEST

/* charge: the non-quota refusals count nothing but RCPT-stage refusals */
START_TEST(test_charge_refusals)
{
	struct counters *ctr;

	cmd_ok("HSET qm:account:{susp} plan basic suspended 1");
	cmd_ok("HSET qm:account:{gold} plan gold");
	ctr = make();
	expect(charge(ctr, "susp", "crm", 2, false), QM_STATUS_SUSPENDED, "basic", 10000, 0);
	expect(charge(ctr, "gold", "crm", 3, false), QM_STATUS_UNKNOWN_PLAN, "gold", 0, 0);
	expect(charge(ctr, "freebie", "crm", 4, false), QM_STATUS_NO_MAIL, "free", 0, 0);
	ck_assert_int_eq(usage("susp", "refused"), -1);
	ck_assert_int_eq(usage("gold", "refused"), -1);
	ck_assert_int_eq(usage("freebie", "refused"), -1);
	ck_assert_int_eq(usage("susp", "total"), -1);
	ck_assert_int_eq(usage("gold", "messages"), -1);
	ck_assert_int_eq(usage("freebie", "crm"), -1);
	/* These are not quota refusals: no "exhausted" event. */
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 0);
	counters_free(ctr);

	conf.default_plan = NULL;
	ctr = make();
	expect(charge(ctr, "nobody", "crm", 1, false), QM_STATUS_NO_PLAN, "", 0, 0);
	ck_assert_int_eq(usage("nobody", "refused"), -1);
	counters_free(ctr);
}
END_TEST

/* monitor: what does not fit is counted anyway, and recorded */
START_TEST(test_monitor)
{
	struct counters *ctr;

	cmd_ok("HSET qm:account:{mon} plan tiny");
	cmd_ok("HSET qm:account:{susp} plan tiny suspended 1");
	ctr = make();
	expect(charge(ctr, "mon", "crm", 4, true), QM_STATUS_OK, "tiny", 5, 4);
	expect(charge(ctr, "mon", "crm", 3, true), QM_STATUS_OVER, "tiny", 5, 7);
	expect(charge(ctr, "mon", "crm", 1, true), QM_STATUS_OVER, "tiny", 5, 8);
	ck_assert_int_eq(usage("mon", "total"), 8);
	ck_assert_int_eq(usage("mon", "messages"), 3);
	ck_assert_int_eq(usage("mon", "would_refuse"), 4);
	ck_assert_int_eq(usage("mon", "refused"), -1);
	/* Thresholds are still announced in monitor mode: 80% (4) and 100% (5). */
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 2);

	expect(charge(ctr, "susp", "crm", 2, true), QM_STATUS_OVER, "tiny", 5, 2);
	expect(charge(ctr, "freebie", "crm", 2, true), QM_STATUS_OVER, "free", 0, 2);
	ck_assert_int_eq(usage("susp", "would_refuse"), 2);
	ck_assert_int_eq(usage("freebie", "total"), 2);
	ck_assert_int_eq(usage("freebie", "would_refuse"), 2);
	counters_free(ctr);

	conf.default_plan = NULL;
	ctr = make();
	expect(charge(ctr, "nobody", "crm", 3, true), QM_STATUS_OVER, "", 0, 3);
	ck_assert_int_eq(usage("nobody", "would_refuse"), 3);
	counters_free(ctr);
}
END_TEST

/* refused - counters_refused that must reach Redis */
static void
refused(struct counters *ctr, const char *id, const char *account, const char *in_month,
	long long units)
{
	char    err[256] = "";

	ck_assert_msg(counters_refused(ctr, id, account, in_month, units, now, err,
				       sizeof(err)) == 0, "counters_refused(%s): %s", account, err);
}

/* hget - a field of any hash as text, "" when absent (static buffer) */
static const char *
hget(const char *key, const char *field)
{
	static char text[256];
	redisReply *r = cmd("HGET %s %s", key, field);

	text[0] = 0;
	if (r->type == REDIS_REPLY_STRING)
		snprintf(text, sizeof(text), "%s", r->str);
	freeReplyObject(r);
	return text;
}

/* last_month - the month before now's, "YYYY-MM" */
static void
last_month(char *buf)
{
	struct tm tm;
	char	text[32];

	gmtime_r(&now, &tm);
	if (tm.tm_mon == 0)
		snprintf(text, sizeof(text), "%04d-12", tm.tm_year + 1899);
	else
		snprintf(text, sizeof(text), "%04d-%02d", tm.tm_year + 1900, tm.tm_mon);
	memcpy(buf, text, MONTH_KEY_LEN - 1);
	buf[MONTH_KEY_LEN - 1] = 0;
}

/* Refusals for good: once per id, in the month given, with the exhausted event */
START_TEST(test_refused)
{
	struct counters *ctr;
	char    err[256], prev[MONTH_KEY_LEN], key[KEYS_MAX];
	redisReply *r;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	cmd_ok("HSET qm:account:{susp} plan tiny suspended 1");
	ctr = make();
	refused(ctr, "00000000000000a1", "acme", NULL, 3);
	ck_assert_int_eq(usage("acme", "refused"), 3);
	ck_assert_int_eq(usage("acme", "total"), -1);
	/* Refused for quota: the account's one "exhausted" event. */
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 1);

	/* The same id again (a resend, a journal entry of it): recorded once. */
	refused(ctr, "00000000000000a1", "acme", month, 3);
	ck_assert_int_eq(usage("acme", "refused"), 3);
	refused(ctr, "00000000000000a2", "acme", month, 2);
	ck_assert_int_eq(usage("acme", "refused"), 5);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 1);
	ck_assert_int_eq(cmd_int("TTL %s", usage_key("acme")) > 0, 1);

	/* A charge neither records nor is refused by earlier refusals. */
	expect(charge(ctr, "acme", "crm", 2, false), QM_STATUS_OK, "tiny", 5, 2);
	ck_assert_int_eq(usage("acme", "refused"), 5);

	/* Decided on last month's usage: recorded there, with that month's event. */
	last_month(prev);
	refused(ctr, "00000000000000a3", "acme", prev, 4);
	snprintf(key, sizeof(key), "qm:usage:{acme}:%s", prev);
	ck_assert_str_eq(hget(key, "refused"), "4");
	ck_assert_int_eq(usage("acme", "refused"), 5);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 2);

	refused(ctr, "00000000000000a4", "susp", NULL, 2);
	ck_assert_int_eq(usage("susp", "refused"), 2);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 2);

	ck_assert_int_eq(counters_refused(ctr, "00000000000000a5", "a b", NULL, 2, now, err,
					  sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(counters_refused(ctr, "00000000000000a5", "acme", "2026-13", 2, now, err,
					  sizeof(err)), COUNTERS_REJECTED);

	r = cmd("XRANGE qm:events - +");
	ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
	ck_assert_uint_eq(r->elements, 2);
	for (size_t e = 0; e < 2; e++) {
		redisReply *f = r->element[e]->element[1];
		const char *want[] = {"type", "exhausted", "account", "acme", "month",
			e == 0 ? month : prev, "used", "0", "limit", "5", "plan", "tiny"};

		ck_assert_uint_eq(f->elements, 12);
		for (size_t i = 0; i < 12; i++)
			ck_assert_str_eq(f->element[i]->str, want[i]);
	}
	freeReplyObject(r);
	counters_free(ctr);
}
END_TEST

/* A limit lowered below the usage: its thresholds come with the first refusal */
START_TEST(test_thresholds_lowered)
{
	struct counters *ctr;
	redisReply *r;

	cmd_ok("HSET qm:account:{acme} plan hundred");
	cmd_ok("HSET qm:account:{low} plan hundred");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 50, false), QM_STATUS_OK, "hundred", 100, 50);
	expect(charge(ctr, "low", "crm", 9, false), QM_STATUS_OK, "hundred", 100, 9);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 0);

	/* A downgrade: 80 % and 100 % of 40 reached, and exhausted; each once. */
	cmd_ok("HSET qm:account:{acme} limit 40");
	for (int i = 0; i < 2; i++)
		expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_EXHAUSTED, "hundred", 40, 50);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 3);

	/* set-limit 10 under 9 used: a refusal at RCPT stage announces 80 %. */
	cmd_ok("HSET qm:account:{low} limit 10");
	refused(ctr, "00000000000000b1", "low", NULL, 2);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 5);
	r = cmd("XREVRANGE qm:events + - COUNT 1");
	ck_assert_str_eq(r->element[0]->element[1]->element[1]->str, "threshold");
	ck_assert_str_eq(r->element[0]->element[1]->element[3]->str, "low");
	ck_assert_str_eq(r->element[0]->element[1]->element[7]->str, "80");
	freeReplyObject(r);
	counters_free(ctr);
}
END_TEST

static void cancel(struct counters *ctr, const char *id, const char *account, long long units,
		   long long refused);

/* Monitor of a message decided recipient by recipient: what enforce would refuse */
START_TEST(test_monitor_rcpt)
{
	struct counters *ctr;

	cmd_ok("HSET qm:account:{acme} plan hundred limit 10");
	cmd_ok("HSET qm:account:{whole} plan hundred limit 10");
	cmd_ok("HSET qm:account:{susp} plan hundred suspended 1");
	ctr = make();
	expect(charge_mode(ctr, "acme", "crm", 8, COUNTERS_MONITOR_RCPT), QM_STATUS_OK,
	       "hundred", 10, 8);
	/* 5 recipients, 2 fit: enforce accepts 2 and refuses 3. */
	expect(charge_mode(ctr, "acme", "crm", 5, COUNTERS_MONITOR_RCPT), QM_STATUS_OVER,
	       "hundred", 10, 13);
	ck_assert_int_eq(usage("acme", "would_refuse"), 3);
	expect(charge_mode(ctr, "acme", "crm", 2, COUNTERS_MONITOR_RCPT), QM_STATUS_OVER,
	       "hundred", 10, 15);
	ck_assert_int_eq(usage("acme", "would_refuse"), 5);

	/* Decided at end of message (the account from a header): the whole message. */
	expect(charge(ctr, "whole", "crm", 8, true), QM_STATUS_OK, "hundred", 10, 8);
	expect(charge(ctr, "whole", "crm", 5, true), QM_STATUS_OVER, "hundred", 10, 13);
	ck_assert_int_eq(usage("whole", "would_refuse"), 5);

	/* Not a quota refusal: every recipient. */
	expect(charge_mode(ctr, "susp", "crm", 4, COUNTERS_MONITOR_RCPT), QM_STATUS_OVER,
	       "hundred", 100, 4);
	ck_assert_int_eq(usage("susp", "would_refuse"), 4);

	/* Its cancel takes back what it put in would_refuse, no more. */
	{
		struct qm_quota q;
		char	err[256];

		cmd_ok("HSET qm:account:{part} plan hundred");
		cmd_ok("HSET %s total 90 would_refuse 50", usage_key("part"));
		ck_assert_int_eq(counters_charge(ctr, "00000000000000f7", "part", "crm", 20,
						 COUNTERS_MONITOR_RCPT, now, &q, err, sizeof(err)), 0);
		ck_assert_int_eq(usage("part", "would_refuse"), 60);
		cancel(ctr, "00000000000000f7", "part", 20, 0);
		ck_assert_int_eq(usage("part", "would_refuse"), 50);
		ck_assert_int_eq(usage("part", "total"), 90);
	}
	counters_free(ctr);
}
END_TEST

/* expect_windows_at - the day's and the hour's cap and use of a result */
static void
expect_windows_at(int line, struct qm_quota q, long long day_cap, long long day_used,
		  long long hour_cap, long long hour_used)
{
	ck_assert_msg(q.day.cap == day_cap && q.day.used == day_used && q.hour.cap == hour_cap
		      && q.hour.used == hour_used,
		      "line %d: got day %lld/%lld hour %lld/%lld, want day %lld/%lld hour %lld/%lld",
		      line, q.day.used, q.day.cap, q.hour.used, q.hour.cap, day_used, day_cap,
		      hour_used, hour_cap);
}

#define expect_windows(q, dc, du, hc, hu) \
	expect_windows_at(__LINE__, (q), (dc), (du), (hc), (hu))

/* Caps: the hour's and the day's, after the month, nothing written on a refusal */
START_TEST(test_caps)
{
	struct counters *ctr;
	struct qm_quota q;
	char	err[256];
	time_t	next;

	cmd_ok("HSET qm:account:{h3} plan hourly3");
	ctr = make();
	for (int i = 1; i <= 3; i++) {
		q = charge(ctr, "h3", "crm", 1, false);
		expect(q, QM_STATUS_OK, "hourly3", 1000, i);
		expect_windows(q, -1, 0, 3, i);
	}
	ck_assert_str_eq(q.hour.name, hour);
	ck_assert_str_eq(q.day.name, day);
	ck_assert(q.hour.end > now && q.hour.end <= now + 3600 && q.hour.end % 3600 == 0);
	ck_assert(q.day.end > now && q.day.end <= now + 86400 && q.day.end % 86400 == 0);
	/* The 4th: refused by the hour, nothing written. */
	q = charge(ctr, "h3", "crm", 1, false);
	expect(q, QM_STATUS_HOURLY_CAP, "hourly3", 1000, 3);
	expect_windows(q, -1, 0, 3, 3);
	ck_assert_int_eq(usage("h3", "total"), 3);
	ck_assert_int_eq(usage("h3", "messages"), 3);
	ck_assert_int_eq(wusage("h3", hour, "total"), 3);
	ck_assert_int_eq(wusage("h3", hour, "messages"), 3);
	ck_assert_int_eq(wusage("h3", hour, "crm"), 3);
	ck_assert_int_eq(wusage("h3", hour, "limit"), 3);
	expect(peek(ctr, "h3"), QM_STATUS_HOURLY_CAP, "hourly3", 1000, 3);
	/* No day key without a daily cap; the hour's goes an hour after the hour. */
	ck_assert_int_eq(cmd_int("EXISTS %s", window_key("h3", day)), 0);
	ck_assert_int_eq(cmd_int("EXPIRETIME %s", window_key("h3", hour)), q.hour.end + 3600);
	/* The next hour: accepted again, in a hash of its own. */
	next = q.hour.end;
	ck_assert_int_eq(counters_charge(ctr, NULL, "h3", "crm", 1, COUNTERS_ENFORCE, next, &q,
					 err, sizeof(err)), 0);
	ck_assert_int_eq(q.status, QM_STATUS_OK);
	ck_assert_int_eq(q.hour.used, 1);
	ck_assert_str_ne(q.hour.name, hour);
	ck_assert_int_eq(wusage("h3", q.hour.name, "total"), 1);
	ck_assert_int_eq(wusage("h3", hour, "total"), 3);

	/* A daily cap of 5: 5 go, the 6th is refused; the hour is not capped. */
	cmd_ok("HSET qm:account:{d5} plan daily5");
	expect_windows(charge(ctr, "d5", "crm", 4, false), 5, 4, -1, 0);
	expect_windows(charge(ctr, "d5", "crm", 1, false), 5, 5, -1, 0);
	q = charge(ctr, "d5", "crm", 1, false);
	expect(q, QM_STATUS_DAILY_CAP, "daily5", 1000, 5);
	expect_windows(q, 5, 5, -1, 0);
	ck_assert_int_eq(cmd_int("EXISTS %s", window_key("d5", hour)), 0);
	ck_assert_int_eq(cmd_int("EXPIRETIME %s", window_key("d5", day)), q.day.end + 3600);

	/* The month first (550), though the windows have room; then the day, then the hour. */
	cmd_ok("HSET qm:account:{mfirst} plan capped");
	cmd_ok("HSET %s total 9", usage_key("mfirst"));
	expect(charge(ctr, "mfirst", "crm", 2, false), QM_STATUS_EXHAUSTED, "capped", 10, 9);
	ck_assert_int_eq(cmd_int("EXISTS %s", window_key("mfirst", day)), 0);
	cmd_ok("HSET qm:account:{dfirst} plan capped");
	cmd_ok("HSET %s total 6 limit 6", window_key("dfirst", day));
	cmd_ok("HSET %s total 4 limit 4", window_key("dfirst", hour));
	q = charge(ctr, "dfirst", "crm", 1, false);
	expect(q, QM_STATUS_DAILY_CAP, "capped", 10, 0);
	expect_windows(q, 6, 6, 4, 4);
	cmd_ok("HSET %s total 5", window_key("dfirst", day));
	expect(charge(ctr, "dfirst", "crm", 1, false), QM_STATUS_HOURLY_CAP, "capped", 10, 0);
	cmd_ok("HSET %s total 3", window_key("dfirst", hour));
	/* Fits all three: both windows written; 2 would not fit the day. */
	expect(charge(ctr, "dfirst", "crm", 2, false), QM_STATUS_DAILY_CAP, "capped", 10, 0);
	q = charge(ctr, "dfirst", "crm", 1, false);
	expect(q, QM_STATUS_OK, "capped", 10, 1);
	expect_windows(q, 6, 6, 4, 4);
	ck_assert_int_eq(wusage("dfirst", day, "total"), 6);
	ck_assert_int_eq(wusage("dfirst", hour, "total"), 4);

	/* A cap of 0 sends nothing in that window. */
	cmd_ok("HSET qm:account:{zero} plan nohour");
	q = charge(ctr, "zero", "crm", 1, false);
	expect(q, QM_STATUS_HOURLY_CAP, "nohour", 1000, 0);
	expect_windows(q, -1, 0, 0, 0);
	ck_assert_int_eq(usage("zero", "total"), -1);
	ck_assert_int_eq(wusage("zero", hour, "total"), -1);
	ck_assert_int_eq(cmd_int("TTL %s", window_key("zero", hour)) > 0, 1);
	counters_free(ctr);
}
END_TEST

/* An account's limit_daily and limit_hourly override its plan's caps; bad ones are ignored */
START_TEST(test_caps_overrides)
{
	static const struct {
		const char *account;
		const char *plan, *field, *value;
		long long day_cap, hour_cap;
	} cases[] = {
		{"o1", "basic", "limit_hourly", "2", -1, 2},
		{"o2", "basic", "limit_daily", "7", 7, -1},
		{"o3", "hourly3", "limit_hourly", "-1", -1, -1},	/* -1 lifts the plan's */
		{"o4", "hourly3", "limit_hourly", "0", -1, 0},
		{"o5", "hourly3", "limit_hourly", "abc", -1, 3},
		{"o6", "hourly3", "limit_hourly", "-5", -1, 3},
		{"o7", "hourly3", "limit_hourly", "1.5", -1, 3},
		{"o8", "hourly3", "limit_hourly", "", -1, 3},
		{"o9", "hourly3", "limit_hourly", "1000000000000000", -1, 3},	/* 16 digits */
		{"o10", "capped", "limit_daily", "-1", -1, 4},
		{"o11", "hourly3", "limit_daily", "2", 2, 3},
	};
	struct counters *ctr = make();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct qm_quota q;

		cmd_ok("HSET qm:account:{%s} plan %s %s %s", cases[i].account, cases[i].plan,
		       cases[i].field, cases[i].value);
		q = peek(ctr, cases[i].account);
		ck_assert_msg(q.day.cap == cases[i].day_cap && q.hour.cap == cases[i].hour_cap,
			      "case %zu: day %lld hour %lld", i, q.day.cap, q.hour.cap);
		(void) charge(ctr, cases[i].account, "crm", 1, false);
		/* A window is written only when capped (and the charge fitted it). */
		ck_assert_int_eq(cmd_int("EXISTS %s", window_key(cases[i].account, day)),
				 cases[i].day_cap > 0);
		ck_assert_msg(cmd_int("EXISTS %s", window_key(cases[i].account, hour))
			      == (cases[i].hour_cap >= 0), "case %zu: hour key", i);
	}
	counters_free(ctr);
}
END_TEST

/* An account without caps makes no window key, whatever it sends */
START_TEST(test_caps_none)
{
	struct counters *ctr = make();

	cmd_ok("HSET qm:account:{plain} plan basic");
	expect_windows(charge(ctr, "plain", "crm", 5, false), -1, 0, -1, 0);
	expect_windows(charge(ctr, "plain", "crm", 5, true), -1, 0, -1, 0);
	refused(ctr, "00000000000000a9", "plain", NULL, 1);
	ck_assert_int_eq(cmd_int("EXISTS %s %s", window_key("plain", day),
				 window_key("plain", hour)), 0);
	ck_assert_int_eq(usage("plain", "total"), 10);
	counters_free(ctr);
}
END_TEST

static struct journal_entry entry(const char *id, const char *entry_month, const char *account,
				  long long units, long long refused);

/* Monitor mode over a cap: counted, would_refuse in the month and in the window that did not fit */
START_TEST(test_caps_monitor)
{
	struct counters *ctr;
	struct qm_quota q;

	cmd_ok("HSET qm:account:{h3} plan hourly3");
	ctr = make();
	expect(charge(ctr, "h3", "crm", 2, true), QM_STATUS_OK, "hourly3", 1000, 2);
	q = charge(ctr, "h3", "crm", 2, true);
	expect(q, QM_STATUS_OVER, "hourly3", 1000, 4);
	expect_windows(q, -1, 0, 3, 4);
	ck_assert_int_eq(usage("h3", "would_refuse"), 2);
	ck_assert_int_eq(wusage("h3", hour, "would_refuse"), 2);
	ck_assert_int_eq(wusage("h3", hour, "total"), 4);
	ck_assert_int_eq(wusage("h3", hour, "messages"), 2);

	/*
	 * Mode 2 (recipient by recipient): month 10, day 6, hour 4; 3 used.
	 * 3 more: 1 fits the hour, the tightest: 2 would be refused, in the
	 * month and in the hour; the day (3 + 3 = 6) fitted.
	 */
	cmd_ok("HSET qm:account:{c} plan capped");
	expect(charge(ctr, "c", "crm", 3, false), QM_STATUS_OK, "capped", 10, 3);
	q = charge_mode(ctr, "c", "crm", 3, COUNTERS_MONITOR_RCPT);
	expect(q, QM_STATUS_OVER, "capped", 10, 6);
	expect_windows(q, 6, 6, 4, 6);
	ck_assert_int_eq(usage("c", "would_refuse"), 2);
	ck_assert_int_eq(wusage("c", hour, "would_refuse"), 2);
	ck_assert_int_eq(wusage("c", day, "would_refuse"), -1);
	ck_assert_int_eq(wusage("c", day, "total"), 6);
	/* Now the day binds too: 1 more, all refused, in all three. */
	q = charge_mode(ctr, "c", "crm", 1, COUNTERS_MONITOR_RCPT);
	ck_assert_int_eq(q.status, QM_STATUS_OVER);
	ck_assert_int_eq(usage("c", "would_refuse"), 3);
	ck_assert_int_eq(wusage("c", hour, "would_refuse"), 3);
	ck_assert_int_eq(wusage("c", day, "would_refuse"), 1);
	counters_free(ctr);
}
END_TEST

/* The "cap" event: once per account and window, with what the SaaS needs */
START_TEST(test_caps_events)
{
	struct counters *ctr;
	redisReply *r;

	conf.warn_count = 0;
	cmd_ok("HSET qm:account:{h3} plan hourly3");
	ctr = make();
	charge(ctr, "h3", "crm", 2, false);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 0);
	charge(ctr, "h3", "crm", 1, false);		/* reaches 3: the event */
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 1);
	ck_assert_str_eq(hget(window_key("h3", hour), "cap"), "1");
	charge(ctr, "h3", "crm", 1, false);		/* refused: already sent */
	charge(ctr, "h3", "crm", 1, true);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 1);
	r = cmd("XRANGE qm:events - +");
	{
		const char *want[] = {"type", "cap", "account", "h3", "month", month, "window", hour,
			"kind", "hourly", "used", "3", "limit", "3", "plan", "hourly3"};
		redisReply *f = r->element[0]->element[1];

		ck_assert_uint_eq(f->elements, 16);
		for (size_t i = 0; i < 16; i++)
			ck_assert_str_eq(f->element[i]->str, want[i]);
	}
	freeReplyObject(r);

	/* Refused by the day's cap before reaching it: sent by the refusal, kind daily. */
	cmd_ok("HSET qm:account:{d5} plan daily5");
	charge(ctr, "d5", "crm", 3, false);
	charge(ctr, "d5", "crm", 3, false);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 2);
	r = cmd("XREVRANGE qm:events + - COUNT 1");
	ck_assert_str_eq(r->element[0]->element[1]->element[7]->str, day);
	ck_assert_str_eq(r->element[0]->element[1]->element[9]->str, "daily");
	ck_assert_str_eq(r->element[0]->element[1]->element[11]->str, "3");
	freeReplyObject(r);
	/* The hash the refusal made expires with the day. */
	ck_assert_int_gt(cmd_int("TTL %s", window_key("d5", day)), 0);
	counters_free(ctr);
}
END_TEST

/* charge_id - counters_charge under a chosen id; its result */
static struct qm_quota
charge_id(struct counters *ctr, const char *id, const char *account, long long units,
	  enum counters_mode mode, time_t at)
{
	struct qm_quota q;
	char	err[256] = "";

	ck_assert_msg(counters_charge(ctr, id, account, "crm", units, mode, at, &q, err,
				      sizeof(err)) == 0, "charge %s: %s", id, err);
	return q;
}

/* journal_apply - a count or cancel entry of the charge's month and hour, applied */
static int
journal_apply(struct counters *ctr, const char *id, const char *in_month, const char *account,
	      long long units, bool is_cancel, const char *window, char *err, size_t errlen)
{
	struct journal_entry e = entry(id, in_month, account, units, 0);

	e.cancel = is_cancel;
	snprintf(e.window, sizeof(e.window), "%s", window);
	return counters_replay(ctr, &e, err, errlen);
}

/* Cancels take a charge back from the month and from the windows it counted in */
START_TEST(test_caps_cancel)
{
	struct counters *ctr;
	struct qm_quota q, before;
	char	err[256] = "";

	cmd_ok("HSET qm:account:{c} plan capped");
	ctr = make();
	q = charge_id(ctr, "00000000000000a1", "c", 2, COUNTERS_ENFORCE, now);
	expect_windows(q, 6, 2, 4, 2);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000a1", month, "c", 2, true, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(usage("c", "total"), 0);
	ck_assert_int_eq(wusage("c", day, "total"), 0);
	ck_assert_int_eq(wusage("c", hour, "total"), 0);
	ck_assert_int_eq(wusage("c", hour, "messages"), 0);
	ck_assert_int_eq(wusage("c", hour, "crm"), 0);
	/* Again: nothing more, never below zero. */
	charge_id(ctr, "00000000000000a2", "c", 1, COUNTERS_ENFORCE, now);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000a1", month, "c", 2, true, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("c", hour, "total"), 1);

	/* A monitor charge over the hour: its would_refuse comes back out of both. */
	cmd_ok("HSET %s total 3", window_key("c", hour));
	q = charge_id(ctr, "00000000000000a3", "c", 2, COUNTERS_MONITOR, now);
	ck_assert_int_eq(q.status, QM_STATUS_OVER);
	ck_assert_int_eq(wusage("c", hour, "would_refuse"), 2);
	ck_assert_int_eq(wusage("c", day, "would_refuse"), -1);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000a3", month, "c", 2, true, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("c", hour, "would_refuse"), 0);
	ck_assert_int_eq(wusage("c", hour, "total"), 3);
	ck_assert_int_eq(usage("c", "would_refuse"), 0);
	ck_assert_int_eq(usage("c", "total"), 1);

	/* A charge refused by a cap counted nothing: its cancel takes nothing. */
	q = charge_id(ctr, "00000000000000a4", "c", 2, COUNTERS_ENFORCE, now);
	ck_assert_int_eq(q.status, QM_STATUS_HOURLY_CAP);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000a4", month, "c", 2, true, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("c", hour, "total"), 3);

	/*
	 * A charge of the previous hour, cancelled now: from that hour's hash,
	 * not this one's (the entry names the charge's hour).
	 */
	cmd_ok("HSET qm:account:{late} plan capped");
	q = charge_id(ctr, "00000000000000a5", "late", 2, COUNTERS_ENFORCE, now - 3600);
	before = q;
	charge_id(ctr, "00000000000000a6", "late", 1, COUNTERS_ENFORCE, now);
	ck_assert_str_ne(before.hour.name, hour);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000a5", before.month, "late", 2, true,
				       before.hour.name, err, sizeof(err)), 0);
	ck_assert_int_eq(wusage("late", before.hour.name, "total"), 0);
	ck_assert_int_eq(wusage("late", hour, "total"), 1);
	ck_assert_int_eq(wusage("late", day, "total"), 1);	/* the same day or not */
	ck_assert_int_eq(wusage("late", before.day.name, "total"),
			 strcmp(before.day.name, day) == 0 ? 1 : 0);

	/* An entry of an older version (no hour): the month only. */
	cmd_ok("HSET qm:account:{old} plan capped");
	charge_id(ctr, "00000000000000a7", "old", 2, COUNTERS_ENFORCE, now);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000a7", month, "old", 2, true, "", err,
				       sizeof(err)), 0);
	ck_assert_int_eq(usage("old", "total"), 0);
	ck_assert_int_eq(wusage("old", hour, "total"), 2);
	counters_free(ctr);
}
END_TEST

/* Replays count in the month and in the capped windows of the entry's hour, over caps too */
START_TEST(test_caps_replay)
{
	struct counters *ctr;
	char	err[256] = "", old_month[MONTH_KEY_LEN], old_hour[MONTH_WINDOW_LEN];
	long long keys;

	cmd_ok("HSET qm:account:{h3} plan hourly3");
	ctr = make();
	charge(ctr, "h3", "crm", 2, false);
	ck_assert_int_eq(journal_apply(ctr, "mta-1", month, "h3", 3, false, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(usage("h3", "total"), 5);
	ck_assert_int_eq(wusage("h3", hour, "total"), 5);
	ck_assert_int_eq(wusage("h3", hour, "would_refuse"), 3);
	ck_assert_int_eq(usage("h3", "would_refuse"), 3);
	ck_assert_int_eq(cmd_int("EXISTS %s", window_key("h3", day)), 0);
	/* Once per entry. */
	ck_assert_int_eq(journal_apply(ctr, "mta-1", month, "h3", 3, false, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("h3", hour, "total"), 5);

	/* A replayed charge, then its cancel: out of the hour again. */
	ck_assert_int_eq(journal_apply(ctr, "00000000000000b1", month, "h3", 1, false, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("h3", hour, "total"), 6);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000b1", month, "h3", 1, true, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("h3", hour, "total"), 5);
	ck_assert_int_eq(usage("h3", "total"), 5);

	/* A replay into a new hour's hash: made with the hour's expiry. */
	cmd_ok("HSET qm:account:{fresh} plan hourly3");
	ck_assert_int_eq(journal_apply(ctr, "mta-2", month, "fresh", 1, false, hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("fresh", hour, "total"), 1);
	{
		struct qm_quota q = peek(ctr, "fresh");

		ck_assert_int_eq(cmd_int("EXPIRETIME %s", window_key("fresh", hour)),
				 q.hour.end + 3600);
	}

	/* An hour long gone: the month only, no window hash made again. */
	{
		time_t	then = now - 3 * 86400;

		ck_assert(month_of(months(), then, old_month));
		ck_assert(month_window_of(months(), then, MONTH_WINDOW_HOUR, old_hour, NULL));
	}
	keys = cmd_int("DBSIZE");
	ck_assert_int_eq(journal_apply(ctr, "mta-3", old_month, "fresh", 1, false, old_hour, err,
				       sizeof(err)), 0);
	ck_assert_int_eq(wusage("fresh", old_month, "total"), strcmp(old_month, month) ? 1 : 2);
	ck_assert_int_eq(cmd_int("EXISTS %s", window_key("fresh", old_hour)), 0);
	ck_assert_int_le(cmd_int("DBSIZE"), keys + 2);	/* that month's usage and warned */

	/* Hours that are not of the entry's month, or not hours: never applicable. */
	ck_assert_int_eq(journal_apply(ctr, "mta-4", "2026-12", "fresh", 1, false, "2027-01-01T00",
				       err, sizeof(err)), COUNTERS_REJECTED);
	counters_free(ctr);
}
END_TEST

/*
 * A window key of another type: the charge fails before any write (its
 * HMGET), the journal's ops with the code QUOTA (set aside); a window
 * field that is not an integer: QUOTA for every op
 */
START_TEST(test_caps_bad_window)
{
	struct counters *ctr;
	struct qm_quota q;
	char	err[256] = "";

	cmd_ok("HSET qm:account:{h3} plan hourly3");
	cmd_ok("SET %s oops", window_key("h3", hour));
	ctr = make();
	ck_assert_int_eq(counters_charge(ctr, "00000000000000c1", "h3", "crm", 1, COUNTERS_ENFORCE,
					 now, &q, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "WRONGTYPE") != NULL, "%s", err);
	ck_assert_int_eq(usage("h3", "total"), -1);
	ck_assert_int_eq(cmd_int("EXISTS qm:charge:{h3}:00000000000000c1"), 0);
	ck_assert_int_eq(journal_apply(ctr, "mta-1", month, "h3", 1, false, hour, err,
				       sizeof(err)), COUNTERS_REJECTED);
	ck_assert_msg(strstr(err, "QUOTA") != NULL && strstr(err, "not a hash") != NULL, "%s", err);
	ck_assert_int_eq(usage("h3", "total"), -1);
	ck_assert_int_eq(cmd_int("EXISTS qm:warned:{h3}:%s", month), 0);
	ck_assert_int_eq(journal_apply(ctr, "00000000000000c1", month, "h3", 1, true, hour, err,
				       sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(cmd_int("EXISTS qm:charge:{h3}:00000000000000c1"), 0);

	/* Not an integer in a window hash. */
	cmd_ok("DEL %s", window_key("h3", hour));
	cmd_ok("HSET %s total 1 crm x", window_key("h3", hour));
	ck_assert_int_eq(counters_charge(ctr, NULL, "h3", "crm", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), COUNTERS_REJECTED);
	ck_assert_msg(strstr(err, "not an integer") != NULL, "%s", err);
	ck_assert_int_eq(usage("h3", "total"), -1);
	ck_assert_int_eq(wusage("h3", hour, "total"), 1);

	/* The day's key of another type, for an account without a daily cap: never read. */
	cmd_ok("HSET qm:account:{free} plan hourly3");
	cmd_ok("SET %s oops", window_key("free", day));
	ck_assert_int_eq(counters_charge(ctr, NULL, "free", "crm", 1, COUNTERS_ENFORCE, now, &q,
					 err, sizeof(err)), 0);
	ck_assert_int_eq(q.status, QM_STATUS_OK);
	counters_free(ctr);
}
END_TEST

/* The usage of a month keeps the plan and limit of its last write */
START_TEST(test_usage_plan)
{
	struct counters *ctr;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	ck_assert_str_eq(hget(usage_key("acme"), "plan"), "tiny");
	ck_assert_str_eq(hget(usage_key("acme"), "limit"), "5");
	cmd_ok("HSET qm:account:{acme} plan hundred limit -1");
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "hundred", -1, 2);
	ck_assert_str_eq(hget(usage_key("acme"), "plan"), "hundred");
	ck_assert_str_eq(hget(usage_key("acme"), "limit"), "-1");
	cmd_ok("HSET qm:account:{acme} plan tiny limit 1");
	refused(ctr, "00000000000000c1", "acme", NULL, 1);
	ck_assert_str_eq(hget(usage_key("acme"), "plan"), "tiny");
	ck_assert_str_eq(hget(usage_key("acme"), "limit"), "1");
	/* A peek writes nothing; no category may be called plan or limit. */
	cmd_ok("HSET qm:account:{acme} plan basic limit 7");
	(void) peek(ctr, "acme");
	ck_assert_str_eq(hget(usage_key("acme"), "plan"), "tiny");
	ck_assert(keys_reserved_field("plan") && keys_reserved_field("Limit"));
	ck_assert(keys_reserved_field("Cap"));	/* the cap event's mark in window hashes */
	counters_free(ctr);
}
END_TEST

/* thresholds: each percent once, then one "exhausted" event */
START_TEST(test_events)
{
	static int percents[] = {50, 80, 100};
	struct counters *ctr;
	redisReply *r;

	conf.warn_percent = percents;
	conf.warn_count = 3;
	cmd_ok("HSET qm:account:{acme} plan hundred");
	ctr = make();
	charge(ctr, "acme", "crm", 49, false);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 0);
	charge(ctr, "acme", "crm", 1, false);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 1);
	charge(ctr, "acme", "crm", 1, false);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 1);
	/* One charge crossing two thresholds announces both. */
	expect(charge(ctr, "acme", "crm", 49, false), QM_STATUS_OK, "hundred", 100, 100);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 3);
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_EXHAUSTED, "hundred", 100, 100);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 4);
	charge(ctr, "acme", "crm", 1, false);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 4);

	r = cmd("XRANGE qm:events - +");
	ck_assert_uint_eq(r->elements, 4);
	{
		static const char *const want[][14] = {
			{"type", "threshold", "account", "acme", "month", "M", "percent", "50",
			 "used", "50", "limit", "100", "plan", "hundred"},
			{"type", "threshold", "account", "acme", "month", "M", "percent", "80",
			 "used", "100", "limit", "100", "plan", "hundred"},
			{"type", "threshold", "account", "acme", "month", "M", "percent", "100",
			 "used", "100", "limit", "100", "plan", "hundred"},
			{"type", "exhausted", "account", "acme", "month", "M", "used", "100",
			 "limit", "100", "plan", "hundred", NULL, NULL},
		};

		for (size_t e = 0; e < 4; e++) {
			redisReply *f = r->element[e]->element[1];
			size_t  n = want[e][12] ? 14 : 12;

			ck_assert_uint_eq(f->elements, n);
			for (size_t i = 0; i < n; i++)
				ck_assert_str_eq(f->element[i]->str,
						 strcmp(want[e][i], "M") == 0 ? month : want[e][i]);
		}
	}
	freeReplyObject(r);

	/* Unlimited accounts and plans of 0 announce nothing; a new account starts over. */
	cmd_ok("HSET qm:account:{ent} plan enterprise");
	charge(ctr, "ent", "crm", 1000000, false);
	cmd_ok("HSET qm:account:{other} plan tiny");
	charge(ctr, "other", "crm", 3, false);	/* 60% */
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 5);
	counters_free(ctr);

	/* No warn percents: no threshold events. */
	conf.warn_count = 0;
	ctr = make();
	cmd_ok("HSET qm:account:{quiet} plan tiny");
	charge(ctr, "quiet", "crm", 5, false);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 5);
	counters_free(ctr);
}
END_TEST

/* a limit of QM_COUNT_MAX reaches its 100% threshold: limit * percent passes 2^53 */
START_TEST(test_events_largest_limit)
{
	static int percents[] = {100};
	struct counters *ctr;

	conf.warn_percent = percents;
	conf.warn_count = 1;
	cmd_ok("HSET qm:account:{acme} plan basic limit %lld", QM_COUNT_MAX);
	cmd_ok("HSET %s total %lld", usage_key("acme"), QM_COUNT_MAX - 1);
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "basic", QM_COUNT_MAX,
	       QM_COUNT_MAX);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 1);
	counters_free(ctr);
}
END_TEST

/* entry - a journal entry */
static struct journal_entry
entry(const char *id, const char *entry_month, const char *account, long long units,
      long long refused)
{
	struct journal_entry e;

	memset(&e, 0, sizeof(e));
	snprintf(e.id, sizeof(e.id), "%s", id);
	snprintf(e.month, sizeof(e.month), "%s", entry_month);
	snprintf(e.account, sizeof(e.account), "%s", account);
	snprintf(e.category, sizeof(e.category), "crm");
	e.units = units;
	e.refused = refused;
	return e;
}

/* Journal replay: counted once per entry id, in the entry's month, fit or not */
START_TEST(test_replay)
{
	struct journal_entry e;
	struct counters *ctr;
	struct month_table *utc;
	char    m[MONTH_KEY_LEN], last[32], err[256], key[KEYS_MAX];
	struct tm tm;
	redisReply *r;
	long long keys;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	ck_assert_int_eq(counters_month(ctr, now, m), 0);
	ck_assert_str_eq(m, month);
	ck_assert_int_eq(counters_month(ctr, (time_t) 7258118400LL, m), -1);
	{
		char	h[MONTH_WINDOW_LEN];

		ck_assert_int_eq(counters_hour(ctr, now, h), 0);
		ck_assert_str_eq(h, hour);
		ck_assert_int_eq(counters_hour(ctr, (time_t) 7258118400LL, h), -1);
	}

	e = entry("mta1-42-1700000000-1", month, "acme", 4, 1);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(usage("acme", "total"), 4);
	ck_assert_int_eq(usage("acme", "messages"), 1);
	ck_assert_int_eq(usage("acme", "crm"), 4);
	ck_assert_int_eq(usage("acme", "refused"), 1);
	/* Replayed again (a crash in the middle of a replay): counted once. */
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(usage("acme", "total"), 4);
	ck_assert_int_eq(usage("acme", "messages"), 1);
	ck_assert_int_eq(usage("acme", "refused"), 1);

	/* What does not fit is counted all the same, and recorded. */
	e = entry("mta1-42-1700000000-2", month, "acme", 3, 0);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(usage("acme", "total"), 7);
	ck_assert_int_eq(usage("acme", "would_refuse"), 3);
	/* 80%, exhausted (the RCPT refusal), 100%. */
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 3);

	/* Into the month the mail was accepted in, with that month's expiry. */
	gmtime_r(&now, &tm);
	if (tm.tm_mon == 0)
		snprintf(last, sizeof(last), "%04d-12", (tm.tm_year + 1899) % 10000);
	else
		snprintf(last, sizeof(last), "%04d-%02d", (tm.tm_year + 1900) % 10000,
			 tm.tm_mon % 100);
	e = entry("mta1-42-1700000000-3", last, "acme", 2, 0);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	snprintf(key, sizeof(key), "qm:usage:{acme}:%s", last);
	r = cmd("HGET %s total", key);
	ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
	ck_assert_str_eq(r->str, "2");
	freeReplyObject(r);
	utc = month_table_create("UTC", err, sizeof(err));
	ck_assert_ptr_nonnull(utc);
	ck_assert_int_eq(cmd_int("EXPIRETIME %s", key), month_start(utc, last, 14));
	ck_assert_int_eq(cmd_int("EXPIRETIME qm:warned:{acme}:%s", last), month_start(utc, last, 14));
	month_table_free(utc);
	ck_assert_int_eq(usage("acme", "total"), 7);

	/* A month whose hashes have expired already: nothing to add to, nothing written. */
	keys = cmd_int("DBSIZE");
	e = entry("mta1-42-1700000000-4", "2001-01", "acme", 2, 0);
	ck_assert_int_eq(counters_replay(ctr, &e, err, sizeof(err)), 0);
	ck_assert_int_eq(cmd_int("DBSIZE"), keys);

	/* Entries that cannot be right are errors, and write nothing. */
	{
		struct journal_entry bad[] = {
			entry("", month, "acme", 1, 0),
			entry("has space", month, "acme", 1, 0),
			entry("ctl\x01", month, "acme", 1, 0),
			entry("x", "2026-13", "acme", 1, 0),
			entry("x", "", "acme", 1, 0),
			entry("x", month, "a b", 1, 0),
			entry("x", month, "acme", -1, 0),
			entry("x", month, "acme", 1, -1),
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			err[0] = 0;
			ck_assert_msg(counters_replay(ctr, &bad[i], err, sizeof(err)) == COUNTERS_REJECTED,
				      "bad entry %zu applied", i);
			ck_assert(err[0] != 0);
		}
		memset(bad[0].id, 'x', sizeof(bad[0].id));	/* no NUL at all */
		ck_assert_int_eq(counters_replay(ctr, &bad[0], err, sizeof(err)), COUNTERS_REJECTED);
	}
	ck_assert_int_eq(cmd_int("DBSIZE"), keys);
	ck_assert_int_eq(usage("acme", "total"), 7);

	/* A suspended account's journaled mail went out: it is counted too. */
	cmd_ok("HSET qm:account:{susp} plan tiny suspended 1");
	e = entry("mta1-42-1700000000-5", month, "susp", 2, 0);
	ck_assert_int_eq(counters_replay(ctr, &e, err, sizeof(err)), 0);
	ck_assert_int_eq(usage("susp", "total"), 2);
	ck_assert_int_eq(usage("susp", "would_refuse"), 2);
	counters_free(ctr);
}
END_TEST

/* journal_lines - every line of the journal files in folder, joined */
static char *
journal_lines(const char *folder)
{
	static char all[4096];
	char	cmdline[PATH_MAX + 64];
	FILE   *fp;
	size_t	n;

	snprintf(cmdline, sizeof(cmdline), "cat %s/journal.*.log 2>/dev/null", folder);
	ck_assert_ptr_nonnull(fp = popen(cmdline, "r"));
	n = fread(all, 1, sizeof(all) - 1, fp);
	all[n] = 0;
	pclose(fp);
	return all;
}

/* files_named - how many files in folder start with prefix */
static int
files_named(const char *folder, const char *prefix)
{
	DIR    *d = opendir(folder);
	struct dirent *de;
	int	n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
	closedir(d);
	return n;
}

/* Inflight files: what a dead milter left in flight is cancelled, a live one's is not */
START_TEST(test_inflight)
{
	char	folder[] = "/tmp/qm-inflight.XXXXXX";
	char	err[256], path[PATH_MAX + 32], want[256];
	struct journal_entry e1 = entry("00000000000000c1", month, "acme", 2, 1);
	struct journal_entry e2 = entry("00000000000000c2", month, "beta", 3, 0);
	struct journal_entry e3 = entry("00000000000000c3", month, "gamma", 4, 0);
	struct journal *jr;
	struct inflight *mine;
	pid_t	pid;
	int	status, a, b, fd;

	ck_assert_ptr_nonnull(mkdtemp(folder));
	ck_assert_ptr_nonnull(jr = journal_open(folder, err, sizeof(err)));
	ck_assert_ptr_nonnull(mine = inflight_open(folder, err, sizeof(err)));
	a = inflight_begin(mine, &e1);
	b = inflight_begin(mine, &e2);
	ck_assert_int_ge(a, 0);
	ck_assert_int_ne(a, b);
	inflight_end(mine, b);

	/* A milter that dies with one charge in flight, one ended. */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct inflight *inf = inflight_open(folder, err, sizeof(err));

		if (inf == NULL)
			_exit(2);
		inflight_end(inf, inflight_begin(inf, &e1));
		(void) inflight_begin(inf, &e3);
		_exit(0);		/* no inflight_close: as killed */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(status, 0);
	ck_assert_int_eq(files_named(folder, "inflight."), 2);

	/* Something else under an inflight name is set aside, not read. */
	snprintf(path, sizeof(path), "%s/inflight.junk.map", folder);
	ck_assert_int_ge(fd = open(path, O_WRONLY | O_CREAT, 0600), 0);
	ck_assert_int_eq(write(fd, "junk", 4), 4);
	close(fd);

	ck_assert_int_eq(inflight_recover(folder, jr, NULL, err, sizeof(err)), 1);
	snprintf(want, sizeof(want), "00000000000000c3 %s gamma crm 4 0 cancel\n", month);
	ck_assert_str_eq(journal_lines(folder), want);
	/* The dead one's file is gone, ours stays (its milter lives), the junk is kept aside. */
	ck_assert_int_eq(files_named(folder, "inflight."), 2);
	ck_assert_int_eq(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/inflight.junk.map.bad", folder);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_int_eq(unlink(path), 0);

	/* Again: nothing more. Then ours, as if this process had died: its one charge. */
	ck_assert_int_eq(inflight_recover(folder, jr, NULL, err, sizeof(err)), 0);
	/* Ours is locked by this live process, even against itself: never read. */
	ck_assert_int_eq(inflight_recover(folder, jr, NULL, err, sizeof(err)), 0);
	ck_assert_str_eq(journal_lines(folder), want);
	inflight_end(mine, a);
	inflight_close(mine);
	ck_assert_int_eq(files_named(folder, "inflight."), 0);
	journal_close(jr);
	snprintf(path, sizeof(path), "rm -rf %s", folder);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

/* Journal lines with the charge's hour, and lines of older versions without it */
START_TEST(test_journal_window)
{
	static const struct {
		const char *line;
		bool	ok, cancel, refusal;
		const char *window;
	} cases[] = {
		/* Older versions' lines: read as before, no window. */
		{"mta-1 2026-12 acme crm 3 0\n", true, false, false, ""},
		{"00000000000000a1 2026-12 acme crm 3 1 cancel\n", true, true, false, ""},
		{"00000000000000a1 2026-12 acme - 3 0 refused\n", true, false, true, ""},
		/* With the hour. */
		{"mta-1 2026-12 acme crm 3 0 2026-12-03T14\n", true, false, false, "2026-12-03T14"},
		{"00000000000000a1 2026-12 acme crm 3 0 cancel 2026-12-31T23\n", true, true, false,
		 "2026-12-31T23"},
		{"00000000000000a1 2026-12 acme crm 3 0 refused 2026-12-01T00\n", true, false, true,
		 "2026-12-01T00"},
		/* Not an hour, not of the month, in the wrong place, or one field too many. */
		{"mta-1 2026-12 acme crm 3 0 2026-12-03\n", false, false, false, ""},
		{"mta-1 2026-12 acme crm 3 0 2026-11-30T23\n", false, false, false, ""},
		{"mta-1 2026-12 acme crm 3 0 2026-12-03T24\n", false, false, false, ""},
		{"mta-1 2026-12 acme crm 3 0 2026-12-32T01\n", false, false, false, ""},
		{"mta-1 2026-12 acme crm 3 0 2026-12-03T1\n", false, false, false, ""},
		{"mta-1 2026-12 acme crm 3 0 2026-12-03T14x\n", false, false, false, ""},
		{"00000000000000a1 2026-12 acme crm 3 0 2026-12-03T14 cancel\n", false, false, false, ""},
		{"00000000000000a1 2026-12 acme crm 3 0 cancel 2026-12-03T14 x\n", false, false, false, ""},
		{"mta-1 2026-12 acme crm 3 0 2026-12-03T14 2026-12-03T15\n", false, false, false, ""},
		{"mta-1 2026-12 acme crm 3 0 cancel\n", false, false, false, ""},	/* not a charge id */
	};
	char	folder[] = "/tmp/qm-jwindow.XXXXXX";
	char	err[256], want[256], cmdline[PATH_MAX + 16];
	struct journal_entry e, again;
	struct journal *jr;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool	ok = journal_parse_line(cases[i].line, &e);

		ck_assert_msg(ok == cases[i].ok, "case %zu: %s", i, cases[i].line);
		if (!ok)
			continue;
		ck_assert_msg(e.cancel == cases[i].cancel && e.refusal == cases[i].refusal
			      && strcmp(e.window, cases[i].window) == 0, "case %zu: read %s", i,
			      e.window);
		ck_assert(journal_entry_valid(&e));
	}

	/* An hour not of the entry's month, or unterminated: not valid. */
	e = entry("mta-1", "2026-12", "acme", 1, 0);
	snprintf(e.window, sizeof(e.window), "2027-01-01T00");
	ck_assert(!journal_entry_valid(&e));
	memset(e.window, '1', sizeof(e.window));
	ck_assert(!journal_entry_valid(&e));

	/* Written and read back through a file, with and without the hour. */
	ck_assert_ptr_nonnull(mkdtemp(folder));
	ck_assert_ptr_nonnull(jr = journal_open(folder, err, sizeof(err)));
	e = entry("00000000000000b1", "2026-12", "acme", 2, 0);
	e.cancel = true;
	snprintf(e.window, sizeof(e.window), "2026-12-03T14");
	ck_assert_int_eq(journal_append(jr, &e, err, sizeof(err)), 0);
	again = entry("", "2026-12", "beta", 1, 0);
	/* An hour of another month would make the line, and its file, unreadable: dropped. */
	snprintf(again.window, sizeof(again.window), "2027-01-01T00");
	ck_assert_int_eq(journal_append(jr, &again, err, sizeof(err)), 0);
	ck_assert_str_eq(again.window, "");
	snprintf(want, sizeof(want), "00000000000000b1 2026-12 acme crm 2 0 cancel 2026-12-03T14\n"
		 "%s 2026-12 beta crm 1 0\n", again.id);
	ck_assert_str_eq(journal_lines(folder), want);
	journal_close(jr);
	snprintf(cmdline, sizeof(cmdline), "rm -rf %s", folder);
	ck_assert_int_eq(system(cmdline), 0);
}
END_TEST

/*
 * The hour of a charge in flight comes back in its cancel; a file of the
 * version before caps (slots without it, so shorter) is still recovered.
 */
START_TEST(test_inflight_window)
{
	char	folder[] = "/tmp/qm-infwin.XXXXXX";
	char	err[256], path[PATH_MAX + 32], want[256];
	struct journal_entry e = entry("00000000000000c7", "2026-12", "acme", 2, 0);
	struct journal *jr;
	pid_t	pid;
	int	status, fd;

	ck_assert_ptr_nonnull(mkdtemp(folder));
	ck_assert_ptr_nonnull(jr = journal_open(folder, err, sizeof(err)));
	snprintf(e.window, sizeof(e.window), "2026-12-03T14");
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct inflight *inf = inflight_open(folder, err, sizeof(err));

		struct journal_entry bad = entry("00000000000000c6", "2026-12", "gamma", 1, 0);

		/* An hour not of its month: the cancel goes on without it. */
		snprintf(bad.window, sizeof(bad.window), "2027-01-01T00");
		_exit(inf == NULL || inflight_begin(inf, &e) < 0 || inflight_begin(inf, &bad) < 0
		      ? 2 : 0);	/* as killed */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(status, 0);
	ck_assert_int_eq(inflight_recover(folder, jr, NULL, err, sizeof(err)), 2);
	snprintf(want, sizeof(want), "00000000000000c7 2026-12 acme crm 2 0 cancel 2026-12-03T14\n"
		 "00000000000000c6 2026-12 gamma crm 1 0 cancel\n");
	ck_assert_str_eq(journal_lines(folder), want);

	/*
	 * The older layout, written out here: magic, slot size, slot count,
	 * then slots of {state, entry up to its window}, 4096 of them.
	 */
	{
		size_t	entry_off = offsetof(struct { uint32_t s; struct journal_entry e; }, e);
		size_t	old_entry = (offsetof(struct journal_entry, window) + 7) / 8 * 8;
		size_t	old_slot = (entry_off + old_entry + 7) / 8 * 8;
		size_t	head = 16, size = head + 4096 * old_slot;
		char   *buf = calloc(1, size);
		uint32_t one = 1, slot_size = (uint32_t) old_slot, slots = 4096;

		ck_assert_uint_lt(old_slot, entry_off + sizeof(struct journal_entry));
		ck_assert_ptr_nonnull(buf);
		memcpy(buf, "qm-infl", 8);
		memcpy(buf + 8, &slot_size, 4);
		memcpy(buf + 12, &slots, 4);
		e = entry("00000000000000c8", "2026-12", "beta", 3, 1);
		/* The last slot: a charge; its window bytes would lie past the slot. */
		memcpy(buf + head + 4095 * old_slot, &one, 4);
		memcpy(buf + head + 4095 * old_slot + entry_off, &e,
		       offsetof(struct journal_entry, window));
		snprintf(path, sizeof(path), "%s/inflight.0123456789abcdef.map", folder);
		ck_assert_int_ge(fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600), 0);
		ck_assert_int_eq(write(fd, buf, size), (ssize_t) size);
		close(fd);
		free(buf);
	}
	ck_assert_int_eq(inflight_recover(folder, jr, NULL, err, sizeof(err)), 1);
	snprintf(want, sizeof(want), "00000000000000c7 2026-12 acme crm 2 0 cancel 2026-12-03T14\n"
		 "00000000000000c6 2026-12 gamma crm 1 0 cancel\n"
		 "00000000000000c8 2026-12 beta crm 3 1 cancel\n");
	ck_assert_str_eq(journal_lines(folder), want);
	ck_assert_int_eq(access(path, F_OK), -1);
	journal_close(jr);
	snprintf(path, sizeof(path), "rm -rf %s", folder);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

/* count_apply - journal_replay() callback: count the entries, in a long */
static int
count_apply(void *arg, const struct journal_entry *e, char *err, size_t errlen)
{
	(void) e;
	(void) err;
	(void) errlen;
	(*(long *) arg)++;
	return 0;
}

/*
 * Two journals on one folder, as two milters (flock locks of two opens
 * exclude each other in one process too): a replay takes no file the
 * other still holds, and does not keep waiting for it; once the other is
 * gone, its file is taken.
 */
START_TEST(test_shared_journal)
{
	char	folder[] = "/tmp/qm-journal.XXXXXX";
	char	err[256], cmdline[PATH_MAX + 16];
	struct journal_entry e1 = entry("", month, "acme", 1, 0);
	struct journal_entry e2 = entry("", month, "beta", 1, 0);
	struct journal *one, *two;
	long	seen = 0;

	ck_assert_ptr_nonnull(mkdtemp(folder));
	ck_assert_ptr_nonnull(one = journal_open(folder, err, sizeof(err)));
	ck_assert_ptr_nonnull(two = journal_open(folder, err, sizeof(err)));
	ck_assert_int_eq(journal_append(one, &e1, err, sizeof(err)), 0);
	ck_assert_int_eq(journal_append(two, &e2, err, sizeof(err)), 0);
	ck_assert_int_eq(journal_replay(two, count_apply, &seen, NULL, err, sizeof(err)), 1);
	ck_assert_int_eq(seen, 1);
	ck_assert(!journal_pending(two));
	/* The other goes on writing to its file, which nobody took. */
	e1.id[0] = 0;
	ck_assert_int_eq(journal_append(one, &e1, err, sizeof(err)), 0);
	ck_assert_int_eq(files_named(folder, "journal."), 1);
	ck_assert_int_eq(journal_replay(two, count_apply, &seen, NULL, err, sizeof(err)), 0);
	/* Gone (its file left unreplayed): taken by the survivor, both entries. */
	journal_close(one);
	ck_assert_int_eq(journal_replay(two, count_apply, &seen, NULL, err, sizeof(err)), 2);
	ck_assert_int_eq(files_named(folder, "journal."), 0);
	ck_assert_int_eq(files_named(folder, "replay."), 0);
	ck_assert(!journal_pending(two));

	/*
	 * A milter that never saw another's file (nothing pending, nothing
	 * held) still finds what one that died left, at its next look.
	 */
	ck_assert_ptr_nonnull(one = journal_open(folder, err, sizeof(err)));
	e1.id[0] = 0;
	ck_assert_int_eq(journal_append(one, &e1, err, sizeof(err)), 0);
	journal_close(one);
	for (int i = 0; i < 80 && !journal_pending(two); i++)
		usleep(100 * 1000);
	ck_assert(journal_pending(two));
	ck_assert_int_eq(journal_replay(two, count_apply, &seen, NULL, err, sizeof(err)), 1);
	journal_close(two);
	snprintf(cmdline, sizeof(cmdline), "rm -rf %s", folder);
	ck_assert_int_eq(system(cmdline), 0);
}
END_TEST

/* Expiry: usage and warned hashes go keep_months after the month ends */
START_TEST(test_expire)
{
	static const struct {
		const char *zone;
		int	keep;
		time_t	now;
		long long expire;
		const char *month;
	} cases[] = {
		/* 2040-03-10T12:00Z; 2041-05-01T00:00 UTC, and CEST in Berlin. */
		{"UTC", 13, 2214993600, 2250979200, "2040-03"},
		{"Europe/Berlin", 13, 2214993600, 2250972000, "2040-03"},
		/* keep 0: at the end of the month itself (2040-04-01, UTC and CEST). */
		{"UTC", 0, 2214993600, 2216851200, "2040-03"},
		{"Europe/Berlin", 0, 2214993600, 2216844000, "2040-03"},
	};
	static int percents[] = {10};

	conf.warn_percent = percents;
	conf.warn_count = 1;
	cmd_ok("HSET qm:account:{acme} plan tiny");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct counters *ctr;
		struct qm_quota q;
		char    err[256];

		conf.timezone = (char *) cases[i].zone;
		conf.keep_months = cases[i].keep;
		cmd_ok("FLUSHDB");
		cmd_ok("HSET qm:account:{acme} plan tiny");
		ctr = make();
		ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "crm", 1, COUNTERS_ENFORCE, cases[i].now, &q,
						 err, sizeof(err)), 0);
		ck_assert_str_eq(q.month, cases[i].month);
		ck_assert_int_eq(cmd_int("EXPIRETIME qm:usage:{acme}:%s", cases[i].month),
				 cases[i].expire);
		ck_assert_int_eq(cmd_int("EXPIRETIME qm:warned:{acme}:%s", cases[i].month),
				 cases[i].expire);
		/* The account hash and the stream never expire. */
		ck_assert_int_eq(cmd_int("EXPIRETIME qm:account:{acme}"), -1);
		ck_assert_int_eq(cmd_int("EXPIRETIME qm:events"), -1);
		counters_free(ctr);
	}
}
END_TEST

/* Keys of the wrong type or values that are not integers: error, nothing written */
START_TEST(test_bad_data)
{
	struct counters *ctr;
	struct qm_quota q;
	char    err[256];

	ctr = make();
	cmd_ok("HSET qm:account:{acme} plan tiny");
	cmd_ok("HSET %s total abc", usage_key("acme"));
	ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "crm", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(q.status, QM_STATUS_UNAVAILABLE);
	ck_assert_msg(strstr(err, "not an integer") != NULL, "%s", err);
	ck_assert_int_eq(usage("acme", "messages"), -1);

	cmd_ok("HSET qm:account:{b} plan tiny");
	cmd_ok("HSET %s crm 1.5", usage_key("b"));
	ck_assert_int_eq(counters_charge(ctr, NULL, "b", "crm", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(usage("b", "total"), -1);

	/* A peek checks no types (it writes nothing): Redis's own error. */
	cmd_ok("SET qm:account:{c} basic");
	ck_assert_int_eq(counters_peek(ctr, "c", now, &q, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "WRONGTYPE") != NULL, "%s", err);

	/* The stream is checked before anything is counted. */
	cmd_ok("HSET qm:account:{d} plan tiny");
	cmd_ok("SET qm:events oops");
	ck_assert_int_eq(counters_charge(ctr, NULL, "d", "crm", 5, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(usage("d", "total"), -1);
	cmd_ok("DEL qm:events");
	cmd_ok("HSET qm:warned:{d}:%s x 1", month);
	cmd_ok("SET qm:warned:{d}:%s oops", month);
	ck_assert_int_eq(counters_charge(ctr, NULL, "d", "crm", 5, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(usage("d", "total"), -1);
	counters_free(ctr);
}
END_TEST

/* What never reaches Redis: bad account ids, categories, units */
START_TEST(test_bad_arguments)
{
	static const char *const accounts[] = {"", "a b", "a{b}", "a\r\nb", "a%s", "caf\xc3\xa9"};
	struct redis_pool_stats st;
	struct counters *ctr;
	struct qm_quota q;
	char    err[256];

	ctr = make();
	for (size_t i = 0; i < sizeof(accounts) / sizeof(accounts[0]); i++) {
		err[0] = 0;
		ck_assert_int_eq(counters_charge(ctr, NULL, accounts[i], "crm", 1, COUNTERS_ENFORCE, now, &q, err,
						 sizeof(err)), COUNTERS_REJECTED);
		ck_assert_int_eq(q.status, QM_STATUS_UNAVAILABLE);
		ck_assert_msg(strstr(err, "invalid account") != NULL, "%s", err);
		ck_assert_int_eq(counters_peek(ctr, accounts[i], now, &q, err, sizeof(err)), COUNTERS_REJECTED);
	}
	ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "total", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "crm", -1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(counters_peek(ctr, "acme", (time_t) 7258118400LL, &q, err,
				       sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(counters_refused(ctr, "0123", "acme", NULL, 1, now, err, sizeof(err)),
			 COUNTERS_REJECTED);
	ck_assert_int_eq(counters_refused(ctr, "0123456789abcdef", "acme", NULL, -1, now, err,
					  sizeof(err)), COUNTERS_REJECTED);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.connects, 0);
	ck_assert_int_eq(cmd_int("DBSIZE"), 0);
	counters_free(ctr);
}
END_TEST

/* counters_create refuses bad pool settings */
START_TEST(test_create_errors)
{
	static const char *const addresses[] = {
		"", "localhost", "localhost:", "localhost:0", "localhost:65536", "localhost:12x",
		"::1:6379", "[::1]6379", "[::1]:", "unix:relative.sock", "unix:",
	};
	char    err[256];

	for (size_t i = 0; i < sizeof(addresses) / sizeof(addresses[0]); i++) {
		conf.redis.address = (char *) addresses[i];
		err[0] = 0;
		ck_assert_msg(counters_create(&conf, months(), err, sizeof(err)) == NULL,
			      "address \"%s\" accepted", addresses[i]);
		ck_assert(err[0] != 0);
	}
	conf_base(redis_server_address(&server));
	conf.redis.pool_size = 0;
	ck_assert_ptr_null(counters_create(&conf, months(), err, sizeof(err)));
	conf_base(redis_server_address(&server));
	conf.redis.timeout_ms = 0;
	ck_assert_ptr_null(counters_create(&conf, months(), err, sizeof(err)));
	conf_base(redis_server_address(&server));
	conf.redis.prefix = "q{m}:";
	ck_assert_ptr_null(counters_create(&conf, months(), err, sizeof(err)));
	conf_base(redis_server_address(&server));
	{
		char   *sentinels[] = {"127.0.0.1:26379"};

		conf.redis.sentinels = sentinels;
		conf.redis.sentinel_count = 1;
		conf.redis.master = "";
		ck_assert_ptr_null(counters_create(&conf, months(), err, sizeof(err)));
	}
}
END_TEST

struct race {
	struct counters *ctr;
	const char *account;
	int	calls;
	long long units;
	int	ok, exhausted, failed;		/* results, written by the thread */
	int	capped;				/* daily_cap or hourly_cap */
};

/* race_main - charge many times, counting outcomes */
static void *
race_main(void *arg)
{
	struct race *r = arg;
	struct qm_quota q;
	char    err[256];

	for (int i = 0; i < r->calls; i++) {
		if (counters_charge(r->ctr, NULL, r->account, "crm", r->units, COUNTERS_ENFORCE, now, &q, err,
				    sizeof(err)) < 0)
			r->failed++;
		else if (q.status == QM_STATUS_OK)
			r->ok++;
		else if (q.status == QM_STATUS_EXHAUSTED)
			r->exhausted++;
		else if (q.status == QM_STATUS_HOURLY_CAP || q.status == QM_STATUS_DAILY_CAP)
			r->capped++;
		else
			r->failed++;
	}
	return NULL;
}

/* run_race - n threads of race_main; sums into total */
static void
run_race(struct counters *ctr, const char *account, int threads, int calls, struct race *total)
{
	pthread_t tid[16];
	struct race r[16];

	ck_assert_int_le(threads, 16);
	memset(total, 0, sizeof(*total));
	for (int i = 0; i < threads; i++) {
		r[i] = (struct race) {ctr, account, calls, 1, 0, 0, 0, 0};
		ck_assert_int_eq(pthread_create(&tid[i], NULL, race_main, &r[i]), 0);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(tid[i], NULL);
		total->ok += r[i].ok;
		total->exhausted += r[i].exhausted;
		total->failed += r[i].failed;
	}
}

/* atomicity: 8 threads race for a limit of 1000; exactly 1000 get through */
START_TEST(test_race_limit)
{
	struct counters *ctr;
	struct race total;

	conf.redis.timeout_ms = 2000;		/* under valgrind too: no timeouts here */
	cmd_ok("HSET qm:account:{acme} plan basic limit 1000");
	ctr = make();
	run_race(ctr, "acme", 8, 200, &total);
	ck_assert_int_eq(total.failed, 0);
	ck_assert_int_eq(total.ok, 1000);
	ck_assert_int_eq(total.exhausted, 600);
	ck_assert_int_eq(usage("acme", "total"), 1000);
	ck_assert_int_eq(usage("acme", "messages"), 1000);
	ck_assert_int_eq(usage("acme", "refused"), -1);
	counters_free(ctr);
}
END_TEST

/* events exactly once while threads race across every threshold */
START_TEST(test_race_events)
{
	static int percents[] = {10, 50, 80, 100};
	struct counters *ctr;
	struct race total;
	redisReply *r;
	int     seen[4] = {0, 0, 0, 0}, exhausted = 0;

	conf.redis.timeout_ms = 2000;
	conf.warn_percent = percents;
	conf.warn_count = 4;
	cmd_ok("HSET qm:account:{acme} plan hundred");
	ctr = make();
	run_race(ctr, "acme", 8, 40, &total);
	ck_assert_int_eq(total.failed, 0);
	ck_assert_int_eq(total.ok, 100);
	ck_assert_int_eq(cmd_int("XLEN qm:events"), 5);
	r = cmd("XRANGE qm:events - +");
	for (size_t e = 0; e < r->elements; e++) {
		redisReply *f = r->element[e]->element[1];

		if (strcmp(f->element[1]->str, "exhausted") == 0) {
			exhausted++;
			continue;
		}
		ck_assert_str_eq(f->element[1]->str, "threshold");
		ck_assert_str_eq(f->element[6]->str, "percent");
		for (int p = 0; p < 4; p++) {
			if (atoi(f->element[7]->str) == percents[p]) {
				seen[p]++;
				/* Announced by the charge that crossed it. */
				ck_assert_int_eq(atoi(f->element[9]->str), percents[p]);
			}
		}
	}
	freeReplyObject(r);
	ck_assert_int_eq(exhausted, 1);
	for (int p = 0; p < 4; p++)
		ck_assert_int_eq(seen[p], 1);
	counters_free(ctr);
}
END_TEST

/* cmdstat_calls - calls of a command since CONFIG RESETSTAT */
static long long
cmdstat_calls(const char *command)
{
	redisReply *r = cmd("INFO commandstats");
	char    field[64];
	const char *p;
	long long v = 0;

	snprintf(field, sizeof(field), "cmdstat_%s:calls=", command);
	if ((p = strstr(r->str, field)) != NULL)
		v = strtoll(p + strlen(field), NULL, 10);
	freeReplyObject(r);
	return v;
}

/* script_cached - is the script in Redis's cache? */
static bool
script_cached(const char *sha)
{
	redisReply *r = cmd("SCRIPT EXISTS %s", sha);
	bool    yes;

	ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
	ck_assert_uint_eq(r->elements, 1);
	yes = r->element[0]->integer == 1;
	freeReplyObject(r);
	return yes;
}

/* A script's arguments, its conf-only tail after them, arrive whole and in order */
START_TEST(test_eval_format)
{
	static const char body[] = "return {#KEYS, #ARGV, KEYS[1], ARGV[1], ARGV[#ARGV - 2], "
	    "ARGV[#ARGV - 1], ARGV[#ARGV]}";
	const char *tail_argv[] = {"", "t\r\n2", "0123456789"};
	const char *argv[70];
	char	numbers[70][16];
	struct redis_args tail;
	struct redis_script script;
	struct redis_pool *pool;
	redisReply *r;
	char	err[256];
	bool	doubt = true;

	ck_assert_int_eq(redis_args_make(&tail, 3, tail_argv), 0);
	ck_assert_int_eq(tail.argc, 3);
	ck_assert_str_eq(tail.resp, "$0\r\n\r\n$4\r\nt\r\n2\r\n$10\r\n0123456789\r\n");
	ck_assert_uint_eq(tail.len, strlen(tail.resp));
	for (int i = 0; i < 70; i++) {
		snprintf(numbers[i], sizeof(numbers[i]), "a%d", i);
		argv[i] = numbers[i];
	}
	argv[1] = "";			/* an empty argument, and more than 32 of them */
	ck_assert_ptr_nonnull(pool = redis_pool_create(&conf.redis, err, sizeof(err)));
	redis_script_init(&script, body);
	for (int run = 0; run < 2; run++) {	/* EVAL + SCRIPT LOAD, then EVALSHA */
		r = redis_pool_eval(pool, &script, 1, 70, argv, NULL, &tail, &doubt, err,
				    sizeof(err));
		ck_assert_msg(r != NULL, "%s", err);
		ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
		ck_assert_int_eq(r->elements, 7);
		ck_assert_int_eq(r->element[0]->integer, 1);
		ck_assert_int_eq(r->element[1]->integer, 72);
		ck_assert_str_eq(r->element[2]->str, "a0");
		ck_assert_str_eq(r->element[3]->str, "");
		ck_assert_str_eq(r->element[4]->str, "");
		ck_assert_str_eq(r->element[5]->str, "t\r\n2");
		ck_assert_str_eq(r->element[6]->str, "0123456789");
		ck_assert(!doubt);
		freeReplyObject(r);
	}
	/* The second run went by EVALSHA of the script the first one loaded. */
	ck_assert_int_eq(strlen(script.sha), 40);
	r = cmd("SCRIPT EXISTS %s", script.sha);
	ck_assert(r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->integer == 1);
	freeReplyObject(r);
	redis_script_destroy(&script);
	redis_pool_free(pool);
	redis_args_free(&tail);
	redis_args_free(&tail);		/* twice is allowed */
	ck_assert_ptr_null(tail.resp);
}
END_TEST

/* EVALSHA in the steady state; after SCRIPT FLUSH the script is sent again, counting goes on */
START_TEST(test_noscript)
{
	struct counters *ctr;
	redisReply *r;
	char    sha[41];

	/* The SHA1 of the script as Redis computes it. */
	r = cmd("SCRIPT LOAD %s", quota_lua);
	ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
	snprintf(sha, sizeof(sha), "%s", r->str);
	freeReplyObject(r);
	cmd_ok("SCRIPT FLUSH");
	ck_assert(!script_cached(sha));
	cmd_ok("CONFIG RESETSTAT");

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	ck_assert(script_cached(sha));
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 2);
	expect(peek(ctr, "acme"), QM_STATUS_OK, "tiny", 5, 2);
	ck_assert_int_eq(cmdstat_calls("eval"), 1);
	ck_assert_int_eq(cmdstat_calls("evalsha"), 2);

	cmd_ok("SCRIPT FLUSH");
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 3);
	ck_assert(script_cached(sha));
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 4);
	ck_assert_int_eq(cmdstat_calls("eval"), 2);
	ck_assert_int_eq(cmdstat_calls("evalsha"), 4);	/* one answered NOSCRIPT */
	ck_assert_int_eq(usage("acme", "total"), 4);
	ck_assert_int_eq(usage("acme", "messages"), 4);
	counters_free(ctr);
}
END_TEST

/* Redis restarted between calls: the next call reconnects without an error */
START_TEST(test_restart)
{
	struct redis_pool_stats st;
	struct counters *ctr;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	redisFree(direct);
	direct = NULL;
	ck_assert_int_eq(redis_server_restart(&server), 0);
	direct = redis_server_connect(&server);
	ck_assert_ptr_nonnull(direct);
	cmd_ok("HSET qm:account:{acme} plan tiny");

	/* The dataset is new (no persistence) and so is the script cache. */
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 2);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.connects, 2);
	ck_assert_uint_eq(st.connect_failures, 0);
	ck_assert_uint_eq(st.open, 1);
	counters_free(ctr);
}
END_TEST

/* A connection cut as the request arrives: one transparent retry, counted once */
START_TEST(test_retry_once)
{
	struct redis_pool_stats st;
	struct redis_proxy proxy;
	struct counters *ctr;
	struct qm_quota q;
	char    address[64], err[256];

	ck_assert_int_eq(redis_proxy_start(&proxy, server.port), 0);
	snprintf(address, sizeof(address), "127.0.0.1:%d", proxy.port);
	conf.redis.address = address;
	conf.redis.pool_size = 1;
	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	ck_assert_int_eq(redis_proxy_accepted(&proxy), 1);

	redis_proxy_drop(&proxy, 1);
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 2);
	ck_assert_int_eq(redis_proxy_dropped(&proxy), 1);
	ck_assert_int_eq(redis_proxy_accepted(&proxy), 2);
	ck_assert_int_eq(usage("acme", "total"), 2);
	ck_assert_int_eq(usage("acme", "messages"), 2);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.retries, 1);

	/* Only one retry: with the new connection cut too, the call fails ... */
	redis_proxy_drop(&proxy, 2);
	ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "crm", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), -1);
	ck_assert_int_eq(q.status, QM_STATUS_UNAVAILABLE);
	ck_assert_msg(strstr(err, "closed") != NULL || strstr(err, "reset") != NULL, "%s", err);
	ck_assert_int_eq(redis_proxy_dropped(&proxy), 3);
	ck_assert_int_eq(redis_proxy_accepted(&proxy), 3);
	ck_assert_int_eq(usage("acme", "total"), 2);
	/* ... and the next one works. */
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 3);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.retries, 2);
	ck_assert_uint_eq(st.connect_failures, 0);
	counters_free(ctr);
	redis_proxy_stop(&proxy);
}
END_TEST

/* A read timeout is never retried: the request may have run */
START_TEST(test_timeout_no_retry)
{
	struct redis_pool_stats st;
	struct counters *ctr;
	struct qm_quota q;
	char    err[256];
	long long start, elapsed;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);

	ck_assert_int_eq(redis_server_kill(&server, SIGSTOP), 0);
	start = helper_ms();
	ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "crm", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), -1);
	elapsed = helper_ms() - start;
	ck_assert_int_eq(redis_server_kill(&server, SIGCONT), 0);
	ck_assert_int_eq(q.status, QM_STATUS_UNAVAILABLE);
	ck_assert_msg(strstr(err, "timed out") != NULL, "%s", err);
	ck_assert_msg(elapsed >= TIMEOUT_MS - 20 && elapsed <= 2 * TIMEOUT_MS + slack_ms,
		      "took %lld ms", elapsed);

	/* Redis ran the request after all, once: the caller was right not to count on it. */
	ck_assert_msg(q.may_have_run, "a timed-out charge is in doubt");
	ck_assert_int_eq(strlen(q.charge_id), 16);
	for (int i = 0; i < 100 && usage("acme", "total") != 2; i++)
		helper_sleep_ms(10);
	helper_sleep_ms(100);
	ck_assert_int_eq(usage("acme", "total"), 2);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.retries, 0);
	ck_assert_uint_eq(st.open, 0);

	/* Its cancel takes it back: the message got a 451. Twice is once. */
	{
		struct journal_entry e = entry(q.charge_id, q.month, "acme", 1, 0);

		e.cancel = true;
		for (int i = 0; i < 2; i++) {
			ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
			ck_assert_int_eq(usage("acme", "total"), 1);
			ck_assert_int_eq(usage("acme", "messages"), 1);
			ck_assert_int_eq(usage("acme", "crm"), 1);
		}
	}

	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 2);
	counters_free(ctr);
}
END_TEST

/* Redis down before anything was sent: the charge failed, and is not in doubt */
START_TEST(test_down_no_doubt)
{
	struct counters *ctr;
	struct qm_quota q;
	char    err[256];

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	redisFree(direct);
	direct = NULL;
	redis_server_stop(&server);
	ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "crm", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), -1);
	ck_assert_msg(!q.may_have_run, "refused connection left the charge in doubt: %s", err);
	counters_free(ctr);
}
END_TEST

/*
 * The cap event: exactly once for the hour, though 8 threads of two
 * milters (two counters objects, two pools) race past the cap
 */
START_TEST(test_race_cap_event)
{
	struct counters *ctr[2];
	struct race r[8];
	pthread_t tid[8];
	redisReply *x;
	int	ok = 0, capped = 0, failed = 0, caps = 0;

	conf.redis.timeout_ms = 2000;
	cmd_ok("HSET qm:account:{acme} plan hourly3");
	ctr[0] = make();
	ctr[1] = make();
	for (int i = 0; i < 8; i++) {
		r[i] = (struct race) {ctr[i % 2], "acme", 20, 1, 0, 0, 0, 0};
		ck_assert_int_eq(pthread_create(&tid[i], NULL, race_main, &r[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(tid[i], NULL);
		ok += r[i].ok;
		capped += r[i].capped;
		failed += r[i].failed + r[i].exhausted;
	}
	ck_assert_int_eq(failed, 0);
	ck_assert_int_eq(ok, 3);
	ck_assert_int_eq(capped, 157);
	ck_assert_int_eq(usage("acme", "total"), 3);
	ck_assert_int_eq(wusage("acme", hour, "total"), 3);
	x = cmd("XRANGE qm:events - +");
	for (size_t e = 0; e < x->elements; e++)
		caps += strcmp(x->element[e]->element[1]->element[1]->str, "cap") == 0;
	freeReplyObject(x);
	ck_assert_int_eq(caps, 1);
	counters_free(ctr[0]);
	counters_free(ctr[1]);
}
END_TEST

/* raw_charge - the script's charge op with a chosen id: "ok", "cancelled", ... */
static char *
raw_charge(const char *account, const char *id, long long units, bool monitor)
{
	static char status[32];
	char    kacct[KEYS_MAX], kwarn[KEYS_MAX], kcharge[KEYS_MAX], units_text[24];
	redisReply *r;

	snprintf(kacct, sizeof(kacct), "qm:account:{%s}", account);
	snprintf(kwarn, sizeof(kwarn), "qm:warned:{%s}:%s", account, month);
	snprintf(kcharge, sizeof(kcharge), "qm:charge:{%s}:%s", account, id);
	snprintf(units_text, sizeof(units_text), "%lld", units);
	r = cmd("EVAL %s 7 %s %s %s qm:events %s qm:usage:{%s}:%s qm:usage:{%s}:%s "
		"charge %s crm %s %lld %s %s 0 %s %s %lld %s %lld free 80,100 "
		"tiny 5 -1 -1 hundred 100 -1 -1 hourly3 1000 -1 3", quota_lua, kacct,
		usage_key(account), kwarn, kcharge, account, day, account, hour,
		units_text, monitor ? "1" : "0", (long long) now + 86400 * 400, month, account, "",
		day, (long long) now + 2 * 86400, hour, (long long) now + 7200);
	ck_assert_msg(r->type == REDIS_REPLY_ARRAY && r->elements == 8
		      && r->element[0]->type == REDIS_REPLY_STRING, "charge reply type %d: %s",
		      r->type, r->type == REDIS_REPLY_ERROR ? r->str : "");
	snprintf(status, sizeof(status), "%s", r->element[0]->str);
	freeReplyObject(r);
	return status;
}

/* cancel - apply a cancel entry that must reach Redis */
static void
cancel(struct counters *ctr, const char *id, const char *account, long long units,
       long long refused)
{
	struct journal_entry e = entry(id, month, account, units, refused);
	char    err[256] = "";

	e.cancel = true;
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "cancel %s: %s", id, err);
}

/* Cancels of charges in doubt: before or after the charge runs, exactly once */
START_TEST(test_cancel)
{
	struct journal_entry e;
	struct counters *ctr;
	char    err[256];

	cmd_ok("HSET qm:account:{acme} plan hundred");
	ctr = make();

	/* The charge ran, then its cancel: nothing stays, however often. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000a1", 3, false), "ok");
	ck_assert_int_eq(usage("acme", "total"), 3);
	for (int i = 0; i < 2; i++) {
		cancel(ctr, "00000000000000a1", "acme", 3, 0);
		ck_assert_int_eq(usage("acme", "total"), 0);
		ck_assert_int_eq(usage("acme", "messages"), 0);
		ck_assert_int_eq(usage("acme", "crm"), 0);
		ck_assert_int_eq(usage("acme", "refused"), -1);
	}

	/* The cancel first, the charge late: the charge counts nothing, nor its refusals. */
	cancel(ctr, "00000000000000b2", "acme", 4, 2);
	ck_assert_int_eq(cmd_int("PTTL qm:charge:{acme}:00000000000000b2") > 590000, 1);
	ck_assert_str_eq(raw_charge("acme", "00000000000000b2", 4, false), "cancelled");
	ck_assert_int_eq(usage("acme", "total"), 0);
	cancel(ctr, "00000000000000b2", "acme", 4, 2);
	ck_assert_int_eq(usage("acme", "refused"), -1);

	/* A charge with RCPT-stage refusals that ran: its refusals stay, once. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000b3", 1, false), "ok");
	cmd_ok("HINCRBY %s refused 2", usage_key("acme"));	/* as its ARGV[8] would */
	cancel(ctr, "00000000000000b3", "acme", 1, 2);
	cmd_ok("DEL qm:charge:{acme}:00000000000000b3");	/* the outcome expired */
	cancel(ctr, "00000000000000b3", "acme", 1, 2);
	ck_assert_int_eq(usage("acme", "refused"), 2);
	ck_assert_int_eq(usage("acme", "total"), 0);

	/* Other charges are not touched; a monitor charge over the limit is taken back whole. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000c3", 90, false), "ok");
	ck_assert_str_eq(raw_charge("acme", "00000000000000d4", 20, true), "over");
	ck_assert_int_eq(usage("acme", "would_refuse"), 20);
	cancel(ctr, "00000000000000d4", "acme", 20, 0);
	ck_assert_int_eq(usage("acme", "total"), 90);
	ck_assert_int_eq(usage("acme", "messages"), 1);
	ck_assert_int_eq(usage("acme", "crm"), 90);
	ck_assert_int_eq(usage("acme", "would_refuse"), 0);

	/* A refused charge counted nothing: its cancel takes nothing back. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000e5", 20, false), "exhausted");
	cancel(ctr, "00000000000000e5", "acme", 20, 0);
	ck_assert_int_eq(usage("acme", "total"), 90);

	/* A usage reset in between: never below zero. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000f6", 5, false), "ok");
	cmd_ok("HSET %s total 2", usage_key("acme"));
	cancel(ctr, "00000000000000f6", "acme", 5, 0);
	ck_assert_int_eq(usage("acme", "total"), 0);

	/* Accept mode: a replayed journal entry, then its charge arrives late: once. */
	cmd_ok("DEL %s", usage_key("acme"));
	e = entry("00000000000000a7", month, "acme", 6, 0);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_str_eq(raw_charge("acme", "00000000000000a7", 6, false), "replayed");
	ck_assert_int_eq(usage("acme", "total"), 6);

	/* Replayed, then cancelled (the milter died before its verdict): taken back. */
	e = entry("00000000000000b8", month, "acme", 7, 0);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(usage("acme", "total"), 13);
	cancel(ctr, "00000000000000b8", "acme", 7, 0);
	ck_assert_int_eq(usage("acme", "total"), 6);
	ck_assert_int_eq(usage("acme", "crm"), 6);

	/* A cancel needs a charge's id. */
	e = entry("mta1-42-1700000000-1", month, "acme", 1, 0);
	e.cancel = true;
	ck_assert_int_eq(counters_replay(ctr, &e, err, sizeof(err)), COUNTERS_REJECTED);
	ck_assert_int_eq(usage("acme", "total"), 6);
	counters_free(ctr);
}
END_TEST

/* A replay whose charge ran and counted nothing (exhausted, ...): counted now */
START_TEST(test_replay_uncounted_charge)
{
	struct journal_entry e;
	struct counters *ctr;
	char    err[256];

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 5, false), QM_STATUS_OK, "tiny", 5, 5);
	/* The charge ran and refused; its reply was lost; accept mode let it through. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000d1", 2, false), "exhausted");
	e = entry("00000000000000d1", month, "acme", 2, 0);
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
		ck_assert_int_eq(usage("acme", "total"), 7);
		ck_assert_int_eq(usage("acme", "messages"), 2);
		ck_assert_int_eq(usage("acme", "would_refuse"), 2);
	}
	ck_assert_str_eq(raw_charge("acme", "00000000000000d1", 2, false), "replayed-over");

	/* suspended too. */
	cmd_ok("HSET qm:account:{susp} plan tiny suspended 1");
	ck_assert_str_eq(raw_charge("susp", "00000000000000d2", 1, false), "suspended");
	e = entry("00000000000000d2", month, "susp", 1, 0);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(usage("susp", "total"), 1);

	/* Cancelled first (the milter died before its verdict): the replay counts nothing. */
	cancel(ctr, "00000000000000d4", "acme", 1, 0);
	e = entry("00000000000000d4", month, "acme", 1, 0);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(usage("acme", "total"), 7);

	/* A charge that counted: its replay counts nothing. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000d3", 1, true), "over");
	e = entry("00000000000000d3", month, "acme", 1, 0);
	ck_assert_msg(counters_replay(ctr, &e, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(usage("acme", "total"), 8);
	counters_free(ctr);
}
END_TEST

/* reset: a cancel after it takes back nothing counted before it, nor makes a hash */
START_TEST(test_cancel_after_reset)
{
	struct counters *ctr;
	char    err[256], wkey[KEYS_MAX];
	bool	deleted = false;
	struct timespec pause = {0, 20 * 1000 * 1000};

	snprintf(wkey, sizeof(wkey), "qm:warned:{acme}:%s", month);
	cmd_ok("HSET qm:account:{acme} plan hundred");
	ctr = make();
	ck_assert_str_eq(raw_charge("acme", "00000000000000e1", 85, false), "ok");
	cmd_ok("HSET %s replay:x1 1", wkey);
	ck_assert_str_eq(hget(wkey, "80"), "1");
	nanosleep(&pause, NULL);
	ck_assert_msg(counters_reset(ctr, "acme", month, &deleted, err, sizeof(err)) == 0, "%s", err);
	ck_assert(deleted);
	ck_assert_int_eq(cmd_int("EXISTS %s", usage_key("acme")), 0);
	/* Thresholds are announced again; replay ids stay; the warned hash expires. */
	ck_assert_str_eq(hget(wkey, "80"), "");
	ck_assert_str_eq(hget(wkey, "replay:x1"), "1");
	ck_assert_int_eq(cmd_int("TTL %s", wkey) > 0, 1);

	/* The cancel of a charge made before the reset: no usage hash made. */
	cancel(ctr, "00000000000000e1", "acme", 85, 0);
	ck_assert_int_eq(cmd_int("EXISTS %s", usage_key("acme")), 0);

	/* A charge before the reset, one after: the cancel of the first takes nothing. */
	ck_assert_str_eq(raw_charge("acme", "00000000000000e2", 4, false), "ok");
	nanosleep(&pause, NULL);
	ck_assert_msg(counters_reset(ctr, "acme", month, &deleted, err, sizeof(err)) == 0, "%s", err);
	nanosleep(&pause, NULL);
	ck_assert_str_eq(raw_charge("acme", "00000000000000e3", 2, false), "ok");
	cancel(ctr, "00000000000000e2", "acme", 4, 0);
	ck_assert_int_eq(usage("acme", "total"), 2);
	cancel(ctr, "00000000000000e3", "acme", 2, 0);
	ck_assert_int_eq(usage("acme", "total"), 0);
	ck_assert_int_eq(cmd_int("TTL %s", usage_key("acme")) > 0, 1);

	ck_assert_msg(counters_reset(ctr, "nobody", month, &deleted, err, sizeof(err)) == 0, "%s", err);
	ck_assert(!deleted);

	/* Only thresholds announced: the warned hash, emptied and made again, still expires. */
	cmd_ok("HSET qm:account:{solo} plan hundred");
	ck_assert_str_eq(raw_charge("solo", "00000000000000e4", 85, false), "ok");
	snprintf(wkey, sizeof(wkey), "qm:warned:{solo}:%s", month);
	ck_assert_str_eq(hget(wkey, "80"), "1");
	ck_assert_msg(counters_reset(ctr, "solo", month, &deleted, err, sizeof(err)) == 0, "%s", err);
	ck_assert_str_eq(hget(wkey, "80"), "");
	ck_assert_int_eq(cmd_int("TTL %s", wkey) > 0, 1);
	counters_free(ctr);
}
END_TEST

/* An entry Redis can never take is set aside; the entries after it go on */
START_TEST(test_replay_rejected)
{
	struct journal_entry e;
	struct journal *jr;
	struct counters *ctr;
	char	folder[] = "/tmp/qm-rejected.XXXXXX";
	char	path[64];
	char	err[256] = "";
	const char *accounts[] = {"good1", "badtype", "badfield", "badcharge", "good2"};

	ck_assert_ptr_nonnull(mkdtemp(folder));
	cmd_ok("SET qm:account:{badtype} x");
	cmd_ok("HSET %s total many", usage_key("badfield"));
	cmd_ok("HSET qm:charge:{badcharge}:00000000000000f1 a b");
	ctr = make();
	ck_assert_ptr_nonnull(jr = journal_open(folder, err, sizeof(err)));
	for (size_t i = 0; i < 5; i++) {
		e = entry(i == 3 ? "00000000000000f1" : "", month, accounts[i], 1, 0);
		e.cancel = i == 3;
		ck_assert_int_eq(journal_append(jr, &e, err, sizeof(err)), 0);
	}
	ck_assert_int_eq(journal_replay(jr, counters_journal_apply, ctr, NULL, err, sizeof(err)), 2);
	ck_assert_int_eq(usage("good1", "total"), 1);
	ck_assert_int_eq(usage("good2", "total"), 1);
	ck_assert_int_eq(files_named(folder, "replay."), 1);	/* its .rejected */
	ck_assert(!journal_pending(jr));

	/* The script's own code, not a text: QUOTA; Redis away is waited out. */
	e = entry("x-1", month, "badfield", 1, 0);
	ck_assert_int_eq(counters_replay(ctr, &e, err, sizeof(err)), COUNTERS_REJECTED);
	ck_assert_msg(strncmp(err, "Redis: QUOTA ", 13) == 0, "%s", err);
	redisFree(direct);
	direct = NULL;
	redis_server_stop(&server);
	ck_assert_int_eq(counters_replay(ctr, &e, err, sizeof(err)), -1);
	journal_close(jr);
	counters_free(ctr);
	snprintf(path, sizeof(path), "rm -rf %s", folder);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

struct stopped {
	struct counters *ctr;
	long long elapsed;
	int	rc;
};

/* stopped_main - one call against a stopped Redis, timed */
static void *
stopped_main(void *arg)
{
	struct stopped *s = arg;
	struct qm_quota q;
	char    err[256];
	long long start = helper_ms();

	s->rc = counters_peek(s->ctr, "acme", now, &q, err, sizeof(err));
	s->elapsed = helper_ms() - start;
	return NULL;
}

/* SIGSTOPped Redis: every call ends within 2 x timeout_ms, even waiting for the pool */
START_TEST(test_stopped_bound)
{
	static const char *const passwords[] = {"", "s3cret"};
	struct counters *ctr;
	pthread_t tid[6];
	struct stopped s[6];

	for (size_t p = 0; p < 2; p++) {
		/* A fresh server each round; with a password the handshake is what hangs. */
		redisFree(direct);
		direct = NULL;
		redis_server_stop(&server);
		if (*passwords[p]) {
			const char *extra[] = {"--requirepass", passwords[p], NULL};

			ck_assert_int_eq(redis_server_start_args(&server, false, extra), 0);
		} else {
			ck_assert_int_eq(redis_server_start(&server, false), 0);
		}
		direct = redis_server_connect(&server);
		conf_base(redis_server_address(&server));
		conf.redis.password = (char *) passwords[p];
		conf.redis.pool_size = 1;
		ctr = make();

		ck_assert_int_eq(redis_server_kill(&server, SIGSTOP), 0);
		for (int i = 0; i < 6; i++) {
			s[i] = (struct stopped) {ctr, 0, 0};
			ck_assert_int_eq(pthread_create(&tid[i], NULL, stopped_main, &s[i]), 0);
		}
		for (int i = 0; i < 6; i++)
			pthread_join(tid[i], NULL);
		ck_assert_int_eq(redis_server_kill(&server, SIGCONT), 0);
		for (int i = 0; i < 6; i++) {
			ck_assert_int_eq(s[i].rc, -1);
			ck_assert_msg(s[i].elapsed <= 2 * TIMEOUT_MS + slack_ms,
				      "call %d took %lld ms", i, s[i].elapsed);
		}
		counters_free(ctr);
	}
}
END_TEST

/* Redis down: fail fast, back off, come back when Redis does */
START_TEST(test_down_backoff)
{
	struct redis_pool_stats st;
	struct counters *ctr;
	struct qm_quota q;
	char    err[256];
	long long start, elapsed;
	int     calls = 0, rc = -1;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	redisFree(direct);
	direct = NULL;
	ck_assert_int_eq(redis_server_kill(&server, SIGTERM), 0);

	start = helper_ms();
	ck_assert_int_eq(counters_peek(ctr, "acme", now, &q, err, sizeof(err)), -1);
	elapsed = helper_ms() - start;
	ck_assert_int_eq(q.status, QM_STATUS_UNAVAILABLE);
	ck_assert_msg(err[0] != 0, "no reason");
	ck_assert_msg(elapsed < 2000, "took %lld ms", elapsed);

	/* For about 1 s: many calls, few connect attempts (50+100+200+400 ms). */
	start = helper_ms();
	while (helper_ms() - start < 1000) {
		ck_assert_int_eq(counters_peek(ctr, "acme", now, &q, err, sizeof(err)), -1);
		calls++;
		helper_sleep_ms(5);
	}
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_int_gt(calls, 50);
	ck_assert_msg(st.connect_failures >= 4 && st.connect_failures <= 6,
		      "%lu connect attempts in 1 s", st.connect_failures);
	ck_assert_uint_ge(st.fast_failures, (unsigned long) calls - 6);

	/* Back: within the longest backoff (2 s) plus a margin, calls succeed again. */
	ck_assert_int_eq(redis_server_restart(&server), 0);
	direct = redis_server_connect(&server);
	start = helper_ms();
	while (helper_ms() - start < 3000
	       && (rc = counters_peek(ctr, "acme", now, &q, err, sizeof(err))) < 0)
		helper_sleep_ms(10);
	ck_assert_msg(rc == 0, "not back after 3 s: %s", err);
	ck_assert_int_eq(q.status, QM_STATUS_NO_MAIL);	/* the account is gone with the data */
	counters_free(ctr);
}
END_TEST

struct hammer {
	struct counters *ctr;
	int	calls;
	int	failed;
	atomic_int *done;		/* threads finished */
};

/* hammer_main - many peeks */
static void *
hammer_main(void *arg)
{
	struct hammer *h = arg;
	struct qm_quota q;
	char    err[256];

	for (int i = 0; i < h->calls; i++)
		if (counters_peek(h->ctr, "acme", now, &q, err, sizeof(err)) < 0)
			h->failed++;
	atomic_fetch_add(h->done, 1);
	return NULL;
}

/* info_field - a number from INFO */
static long long
info_field(redisContext *c, const char *section, const char *field)
{
	redisReply *r = redisCommand(c, "INFO %s", section);
	const char *p;
	long long v = -1;

	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
	if ((p = strstr(r->str, field)) != NULL && p[strlen(field)] == ':')
		v = strtoll(p + strlen(field) + 1, NULL, 10);
	freeReplyObject(r);
	return v;
}

/* The pool never opens more than pool_size connections, however many threads */
START_TEST(test_pool_bound)
{
	struct redis_pool_stats st;
	struct counters *ctr;
	struct hammer h[16];
	pthread_t tid[16];
	long long before, after, max_clients = 0;
	atomic_int done = 0;
	int     samples = 0;

	conf.redis.pool_size = 3;
	conf.redis.timeout_ms = 2000;		/* 16 threads on 3 connections, valgrind too */
	ctr = make();
	before = info_field(direct, "stats", "total_connections_received");
	for (int i = 0; i < 16; i++) {
		h[i] = (struct hammer) {ctr, 100, 0, &done};
		ck_assert_int_eq(pthread_create(&tid[i], NULL, hammer_main, &h[i]), 0);
	}
	/* Watch the server's own count while they run (our connection is one). */
	while (atomic_load(&done) < 16) {
		long long clients = info_field(direct, "clients", "connected_clients");

		if (clients > max_clients)
			max_clients = clients;
		samples++;
		helper_sleep_ms(1);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(tid[i], NULL);
		ck_assert_int_eq(h[i].failed, 0);
	}
	after = info_field(direct, "stats", "total_connections_received");
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_int_ge(samples, 1);
	ck_assert_int_le(max_clients, 1 + 3);
	ck_assert_int_le(after - before, 3);
	ck_assert_int_ge(after - before, 1);
	ck_assert_uint_le(st.max_open, 3);
	ck_assert_uint_eq(st.open, after - before);
	ck_assert_int_eq(info_field(direct, "clients", "connected_clients"), 1 + (long long) st.open);
	counters_free(ctr);
	/* Freeing closes them all. */
	for (int i = 0; i < 100 && info_field(direct, "clients", "connected_clients") > 1; i++)
		helper_sleep_ms(10);
	ck_assert_int_eq(info_field(direct, "clients", "connected_clients"), 1);
}
END_TEST

/* A connection the server closed while idle is replaced before use */
START_TEST(test_idle_killed)
{
	struct redis_pool_stats st;
	struct counters *ctr;

	cmd_ok("HSET qm:account:{acme} plan tiny");
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	cmd_ok("CLIENT KILL TYPE normal SKIPME yes");
	helper_sleep_ms(50);
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 2);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.connects, 2);
	ck_assert_uint_eq(st.retries, 0);	/* found dead before sending, not by failing */
	counters_free(ctr);
}
END_TEST

/* unix socket (both spellings), AUTH and SELECT */
START_TEST(test_unix_auth_select)
{
	const char *extra[] = {"--requirepass", "s3cret", NULL};
	struct counters *ctr;
	struct qm_quota q;
	char    err[256], plain[sizeof(server.socket)];

	redisFree(direct);
	direct = NULL;
	redis_server_stop(&server);
	ck_assert_int_eq(redis_server_start_args(&server, true, extra), 0);
	direct = redis_server_connect(&server);
	ck_assert_ptr_nonnull(direct);
	cmd_ok("AUTH s3cret");
	cmd_ok("SELECT 5");
	cmd_ok("HSET qm:account:{acme} plan tiny");

	conf_base(redis_server_address(&server));
	ck_assert_str_eq(conf.redis.address, redis_server_address(&server));
	ck_assert(strncmp(conf.redis.address, "unix:/", 6) == 0);
	conf.redis.password = "s3cret";
	conf.redis.database = 5;
	ctr = make();
	expect(charge(ctr, "acme", "crm", 2, false), QM_STATUS_OK, "tiny", 5, 2);
	counters_free(ctr);

	snprintf(plain, sizeof(plain), "%s", server.socket);
	conf.redis.address = plain;
	ctr = make();
	expect(charge(ctr, "acme", "crm", 2, false), QM_STATUS_OK, "tiny", 5, 4);
	counters_free(ctr);
	ck_assert_int_eq(usage("acme", "total"), 4);
	cmd_ok("SELECT 0");
	ck_assert_int_eq(cmd_int("DBSIZE"), 0);

	/* A wrong password is an error with the server's reason. */
	conf.redis.password = "wrong";
	ctr = make();
	ck_assert_int_eq(counters_peek(ctr, "acme", now, &q, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "AUTH") != NULL, "%s", err);
	counters_free(ctr);
	/* No password where one is needed. */
	conf.redis.password = "";
	ctr = make();
	ck_assert_int_eq(counters_peek(ctr, "acme", now, &q, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "NOAUTH") != NULL, "%s", err);
	counters_free(ctr);
}
END_TEST

/* TCP address forms: host name and [IPv6] */
START_TEST(test_address_forms)
{
	const char *extra[] = {"--bind", "127.0.0.1 -::1", NULL};
	struct counters *ctr;
	char    address[64];

	redisFree(direct);
	direct = NULL;
	redis_server_stop(&server);
	ck_assert_int_eq(redis_server_start_args(&server, false, extra), 0);
	direct = redis_server_connect(&server);
	cmd_ok("HSET qm:account:{acme} plan tiny");

	snprintf(address, sizeof(address), "localhost:%d", server.port);
	conf_base(address);
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	counters_free(ctr);

	snprintf(address, sizeof(address), "[::1]:%d", server.port);
	conf_base(address);
	ctr = make();
	{
		int     fd = socket(AF_INET6, SOCK_STREAM, 0);
		struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
		bool    have_v6 = fd >= 0 && bind(fd, (struct sockaddr *) &sin6, sizeof(sin6)) == 0;

		if (fd >= 0)
			close(fd);
		if (have_v6)
			expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 2);
		else
			fprintf(stderr, "test_address_forms: no IPv6 loopback, [::1] not tried\n");
	}
	counters_free(ctr);
}
END_TEST

/* fake_server - answer one connection with canned bytes, for odd replies */
struct fake {
	int	listen_fd;
	int	port;
	const char *reply;
	size_t	len;
	pthread_t thread;
};

/* fake_main - accept, read the request, send the canned reply, wait for the close */
static void *
fake_main(void *arg)
{
	struct fake *f = arg;
	struct timeval tv = {2, 0};
	char    buf[65536];
	int     fd;

	if ((fd = accept(f->listen_fd, NULL, NULL)) < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (recv(fd, buf, sizeof(buf), 0) > 0) {
		helper_sleep_ms(20);
		while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			 /* void */ ;
		if (send(fd, f->reply, f->len, MSG_NOSIGNAL) < 0)
			fprintf(stderr, "fake server: send failed\n");
		while (recv(fd, buf, sizeof(buf), 0) > 0)
			 /* void */ ;
	}
	close(fd);
	return NULL;
}

/* fake_start - listen on a free port */
static void
fake_start(struct fake *f, const char *reply)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);

	f->reply = reply;
	f->len = strlen(reply);
	f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(f->listen_fd, 0);
	ck_assert_int_eq(bind(f->listen_fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(f->listen_fd, 4), 0);
	ck_assert_int_eq(getsockname(f->listen_fd, (struct sockaddr *) &sin, &len), 0);
	f->port = ntohs(sin.sin_port);
	ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

/* Replies the script never gives are errors, not guesses */
START_TEST(test_unexpected_replies)
{
#define SHA	"$40\r\n0123456789abcdef0123456789abcdef01234567\r\n"
#define W	":-1\r\n:0\r\n:3\r\n:1\r\n"	/* no daily cap, hourly 3 with 1 used */
	static const struct {
		const char *reply;
		int	rc;
	} cases[] = {
		{SHA "*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" W, 0},	/* control */
		{SHA "*8\r\n$4\r\nover\r\n$0\r\n\r\n:-1\r\n:0\r\n" W, 0},	/* control */
		{SHA ":1\r\n", -1},
		{SHA "$-1\r\n", -1},
		{SHA "*-1\r\n", -1},
		{SHA "*0\r\n", -1},
		{SHA "*7\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" ":-1\r\n:0\r\n:-1\r\n", -1},
		{SHA "*9\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" W ":5\r\n", -1},
		{SHA "*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n$1\r\n5\r\n" W, -1},
		{SHA "*8\r\n$5\r\nweird\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" W, -1},
		{SHA "*8\r\n$11\r\nunavailable\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" W, -1},
		{SHA "*8\r\n$3\r\nok!\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" W, -1},
		{SHA "*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:-2\r\n:5\r\n" W, -1},
		{SHA "*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:-1\r\n" W, -1},
		/* The windows: a cap below -1, a use below 0, a string. */
		{SHA "*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n:-2\r\n:0\r\n:3\r\n:1\r\n", -1},
		{SHA "*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n:-1\r\n:0\r\n:3\r\n:-1\r\n", -1},
		{SHA "*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n:-1\r\n:0\r\n$1\r\n3\r\n:1\r\n", -1},
		{SHA "*8\r\n$2\r\nok\r\n:1\r\n:10\r\n:5\r\n" W, -1},
		{SHA "*8\r\n+ok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" W, -1},
		{SHA "*8\r\n$2\r\nok\r\n$-1\r\n:10\r\n:5\r\n" W, -1},
		{SHA "-ERR boom\r\n", -1},
		{"-ERR no script load\r\n*8\r\n$2\r\nok\r\n$5\r\nbasic\r\n:10\r\n:5\r\n" W, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct counters *ctr;
		struct fake f;
		struct qm_quota q;
		char    address[64], err[256] = "";
		int     rc;

		fake_start(&f, cases[i].reply);
		snprintf(address, sizeof(address), "127.0.0.1:%d", f.port);
		conf_base(address);
		ctr = make();
		rc = counters_peek(ctr, "acme", now, &q, err, sizeof(err));
		counters_free(ctr);
		pthread_join(f.thread, NULL);
		close(f.listen_fd);
		ck_assert_msg(rc == cases[i].rc, "case %zu: rc %d (%s)", i, rc, err);
		if (rc < 0) {
			ck_assert_int_eq(q.status, QM_STATUS_UNAVAILABLE);
			ck_assert_msg(err[0] != 0, "case %zu: no reason", i);
		} else {
			ck_assert(q.day.cap == -1 && q.day.used == 0);
			ck_assert(q.hour.cap == 3 && q.hour.used == 1);
		}
	}
#undef SHA
#undef W
}
END_TEST

/* replica_has - wait (at most 10 s) until the replica has the key */
static bool
replica_has(const struct redis_server *replica, const char *key)
{
	const char *argv[] = {"EXISTS", key, NULL};
	long long start = helper_ms();

	while (helper_ms() - start < 10000) {
		if (redis_server_integer(replica, argv) == 1)
			return true;
		helper_sleep_ms(20);
	}
	return false;
}

/* sentinel_master_port - the port a sentinel names for mymaster, or -1 */
static int
sentinel_master_port(redisContext *s)
{
	redisReply *r = redisCommand(s, "SENTINEL get-master-addr-by-name mymaster");
	int     port = -1;

	ck_assert_ptr_nonnull(r);
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
		port = atoi(r->element[1]->str);
	freeReplyObject(r);
	return port;
}

/* Sentinel: find the master, and follow a failover */
START_TEST(test_sentinel)
{
	struct redis_server replica, sentinel;
	char    replicaof[32], sentinel_address[64];
	char   *sentinels[2];
	struct redis_pool_stats st;
	struct counters *ctr;
	struct qm_quota q;
	redisContext *s;
	redisReply *r;
	char    err[256];
	long long start;

	/* A master with a synced replica, then a sentinel that sees both. */
	cmd_ok("HSET qm:account:{acme} plan tiny");
	cmd_ok("CONFIG SET repl-diskless-sync-delay 0");	/* 5 s by default */
	snprintf(replicaof, sizeof(replicaof), "127.0.0.1 %d", server.port);
	{
		const char *extra[] = {"--replicaof", replicaof, NULL};

		ck_assert_int_eq(redis_server_start_args(&replica, false, extra), 0);
	}
	ck_assert(replica_has(&replica, "qm:account:{acme}"));
	ck_assert_int_eq(redis_sentinel_start(&sentinel, "mymaster", &server), 0);
	s = redis_server_connect(&sentinel);
	ck_assert_ptr_nonnull(s);

	/* A dead sentinel first: the next one is asked. */
	snprintf(sentinel_address, sizeof(sentinel_address), "127.0.0.1:%d", sentinel.port);
	sentinels[0] = "127.0.0.1:1";
	sentinels[1] = sentinel_address;
	conf.redis.address = NULL;
	conf.redis.sentinels = sentinels;
	conf.redis.sentinel_count = 2;
	conf.redis.master = "mymaster";
	conf.redis.timeout_ms = 1000;
	ctr = make();
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 1);
	ck_assert_int_eq(usage("acme", "total"), 1);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.resolves, 1);

	/* An unknown master name is an error that says so. */
	{
		struct counters *bad;

		conf.redis.master = "nosuch";
		bad = make();
		ck_assert_int_eq(counters_peek(bad, "acme", now, &q, err, sizeof(err)), -1);
		ck_assert_msg(strstr(err, "unknown master") != NULL, "%s", err);
		counters_free(bad);
		conf.redis.master = "mymaster";
	}

	/* Fail over to the replica once it has the count (replication is asynchronous). */
	ck_assert(replica_has(&replica, usage_key("acme")));
	start = helper_ms();
	for (;;) {
		r = redisCommand(s, "SENTINEL FAILOVER mymaster");
		ck_assert_ptr_nonnull(r);
		if (r->type == REDIS_REPLY_STATUS) {
			freeReplyObject(r);
			break;
		}
		freeReplyObject(r);
		ck_assert_msg(helper_ms() - start < 12000, "the sentinel never accepted FAILOVER");
		helper_sleep_ms(100);
	}
	start = helper_ms();
	while (sentinel_master_port(s) != replica.port) {
		ck_assert_msg(helper_ms() - start < 15000, "no failover in 15 s");
		helper_sleep_ms(50);
	}

	/*
	 * The old master becomes a replica (the sentinel would do this itself
	 * some seconds later). The pool's idle connection to it now gets
	 * READONLY: it must ask the sentinel again and send the request to
	 * the new master, within the same call.
	 */
	cmd_ok("REPLICAOF 127.0.0.1 %d", replica.port);
	expect(charge(ctr, "acme", "crm", 1, false), QM_STATUS_OK, "tiny", 5, 2);
	redis_pool_stats(counters_pool(ctr), &st);
	ck_assert_uint_eq(st.resolves, 2);
	ck_assert_uint_eq(st.retries, 1);	/* the READONLY one */
	{
		const char *argv[] = {"HGET", usage_key("acme"), "total", NULL};
		redisContext *c = redis_server_connect(&replica);

		ck_assert_ptr_nonnull(c);
		r = redisCommandArgv(c, 3, argv, NULL);
		ck_assert_ptr_nonnull(r);
		ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
		ck_assert_str_eq(r->str, "2");
		freeReplyObject(r);
		redisFree(c);
	}

	/* The new master dies: calls fail, bounded, and nothing is written to a replica. */
	ck_assert_int_eq(redis_server_kill(&replica, SIGTERM), 0);
	start = helper_ms();
	ck_assert_int_eq(counters_charge(ctr, NULL, "acme", "crm", 1, COUNTERS_ENFORCE, now, &q, err,
					 sizeof(err)), -1);
	ck_assert_int_le(helper_ms() - start, 2 * 1000 + slack_ms);
	counters_free(ctr);
	redisFree(s);
	redis_server_stop(&sentinel);
	redis_server_stop(&replica);
}
END_TEST

/* counters_suite - every test of this file */
static Suite *
counters_suite(void)
{
	Suite  *s = suite_create("counters");
	TCase  *tc;

	tc = tcase_create("script");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_peek_plans);
	tcase_add_test(tc, test_cache);
	tcase_add_test(tc, test_recent);
	tcase_add_test(tc, test_charge_limit);
	tcase_add_test(tc, test_charge_refusals);
	tcase_add_test(tc, test_monitor);
	tcase_add_test(tc, test_refused);
	tcase_add_test(tc, test_thresholds_lowered);
	tcase_add_test(tc, test_monitor_rcpt);
	tcase_add_test(tc, test_caps);
	tcase_add_test(tc, test_caps_overrides);
	tcase_add_test(tc, test_caps_none);
	tcase_add_test(tc, test_caps_monitor);
	tcase_add_test(tc, test_caps_events);
	tcase_add_test(tc, test_caps_cancel);
	tcase_add_test(tc, test_caps_replay);
	tcase_add_test(tc, test_caps_bad_window);
	tcase_add_test(tc, test_usage_plan);
	tcase_add_test(tc, test_events);
	tcase_add_test(tc, test_events_largest_limit);
	tcase_add_test(tc, test_replay);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_replay_uncounted_charge);
	tcase_add_test(tc, test_cancel_after_reset);
	tcase_add_test(tc, test_replay_rejected);
	tcase_add_test(tc, test_inflight);
	tcase_add_test(tc, test_shared_journal);
	tcase_add_test(tc, test_journal_window);
	tcase_add_test(tc, test_inflight_window);
	tcase_add_test(tc, test_expire);
	tcase_add_test(tc, test_bad_data);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_create_errors);
	tcase_add_test(tc, test_noscript);
	tcase_add_test(tc, test_eval_format);
	tcase_add_test(tc, test_unexpected_replies);
	suite_add_tcase(s, tc);

	tc = tcase_create("race");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_race_limit);
	tcase_add_test(tc, test_race_events);
	tcase_add_test(tc, test_race_cap_event);
	tcase_add_test(tc, test_pool_bound);
	suite_add_tcase(s, tc);

	tc = tcase_create("faults");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_restart);
	tcase_add_test(tc, test_retry_once);
	tcase_add_test(tc, test_timeout_no_retry);
	tcase_add_test(tc, test_down_no_doubt);
	tcase_add_test(tc, test_stopped_bound);
	tcase_add_test(tc, test_down_backoff);
	tcase_add_test(tc, test_idle_killed);
	tcase_add_test(tc, test_unix_auth_select);
	tcase_add_test(tc, test_address_forms);
	tcase_add_test(tc, test_sentinel);
	suite_add_tcase(s, tc);
	return s;
}

/* main - run the suite; exit 1 if any test failed */
int
main(void)
{
	return check_run(counters_suite());
}
