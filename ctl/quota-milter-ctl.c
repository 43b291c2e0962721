/*
 * quota-milter-ctl - look at and change accounts' quotas, for operators
 *
 * It reads the daemon's configuration, speaks to the same Redis through
 * the same bounded pool (so timeouts, address forms and Sentinel behave
 * alike), and names every key with counters/keys.h. Every change it
 * makes is one plain Redis command that a billing system could send
 * itself (README.md, "quota-milter-ctl", shows both side by side),
 *
 *	set-plan A P		HSET PREFIXaccount:{A} plan P
 *	set-limit A N		HSET PREFIXaccount:{A} limit N (unlimited: -1)
 *	set-limit A plan	HDEL PREFIXaccount:{A} limit
 *	set-limit A --daily N	HSET PREFIXaccount:{A} limit_daily N (--hourly: limit_hourly)
 *	suspend A		HSET PREFIXaccount:{A} suspended 1
 *	resume A		HDEL PREFIXaccount:{A} suspended
 *
 * but reset A M, one run of the milter's own script (counters_reset()):
 * DEL PREFIXusage:{A}:M, HDEL of the announced thresholds of
 * PREFIXwarned:{A}:M, and the time of the reset noted there.
 *
 * Command-line mistakes exit 2 before anything is read; a bad conf, an
 * unreachable Redis or a failed write of the output exit 1.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

#define CTL_TOP_DEFAULT		10
#define CTL_TOP_MAX		100000
#define CTL_EVENTS_DEFAULT	20
#define CTL_EVENTS_MAX		10000

/* The command line, once parsed. */
struct ctl_args {
	const char *conf;		/* -c */
	bool	json;			/* --json */
	const char *n;			/* -n, NULL if not given */
	const char *window;		/* --daily or --hourly, NULL if not given */
	const char *by;			/* --by, NULL if not given */
	const char *cmd;
	const char **arg;		/* the command's arguments */
	int	argc;
};

/* What a command needs once the conf is loaded. */
struct ctl_job {
	const char *account;
	char	month[MONTH_KEY_LEN];	/* given, or this month */
	size_t	n;			/* -n */
	const char *value;		/* set-plan's plan, set-limit's value */
	const char *field;		/* set-limit's account field: limit, limit_daily... */
	const char *what;		/* and its name for people: "limit", "daily limit"... */
	long long limit;		/* set-limit's N, QM_UNLIMITED; value "plan": none */
	enum ctl_by by;			/* top --by */
};

typedef int (*ctl_cmd_fn) (struct ctl *, const struct ctl_job *);

static int cmd_usage(struct ctl *, const struct ctl_job *);
static int cmd_top(struct ctl *, const struct ctl_job *);
static int cmd_plans(struct ctl *, const struct ctl_job *);
static int cmd_set_plan(struct ctl *, const struct ctl_job *);
static int cmd_set_limit(struct ctl *, const struct ctl_job *);
static int cmd_suspend(struct ctl *, const struct ctl_job *);
static int cmd_resume(struct ctl *, const struct ctl_job *);
static int cmd_reset(struct ctl *, const struct ctl_job *);
static int cmd_events(struct ctl *, const struct ctl_job *);
static int cmd_export(struct ctl *, const struct ctl_job *);
static int cmd_hosts(struct ctl *, const struct ctl_job *);
static int cmd_metrics(struct ctl *, const struct ctl_job *);

/* The commands: what arguments they take, in order. */
static const struct ctl_command {
	const char *name;
	const char *args;		/* for messages */
	bool	account;		/* first argument is an account */
	int	min, max;		/* argument counts */
	bool	month_last;		/* the last optional argument is a month */
	bool	month_only;		/* the one argument is a month */
	size_t	n_default;		/* takes -n when not 0 */
	size_t	n_max;
	ctl_cmd_fn fn;
} ctl_commands[] = {
	{"usage", "ACCOUNT [YYYY-MM]", true, 1, 2, true, false, 0, 0, cmd_usage},
	{"top", "[YYYY-MM] [-n N] [--by monthly|daily|hourly]", false, 0, 1, true, false, CTL_TOP_DEFAULT, CTL_TOP_MAX, cmd_top},
	{"plans", "", false, 0, 0, false, false, 0, 0, cmd_plans},
	{"set-plan", "ACCOUNT PLAN", true, 2, 2, false, false, 0, 0, cmd_set_plan},
	{"set-limit", "ACCOUNT [--daily|--hourly] N|unlimited|plan", true, 2, 2, false, false, 0, 0, cmd_set_limit},
	{"suspend", "ACCOUNT", true, 1, 1, false, false, 0, 0, cmd_suspend},
	{"resume", "ACCOUNT", true, 1, 1, false, false, 0, 0, cmd_resume},
	{"reset", "ACCOUNT [YYYY-MM]", true, 1, 2, true, false, 0, 0, cmd_reset},
	{"events", "[-n N]", false, 0, 0, false, false, CTL_EVENTS_DEFAULT, CTL_EVENTS_MAX, cmd_events},
	{"export", "YYYY-MM", false, 1, 1, false, true, 0, 0, cmd_export},
	{"hosts", "", false, 0, 0, false, false, 0, 0, cmd_hosts},
	{"metrics", "", false, 0, 0, false, false, 0, 0, cmd_metrics},
};

#define CTL_COMMAND_COUNT	(sizeof(ctl_commands) / sizeof(ctl_commands[0]))

/* ctl_fail - print "quota-milter-ctl: ..." on stderr and exit with status */
void
ctl_fail(int status, const char *fmt, ...)
{
	va_list	ap;

	fflush(stdout);
	fprintf(stderr, "%s: ", CTL_NAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	putc('\n', stderr);
	if (status == CTL_EXIT_USAGE)
		fprintf(stderr, "Try '%s --help'.\n", CTL_NAME);
	exit(status);
}

/* ctl_warn - print "quota-milter-ctl: warning: ..." on stderr */
void
ctl_warn(const char *fmt, ...)
{
	va_list	ap;

	fprintf(stderr, "%s: warning: ", CTL_NAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	putc('\n', stderr);
}

/* usage - the help text, on stdout with exit 0 (asked for) */
static void __attribute__((noreturn))
usage(void)
{
	printf("usage: %s [-c FILE] [--json] COMMAND [ARGS]\n"
	       "\n"
	       "Commands:\n"
	       "  usage ACCOUNT [YYYY-MM]   plan, limit and usage of an account in a month\n"
	       "  top [YYYY-MM] [-n N] [--by monthly|daily|hourly]\n"
	       "                            the N accounts (default %d) with the highest total\n"
	       "                            of the month, or of today or this hour\n"
	       "  plans                     the plans of the configuration and their caps\n"
	       "  set-plan ACCOUNT PLAN     put the account on a plan of the configuration\n"
	       "  set-limit ACCOUNT [--daily|--hourly] N|unlimited|plan\n"
	       "                            override the plan's monthly limit (N from 0),\n"
	       "                            lift it (unlimited) or drop the override (plan);\n"
	       "                            --daily, --hourly: the cap of a day or an hour\n"
	       "  suspend ACCOUNT           refuse the account's counted mail\n"
	       "  resume ACCOUNT            lift a suspension\n"
	       "  reset ACCOUNT [YYYY-MM]   delete the month's usage; thresholds are announced again\n"
	       "  events [-n N]             the latest N (default %d) threshold and exhausted events\n"
	       "  export YYYY-MM            every account with usage in the month, as CSV for billing\n"
	       "  hosts                     the milters reporting: rates, Redis errors and latency\n"
	       "  metrics                   the fleet in the Prometheus text format (0.0.4)\n"
	       "\n"
	       "The month defaults to the current one in the configuration's time zone.\n"
	       "\n"
	       "Options:\n"
	       "  -c FILE     configuration (default %s)\n"
	       "  --json      print JSON instead of text (limit and remaining -1: unlimited)\n"
	       "  -n N        how many lines top and events print\n"
	       "  -h, --help  print this text and exit\n"
	       "  --          end of options, for an account id that begins with '-'\n"
	       "\n"
	       "Exit status: 0 done, 1 runtime error (configuration, Redis), 2 usage error.\n",
	       CTL_NAME, CTL_TOP_DEFAULT, CTL_EVENTS_DEFAULT, QM_DEFAULT_CONF);
	exit(0);
}

/* shown - a command-line text fit for a message (control bytes made '?') */
static const char *
shown(const char *s)
{
	static char *last;		/* the previous one, freed on the next call */

	free(last);
	last = text_clean(s, strlen(s));
	return last;
}

/* args_parse - options anywhere before "--", then the command and its arguments */
static void
args_parse(int argc, char **argv, struct ctl_args *a)
{
	bool	options = true;
	int	i;

	memset(a, 0, sizeof(*a));
	a->conf = QM_DEFAULT_CONF;
	if ((a->arg = calloc((size_t) argc + 1, sizeof(char *))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	for (i = 1; i < argc; i++) {
		const char *s = argv[i];

		if (options && strcmp(s, "--") == 0) {
			options = false;
		} else if (options && (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)) {
			usage();
		} else if (options && strcmp(s, "--json") == 0) {
			a->json = true;
		} else if (options && (strcmp(s, "-c") == 0 || strcmp(s, "-n") == 0)) {
			if (i + 1 >= argc)
				ctl_fail(CTL_EXIT_USAGE, "option %s needs a value", s);
			if (s[1] == 'c')
				a->conf = argv[++i];
			else
				a->n = argv[++i];
		} else if (options && (strncmp(s, "-c", 2) == 0 || strncmp(s, "-n", 2) == 0)) {
			if (s[1] == 'c')
				a->conf = s + 2;
			else
				a->n = s + 2;
		} else if (options && (strcmp(s, "--daily") == 0 || strcmp(s, "--hourly") == 0)) {
			if (a->window != NULL && strcmp(a->window, s) != 0)
				ctl_fail(CTL_EXIT_USAGE, "--daily and --hourly exclude each other");
			a->window = s;
		} else if (options && strcmp(s, "--by") == 0) {
			if (i + 1 >= argc)
				ctl_fail(CTL_EXIT_USAGE, "option %s needs a value", s);
			a->by = argv[++i];
		} else if (options && strncmp(s, "--by=", 5) == 0) {
			a->by = s + 5;
		} else if (options && s[0] == '-' && s[1] != 0
			   && strspn(s + 1, "0123456789") != strlen(s + 1)) {
			/* Not a negative number: those are arguments, which set-limit refuses. */
			ctl_fail(CTL_EXIT_USAGE, "unknown option %s", shown(s));
		} else if (a->cmd == NULL) {
			a->cmd = s;
		} else {
			a->arg[a->argc++] = s;
		}
	}
	if (a->cmd == NULL)
		ctl_fail(CTL_EXIT_USAGE, "no command given");
}

/* check_account - a valid account id, or exit 2 with the reason */
static const char *
check_account(const char *account)
{
	const char *why;

	if (!account_valid(account, &why))
		ctl_fail(CTL_EXIT_USAGE, "bad account id \"%s\": %s", shown(account), why);
	return account;
}

/* check_month - a valid month, or exit 2 */
static void
check_month(const char *month, char *out)
{
	if (!month_valid(month))
		ctl_fail(CTL_EXIT_USAGE, "bad month \"%s\": expected YYYY-MM, 1970-01 to 2199-12",
			 shown(month));
	memcpy(out, month, MONTH_KEY_LEN);
}

/* check_count - a decimal count from lo to hi, or exit 2; also names what else fits */
static long long
check_count(const char *what, const char *s, long long lo, long long hi, const char *also)
{
	long long v;

	if (!ctl_int(s, strlen(s), &v) || s[0] == '-' || v < lo || v > hi)
		ctl_fail(CTL_EXIT_USAGE, "bad %s \"%s\": expected a count from %lld to %lld%s",
			 what, shown(s), lo, hi, also);
	return v;
}

/* command_find - the command of that name, or exit 2 */
static const struct ctl_command *
command_find(const char *name)
{
	for (size_t i = 0; i < CTL_COMMAND_COUNT; i++)
		if (strcmp(ctl_commands[i].name, name) == 0)
			return &ctl_commands[i];
	ctl_fail(CTL_EXIT_USAGE, "unknown command \"%s\" (usage, top, plans, set-plan, set-limit,"
		 " suspend, resume, reset, events, export, hosts, metrics)", shown(name));
}

/* job_options - set-limit's --daily, --hourly and value, top's --by */
static void
job_options(const struct ctl_command *c, const struct ctl_args *a, struct ctl_job *job)
{
	enum month_window kind;
	static char what[32];

	if (a->window != NULL && c->fn != cmd_set_limit)
		ctl_fail(CTL_EXIT_USAGE, "%s takes no %s", c->name, a->window);
	if (a->by != NULL && c->fn != cmd_top)
		ctl_fail(CTL_EXIT_USAGE, "%s takes no --by", c->name);
	job->by = CTL_BY_MONTH;
	if (a->by != NULL && strcmp(a->by, "monthly") != 0) {
		if (!ctl_kind_find(a->by, &kind))
			ctl_fail(CTL_EXIT_USAGE, "bad --by \"%s\": expected monthly, daily or hourly",
				 shown(a->by));
		if (job->month[0] != 0)
			ctl_fail(CTL_EXIT_USAGE, "top --by %s takes no month: it ranks the current %s",
				 a->by, kind == MONTH_WINDOW_DAY ? "day" : "hour");
		job->by = (enum ctl_by) kind;
	}
	if (c->fn != cmd_set_limit)
		return;
	job->field = "limit";
	job->what = "limit";
	if (a->window != NULL && ctl_kind_find(a->window + 2, &kind)) {
		job->field = ctl_kinds[kind].field;
		snprintf(what, sizeof(what), "%s limit", ctl_kinds[kind].name);
		job->what = what;
	}
	if (strcmp(job->value, "unlimited") == 0)
		job->limit = QM_UNLIMITED;
	else if (strcmp(job->value, "plan") != 0)
		job->limit = check_count(job->what, job->value, 0, QM_COUNT_MAX, ", unlimited or plan");
}

/* job_make - check every argument that needs no conf; month stays "" if not given */
static void
job_make(const struct ctl_command *c, const struct ctl_args *a, struct ctl_job *job)
{
	memset(job, 0, sizeof(*job));
	if (a->argc < c->min || a->argc > c->max)
		ctl_fail(CTL_EXIT_USAGE, "usage: %s %s%s%s", CTL_NAME, c->name,
			 *c->args ? " " : "", c->args);
	if (a->n != NULL && c->n_default == 0)
		ctl_fail(CTL_EXIT_USAGE, "%s takes no -n", c->name);
	if (c->n_default != 0)
		job->n = a->n == NULL ? c->n_default
		    : (size_t) check_count("-n", a->n, 1, (long long) c->n_max, "");
	if (c->account)
		job->account = check_account(a->arg[0]);
	if (c->month_only)
		check_month(a->arg[0], job->month);
	else if (c->month_last && a->argc == c->max)
		check_month(a->arg[a->argc - 1], job->month);
	if (c->account && c->max == 2 && !c->month_last)
		job->value = a->arg[1];
	job_options(c, a, job);
}

/* ctl_command - one command that must succeed: its reply, or exit 1 */
static redisReply *
ctl_command(struct ctl *ctl, int argc, const char **argv)
{
	char	err[CTL_ERR_MAX];
	redisReply *r;

	if ((r = redis_pool_command(ctl->pool, argc, argv, NULL, err, sizeof(err))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	return r;
}

/* account_key - the account hash's key (the id was checked already) */
static void
account_key(struct ctl *ctl, const char *account, char *key)
{
	if (keys_account(key, ctl->conf->redis.prefix, account) == 0)
		ctl_fail(CTL_EXIT_RUNTIME, "cannot build the key of account %s", account);
}

/* change_print - what a change did: one line, or a JSON object */
static void
change_print(struct ctl *ctl, const char *account, const char *what, const char *json_rest)
{
	if (ctl->json) {
		fputs("{\"account\":", stdout);
		json_cstr(stdout, account);
		printf(",%s}\n", json_rest);
	} else {
		printf("account %s: %s\n", account, what);
	}
}

/* usage_other - is a usage field neither fixed nor a category of the conf? */
static bool
usage_other(const struct qm_conf *conf, const redisReply *field)
{
	char	name[QM_NAME_MAX + 1];

	if (field->type != REDIS_REPLY_STRING)
		return false;
	if (field->len >= sizeof(name) || memchr(field->str, 0, field->len) != NULL)
		return true;
	memcpy(name, field->str, field->len);
	name[field->len] = 0;
	if (keys_reserved_field(name))
		return false;
	for (size_t i = 0; i < conf->category_count; i++)
		if (strcmp(conf->categories[i].name, name) == 0)
			return false;
	return true;
}

/* usage_json - the row and the other fields of the usage hash, as JSON */
static void
usage_json(struct ctl *ctl, const struct ctl_row *row, const char *month, const redisReply *all)
{
	bool	first = true;
	long long v;

	row_json(ctl, row, month, true, stdout);
	fputs(",\"other\":{", stdout);
	for (size_t i = 0; i + 1 < all->elements; i += 2) {
		const redisReply *f = all->element[i], *val = all->element[i + 1];

		if (!usage_other(ctl->conf, f) || val->type != REDIS_REPLY_STRING)
			continue;
		if (!first)
			putchar(',');
		first = false;
		json_str(stdout, f->str, f->len);
		putchar(':');
		if (ctl_int(val->str, val->len, &v))
			printf("%lld", v);
		else
			json_str(stdout, val->str, val->len);
	}
	fputs("}}\n", stdout);
}

/* source_note - " (override)", " (plan)"... after a limit or a cap for people */
static const char *
source_note(bool override, bool known, const char *plan)
{
	return override ? " (override)" : known ? " (plan)"
	    : plan ? " (plan not in the configuration)" : "";
}

/* usage_window - "daily window", "daily used", "daily cap", "daily remaining" lines */
static void
usage_window(struct ctl *ctl, const struct ctl_row *row, enum month_window kind, struct table *t)
{
	const struct ctl_window *w = &row->win[kind];
	const char *name = ctl_kinds[kind].name;
	char	k[32], v[128], when[64], buf[32];

	snprintf(k, sizeof(k), "%s window", name);
	if (!month_clock(ctl->months, ctl->now[kind].end, kind == MONTH_WINDOW_DAY, when, sizeof(when)))
		snprintf(when, sizeof(when), "?");
	snprintf(v, sizeof(v), "%s, reopens %s", ctl->now[kind].name, when);
	table_add(t, (const char *[]) {k, v});
	snprintf(k, sizeof(k), "%s used", name);
	snprintf(v, sizeof(v), "%lld", w->used);
	table_add(t, (const char *[]) {k, v});
	snprintf(k, sizeof(k), "%s cap", name);
	snprintf(v, sizeof(v), "%s%s", limit_text(w->has_cap, w->cap, buf, sizeof(buf)),
		 source_note(w->override, w->has_cap, row->plan));
	table_add(t, (const char *[]) {k, v});
	snprintf(k, sizeof(k), "%s remaining", name);
	table_add(t, (const char *[]) {k, left_text(w->has_cap, w->cap, w->used, buf, sizeof(buf))});
}

/* usage_text - the row and the other fields of the usage hash, one per line */
static void
usage_text(struct ctl *ctl, const struct ctl_row *row, const char *month, const redisReply *all)
{
	const struct qm_conf *conf = ctl->conf;
	struct table *t = table_create(2, NULL, NULL);
	char	plan[QM_NAME_MAX + 64], lim[64], num[32], buf[32];
	char   *name, *val, *note;

#define ADD(k, v)	table_add(t, (const char *[]) {(k), (v)})
#define ADDNUM(k, n)	(snprintf(num, sizeof(num), "%lld", (n)), ADD((k), num))
	ADD("account", row->account);
	ADD("month", month);
	snprintf(plan, sizeof(plan), "%.*s%s", QM_NAME_MAX, row->plan ? row->plan : "none",
		 row->plan_default ? " (default_plan)" : row->plan ? "" : " (no default_plan)");
	ADD("plan", plan);
	snprintf(lim, sizeof(lim), "%s%s", row_limit_text(row, buf, sizeof(buf)),
		 source_note(row->override, row->has_limit, row->plan));
	ADD("limit", lim);
	ADDNUM("used", row->used);
	ADD("remaining", row_remaining_text(row, buf, sizeof(buf)));
	ADD("percent", row_percent_text(row, buf, sizeof(buf)));
	ADD("status", counters_status_name(row->status));
	ADD("suspended", row->suspended ? "yes" : "no");
	for (int k = MONTH_WINDOW_DAY; row->windows && k <= MONTH_WINDOW_HOUR; k++)
		usage_window(ctl, row, (enum month_window) k, t);
	ADDNUM(USAGE_MESSAGES, row->messages);
	for (size_t i = 0; i < conf->category_count; i++)
		ADDNUM(conf->categories[i].name, row->cats[i]);
	ADDNUM(USAGE_REFUSED, row->refused);
	ADDNUM(USAGE_WOULD_REFUSE, row->would_refuse);
	for (size_t i = 0; i + 1 < all->elements; i += 2) {
		const redisReply *f = all->element[i], *v = all->element[i + 1];

		if (!usage_other(conf, f) || v->type != REDIS_REPLY_STRING)
			continue;
		name = text_clean(f->str, f->len);
		val = text_clean(v->str, v->len);
		if (asprintf(&note, "%s (not a category of the configuration)", val) < 0)
			ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
		ADD(name, note);
		free(name);
		free(val);
		free(note);
	}
#undef ADD
#undef ADDNUM
	table_print(t, stdout);
	table_free(t);
}

/* cmd_usage - one account's plan, limit and usage in a month (and now's windows) */
static int
cmd_usage(struct ctl *ctl, const struct ctl_job *job)
{
	struct row_store store;
	struct redis_cmd cmds[ROW_CMDS + 1];
	const char *all[2];
	redisReply *replies[ROW_CMDS + 1];
	struct ctl_row row;
	char	err[CTL_ERR_MAX];
	size_t	n;
	bool	ok;

	row_init(ctl, &row, job->account);
	if ((n = row_commands(ctl, job->account, job->month, &store, cmds)) == 0)
		ctl_fail(CTL_EXIT_RUNTIME, "cannot build the keys of account %s", job->account);
	all[0] = "HGETALL";
	all[1] = store.ukey;
	cmds[n] = (struct redis_cmd) {2, all, NULL};
	if (redis_pool_run(ctl->pool, cmds, n + 1, replies, err, sizeof(err)) < 0)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	ok = row_fill(ctl, &row, job->month, replies[0], replies[1], n > 2 ? replies + 2 : NULL,
		      err, sizeof(err))
	    && replies[n]->type == REDIS_REPLY_ARRAY;
	row_store_free(&store);
	if (!ok)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	if (ctl->json)
		usage_json(ctl, &row, job->month, replies[n]);
	else
		usage_text(ctl, &row, job->month, replies[n]);
	for (size_t i = 0; i <= n; i++)
		freeReplyObject(replies[i]);
	row_free(&row);
	return 0;
}

/* cmd_top - the accounts with the highest total */
static int
cmd_top(struct ctl *ctl, const struct ctl_job *job)
{
	return top_run(ctl, job->month, job->by, job->n);
}

/* cmd_export - every account of a month, for billing */
static int
cmd_export(struct ctl *ctl, const struct ctl_job *job)
{
	return export_run(ctl, job->month);
}

/* cmd_hosts - the live milters, one line each (ctl/fleet.c) */
static int
cmd_hosts(struct ctl *ctl, const struct ctl_job *job)
{
	(void) job;
	return fleet_hosts(ctl);
}

/* cmd_metrics - the fleet for Prometheus, this month's gauges (ctl/fleet.c) */
static int
cmd_metrics(struct ctl *ctl, const struct ctl_job *job)
{
	return fleet_metrics(ctl, job->month);
}

/* cmd_plans - the plans of the conf, in file order, with their caps */
static int
cmd_plans(struct ctl *ctl, const struct ctl_job *job)
{
	static const char *const heads[] = {"PLAN", "MONTHLY", "DAILY", "HOURLY", "DEFAULT"};
	static const bool right[] = {false, true, true, true, false};
	const struct qm_conf *conf = ctl->conf;
	struct table *t;
	char	num[3][32];

	(void) job;
	if (ctl->json) {
		fputs("{\"default_plan\":", stdout);
		json_cstr(stdout, conf->default_plan);
		fputs(",\"plans\":[", stdout);
		for (size_t i = 0; i < conf->plan_count; i++) {
			const struct qm_plan *p = &conf->plans[i];

			fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
			json_cstr(stdout, p->name);
			printf(",\"monthly\":%lld,\"daily\":%lld,\"hourly\":%lld,\"default\":%s}",
			       p->monthly, p->daily, p->hourly,
			       conf->default_plan && strcmp(conf->default_plan, p->name) == 0
			       ? "true" : "false");
		}
		fputs("]}\n", stdout);
		return 0;
	}
	t = table_create(5, heads, right);
	for (size_t i = 0; i < conf->plan_count; i++) {
		const struct qm_plan *p = &conf->plans[i];

		table_add(t, (const char *[]) {p->name,
			  limit_text(true, p->monthly, num[0], sizeof(num[0])),
			  limit_text(true, p->daily, num[1], sizeof(num[1])),
			  limit_text(true, p->hourly, num[2], sizeof(num[2])),
			  conf->default_plan && strcmp(conf->default_plan, p->name) == 0 ? "yes" : ""});
	}
	table_print(t, stdout);
	table_free(t);
	return 0;
}

/* plan_list - the conf's plan names, comma separated, for a message */
static char *
plan_list(const struct qm_conf *conf)
{
	size_t	len = 1, pos = 0;
	char   *s;

	for (size_t i = 0; i < conf->plan_count; i++)
		len += strlen(conf->plans[i].name) + 2;
	if ((s = malloc(len)) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	s[0] = 0;
	for (size_t i = 0; i < conf->plan_count; i++)
		pos += (size_t) snprintf(s + pos, len - pos, "%s%s", i ? ", " : "", conf->plans[i].name);
	return s;
}

/* cmd_set_plan - HSET account plan PLAN, for a plan of the conf */
static int
cmd_set_plan(struct ctl *ctl, const struct ctl_job *job)
{
	char	key[KEYS_MAX], what[QM_NAME_MAX + 32], rest[QM_NAME_MAX + 64];
	const char *argv[4] = {"HSET", key, "plan", job->value};
	char   *plans;

	if (conf_plan(ctl->conf, job->value) == NULL) {
		plans = plan_list(ctl->conf);
		ctl_fail(CTL_EXIT_USAGE, "unknown plan \"%s\" (plans of %s: %s)", shown(job->value),
			 ctl->conf->path, plans);
	}
	account_key(ctl, job->account, key);
	freeReplyObject(ctl_command(ctl, 4, argv));
	snprintf(what, sizeof(what), "plan set to %s", job->value);
	snprintf(rest, sizeof(rest), "\"command\":\"set-plan\",\"plan\":\"%s\"", job->value);
	change_print(ctl, job->account, what, rest);
	return 0;
}

/*
 * cmd_set_limit - HSET account FIELD N (-1 unlimited), or HDEL it (plan);
 * FIELD limit, or limit_daily, limit_hourly; N checked by job_options()
 */
static int
cmd_set_limit(struct ctl *ctl, const struct ctl_job *job)
{
	char	key[KEYS_MAX], num[32], what[96], rest[96];
	const char *argv[4] = {"HSET", key, job->field, num};

	account_key(ctl, job->account, key);
	if (strcmp(job->value, "plan") == 0) {
		argv[0] = "HDEL";
		freeReplyObject(ctl_command(ctl, 3, argv));
		snprintf(what, sizeof(what), "%s override removed, the plan's %s applies",
			 job->what, job->what);
		snprintf(rest, sizeof(rest), "\"command\":\"set-limit\",\"%s\":null", job->field);
		change_print(ctl, job->account, what, rest);
		return 0;
	}
	snprintf(num, sizeof(num), "%lld", job->limit);
	freeReplyObject(ctl_command(ctl, 4, argv));
	snprintf(what, sizeof(what), "%s set to %s", job->what,
		 job->limit == QM_UNLIMITED ? "unlimited" : num);
	snprintf(rest, sizeof(rest), "\"command\":\"set-limit\",\"%s\":%s", job->field, num);
	change_print(ctl, job->account, what, rest);
	return 0;
}

/* cmd_suspend - HSET account suspended 1 */
static int
cmd_suspend(struct ctl *ctl, const struct ctl_job *job)
{
	char	key[KEYS_MAX];
	const char *argv[4] = {"HSET", key, "suspended", "1"};

	account_key(ctl, job->account, key);
	freeReplyObject(ctl_command(ctl, 4, argv));
	change_print(ctl, job->account, "suspended", "\"command\":\"suspend\",\"suspended\":true");
	return 0;
}

/* cmd_resume - HDEL account suspended */
static int
cmd_resume(struct ctl *ctl, const struct ctl_job *job)
{
	char	key[KEYS_MAX];
	const char *argv[3] = {"HDEL", key, "suspended"};

	account_key(ctl, job->account, key);
	freeReplyObject(ctl_command(ctl, 3, argv));
	change_print(ctl, job->account, "resumed", "\"command\":\"resume\",\"suspended\":false");
	return 0;
}

/*
 * cmd_reset - delete the month's usage and its announced thresholds, in
 * one run of the milter's own script (counters_reset()): the thresholds
 * and "exhausted" are announced again, and no cancel of a charge made
 * before the reset takes it out of the usage counted after it.
 */
static int
cmd_reset(struct ctl *ctl, const struct ctl_job *job)
{
	struct counters *ctr;
	char	what[96], rest[128], err[CTL_ERR_MAX];
	bool	deleted;

	if ((ctr = counters_create(ctl->conf, ctl->months, err, sizeof(err))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	if (counters_reset(ctr, job->account, job->month, &deleted, err, sizeof(err)) < 0)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	counters_free(ctr);
	snprintf(what, sizeof(what), deleted ? "usage of %s reset" : "no usage in %s, nothing to reset",
		 job->month);
	snprintf(rest, sizeof(rest), "\"command\":\"reset\",\"month\":\"%s\",\"deleted\":%s",
		 job->month, deleted ? "true" : "false");
	change_print(ctl, job->account, what, rest);
	return 0;
}

/* event_time - the UTC time of a stream entry id ("1700000000000-0") */
static bool
event_time(const redisReply *id, bool iso, char *buf, size_t len)
{
	long long ms;
	const char *dash;
	struct tm tm;
	time_t	t;

	if (id->type != REDIS_REPLY_STRING || (dash = memchr(id->str, '-', id->len)) == NULL
	    || !ctl_int(id->str, (size_t) (dash - id->str), &ms) || ms < 0)
		return false;
	t = (time_t) (ms / 1000);
	if (gmtime_r(&t, &tm) == NULL)
		return false;
	if (iso)
		snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (ms % 1000));
	else
		snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return true;
}

/* The fields an event carries (quota.lua writes them), as table columns. */
static const char *const event_fields[] = {"type", "account", "month", "percent", "used",
	"limit", "plan"};
#define EVENT_FIELDS	(sizeof(event_fields) / sizeof(event_fields[0]))

/* event_field - the index of a known event field, or EVENT_FIELDS */
static size_t
event_field(const redisReply *f)
{
	size_t	c;

	for (c = 0; c < EVENT_FIELDS; c++)
		if (f->len == strlen(event_fields[c]) && memcmp(f->str, event_fields[c], f->len) == 0)
			break;
	return c;
}

/* event_entry - is r a stream entry {id, {field, value, ...}}? */
static bool
event_entry(const redisReply *r)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
	    || r->element[0]->type != REDIS_REPLY_STRING
	    || r->element[1]->type != REDIS_REPLY_ARRAY || r->element[1]->elements % 2 != 0)
		return false;
	for (size_t i = 0; i < r->element[1]->elements; i++)
		if (r->element[1]->element[i]->type != REDIS_REPLY_STRING)
			return false;
	return true;
}

/* events_json - the entries as {"events":[{"id","time","fields":{...}}]} */
static void
events_json(const redisReply *r)
{
	char	when[64];
	long long v;

	fputs("{\"events\":[", stdout);
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i], *kv = e->element[1];

		fputs(i ? ",{\"id\":" : "{\"id\":", stdout);
		json_str(stdout, e->element[0]->str, e->element[0]->len);
		fputs(",\"time\":", stdout);
		json_cstr(stdout, event_time(e->element[0], true, when, sizeof(when)) ? when : NULL);
		fputs(",\"fields\":{", stdout);
		for (size_t j = 0; j + 1 < kv->elements; j += 2) {
			const redisReply *f = kv->element[j], *val = kv->element[j + 1];

			if (j > 0)
				putchar(',');
			json_str(stdout, f->str, f->len);
			putchar(':');
			/* Counts are numbers; everything else (account, month...) a string. */
			if (((f->len == 7 && memcmp(f->str, "percent", 7) == 0)
			     || (f->len == 4 && memcmp(f->str, "used", 4) == 0)
			     || (f->len == 5 && memcmp(f->str, "limit", 5) == 0))
			    && ctl_int(val->str, val->len, &v))
				printf("%lld", v);
			else
				json_str(stdout, val->str, val->len);
		}
		fputs("}}", stdout);
	}
	fputs("]}\n", stdout);
}

/* events_text - a table, newest first; fields it has no column for go to OTHER */
static void
events_text(const redisReply *r)
{
	static const char *const heads[EVENT_FIELDS + 2] = {"TIME (UTC)", "TYPE", "ACCOUNT",
		"MONTH", "PERCENT", "USED", "LIMIT", "PLAN", "OTHER"};
	static const bool right[EVENT_FIELDS + 2] = {false, false, false, false, true, true, true};
	const char *cells[EVENT_FIELDS + 2];
	char   *own[EVENT_FIELDS + 2];
	char	when[64];
	bool	other = false;
	struct table *t;

	/* An OTHER column only when some entry has a field beyond the known ones. */
	for (size_t i = 0; i < r->elements && !other; i++) {
		const redisReply *kv = r->element[i]->element[1];

		for (size_t j = 0; j + 1 < kv->elements && !other; j += 2)
			other = event_field(kv->element[j]) == EVENT_FIELDS;
	}
	t = table_create(EVENT_FIELDS + 1 + other, heads, right);
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i], *kv = e->element[1];
		char   *extra = NULL;
		size_t	extralen = 0;
		FILE   *fp = other ? open_memstream(&extra, &extralen) : NULL;

		if (other && fp == NULL)
			ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
		memset(own, 0, sizeof(own));
		cells[0] = event_time(e->element[0], false, when, sizeof(when)) ? when : "?";
		for (size_t c = 1; c < EVENT_FIELDS + 2; c++)
			cells[c] = "";
		for (size_t j = 0; j + 1 < kv->elements; j += 2) {
			const redisReply *f = kv->element[j], *val = kv->element[j + 1];
			size_t	c = event_field(f);

			if (c < EVENT_FIELDS) {
				free(own[c + 1]);
				own[c + 1] = text_clean(val->str, val->len);
				cells[c + 1] = own[c + 1];
			} else if (fp != NULL) {
				fprintf(fp, "%s%.*s=%.*s", ftell(fp) ? " " : "", (int) f->len, f->str,
					(int) val->len, val->str);
			}
		}
		if (fp != NULL) {
			fclose(fp);
			cells[EVENT_FIELDS + 1] = extra;
		}
		table_add(t, cells);
		for (size_t c = 0; c < EVENT_FIELDS + 2; c++)
			free(own[c]);
		free(extra);
	}
	table_print(t, stdout);
	table_free(t);
}

/* cmd_events - XREVRANGE PREFIXevents + - COUNT N */
static int
cmd_events(struct ctl *ctl, const struct ctl_job *job)
{
	char	count[32];
	const char *argv[6] = {"XREVRANGE", ctl->events, "+", "-", "COUNT", count};
	redisReply *r;

	snprintf(count, sizeof(count), "%zu", job->n);
	r = ctl_command(ctl, 6, argv);
	if (r->type != REDIS_REPLY_ARRAY)
		ctl_fail(CTL_EXIT_RUNTIME, "unexpected reply from Redis to XREVRANGE");
	for (size_t i = 0; i < r->elements; i++)
		if (!event_entry(r->element[i]))
			ctl_fail(CTL_EXIT_RUNTIME, "unexpected reply from Redis to XREVRANGE");
	if (ctl->json)
		events_json(r);
	else
		events_text(r);
	freeReplyObject(r);
	return 0;
}

int
main(int argc, char **argv)
{
	const struct ctl_command *c;
	struct qm_redis_conf rconf;
	struct ctl_args args;
	struct ctl_job job;
	struct ctl ctl;
	char	err[CTL_ERR_MAX];
	int	rc;

	args_parse(argc, argv, &args);
	c = command_find(args.cmd);
	job_make(c, &args, &job);

	memset(&ctl, 0, sizeof(ctl));
	ctl.json = args.json;
	if ((ctl.conf = conf_load(args.conf, err, sizeof(err))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "%s", err);
	if ((ctl.months = month_table_create(ctl.conf->timezone, err, sizeof(err))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "%s: %s", ctl.conf->path, err);
	if (!ctl_clock(&ctl))
		ctl_fail(CTL_EXIT_RUNTIME, "the clock is outside 1970-2199");
	if (job.month[0] == 0)
		memcpy(job.month, ctl.month_now, MONTH_KEY_LEN);
	if (keys_events(ctl.events, ctl.conf->redis.prefix) == 0)
		ctl_fail(CTL_EXIT_RUNTIME, "%s: bad Redis prefix \"%s\"", ctl.conf->path,
			 shown(ctl.conf->redis.prefix));

	/* One connection is all a sequential program uses. */
	rconf = ctl.conf->redis;
	rconf.pool_size = 1;
	if ((ctl.pool = redis_pool_create(&rconf, err, sizeof(err))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "%s: %s", ctl.conf->path, err);

	rc = c->fn(&ctl, &job);

	redis_pool_free(ctl.pool);
	month_table_free(ctl.months);
	conf_free(ctl.conf);
	free(args.arg);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "%s: cannot write the output: %s\n", CTL_NAME, strerror(errno));
		return CTL_EXIT_RUNTIME;
	}
	return rc;
}
