/*
 * check_conf.c - the conf parser and the CIDR lists
 *
 * Each case writes a conf snippet into a temporary folder and loads it.
 * Bad snippets must fail with exactly "FILE:LINE: " (or "FILE: " where no
 * line applies) and a reason that says what is wrong.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"
#include "check_run.h"

#define ARRAY_LEN(a)	(sizeof(a) / sizeof((a)[0]))

static char tmpdir[] = "/tmp/check_conf.XXXXXX";

/* write_conf - put text into a new file of the temporary folder */
static void
write_conf(char *path, size_t len, const char *text)
{
	static unsigned int serial;
	FILE   *fp;

	snprintf(path, len, "%s/%u-%ld.conf", tmpdir, serial++, (long) getpid());
	fp = fopen(path, "w");
	ck_assert_msg(fp != NULL, "cannot create %s", path);
	fputs(text, fp);
	ck_assert_int_eq(fclose(fp), 0);
}

/* 1025 characters of "a": a regex one longer than allowed */
#define A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define A1025 "a" A64 A64 A64 A64 A64 A64 A64 A64 A64 A64 A64 A64 A64 A64 A64 A64

/* try_load - parse text; the conf, or NULL with the error in err */
static struct qm_conf *
try_load(const char *text, char *path, size_t pathlen, char *err, size_t errlen)
{
	struct qm_conf *conf;

	write_conf(path, pathlen, text);
	conf = conf_load(path, err, errlen);
	unlink(path);
	return conf;
}

/* load - parse text that must be valid */
static struct qm_conf *
load(const char *text)
{
	char	path[256];
	char	err[1024] = "";
	struct qm_conf *conf = try_load(text, path, sizeof(path), err, sizeof(err));

	ck_assert_msg(conf != NULL, "conf_load failed: %s\n--- conf:\n%s", err, text);
	return conf;
}

/* cidr_match_text - is an address, in text, inside the list (by cidr_match_sockaddr)? */
static bool
cidr_match_text(const struct cidr_list *list, const char *addr)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};

	if (inet_pton(AF_INET, addr, &sin.sin_addr) == 1)
		return cidr_match_sockaddr(list, (struct sockaddr *) &sin);
	return inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1
	    && cidr_match_sockaddr(list, (struct sockaddr *) &sin6);
}

/* shipped_path - the shipped conf, from the source tree */
static const char *
shipped_path(void)
{
	static char path[4096];
	const char *top = getenv("QM_SRCDIR");

	snprintf(path, sizeof(path), "%s/conf/quota-milter.conf", top ? top : ".");
	return path;
}

START_TEST(shipped_conf_is_the_spec)
{
	static const struct {
		const char *name;
		long long monthly;
	} plans[] = {
		{"free", 0}, {"trial", 0}, {"basic", 10000}, {"standard", 50000},
		{"professional", 100000}, {"enterprise", QM_UNLIMITED},
	};
	static const char *const categories[] = {"crm", "marketing", "automation"};
	char	err[1024] = "";
	struct qm_conf *conf = conf_load(shipped_path(), err, sizeof(err));
	size_t	i;

	ck_assert_msg(conf != NULL, "%s (set QM_SRCDIR to the source tree)", err);
	ck_assert_str_eq(conf->path, shipped_path());
	ck_assert_str_eq(conf->socket, "unix:/run/quota-milter/quota-milter.sock");
	ck_assert_str_eq(conf->user, "quota-milter");
	ck_assert_int_eq(conf->mode, QM_MODE_ENFORCE);
	ck_assert_int_eq(conf->unit, QM_UNIT_RECIPIENTS);
	ck_assert_str_eq(conf->timezone, "UTC");
	ck_assert_int_eq(conf->keep_months, 13);
	ck_assert_int_eq(conf->on_redis_error, QM_ON_ERROR_TEMPFAIL);
	ck_assert_str_eq(conf->journal, "/var/lib/quota-milter/journal");
	ck_assert_uint_eq(conf->warn_count, 2);
	ck_assert_int_eq(conf->warn_percent[0], 80);
	ck_assert_int_eq(conf->warn_percent[1], 100);
	ck_assert_str_eq(conf->default_plan, "free");
	ck_assert_int_eq(conf->stats_interval, 10);
	ck_assert_str_eq(conf->hostname, "");

	ck_assert_str_eq(conf->redis.address, "127.0.0.1:6379");
	ck_assert_str_eq(conf->redis.password, "");
	ck_assert_int_eq(conf->redis.database, 0);
	ck_assert_int_eq(conf->redis.timeout_ms, 250);
	ck_assert_str_eq(conf->redis.prefix, "qm:");
	ck_assert_int_eq(conf->redis.pool_size, 8);
	ck_assert_uint_eq(conf->redis.sentinel_count, 0);
	ck_assert_str_eq(conf->redis.master, "");

	ck_assert_int_eq(conf->account.source, QM_SOURCE_HEADER);
	ck_assert_str_eq(conf->account.header, "X-Quota-Account");
	ck_assert(!conf->account.has_pattern);
	ck_assert(conf->account.strip_headers);
	ck_assert_uint_eq(conf->account.trusted.count, 2);
	ck_assert(cidr_match_text(&conf->account.trusted, "127.0.0.1"));
	ck_assert(cidr_match_text(&conf->account.trusted, "127.255.0.9"));
	ck_assert(cidr_match_text(&conf->account.trusted, "::1"));
	ck_assert(!cidr_match_text(&conf->account.trusted, "192.0.2.1"));

	ck_assert_uint_eq(conf->category_count, ARRAY_LEN(categories));
	for (i = 0; i < ARRAY_LEN(categories); i++) {
		const struct qm_category *cat = &conf->categories[i];

		ck_assert_str_eq(cat->name, categories[i]);
		ck_assert_str_eq(cat->header, "X-Quota-Category");
		ck_assert(cat->has_match && !cat->has_sasl && !cat->has_sender);
		ck_assert_uint_eq(cat->client.count, 0);
		ck_assert_ptr_null(cat->daemon);
	}
	ck_assert_int_eq(regexec(&conf->categories[2].match, "workflow", 0, NULL, 0), 0);
	ck_assert_int_ne(regexec(&conf->categories[0].match, "crm2", 0, NULL, 0), 0);

	ck_assert_uint_eq(conf->plan_count, ARRAY_LEN(plans));
	for (i = 0; i < ARRAY_LEN(plans); i++) {
		ck_assert_str_eq(conf->plans[i].name, plans[i].name);
		ck_assert_int_eq(conf->plans[i].monthly, plans[i].monthly);
		/* The shipped plans set no caps. */
		ck_assert_int_eq(conf->plans[i].daily, QM_UNLIMITED);
		ck_assert_int_eq(conf->plans[i].hourly, QM_UNLIMITED);
		ck_assert_ptr_eq(conf_plan(conf, plans[i].name), &conf->plans[i]);
	}
	ck_assert_ptr_null(conf_plan(conf, "Basic"));
	ck_assert_str_eq(conf->replies[QM_REPLY_EXHAUSTED].code, "550");
	conf_free(conf);
}
END_TEST

START_TEST(empty_file_needs_plan_free)
{
	char	path[256];
	char	want[512];
	char	err[1024] = "";

	/* default_plan "free" is the default, and an empty file has no plans. */
	ck_assert_ptr_null(try_load("", path, sizeof(path), err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: default_plan \"free\" names no plan", path);
	ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "got: %s", err);
}
END_TEST

START_TEST(defaults)
{
	struct qm_conf *conf = load("default_plan = \"\"\n");
	int	i;

	ck_assert_ptr_null(conf->default_plan);
	ck_assert_int_eq(conf->stats_interval, 10);
	ck_assert_str_eq(conf->hostname, "");
	ck_assert_uint_eq(conf->plan_count, 0);
	ck_assert_uint_eq(conf->category_count, 0);
	ck_assert_str_eq(conf->socket, "unix:/run/quota-milter/quota-milter.sock");
	ck_assert_str_eq(conf->user, "quota-milter");
	ck_assert_int_eq(conf->mode, QM_MODE_ENFORCE);
	ck_assert_int_eq(conf->unit, QM_UNIT_RECIPIENTS);
	ck_assert_str_eq(conf->timezone, "UTC");
	ck_assert_int_eq(conf->keep_months, 13);
	ck_assert_int_eq(conf->on_redis_error, QM_ON_ERROR_TEMPFAIL);
	ck_assert_str_eq(conf->journal, "/var/lib/quota-milter/journal");
	ck_assert_uint_eq(conf->warn_count, 2);
	ck_assert_int_eq(conf->warn_percent[0], 80);
	ck_assert_int_eq(conf->warn_percent[1], 100);
	ck_assert_str_eq(conf->redis.address, "127.0.0.1:6379");
	ck_assert_str_eq(conf->redis.password, "");
	ck_assert_int_eq(conf->redis.database, 0);
	ck_assert_int_eq(conf->redis.timeout_ms, 250);
	ck_assert_str_eq(conf->redis.prefix, "qm:");
	ck_assert_int_eq(conf->redis.pool_size, 8);
	ck_assert_uint_eq(conf->redis.sentinel_count, 0);
	ck_assert_str_eq(conf->redis.master, "");
	ck_assert_int_eq(conf->account.source, QM_SOURCE_HEADER);
	ck_assert_str_eq(conf->account.header, "X-Quota-Account");
	ck_assert(!conf->account.has_pattern);
	ck_assert(conf->account.strip_headers);
	ck_assert_uint_eq(conf->account.trusted.count, 2);
	ck_assert(cidr_match_text(&conf->account.trusted, "127.0.0.1"));
	ck_assert(cidr_match_text(&conf->account.trusted, "::1"));
	ck_assert_uint_eq(conf->account.login_count, 0);	/* no login may name an account */
	ck_assert(!conf->account.trust_local);		/* nor a local submission */
	for (i = 0; i < QM_REPLY_COUNT; i++) {
		ck_assert_msg(conf->replies[i].text != NULL && conf->replies[i].text[0] != 0,
			      "reply %s has no text", conf_reply_name(i));
		ck_assert_int_eq(conf->replies[i].code[0], conf->replies[i].xcode[0]);
	}
	ck_assert_str_eq(conf->replies[QM_REPLY_EXHAUSTED].code, "550");
	ck_assert_str_eq(conf->replies[QM_REPLY_EXHAUSTED].xcode, "5.7.1");
	ck_assert_str_eq(conf->replies[QM_REPLY_EXHAUSTED].text,
		"Monthly sending limit of $limit emails reached for account $account (plan $plan)");
	ck_assert_str_eq(conf->replies[QM_REPLY_UNKNOWN_PLAN].code, "451");
	ck_assert_str_eq(conf->replies[QM_REPLY_UNKNOWN_PLAN].xcode, "4.3.5");
	ck_assert_str_eq(conf->replies[QM_REPLY_RACE].xcode, "4.7.1");
	ck_assert_str_eq(conf->replies[QM_REPLY_UNAVAILABLE].code, "451");
	ck_assert_str_eq(conf->replies[QM_REPLY_UNAVAILABLE].xcode, "4.3.0");
	ck_assert_str_eq(conf->replies[QM_REPLY_UNAVAILABLE].text,
			 "Quota service temporarily unavailable");
	ck_assert_str_eq(conf->replies[QM_REPLY_NO_ACCOUNT].text,
			 "No sending account for $category mail: $reason");
	conf_free(conf);
}
END_TEST

START_TEST(every_option_set)
{
	struct qm_conf *conf = load(
		"socket = \"unix:/run/quota-milter/quota-milter.sock\"\n"
		"user = \"\"\n"
		"mode = monitor\n"
		"unit = \"messages\"\n"
		"timezone = \"America/Argentina/Buenos_Aires\"\n"
		"keep_months = 120\n"
		"on_redis_error = \"accept\"\n"
		"journal = \"/tmp/qm.journal\"\n"
		"warn_percent = { 100, 50, 1000, 80 }\n"
		"default_plan = \"gold\"\n"
		"stats_interval = 3600  hostname = \"mx-1.example_net\"\n"
		"redis {\n"
		"  address = \"[::1]:6380\"  password = \"s3cr$t\"  database = 1000\n"
		"  timeout_ms = 60000  prefix = \"tenant-a:qm:\"  pool_size = 1024\n"
		"  sentinels = { \"10.0.0.1:26379\", \"[2001:db8::2]:26379\", \"s3.example:26379\" }\n"
		"  master = \"mymaster\"\n"
		"}\n"
		"account { source = \"sasl\"  header = \"X-Tenant\"  pattern = '^[^@]+@(.+)$'\n"
		"  trusted_networks = {}  strip_headers = false\n"
		"  trusted_logins = { \"crm-relay\", '/^app-[0-9]+$/' }  trust_local_submissions = true }\n"
		"category api { sasl = \"^app-\"  sender = '@notify\\.example\\.com$'\n"
		"  client = { \"10.1.0.0/16\", \"2001:db8:1::/48\" }  daemon = \"submission\" }\n"
		"category tagged { header = \"X-Tag\" }\n"
		"plan gold { monthly = 9000000000  daily = 999999999999999  hourly = 0 }\n"
		"plan zero { monthly = 0  daily = -1 }\n");
	regmatch_t m[2];
	const struct qm_category *api, *tagged;

	ck_assert_str_eq(conf->socket, "unix:/run/quota-milter/quota-milter.sock");
	ck_assert_str_eq(conf->user, "");
	ck_assert_int_eq(conf->mode, QM_MODE_MONITOR);
	ck_assert_int_eq(conf->unit, QM_UNIT_MESSAGES);
	ck_assert_str_eq(conf->timezone, "America/Argentina/Buenos_Aires");
	ck_assert_int_eq(conf->keep_months, 120);
	ck_assert_int_eq(conf->on_redis_error, QM_ON_ERROR_ACCEPT);
	ck_assert_str_eq(conf->journal, "/tmp/qm.journal");

	/* warn_percent comes out sorted. */
	ck_assert_uint_eq(conf->warn_count, 4);
	ck_assert_int_eq(conf->warn_percent[0], 50);
	ck_assert_int_eq(conf->warn_percent[1], 80);
	ck_assert_int_eq(conf->warn_percent[2], 100);
	ck_assert_int_eq(conf->warn_percent[3], 1000);
	ck_assert_str_eq(conf->default_plan, "gold");
	ck_assert_int_eq(conf->plans[0].monthly, 9000000000LL);
	ck_assert_int_eq(conf->plans[0].daily, QM_COUNT_MAX);
	ck_assert_int_eq(conf->plans[0].hourly, 0);
	ck_assert_int_eq(conf->plans[1].daily, QM_UNLIMITED);
	ck_assert_int_eq(conf->plans[1].hourly, QM_UNLIMITED);
	ck_assert_int_eq(conf->stats_interval, 3600);
	ck_assert_str_eq(conf->hostname, "mx-1.example_net");

	ck_assert_str_eq(conf->redis.address, "[::1]:6380");
	ck_assert_str_eq(conf->redis.password, "s3cr$t");
	ck_assert_int_eq(conf->redis.database, 1000);
	ck_assert_int_eq(conf->redis.timeout_ms, 60000);
	ck_assert_str_eq(conf->redis.prefix, "tenant-a:qm:");
	ck_assert_int_eq(conf->redis.pool_size, 1024);
	ck_assert_uint_eq(conf->redis.sentinel_count, 3);
	ck_assert_str_eq(conf->redis.sentinels[1], "[2001:db8::2]:26379");
	ck_assert_str_eq(conf->redis.master, "mymaster");

	ck_assert_int_eq(conf->account.source, QM_SOURCE_SASL);
	ck_assert_str_eq(conf->account.header, "X-Tenant");
	ck_assert(!conf->account.strip_headers);
	ck_assert_uint_eq(conf->account.login_count, 2);
	ck_assert_str_eq(conf->account.logins[0].name, "crm-relay");
	ck_assert_ptr_null(conf->account.logins[1].name);
	ck_assert_int_eq(regexec(&conf->account.logins[1].rx, "app-12", 0, NULL, 0), 0);
	ck_assert_int_ne(regexec(&conf->account.logins[1].rx, "app-x", 0, NULL, 0), 0);
	ck_assert(conf->account.trust_local);
	ck_assert_uint_eq(conf->account.trusted.count, 0);
	ck_assert(conf->account.has_pattern);
	ck_assert_int_eq(regexec(&conf->account.pattern, "mailer@acme", 2, m, 0), 0);
	ck_assert_int_eq(m[1].rm_so, 7);
	ck_assert_int_eq(m[1].rm_eo, 11);

	/* Categories keep file order; single quotes keep the backslashes. */
	ck_assert_uint_eq(conf->category_count, 2);
	api = &conf->categories[0];
	tagged = &conf->categories[1];
	ck_assert_str_eq(api->name, "api");
	ck_assert_ptr_null(api->header);
	ck_assert(!api->has_match && api->has_sasl && api->has_sender);
	ck_assert_int_eq(regexec(&api->sasl, "app-12", 0, NULL, 0), 0);
	ck_assert_int_eq(regexec(&api->sender, "a@notify.example.com", 0, NULL, 0), 0);
	ck_assert_int_ne(regexec(&api->sender, "a@notifyXexample.com", 0, NULL, 0), 0);
	ck_assert_uint_eq(api->client.count, 2);
	ck_assert(cidr_match_text(&api->client, "10.1.200.3"));
	ck_assert(cidr_match_text(&api->client, "2001:db8:1:ff::1"));
	ck_assert(!cidr_match_text(&api->client, "10.2.0.1"));
	ck_assert_str_eq(api->daemon, "submission");
	ck_assert_str_eq(tagged->name, "tagged");
	ck_assert_str_eq(tagged->header, "X-Tag");
	ck_assert(!tagged->has_match);

	ck_assert_int_eq(conf_plan(conf, "gold")->monthly, 9000000000LL);
	ck_assert_int_eq(conf_plan(conf, "zero")->monthly, 0);
	ck_assert_ptr_null(conf_plan(conf, "free"));
	conf_free(conf);
}
END_TEST

START_TEST(addresses_and_sockets)
{
	static const char *const good[] = {
		"redis { address = \"redis.example.com:6379\" }",
		"redis { address = \"/run/redis/redis.sock\" }",
		"redis { address = \"unix:/run/redis/redis.sock\" }",
		"redis { address = \"[2001:db8::1]:6379\" }",
		"socket = \"inet:8899\"",
		"socket = \"inet6:8899@::1\"",
		"socket = \"local:/run/qm.sock\"",
		"socket = \"/run/qm.sock\"",
	};
	char	text[256];
	size_t	i;

	for (i = 0; i < ARRAY_LEN(good); i++) {
		snprintf(text, sizeof(text), "default_plan = \"\"\n%s\n", good[i]);
		conf_free(load(text));
	}
	/* One rule for which specs are unix sockets, and which listen everywhere. */
	ck_assert_str_eq(conf_socket_unix_path("unix:/run/qm.sock"), "/run/qm.sock");
	ck_assert_str_eq(conf_socket_unix_path("local:/run/qm.sock"), "/run/qm.sock");
	ck_assert_str_eq(conf_socket_unix_path("/run/qm.sock"), "/run/qm.sock");
	ck_assert_ptr_null(conf_socket_unix_path("inet:8899@127.0.0.1"));
	ck_assert_ptr_null(conf_socket_unix_path("inet6:8899"));
	ck_assert(conf_socket_any_host("inet:8899"));
	ck_assert(conf_socket_any_host("inet6:8899"));
	ck_assert(!conf_socket_any_host("inet:8899@127.0.0.1"));
	ck_assert(!conf_socket_any_host("unix:/run/a@b.sock"));
}
END_TEST

/* conf_redis_addr: the one parser of Redis addresses, for conf and pool */
START_TEST(redis_addr)
{
	static const struct {
		const char *text;
		bool	tcp_only;
		const char *host;	/* NULL: refused */
		int	port;
	} cases[] = {
		{"127.0.0.1:6379", true, "127.0.0.1", 6379},
		{"redis.example.com:1", true, "redis.example.com", 1},
		{"[2001:db8::1]:65535", true, "2001:db8::1", 65535},
		{"/run/redis.sock", false, "/run/redis.sock", 0},
		{"unix:/run/redis.sock", false, "/run/redis.sock", 0},
		{"/run/redis.sock", true, NULL, 0}, {"unix:/r.sock", true, NULL, 0},
		{"", false, NULL, 0}, {"localhost", false, NULL, 0}, {"localhost:", false, NULL, 0},
		{"localhost:0", false, NULL, 0}, {"localhost:65536", false, NULL, 0},
		{"localhost:12x", false, NULL, 0}, {"localhost:+80", false, NULL, 0},
		{"::1:6379", false, NULL, 0}, {"[::1]6379", false, NULL, 0},
		{"[::1]:", false, NULL, 0}, {"[nonsense]:6379", false, NULL, 0},
		{"a b:6379", false, NULL, 0}, {":6379", false, NULL, 0},
		{"unix:relative.sock", false, NULL, 0}, {"unix:", false, NULL, 0}, {"/", false, NULL, 0},
	};
	struct qm_redis_addr addr;
	char	longhost[QM_REDIS_HOST_MAX + 8];

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		bool	ok = conf_redis_addr(cases[i].text, cases[i].tcp_only, &addr);

		ck_assert_msg(ok == (cases[i].host != NULL), "\"%s\"", cases[i].text);
		if (ok) {
			ck_assert_str_eq(addr.host, cases[i].host);
			ck_assert_int_eq(addr.port, cases[i].port);
		}
	}
	memset(longhost, 'a', sizeof(longhost));
	strcpy(longhost + QM_REDIS_HOST_MAX - 1, ":1");
	ck_assert(conf_redis_addr(longhost, true, &addr));
	strcpy(longhost + QM_REDIS_HOST_MAX, ":1");
	ck_assert(!conf_redis_addr(longhost, true, &addr));
}
END_TEST

START_TEST(reply_overrides)
{
	struct qm_conf *conf = load(
		"default_plan = \"\"\n"
		"reply exhausted { text = \"Quota of $limit used up by $account; $$5 buys more\" }\n"
		"reply unavailable { code = \"450\" xcode = \"4.3.2\" }\n"
		"reply no_plan { code = \"554\" }\n"
		"reply race {}\n"
		"reply suspended { text = \"$accounts are suspended\" }\n");
	const struct qm_reply *r = conf->replies;

	ck_assert_str_eq(r[QM_REPLY_EXHAUSTED].code, "550");
	ck_assert_str_eq(r[QM_REPLY_EXHAUSTED].xcode, "5.7.1");
	ck_assert_str_eq(r[QM_REPLY_EXHAUSTED].text,
			 "Quota of $limit used up by $account; $$5 buys more");
	ck_assert_str_eq(r[QM_REPLY_UNAVAILABLE].code, "450");
	ck_assert_str_eq(r[QM_REPLY_UNAVAILABLE].xcode, "4.3.2");
	ck_assert_str_eq(r[QM_REPLY_UNAVAILABLE].text, "Quota service temporarily unavailable");
	ck_assert_str_eq(r[QM_REPLY_NO_PLAN].code, "554");
	ck_assert_str_eq(r[QM_REPLY_NO_PLAN].xcode, "5.7.1");
	ck_assert_str_eq(r[QM_REPLY_RACE].code, "451");
	ck_assert_str_eq(r[QM_REPLY_RACE].xcode, "4.7.1");
	/* Variables match by prefix, as policy_format_reply() expands them. */
	ck_assert_str_eq(r[QM_REPLY_SUSPENDED].text, "$accounts are suspended");
	ck_assert_str_eq(r[QM_REPLY_CONFLICT].text, "Message names more than one sending account");
	conf_free(conf);
}
END_TEST

/* conf_name_valid: plan and category names, for the conf, counters and journal */
START_TEST(names)
{
	char	name[QM_NAME_MAX + 2];

	ck_assert(conf_name_valid("crm_2-bulk"));
	ck_assert(!conf_name_valid(""));
	ck_assert(!conf_name_valid("a.b"));
	ck_assert(!conf_name_valid("a b"));
	memset(name, 'n', sizeof(name));
	name[QM_NAME_MAX] = 0;
	ck_assert(conf_name_valid(name));
	name[QM_NAME_MAX] = 'n';
	name[QM_NAME_MAX + 1] = 0;
	ck_assert(!conf_name_valid(name));
}
END_TEST

/* conf_reply_var: the one table of reply variables, for conf and policy */
START_TEST(reply_vars)
{
	static const char *const names[QM_VAR_COUNT] = {
		"account", "plan", "limit", "used", "category", "header", "reason", "window",
		"retry_after",
	};
	size_t	len;

	for (int i = 0; i < QM_VAR_COUNT; i++) {
		ck_assert_int_eq(conf_reply_var(names[i], &len), i);
		ck_assert_uint_eq(len, strlen(names[i]));
	}
	ck_assert_int_eq(conf_reply_var("accounts are", &len), QM_VAR_ACCOUNT);
	ck_assert_uint_eq(len, 7);
	ck_assert_int_eq(conf_reply_var("quota", &len), QM_VAR_COUNT);
	ck_assert_int_eq(conf_reply_var("", &len), QM_VAR_COUNT);
	ck_assert_int_eq(conf_reply_var("Account", &len), QM_VAR_COUNT);
}
END_TEST

START_TEST(reply_names)
{
	static const char *const names[QM_REPLY_COUNT] = {
		"exhausted", "no_mail", "suspended", "no_account", "bad_account",
		"untrusted", "conflict", "no_plan", "unknown_plan", "race", "unavailable",
		"hourly_cap", "daily_cap",
	};
	char	text[256];
	int	i;

	for (i = 0; i < QM_REPLY_COUNT; i++) {
		ck_assert_str_eq(conf_reply_name(i), names[i]);
		snprintf(text, sizeof(text), "default_plan = \"\"\nreply %s { text = \"x\" }\n",
			 names[i]);
		conf_free(load(text));
	}
	ck_assert_str_eq(conf_reply_name(QM_REPLY_COUNT), "unknown");
}
END_TEST

/*
 * Each bad conf, the line the error must name (0: none) and a piece of
 * the reason. Line 1 of most is default_plan = "" (D), so that only the
 * error under test fails.
 */
#define D	"default_plan = \"\"\n"

static const struct bad_case {
	const char *text;
	int	line;
	const char *reason;
} bad_cases[] = {
	/* top level */
	{D "unit = \"messages\"\nmode = \"bogus\"\n", 3, "bad mode \"bogus\": expected enforce or monitor"},
	{D "unit = \"letters\"\n", 2, "bad unit \"letters\""},
	{D "on_redis_error = \"ignore\"\n", 2, "bad on_redis_error \"ignore\""},
	{D "\nbogus = 1\n", 3, "no such option 'bogus'"},
	{D "Mode = \"enforce\"\n", 2, "no such option 'Mode'"},
	{D "keep_months = 0\n", 2, "keep_months = 0 is out of range (1 to 120)"},
	{D "keep_months = 121\n", 2, "out of range"},
	{D "stats_interval = -1\n", 2, "stats_interval = -1 is out of range (0 to 3600)"},
	{D "\nstats_interval = 3601\n", 3, "stats_interval = 3601 is out of range (0 to 3600)"},
	{D "hostname = \"mx 1\"\n", 2, "bad hostname \"mx 1\": 1 to 255 of A-Z a-z 0-9 . - _"},
	{D "hostname = \"mx{1}\"\n", 2, "bad hostname"},
	{D "hostname = \"qm:*\"\n", 2, "bad hostname"},
	{D "hostname = \"" A64 A64 A64 A64 "\"\n", 2, "bad hostname"},
	{D "keep_months = \"ten\"\n", 2, "invalid integer value for option 'keep_months'"},
	{D "warn_percent = { 80, 90, 80 }\n", 2, "warn_percent lists 80 twice"},
	{D "warn_percent += { 80 }\n", 2, "warn_percent lists 80 twice"},
	{D "warn_percent = { 0 }\n", 2, "warn_percent 0 is out of range"},
	{D "warn_percent = { 50,\n 1001 }\n", 3, "warn_percent 1001 is out of range"},
	{D "timezone = \"\"\n", 2, "bad timezone"},
	{D "timezone = \"../../etc/passwd\"\n", 2, "bad timezone"},
	{D "timezone = \"/etc/localtime\"\n", 2, "bad timezone"},
	{D "timezone = \"Europe/Paris \"\n", 2, "bad timezone"},
	{D "socket = \"inet:port@localhost\"\n", 2, "bad socket \"inet:port@localhost\""},
	{D "socket = \"inet:70000@localhost\"\n", 2, "bad socket"},
	{D "socket = \"inet:8899@\"\n", 2, "bad socket"},
	{D "socket = \"tcp:8899\"\n", 2, "bad socket"},
	{D "socket = \"unix:run/qm.sock\"\n", 2, "bad socket"},
	{D "socket = \"\"\n", 2, "bad socket"},
	{D "user = \"mail user\"\n", 2, "bad user"},
	{D "journal = \"journal\"\n", 2, "bad journal \"journal\""},
	{D "default_plan = \"no such\"\n", 2, "bad default_plan \"no such\""},
	{"plan basic { monthly = 1 }\ndefault_plan = \"gold\"\n", 2,
	 "default_plan \"gold\" names no plan"},
	{"plan basic { monthly = 1 }\n", 0, "default_plan \"free\" names no plan"},

	/* redis */
	{D "redis {\n  sentinels = { \"10.0.0.1:26379\" }\n}\n", 4, "sentinels need master"},
	{D "redis { master = \"mymaster\" }\n", 2, "master \"mymaster\" needs sentinels"},
	{D "redis {\n  sentinels = { \"10.0.0.1\" }\n  master = \"m\"\n}\n", 3,
	 "bad sentinel \"10.0.0.1\""},
	{D "redis { address = \"localhost\" }\n", 2, "bad address \"localhost\""},
	{D "redis { address = \"localhost:0\" }\n", 2, "bad address"},
	{D "redis { address = \"localhost:65536\" }\n", 2, "bad address"},
	{D "redis { address = \"::1:6379\" }\n", 2, "bad address"},
	{D "redis { address = \"[::1]\" }\n", 2, "bad address"},
	{D "redis { address = \"[nonsense]:6379\" }\n", 2, "bad address"},
	{D "redis { address = \"unix:relative.sock\" }\n", 2, "bad address"},
	{D "redis { address = \"\" }\n", 2, "bad address"},
	{D "redis {\n  timeout_ms = 0\n}\n", 3, "timeout_ms = 0 is out of range (1 to 60000)"},
	{D "redis { database = -1 }\n", 2, "database = -1 is out of range"},
	{D "redis { database = 1001 }\n", 2, "database = 1001 is out of range"},
	{D "redis { pool_size = 0 }\n", 2, "pool_size = 0 is out of range (1 to 1024)"},
	{D "redis { pool_size = 1025 }\n", 2, "pool_size = 1025 is out of range"},
	{D "redis { prefix = \"\" }\n", 2, "bad prefix"},
	{D "redis { prefix = \"qm{x}:\" }\n", 2, "bad prefix"},
	{D "redis { prefix = \"q m:\" }\n", 2, "bad prefix"},
	{D "redis { prefix = \"0123456789012345678901234567890123456789012345678901234567890123x\" }\n",
	 2, "bad prefix"},
	{D "redis {\n\n  colour = \"red\"\n}\n", 4, "no such option 'colour'"},

	/* account */
	{D "account { source = \"ldap\" }\n", 2, "bad source \"ldap\": expected header, sasl or sender-domain"},
	{D "account {\n  header = \"X Quota\"\n}\n", 3, "bad header \"X Quota\""},
	{D "account { header = \"X:Quota\" }\n", 2, "bad header"},
	{D "account { header = \"\" }\n", 2, "bad header \"\""},
	{D "account { pattern = \"^acct-[0-9]+$\" }\n", 2, "has 0 capture groups"},
	{D "account { pattern = \"^(a)-(b)$\" }\n", 2, "has 2 capture groups"},
	{D "account { pattern = \"(a\" }\n", 2, "bad regex in pattern \"(a\": "},
	{D "account { trusted_networks = { \"10.0.0.0/8\", \"10.0.0.0/33\" } }\n", 2,
	 "bad network in trusted_networks: bad prefix length in \"10.0.0.0/33\""},
	{D "account {\n  trusted_networks = { \"192.0.2.1/24\" }\n}\n", 3, "host bits"},
	{D "account { trusted_networks = { \"localhost\" } }\n", 2, "not an IPv4 address"},
	{D "account {\n  trusted_logins = { \"crm relay\" }\n}\n", 3,
	 "bad login \"crm relay\" in trusted_logins"},
	{D "account { trusted_logins = { \"\" } }\n", 2, "bad login \"\" in trusted_logins"},
	{D "account { trusted_logins = { \"ok\", '/app-(/' } }\n", 2, "bad regex in trusted_logins \"app-(\""},
	{D "account { trust_local_submissions = maybe }\n", 2, "trust_local_submissions"},
	{D "account { strip_headers = maybe }\n", 2, "invalid boolean value for option 'strip_headers'"},

	/* categories */
	{D "category x {\n  header = \"X-Cat\"\n  match = \"a(\"\n}\n", 4,
	 "bad regex in match \"a(\": Unmatched ( or \\("},
	{D "category x { sasl = \"[a\" }\n", 2, "bad regex in sasl"},
	{D "category x { sender = \"*a\" }\n", 2, "bad regex in sender"},
	/* glibc's regcomp would take seconds and gigabytes: refused before */
	{D "category x {\n  sender = \"((a{1,255}){1,255})\"\n}\n", 3,
	 "regex in sender \"((a{1,255}){1,255})\" too large: its repetition counts multiply to more than 2000, or one repetition follows another"},
	/* Stacked repetitions: tiny, yet exponential in glibc's regcomp (a fuzz find). */
	{D "category relay { sasl = \"^apt-[0-9]+$i++*+++++ does l: $re4.3.0\" }\n", 2, "too large"},
	{D "category x { sender = \"a*?\" }\n", 2, "one repetition follows another"},
	{D "category x { match = \"(x(a{1,50}|b)c){1,50}\" header = \"X-C\" }\n", 2, "too large"},
	{D "category x { sender = \"a{1,1000}+{1,1000}\" }\n", 2, "too large"},
	{D "category x { sender = \"(a{,100}){,100}\" }\n", 2, "too large"},	/* glibc's {,n} */
	/* stacked "+": regcomp doubles the item for each (libFuzzer found 60 of them) */
	{D "category x { sasl = \"r+++++++++++++++++++++++++++++++++++++++++++++++++++++++++++\" }\n", 2,
	 "too large"},
	{D "category x { sender = \"(ab*{1,100}c?){1,30}\" }\n", 2, "too large"},
	{D "account { pattern = \"^([a-z]{1,3000})$\" }\n", 2, "regex in pattern \"^([a-z]{1,3000})$\" too large"},
	{D "category x { sasl = \"" A1025 "\" }\n", 2,
	 "regex in sasl longer than 1024 characters"},
	{D "category total { header = \"X-Cat\" }\n", 2, "category \"total\": the name is reserved"},
	{D "category messages { header = \"X-Cat\" }\n", 2, "reserved"},
	{D "category refused { header = \"X-Cat\" }\n", 2, "reserved"},
	{D "category would_refuse { header = \"X-Cat\" }\n", 2, "reserved"},
	{D "category Total { header = \"X-Cat\" }\n", 2, "reserved"},
	{D "category \"a b\" { header = \"X-Cat\" }\n", 2, "bad category name \"a b\""},
	{D "category \"a.b\" { header = \"X-Cat\" }\n", 2, "bad category name"},
	{D "category \"\" { header = \"X-Cat\" }\n", 2, "bad category name \"\""},
	{D "category x0123456789012345678901234567890123456789012345678901234567890123"
	   " { header = \"X-Cat\" }\n", 2, "bad category name"},
	{D "category x {\n}\n", 3, "category \"x\": no matcher"},
	{D "category x { client = {} }\n", 2, "no matcher"},
	{D "category x { match = \"^crm$\" }\n", 2, "category \"x\": match needs header"},
	{D "category x { header = \"X-Cat\" }\ncategory x { header = \"X-Cat\" }\n", 3,
	 "found duplicate title 'x'"},
	{D "category x { client = { \"2001:db8::/129\" } }\n", 2,
	 "bad network in client: bad prefix length in \"2001:db8::/129\""},
	{D "category x { daemon = \"smtp d\" }\n", 2, "bad daemon"},
	{D "category x { header = \"X-Cat\" colour = \"red\" }\n", 2, "no such option 'colour'"},

	/* plans */
	{D "plan basic { monthly = 1 }\nplan basic { monthly = 2 }\n", 3,
	 "found duplicate title 'basic'"},
	{D "plan basic { monthly = -2 }\n", 2, "monthly = -2 is out of range (-1 for unlimited"},
	{D "plan basic { monthly = 1  daily = -2 }\n", 2, "daily = -2 is out of range (-1 for unlimited"},
	{D "plan basic {\n monthly = 1\n hourly = 1000000000000000 }\n", 4,
	 "hourly = 1000000000000000 is out of range (-1 for unlimited, or a count from 0 to 999999999999999)"},
	{D "plan basic { daily = 5 }\n", 2, "plan \"basic\": monthly is not set"},
	{D "plan basic { monthly = 1  weekly = 5 }\n", 2, "weekly"},
	{D "plan basic {\n\n}\n", 4, "plan \"basic\": monthly is not set"},
	{D "plan \"Basic Plus\" { monthly = 1 }\n", 2, "bad plan name \"Basic Plus\""},
	{D "plan basic { monthly = 1e3 }\n", 2, "invalid integer value for option 'monthly'"},
	{D "plan basic { monthly = 99999999999999999999 }\n", 2,
	 "integer value for option 'monthly' is out of range"},
	/* One more than quota.lua reads: every message would be unknown_plan. */
	{D "plan basic { monthly = 1 }\nplan huge {\n  monthly = 1000000000000000\n}\n", 4,
	 "monthly = 1000000000000000 is out of range (-1 for unlimited, or a count from 0 to 999999999999999)"},

	/* replies */
	{D "reply bogus { code = \"550\" }\n", 2, "unknown reply \"bogus\""},
	{D "reply exhausted { code = \"600\" }\n", 2, "bad code \"600\": expected 4xx or 5xx"},
	{D "reply exhausted { code = \"55\" }\n", 2, "bad code \"55\""},
	{D "reply exhausted { code = \"5500\" }\n", 2, "bad code"},
	{D "reply exhausted { code = \"250\" }\n", 2, "bad code"},
	{D "reply exhausted { xcode = \"5.7\" }\n", 2, "bad xcode \"5.7\""},
	{D "reply exhausted { xcode = \"5.7.1234\" }\n", 2, "bad xcode"},
	{D "reply exhausted { xcode = \"2.0.0\" }\n", 2, "bad xcode"},
	{D "reply exhausted { xcode = \"5.7.1 \" }\n", 2, "bad xcode"},
	{D "reply exhausted {\n  code = \"451\"\n}\n", 4,
	 "reply exhausted: xcode 5.7.1 (default) does not match code 451"},
	{D "reply race { code = \"550\" xcode = \"4.7.1\" }\n", 2,
	 "xcode 4.7.1 does not match code 550"},
	{D "reply exhausted { text = \"over $quota for $account\" }\n", 2,
	 "bad text: unknown variable $quota (known: $account $plan $limit $used $category"
	 " $header $reason $window $retry_after; $$ for a dollar)"},
	{D "reply exhausted { text = \"costs 5$\" }\n", 2, "bad text: lone $"},
	{D "reply exhausted { text = \"a\\x01b\" }\n", 2, "character 0x01 at offset 1"},
	{D "reply exhausted { text = \"a\\rb\" }\n", 2, "character 0x0d"},
	{D "reply exhausted { text = \"a\\nb\" }\n", 2, "character 0x0a"},
	{D "reply exhausted { text = \"caf\\351\" }\n", 2, "character 0xe9"},
	{D "reply exhausted { text = \"\" }\n", 2, "bad text: 1 to 400 characters"},
	{D "reply exhausted { text = \"x\" }\nreply exhausted { text = \"y\" }\n", 3,
	 "found duplicate title 'exhausted'"},

	/* syntax */
	{D "mode = \"enforce\n", 3, "premature end of file"},	/* a string may span lines */
	{D "reply exhausted { text = \"\\777\" }\n", 2, "invalid octal number"},
	{D "plan basic { monthly = 1 }\n}\n", 3, "unexpected closing brace"},
};

START_TEST(bad_conf)
{
	const struct bad_case *c = &bad_cases[_i];
	char	path[256];
	char	prefix[300];
	char	err[1024] = "";
	struct qm_conf *conf;

	conf = try_load(c->text, path, sizeof(path), err, sizeof(err));
	ck_assert_msg(conf == NULL, "case %d loaded:\n%s", _i, c->text);
	if (c->line > 0)
		snprintf(prefix, sizeof(prefix), "%s:%d: ", path, c->line);
	else
		snprintf(prefix, sizeof(prefix), "%s: ", path);
	ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0,
		      "case %d: want prefix \"%s\", got \"%s\"", _i, prefix, err);
	ck_assert_msg(strstr(err, c->reason) != NULL,
		      "case %d: want \"%s\" in \"%s\"", _i, c->reason, err);
	ck_assert_msg(strchr(err, '\n') == NULL, "case %d: error is not one line", _i);
}
END_TEST

/* Large but sane regexes load: sizes add up within a group, multiply across nesting */
START_TEST(regex_size_allowed)
{
	char	path[256];
	char	err[1024] = "";
	struct qm_conf *conf;

	conf = try_load(D "category x {\n"
			"  sender = '^([a-z0-9]{1,40}[.]){1,40}[a-z]{2,63}$'\n"
			"  sasl = '[]a-z[:digit:](){}]{1,500}(x|y){1,100}'\n"
			"  match = 'a{1000}b{900}'\n"
			"  header = \"X-C\"\n"
			"}\n", path, sizeof(path), err, sizeof(err));
	ck_assert_msg(conf != NULL, "%s", err);
	conf_free(conf);
}
END_TEST

/* The largest count quota.lua reads is a plan's largest monthly */
START_TEST(largest_monthly)
{
	struct qm_conf *conf = load(D "plan huge { monthly = 999999999999999 }\n");

	ck_assert_int_eq(conf_plan(conf, "huge")->monthly, QM_COUNT_MAX);
	ck_assert_int_eq(QM_COUNT_MAX, 999999999999999LL);
	conf_free(conf);
}
END_TEST

START_TEST(long_text)
{
	char	text[600];
	char	path[256];
	char	err[1024] = "";
	struct qm_conf *conf;
	int	n;

	/* 400 characters are fine, 401 are not. */
	n = snprintf(text, sizeof(text), D "reply exhausted { text = \"%0400d\" }\n", 0);
	ck_assert_int_lt(n, (int) sizeof(text));
	conf = load(text);
	ck_assert_uint_eq(strlen(conf->replies[QM_REPLY_EXHAUSTED].text), 400);
	conf_free(conf);
	snprintf(text, sizeof(text), D "reply exhausted { text = \"%0401d\" }\n", 0);
	ck_assert_ptr_null(try_load(text, path, sizeof(path), err, sizeof(err)));
	ck_assert_msg(strstr(err, ":2: bad text: 1 to 400 characters") != NULL, "got: %s", err);
}
END_TEST

START_TEST(file_errors)
{
	char	path[256];
	char	want[512];
	char	err[1024] = "";

	snprintf(path, sizeof(path), "%s/no-such.conf", tmpdir);
	ck_assert_ptr_null(conf_load(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	ck_assert_str_eq(err, want);

	ck_assert_ptr_null(conf_load(tmpdir, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: cannot open: not a regular file", tmpdir);
	ck_assert_str_eq(err, want);

	/* A short buffer gets a truncated, terminated message. */
	ck_assert_ptr_null(conf_load(path, err, 8));
	ck_assert_uint_eq(strlen(err), 7);
}
END_TEST

START_TEST(load_after_error)
{
	char	path[256];
	char	err[1024] = "";

	/* The lexer stops inside a string; the next load must start afresh. */
	ck_assert_ptr_null(try_load(D "reply exhausted { text = \"\\777 more\" }\n",
				    path, sizeof(path), err, sizeof(err)));
	ck_assert_ptr_null(try_load(D "mode = \"enforce\n", path, sizeof(path), err, sizeof(err)));
	conf_free(load(D "mode = \"monitor\"\nplan basic { monthly = 5 }\n"));
	conf_free(load(D "reply exhausted { text = \"still fine\" }\n"));
}
END_TEST

/* CIDR */

static const struct cidr_case {
	const char *text;
	bool	ok;
	int	family;
	int	prefix;
} cidr_cases[] = {
	{"192.0.2.0/24", true, AF_INET, 24},
	{"192.0.2.7", true, AF_INET, 32},
	{"0.0.0.0/0", true, AF_INET, 0},
	{"192.0.2.7/32", true, AF_INET, 32},
	{"2001:db8::/32", true, AF_INET6, 32},
	{"::1", true, AF_INET6, 128},
	{"::/0", true, AF_INET6, 0},
	{"2001:db8::1/128", true, AF_INET6, 128},
	{"::ffff:192.0.2.0/120", true, AF_INET, 24},	/* kept as IPv4 */
	{"192.0.2.0/33", false, 0, 0},
	{"2001:db8::/129", false, 0, 0},
	{"192.0.2.1/24", false, 0, 0},			/* host bits */
	{"2001:db8::1/64", false, 0, 0},
	{"10.0.0.0/", false, 0, 0},
	{"10.0.0.0/-1", false, 0, 0},
	{"10.0.0.0/8x", false, 0, 0},
	{"10.0.0.0/ 8", false, 0, 0},
	{"10.0.0.0/0008", false, 0, 0},
	{"10.0.0", false, 0, 0},
	{"1.2.3.4.5", false, 0, 0},
	{"256.0.0.0", false, 0, 0},
	{" 10.0.0.0/8", false, 0, 0},
	{"fe80::1%eth0", false, 0, 0},
	{"localhost", false, 0, 0},
	{"", false, 0, 0},
	{"/8", false, 0, 0},
	{"2001:db8:0000:0000:0000:0000:0000:0000:0000/32", false, 0, 0},
};

START_TEST(cidr_parse_table)
{
	const struct cidr_case *c = &cidr_cases[_i];
	struct cidr net;
	char	err[256] = "";
	bool	ok = cidr_parse(c->text, &net, err, sizeof(err));

	ck_assert_msg(ok == c->ok, "\"%s\": %s", c->text, ok ? "accepted" : err);
	if (ok) {
		ck_assert_int_eq(net.family, c->family);
		ck_assert_int_eq(net.prefix, c->prefix);
	} else {
		ck_assert_msg(err[0] != 0, "\"%s\": no reason", c->text);
	}
}
END_TEST

/* cidr_list_of - a list from networks that must parse */
static void
cidr_list_of(struct cidr_list *list, const char *const *nets, size_t count)
{
	struct cidr net;
	char	err[256];
	size_t	i;

	memset(list, 0, sizeof(*list));
	for (i = 0; i < count; i++) {
		ck_assert_msg(cidr_parse(nets[i], &net, err, sizeof(err)), "%s", err);
		cidr_list_add(list, &net);
	}
}

START_TEST(cidr_match)
{
	static const char *const nets[] = {
		"192.0.2.0/24", "10.128.0.0/9", "2001:db8:1::/48", "::ffff:198.51.100.0/120",
		"203.0.113.5",
	};
	static const struct {
		const char *addr;
		bool	in;
	} cases[] = {
		{"192.0.2.0", true}, {"192.0.2.255", true}, {"192.0.3.0", false},
		{"10.128.0.1", true}, {"10.255.255.255", true}, {"10.127.255.255", false},
		{"2001:db8:1:ffff::1", true}, {"2001:db8:2::1", false},
		{"::ffff:192.0.2.9", true},	/* mapped client, IPv4 network */
		{"198.51.100.77", true},	/* IPv4 client, mapped network */
		{"::ffff:198.51.100.77", true},
		{"203.0.113.5", true}, {"203.0.113.6", false},
		{"::192.0.2.9", false},		/* IPv4-compatible is not mapped */
		{"not an address", false}, {"", false},
	};
	struct cidr_list list;
	size_t	i;

	cidr_list_of(&list, nets, ARRAY_LEN(nets));
	ck_assert_uint_eq(list.count, ARRAY_LEN(nets));
	for (i = 0; i < ARRAY_LEN(cases); i++)
		ck_assert_msg(cidr_match_text(&list, cases[i].addr) == cases[i].in,
			      "%s: want %s", cases[i].addr, cases[i].in ? "in" : "out");
	cidr_list_free(&list);
	ck_assert_ptr_null(list.items);
	ck_assert_uint_eq(list.count, 0);
	ck_assert(!cidr_match_text(&list, "192.0.2.1"));
}
END_TEST

START_TEST(cidr_sockaddr)
{
	static const char *const nets[] = {"192.0.2.0/24", "2001:db8::/32", "0.0.0.0/0"};
	struct cidr_list list;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr_un sun;

	cidr_list_of(&list, nets, 2);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, "192.0.2.200", &sin.sin_addr), 1);
	ck_assert(cidr_match_sockaddr(&list, (struct sockaddr *) &sin));
	ck_assert_int_eq(inet_pton(AF_INET, "192.0.1.200", &sin.sin_addr), 1);
	ck_assert(!cidr_match_sockaddr(&list, (struct sockaddr *) &sin));

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	ck_assert_int_eq(inet_pton(AF_INET6, "2001:db8:ffff::1", &sin6.sin6_addr), 1);
	ck_assert(cidr_match_sockaddr(&list, (struct sockaddr *) &sin6));
	ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:192.0.2.1", &sin6.sin6_addr), 1);
	ck_assert(cidr_match_sockaddr(&list, (struct sockaddr *) &sin6));
	ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:192.0.3.1", &sin6.sin6_addr), 1);
	ck_assert(!cidr_match_sockaddr(&list, (struct sockaddr *) &sin6));
	ck_assert_int_eq(inet_pton(AF_INET6, "2001:db9::1", &sin6.sin6_addr), 1);
	ck_assert(!cidr_match_sockaddr(&list, (struct sockaddr *) &sin6));

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert(!cidr_match_sockaddr(&list, (struct sockaddr *) &sun));
	ck_assert(!cidr_match_sockaddr(&list, NULL));
	cidr_list_free(&list);

	/* 0.0.0.0/0 holds every IPv4 client, mapped ones too, and no IPv6 one. */
	cidr_list_of(&list, nets + 2, 1);
	ck_assert(cidr_match_sockaddr(&list, (struct sockaddr *) &sin));
	ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:8.8.8.8", &sin6.sin6_addr), 1);
	ck_assert(cidr_match_sockaddr(&list, (struct sockaddr *) &sin6));
	ck_assert_int_eq(inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr), 1);
	ck_assert(!cidr_match_sockaddr(&list, (struct sockaddr *) &sin6));
	cidr_list_free(&list);
}
END_TEST

int
main(void)
{
	Suite  *s = suite_create("conf");
	TCase  *tc = tcase_create("conf");
	TCase  *tcc = tcase_create("cidr");
	int	rc;

	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	tcase_add_test(tc, shipped_conf_is_the_spec);
	tcase_add_test(tc, empty_file_needs_plan_free);
	tcase_add_test(tc, defaults);
	tcase_add_test(tc, every_option_set);
	tcase_add_test(tc, addresses_and_sockets);
	tcase_add_test(tc, redis_addr);
	tcase_add_test(tc, reply_overrides);
	tcase_add_test(tc, names);
	tcase_add_test(tc, reply_vars);
	tcase_add_test(tc, reply_names);
	tcase_add_loop_test(tc, bad_conf, 0, (int) ARRAY_LEN(bad_cases));
	tcase_add_test(tc, regex_size_allowed);
	tcase_add_test(tc, largest_monthly);
	tcase_add_test(tc, long_text);
	tcase_add_test(tc, file_errors);
	tcase_add_test(tc, load_after_error);
	suite_add_tcase(s, tc);
	tcase_add_loop_test(tcc, cidr_parse_table, 0, (int) ARRAY_LEN(cidr_cases));
	tcase_add_test(tcc, cidr_match);
	tcase_add_test(tcc, cidr_sockaddr);
	suite_add_tcase(s, tcc);

	rc = check_run(s);
	if (rmdir(tmpdir) < 0)
		perror(tmpdir);
	return rc;
}
