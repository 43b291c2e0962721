/*
 * journal.h - what Redis must still be told, kept durably on local disk:
 * counts accepted while Redis was away (on_redis_error = accept), cancels
 * of charges in doubt whose message got a 451, and refusals not recorded.
 *
 * Line: ID MONTH ACCOUNT CATEGORY UNITS REFUSED [cancel|refused] [HOUR]; a
 * cancel or refusal's ID is a charge id (keys_charge_id_valid()); HOUR, the
 * charge's hour window "YYYY-MM-DDTHH" in MONTH, names the day and hour
 * hashes a count or cancel applies to (absent in files of versions before
 * caps, which stay readable; a version before caps sets a file with it
 * aside as *.bad). Each entry is applied once however often it is
 * replayed (quota.lua, op "replay").
 *
 * Files: FOLDER/journal.RANDOM.N.log, flocked by their writer; a replay
 * takes unlocked ones as replay.RANDOM.N.log and removes them when done;
 * an unreadable one is kept as *.bad.
 */
#ifndef QM_JOURNAL_H
#define QM_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "../conf/conf.h"
#include "month.h"

struct journal_entry {
	char	id[64];			/* unique: 64 random bits per process, sequence */
	char	month[8];		/* "YYYY-MM" the mail was accepted in */
	char	account[QM_ACCOUNT_MAX + 1];
	char	category[QM_NAME_MAX + 1];
	long long units;
	long long refused;		/* units refused at RCPT stage */
	bool	cancel;			/* settle a charge in doubt, see counters.h */
	bool	refusal;		/* record `refused` units refused for good */
	char	window[MONTH_WINDOW_LEN];	/* the charge's hour "YYYY-MM-DDTHH" in
					 * month, "" none (entries of older versions) */
};

struct journal;

/*
 * journal_open - use the folder (created if missing, mode 0750). Returns
 * NULL with a reason in err when it cannot be created or written.
 */
struct journal *journal_open(const char *folder, char *err, size_t errlen);

/* journal_close - free; entries stay on disk for the next start */
void	journal_close(struct journal *jr);

/*
 * journal_append - write the entry durably, under its own id when it has
 * one (a failed charge's charge_id), else a fresh one
 * (write, then fdatasync). A window that is not an hour of the entry's
 * month is dropped (the entry then touches no window), never written. Thread-safe. Returns 0, or -1 with err: then
 * the count is not kept and the caller must not accept the message.
 */
int	journal_append(struct journal *jr, struct journal_entry *entry,
		char *err, size_t errlen);

/*
 * journal_pending - are there entries waiting for Redis that this process
 * may take? Files another live milter holds do not count; they are
 * looked at again every few seconds, in case it died. Cheap.
 */
bool	journal_pending(struct journal *jr);

/* journal_waiting - how many entries wait in the folder now (for health reports) */
unsigned long long journal_waiting(struct journal *jr);

/*
 * journal_replay - apply every waiting entry with apply(); stop at the
 * first failure (Redis still away) and keep the rest for later. apply()
 * returns 0 when the entry is in Redis, JOURNAL_REJECTED when Redis will
 * never take it (the entry is then appended to FILE.rejected, reported
 * through warn(), and the replay goes on), or -1 when Redis failed.
 * Returns the number of entries applied, or -1 with err when apply()
 * failed. Unreadable files are kept as *.bad and reported through warn().
 */
#define JOURNAL_REJECTED	(-2)
typedef int (*journal_apply_fn)(void *arg, const struct journal_entry *entry,
		char *err, size_t errlen);
typedef void (*journal_warn_fn)(const char *text);
long	journal_replay(struct journal *jr, journal_apply_fn apply, void *arg,
		journal_warn_fn warn, char *err, size_t errlen);

/*
 * journal_set_aside - rename a file that cannot be used to PATH.bad and
 * report it through warn() as "WHAT PATH: WHY; kept as PATH.bad"
 */
void	journal_set_aside(const char *what, const char *path, const char *why,
		journal_warn_fn warn);

/* journal_parse_line - parse one journal line; false if malformed */
bool	journal_parse_line(const char *line, struct journal_entry *entry);

/*
 * journal_entry_valid - is the entry one that journal_parse_line() could
 * have made (every field terminated, in range, read back unchanged)?
 */
bool	journal_entry_valid(const struct journal_entry *entry);

#endif
