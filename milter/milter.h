/*
 * milter.h - what the daemon (daemon.c) and the libmilter callbacks
 * (callbacks.c) need of each other
 */
#ifndef QM_MILTER_H
#define QM_MILTER_H

#include <stdbool.h>

#include "../conf/conf.h"
#include "../counters/counters.h"
#include "../counters/inflight.h"
#include "../counters/journal.h"
#include "policy.h"

#define QM_NAME		"quota-milter"

/*
 * A runtime: a loaded conf, its Redis counters and what it needs of the
 * MTA. Immutable and refcounted: each connection pins the one it started
 * with, a reload swaps in a new one, the last user frees the old.
 */
struct runtime {
	struct qm_conf *conf;
	struct counters *ctr;
	struct policy_needs needs;	/* policy_needs(conf) */
	const struct month_table *months;	/* the zone's, for the times in replies */
	int	refs;			/* daemon.c's, under its lock */
};

/* runtime_acquire - pin the current runtime */
struct runtime *runtime_acquire(void);

/* runtime_release - unpin; the last user frees */
void	runtime_release(struct runtime *rt);

/*
 * journal_get - the journal, NULL when it could not be opened; with infp,
 * also the inflight file (NULL when it could not be made)
 */
struct journal *journal_get(struct inflight **infp);

/*
 * callbacks_register - hand the callbacks to libmilter (smfi_register());
 * unix_socket: the milter listens on a unix socket (negotiation skips
 * DATA there). Returns MI_SUCCESS or MI_FAILURE.
 */
int	callbacks_register(bool unix_socket);

#endif
