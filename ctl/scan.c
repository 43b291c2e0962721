/*
 * scan.c - every account of a month: top and export
 *
 * The accounts with usage in a month are found with SCAN, MATCH on the
 * usage key pattern and COUNT 1000: Redis does a bounded amount of work
 * per call, so even 100 000 accounts never block it (KEYS would). The
 * pattern is derived from keys_usage() itself (scan_keys(), which the
 * fleet's host keys use too), and each key found must have exactly its
 * head and tail, so the key layout stays in counters/keys.c alone.
 *
 * top --by daily|hourly scans the same way for the keys of today's or
 * this hour's window (ctl_usage_key() builds both kinds).
 *
 * top keeps only the best N in memory: a min-heap whose root is the
 * weakest of the N, with a small hash set of its accounts (SCAN may
 * return a key twice). export needs every account sorted, so it keeps
 * the names, then reads the rows in pipelined batches.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"


/* glob_escape - s with Redis glob metacharacters backslashed, into out */
static void
glob_escape(const char *s, size_t len, char *out)
{
	size_t	o = 0;

	for (size_t i = 0; i < len; i++) {
		if (strchr("*?[]\\^", s[i]) != NULL)
			out[o++] = '\\';
		out[o++] = s[i];
	}
	out[o] = 0;
}

/*
 * scan_account - the account of a usage key whose head and tail scan_keys()
 * matched exactly: with a valid id between them, it is the very key
 * ctl_usage_key() builds (no id holds a ':' or a brace, so no day or hour key
 * gets into a scan of the month, nor an hour's into a scan of its day)
 */
static bool
scan_account(const char *id, size_t len, char *account)
{
	if (len == 0 || len > QM_ACCOUNT_MAX)
		return false;
	memcpy(account, id, len);
	account[len] = 0;
	return account_valid(account, NULL);
}

/* scan_keys - SCAN for the keys built like sample, batch by batch */
int
scan_keys(struct ctl *ctl, const char *sample, scan_keys_fn fn, void *arg, char *err,
	  size_t errlen)
{
	char	pattern[2 * KEYS_MAX + 2], cursor[32] = "0";
	const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", CTL_SCAN_COUNT};
	const char *hole = strstr(sample, "{" SCAN_PLACEHOLDER "}");
	size_t	headlen, taillen;
	const char **ids = NULL;
	size_t *lens = NULL;
	size_t	cap = 0;
	int	rc = 0;

	if (hole == NULL) {
		snprintf(err, errlen, "cannot build the keys to scan");
		return -1;
	}
	headlen = (size_t) (hole - sample) + 1;
	taillen = strlen(hole) - strlen(SCAN_PLACEHOLDER) - 1;
	glob_escape(sample, headlen, pattern);
	strcat(pattern, "*");
	glob_escape(hole + 1 + strlen(SCAN_PLACEHOLDER), taillen, pattern + strlen(pattern));

	do {
		redisReply *r, *keys;
		size_t	count = 0;

		if ((r = redis_pool_command(ctl->pool, 6, argv, NULL, err, errlen)) == NULL)
			return -1;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
		    || r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(cursor)
		    || r->element[1]->type != REDIS_REPLY_ARRAY) {
			snprintf(err, errlen, "unexpected reply from Redis to SCAN");
			freeReplyObject(r);
			rc = -1;
			break;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len);
		cursor[r->element[0]->len] = 0;
		keys = r->element[1];
		if (keys->elements > cap) {
			const char **grown = realloc(ids, keys->elements * sizeof(*ids));
			size_t *grown_lens = grown != NULL
			    ? realloc(lens, keys->elements * sizeof(*lens)) : NULL;

			if (grown == NULL || grown_lens == NULL)
				ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
			ids = grown;
			lens = grown_lens;
			cap = keys->elements;
		}
		/* The text in the braces, of a key that has the sample's head and tail. */
		for (size_t i = 0; i < keys->elements; i++) {
			const redisReply *k = keys->element[i];

			if (k->type == REDIS_REPLY_STRING && k->len > headlen + taillen
			    && memcmp(k->str, sample, headlen) == 0
			    && memcmp(k->str + k->len - taillen, hole + 1 + strlen(SCAN_PLACEHOLDER),
				      taillen) == 0) {
				ids[count] = k->str + headlen;
				lens[count++] = k->len - headlen - taillen;
			}
		}
		if (count > 0)
			rc = fn(ctl, ids, lens, count, arg, err, errlen);
		freeReplyObject(r);
	} while (rc == 0 && strcmp(cursor, "0") != 0);
	free(ids);
	free(lens);
	return rc;
}

/* The accounts of a month's usage keys, for scan_usage's caller. */
struct scan_usage_arg {
	const char *month;
	scan_fn	fn;
	void   *arg;
};

/* scan_usage_batch - scan_keys() callback: the valid accounts, to the caller's fn */
static int
scan_usage_batch(struct ctl *ctl, const char **ids, const size_t *lens, size_t count, void *arg,
		 char *err, size_t errlen)
{
	struct scan_usage_arg *ua = arg;
	char	account[QM_ACCOUNT_MAX + 1];
	char  **batch = xcalloc(count, sizeof(char *));
	size_t	n = 0;
	int	rc = 0;

	for (size_t i = 0; i < count; i++)
		if (scan_account(ids[i], lens[i], account)
		    && (batch[n++] = strdup(account)) == NULL)
			ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	if (n > 0)
		rc = ua->fn(ctl, batch, n, ua->arg, err, errlen);
	for (size_t i = 0; i < n; i++)
		free(batch[i]);
	free(batch);
	return rc;
}

/* scan_usage - SCAN for the month's (or window's) usage keys, batch by batch */
int
scan_usage(struct ctl *ctl, const char *month, scan_fn fn, void *arg, char *err, size_t errlen)
{
	struct scan_usage_arg ua = {month, fn, arg};
	char	sample[KEYS_MAX];

	if (ctl_usage_key(ctl, sample, SCAN_PLACEHOLDER, month) == 0) {
		snprintf(err, errlen, "cannot build the usage keys of %s", month);
		return -1;
	}
	return scan_keys(ctl, sample, scan_usage_batch, &ua, err, errlen);
}

/* One account of the top: its total when scanned. */
struct top_entry {
	long long total;
	char   *account;		/* owned; also in the set */
};

struct top {
	const char *month;		/* or window */
	size_t	n;			/* how many to keep */
	size_t	count;			/* in the heap now */
	struct top_entry *heap;		/* min-heap: heap[0] is the weakest */
	char  **set;			/* open addressing, linear probing */
	size_t	mask;			/* set size - 1 (a power of two > 2n) */
};

/* top_better - does a rank above b? Higher total first, then account name. */
static bool
top_better(const struct top_entry *a, const struct top_entry *b)
{
	if (a->total != b->total)
		return a->total > b->total;
	return strcmp(a->account, b->account) < 0;
}

/* top_hash - FNV-1a of an account */
static size_t
top_hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 1099511628211ULL;
	return (size_t) h;
}

/* top_find - the slot holding account, or the empty slot where it would go */
static size_t
top_find(const struct top *top, const char *account)
{
	size_t	i = top_hash(account) & top->mask;

	while (top->set[i] != NULL && strcmp(top->set[i], account) != 0)
		i = (i + 1) & top->mask;
	return i;
}

/* top_unset - remove an account from the set, shifting back its followers */
static void
top_unset(struct top *top, const char *account)
{
	size_t	i = top_find(top, account), j = i, k;

	if (top->set[i] == NULL)
		return;
	top->set[i] = NULL;
	for (;;) {
		j = (j + 1) & top->mask;
		if (top->set[j] == NULL)
			break;
		k = top_hash(top->set[j]) & top->mask;
		/* An entry whose home lies cyclically in (i, j] stays where it is. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		top->set[i] = top->set[j];
		top->set[j] = NULL;
		i = j;
	}
}

/* top_sift_down - restore the heap below slot i */
static void
top_sift_down(struct top *top, size_t i)
{
	for (;;) {
		size_t	l = 2 * i + 1, r = l + 1, w = i;
		struct top_entry tmp;

		if (l < top->count && top_better(&top->heap[w], &top->heap[l]))
			w = l;
		if (r < top->count && top_better(&top->heap[w], &top->heap[r]))
			w = r;
		if (w == i)
			return;
		tmp = top->heap[i];
		top->heap[i] = top->heap[w];
		top->heap[w] = tmp;
		i = w;
	}
}

/* top_sift_up - restore the heap above slot i */
static void
top_sift_up(struct top *top, size_t i)
{
	while (i > 0) {
		size_t	p = (i - 1) / 2;
		struct top_entry tmp;

		if (!top_better(&top->heap[p], &top->heap[i]))
			return;
		tmp = top->heap[i];
		top->heap[i] = top->heap[p];
		top->heap[p] = tmp;
		i = p;
	}
}

/* top_offer - keep the account if it ranks among the best n; takes *account */
static void
top_offer(struct top *top, char **account, long long total)
{
	struct top_entry e = {total, *account};
	size_t	slot;

	if (top->set[slot = top_find(top, e.account)] != NULL)
		return;			/* seen already: SCAN returned it twice */
	if (top->count == top->n) {
		if (!top_better(&e, &top->heap[0]))
			return;
		top_unset(top, top->heap[0].account);
		free(top->heap[0].account);
		top->heap[0] = e;
		top_sift_down(top, 0);
	} else {
		top->heap[top->count++] = e;
		top_sift_up(top, top->count - 1);
	}
	top->set[top_find(top, e.account)] = e.account;
	*account = NULL;
}

/* top_batch - scan callback: one pipelined HGET total per account */
static int
top_batch(struct ctl *ctl, char **accounts, size_t count, void *arg, char *err, size_t errlen)
{
	struct top *top = arg;
	struct redis_cmd *cmds = calloc(count, sizeof(*cmds));
	char   (*keys)[KEYS_MAX] = calloc(count, KEYS_MAX);
	const char *(*argv)[3] = calloc(count, sizeof(*argv));
	redisReply **replies = calloc(count, sizeof(*replies));
	long long total;
	int	rc = 0;

	if (cmds == NULL || keys == NULL || argv == NULL || replies == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	for (size_t i = 0; i < count; i++) {
		ctl_usage_key(ctl, keys[i], accounts[i], top->month);
		argv[i][0] = "HGET";
		argv[i][1] = keys[i];
		argv[i][2] = USAGE_TOTAL;
		cmds[i] = (struct redis_cmd) {3, argv[i], NULL};
	}
	if (redis_pool_run(ctl->pool, cmds, count, replies, err, errlen) < 0) {
		rc = -1;
	} else {
		for (size_t i = 0; i < count; i++) {
			const redisReply *r = replies[i];

			if (r->type == REDIS_REPLY_NIL) {
				total = 0;	/* only refused units, or gone meanwhile */
			} else if (r->type == REDIS_REPLY_STRING && ctl_int(r->str, r->len, &total)) {
				/* counted */
			} else {
				ctl_warn("%s: %s is not a count, account skipped", keys[i],
					 r->type == REDIS_REPLY_ERROR ? r->str : "total");
				continue;
			}
			top_offer(top, &accounts[i], total);
		}
	}
	for (size_t i = 0; i < count; i++)
		freeReplyObject(replies[i]);
	free(cmds);
	free(keys);
	free(argv);
	free(replies);
	return rc;
}

/* row_cmp - sort rows: highest rank (used) first, then by account */
static int
row_cmp(const void *a, const void *b)
{
	const struct ctl_row *x = a, *y = b;

	if (x->rank != y->rank)
		return x->rank > y->rank ? -1 : 1;
	return strcmp(x->account, y->account);
}

/* top_print - the rows as a table or JSON */
static void
top_print(struct ctl *ctl, const char *month, enum ctl_by by, struct ctl_row *rows, size_t count)
{
	static const char *const heads[] = {"ACCOUNT", "PLAN", "USED", "LIMIT", "REMAINING",
		"PERCENT", "STATUS"};
	static const char *const wheads[] = {"ACCOUNT", "PLAN", "WINDOW", "USED", "CAP",
		"REMAINING", "STATUS"};
	static const bool right[] = {false, false, true, true, true, true, false};
	static const bool wright[] = {false, false, false, true, true, true, false};
	char	used[32], limit[32], remaining[32], percent[32];
	struct table *t;

	if (ctl->json) {
		fputs("{\"month\":", stdout);
		json_cstr(stdout, month);
		fputs(",\"by\":", stdout);
		json_cstr(stdout, by == CTL_BY_MONTH ? "monthly" : ctl_kinds[by].name);
		fputs(",\"window\":", stdout);
		json_cstr(stdout, by == CTL_BY_MONTH ? NULL : ctl->now[by].name);
		fputs(",\"accounts\":[", stdout);
		for (size_t i = 0; i < count; i++) {
			if (i > 0)
				putchar(',');
			row_json(ctl, &rows[i], NULL, false, stdout);
			putchar('}');
		}
		fputs("]}\n", stdout);
		return;
	}
	t = by == CTL_BY_MONTH ? table_create(7, heads, right) : table_create(7, wheads, wright);
	for (size_t i = 0; i < count; i++) {
		const struct ctl_row *r = &rows[i];
		const char *cells[7];

		snprintf(used, sizeof(used), "%lld", r->rank);
		cells[0] = r->account;
		cells[1] = r->plan ? r->plan : "-";
		cells[6] = counters_status_name(r->status);
		if (by == CTL_BY_MONTH) {
			cells[2] = used;
			cells[3] = row_limit_text(r, limit, sizeof(limit));
			cells[4] = row_remaining_text(r, remaining, sizeof(remaining));
			cells[5] = row_percent_text(r, percent, sizeof(percent));
		} else {
			const struct ctl_window *w = &r->win[by];

			cells[2] = ctl->now[by].name;
			cells[3] = used;
			cells[4] = limit_text(w->has_cap, w->cap, limit, sizeof(limit));
			cells[5] = left_text(w->has_cap, w->cap, w->used, remaining, sizeof(remaining));
		}
		table_add(t, cells);
	}
	table_print(t, stdout);
	table_free(t);
}

/*
 * top_run - the n accounts with the highest total in month, or (by a
 * window) in this day or this hour, whose month is the current one
 */
int
top_run(struct ctl *ctl, const char *month, enum ctl_by by, size_t n)
{
	struct top top = {by == CTL_BY_MONTH ? month : ctl->now[by].name, n, 0, NULL, NULL, 0};
	struct ctl_row *rows;
	char	err[CTL_ERR_MAX];
	size_t	setsize = 16, kept = 0;
	int	rc;

	if (by != CTL_BY_MONTH)
		month = ctl->month_now;
	while (setsize < 2 * n + 1)
		setsize *= 2;
	top.mask = setsize - 1;
	if ((top.heap = calloc(n, sizeof(*top.heap))) == NULL
	    || (top.set = calloc(setsize, sizeof(char *))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	rc = scan_usage(ctl, top.month, top_batch, &top, err, sizeof(err));

	if ((rows = calloc(top.count + 1, sizeof(*rows))) == NULL)
		ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
	for (size_t i = 0; i < top.count; i++) {
		row_init(ctl, &rows[i], top.heap[i].account);
		free(top.heap[i].account);
	}
	free(top.heap);
	free(top.set);

	/* Fresh rows for the winners; drop a hash that went away meanwhile. */
	if (rc == 0 && (rc = rows_fetch(ctl, rows, top.count, month, err, sizeof(err))) == 0) {
		for (size_t i = 0; i < top.count; i++) {
			struct ctl_row *r = &rows[i];

			if (by == CTL_BY_MONTH ? r->exists : r->windows && r->win[by].exists) {
				r->rank = by == CTL_BY_MONTH ? r->used : r->win[by].used;
				rows[kept++] = *r;
			} else {
				row_free(r);
			}
		}
		qsort(rows, kept, sizeof(*rows), row_cmp);
		top_print(ctl, month, by, rows, kept);
	} else {
		kept = top.count;
	}
	for (size_t i = 0; i < kept; i++)
		row_free(&rows[i]);
	free(rows);
	if (rc != 0) {
		fprintf(stderr, "%s: %s\n", CTL_NAME, err);
		return CTL_EXIT_RUNTIME;
	}
	return 0;
}

/* Every account of the month, for export. */
struct names {
	char  **v;
	size_t	count;
	size_t	cap;
};

/* export_batch - scan callback: keep the names (taking them) */
static int
export_batch(struct ctl *ctl, char **accounts, size_t count, void *arg, char *err, size_t errlen)
{
	struct names *names = arg;

	(void) ctl;
	(void) err;
	(void) errlen;
	names->v = ctl_grow(names->v, &names->cap, names->count + count, sizeof(char *), 1024);
	for (size_t i = 0; i < count; i++) {
		names->v[names->count++] = accounts[i];
		accounts[i] = NULL;
	}
	return 0;
}

/* name_cmp - qsort by byte order of the account ids */
static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* export_head - the CSV header row */
static void
export_head(struct ctl *ctl)
{
	fputs("account,plan,limit,total,messages", stdout);
	for (size_t i = 0; i < ctl->conf->category_count; i++) {
		putchar(',');
		csv_field(stdout, ctl->conf->categories[i].name);
	}
	fputs(",refused\n", stdout);
}

/* export_row - one CSV row: limit -1 when unlimited, empty when unknown */
static void
export_row(struct ctl *ctl, const struct ctl_row *row)
{
	csv_field(stdout, row->account);
	putchar(',');
	csv_field(stdout, row->plan ? row->plan : "");
	putchar(',');
	if (row->has_limit)
		printf("%lld", row->limit);
	printf(",%lld,%lld", row->used, row->messages);
	for (size_t i = 0; i < ctl->conf->category_count; i++)
		printf(",%lld", row->cats[i]);
	printf(",%lld\n", row->refused);
}

/* export_run - every account with usage in month, sorted, as CSV or JSON */
int
export_run(struct ctl *ctl, const char *month)
{
	struct names names = {NULL, 0, 0};
	struct ctl_row *rows;
	char	err[CTL_ERR_MAX];
	size_t	unique = 0;
	bool	first = true;
	int	rc;

	rc = scan_usage(ctl, month, export_batch, &names, err, sizeof(err));
	if (rc == 0) {
		if (names.count > 0)
			qsort(names.v, names.count, sizeof(char *), name_cmp);
		for (size_t i = 0; i < names.count; i++) {
			if (unique > 0 && strcmp(names.v[unique - 1], names.v[i]) == 0)
				free(names.v[i]);
			else
				names.v[unique++] = names.v[i];
		}
		names.count = unique;
		if ((rows = calloc(CTL_BATCH, sizeof(*rows))) == NULL)
			ctl_fail(CTL_EXIT_RUNTIME, "out of memory");
		if (ctl->json) {
			fputs("{\"month\":", stdout);
			json_cstr(stdout, month);
			fputs(",\"accounts\":[", stdout);
		} else {
			export_head(ctl);
		}
		for (size_t done = 0; done < names.count && rc == 0; done += CTL_BATCH) {
			size_t	n = names.count - done < CTL_BATCH ? names.count - done : CTL_BATCH;

			for (size_t i = 0; i < n; i++)
				row_init(ctl, &rows[i], names.v[done + i]);
			rc = rows_fetch(ctl, rows, n, month, err, sizeof(err));
			for (size_t i = 0; i < n; i++) {
				if (rc == 0 && rows[i].exists) {
					if (!ctl->json) {
						export_row(ctl, &rows[i]);
					} else {
						if (!first)
							putchar(',');
						row_json(ctl, &rows[i], NULL, true, stdout);
						putchar('}');
					}
					first = false;
				}
				row_free(&rows[i]);
			}
		}
		if (ctl->json && rc == 0)
			fputs("]}\n", stdout);
		free(rows);
	}
	for (size_t i = 0; i < names.count; i++)
		free(names.v[i]);
	free(names.v);
	if (rc != 0) {
		fflush(stdout);
		fprintf(stderr, "%s: %s\n", CTL_NAME, err);
		return CTL_EXIT_RUNTIME;
	}
	return 0;
}
