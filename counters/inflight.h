/*
 * inflight.h - charges on their way to Redis, in a file that outlives a
 * killed milter
 *
 * A charge takes a slot of a memory-mapped file in the journal folder
 * (FOLDER/inflight.RANDOM.map, flocked for the process's life) before it
 * is sent, and frees it just before its verdict goes back: a store into
 * shared memory, no system call. At start, each charge left in the file of
 * a dead milter becomes a journal cancel, and the file is removed. Files
 * of the version before caps (slots without the hour) are read too: their
 * cancels touch no window.
 */
#ifndef QM_INFLIGHT_H
#define QM_INFLIGHT_H

#include <stddef.h>

#include "journal.h"

struct inflight;

/*
 * inflight_open - make this process's file in the folder. NULL with a
 * reason in err when it cannot be made.
 */
struct inflight *inflight_open(const char *folder, char *err, size_t errlen);

/* inflight_close - remove this process's file and free; NULL is allowed */
void	inflight_close(struct inflight *inf);

/*
 * inflight_begin - keep a copy of the charge (its id, month, account,
 * category, units, RCPT-stage refusals, and its hour window: its cancel
 * takes it back from that day and hour) until inflight_end(). Returns the
 * slot, or -1 when every slot is taken (the charge then goes unprotected).
 * Thread-safe; inf may be NULL (returns -1).
 */
int	inflight_begin(struct inflight *inf, const struct journal_entry *entry);

/* inflight_end - the verdict is on its way: free the slot; -1 is allowed */
void	inflight_end(struct inflight *inf, int slot);

/*
 * inflight_recover - for each file in the folder whose process is gone
 * (its lock is free), append a cancel entry to the journal for every
 * charge still in a slot, then remove the file. A file that is not one of
 * ours is renamed *.bad and reported through warn(). Returns the number
 * of cancels journaled, or -1 with err when the journal could not take
 * them (the file is then kept for the next start).
 */
long	inflight_recover(const char *folder, struct journal *jr, journal_warn_fn warn,
		char *err, size_t errlen);

#endif
