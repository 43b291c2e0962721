/*
 * cache.h - the latest quota this process learned of each busy account
 *
 * Peeks and charges leave their answers here, whole: the month and the
 * day and hour windows (struct qm_quota .day, .hour). A fresh one that
 * leaves the account far from its limit and from each cap of its windows
 * (policy_far_from_limit() must look at both) stands in for a peek. Only
 * "it fits" is decided from here: an answer of a window that has ended
 * since had less room than the window now open, so it never decides
 * wrongly that more fits. One account per slot, by hash.
 */
#ifndef QM_CACHE_H
#define QM_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "counters.h"

#define QUOTA_CACHE_MS		1000	/* how long an answer stands in for a peek */
#define QUOTA_CACHE_SLOTS	1024

struct quota_cache;

/* quota_cache_create - an empty cache of slots (a power of two), or NULL */
struct quota_cache *quota_cache_create(size_t slots);

/* quota_cache_free - NULL is allowed */
void	quota_cache_free(struct quota_cache *qc);

/* quota_cache_put - keep q as the account's latest answer, at now_ms */
void	quota_cache_put(struct quota_cache *qc, const char *account, const struct qm_quota *q,
			        long long now_ms);

/*
 * quota_cache_get - the account's latest answer if it is younger than
 * QUOTA_CACHE_MS at now_ms: true with it in q
 */
bool	quota_cache_get(struct quota_cache *qc, const char *account, long long now_ms,
			        struct qm_quota *q);

#endif
