/*
 * conf.h - the quota-milter configuration, parsed once and then immutable
 *
 * Nothing modifies a loaded struct qm_conf: threads read it without locks.
 * libconfuse's lexer is global, so conf_load() runs in one thread at a
 * time (the daemon's main thread before the reload thread starts, then
 * the reload thread alone).
 */
#ifndef QM_CONF_H
#define QM_CONF_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include "cidr.h"

#define QM_DEFAULT_CONF		"/etc/quota-milter/quota-milter.conf"
#define QM_UNLIMITED		(-1LL)
#define QM_ACCOUNT_MAX		128	/* longest account id, see account_valid() */
#define QM_NAME_MAX		64	/* longest plan or category name */

/*
 * The largest count counters/quota.lua reads: its int() takes 1 to
 * QM_COUNT_DIGITS digits, exact as a double. A plan's monthly and a
 * limit override must fit, or the script cannot read them.
 */
#define QM_COUNT_DIGITS		15
#define QM_COUNT_MAX		999999999999999LL	/* QM_COUNT_DIGITS nines */

enum qm_mode { QM_MODE_ENFORCE, QM_MODE_MONITOR };
enum qm_unit { QM_UNIT_RECIPIENTS, QM_UNIT_MESSAGES };
enum qm_on_error { QM_ON_ERROR_TEMPFAIL, QM_ON_ERROR_ACCEPT };
enum qm_source { QM_SOURCE_HEADER, QM_SOURCE_SASL, QM_SOURCE_SENDER_DOMAIN };

/*
 * Every reply the milter can give, by the name used in the conf's
 * "reply NAME { code xcode text }" sections. Texts may use the variables
 * below ($$ is a dollar).
 */
enum qm_reply_id {
	QM_REPLY_EXHAUSTED,		/* 550 5.7.1 monthly quota used up */
	QM_REPLY_NO_MAIL,		/* 550 5.7.1 plan allows 0 */
	QM_REPLY_SUSPENDED,		/* 550 5.7.1 account suspended */
	QM_REPLY_NO_ACCOUNT,		/* 550 5.7.1 counted mail without account */
	QM_REPLY_BAD_ACCOUNT,		/* 550 5.7.1 account id fails validation */
	QM_REPLY_UNTRUSTED,		/* 550 5.7.1 account header from untrusted client */
	QM_REPLY_CONFLICT,		/* 550 5.7.1 two different account headers */
	QM_REPLY_NO_PLAN,		/* 550 5.7.1 no plan in Redis, default_plan "" */
	QM_REPLY_UNKNOWN_PLAN,		/* 451 4.3.5 plan in Redis not in the conf */
	QM_REPLY_RACE,			/* 451 4.7.1 quota taken between RCPT and EOM */
	QM_REPLY_UNAVAILABLE,		/* 451 4.3.0 Redis unreachable, tempfail */
	QM_REPLY_HOURLY_CAP,		/* 451 4.7.1 the plan's hourly cap reached */
	QM_REPLY_DAILY_CAP,		/* 451 4.7.1 the plan's daily cap reached */
	QM_REPLY_COUNT
};

/* The variables of reply texts, "$account" ...; a name matches by prefix. */
enum qm_reply_var {
	QM_VAR_ACCOUNT, QM_VAR_PLAN, QM_VAR_LIMIT, QM_VAR_USED, QM_VAR_CATEGORY,
	QM_VAR_HEADER, QM_VAR_REASON, QM_VAR_WINDOW, QM_VAR_RETRY_AFTER,
	QM_VAR_COUNT			/* none */
};

struct qm_reply {
	char	code[4];		/* "550" */
	char	xcode[12];		/* "5.7.1" */
	char   *text;			/* template, see above */
};

/*
 * A plan: its monthly quota, and caps on the calendar day and hour of the
 * conf's timezone (QM_UNLIMITED when the conf sets none).
 */
struct qm_plan {
	char   *name;
	long long monthly;		/* QM_UNLIMITED or 0..QM_COUNT_MAX */
	long long daily;		/* the same, per day */
	long long hourly;		/* the same, per hour */
};

/*
 * A category holds when every matcher it has holds. A header matcher
 * holds when any occurrence of the header matches (or, without "match",
 * when the header is present at all).
 */
struct qm_category {
	char   *name;			/* also the usage hash field */
	char   *header;			/* NULL: no header matcher */
	regex_t	match;			/* valid if has_match */
	bool	has_match;
	regex_t	sasl;			/* on {auth_authen}; valid if has_sasl */
	bool	has_sasl;
	regex_t	sender;			/* on the envelope sender; if has_sender */
	bool	has_sender;
	struct cidr_list client;	/* client address; empty: any */
	char   *daemon;			/* {daemon_name}; NULL: any */
};

/* A Redis or Sentinel endpoint: a TCP host and port, or a unix socket path. */
#define QM_REDIS_HOST_MAX	256
struct qm_redis_addr {
	char	host[QM_REDIS_HOST_MAX];	/* name, address ([] removed) or socket path */
	int	port;			/* 0: host is a unix socket path */
};

struct qm_redis_conf {
	char   *address;		/* a form of conf_redis_addr() */
	char   *username;		/* "" : AUTH with the password alone */
	char   *password;		/* "" : no AUTH, unless username is set */
	int	database;
	int	timeout_ms;		/* bound for every Redis call */
	char   *prefix;			/* "qm:" */
	int	pool_size;		/* most connections one milter process opens */
	char  **sentinels;		/* conf_redis_addr()'s TCP forms; none: no Sentinel */
	size_t	sentinel_count;
	char   *master;			/* Sentinel master name */
};

/* A SASL login that may present the account header: a name or a /regex/. */
struct qm_login {
	char   *name;			/* the exact login; NULL for a regex */
	regex_t	rx;			/* valid when name is NULL */
};

struct qm_account_conf {
	enum qm_source source;
	char   *header;			/* source header */
	regex_t	pattern;		/* one capture group; valid if has_pattern */
	bool	has_pattern;
	struct cidr_list trusted;	/* trusted_networks */
	struct qm_login *logins;	/* trusted_logins */
	size_t	login_count;
	bool	trust_local;		/* trust_local_submissions */
	bool	strip_headers;
};

struct qm_conf {
	char   *path;			/* file it came from */
	char   *socket;
	char   *user;			/* "" : keep the starting user */
	enum qm_mode mode;
	enum qm_unit unit;
	char   *timezone;
	int	keep_months;
	enum qm_on_error on_redis_error;
	char   *journal;
	int    *warn_percent;		/* ascending, no duplicates, 1..1000 */
	size_t	warn_count;
	char   *default_plan;		/* NULL when "" (unknown accounts refused) */
	struct qm_redis_conf redis;
	struct qm_account_conf account;
	struct qm_category *categories;	/* in file order: first match wins */
	size_t	category_count;
	struct qm_plan *plans;		/* in file order */
	size_t	plan_count;
	struct qm_reply replies[QM_REPLY_COUNT];
	int	stats_interval;		/* seconds between health reports; 0: none */
	char   *hostname;		/* of the report key; "": gethostname() */
};

/*
 * conf_load - parse and check a configuration file. Returns NULL on any
 * error and puts one line "FILE:LINE: reason" (or "FILE: reason" when no
 * line applies) into err.
 */
struct qm_conf *conf_load(const char *path, char *err, size_t errlen);

/* conf_free - release a configuration; NULL is allowed */
void	conf_free(struct qm_conf *conf);

/* conf_name_valid - a plan or category name: 1 to QM_NAME_MAX of A-Z a-z 0-9 _ - */
bool	conf_name_valid(const char *name);

/* conf_plan - the plan of that name, or NULL */
const struct qm_plan *conf_plan(const struct qm_conf *conf, const char *name);

/*
 * conf_socket_unix_path - the file of a unix socket spec ("unix:/PATH",
 * "local:/PATH" or "/PATH", as libmilter reads them), or NULL for inet
 */
const char *conf_socket_unix_path(const char *spec);

/* conf_socket_any_host - does an inet spec with no @HOST listen everywhere? */
bool	conf_socket_any_host(const char *spec);

/*
 * conf_redis_addr - parse "HOST:PORT", "[IPV6]:PORT", "/PATH" or
 * "unix:/PATH" (tcp_only: the first two) into addr. HOST is 1 to 255 of
 * A-Z a-z 0-9 . - _, PORT 1 to 65535. False when text is none of these.
 */
bool	conf_redis_addr(const char *text, bool tcp_only, struct qm_redis_addr *addr);

/*
 * conf_reply_var - the variable whose name starts p (the text after a
 * '$'), the name's length in *len; QM_VAR_COUNT when none does
 */
enum qm_reply_var conf_reply_var(const char *p, size_t *len);

/* conf_reply_name - the conf name of a reply ("exhausted", ...) */
const char *conf_reply_name(enum qm_reply_id id);

#endif
