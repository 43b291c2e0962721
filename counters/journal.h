/*
 * journal.h - counts kept on local disk while Redis cannot be reached
 *
 * With on_redis_error = accept, a counted message that could not be
 * charged is appended to a journal file in the journal folder and the
 * file is fsynced before the message is accepted, so an accepted message
 * is never lost to a crash. journal_replay() later applies each entry to
 * Redis; every entry carries an id that Redis remembers (see quota.lua,
 * op "replay"), so an entry applied twice, for instance when the milter
 * is killed in the middle of a replay, is counted once.
 *
 * The same files keep cancels (journal_entry.cancel): with the other
 * failure modes, a charge that failed in doubt (Redis may have run it)
 * and whose message got a 451 is taken back once Redis answers again.
 *
 * The same files keep refusals (journal_entry.refusal) that could not be
 * recorded: RCPT-stage refusals are statistics, made exact this way.
 *
 * Line: ID MONTH ACCOUNT CATEGORY UNITS REFUSED, and " cancel" for a
 * cancel (its ID is then the charge's id, 16 hex digits), " refused" for
 * a refusal (its ID the refusal's, 16 hex digits; UNITS 0).
 *
 * Files: FOLDER/journal.RANDOM.N.log while written (RANDOM: 64 bits drawn
 * per process), renamed to FOLDER/replay.RANDOM.N.log when a replay takes
 * them, removed once every entry is in Redis. A file that cannot be read or parsed is renamed to
 * *.bad, kept and reported, never deleted.
 *
 * Milters may share the folder: the writer of a file holds an flock on it
 * while it is open, and a replay holds one on the file it replays. A
 * replay takes only files whose lock is free: those of milters that died
 * or stopped, the ones it released itself, and failed replays.
 */
#ifndef QM_JOURNAL_H
#define QM_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "../conf/conf.h"

struct journal_entry {
	char	id[64];			/* unique: 64 random bits per process, sequence */
	char	month[8];		/* "YYYY-MM" the mail was accepted in */
	char	account[QM_ACCOUNT_MAX + 1];
	char	category[QM_NAME_MAX + 1];
	long long units;
	long long refused;		/* units refused at RCPT stage */
	bool	cancel;			/* settle a charge in doubt, see counters.h */
	bool	refusal;		/* record `refused` units refused for good */
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
 * (write, then fdatasync). Thread-safe. Returns 0, or -1 with err: then
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
