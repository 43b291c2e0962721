/*
 * month.h - calendar months of one time zone, without touching TZ later
 *
 * month_table_create() computes, once, the instant each month from 1970
 * to 2199 begins in the given zone (honouring DST and historical offset
 * changes). After that every lookup is a binary search in that table: no
 * call to localtime(), no dependence on the process's TZ variable, safe
 * from any thread.
 */
#ifndef QM_MONTH_H
#define QM_MONTH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define MONTH_KEY_LEN	8		/* "YYYY-MM" plus NUL */

struct month_table;

/*
 * month_table_create - build the table for a zone name such as "UTC" or
 * "Europe/Berlin". An unknown zone (no tzfile under /usr/share/zoneinfo
 * or $TZDIR), or one with "..", is an error: NULL with a reason in err.
 * It sets TZ briefly, and libc reads TZ while it formats times (syslog,
 * localtime) in any thread: call it before other threads start.
 */
struct month_table *month_table_create(const char *zone, char *err, size_t errlen);

/*
 * month_table_shared - the process's one table for a zone, made by
 * month_table_create() the first time the zone is asked for and kept
 * until exit (never free it). The first call for a zone sets TZ: make
 * it before other threads start (the daemon does, once, at start).
 */
const struct month_table *month_table_shared(const char *zone, char *err, size_t errlen);

/*
 * month_zone_known - would month_table_create() accept the zone? Reads
 * its tzfile's header only, TZ untouched: safe from any thread.
 */
bool	month_zone_known(const char *zone, char *err, size_t errlen);

/* month_table_free - release a table; NULL is allowed */
void	month_table_free(struct month_table *table);

/*
 * month_of - the "YYYY-MM" of instant t into buf (MONTH_KEY_LEN bytes).
 * Returns false when t lies outside the table.
 */
bool	month_of(const struct month_table *table, time_t t, char *buf);

/*
 * month_start - the instant the month "YYYY-MM" plus `add` months begins
 * (add may be negative). Returns (time_t)-1 when outside the table or
 * when the text is not a month. month_start(t, "2026-11", 1) is the end
 * of November 2026.
 */
time_t	month_start(const struct month_table *table, const char *month, int add);

/* month_valid - is the text a well-formed month "YYYY-MM" (1970-2199)? */
bool	month_valid(const char *month);

/*
 * month_zone_name_valid - the syntax of a zone name: 1 to 128 of A-Z a-z
 * 0-9 / _ + -, not starting with / and without "..": a name under the
 * zoneinfo folder, never a path out of it. Whether it exists is
 * month_zone_known()'s question.
 */
bool	month_zone_name_valid(const char *zone);

/*
 * Windows: the calendar day and the calendar hour of the zone, as the
 * month is its calendar month. A window is named by its local start,
 * "YYYY-MM-DD" or "YYYY-MM-DDTHH" (MONTH_WINDOW_LEN bytes with the NUL).
 */
enum month_window { MONTH_WINDOW_DAY, MONTH_WINDOW_HOUR };
#define MONTH_WINDOW_LEN	14

/*
 * month_window_of - the name of the day or hour instant t falls in, into
 * buf, and (end not NULL) the instant it ends: where the zone's clock
 * next shows another day or hour. An hour the clock shows twice (put
 * back) is one window of two hours. False when t lies outside the table.
 */
bool	month_window_of(const struct month_table *table, time_t t, enum month_window kind,
		char *buf, time_t *end);

/*
 * month_clock - instant t as the zone's clock shows it, "14:00 UTC", or
 * with date "2026-12-04 00:00 CET", into buf of len bytes. False when t
 * lies outside the table or buf is too small.
 */
bool	month_clock(const struct month_table *table, time_t t, bool date, char *buf, size_t len);

/*
 * month_window_valid - is the text a window name, "YYYY-MM-DD" or
 * "YYYY-MM-DDTHH" of 1970-2199? Its kind into *kind (when not NULL).
 */
bool	month_window_valid(const char *text, enum month_window *kind);

/* month_hour_of - is the text an hour window "YYYY-MM-DDTHH" of the month "YYYY-MM"? */
bool	month_hour_of(const char *hour, const char *month);

#endif
