/*
 * cache - the latest quota of busy accounts (see cache.h)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

struct slot {
	char	account[QM_ACCOUNT_MAX + 1];	/* "" for none */
	struct qm_quota q;
	long long stamp;		/* ms, the caller's clock */
};

struct quota_cache {
	pthread_mutex_t lock;
	size_t	mask;			/* slots - 1 */
	struct slot slots[];
};

struct quota_cache *
quota_cache_create(size_t slots)
{
	struct quota_cache *qc;

	if (slots == 0 || (slots & (slots - 1)) != 0)
		return NULL;
	if ((qc = calloc(1, sizeof(*qc) + slots * sizeof(struct slot))) == NULL)
		return NULL;
	pthread_mutex_init(&qc->lock, NULL);
	qc->mask = slots - 1;
	return qc;
}

void
quota_cache_free(struct quota_cache *qc)
{
	if (qc == NULL)
		return;
	pthread_mutex_destroy(&qc->lock);
	free(qc);
}

/* slot_of - the account's slot (FNV-1a) */
static struct slot *
slot_of(struct quota_cache *qc, const char *account)
{
	uint32_t h = 2166136261u;

	for (; *account; account++)
		h = (h ^ (unsigned char) *account) * 16777619u;
	return &qc->slots[h & qc->mask];
}

void
quota_cache_put(struct quota_cache *qc, const char *account, const struct qm_quota *q,
		long long now_ms)
{
	struct slot *s = slot_of(qc, account);
	size_t	len = strlen(account);

	if (len > QM_ACCOUNT_MAX)
		return;
	pthread_mutex_lock(&qc->lock);
	memcpy(s->account, account, len + 1);
	s->q = *q;
	s->stamp = now_ms;
	pthread_mutex_unlock(&qc->lock);
}

bool
quota_cache_get(struct quota_cache *qc, const char *account, long long now_ms,
		struct qm_quota *q)
{
	struct slot *s = slot_of(qc, account);
	bool	hit;

	pthread_mutex_lock(&qc->lock);
	hit = s->account[0] != 0 && strcmp(s->account, account) == 0
	    && now_ms >= s->stamp && now_ms - s->stamp < QUOTA_CACHE_MS;
	if (hit)
		*q = s->q;
	pthread_mutex_unlock(&qc->lock);
	return hit;
}
