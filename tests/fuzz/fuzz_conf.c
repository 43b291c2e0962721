/*
 * fuzz_conf.c - libFuzzer target: conf_load() on arbitrary files
 *
 * The input is the whole conf file. A refused file must come with a
 * reason that names the file; an accepted one must hold every promise
 * conf.h makes about a struct qm_conf (the rest of the milter relies on
 * them without checking again). Everything is freed each run, so
 * LeakSanitizer sees any leak in conf_load() or conf_free().
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "counters/keys.h"
#include "milter/policy.h"
#include "tests/fuzz/fuzz_util.h"

#define NAME_CHARS	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

static struct fuzz_file conf_file;

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* name_ok - a plan or category name: 1 to 64 of A-Z a-z 0-9 _ - */
static bool
name_ok(const char *s)
{
	size_t	len = strlen(s);

	return len >= 1 && len <= QM_NAME_MAX && strspn(s, NAME_CHARS) == len;
}

/* graph_ok - non-empty printable ASCII without space, none of avoid */
static bool
graph_ok(const char *s, const char *avoid)
{
	if (*s == 0)
		return false;
	for (; *s; s++)
		if ((unsigned char) *s < 0x21 || (unsigned char) *s > 0x7e || strchr(avoid, *s))
			return false;
	return true;
}

/* dollars_in_template - how many '$' a template prints itself ("$$" pairs) */
static size_t
dollars_in_template(const char *t)
{
	size_t	n = 0;

	for (; *t; t++)
		if (t[0] == '$' && t[1] == '$') {
			n++;
			t++;
		}
	return n;
}

/* check_replies - codes, xcodes and texts as conf_check_* promise */
static void
check_replies(const struct qm_conf *conf)
{
	/* Variable values without '$': every '$' printed comes from "$$". */
	const struct policy_vars v = {
		.account = "acct", .plan = "plan", .category = "cat", .header = "X-Hdr",
		.reason = "why", .window = "2026-12-03T14", .retry_after = "15:00 UTC",
		.limit = 10, .used = 3,
	};
	char	out[512];
	size_t	i, n, d;

	for (i = 0; i < QM_REPLY_COUNT; i++) {
		const struct qm_reply *r = &conf->replies[i];

		FUZZ_CHECK(strlen(r->code) == 3 && strspn(r->code, "0123456789") == 3
			   && (r->code[0] == '4' || r->code[0] == '5'),
			   "reply %s code \"%s\"", conf_reply_name(i), r->code);
		FUZZ_CHECK(r->xcode[0] == r->code[0], "reply %s xcode \"%s\" code \"%s\"",
			   conf_reply_name(i), r->xcode, r->code);
		FUZZ_CHECK(r->text != NULL && r->text[0] != 0 && strlen(r->text) <= 400,
			   "reply %s text length", conf_reply_name(i));
		for (const char *p = r->text; *p; p++)
			FUZZ_CHECK((unsigned char) *p >= 0x20 && (unsigned char) *p <= 0x7e,
				   "reply %s text byte 0x%02x", conf_reply_name(i),
				   (unsigned char) *p);
		/* An accepted template has no lone '$' and no unknown variable. */
		n = policy_format_reply(out, sizeof(out), r->text, &v);
		d = 0;
		for (size_t k = 0; k < n; k++)
			d += out[k] == '$';
		if (n + 2 < sizeof(out))	/* not cut short */
			FUZZ_CHECK(d == dollars_in_template(r->text),
				   "reply %s text \"%s\" printed %zu '$' for %zu \"$$\"",
				   conf_reply_name(i), r->text, d, dollars_in_template(r->text));
	}
}

/* check_conf - what conf.h promises of an accepted conf */
static void
check_conf(const struct qm_conf *conf, const char *path)
{
	char	key[KEYS_MAX];
	size_t	i, j;

	FUZZ_CHECK(conf->path != NULL && strcmp(conf->path, path) == 0, "path");
	FUZZ_CHECK(conf->socket && conf->user && conf->timezone && conf->journal, "strings");
	FUZZ_CHECK(conf->journal[0] == '/' && conf->journal[1] != 0, "journal \"%s\"",
		   conf->journal);
	FUZZ_CHECK(conf->mode == QM_MODE_ENFORCE || conf->mode == QM_MODE_MONITOR, "mode");
	FUZZ_CHECK(conf->unit == QM_UNIT_RECIPIENTS || conf->unit == QM_UNIT_MESSAGES, "unit");
	FUZZ_CHECK(conf->on_redis_error == QM_ON_ERROR_TEMPFAIL
		   || conf->on_redis_error == QM_ON_ERROR_ACCEPT, "on_redis_error");
	FUZZ_CHECK(conf->keep_months >= 1 && conf->keep_months <= 120, "keep_months %d",
		   conf->keep_months);
	FUZZ_CHECK(strstr(conf->timezone, "..") == NULL, "timezone \"%s\"", conf->timezone);
	FUZZ_CHECK(conf->timezone[0] != '/' && conf->timezone[0] != 0, "timezone \"%s\"",
		   conf->timezone);

	/* warn_percent: ascending, no duplicates, 1..1000 */
	for (i = 0; i < conf->warn_count; i++) {
		FUZZ_CHECK(conf->warn_percent[i] >= 1 && conf->warn_percent[i] <= 1000,
			   "warn_percent %d", conf->warn_percent[i]);
		FUZZ_CHECK(i == 0 || conf->warn_percent[i - 1] < conf->warn_percent[i],
			   "warn_percent not ascending at %zu", i);
	}

	/* redis */
	FUZZ_CHECK(conf->redis.address && conf->redis.password && conf->redis.master, "redis");
	FUZZ_CHECK(conf->redis.database >= 0 && conf->redis.database <= 1000, "database");
	FUZZ_CHECK(conf->redis.timeout_ms >= 1 && conf->redis.timeout_ms <= 60000, "timeout_ms");
	FUZZ_CHECK(conf->redis.pool_size >= 1 && conf->redis.pool_size <= 1024, "pool_size");
	FUZZ_CHECK(keys_events(key, conf->redis.prefix) > 0,
		   "prefix \"%s\" accepted by conf_load, refused by keys", conf->redis.prefix);
	FUZZ_CHECK((conf->redis.sentinel_count > 0) == (conf->redis.master[0] != 0),
		   "sentinels %zu, master \"%s\"", conf->redis.sentinel_count, conf->redis.master);

	/* account */
	FUZZ_CHECK(conf->account.source == QM_SOURCE_HEADER
		   || conf->account.source == QM_SOURCE_SASL
		   || conf->account.source == QM_SOURCE_SENDER_DOMAIN, "source");
	FUZZ_CHECK(conf->account.header != NULL && graph_ok(conf->account.header, ":"),
		   "account header \"%s\"", conf->account.header ? conf->account.header : "(null)");
	FUZZ_CHECK(!conf->account.has_pattern || conf->account.pattern.re_nsub == 1,
		   "pattern groups %zu", conf->account.pattern.re_nsub);
	FUZZ_CHECK(policy_header_slot(conf, conf->account.header) >= 0, "account header slot");

	/* categories: valid distinct names, at least one matcher */
	for (i = 0; i < conf->category_count; i++) {
		const struct qm_category *cat = &conf->categories[i];
		int	slot;

		FUZZ_CHECK(name_ok(cat->name), "category name \"%s\"", cat->name);
		FUZZ_CHECK(!keys_reserved_field(cat->name), "category name \"%s\" reserved",
			   cat->name);
		FUZZ_CHECK(cat->header || cat->has_sasl || cat->has_sender
			   || cat->client.count > 0 || cat->daemon,
			   "category %s has no matcher", cat->name);
		FUZZ_CHECK(!cat->has_match || cat->header != NULL, "category %s match without header",
			   cat->name);
		FUZZ_CHECK(cat->header == NULL || graph_ok(cat->header, ":"),
			   "category %s header", cat->name);
		FUZZ_CHECK(cat->daemon == NULL || graph_ok(cat->daemon, ""),
			   "category %s daemon", cat->name);
		for (j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(conf->categories[j].name, cat->name) != 0,
				   "category %s twice", cat->name);
		if (cat->header != NULL) {
			slot = policy_header_slot(conf, cat->header);
			FUZZ_CHECK(slot >= 0 && (size_t) slot <= i, "category %s slot %d",
				   cat->name, slot);
			FUZZ_CHECK(strcasecmp(policy_slot_header(conf, slot), cat->header) == 0,
				   "category %s slot header", cat->name);
		}
	}

	/* plans, default_plan */
	for (i = 0; i < conf->plan_count; i++) {
		FUZZ_CHECK(name_ok(conf->plans[i].name), "plan name \"%s\"", conf->plans[i].name);
		FUZZ_CHECK(conf->plans[i].monthly >= QM_UNLIMITED, "plan %s monthly %lld",
			   conf->plans[i].name, conf->plans[i].monthly);
		for (j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(conf->plans[j].name, conf->plans[i].name) != 0,
				   "plan %s twice", conf->plans[i].name);
	}
	FUZZ_CHECK(conf->default_plan == NULL || conf_plan(conf, conf->default_plan) != NULL,
		   "default_plan \"%s\" names no plan", conf->default_plan);

	check_replies(conf);
}

/* LLVMFuzzerInitialize - make the file conf_load() reads */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fuzz_file_open(&conf_file, "fuzz_conf");
	return 0;
}

/* LLVMFuzzerTestOneInput - one conf file, loaded, checked and freed */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qm_conf *conf;
	char	err[512];

	fuzz_file_set(&conf_file, data, size);
	memset(err, 'x', sizeof(err));
	conf = conf_load(conf_file.path, err, sizeof(err));
	FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL, "err not terminated");
	if (conf == NULL) {
		FUZZ_CHECK(err[0] != 0, "refused without a reason");
		FUZZ_CHECK(strncmp(err, conf_file.path, strlen(conf_file.path)) == 0,
			   "reason does not name the file: %s", err);
		/* conf.h: one line, "FILE:LINE: reason" (it goes to syslog as is). */
		FUZZ_CHECK(strpbrk(err, "\r\n") == NULL, "reason is not one line: %s", err);
		return 0;
	}
	FUZZ_CHECK(err[0] == 0, "accepted with a reason: %s", err);
	check_conf(conf, conf_file.path);
	conf_free(conf);
	return 0;
}
