/*
 * month.c - calendar months of one time zone, computed once
 *
 * The table holds the instant each month from January 1970 to December
 * 2199 begins in the zone, plus one end sentinel (January 2200). It is
 * built with mktime() while TZ names the zone (its tzfile by absolute
 * path, or "UTC0"), under a mutex, and TZ is put back afterwards. From
 * then on a lookup is a bsearch(): no libc time zone state is read again,
 * so changing the process's TZ later changes nothing here. The mutex
 * orders builds only: setenv() races with any other thread's getenv(),
 * such as the one in syslog()'s localtime, so tables are built before
 * threads start.
 *
 * Why not localtime_r() per lookup: it reads the one process-wide zone
 * (which would have to stay the conf's, for syslog's stamps too, and
 * could not differ between two tables) and takes glibc's zone lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "month.h"

#define MONTH_FIRST_YEAR	1970
#define MONTH_LAST_YEAR		2199
#define MONTH_COUNT		((MONTH_LAST_YEAR - MONTH_FIRST_YEAR + 1) * 12)
#define MONTH_ZONE_MAX		128	/* longest zone name accepted */
#define MONTH_ZONEINFO		"/usr/share/zoneinfo"
#define MONTH_DIGITS		"0123456789"
#define MONTH_ABBR_MAX		15	/* longest zone abbreviation kept */
#define MONTH_STEP		(7 * 86400)	/* offsets are sampled weekly */
#define MONTH_ZONE_CHARS	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" MONTH_DIGITS "/_+-"

/* A stretch of time with one UTC offset and zone abbreviation. */
struct month_seg {
	time_t	start;			/* first instant of the stretch */
	long	gmtoff;			/* seconds east of UTC */
	char	abbr[MONTH_ABBR_MAX + 1];	/* "CET", "-03" */
};

struct month_table {
	time_t	start[MONTH_COUNT + 1];	/* start[i]: month i begins; last: sentinel */
	struct month_seg *seg;		/* ascending; seg[0] from before 1970 */
	size_t	seg_count;
};

static pthread_mutex_t month_tz_lock = PTHREAD_MUTEX_INITIALIZER;

/* month_zone_name_valid - the syntax of a zone name */
bool
month_zone_name_valid(const char *zone)
{
	size_t	len = strlen(zone);

	return len > 0 && len <= MONTH_ZONE_MAX && zone[strspn(zone, MONTH_ZONE_CHARS)] == 0
	    && zone[0] != '/' && strstr(zone, "..") == NULL;
}

/* month_zone_path - check a zone name and find its tzfile */
static bool
month_zone_path(const char *zone, char *path, size_t pathlen, char *err, size_t errlen)
{
	const char *dir;
	unsigned char magic[4];
	struct stat st;
	int	fd;

	if (!month_zone_name_valid(zone)) {
		snprintf(err, errlen, "time zone \"%.40s\": not a zone name such as Europe/Berlin",
			 zone);
		return false;
	}
	dir = getenv("TZDIR");
	if (dir == NULL || *dir == 0)
		dir = MONTH_ZONEINFO;
	if ((size_t) snprintf(path, pathlen, "%s/%s", dir, zone) >= pathlen) {
		snprintf(err, errlen, "time zone \"%s\": path too long", zone);
		return false;
	}

	/*
	 * glibc treats a TZ it cannot load as UTC without a word, so the file
	 * must exist and really be a tzfile (zoneinfo also holds zone.tab and
	 * directories).
	 */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "unknown time zone \"%s\": %s: %s", zone, path, strerror(errno));
		return false;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)
	    || read(fd, magic, sizeof(magic)) != (ssize_t) sizeof(magic)
	    || memcmp(magic, "TZif", 4) != 0) {
		close(fd);
		snprintf(err, errlen, "unknown time zone \"%s\": %s is not a tzfile", zone, path);
		return false;
	}
	close(fd);
	return true;
}

/* month_zone_known - is the zone UTC or a tzfile, without touching TZ? */
bool
month_zone_known(const char *zone, char *err, size_t errlen)
{
	char    path[PATH_MAX];

	return strcmp(zone, "UTC") == 0 || month_zone_path(zone, path, sizeof(path), err, errlen);
}

/* month_table_fill - compute every month start with mktime() in the current TZ */
static bool
month_table_fill(struct month_table *table)
{
	struct tm tm;

	for (int i = 0; i <= MONTH_COUNT; i++) {
		memset(&tm, 0, sizeof(tm));
		tm.tm_year = MONTH_FIRST_YEAR + i / 12 - 1900;
		tm.tm_mon = i % 12;
		tm.tm_mday = 1;
		tm.tm_isdst = -1;
		/* No month begins at 23:59:59 UTC, so -1 is always an error. */
		if ((table->start[i] = mktime(&tm)) == (time_t) -1)
			return false;
		if (i > 0 && table->start[i] <= table->start[i - 1])
			return false;
	}
	return true;
}

/* month_local - offset and abbreviation at t in the current TZ; false on error */
static bool
month_local(time_t t, struct month_seg *seg)
{
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL)
		return false;
	seg->start = t;
	seg->gmtoff = tm.tm_gmtoff;
	snprintf(seg->abbr, sizeof(seg->abbr), "%s", tm.tm_zone ? tm.tm_zone : "");
	return true;
}

/* month_seg_same - one offset and abbreviation? */
static bool
month_seg_same(const struct month_seg *a, const struct month_seg *b)
{
	return a->gmtoff == b->gmtoff && strcmp(a->abbr, b->abbr) == 0;
}

/* month_seg_add - append a stretch; false when out of memory */
static bool
month_seg_add(struct month_table *table, const struct month_seg *seg, size_t *room)
{
	if (table->seg_count == *room) {
		size_t	n = *room ? *room * 2 : 64;
		struct month_seg *grown = realloc(table->seg, n * sizeof(*grown));

		if (grown == NULL)
			return false;
		table->seg = grown;
		*room = n;
	}
	table->seg[table->seg_count++] = *seg;
	return true;
}

/*
 * month_segs_fill - the zone's offset changes from 1970 to 2200, in the
 * current TZ: sampled weekly (no zone changes twice within a week), each
 * change found to the second by bisection.
 */
static bool
month_segs_fill(struct month_table *table)
{
	struct month_seg prev, next, mid;
	size_t	room = 0;
	time_t	end = table->start[MONTH_COUNT];

	if (!month_local(table->start[0] - 86400, &prev) || !month_seg_add(table, &prev, &room))
		return false;
	for (time_t t = table->start[0]; t < end + MONTH_STEP; t += MONTH_STEP) {
		time_t	lo = t - MONTH_STEP, hi = t;

		if (!month_local(t, &next))
			return false;
		if (month_seg_same(&prev, &next))
			continue;
		/* prev holds at lo, next at hi: the change is in (lo, hi]. */
		while (hi - lo > 1) {
			if (!month_local(lo + (hi - lo) / 2, &mid))
				return false;
			if (month_seg_same(&prev, &mid))
				lo = mid.start;
			else
				hi = mid.start;
		}
		if (!month_local(hi, &next) || !month_seg_add(table, &next, &room))
			return false;
		prev = next;
	}
	return true;
}

/* month_table_create - build the table for a zone */
struct month_table *
month_table_create(const char *zone, char *err, size_t errlen)
{
	struct month_table *table;
	char    path[PATH_MAX], tzvalue[PATH_MAX + 2];
	char   *saved = NULL;
	const char *old;
	bool    ok;

	if (zone == NULL)
		zone = "UTC";
	/* UTC needs no tzfile; a leading ':' makes glibc read exactly this file. */
	if (strcmp(zone, "UTC") == 0)
		snprintf(tzvalue, sizeof(tzvalue), "UTC0");
	else if (month_zone_path(zone, path, sizeof(path), err, errlen))
		snprintf(tzvalue, sizeof(tzvalue), ":%s", path);
	else
		return NULL;
	if ((table = calloc(1, sizeof(*table))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}

	pthread_mutex_lock(&month_tz_lock);
	if ((old = getenv("TZ")) != NULL && (saved = strdup(old)) == NULL) {
		pthread_mutex_unlock(&month_tz_lock);
		free(table);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (setenv("TZ", tzvalue, 1) < 0) {
		ok = false;
	} else {
		tzset();
		ok = month_table_fill(table) && month_segs_fill(table);
	}
	if (saved != NULL)
		(void) setenv("TZ", saved, 1);
	else
		(void) unsetenv("TZ");
	tzset();
	pthread_mutex_unlock(&month_tz_lock);
	free(saved);

	if (!ok) {
		month_table_free(table);
		snprintf(err, errlen, "time zone \"%s\": cannot compute month starts 1970-2199", zone);
		return NULL;
	}
	return table;
}

/* One table per zone for the whole process, see month_table_shared(). */
struct month_shared {
	struct month_shared *next;
	char   *zone;
	struct month_table *table;
};
static pthread_mutex_t month_shared_lock = PTHREAD_MUTEX_INITIALIZER;
static struct month_shared *month_shared_list;

/* month_table_shared - the process's one table for a zone */
const struct month_table *
month_table_shared(const char *zone, char *err, size_t errlen)
{
	struct month_shared *ms;
	struct month_table *table = NULL;

	pthread_mutex_lock(&month_shared_lock);
	for (ms = month_shared_list; ms != NULL; ms = ms->next)
		if (strcmp(ms->zone, zone) == 0)
			break;
	if (ms != NULL) {
		table = ms->table;
	} else if ((table = month_table_create(zone, err, errlen)) != NULL) {
		if ((ms = calloc(1, sizeof(*ms))) == NULL || (ms->zone = strdup(zone)) == NULL) {
			free(ms);
			month_table_free(table);
			snprintf(err, errlen, "out of memory");
			table = NULL;
		} else {
			ms->table = table;
			ms->next = month_shared_list;
			month_shared_list = ms;
		}
	}
	pthread_mutex_unlock(&month_shared_lock);
	return table;
}

/* month_table_free - release a table */
void
month_table_free(struct month_table *table)
{
	if (table != NULL)
		free(table->seg);
	free(table);
}

/* month_cmp - bsearch() order: the month holding *key is start[i] <= t < start[i + 1] */
static int
month_cmp(const void *key, const void *elem)
{
	time_t	t = *(const time_t *) key;
	const time_t *start = elem;

	return t < start[0] ? -1 : t >= start[1];
}

/* month_of - the month instant t falls in */
bool
month_of(const struct month_table *table, time_t t, char *buf)
{
	const time_t *found;
	struct tm tm = {0};

	/* Only the MONTH_COUNT real months are searched: each reads its successor. */
	if ((found = bsearch(&t, table->start, MONTH_COUNT, sizeof(time_t), month_cmp)) == NULL)
		return false;
	tm.tm_year = MONTH_FIRST_YEAR - 1900 + (int) (found - table->start) / 12;
	tm.tm_mon = (int) (found - table->start) % 12;
	return strftime(buf, MONTH_KEY_LEN, "%Y-%m", &tm) == MONTH_KEY_LEN - 1;
}

/* month_parse - year and month of a well-formed "YYYY-MM"; false otherwise */
static bool
month_parse(const char *month, int *year, int *mon)
{
	/* strtol() and sscanf() would take signs, blanks and longer numbers. */
	if (month == NULL || strlen(month) != 7 || strspn(month, MONTH_DIGITS) != 4
	    || month[4] != '-' || strspn(month + 5, MONTH_DIGITS) != 2)
		return false;
	*year = atoi(month);
	*mon = atoi(month + 5);
	return *year >= MONTH_FIRST_YEAR && *year <= MONTH_LAST_YEAR && *mon >= 1 && *mon <= 12;
}

/* month_start - the instant a month (plus add months) begins */
time_t
month_start(const struct month_table *table, const char *month, int add)
{
	long long idx;
	int	year, mon;

	if (!month_parse(month, &year, &mon))
		return (time_t) -1;
	idx = (long long) (year - MONTH_FIRST_YEAR) * 12 + (mon - 1) + add;
	/* The sentinel is the end of December 2199, so it is a valid answer. */
	if (idx < 0 || idx > MONTH_COUNT)
		return (time_t) -1;
	return table->start[idx];
}

/* month_valid - is the text "YYYY-MM" within 1970-01..2199-12? */
bool
month_valid(const char *month)
{
	int	year, mon;

	return month_parse(month, &year, &mon);
}

/* month_seg_at - the stretch holding t (t within the table) */
static const struct month_seg *
month_seg_at(const struct month_table *table, time_t t)
{
	size_t	lo = 0, hi = table->seg_count;

	/* The last stretch whose start is <= t; seg[0] starts before 1970. */
	while (hi - lo > 1) {
		size_t	mid = lo + (hi - lo) / 2;

		if (table->seg[mid].start <= t)
			lo = mid;
		else
			hi = mid;
	}
	return &table->seg[lo];
}

/* month_in_table - is t within January 1970 to December 2199 of the zone? */
static bool
month_in_table(const struct month_table *table, time_t t)
{
	return t >= table->start[0] && t < table->start[MONTH_COUNT];
}

/* month_floor - t rounded down to a multiple of step (t may be negative) */
static time_t
month_floor(time_t t, time_t step)
{
	time_t	r = t % step;

	return r < 0 ? t - r - step : t - r;
}

/* month_window_of - the window holding t, and its end */
bool
month_window_of(const struct month_table *table, time_t t, enum month_window kind,
		char *buf, time_t *end)
{
	const struct month_seg *seg;
	time_t	step = kind == MONTH_WINDOW_HOUR ? 3600 : 86400;
	time_t	local, local_end, until;
	struct tm tm;

	if (!month_in_table(table, t))
		return false;
	seg = month_seg_at(table, t);
	local = t + seg->gmtoff;
	if (gmtime_r(&local, &tm) == NULL
	    || strftime(buf, MONTH_WINDOW_LEN, kind == MONTH_WINDOW_HOUR ? "%Y-%m-%dT%H" : "%Y-%m-%d",
			&tm) == 0)
		return false;
	/*
	 * It ends where the clock next shows the start of another hour or day:
	 * the local end in the offset of the stretch it falls in. A clock put
	 * back shows an hour twice: both are that hour's window.
	 */
	local_end = month_floor(local, step) + step;
	until = local_end - seg->gmtoff;
	while (seg + 1 < table->seg + table->seg_count && seg[1].start <= until) {
		seg++;
		until = local_end - seg->gmtoff;
		if (until <= seg->start)	/* that local time does not exist */
			until = seg->start;
	}
	if (end != NULL)
		*end = until;
	return true;
}

/* month_clock - instant t on the zone's clock, "HH:MM ZONE", with the date before it when asked */
bool
month_clock(const struct month_table *table, time_t t, bool date, char *buf, size_t len)
{
	const struct month_seg *seg;
	time_t	local;
	struct tm tm;
	char	when[32];

	if (!month_in_table(table, t))
		return false;
	seg = month_seg_at(table, t);
	local = t + seg->gmtoff;
	if (gmtime_r(&local, &tm) == NULL
	    || strftime(when, sizeof(when), date ? "%Y-%m-%d %H:%M" : "%H:%M", &tm) == 0)
		return false;
	return (size_t) snprintf(buf, len, "%s %s", when, seg->abbr) < len;
}

/* month_window_valid - "YYYY-MM-DD" or "YYYY-MM-DDTHH" within the table's years */
bool
month_window_valid(const char *text, enum month_window *kind)
{
	char	month[MONTH_KEY_LEN];
	size_t	len = text ? strlen(text) : 0;
	int	day, hour;

	if ((len != 10 && len != 13) || text[7] != '-' || strspn(text + 8, MONTH_DIGITS) != 2)
		return false;
	memcpy(month, text, 7);
	month[7] = 0;
	if (!month_valid(month))
		return false;
	day = atoi(text + 8);
	if (day < 1 || day > 31)
		return false;
	if (len == 13) {
		if (text[10] != 'T' || strspn(text + 11, MONTH_DIGITS) != 2 || (hour = atoi(text + 11)) > 23)
			return false;
	}
	if (kind != NULL)
		*kind = len == 13 ? MONTH_WINDOW_HOUR : MONTH_WINDOW_DAY;
	return true;
}

/* month_hour_of - is the text an hour window "YYYY-MM-DDTHH" of the month? */
bool
month_hour_of(const char *hour, const char *month)
{
	enum month_window kind;

	return month_window_valid(hour, &kind) && kind == MONTH_WINDOW_HOUR
	    && strncmp(hour, month, MONTH_KEY_LEN - 1) == 0;
}
