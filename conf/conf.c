/*
 * conf.c - parse and check the quota-milter configuration
 *
 * Validators check each value as libconfuse parses it, so an error names
 * its line (a section's, its closing brace); libconfuse gives them no user
 * pointer, hence the static conf_ctx. libconfuse 3.3 counts lines one too
 * many after a C comment, and accepts an unterminated comment or section.
 */
#include <arpa/inet.h>
#include <confuse.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "conf.h"
#include "../counters/keys.h"
#include "../counters/month.h"

#define ARRAY_LEN(a)	(sizeof(a) / sizeof((a)[0]))
#define NAME_CHARS	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
#define USER_CHARS	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define TEXT_MAX	400		/* longest reply text template */
#define USER_MAX	32		/* longest user name */
#define LOGIN_MAX	256		/* longest trusted SASL login */
#define REASON_MAX	512		/* one error reason */

/* The load in progress: where errors go, and what validators remember. */
struct conf_ctx {
	const char *path;
	char   *err;
	size_t	errlen;
	bool	failed;			/* err holds the first error */
	int	default_plan_line;	/* 0: default_plan not in the file */
};

static struct conf_ctx *conf_ctx;	/* one load at a time, see conf.h */

static const char *const conf_reply_names[QM_REPLY_COUNT] = {
	[QM_REPLY_EXHAUSTED] = "exhausted",
	[QM_REPLY_NO_MAIL] = "no_mail",
	[QM_REPLY_SUSPENDED] = "suspended",
	[QM_REPLY_NO_ACCOUNT] = "no_account",
	[QM_REPLY_BAD_ACCOUNT] = "bad_account",
	[QM_REPLY_UNTRUSTED] = "untrusted",
	[QM_REPLY_CONFLICT] = "conflict",
	[QM_REPLY_NO_PLAN] = "no_plan",
	[QM_REPLY_UNKNOWN_PLAN] = "unknown_plan",
	[QM_REPLY_RACE] = "race",
	[QM_REPLY_UNAVAILABLE] = "unavailable",
	[QM_REPLY_HOURLY_CAP] = "hourly_cap",
	[QM_REPLY_DAILY_CAP] = "daily_cap",
};

static const struct conf_reply_default {
	const char *code;
	const char *xcode;
	const char *text;
} conf_reply_defaults[QM_REPLY_COUNT] = {
	[QM_REPLY_EXHAUSTED] = {"550", "5.7.1",
	"Monthly sending limit of $limit emails reached for account $account (plan $plan)"},
	[QM_REPLY_NO_MAIL] = {"550", "5.7.1",
	"Plan $plan of account $account does not include outgoing mail"},
	[QM_REPLY_SUSPENDED] = {"550", "5.7.1",
	"Sending is suspended for account $account"},
	[QM_REPLY_NO_ACCOUNT] = {"550", "5.7.1",
	"No sending account for $category mail: $reason"},
	[QM_REPLY_BAD_ACCOUNT] = {"550", "5.7.1",
	"Invalid sending account: $reason"},
	[QM_REPLY_UNTRUSTED] = {"550", "5.7.1",
	"Account header $header not accepted: $reason"},
	[QM_REPLY_CONFLICT] = {"550", "5.7.1",
	"Message names more than one sending account"},
	[QM_REPLY_NO_PLAN] = {"550", "5.7.1",
	"Account $account has no plan"},
	[QM_REPLY_UNKNOWN_PLAN] = {"451", "4.3.5",
	"Plan $plan of account $account is not configured"},
	[QM_REPLY_RACE] = {"451", "4.7.1",
	"Monthly sending limit of $limit emails reached for account $account meanwhile, try again later"},
	[QM_REPLY_UNAVAILABLE] = {"451", "4.3.0",
	"Quota service temporarily unavailable"},
	[QM_REPLY_HOURLY_CAP] = {"451", "4.7.1",
	"Hourly sending limit of $limit emails reached for account $account, try again after $retry_after"},
	[QM_REPLY_DAILY_CAP] = {"451", "4.7.1",
	"Daily sending limit of $limit emails reached for account $account, try again after $retry_after"},
};

/* Variables a reply text may use; policy_format_reply() expands them. */
static const char *const conf_reply_vars[QM_VAR_COUNT] = {
	[QM_VAR_ACCOUNT] = "account", [QM_VAR_PLAN] = "plan", [QM_VAR_LIMIT] = "limit",
	[QM_VAR_USED] = "used", [QM_VAR_CATEGORY] = "category", [QM_VAR_HEADER] = "header",
	[QM_VAR_REASON] = "reason", [QM_VAR_WINDOW] = "window",
	[QM_VAR_RETRY_AFTER] = "retry_after",
};

/* Options whose text value maps to an enum; the index is the enum value. */
static const struct conf_enum {
	const char *opt;
	const char *values[3];
	const char *expected;
} conf_enums[] = {
	{"mode", {"enforce", "monitor"}, "enforce or monitor"},
	{"unit", {"recipients", "messages"}, "recipients or messages"},
	{"on_redis_error", {"tempfail", "accept"}, "tempfail or accept"},
	{"source", {"header", "sasl", "sender-domain"}, "header, sasl or sender-domain"},
};

/* Integer options with bounds. */
static const struct conf_range {
	const char *opt;
	long	min;
	long	max;
} conf_ranges[] = {
	{"keep_months", 1, 120},
	{"database", 0, 1000},
	{"timeout_ms", 1, 60000},
	{"pool_size", 1, 1024},
	{"monthly", -1, QM_COUNT_MAX},
	{"daily", -1, QM_COUNT_MAX},
	{"hourly", -1, QM_COUNT_MAX},
	{"stats_interval", 0, 3600},
};

static int conf_parse_enum(cfg_t *, cfg_opt_t *, const char *, void *);

static cfg_opt_t conf_redis_opts[] = {
	CFG_STR("address", "127.0.0.1:6379", CFGF_NONE),
	CFG_STR("username", "", CFGF_NONE),
	CFG_STR("password", "", CFGF_NONE),
	CFG_INT("database", 0, CFGF_NONE),
	CFG_INT("timeout_ms", 250, CFGF_NONE),
	CFG_STR("prefix", "qm:", CFGF_NONE),
	CFG_INT("pool_size", 8, CFGF_NONE),
	CFG_STR_LIST("sentinels", NULL, CFGF_NONE),
	CFG_STR("master", "", CFGF_NONE),
	CFG_END()
};

static cfg_opt_t conf_account_opts[] = {
	CFG_INT_CB("source", QM_SOURCE_HEADER, CFGF_NONE, conf_parse_enum),
	CFG_STR("header", "X-Quota-Account", CFGF_NONE),
	CFG_STR("pattern", "", CFGF_NONE),
	CFG_STR_LIST("trusted_networks", "{\"127.0.0.0/8\", \"::1/128\"}", CFGF_NONE),
	CFG_STR_LIST("trusted_logins", NULL, CFGF_NONE),
	CFG_BOOL("trust_local_submissions", cfg_false, CFGF_NONE),
	CFG_BOOL("strip_headers", cfg_true, CFGF_NONE),
	CFG_END()
};

/* No list default here: it would run the lexer inside the running parse. */
static cfg_opt_t conf_category_opts[] = {
	CFG_STR("header", "", CFGF_NONE),
	CFG_STR("match", "", CFGF_NONE),
	CFG_STR("sasl", "", CFGF_NONE),
	CFG_STR("sender", "", CFGF_NONE),
	CFG_STR_LIST("client", NULL, CFGF_NONE),
	CFG_STR("daemon", "", CFGF_NONE),
	CFG_END()
};

static cfg_opt_t conf_plan_opts[] = {
	CFG_INT("monthly", 0, CFGF_NODEFAULT),
	CFG_INT("daily", QM_UNLIMITED, CFGF_NONE),
	CFG_INT("hourly", QM_UNLIMITED, CFGF_NONE),
	CFG_END()
};

/* Unset fields keep the built-in default of that reply. */
static cfg_opt_t conf_reply_opts[] = {
	CFG_STR("code", NULL, CFGF_NODEFAULT),
	CFG_STR("xcode", NULL, CFGF_NODEFAULT),
	CFG_STR("text", NULL, CFGF_NODEFAULT),
	CFG_END()
};

#define CONF_TITLED	(CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES)

static cfg_opt_t conf_opts[] = {
	CFG_STR("socket", "unix:/run/quota-milter/quota-milter.sock", CFGF_NONE),
	CFG_STR("user", "quota-milter", CFGF_NONE),
	CFG_INT_CB("mode", QM_MODE_ENFORCE, CFGF_NONE, conf_parse_enum),
	CFG_INT_CB("unit", QM_UNIT_RECIPIENTS, CFGF_NONE, conf_parse_enum),
	CFG_STR("timezone", "UTC", CFGF_NONE),
	CFG_INT("keep_months", 13, CFGF_NONE),
	CFG_INT_CB("on_redis_error", QM_ON_ERROR_TEMPFAIL, CFGF_NONE, conf_parse_enum),
	CFG_STR("journal", "/var/lib/quota-milter/journal", CFGF_NONE),
	CFG_INT_LIST("warn_percent", "{80, 100}", CFGF_NONE),
	CFG_STR("default_plan", "free", CFGF_NONE),
	CFG_INT("stats_interval", 10, CFGF_NONE),
	CFG_STR("hostname", "", CFGF_NONE),
	CFG_SEC("redis", conf_redis_opts, CFGF_NONE),
	CFG_SEC("account", conf_account_opts, CFGF_NONE),
	CFG_SEC("category", conf_category_opts, CONF_TITLED),
	CFG_SEC("plan", conf_plan_opts, CONF_TITLED),
	CFG_SEC("reply", conf_reply_opts, CONF_TITLED),
	CFG_END()
};

/* conf_die - out of memory while copying: nothing sensible is left to do */
static _Noreturn void
conf_die(void)
{
	fprintf(stderr, "quota-milter: conf_load: out of memory\n");
	abort();
}

/* conf_strdup - strdup that aborts on out of memory */
static char *
conf_strdup(const char *s)
{
	char   *copy = strdup(s);

	if (copy == NULL)
		conf_die();
	return copy;
}

/* conf_calloc - calloc of at least one element that aborts on out of memory */
static void *
conf_calloc(size_t count, size_t size)
{
	void   *p = calloc(count ? count : 1, size);

	if (p == NULL)
		conf_die();
	return p;
}

/* conf_put_error - keep the first error as "FILE:LINE: reason" or "FILE: reason" */
static void
conf_put_error(struct conf_ctx *ctx, int line, const char *reason)
{
	if (ctx->failed)
		return;
	if (line > 0)
		snprintf(ctx->err, ctx->errlen, "%s:%d: %s", ctx->path, line, reason);
	else
		snprintf(ctx->err, ctx->errlen, "%s: %s", ctx->path, reason);
	/* A quoted bad value may hold a newline or control bytes: one line. */
	for (char *cp = ctx->err; *cp; cp++)
		if ((unsigned char) *cp < 0x20 || *cp == 0x7f)
			*cp = '?';
	ctx->failed = true;
}

/*
 * conf_errfunc - libconfuse's error function: cfg_error() from libconfuse
 * itself and from the validators ends here. The file name is ours, not
 * cfg->filename, which libconfuse leaves NULL in the sections it creates
 * before parsing (redis, account); the line is kept per section and right.
 */
static void
conf_errfunc(cfg_t *cfg, const char *fmt, va_list ap)
{
	char	reason[REASON_MAX];

	vsnprintf(reason, sizeof(reason), fmt, ap);
	if (conf_ctx == NULL)
		fprintf(stderr, "quota-milter: %s\n", reason);
	else
		conf_put_error(conf_ctx, cfg != NULL ? cfg->line : 0, reason);
}

/* conf_fail - report an error found after parsing, with a line if known */
static void __attribute__((format(printf, 3, 4)))
conf_fail(struct conf_ctx *ctx, int line, const char *fmt, ...)
{
	char	reason[REASON_MAX];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	conf_put_error(ctx, line, reason);
}

/* conf_chars_ok - 1..max characters, all from the set */
static bool
conf_chars_ok(const char *s, const char *set, size_t max)
{
	size_t	len = strlen(s);

	return len >= 1 && len <= max && strspn(s, set) == len;
}

/* conf_graph_ok - non-empty, printable ASCII without space, not one of avoid */
static bool
conf_graph_ok(const char *s, const char *avoid)
{
	if (*s == 0)
		return false;
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e || strchr(avoid, *s) != NULL)
			return false;
	return true;
}

/* conf_port_ok - a decimal TCP port, 1..65535 */
static bool
conf_port_ok(const char *s)
{
	size_t	len = strlen(s);

	return len >= 1 && len <= 5 && strspn(s, "0123456789") == len
	    && atol(s) >= 1 && atol(s) <= 65535;
}

/* conf_unix_path_ok - an absolute path that fits in a sockaddr_un */
static bool
conf_unix_path_ok(const char *s)
{
	return s[0] == '/' && s[1] != 0 && strlen(s) < sizeof(((struct sockaddr_un *) 0)->sun_path);
}

/* conf_redis_addr - parse a Redis or Sentinel address */
bool
conf_redis_addr(const char *text, bool tcp_only, struct qm_redis_addr *addr)
{
	const char *path = strncmp(text, "unix:", 5) == 0 ? text + 5 : text;
	const char *host = text[0] == '[' ? text + 1 : text;
	const char *end = strchr(host, host == text ? ':' : ']');
	unsigned char in6[16];
	size_t	len;

	memset(addr, 0, sizeof(*addr));
	if (path != text || path[0] == '/') {
		if (tcp_only || !conf_unix_path_ok(path))
			return false;
		snprintf(addr->host, sizeof(addr->host), "%s", path);
		return true;
	}
	if (end == NULL || (len = (size_t) (end - host)) == 0 || len >= sizeof(addr->host)
	    || (host != text && *++end != ':'))
		return false;
	memcpy(addr->host, host, len);
	/* A name or IPv4 address: a host name as keys_host_valid() has it. */
	if ((host == text ? !keys_host_valid(addr->host) : inet_pton(AF_INET6, addr->host, in6) != 1)
	    || !conf_port_ok(end + 1))
		return false;
	addr->port = atoi(end + 1);
	return true;
}

/* conf_name_valid - a plan or category name */
bool
conf_name_valid(const char *s)
{
	return conf_chars_ok(s, NAME_CHARS, QM_NAME_MAX);
}

/* conf_reply_id - the reply of that conf name, or -1 */
static int
conf_reply_id(const char *name)
{
	int	i;

	for (i = 0; i < QM_REPLY_COUNT; i++)
		if (strcmp(name, conf_reply_names[i]) == 0)
			return i;
	return -1;
}

/* conf_parse_enum - value callback: map a word to its enum value */
static int
conf_parse_enum(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result)
{
	size_t	i;
	long	v;

	for (i = 0; i < ARRAY_LEN(conf_enums); i++) {
		if (strcmp(opt->name, conf_enums[i].opt) != 0)
			continue;
		for (v = 0; v < (long) ARRAY_LEN(conf_enums[i].values)
		     && conf_enums[i].values[v] != NULL; v++) {
			if (strcmp(value, conf_enums[i].values[v]) == 0) {
				*(long *) result = v;
				return 0;
			}
		}
		cfg_error(cfg, "bad %s \"%s\": expected %s", opt->name, value,
			  conf_enums[i].expected);
		return -1;
	}
	cfg_error(cfg, "internal error: %s is not an enum option", opt->name);
	return -1;
}

/* conf_check_range - validator: an integer within its bounds */
static int
conf_check_range(cfg_t *cfg, cfg_opt_t *opt)
{
	long	v = cfg_opt_getnint(opt, 0);
	size_t	i;

	for (i = 0; i < ARRAY_LEN(conf_ranges); i++) {
		const struct conf_range *r = &conf_ranges[i];

		if (strcmp(opt->name, r->opt) != 0)
			continue;
		if (v >= r->min && v <= r->max)
			return 0;
		if (r->max == QM_COUNT_MAX)
			cfg_error(cfg, "%s = %ld is out of range (-1 for unlimited, or a count "
				  "from 0 to %lld)", opt->name, v, QM_COUNT_MAX);
		else
			cfg_error(cfg, "%s = %ld is out of range (%ld to %ld)",
				  opt->name, v, r->min, r->max);
		return -1;
	}
	return 0;
}

/* conf_check_warn - validator: percentages 1..1000, each once */
static int
conf_check_warn(cfg_t *cfg, cfg_opt_t *opt)
{
	unsigned int n = cfg_opt_size(opt);
	unsigned int i, j;

	for (i = 0; i < n; i++) {
		long	v = cfg_opt_getnint(opt, i);

		if (v < 1 || v > 1000) {
			cfg_error(cfg, "warn_percent %ld is out of range (1 to 1000)", v);
			return -1;
		}
		for (j = 0; j < i; j++) {
			if (cfg_opt_getnint(opt, j) == v) {
				cfg_error(cfg, "warn_percent lists %ld twice", v);
				return -1;
			}
		}
	}
	return 0;
}

/* conf_socket_unix_path - the file of a unix socket spec, or NULL */
const char *
conf_socket_unix_path(const char *spec)
{
	if (strncmp(spec, "unix:", 5) == 0)
		return spec + 5;
	if (strncmp(spec, "local:", 6) == 0)
		return spec + 6;
	if (strncmp(spec, "inet:", 5) == 0 || strncmp(spec, "inet6:", 6) == 0)
		return NULL;
	return spec;
}

/* conf_socket_any_host - inet:PORT or inet6:PORT, without @HOST */
bool
conf_socket_any_host(const char *spec)
{
	return conf_socket_unix_path(spec) == NULL && strchr(spec, '@') == NULL;
}

/* conf_check_socket - validator: a socket spec, as libmilter milters write it */
static int
conf_check_socket(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);
	const char *path = conf_socket_unix_path(s);
	const char *at;
	bool	ok;

	if (path != NULL)
		ok = conf_unix_path_ok(path);
	else {
		char	port[8];
		const char *p = strchr(s, ':') + 1;
		size_t	len;

		at = strchr(p, '@');
		len = at ? (size_t) (at - p) : strlen(p);
		ok = len < sizeof(port) && (at == NULL || conf_graph_ok(at + 1, ""));
		if (ok) {
			memcpy(port, p, len);
			port[len] = 0;
			ok = conf_port_ok(port);
		}
	}
	if (!ok) {
		cfg_error(cfg, "bad socket \"%s\": expected inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH", s);
		return -1;
	}
	return 0;
}

/* conf_check_user - validator: "" or a plausible user name */
static int
conf_check_user(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (*s != 0 && !conf_chars_ok(s, USER_CHARS, USER_MAX)) {
		cfg_error(cfg, "bad user \"%s\": up to %d of A-Z a-z 0-9 . _ -", s, USER_MAX);
		return -1;
	}
	return 0;
}

/* conf_check_hostname - validator: "" or a host name fit for a Redis key (keys_host_valid()) */
static int
conf_check_hostname(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (*s != 0 && !keys_host_valid(s)) {
		cfg_error(cfg, "bad hostname \"%s\": 1 to %d of A-Z a-z 0-9 . - _", s, KEYS_HOST_MAX);
		return -1;
	}
	return 0;
}

/*
 * conf_check_timezone - validator: the syntax of a zone name. Whether the
 * zone exists is checked where months are computed.
 */
static int
conf_check_timezone(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (!month_zone_name_valid(s)) {
		cfg_error(cfg, "bad timezone \"%s\": expected a zone name such as UTC or Europe/Paris", s);
		return -1;
	}
	return 0;
}

/* conf_check_journal - validator: an absolute path */
static int
conf_check_journal(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (s[0] != '/' || s[1] == 0) {
		cfg_error(cfg, "bad journal \"%s\": expected an absolute file name", s);
		return -1;
	}
	return 0;
}

/* conf_check_default_plan - validator: "" or a name; remember the line */
static int
conf_check_default_plan(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (*s != 0 && !conf_name_valid(s)) {
		cfg_error(cfg, "bad default_plan \"%s\": a plan name is 1 to %d of A-Z a-z 0-9 _ -",
			  s, QM_NAME_MAX);
		return -1;
	}
	if (conf_ctx != NULL)
		conf_ctx->default_plan_line = cfg->line;
	return 0;
}

/* conf_check_address - validator: where Redis listens */
static int
conf_check_address(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);
	struct qm_redis_addr addr;

	if (!conf_redis_addr(s, false, &addr)) {
		cfg_error(cfg, "bad address \"%s\": expected HOST:PORT, [IPV6]:PORT or /PATH", s);
		return -1;
	}
	return 0;
}

/* conf_check_sentinels - validator: each Sentinel is "host:port" */
static int
conf_check_sentinels(cfg_t *cfg, cfg_opt_t *opt)
{
	unsigned int i;

	for (i = 0; i < cfg_opt_size(opt); i++) {
		const char *s = cfg_opt_getnstr(opt, i);
		struct qm_redis_addr addr;

		if (!conf_redis_addr(s, true, &addr)) {
			cfg_error(cfg, "bad sentinel \"%s\": expected HOST:PORT or [IPV6]:PORT", s);
			return -1;
		}
	}
	return 0;
}

/* conf_check_prefix - validator: a key prefix that cannot break hash tags */
static int
conf_check_prefix(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (*s == 0 || !keys_prefix_valid(s)) {
		cfg_error(cfg, "bad prefix \"%s\": 1 to %d printable characters, no space or braces",
			  s, KEYS_PREFIX_MAX);
		return -1;
	}
	return 0;
}

/* conf_check_name - validator: "" or a Sentinel master, ACL user or {daemon_name} */
static int
conf_check_name(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (*s != 0 && !conf_graph_ok(s, "")) {
		cfg_error(cfg, "bad %s \"%s\": printable characters without space", opt->name, s);
		return -1;
	}
	return 0;
}

/* conf_check_redis - section validator: Sentinel needs its master name */
static int
conf_check_redis(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t  *sec = cfg_opt_getnsec(opt, 0);
	const char *master = cfg_getstr(sec, "master");

	if (cfg_size(sec, "sentinels") > 0 && *master == 0) {
		cfg_error(cfg, "redis: sentinels need master (the name Sentinel knows the master by)");
		return -1;
	}
	if (cfg_size(sec, "sentinels") == 0 && *master != 0) {
		cfg_error(cfg, "redis: master \"%s\" needs sentinels", master);
		return -1;
	}
	return 0;
}

/*
 * conf_check_header - validator: "" (only for a category) or an RFC 5322
 * field name, printable ASCII without space or ':'.
 */
static int
conf_check_header(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (*s == 0 && strcmp(cfg_name(cfg), "category") == 0)
		return 0;
	if (!conf_graph_ok(s, ":")) {
		cfg_error(cfg, "bad header \"%s\": a header name is printable ASCII without space or ':'", s);
		return -1;
	}
	return 0;
}

#define REGEX_LEN_MAX	1024		/* longest regex in the conf */
#define REGEX_SIZE_MAX	2000		/* regex_size() allowed */

/*
 * repeat_max - the upper bound of an interval "{m}", "{m,}", "{m,n}", or
 * glibc's "{,n}", at re; 0 if none
 */
static unsigned long
repeat_max(const char *re, const char **end)
{
	unsigned long m = 0, n;
	const char *p = re + 1;

	if (*re != '{' || !(isdigit((unsigned char) *p)
			    || (*p == ',' && isdigit((unsigned char) p[1]))))
		return 0;
	while (isdigit((unsigned char) *p) && m < 1000000)
		m = m * 10 + (unsigned long) (*p++ - '0');
	n = m;
	if (*p == ',') {
		p++;
		if (isdigit((unsigned char) *p)) {
			n = 0;
			while (isdigit((unsigned char) *p) && n < 1000000)
				n = n * 10 + (unsigned long) (*p++ - '0');
		}
	}
	if (*p != '}')
		return 0;
	*end = p + 1;
	return n > m ? n : m;
}

/*
 * regex_size - about how many states a POSIX extended regex expands to:
 * each atom counts 1, an interval {m,n} multiplies what it applies to by
 * its bound, so nested intervals multiply ("((a{1,255}){1,255})" is
 * 65025), and a "+" doubles it (regcomp copies the item: "a++++" is 16).
 * A repetition right after another ("a+*", "a?+", "a*{2}": undefined in
 * POSIX) counts as too large: glibc's closure computation is exponential
 * in such chains, whatever their size. glibc's regcomp takes time and
 * memory in proportion, seconds and gigabytes for such a pattern: the
 * conf refuses it instead. Saturates.
 */
static unsigned long
regex_size(const char *re)
{
	unsigned long stack[64];
	unsigned long last = 0;		/* size of the atom or group just read */
	const char *p = re;
	const char *end;
	size_t	depth = 0;
	unsigned long n;
	bool	repeated = false;	/* the last token was a repetition */

	stack[0] = 0;
	while (*p) {
		bool	rep = *p == '+' || *p == '*' || *p == '?'
		    || (*p == '{' && last > 0 && repeat_max(p, &end) > 0);

		if (rep && repeated)
			return 100000000UL;
		repeated = rep;
		if (*p == '{' && last > 0 && (n = repeat_max(p, &end)) > 0) {
			/* Replace the last item's size by its size times the bound. */
			stack[depth] -= last;
			last = last > 100000000UL / n ? 100000000UL : last * n;
			stack[depth] += last;
			p = end;
			continue;
		}
		switch (*p) {
		case '(':
			if (depth + 1 >= sizeof(stack) / sizeof(stack[0]))
				return 100000000UL;
			stack[++depth] = 0;
			last = 0;
			p++;
			continue;
		case ')':
			if (depth > 0) {
				last = stack[depth--];
				stack[depth] += last;
			}
			p++;
			continue;
		case '[':
			/* A bracket expression is one atom: "]" first is literal, [:x:] inside. */
			p++;
			if (*p == '^')
				p++;
			if (*p == ']')
				p++;
			while (*p && *p != ']') {
				if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
					const char *close = strstr(p + 2, (char[]) {p[1], ']', 0});

					p = close != NULL ? close + 2 : p + strlen(p);
				} else {
					p++;
				}
			}
			if (*p)
				p++;
			break;
		case '\\':
			p += p[1] ? 2 : 1;
			break;
		case '+':
			/* regcomp makes "x+" of "xx*": stacked, each doubles. */
			stack[depth] -= last;
			last = last > 50000000UL ? 100000000UL : last * 2;
			stack[depth] += last;
			p++;
			continue;
		case '*':
		case '?':
			/* The item stays what an interval after it applies to. */
			p++;
			continue;
		case '|':
		case '^':
		case '$':
			p++;
			last = 0;
			continue;
		default:
			p++;
			break;
		}
		last = 1;
		if (stack[depth] < 100000000UL)
			stack[depth]++;
	}
	while (depth > 0) {
		stack[depth - 1] += stack[depth];
		depth--;
	}
	return stack[0];
}

/*
 * conf_regex_ok - a regular expression that compiles (POSIX extended) and
 * is not too large for regcomp (regex_size()); its capture groups in
 * *groups. Otherwise the error is reported against opt.
 */
static bool
conf_regex_ok(cfg_t *cfg, cfg_opt_t *opt, const char *re, size_t *groups)
{
	char	why[256];
	regex_t	rx;
	int	rc;

	if (strlen(re) > REGEX_LEN_MAX) {
		cfg_error(cfg, "regex in %s longer than %d characters", opt->name, REGEX_LEN_MAX);
		return false;
	}
	if (regex_size(re) > REGEX_SIZE_MAX) {
		cfg_error(cfg, "regex in %s \"%s\" too large: its repetition counts multiply "
			  "to more than %d, or one repetition follows another", opt->name, re,
			  REGEX_SIZE_MAX);
		return false;
	}
	if ((rc = regcomp(&rx, re, REG_EXTENDED)) != 0) {
		regerror(rc, &rx, why, sizeof(why));
		cfg_error(cfg, "bad regex in %s \"%s\": %s", opt->name, re, why);
		return false;
	}
	*groups = rx.re_nsub;
	regfree(&rx);
	return true;
}

/*
 * conf_check_regex - validator: "" or a regular expression (conf_regex_ok()).
 * The account pattern needs exactly one capture group.
 */
static int
conf_check_regex(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *re = cfg_opt_getnstr(opt, 0);
	bool	pattern = strcmp(opt->name, "pattern") == 0;
	size_t	groups;

	if (*re == 0)
		return 0;
	if (!conf_regex_ok(cfg, opt, re, &groups))
		return -1;
	if (pattern && groups != 1) {
		cfg_error(cfg, "pattern \"%s\" has %zu capture groups: it needs exactly one, around the account",
			  re, groups);
		return -1;
	}
	return 0;
}

/*
 * conf_login_regex - the regex of a trusted_logins entry written /RE/, into
 * buf (REGEX_LEN_MAX + 1 bytes); NULL for an exact login
 */
static const char *
conf_login_regex(const char *entry, char *buf)
{
	size_t	len = strlen(entry);

	if (len < 2 || entry[0] != '/' || entry[len - 1] != '/' || len - 2 > REGEX_LEN_MAX)
		return NULL;
	memcpy(buf, entry + 1, len - 2);
	buf[len - 2] = 0;
	return buf;
}

/*
 * conf_check_logins - validator: each trusted_logins entry is a login
 * (printable, no space, at most LOGIN_MAX) or a /regex/ (conf_regex_ok())
 */
static int
conf_check_logins(cfg_t *cfg, cfg_opt_t *opt)
{
	char	buf[REGEX_LEN_MAX + 1];
	size_t	groups;

	for (unsigned int i = 0; i < cfg_opt_size(opt); i++) {
		const char *s = cfg_opt_getnstr(opt, i);
		const char *re = conf_login_regex(s, buf);

		if (re != NULL ? !conf_regex_ok(cfg, opt, re, &groups)
		    : (*s == 0 || strlen(s) > LOGIN_MAX || !conf_graph_ok(s, ""))) {
			if (re == NULL)
				cfg_error(cfg, "bad login \"%s\" in %s: up to %d printable characters "
					  "without space, or /regex/", s, opt->name, LOGIN_MAX);
			return -1;
		}
	}
	return 0;
}

/* conf_check_cidrs - validator: every entry is a network */
static int
conf_check_cidrs(cfg_t *cfg, cfg_opt_t *opt)
{
	char	why[256];
	struct cidr net;
	unsigned int i;

	for (i = 0; i < cfg_opt_size(opt); i++) {
		if (!cidr_parse(cfg_opt_getnstr(opt, i), &net, why, sizeof(why))) {
			cfg_error(cfg, "bad network in %s: %s", opt->name, why);
			return -1;
		}
	}
	return 0;
}

/* conf_last_section - the section that just closed */
static cfg_t *
conf_last_section(cfg_opt_t *opt)
{
	return cfg_opt_getnsec(opt, cfg_opt_size(opt) - 1);
}

/* conf_check_title - a plan or category name, reported against its section */
static bool
conf_check_title(cfg_t *cfg, const char *kind, const char *name)
{
	if (!conf_name_valid(name)) {
		cfg_error(cfg, "bad %s name \"%s\": 1 to %d of A-Z a-z 0-9 _ -", kind, name, QM_NAME_MAX);
		return false;
	}
	return true;
}

/* conf_check_category - section validator: name and matchers */
static int
conf_check_category(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t  *sec = conf_last_section(opt);
	const char *name = cfg_title(sec);
	bool	header = *cfg_getstr(sec, "header") != 0;
	bool	match = *cfg_getstr(sec, "match") != 0;

	if (!conf_check_title(cfg, "category", name))
		return -1;
	if (keys_reserved_field(name)) {
		cfg_error(cfg, "category \"%s\": the name is reserved for a usage field", name);
		return -1;
	}
	if (match && !header) {
		cfg_error(cfg, "category \"%s\": match needs header (the header it applies to)", name);
		return -1;
	}
	if (!header && *cfg_getstr(sec, "sasl") == 0 && *cfg_getstr(sec, "sender") == 0
	    && cfg_size(sec, "client") == 0 && *cfg_getstr(sec, "daemon") == 0) {
		cfg_error(cfg, "category \"%s\": no matcher (header, sasl, sender, client or daemon)", name);
		return -1;
	}
	return 0;
}

/* conf_check_plan - section validator: name and monthly */
static int
conf_check_plan(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t  *sec = conf_last_section(opt);
	const char *name = cfg_title(sec);

	if (!conf_check_title(cfg, "plan", name))
		return -1;
	if (cfg_size(sec, "monthly") == 0) {
		cfg_error(cfg, "plan \"%s\": monthly is not set (a count, or -1 for unlimited)", name);
		return -1;
	}
	return 0;
}

/* conf_check_code - validator: a 4xx or 5xx SMTP reply code */
static int
conf_check_code(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);

	if (strlen(s) != 3 || strspn(s, "0123456789") != 3 || (s[0] != '4' && s[0] != '5')) {
		cfg_error(cfg, "bad code \"%s\": expected 4xx or 5xx", s);
		return -1;
	}
	return 0;
}

/* conf_check_xcode - validator: an enhanced status code, class.subject.detail */
static int
conf_check_xcode(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);
	const char *p = s;
	size_t	n;
	int	part;

	if (*p != '4' && *p != '5')
		goto bad;
	p++;
	for (part = 0; part < 2; part++) {
		if (*p++ != '.')
			goto bad;
		n = strspn(p, "0123456789");
		if (n < 1 || n > 3)
			goto bad;
		p += n;
	}
	if (*p == 0)
		return 0;
bad:
	cfg_error(cfg, "bad xcode \"%s\": expected 4.N.N or 5.N.N", s);
	return -1;
}

/* conf_reply_var - the variable whose name starts p, or QM_VAR_COUNT */
enum qm_reply_var
conf_reply_var(const char *p, size_t *len)
{
	int	i;

	for (i = 0; i < QM_VAR_COUNT; i++)
		if (strncmp(p, conf_reply_vars[i], *len = strlen(conf_reply_vars[i])) == 0)
			break;
	return (enum qm_reply_var) i;
}

/*
 * conf_check_text - validator: a reply template of 1..TEXT_MAX printable
 * ASCII characters whose every '$' is "$$" or starts a known variable.
 */
static int
conf_check_text(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *s = cfg_opt_getnstr(opt, 0);
	const char *p;
	char	known[128] = "";
	size_t	i;

	if (*s == 0 || strlen(s) > TEXT_MAX) {
		cfg_error(cfg, "bad text: 1 to %d characters", TEXT_MAX);
		return -1;
	}
	for (p = s; *p; p++) {
		if (*p < 0x20 || *p > 0x7e) {
			cfg_error(cfg, "bad text: character 0x%02x at offset %zu is not printable ASCII",
				  (unsigned char) *p, (size_t) (p - s));
			return -1;
		}
	}
	for (p = s; (p = strchr(p, '$')) != NULL; p++) {
		if (*++p == '$' || conf_reply_var(p, &i) != QM_VAR_COUNT)
			continue;
		if (strspn(p, NAME_CHARS) == 0) {
			cfg_error(cfg, "bad text: lone $ (write $$ for a dollar sign)");
			return -1;
		}
		for (i = 0; i < QM_VAR_COUNT; i++)
			snprintf(known + strlen(known), sizeof(known) - strlen(known), " $%s",
				 conf_reply_vars[i]);
		cfg_error(cfg, "bad text: unknown variable $%.*s (known:%s; $$ for a dollar)",
			  (int) strspn(p, NAME_CHARS), p, known);
		return -1;
	}
	return 0;
}

/* conf_check_reply - section validator: a known reply, consistent codes */
static int
conf_check_reply(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t  *sec = conf_last_section(opt);
	const char *name = cfg_title(sec);
	const char *code, *xcode;
	int	id;

	if ((id = conf_reply_id(name)) < 0) {
		cfg_error(cfg, "unknown reply \"%s\" (exhausted, no_mail, suspended, no_account,"
			  " bad_account, untrusted, conflict, no_plan, unknown_plan, race,"
			  " unavailable)", name);
		return -1;
	}
	code = cfg_size(sec, "code") ? cfg_getstr(sec, "code") : conf_reply_defaults[id].code;
	xcode = cfg_size(sec, "xcode") ? cfg_getstr(sec, "xcode") : conf_reply_defaults[id].xcode;
	if (code[0] != xcode[0]) {
		cfg_error(cfg, "reply %s: xcode %s%s does not match code %s%s (same first digit)",
			  name, xcode, cfg_size(sec, "xcode") ? "" : " (default)",
			  code, cfg_size(sec, "code") ? "" : " (default)");
		return -1;
	}
	return 0;
}

/* Which validator checks which option ("section|option" inside sections). */
static const struct conf_validator {
	const char *opt;
	cfg_validate_callback_t func;
} conf_validators[] = {
	{"socket", conf_check_socket},
	{"user", conf_check_user},
	{"timezone", conf_check_timezone},
	{"keep_months", conf_check_range},
	{"journal", conf_check_journal},
	{"warn_percent", conf_check_warn},
	{"default_plan", conf_check_default_plan},
	{"stats_interval", conf_check_range},
	{"hostname", conf_check_hostname},
	{"redis", conf_check_redis},
	{"redis|address", conf_check_address},
	{"redis|database", conf_check_range},
	{"redis|timeout_ms", conf_check_range},
	{"redis|prefix", conf_check_prefix},
	{"redis|pool_size", conf_check_range},
	{"redis|sentinels", conf_check_sentinels},
	{"redis|master", conf_check_name},
	{"redis|username", conf_check_name},
	{"account|header", conf_check_header},
	{"account|pattern", conf_check_regex},
	{"account|trusted_networks", conf_check_cidrs},
	{"account|trusted_logins", conf_check_logins},
	{"category", conf_check_category},
	{"category|header", conf_check_header},
	{"category|match", conf_check_regex},
	{"category|sasl", conf_check_regex},
	{"category|sender", conf_check_regex},
	{"category|client", conf_check_cidrs},
	{"category|daemon", conf_check_name},
	{"plan", conf_check_plan},
	{"plan|monthly", conf_check_range},
	{"plan|daily", conf_check_range},
	{"plan|hourly", conf_check_range},
	{"reply", conf_check_reply},
	{"reply|code", conf_check_code},
	{"reply|xcode", conf_check_xcode},
	{"reply|text", conf_check_text},
};

/* conf_regcomp - compile a checked regex into rx; false with err if not */
static bool
conf_regcomp(struct conf_ctx *ctx, const char *what, const char *re, int flags,
	     regex_t *rx, bool *has)
{
	char	why[256];
	int	rc;

	if (*re == 0)
		return true;
	if ((rc = regcomp(rx, re, flags)) != 0) {
		regerror(rc, rx, why, sizeof(why));
		conf_fail(ctx, 0, "bad regex in %s \"%s\": %s", what, re, why);
		return false;
	}
	*has = true;
	return true;
}

/* conf_cidrs - copy a checked list of networks; false with err if bad */
static bool
conf_cidrs(struct conf_ctx *ctx, cfg_t *sec, const char *opt, struct cidr_list *list)
{
	char	why[256];
	struct cidr net;
	unsigned int i;

	for (i = 0; i < cfg_size(sec, opt); i++) {
		if (!cidr_parse(cfg_getnstr(sec, opt, i), &net, why, sizeof(why))) {
			conf_fail(ctx, 0, "bad network in %s: %s", opt, why);
			return false;
		}
		cidr_list_add(list, &net);
	}
	return true;
}

/* conf_int_cmp - qsort comparison of ints */
static int
conf_int_cmp(const void *a, const void *b)
{
	int	x = *(const int *) a;
	int	y = *(const int *) b;

	return (x > y) - (x < y);
}

/* conf_copy_top - the top-level options and the redis section */
static void
conf_copy_top(struct qm_conf *conf, cfg_t *cfg)
{
	cfg_t  *redis = cfg_getsec(cfg, "redis");
	unsigned int i;

	conf->socket = conf_strdup(cfg_getstr(cfg, "socket"));
	conf->user = conf_strdup(cfg_getstr(cfg, "user"));
	conf->mode = (enum qm_mode) cfg_getint(cfg, "mode");
	conf->unit = (enum qm_unit) cfg_getint(cfg, "unit");
	conf->timezone = conf_strdup(cfg_getstr(cfg, "timezone"));
	conf->keep_months = (int) cfg_getint(cfg, "keep_months");
	conf->on_redis_error = (enum qm_on_error) cfg_getint(cfg, "on_redis_error");
	conf->journal = conf_strdup(cfg_getstr(cfg, "journal"));
	conf->stats_interval = (int) cfg_getint(cfg, "stats_interval");
	conf->hostname = conf_strdup(cfg_getstr(cfg, "hostname"));

	conf->warn_count = cfg_size(cfg, "warn_percent");
	conf->warn_percent = conf_calloc(conf->warn_count, sizeof(int));
	for (i = 0; i < conf->warn_count; i++)
		conf->warn_percent[i] = (int) cfg_getnint(cfg, "warn_percent", i);
	qsort(conf->warn_percent, conf->warn_count, sizeof(int), conf_int_cmp);

	if (*cfg_getstr(cfg, "default_plan") != 0)
		conf->default_plan = conf_strdup(cfg_getstr(cfg, "default_plan"));

	conf->redis.address = conf_strdup(cfg_getstr(redis, "address"));
	conf->redis.username = conf_strdup(cfg_getstr(redis, "username"));
	conf->redis.password = conf_strdup(cfg_getstr(redis, "password"));
	conf->redis.database = (int) cfg_getint(redis, "database");
	conf->redis.timeout_ms = (int) cfg_getint(redis, "timeout_ms");
	conf->redis.prefix = conf_strdup(cfg_getstr(redis, "prefix"));
	conf->redis.pool_size = (int) cfg_getint(redis, "pool_size");
	conf->redis.sentinel_count = cfg_size(redis, "sentinels");
	conf->redis.sentinels = conf_calloc(conf->redis.sentinel_count, sizeof(char *));
	for (i = 0; i < conf->redis.sentinel_count; i++)
		conf->redis.sentinels[i] = conf_strdup(cfg_getnstr(redis, "sentinels", i));
	conf->redis.master = conf_strdup(cfg_getstr(redis, "master"));
}

/* conf_copy_account - the account section */
static bool
conf_copy_account(struct conf_ctx *ctx, struct qm_conf *conf, cfg_t *cfg)
{
	cfg_t  *sec = cfg_getsec(cfg, "account");
	struct qm_account_conf *acc = &conf->account;

	acc->source = (enum qm_source) cfg_getint(sec, "source");
	acc->header = conf_strdup(cfg_getstr(sec, "header"));
	acc->strip_headers = cfg_getbool(sec, "strip_headers") == cfg_true;
	acc->trust_local = cfg_getbool(sec, "trust_local_submissions") == cfg_true;
	acc->logins = conf_calloc(cfg_size(sec, "trusted_logins"), sizeof(*acc->logins));
	for (unsigned int i = 0; i < cfg_size(sec, "trusted_logins"); i++) {
		const char *entry = cfg_getnstr(sec, "trusted_logins", i);
		struct qm_login *l = &acc->logins[acc->login_count];
		char	buf[REGEX_LEN_MAX + 1];
		const char *re = conf_login_regex(entry, buf);
		bool	has = false;

		if (re == NULL)
			l->name = conf_strdup(entry);
		else if (!conf_regcomp(ctx, "trusted_logins", re, REG_EXTENDED | REG_NOSUB, &l->rx, &has))
			return false;
		acc->login_count++;
	}
	return conf_regcomp(ctx, "pattern", cfg_getstr(sec, "pattern"), REG_EXTENDED,
			    &acc->pattern, &acc->has_pattern)
	    && conf_cidrs(ctx, sec, "trusted_networks", &acc->trusted);
}

/* conf_copy_categories - the category sections, in file order */
static bool
conf_copy_categories(struct conf_ctx *ctx, struct qm_conf *conf, cfg_t *cfg)
{
	const int flags = REG_EXTENDED | REG_NOSUB;
	size_t	i;

	conf->category_count = cfg_size(cfg, "category");
	conf->categories = conf_calloc(conf->category_count, sizeof(struct qm_category));
	for (i = 0; i < conf->category_count; i++) {
		cfg_t  *sec = cfg_getnsec(cfg, "category", (unsigned int) i);
		struct qm_category *cat = &conf->categories[i];

		cat->name = conf_strdup(cfg_title(sec));
		if (*cfg_getstr(sec, "header") != 0)
			cat->header = conf_strdup(cfg_getstr(sec, "header"));
		if (*cfg_getstr(sec, "daemon") != 0)
			cat->daemon = conf_strdup(cfg_getstr(sec, "daemon"));
		if (!conf_regcomp(ctx, "match", cfg_getstr(sec, "match"), flags,
				  &cat->match, &cat->has_match)
		    || !conf_regcomp(ctx, "sasl", cfg_getstr(sec, "sasl"), flags,
				     &cat->sasl, &cat->has_sasl)
		    || !conf_regcomp(ctx, "sender", cfg_getstr(sec, "sender"), flags,
				     &cat->sender, &cat->has_sender)
		    || !conf_cidrs(ctx, sec, "client", &cat->client))
			return false;
	}
	return true;
}

/* conf_copy_plans_replies - the plan and reply sections; default_plan */
static bool
conf_copy_plans_replies(struct conf_ctx *ctx, struct qm_conf *conf, cfg_t *cfg)
{
	size_t	i;

	conf->plan_count = cfg_size(cfg, "plan");
	conf->plans = conf_calloc(conf->plan_count, sizeof(struct qm_plan));
	for (i = 0; i < conf->plan_count; i++) {
		cfg_t  *sec = cfg_getnsec(cfg, "plan", (unsigned int) i);

		conf->plans[i].name = conf_strdup(cfg_title(sec));
		conf->plans[i].monthly = cfg_getint(sec, "monthly");
		conf->plans[i].daily = cfg_getint(sec, "daily");
		conf->plans[i].hourly = cfg_getint(sec, "hourly");
	}

	for (i = 0; i < QM_REPLY_COUNT; i++) {
		const struct conf_reply_default *d = &conf_reply_defaults[i];
		cfg_t  *sec = cfg_gettsec(cfg, "reply", conf_reply_names[i]);
		struct qm_reply *r = &conf->replies[i];

		snprintf(r->code, sizeof(r->code), "%s",
			 sec && cfg_size(sec, "code") ? cfg_getstr(sec, "code") : d->code);
		snprintf(r->xcode, sizeof(r->xcode), "%s",
			 sec && cfg_size(sec, "xcode") ? cfg_getstr(sec, "xcode") : d->xcode);
		r->text = conf_strdup(sec && cfg_size(sec, "text") ? cfg_getstr(sec, "text") : d->text);
	}

	if (conf->default_plan != NULL && conf_plan(conf, conf->default_plan) == NULL) {
		conf_fail(ctx, ctx->default_plan_line,
			  "default_plan \"%s\" names no plan (add plan %s { monthly = N },"
			  " or set default_plan = \"\" to refuse accounts without a plan)",
			  conf->default_plan, conf->default_plan);
		return false;
	}
	return true;
}

/* conf_load - parse and check a file */
struct qm_conf *
conf_load(const char *path, char *err, size_t errlen)
{
	struct conf_ctx ctx = {path, err, errlen, false, 0};
	struct qm_conf *conf = NULL;
	struct stat st;
	cfg_t  *cfg;
	FILE   *fp;
	size_t	i;
	int	rc;

	if (errlen > 0)
		err[0] = 0;

	/*
	 * Open the file here: cfg_parse() gives no reason on failure, and
	 * flex exit()s on a read error, such as reading a directory.
	 */
	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(fp), &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: cannot open: not a regular file", path);
		fclose(fp);
		return NULL;
	}
	if ((cfg = cfg_init(conf_opts, CFGF_NONE)) == NULL)
		conf_die();
	cfg_set_error_function(cfg, conf_errfunc);
	for (i = 0; i < ARRAY_LEN(conf_validators); i++)
		cfg_set_validate_func(cfg, conf_validators[i].opt, conf_validators[i].func);

	conf_ctx = &ctx;
	rc = cfg_parse_fp(cfg, fp);
	fclose(fp);
	if (rc == CFG_SUCCESS) {
		conf = conf_calloc(1, sizeof(*conf));
		conf->path = conf_strdup(path);
		conf_copy_top(conf, cfg);
		if (!conf_copy_account(&ctx, conf, cfg)
		    || !conf_copy_categories(&ctx, conf, cfg)
		    || !conf_copy_plans_replies(&ctx, conf, cfg)
		    || ctx.failed) {
			conf_free(conf);
			conf = NULL;
		}
	} else {
		/* Should libconfuse fail without saying why, still give a line. */
		conf_fail(&ctx, 0, "syntax error");
	}
	conf_ctx = NULL;
	cfg_free(cfg);
	return conf;
}

/* conf_free - release a configuration; NULL is allowed */
void
conf_free(struct qm_conf *conf)
{
	size_t	i;

	if (conf == NULL)
		return;
	free(conf->path);
	free(conf->socket);
	free(conf->user);
	free(conf->timezone);
	free(conf->journal);
	free(conf->hostname);
	free(conf->warn_percent);
	free(conf->default_plan);

	free(conf->redis.address);
	free(conf->redis.username);
	free(conf->redis.password);
	free(conf->redis.prefix);
	for (i = 0; i < conf->redis.sentinel_count; i++)
		free(conf->redis.sentinels[i]);
	free(conf->redis.sentinels);
	free(conf->redis.master);

	free(conf->account.header);
	if (conf->account.has_pattern)
		regfree(&conf->account.pattern);
	cidr_list_free(&conf->account.trusted);
	for (i = 0; i < conf->account.login_count; i++) {
		if (conf->account.logins[i].name != NULL)
			free(conf->account.logins[i].name);
		else
			regfree(&conf->account.logins[i].rx);
	}
	free(conf->account.logins);

	for (i = 0; i < conf->category_count; i++) {
		struct qm_category *cat = &conf->categories[i];

		free(cat->name);
		free(cat->header);
		free(cat->daemon);
		if (cat->has_match)
			regfree(&cat->match);
		if (cat->has_sasl)
			regfree(&cat->sasl);
		if (cat->has_sender)
			regfree(&cat->sender);
		cidr_list_free(&cat->client);
	}
	free(conf->categories);

	for (i = 0; i < conf->plan_count; i++)
		free(conf->plans[i].name);
	free(conf->plans);

	for (i = 0; i < QM_REPLY_COUNT; i++)
		free(conf->replies[i].text);
	free(conf);
}

/* conf_plan - the plan of that name, or NULL */
const struct qm_plan *
conf_plan(const struct qm_conf *conf, const char *name)
{
	size_t	i;

	for (i = 0; i < conf->plan_count; i++)
		if (strcmp(conf->plans[i].name, name) == 0)
			return &conf->plans[i];
	return NULL;
}

/* conf_reply_name - the conf name of a reply ("exhausted", ...) */
const char *
conf_reply_name(enum qm_reply_id id)
{
	if ((int) id < 0 || id >= QM_REPLY_COUNT)
		return "unknown";
	return conf_reply_names[id];
}
