/*
 * inflight.h - charges on their way to Redis, in a file that outlives a
 * killed milter
 *
 * Between sending a charge and handing its verdict to the MTA, a milter
 * that is killed (SIGKILL, the OOM killer) leaves the MTA to apply
 * milter_default_action, a 451, while Redis may have counted the message.
 * To take such counts back, each charge is written to a slot of a small
 * memory-mapped file in the journal folder before it is sent, and the slot
 * is freed just before the verdict is returned. Writing a slot is a store
 * into shared memory: no system call, and it survives the death of the
 * process (not of the machine).
 *
 * At start, the files of milters that died (nobody holds their lock any
 * more) are read: each charge still in a slot gets a cancel entry in the
 * journal (see journal.h and counters_replay), and the file is removed.
 * What remains is the short span between freeing the slot and
 * libmilter writing the reply.
 *
 * Files: FOLDER/inflight.RANDOM.map (about 1.3 MB, sparse), locked
 * (flock) by their process for its lifetime. The daemon leaves its file
 * when it stops; the next start of any milter using the folder reads and
 * removes it.
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
 * category, units, RCPT-stage refusals) until inflight_end(). Returns the
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
