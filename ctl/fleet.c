/*
 * fleet.c - hosts and metrics: the fleet's health, from the reports each
 * milter writes into PREFIXhost:{HOST} (milter/stats.h names their
 * fields), and, for metrics, gauges of this month's usage hashes
 *
 * The host keys are found with SCAN (scan_keys()), read with one
 * pipelined HGETALL per SCAN batch. A host name is whatever bytes sit in
 * the key's braces: untrusted, so escaped for JSON, for Prometheus labels
 * and for the terminal. metrics prints the Prometheus text exposition
 * format 0.0.4, every family with its HELP and TYPE.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "../milter/stats.h"

#define FLEET_VERSION_MAX	64	/* longest version kept */
#define METRIC			"quota_milter_"

/* One host's report, and the one before it. */
struct host {
	char   *name;			/* untrusted bytes, NUL added */
	size_t	len;
	char	version[FLEET_VERSION_MAX + 1];	/* untrusted */
	size_t	version_len;
	long long meta[STATS_META_COUNT];
	unsigned long long cur[STATS_FIELDS];
	unsigned long long prev[STATS_F_TOTALS];
	long long prev_time;
	bool	seen;			/* the hash had a time field */
};

struct fleet {
	struct host *hosts;
	size_t	count;
	size_t	cap;
	const char *sample;		/* keys_host() of SCAN_PLACEHOLDER */
	size_t	headlen;		/* up to and with its '{' */
};

/* Called with each reply of a pipeline (index i). */
typedef void (*reply_fn) (const redisReply *r, size_t i, void *arg);

/* pipeline - count commands in one round trip, each reply to fn, then freed */
static int
pipeline(struct ctl *ctl, const struct redis_cmd *cmds, size_t count, reply_fn fn, void *arg,
	 char *err, size_t errlen)
{
	redisReply **replies = xcalloc(count, sizeof(*replies));
	int	rc = redis_pool_run(ctl->pool, cmds, count, replies, err, errlen);

	for (size_t i = 0; i < count && rc == 0; i++)
		fn(replies[i], i, arg);
	for (size_t i = 0; i < count; i++)
		if (replies[i] != NULL)
			freeReplyObject(replies[i]);
	free(replies);
	return rc;
}

/* reply_num - a reply's integer, 0 if it holds none */
static long long
reply_num(const redisReply *r)
{
	long long v = 0;

	if (r->type == REDIS_REPLY_STRING && ctl_int(r->str, r->len, &v))
		return v;
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	return 0;
}

/* field_is - is the reply's text exactly name? */
static bool
field_is(const redisReply *f, const char *prefix, const char *name)
{
	size_t	pl = strlen(prefix), nl = strlen(name);

	return f->len == pl + nl && memcmp(f->str, prefix, pl) == 0
	    && memcmp(f->str + pl, name, nl) == 0;
}

/* host_field - store one field of an HGETALL into h; unknown fields are ignored */
static void
host_field(struct host *h, const redisReply *f, const redisReply *v)
{
	char	name[STATS_NAME_MAX];
	long long n;

	if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
		return;
	if (field_is(f, "", stats_meta_name(STATS_META_VERSION))) {
		h->version_len = v->len < FLEET_VERSION_MAX ? v->len : FLEET_VERSION_MAX;
		memcpy(h->version, v->str, h->version_len);
		h->version[h->version_len] = 0;
		return;
	}
	n = reply_num(v);
	for (size_t m = STATS_META_VERSION + 1; m < STATS_META_COUNT; m++) {
		if (field_is(f, "", stats_meta_name((enum stats_meta_field) m))) {
			h->meta[m] = n;
			h->seen = h->seen || m == STATS_META_TIME;
			return;
		}
	}
	if (field_is(f, STATS_PREV, stats_meta_name(STATS_META_TIME))) {
		h->prev_time = n;
		return;
	}
	for (size_t i = 0; i < STATS_FIELDS; i++) {
		stats_field_name(i, name);
		if (field_is(f, "", name)) {
			h->cur[i] = n > 0 ? (unsigned long long) n : 0;
			return;
		}
		if (i < STATS_F_TOTALS && field_is(f, STATS_PREV, name)) {
			h->prev[i] = n > 0 ? (unsigned long long) n : 0;
			return;
		}
	}
}

/* The batch hosts_batch() reads. */
struct hosts_read {
	struct fleet *fl;
	const char **ids;
	const size_t *lens;
};

/* host_reply - one HGETALL's reply: a report kept, or none */
static void
host_reply(const redisReply *r, size_t i, void *arg)
{
	struct hosts_read *hr = arg;
	struct fleet *fl = hr->fl;
	struct host h;

	if (r->type != REDIS_REPLY_ARRAY)
		return;			/* another type under our name: not a report */
	memset(&h, 0, sizeof(h));
	for (size_t j = 0; j + 1 < r->elements; j += 2)
		host_field(&h, r->element[j], r->element[j + 1]);
	if (!h.seen)
		return;			/* expired meanwhile */
	fl->hosts = ctl_grow(fl->hosts, &fl->cap, fl->count + 1, sizeof(*fl->hosts), 16);
	h.name = xcalloc(hr->lens[i] + 1, 1);
	memcpy(h.name, hr->ids[i], hr->lens[i]);
	h.len = hr->lens[i];
	fl->hosts[fl->count++] = h;
}

/* hosts_batch - scan_keys() callback: HGETALL of each host key, in one round trip */
static int
hosts_batch(struct ctl *ctl, const char **ids, const size_t *lens, size_t count, void *arg,
	    char *err, size_t errlen)
{
	struct hosts_read hr = {arg, ids, lens};
	struct fleet *fl = hr.fl;
	const char *tail = fl->sample + fl->headlen + strlen(SCAN_PLACEHOLDER);
	size_t	taillen = strlen(tail);
	struct redis_cmd *cmds = xcalloc(count, sizeof(*cmds));
	const char **argv = xcalloc(2 * count, sizeof(*argv));
	size_t *argvlen = xcalloc(2 * count, sizeof(*argvlen));
	char  **keys = xcalloc(count, sizeof(*keys));
	int	rc;

	for (size_t i = 0; i < count; i++) {
		keys[i] = xcalloc(fl->headlen + lens[i] + taillen + 1, 1);
		memcpy(keys[i], fl->sample, fl->headlen);
		memcpy(keys[i] + fl->headlen, ids[i], lens[i]);
		memcpy(keys[i] + fl->headlen + lens[i], tail, taillen);
		argv[2 * i] = "HGETALL";
		argvlen[2 * i] = 7;
		argv[2 * i + 1] = keys[i];
		argvlen[2 * i + 1] = fl->headlen + lens[i] + taillen;
		cmds[i] = (struct redis_cmd) {2, argv + 2 * i, argvlen + 2 * i};
	}
	rc = pipeline(ctl, cmds, count, host_reply, &hr, err, errlen);
	for (size_t i = 0; i < count; i++)
		free(keys[i]);
	free(keys);
	free(argvlen);
	free(argv);
	free(cmds);
	return rc;
}

/* bytes_cmp - order two byte strings, bytewise, a prefix first */
static int
bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int	c = memcmp(a, b, alen < blen ? alen : blen);

	return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* host_cmp - order by name */
static int
host_cmp(const void *a, const void *b)
{
	const struct host *x = a, *y = b;

	return bytes_cmp(x->name, x->len, y->name, y->len);
}

/* fleet_read - every live host's report, sorted by name, each once; exits on failure */
static void
fleet_read(struct ctl *ctl, struct fleet *fl, char *sample)
{
	char	err[CTL_ERR_MAX];
	size_t	kept = 0;

	memset(fl, 0, sizeof(*fl));
	if (keys_host(sample, ctl->conf->redis.prefix, SCAN_PLACEHOLDER) == 0)
		ctl_fail(CTL_EXIT_RUNTIME, "cannot build the host keys");
	fl->sample = sample;
	fl->headlen = (size_t) (strstr(sample, "{" SCAN_PLACEHOLDER "}") - sample) + 1;
	if (scan_keys(ctl, sample, hosts_batch, fl, err, sizeof(err)) != 0)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	if (fl->count > 1)
		qsort(fl->hosts, fl->count, sizeof(*fl->hosts), host_cmp);
	/* SCAN may give a key twice. */
	for (size_t i = 0; i < fl->count; i++) {
		if (kept > 0 && host_cmp(&fl->hosts[kept - 1], &fl->hosts[i]) == 0) {
			free(fl->hosts[i].name);
			continue;
		}
		fl->hosts[kept++] = fl->hosts[i];
	}
	fl->count = kept;
}

/* fleet_free - release what fleet_read() made */
static void
fleet_free(struct fleet *fl)
{
	for (size_t i = 0; i < fl->count; i++)
		free(fl->hosts[i].name);
	free(fl->hosts);
}

/* host_rate - per second over the last interval of the fields [from, to) */
static double
host_rate(const struct host *h, size_t from, size_t to)
{
	unsigned long long now = 0, before = 0;
	long long dt = h->meta[STATS_META_TIME] - h->prev_time;

	for (size_t i = from; i < to; i++) {
		now += h->cur[i];
		before += h->prev[i];
	}
	return dt > 0 && now >= before ? (double) (now - before) / (double) dt : 0;
}

/* host_refusal_rate - refused and tempfailed replies per second */
static double
host_refusal_rate(const struct host *h)
{
	return host_rate(h, STATS_F_REFUSED, STATS_F_LATENCY);
}

/*
 * host_latency - the q quantile of the round trips of the last interval
 * (of all since start when the interval had none), in seconds; negative
 * when there were none at all
 */
static double
host_latency(const struct host *h, double q)
{
	unsigned long long d[STATS_BUCKETS];
	const unsigned long long *cum = h->cur + STATS_F_LATENCY;

	for (size_t b = 0; b < STATS_BUCKETS; b++)
		d[b] = cum[b] >= h->prev[STATS_F_LATENCY + b] ? cum[b] - h->prev[STATS_F_LATENCY + b] : 0;
	return stats_percentile(d[STATS_BUCKETS - 1] > 0 ? d : cum, q);
}

/* utc_text - unix seconds as 2026-01-31T12:00:00Z, "-" when out of range */
const char *
utc_text(long long t, char *buf, size_t len)
{
	time_t	tt = (time_t) t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "-");
	return buf;
}

/* hosts_json - {"hosts":[{...}, ...]} */
static void
hosts_json(const struct fleet *fl)
{
	char	name[STATS_NAME_MAX], when[32];

	fputs("{\"hosts\":[", stdout);
	for (size_t i = 0; i < fl->count; i++) {
		const struct host *h = &fl->hosts[i];
		double	p50 = host_latency(h, 0.5), p99 = host_latency(h, 0.99);

		fputs(i ? ",{\"host\":" : "{\"host\":", stdout);
		json_str(stdout, h->name, h->len);
		fputs(",\"version\":", stdout);
		json_str(stdout, h->version, h->version_len);
		for (size_t m = STATS_META_VERSION + 1; m < STATS_META_COUNT; m++)
			printf(",\"%s\":%lld", stats_meta_name((enum stats_meta_field) m), h->meta[m]);
		printf(",\"up_since\":\"%s\"",
		       utc_text(h->meta[STATS_META_STARTED], when, sizeof(when)));
		for (size_t c = 0; c < STATS_COUNTER_COUNT; c++)
			printf(",\"%s\":%llu", stats_field_name(c, name), h->cur[c]);
		for (size_t f = STATS_F_REFUSED; f <= STATS_F_TEMPFAILED; f += QM_REPLY_COUNT) {
			printf(",\"%s\":{", f == STATS_F_REFUSED ? "refused" : "tempfailed");
			for (size_t id = 0; id < QM_REPLY_COUNT; id++)
				printf("%s\"%s\":%llu", id ? "," : "",
				       conf_reply_name((enum qm_reply_id) id), h->cur[f + id]);
			putchar('}');
		}
		for (size_t g = STATS_F_TOTALS; g < STATS_FIELDS; g++)
			printf(",\"%s\":%llu", stats_field_name(g, name), h->cur[g]);
		printf(",\"messages_per_second\":%.3f,\"refusals_per_second\":%.3f",
		       host_rate(h, STATS_MESSAGES, STATS_MESSAGES + 1), host_refusal_rate(h));
		if (p50 < 0)
			fputs(",\"redis_latency_p50_seconds\":null,\"redis_latency_p99_seconds\":null",
			      stdout);
		else
			printf(",\"redis_latency_p50_seconds\":%.6f,\"redis_latency_p99_seconds\":%.6f",
			       p50, p99);
		putchar('}');
	}
	fputs("]}\n", stdout);
}

/* ms_text - seconds as milliseconds for people, "-" when negative (none) */
static const char *
ms_text(double s, char *buf, size_t len)
{
	if (s < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.2fms", s * 1000);
	return buf;
}

/* fleet_hosts - one line per live host */
int
fleet_hosts(struct ctl *ctl)
{
	static const char *const heads[] = {
		"HOST", "VERSION", "UP SINCE", "MSG/S", "REFUSALS/S", "REDIS ERRORS",
		"P50", "P99", "JOURNAL",
	};
	static const bool right[] = {false, false, false, true, true, true, true, true, true};
	char	sample[KEYS_MAX];
	struct fleet fl;
	struct table *t;

	fleet_read(ctl, &fl, sample);
	if (ctl->json) {
		hosts_json(&fl);
		fleet_free(&fl);
		return 0;
	}
	t = table_create(sizeof(heads) / sizeof(heads[0]), heads, right);
	for (size_t i = 0; i < fl.count; i++) {
		const struct host *h = &fl.hosts[i];
		char	when[32], rate[32], refusals[32], errors[32], p50[32], p99[32], journal[32];
		const char *cells[9];

		snprintf(rate, sizeof(rate), "%.2f", host_rate(h, STATS_MESSAGES, STATS_MESSAGES + 1));
		snprintf(refusals, sizeof(refusals), "%.2f", host_refusal_rate(h));
		snprintf(errors, sizeof(errors), "%llu", h->cur[STATS_REDIS_ERRORS]);
		snprintf(journal, sizeof(journal), "%llu", h->cur[STATS_F_JOURNAL_PENDING]);
		cells[0] = h->name;		/* table_add cleans control bytes */
		cells[1] = h->version;
		cells[2] = utc_text(h->meta[STATS_META_STARTED], when, sizeof(when));
		cells[3] = rate;
		cells[4] = refusals;
		cells[5] = errors;
		cells[6] = ms_text(host_latency(h, 0.5), p50, sizeof(p50));
		cells[7] = ms_text(host_latency(h, 0.99), p99, sizeof(p99));
		cells[8] = journal;
		table_add(t, cells);
	}
	if (fl.count == 0)
		printf("no live host: none reported within three of its intervals\n");
	else
		table_print(t, stdout);
	table_free(t);
	fleet_free(&fl);
	return 0;
}

/* label - an untrusted value as a Prometheus label value, malloc'ed */
static char *
label(const char *s, size_t len)
{
	size_t	size = 2 * len + 1;
	char   *out = xcalloc(size, 1);

	(void) stats_label_escape(out, size, s, len);
	return out;
}

/* family - the HELP and TYPE lines of a metric family */
static void
family(const char *name, const char *type, const char *help)
{
	printf("# HELP " METRIC "%s %s\n# TYPE " METRIC "%s %s\n", name, help, name, type);
}

/* The families of a report's meta fields. */
static const struct {
	const char *name;
	const char *type;
	const char *help;
	enum stats_meta_field meta;
} meta_families[] = {
	{"start_time_seconds", "gauge", "When the milter started, unix seconds.", STATS_META_STARTED},
	{"conf_load_time_seconds", "gauge", "When the milter last loaded its conf, unix seconds.",
	STATS_META_CONF_LOADED},
	{"report_time_seconds", "gauge", "When the milter wrote this report, unix seconds (its clock).",
	STATS_META_TIME},
	{"reloads_total", "counter", "Configuration reloads since start.", STATS_META_RELOADS},
};

/*
 * host_metrics - every per-host family, one sample per host and label set
 * (hl[i]: host i's label, NULL for a host left out)
 */
static void
host_metrics(const struct fleet *fl, char **hl)
{
	char	field[STATS_NAME_MAX], name[STATS_NAME_MAX + 8];

	family("info", "gauge", "A milter reporting, its version in a label (always 1).");
	for (size_t i = 0; i < fl->count; i++) {
		char   *v;

		if (hl[i] == NULL)
			continue;
		v = label(fl->hosts[i].version, fl->hosts[i].version_len);
		printf(METRIC "info{host=\"%s\",version=\"%s\"} 1\n", hl[i], v);
		free(v);
	}
	for (size_t m = 0; m < sizeof(meta_families) / sizeof(meta_families[0]); m++) {
		family(meta_families[m].name, meta_families[m].type, meta_families[m].help);
		for (size_t i = 0; i < fl->count; i++)
			if (hl[i] != NULL)
				printf(METRIC "%s{host=\"%s\"} %lld\n", meta_families[m].name, hl[i],
				       fl->hosts[i].meta[meta_families[m].meta]);
	}

	for (size_t c = 0; c < STATS_COUNTER_COUNT; c++) {
		if (c == STATS_REDIS_LATENCY_SUM_US)
			continue;	/* the histogram's _sum */
		snprintf(name, sizeof(name), "%s_total", stats_field_name(c, field));
		family(name, "counter", stats_counter_help((enum stats_counter) c));
		for (size_t i = 0; i < fl->count; i++)
			if (hl[i] != NULL)
				printf(METRIC "%s{host=\"%s\"} %llu\n", name, hl[i], fl->hosts[i].cur[c]);
	}
	for (size_t f = STATS_F_REFUSED; f <= STATS_F_TEMPFAILED; f += QM_REPLY_COUNT) {
		const char *what = f == STATS_F_REFUSED ? "refused" : "tempfailed";

		snprintf(name, sizeof(name), "%s_total", what);
		family(name, "counter", f == STATS_F_REFUSED ? "Permanent refusals (5xx), by reply name."
		       : "Temporary refusals (4xx), by reply name.");
		for (size_t i = 0; i < fl->count; i++)
			for (size_t id = 0; hl[i] != NULL && id < QM_REPLY_COUNT; id++)
				printf(METRIC "%s{host=\"%s\",reply=\"%s\"} %llu\n", name, hl[i],
				       conf_reply_name((enum qm_reply_id) id), fl->hosts[i].cur[f + id]);
	}
	family("redis_latency_seconds", "histogram", "Redis round trips of the message path, by duration.");
	for (size_t i = 0; i < fl->count; i++) {
		const struct host *h = &fl->hosts[i];
		unsigned long long le = 0;

		if (hl[i] == NULL)
			continue;
		/* Cumulative, so never fewer than the bucket before (a hand-made hash). */
		for (size_t b = 0; b < STATS_BUCKETS; b++) {
			if (h->cur[STATS_F_LATENCY + b] > le)
				le = h->cur[STATS_F_LATENCY + b];
			printf(METRIC "redis_latency_seconds_bucket{host=\"%s\",le=\"%s\"} %llu\n", hl[i],
			       stats_bucket_le(b), le);
		}
		printf(METRIC "redis_latency_seconds_sum{host=\"%s\"} %.6f\n", hl[i],
		       (double) h->cur[STATS_REDIS_LATENCY_SUM_US] / 1e6);
		printf(METRIC "redis_latency_seconds_count{host=\"%s\"} %llu\n", hl[i], le);
	}
	for (size_t g = STATS_F_TOTALS; g < STATS_FIELDS; g++) {
		family(stats_field_name(g, field), "gauge", g == STATS_F_SESSIONS_OPEN
		       ? "MTA sessions open." : "Journal entries waiting for Redis.");
		for (size_t i = 0; i < fl->count; i++)
			if (hl[i] != NULL)
				printf(METRIC "%s{host=\"%s\"} %llu\n", field, hl[i], fl->hosts[i].cur[g]);
	}
}

/* One account's month, for the fleet gauges. */
struct acct {
	char   *account;
	long long total;
	long long limit;		/* -1 unlimited; -2 none recorded */
	char   *plan;			/* untrusted; "" when none recorded */
	size_t	plan_len;
};

struct accts {
	struct acct *a;
	size_t	count;
	size_t	cap;
	const char *month;
};

/* The batch usage_batch() reads. */
struct usage_read {
	struct accts *as;
	char  **accounts;
};

/* usage_reply - one HMGET's reply: the account's total, limit and plan */
static void
usage_reply(const redisReply *r, size_t i, void *arg)
{
	struct usage_read *ur = arg;
	struct accts *as = ur->as;
	struct acct *a;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
		return;
	as->a = ctl_grow(as->a, &as->cap, as->count + 1, sizeof(*as->a), 1024);
	a = &as->a[as->count++];
	/* Counts as the milter writes them, 0 to QM_COUNT_MAX: no sum overflows. */
	a->total = reply_num(r->element[0]);
	if (a->total < 0 || a->total > QM_COUNT_MAX)
		a->total = 0;
	a->limit = r->element[1]->type == REDIS_REPLY_STRING ? reply_num(r->element[1]) : -2;
	/* Kept as its label: two plans that print alike are one series. */
	a->plan = r->element[2]->type == REDIS_REPLY_STRING
	    ? label(r->element[2]->str, r->element[2]->len) : label("", 0);
	a->plan_len = strlen(a->plan);
	if ((a->account = strdup(ur->accounts[i])) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
}

/* usage_batch - scan_usage() callback: HMGET total limit plan of each, in one round trip */
static int
usage_batch(struct ctl *ctl, char **accounts, size_t count, void *arg, char *err, size_t errlen)
{
	struct usage_read ur = {arg, accounts};
	struct redis_cmd *cmds = xcalloc(count, sizeof(*cmds));
	const char **argv = xcalloc(5 * count, sizeof(*argv));
	char  (*keys)[KEYS_MAX] = xcalloc(count, KEYS_MAX);
	int	rc;

	for (size_t i = 0; i < count; i++) {
		const char **v = argv + 5 * i;

		if (keys_usage(keys[i], ctl->conf->redis.prefix, accounts[i], ur.as->month) == 0)
			ctl_fail(CTL_EXIT_RUNTIME, "cannot build the usage key of %s", accounts[i]);
		v[0] = "HMGET";
		v[1] = keys[i];
		v[2] = USAGE_TOTAL;
		v[3] = USAGE_LIMIT;
		v[4] = USAGE_PLAN;
		cmds[i] = (struct redis_cmd) {5, v, NULL};
	}
	rc = pipeline(ctl, cmds, count, usage_reply, &ur, err, errlen);
	free(keys);
	free(argv);
	free(cmds);
	return rc;
}

/* acct_by_account, acct_by_plan - qsort orders */
static int
acct_by_account(const void *a, const void *b)
{
	return strcmp(((const struct acct *) a)->account, ((const struct acct *) b)->account);
}

static int
acct_by_plan(const void *a, const void *b)
{
	const struct acct *x = a, *y = b;

	return bytes_cmp(x->plan, x->plan_len, y->plan, y->plan_len);
}

/* usage_metrics - gauges over every account with usage in month */
static void
usage_metrics(struct ctl *ctl, const char *month)
{
	struct accts as = {NULL, 0, 0, month};
	const struct qm_conf *conf = ctl->conf;
	char	err[CTL_ERR_MAX];
	size_t	kept = 0, exhausted = 0;

	if (scan_usage(ctl, month, usage_batch, &as, err, sizeof(err)) != 0)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	/* SCAN may give a key twice: each account once. */
	if (as.count > 1)
		qsort(as.a, as.count, sizeof(*as.a), acct_by_account);
	for (size_t i = 0; i < as.count; i++) {
		if (kept > 0 && strcmp(as.a[kept - 1].account, as.a[i].account) == 0) {
			free(as.a[i].account);
			free(as.a[i].plan);
			continue;
		}
		as.a[kept++] = as.a[i];
	}
	as.count = kept;

	family("accounts_at_or_above_percent", "gauge",
	       "Accounts whose usage this month is at or above a warn_percent of their limit.");
	for (size_t w = 0; w < conf->warn_count; w++) {
		size_t	n = 0;

		for (size_t i = 0; i < as.count; i++)
			if (as.a[i].limit > 0 && (double) as.a[i].total * 100
			    >= (double) as.a[i].limit * conf->warn_percent[w])
				n++;
		printf(METRIC "accounts_at_or_above_percent{percent=\"%d\"} %zu\n",
		       conf->warn_percent[w], n);
	}
	for (size_t i = 0; i < as.count; i++)
		if (as.a[i].limit > 0 && as.a[i].total >= as.a[i].limit)
			exhausted++;
	family("accounts_exhausted", "gauge",
	       "Accounts that used all of a monthly limit above 0 this month.");
	printf(METRIC "accounts_exhausted %zu\n", exhausted);

	family("used_units", "gauge", "Units counted this month, by the plan the usage recorded.");
	if (as.count > 1)
		qsort(as.a, as.count, sizeof(*as.a), acct_by_plan);
	for (size_t i = 0; i < as.count;) {
		long long sum = 0;
		size_t	j = i;

		for (; j < as.count && acct_by_plan(&as.a[i], &as.a[j]) == 0; j++)
			if (__builtin_add_overflow(sum, as.a[j].total, &sum))
				sum = LLONG_MAX;
		printf(METRIC "used_units{plan=\"%s\"} %lld\n", as.a[i].plan, sum);
		i = j;
	}
	for (size_t i = 0; i < as.count; i++) {
		free(as.a[i].account);
		free(as.a[i].plan);
	}
	free(as.a);
}

/* fleet_metrics - the fleet in the Prometheus text format 0.0.4 */
int
fleet_metrics(struct ctl *ctl, const char *month)
{
	char	sample[KEYS_MAX];
	struct fleet fl;
	char  **hl;

	fleet_read(ctl, &fl, sample);
	hl = xcalloc(fl.count, sizeof(*hl));
	for (size_t i = 0; i < fl.count; i++)
		hl[i] = label(fl.hosts[i].name, fl.hosts[i].len);
	/*
	 * Names the milter would never write (keys_host_valid()) may print
	 * alike once escaped: one series per label, the first host's.
	 */
	for (size_t i = 0; i < fl.count; i++)
		for (size_t j = 0; j < i; j++)
			if (hl[j] != NULL && hl[i] != NULL && strcmp(hl[i], hl[j]) == 0) {
				fprintf(stderr, "quota-milter-ctl: metrics: host \"%s\" left out: "
					"its name prints as another's\n", hl[i]);
				free(hl[i]);
				hl[i] = NULL;
			}
	host_metrics(&fl, hl);
	usage_metrics(ctl, month);
	for (size_t i = 0; i < fl.count; i++)
		free(hl[i]);
	free(hl);
	fleet_free(&fl);
	return 0;
}
