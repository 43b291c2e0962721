/*
 * inflight.c - charges on their way to Redis, kept where a killed milter
 * leaves them (see inflight.h)
 */
#include <dirent.h>
#include <stdalign.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "inflight.h"

#define INFLIGHT_MAGIC	"qm-infl"	/* 7 characters and the NUL */
#define INFLIGHT_SLOTS	4096		/* charges in flight at once, per process */

#define SLOT_FREE	0u
#define SLOT_CHARGE	1u

struct inflight_slot {
	_Atomic uint32_t state;		/* SLOT_FREE or SLOT_CHARGE */
	struct journal_entry entry;
};

/*
 * The file: this header, then the slots. Native layout: read by the same
 * build, and by the next: a slot of a build before journal_entry.window
 * (its last field) is a prefix of today's, read with no window.
 */
struct inflight_file {
	char	magic[8];
	uint32_t slot_size;		/* sizeof(struct inflight_slot) */
	uint32_t slots;
	struct inflight_slot slot[];
};

struct inflight {
	char	path[PATH_MAX];
	int	fd;			/* holds the flock */
	struct inflight_file *map;
	size_t	size;
	pthread_mutex_t lock;		/* guards the free stack */
	int    *free_slots;
	size_t	free_count;
};

#define ROUND_UP(n, a)	(((n) + (a) - 1) / (a) * (a))
#define LEGACY_SLOT_SIZE \
	ROUND_UP(offsetof(struct inflight_slot, entry) \
		 + ROUND_UP(offsetof(struct journal_entry, window), alignof(struct journal_entry)), \
		 alignof(struct inflight_slot))

/* file_size - the size of a file of n slots of slot_size bytes */
static size_t
file_size(size_t n, size_t slot_size)
{
	return sizeof(struct inflight_file) + n * slot_size;
}

/* is_inflight_file - "inflight.*.map" */
static bool
is_inflight_file(const char *name)
{
	size_t	len = strlen(name);

	return len > 13 && strncmp(name, "inflight.", 9) == 0
	    && strcmp(name + len - 4, ".map") == 0;
}

/* inflight_open - a fresh file, locked, mapped, every slot free */
struct inflight *
inflight_open(const char *folder, char *err, size_t errlen)
{
	struct inflight *inf;
	char	tmp[PATH_MAX];
	unsigned long long rnd = 0;

	if ((inf = calloc(1, sizeof(*inf))) == NULL
	    || (inf->free_slots = calloc(INFLIGHT_SLOTS, sizeof(int))) == NULL) {
		free(inf);
		snprintf(err, errlen, "inflight: out of memory");
		return NULL;
	}
	inf->fd = -1;
	inf->map = MAP_FAILED;
	pthread_mutex_init(&inf->lock, NULL);
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
		rnd = ((unsigned long long) time(NULL) << 32) ^ (unsigned long long) getpid();

	/*
	 * Made under a name no recovery looks at, locked, sized, then renamed:
	 * another milter starting now never takes it for a dead one's.
	 */
	snprintf(tmp, sizeof(tmp), "%s/.inflight.%016llx.new", folder, rnd);
	snprintf(inf->path, sizeof(inf->path), "%s/inflight.%016llx.map", folder, rnd);
	inf->size = file_size(INFLIGHT_SLOTS, sizeof(struct inflight_slot));
	if ((inf->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) < 0
	    || flock(inf->fd, LOCK_EX | LOCK_NB) < 0
	    || ftruncate(inf->fd, (off_t) inf->size) < 0
	    || (inf->map = mmap(NULL, inf->size, PROT_READ | PROT_WRITE, MAP_SHARED,
				inf->fd, 0)) == MAP_FAILED
	    || rename(tmp, inf->path) < 0) {
		snprintf(err, errlen, "inflight %s: %s", tmp, strerror(errno));
		if (inf->fd >= 0)
			(void) unlink(tmp);
		inf->path[0] = 0;
		inflight_close(inf);
		return NULL;
	}
	memcpy(inf->map->magic, INFLIGHT_MAGIC, sizeof(inf->map->magic));
	inf->map->slot_size = sizeof(struct inflight_slot);
	inf->map->slots = INFLIGHT_SLOTS;
	for (int i = INFLIGHT_SLOTS - 1; i >= 0; i--)
		inf->free_slots[inf->free_count++] = i;
	return inf;
}

/* inflight_close - a clean stop: no charge is in flight any more */
void
inflight_close(struct inflight *inf)
{
	if (inf == NULL)
		return;
	if (inf->path[0])
		(void) unlink(inf->path);
	if (inf->map != MAP_FAILED)
		munmap(inf->map, inf->size);
	if (inf->fd >= 0)
		close(inf->fd);
	pthread_mutex_destroy(&inf->lock);
	free(inf->free_slots);
	free(inf);
}

/* inflight_begin - copy the charge into a free slot, then mark it */
int
inflight_begin(struct inflight *inf, const struct journal_entry *entry)
{
	struct inflight_slot *s;
	int	slot;

	if (inf == NULL)
		return -1;
	pthread_mutex_lock(&inf->lock);
	slot = inf->free_count > 0 ? inf->free_slots[--inf->free_count] : -1;
	pthread_mutex_unlock(&inf->lock);
	if (slot < 0)
		return -1;
	s = &inf->map->slot[slot];
	memcpy(&s->entry, entry, sizeof(s->entry));
	atomic_store_explicit(&s->state, SLOT_CHARGE, memory_order_release);
	return slot;
}

/* inflight_end - free the slot */
void
inflight_end(struct inflight *inf, int slot)
{
	if (inf == NULL || slot < 0 || slot >= INFLIGHT_SLOTS)
		return;
	atomic_store_explicit(&inf->map->slot[slot].state, SLOT_FREE, memory_order_release);
	pthread_mutex_lock(&inf->lock);
	inf->free_slots[inf->free_count++] = slot;
	pthread_mutex_unlock(&inf->lock);
}

/*
 * recover_file - journal a cancel for each charge left in a dead
 * milter's file, then remove it. Returns the cancels journaled, or -1.
 */
static long
recover_file(const char *path, struct journal *jr, journal_warn_fn warn,
	     char *err, size_t errlen)
{
	const struct inflight_file *map;
	struct journal_entry e;
	struct stat st;
	size_t	slot_size = 0;
	long	count = 0;
	int	fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;			/* recovered by another milter meanwhile */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);			/* its milter is alive */
		return 0;
	}
	if (fstat(fd, &st) < 0 || st.st_nlink == 0) {
		close(fd);			/* removed meanwhile */
		return 0;
	}
	if ((size_t) st.st_size == file_size(INFLIGHT_SLOTS, sizeof(struct inflight_slot)))
		slot_size = sizeof(struct inflight_slot);
	else if ((size_t) st.st_size == file_size(INFLIGHT_SLOTS, LEGACY_SLOT_SIZE))
		slot_size = LEGACY_SLOT_SIZE;
	if (slot_size == 0
	    || (map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		close(fd);
		journal_set_aside("inflight", path, "not a file of this quota-milter", warn);
		return 0;
	}
	if (memcmp(map->magic, INFLIGHT_MAGIC, sizeof(map->magic)) != 0
	    || map->slot_size != slot_size || map->slots != INFLIGHT_SLOTS) {
		munmap((void *) map, (size_t) st.st_size);
		close(fd);
		journal_set_aside("inflight", path, "not a file of this quota-milter", warn);
		return 0;
	}
	for (size_t i = 0; i < INFLIGHT_SLOTS && count >= 0; i++) {
		const struct inflight_slot *s =
		    (const void *) ((const char *) map->slot + i * slot_size);

		if (atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_CHARGE)
			continue;
		memset(&e, 0, sizeof(e));
		memcpy(&e, &s->entry, slot_size == sizeof(*s) ? sizeof(e)
		       : offsetof(struct journal_entry, window));
		e.cancel = true;
		/* A bad hour costs the windows, not the month's cancel. */
		if (!journal_entry_valid(&e))
			memset(e.window, 0, sizeof(e.window));
		if (!journal_entry_valid(&e)) {
			if (warn != NULL)
				warn("inflight: a slot that is not a valid charge, skipped");
			continue;
		}
		if (journal_append(jr, &e, err, errlen) < 0)
			count = -1;
		else
			count++;
	}
	munmap((void *) map, (size_t) st.st_size);
	if (count >= 0)
		(void) unlink(path);
	close(fd);
	return count;
}

/* inflight_recover - cancel what dead milters left in flight */
long
inflight_recover(const char *folder, struct journal *jr, journal_warn_fn warn,
		 char *err, size_t errlen)
{
	char	path[PATH_MAX];
	DIR    *d;
	struct dirent *de;
	long	total = 0;
	long	n;

	if ((d = opendir(folder)) == NULL) {
		snprintf(err, errlen, "inflight %s: %s", folder, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (!is_inflight_file(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", folder, de->d_name);
		if ((n = recover_file(path, jr, warn, err, errlen)) < 0) {
			total = -1;
			break;
		}
		total += n;
	}
	closedir(d);
	return total;
}
