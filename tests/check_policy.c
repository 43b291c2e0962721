/*
 * check_policy.c - classification, account extraction and reply texts,
 * driven through the real conf parser with no MTA and no Redis.
 */
#include <arpa/inet.h>
#include <check.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "milter/policy.h"
#include "check_run.h"

static const char base_conf[] =
	"default_plan = \"free\"\n"
	"plan free { monthly = 0 }\n"
	"account { source = \"header\" header = \"X-Quota-Account\"\n"
	"  trusted_networks = { \"127.0.0.0/8\", \"::1/128\", \"10.1.0.0/16\" } }\n"
	"category crm { header = \"X-Quota-Category\" match = \"^crm$\" }\n"
	"category marketing { header = \"X-Quota-Category\" match = \"^marketing$\" }\n"
	"category automation { header = \"X-Quota-Category\" match = \"^(automation|workflow)$\" }\n";

/* load - write text to a temporary file and parse it; fails the test on error */
static struct qm_conf *
load(const char *text)
{
	char	path[] = "/tmp/check_policy.XXXXXX";
	char	err[512] = "";
	struct qm_conf *conf;
	int	fd = mkstemp(path);
	FILE   *fp;

	ck_assert_int_ge(fd, 0);
	fp = fdopen(fd, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(text, fp);
	fclose(fp);
	conf = conf_load(path, err, sizeof(err));
	unlink(path);
	ck_assert_msg(conf != NULL, "conf_load: %s", err);
	return conf;
}

/* set_v4 - fill a sockaddr_in */
static const struct sockaddr *
set_v4(struct sockaddr_in *sin, const char *addr)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(40000);
	ck_assert_int_eq(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
	return (const struct sockaddr *) sin;
}

START_TEST(classify_header_categories)
{
	static const struct {
		const char *value;	/* X-Quota-Category, NULL: none */
		int	expect;
	} cases[] = {
		{ "crm", 0 }, { "marketing", 1 }, { "automation", 2 }, { "workflow", 2 },
		{ "CRM", POLICY_CLASS_NONE }, { "crm2", POLICY_CLASS_NONE },
		{ "", POLICY_CLASS_NONE }, { NULL, POLICY_CLASS_NONE },
	};
	struct qm_conf *conf = load(base_conf);
	struct policy_msg pm = { .sender = "a@example.com" };
	struct policy_header h;
	size_t	i;

	/* Before the headers arrive, a header matcher cannot decide yet. */
	ck_assert_int_eq(policy_classify(conf, &pm), POLICY_CLASS_LATER);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		h.name = "x-quota-category";	/* header names are case-insensitive */
		h.value = (char *) cases[i].value;
		pm.headers = &h;
		pm.header_count = cases[i].value != NULL;
		ck_assert_msg(policy_classify(conf, &pm) == cases[i].expect,
			      "case %zu (%s)", i, cases[i].value ? cases[i].value : "none");
	}
	conf_free(conf);
}
END_TEST

START_TEST(classify_envelope_matchers)
{
	struct qm_conf *conf = load(
		"default_plan = \"\"\n"
		"category api { sasl = \"^api-\" client = { \"10.0.0.0/8\" } daemon = \"submission\" }\n"
		"category bounces { sender = \"^bounce@\" }\n"
		"category any_from_crm { sender = \"@crm\\\\.example$\" header = \"X-Kind\" }\n"
		"category also_bounces { sender = \"^bounce@\" }\n");
	struct sockaddr_in sin;
	struct policy_msg pm = { .sender = "someone@example.com" };
	struct policy_header h = { "X-Kind", "anything" };

	/* All of sasl, client and daemon must hold. */
	pm.sasl = "api-7";
	pm.client = set_v4(&sin, "10.2.3.4");
	pm.daemon = "submission";
	ck_assert_int_eq(policy_classify(conf, &pm), 0);
	pm.daemon = "smtpd";
	ck_assert_int_eq(policy_classify(conf, &pm), POLICY_CLASS_NONE);
	pm.daemon = "submission";
	pm.client = set_v4(&sin, "192.0.2.1");
	ck_assert_int_eq(policy_classify(conf, &pm), POLICY_CLASS_NONE);
	pm.client = set_v4(&sin, "10.2.3.4");
	pm.sasl = NULL;
	ck_assert_int_eq(policy_classify(conf, &pm), POLICY_CLASS_NONE);

	/* First match wins: "bounces" before "also_bounces". */
	pm.sender = "bounce@example.com";
	ck_assert_int_eq(policy_classify(conf, &pm), 1);

	/* A header matcher without match holds when the header is present. */
	pm.sender = "x@crm.example";
	ck_assert_int_eq(policy_classify(conf, &pm), POLICY_CLASS_LATER);
	pm.headers = &h;
	pm.header_count = 1;
	ck_assert_int_eq(policy_classify(conf, &pm), 2);
	pm.header_count = 0;
	ck_assert_int_eq(policy_classify(conf, &pm), POLICY_CLASS_NONE);
	conf_free(conf);
}
END_TEST

START_TEST(account_from_header)
{
	struct qm_conf *conf = load(base_conf);
	struct sockaddr_in sin;
	struct policy_header hs[3];
	struct policy_msg pm = { .sender = "a@b.example", .headers = hs };
	char	out[QM_ACCOUNT_MAX + 1];
	const char *why;

	pm.client = set_v4(&sin, "127.0.0.1");
	hs[0] = (struct policy_header) { "X-Quota-Account", "acme-42" };
	hs[1] = (struct policy_header) { "X-Quota-Account", "acme-42" };
	hs[2] = (struct policy_header) { "X-Quota-Account", "other" };

	pm.header_count = 0;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_NONE);
	pm.header_count = 1;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_OK);
	ck_assert_str_eq(out, "acme-42");
	/* The same account twice is one declaration; two different ones conflict. */
	pm.header_count = 2;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_OK);
	pm.header_count = 3;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_CONFLICT);
	ck_assert_int_eq(policy_account_reply(POLICY_ACCOUNT_CONFLICT), QM_REPLY_CONFLICT);

	/* Outside trusted_networks: refused; any login is not enough (trusted_logins). */
	pm.header_count = 1;
	pm.client = set_v4(&sin, "192.0.2.7");
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_UNTRUSTED);
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(policy_account_reply(POLICY_ACCOUNT_UNTRUSTED), QM_REPLY_UNTRUSTED);
	pm.header_count = 3;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_UNTRUSTED);
	pm.header_count = 1;
	pm.sasl = "someone";
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_UNTRUSTED);
	ck_assert_str_eq(why, "the SMTP AUTH login is not in trusted_logins");
	pm.sasl = NULL;
	pm.client = set_v4(&sin, "10.1.200.3");
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_OK);
	pm.client = NULL;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_UNTRUSTED);

	/* A dropped (oversized) account header never lets a message through. */
	pm.client = set_v4(&sin, "127.0.0.1");
	pm.headers_truncated = true;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_BAD);
	conf_free(conf);
}
END_TEST

/* Who may name an account in a header: trusted_logins, trust_local_submissions */
START_TEST(account_header_trust)
{
	static const char logins_conf[] =
	    "default_plan = \"\"\n"
	    "account { source = \"header\" trusted_logins = { \"crm-relay\", '/^app-[0-9]+@crm[.]example$/' } }\n"
	    "category crm { header = \"X-Quota-Category\" }\n";
	static const char local_conf[] =
	    "default_plan = \"\"\n"
	    "account { source = \"header\" trust_local_submissions = true }\n"
	    "category crm { header = \"X-Quota-Category\" }\n";
	static const struct {
		int	conf;			/* 0 base, 1 logins, 2 local */
		const char *client;		/* IPv4, or NULL */
		int	port;
		const char *host;		/* the MTA's name of the client */
		const char *sasl;
		enum policy_account want;
	} cases[] = {
		/* base conf: no trusted_logins, local submissions not trusted */
		{0, "127.0.0.1", 40000, "client.example", NULL, POLICY_ACCOUNT_OK},
		{0, "127.0.0.1", 40000, "client.example", "crm-relay", POLICY_ACCOUNT_UNTRUSTED},
		{0, "127.0.0.1", 0, "localhost", NULL, POLICY_ACCOUNT_UNTRUSTED},
		{0, "127.0.0.1", 0, "client.example", NULL, POLICY_ACCOUNT_OK},
		{0, "127.0.0.1", 25, "localhost", NULL, POLICY_ACCOUNT_OK},
		/* trusted_logins: exact names and /regex/, from anywhere */
		{1, "192.0.2.7", 40000, "client.example", "crm-relay", POLICY_ACCOUNT_OK},
		{1, "192.0.2.7", 40000, "client.example", "crm-relay2", POLICY_ACCOUNT_UNTRUSTED},
		{1, "192.0.2.7", 40000, "client.example", "CRM-relay", POLICY_ACCOUNT_UNTRUSTED},
		{1, "192.0.2.7", 40000, "client.example", "app-17@crm.example", POLICY_ACCOUNT_OK},
		{1, "192.0.2.7", 40000, "client.example", "app-x@crm.example", POLICY_ACCOUNT_UNTRUSTED},
		{1, "127.0.0.1", 40000, "client.example", "customer", POLICY_ACCOUNT_UNTRUSTED},
		{1, "127.0.0.1", 40000, "client.example", "", POLICY_ACCOUNT_OK},
		{1, "192.0.2.7", 40000, "client.example", NULL, POLICY_ACCOUNT_UNTRUSTED},
		/* trust_local_submissions = true */
		{2, "127.0.0.1", 0, "localhost", NULL, POLICY_ACCOUNT_OK},
		{2, "127.0.0.1", 0, "localhost", "someone", POLICY_ACCOUNT_UNTRUSTED},
	};
	struct qm_conf *confs[3] = {load(base_conf), load(logins_conf), load(local_conf)};
	struct policy_header h = { "X-Quota-Account", "acme-42" };
	char	out[QM_ACCOUNT_MAX + 1];
	const char *why;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_in sin;
		struct policy_msg pm = { .sender = "a@b.example", .headers = &h, .header_count = 1 };

		pm.client = set_v4(&sin, cases[i].client);
		sin.sin_port = htons((uint16_t) cases[i].port);
		pm.local = policy_local(cases[i].host, pm.client);
		pm.sasl = cases[i].sasl;
		ck_assert_msg(policy_account(confs[cases[i].conf], &pm, out, &why) == cases[i].want,
			      "case %zu: %s from %s:%d (%s)", i, cases[i].sasl ? cases[i].sasl : "-",
			      cases[i].client, cases[i].port, cases[i].host);
	}
	for (size_t i = 0; i < 3; i++)
		conf_free(confs[i]);
}
END_TEST

START_TEST(account_ids_validated)
{
	static const char *bad[] = {
		"", "acme{1}", "acme 1", "acme\t1", "acme\x01", "acme%s", "100%",
		"caf\xc3\xa9", "a/b", "a:b", "a*", "a\\b",
	};
	static const char *good[] = { "a", "Acme.Corp_1@x+y-z", "0" };
	struct qm_conf *conf = load(base_conf);
	struct sockaddr_in sin;
	struct policy_header h = { "X-Quota-Account", NULL };
	struct policy_msg pm = { .headers = &h, .header_count = 1 };
	char	out[QM_ACCOUNT_MAX + 1];
	char	longid[QM_ACCOUNT_MAX + 2];
	const char *why;
	size_t	i;

	pm.client = set_v4(&sin, "127.0.0.1");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h.value = (char *) bad[i];
		ck_assert_msg(policy_account(conf, &pm, out, &why) == POLICY_ACCOUNT_BAD,
			      "bad id %zu accepted", i);
		ck_assert_str_eq(out, "");
	}
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		h.value = (char *) good[i];
		ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_OK);
		ck_assert_str_eq(out, good[i]);
	}
	memset(longid, 'a', sizeof(longid) - 1);
	longid[QM_ACCOUNT_MAX] = 0;		/* 128 characters: valid */
	h.value = longid;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_OK);
	longid[QM_ACCOUNT_MAX] = 'a';		/* 129: invalid */
	longid[QM_ACCOUNT_MAX + 1] = 0;
	ck_assert_int_eq(policy_account(conf, &pm, out, &why), POLICY_ACCOUNT_BAD);
	conf_free(conf);
}
END_TEST

START_TEST(account_from_sasl_and_sender)
{
	struct qm_conf *sasl = load(
		"default_plan = \"\"\n"
		"account { source = \"sasl\" pattern = \"^([^@]+)@tenants\\\\.example$\" }\n"
		"category crm { sender = \".\" }\n");
	struct qm_conf *dom = load(
		"default_plan = \"\"\n"
		"account { source = \"sender-domain\" }\n"
		"category crm { sender = \".\" }\n");
	struct policy_msg pm = { .sender = "news@Mail.Acme.EXAMPLE" };
	char	out[QM_ACCOUNT_MAX + 1];
	const char *why;

	ck_assert(policy_account_early(sasl));
	ck_assert(policy_account_early(dom));
	ck_assert_int_eq(policy_account(sasl, &pm, out, &why), POLICY_ACCOUNT_NONE);
	pm.sasl = "acme@tenants.example";
	ck_assert_int_eq(policy_account(sasl, &pm, out, &why), POLICY_ACCOUNT_OK);
	ck_assert_str_eq(out, "acme");
	pm.sasl = "acme@elsewhere.example";
	ck_assert_int_eq(policy_account(sasl, &pm, out, &why), POLICY_ACCOUNT_NONE);
	pm.sasl = "ac me@tenants.example";
	ck_assert_int_eq(policy_account(sasl, &pm, out, &why), POLICY_ACCOUNT_BAD);

	ck_assert_int_eq(policy_account(dom, &pm, out, &why), POLICY_ACCOUNT_OK);
	ck_assert_str_eq(out, "mail.acme.example");
	pm.sender = "";
	ck_assert_int_eq(policy_account(dom, &pm, out, &why), POLICY_ACCOUNT_NONE);
	pm.sender = "user@";
	ck_assert_int_eq(policy_account(dom, &pm, out, &why), POLICY_ACCOUNT_NONE);
	conf_free(sasl);
	conf_free(dom);
}
END_TEST

START_TEST(reply_escaping)
{
	struct policy_vars v = {
		.account = "acme", .plan = "basic", .limit = 10000, .used = 10000,
		.reason = "50% off\r\nInjected: yes",
	};
	char	buf[512];
	char	small[8];
	size_t	n;

	policy_format_reply(buf, sizeof(buf),
			    "Monthly sending limit of $limit emails reached for account $account (plan $plan)", &v);
	ck_assert_str_eq(buf, "Monthly sending limit of 10000 emails reached for account acme (plan basic)");
	policy_format_reply(buf, sizeof(buf), "$reason", &v);
	ck_assert_str_eq(buf, "50%% off  Injected: yes");
	ck_assert_ptr_null(strchr(buf, '\r'));
	policy_format_reply(buf, sizeof(buf), "100% $$5 $category", &v);
	ck_assert_str_eq(buf, "100%% $5 -");
	v.window = "2026-12-03T14";
	v.retry_after = "15:00 UTC";
	policy_format_reply(buf, sizeof(buf), "$used in $window, after $retry_after", &v);
	ck_assert_str_eq(buf, "10000 in 2026-12-03T14, after 15:00 UTC");
	v.limit = QM_UNLIMITED;
	v.plan = "caf\xc3\xa9";
	policy_format_reply(buf, sizeof(buf), "$limit/$plan", &v);
	ck_assert_str_eq(buf, "unlimited/caf??");

	/* Truncation never splits a "%%" pair nor overruns. */
	n = policy_format_reply(small, sizeof(small), "abcdef%xy", &v);
	ck_assert_uint_eq(n, strlen(small));
	ck_assert_str_eq(small, "abcdef");
	n = policy_format_reply(small, sizeof(small), "abcd%xyz", &v);
	ck_assert_uint_eq(n, 7);
	ck_assert_str_eq(small, "abcd%%x");
}
END_TEST

/* NO_CAPS - the windows of a quota of an account without caps */
#define NO_CAPS	.day = { .cap = QM_UNLIMITED }, .hour = { .cap = QM_UNLIMITED }

START_TEST(units_and_fit)
{
	struct qm_conf *conf = load(base_conf);
	struct qm_quota q = { .status = QM_STATUS_OK, .limit = 10, .used = 8, NO_CAPS };

	ck_assert_int_eq(policy_rcpt_units(conf, 0), 1);
	ck_assert_int_eq(policy_rcpt_units(conf, 5), 1);
	ck_assert_int_eq(policy_message_units(conf, 7), 7);
	ck_assert(policy_fits(&q, 0, 1));
	ck_assert(policy_fits(&q, 1, 1));
	ck_assert(!policy_fits(&q, 2, 1));
	q.limit = QM_UNLIMITED;
	ck_assert(policy_fits(&q, 1000000, 1000000));
	conf_free(conf);

	conf = load("unit = \"messages\"\ndefault_plan = \"\"\n");
	ck_assert_int_eq(policy_rcpt_units(conf, 0), 1);
	ck_assert_int_eq(policy_rcpt_units(conf, 1), 0);
	ck_assert_int_eq(policy_message_units(conf, 7), 1);
	conf_free(conf);
}
END_TEST

/* policy_far_from_limit: what a recent quota may decide without asking Redis */
START_TEST(far_from_limit)
{
	struct qm_quota q = { .status = QM_STATUS_OK, .limit = 10000, .used = 8999, NO_CAPS };

	/* A tenth of 10 000 must stay: 8999 + 1 + 1000 fits, one more does not. */
	ck_assert(policy_far_from_limit(&q, 0, 1));
	ck_assert(!policy_far_from_limit(&q, 1, 1));
	ck_assert(!policy_far_from_limit(&q, 0, 2));
	q.used = 9000;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
	ck_assert(policy_fits(&q, 0, 1));	/* fits, but too near to decide alone */

	/* Small limits: at least POLICY_FAR_MIN units must stay. */
	q.limit = 500;
	q.used = 500 - POLICY_FAR_MIN - 1;
	ck_assert(policy_far_from_limit(&q, 0, 1));
	q.used++;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
	q.limit = POLICY_FAR_MIN;
	q.used = 0;
	ck_assert(!policy_far_from_limit(&q, 0, 1));

	/* Unlimited: always far; any other status: never, it is Redis's to say. */
	q.limit = QM_UNLIMITED;
	q.used = 123456789;
	ck_assert(policy_far_from_limit(&q, 1000000, 1000000));
	q.status = QM_STATUS_SUSPENDED;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
	q.status = QM_STATUS_EXHAUSTED;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
	q.status = QM_STATUS_OVER;
	ck_assert(!policy_far_from_limit(&q, 0, 1));

	/* Numbers Redis should never give: no overflow, no answer. */
	q.status = QM_STATUS_OK;
	q.limit = LLONG_MAX;
	q.used = LLONG_MAX - 10;
	ck_assert(!policy_far_from_limit(&q, 5, 5));
	q.used = -5;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
	q.used = 0;
	ck_assert(!policy_far_from_limit(&q, -1, 1));
}
END_TEST

/* policy_room: the month and every capped window, and which one refuses beyond */
START_TEST(room_across_windows)
{
	static const struct {
		long long limit, used, day_cap, day_used, hour_cap, hour_used, reserved;
		long long units;
		enum qm_status beyond;
	} cases[] = {
		/* No cap at all: the month alone, as before caps. */
		{ 10, 8, QM_UNLIMITED, 0, QM_UNLIMITED, 0, 0, 2, QM_STATUS_EXHAUSTED },
		{ QM_UNLIMITED, 5, QM_UNLIMITED, 0, QM_UNLIMITED, 0, 0, LLONG_MAX, QM_STATUS_OK },
		/* The hour is the tightest: it refuses beyond. */
		{ 100, 10, 50, 10, 3, 1, 0, 2, QM_STATUS_HOURLY_CAP },
		{ 100, 10, 50, 10, 3, 1, 1, 1, QM_STATUS_HOURLY_CAP },
		{ 100, 10, 50, 10, 3, 3, 0, 0, QM_STATUS_HOURLY_CAP },
		/* The day is tighter than the hour. */
		{ 100, 10, 12, 10, 5, 0, 0, 2, QM_STATUS_DAILY_CAP },
		/* Ties: the month first, then the day (quota.lua's order). */
		{ 12, 10, 12, 10, 2, 0, 0, 2, QM_STATUS_EXHAUSTED },
		{ 100, 10, 12, 10, 2, 0, 0, 2, QM_STATUS_DAILY_CAP },
		/* Unlimited month, capped hour; a cap of 0 leaves nothing. */
		{ QM_UNLIMITED, 9, QM_UNLIMITED, 0, 7, 2, 0, 5, QM_STATUS_HOURLY_CAP },
		{ QM_UNLIMITED, 0, 0, 0, QM_UNLIMITED, 0, 0, 0, QM_STATUS_DAILY_CAP },
		/* Over a cap already (lowered cap): no room, never negative. */
		{ 100, 10, 50, 10, 3, 7, 0, 0, QM_STATUS_HOURLY_CAP },
		/* Numbers Redis should never give: no room rather than overflow. */
		{ LLONG_MAX, -5, QM_UNLIMITED, 0, QM_UNLIMITED, 0, 0, 0, QM_STATUS_EXHAUSTED },
		{ 100, 0, 50, 0, LLONG_MAX, 0, LLONG_MAX, 0, QM_STATUS_EXHAUSTED },
	};
	size_t	i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct qm_quota q = {
			.status = QM_STATUS_OK, .limit = cases[i].limit, .used = cases[i].used,
			.day = { .cap = cases[i].day_cap, .used = cases[i].day_used },
			.hour = { .cap = cases[i].hour_cap, .used = cases[i].hour_used },
		};
		struct policy_room r = policy_room(&q, cases[i].reserved);

		ck_assert_msg(r.units == cases[i].units && r.beyond == cases[i].beyond,
			      "case %zu: room %lld beyond %d", i, r.units, (int) r.beyond);
		/* policy_fits() agrees with the room, up to its last unit. */
		ck_assert_msg(cases[i].units == LLONG_MAX
			      || (policy_fits(&q, cases[i].reserved, cases[i].units)
				  && !policy_fits(&q, cases[i].reserved, cases[i].units + 1)),
			      "case %zu: policy_fits disagrees", i);
	}
}
END_TEST

/* policy_far_from_limit: every capped window must be far from its cap too */
START_TEST(far_from_caps)
{
	struct qm_quota q = { .status = QM_STATUS_OK, .limit = QM_UNLIMITED, .used = 0, NO_CAPS };

	ck_assert(policy_far_from_limit(&q, 0, 1));
	/* An hourly cap of 3 is never far: a peek decides each recipient. */
	q.hour.cap = 3;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
	/* A day of 2000: a tenth (200) must stay, as for the month. */
	q.hour.cap = QM_UNLIMITED;
	q.day.cap = 2000;
	q.day.used = 1799;
	ck_assert(policy_far_from_limit(&q, 0, 1));
	ck_assert(!policy_far_from_limit(&q, 1, 1));
	/* Far from the month, but the hour is near its cap. */
	q.limit = 100000;
	q.used = 10;
	q.day.used = 0;
	q.hour.cap = 500;
	q.hour.used = 500 - POLICY_FAR_MIN - 1;
	ck_assert(policy_far_from_limit(&q, 0, 1));
	q.hour.used++;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
	ck_assert(policy_fits(&q, 0, 1));
	/* Hostile numbers in a window: no overflow, no answer. */
	q.hour.cap = LLONG_MAX;
	q.hour.used = LLONG_MAX - 10;
	ck_assert(!policy_far_from_limit(&q, 5, 5));
	q.hour.used = -1;
	ck_assert(!policy_far_from_limit(&q, 0, 1));
}
END_TEST

/* policy_quota_vars: $limit $used $window $retry_after of each status */
START_TEST(quota_vars)
{
	char	err[256];
	struct month_table *months = month_table_create("UTC", err, sizeof(err));
	struct month_table *berlin = month_table_create("Europe/Berlin", err, sizeof(err));
	struct qm_quota q = {
		.status = QM_STATUS_HOURLY_CAP, .plan = "basic", .limit = 10000, .used = 42,
		.day = { "2026-12-03", 500, 40, 1796342400 },		/* 2026-12-04 00:00 UTC */
		.hour = { "2026-12-03T14", 3, 3, 1796310000 },	/* 2026-12-03 15:00 UTC */
	};
	struct policy_vars v = { .account = "acme" };
	char	clock[64];
	char	buf[256];

	ck_assert_ptr_nonnull(months);
	ck_assert_ptr_nonnull(berlin);
	ck_assert_ptr_eq(policy_status_window(&q, QM_STATUS_HOURLY_CAP), &q.hour);
	ck_assert_ptr_eq(policy_status_window(&q, QM_STATUS_DAILY_CAP), &q.day);
	ck_assert_ptr_null(policy_status_window(&q, QM_STATUS_EXHAUSTED));

	policy_quota_vars(&v, &q, QM_STATUS_HOURLY_CAP, months, clock, sizeof(clock));
	policy_format_reply(buf, sizeof(buf), "$account $plan $used/$limit $window $retry_after", &v);
	ck_assert_str_eq(buf, "acme basic 3/3 2026-12-03T14 15:00 UTC");

	v = (struct policy_vars) { .account = "acme" };
	policy_quota_vars(&v, &q, QM_STATUS_DAILY_CAP, berlin, clock, sizeof(clock));
	policy_format_reply(buf, sizeof(buf), "$used/$limit $window $retry_after", &v);
	ck_assert_str_eq(buf, "40/500 2026-12-03 2026-12-04 01:00 CET");

	/* The month's statuses: its limit and use, no window. */
	v = (struct policy_vars) { 0 };
	policy_quota_vars(&v, &q, QM_STATUS_EXHAUSTED, months, clock, sizeof(clock));
	policy_format_reply(buf, sizeof(buf), "$used/$limit $window $retry_after", &v);
	ck_assert_str_eq(buf, "42/10000 - -");

	/* The default texts name the window's cap and when it reopens. */
	struct qm_conf *conf = load(base_conf);

	v = (struct policy_vars) { .account = "acme" };
	policy_quota_vars(&v, &q, QM_STATUS_HOURLY_CAP, months, clock, sizeof(clock));
	policy_format_reply(buf, sizeof(buf), conf->replies[QM_REPLY_HOURLY_CAP].text, &v);
	ck_assert_msg(strstr(buf, " 3 ") != NULL && strstr(buf, "15:00 UTC") != NULL, "%s", buf);
	ck_assert_str_eq(conf->replies[QM_REPLY_HOURLY_CAP].code, "451");
	ck_assert_str_eq(conf->replies[QM_REPLY_DAILY_CAP].xcode, "4.7.1");
	conf_free(conf);
	month_table_free(months);
	month_table_free(berlin);
}
END_TEST

START_TEST(status_replies)
{
	ck_assert_int_eq(policy_status_reply(QM_STATUS_EXHAUSTED, false), QM_REPLY_EXHAUSTED);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_EXHAUSTED, true), QM_REPLY_RACE);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_NO_MAIL, true), QM_REPLY_NO_MAIL);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_SUSPENDED, false), QM_REPLY_SUSPENDED);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_NO_PLAN, false), QM_REPLY_NO_PLAN);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_UNKNOWN_PLAN, false), QM_REPLY_UNKNOWN_PLAN);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_UNAVAILABLE, false), QM_REPLY_UNAVAILABLE);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_DAILY_CAP, true), QM_REPLY_DAILY_CAP);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_HOURLY_CAP, false), QM_REPLY_HOURLY_CAP);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_OK, false), QM_REPLY_COUNT);
	ck_assert_int_eq(policy_status_reply(QM_STATUS_OVER, false), QM_REPLY_COUNT);
}
END_TEST

START_TEST(header_slots)
{
	struct qm_conf *conf = load(base_conf);

	ck_assert_int_eq(policy_header_slot(conf, "x-quota-category"), 0);
	ck_assert_int_eq(policy_header_slot(conf, "X-Quota-Account"), 3);
	ck_assert_int_eq(policy_header_slot(conf, "Subject"), -1);
	ck_assert_str_eq(policy_slot_header(conf, 3), "X-Quota-Account");
	ck_assert_ptr_null(policy_slot_header(conf, 4));
	conf_free(conf);
}
END_TEST

/* policy_needs: what each kind of conf asks of the MTA */
#define NO_PLAN "default_plan = \"\"\n"
START_TEST(needs_per_conf)
{
	static const struct {
		const char *conf;
		struct policy_needs want;
	} cases[] = {
		/* The account and the category in headers: no RCPT refusal, no pass at MAIL. */
		{ base_conf, { .headers = true, .strip = true, .rcpt = true } },
		{ NO_PLAN "unit = \"messages\"\naccount { strip_headers = false }\n"
		  "category crm { header = \"X-Kind\" }\n",
		  { .headers = true } },
		/* Account at MAIL, enforce: RCPT refuses, and lets uncounted mail pass. */
		{ NO_PLAN "unit = \"messages\"\naccount { source = \"sasl\" }\n"
		  "category api { sasl = \"^api-\" }\n",
		  { .rcpt = true, .rcpt_reply = true } },
		/* Monitor: nothing is refused at RCPT; MAIL lets uncounted mail pass. */
		{ NO_PLAN "unit = \"messages\"\nmode = \"monitor\"\naccount { source = \"sasl\" }\n"
		  "category api { sasl = \"^api-\" }\n",
		  { .mail_reply = true } },
		{ NO_PLAN "mode = \"monitor\"\naccount { source = \"sender-domain\" }\n"
		  "category bounces { sender = \"^bounce@\" }\n",
		  { .rcpt = true, .mail_reply = true } },
		/* A category header with an account at MAIL: read and stripped. */
		{ NO_PLAN "unit = \"messages\"\nmode = \"monitor\"\naccount { source = \"sasl\" }\n"
		  "category crm { sender = \"@crm$\" header = \"X-Kind\" }\n",
		  { .headers = true, .strip = true, .mail_reply = true } },
		/* One category without an envelope matcher: no mail passes at MAIL. */
		{ NO_PLAN "mode = \"monitor\"\naccount { source = \"sasl\" }\n"
		  "category api { sasl = \"^api-\" }\ncategory rest { header = \"X-Kind\" }\n",
		  { .headers = true, .strip = true, .rcpt = true } },
	};
	size_t	i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct qm_conf *conf = load(cases[i].conf);
		struct policy_needs got = policy_needs(conf);
		const struct policy_needs *want = &cases[i].want;

		ck_assert_msg(got.headers == want->headers && got.strip == want->strip
			      && got.rcpt == want->rcpt && got.rcpt_reply == want->rcpt_reply
			      && got.mail_reply == want->mail_reply,
			      "case %zu: headers %d strip %d rcpt %d rcpt_reply %d mail_reply %d",
			      i, got.headers, got.strip, got.rcpt, got.rcpt_reply, got.mail_reply);
		conf_free(conf);
	}
}
END_TEST

int
main(void)
{
	Suite  *s = suite_create("policy");
	TCase  *tc = tcase_create("policy");

	tcase_add_test(tc, classify_header_categories);
	tcase_add_test(tc, classify_envelope_matchers);
	tcase_add_test(tc, account_from_header);
	tcase_add_test(tc, account_header_trust);
	tcase_add_test(tc, account_ids_validated);
	tcase_add_test(tc, account_from_sasl_and_sender);
	tcase_add_test(tc, reply_escaping);
	tcase_add_test(tc, units_and_fit);
	tcase_add_test(tc, far_from_limit);
	tcase_add_test(tc, room_across_windows);
	tcase_add_test(tc, far_from_caps);
	tcase_add_test(tc, quota_vars);
	tcase_add_test(tc, status_replies);
	tcase_add_test(tc, header_slots);
	tcase_add_test(tc, needs_per_conf);
	suite_add_tcase(s, tc);
	return check_run(s);
}
