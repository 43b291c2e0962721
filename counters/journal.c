/*
 * journal.c - counts, cancels and refusals waiting for Redis (journal.h)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "keys.h"
#include "month.h"

/* Seconds between looks at the folder while nothing waits: a dead milter's files. */
#define JOURNAL_LOOK_SECS	5

struct journal {
	pthread_mutex_t lock;		/* guards everything below */
	char   *folder;
	int	fd;			/* file being appended to, or -1 */
	char	path[PATH_MAX];		/* its name */
	unsigned long file_seq;
	unsigned long entry_seq;
	bool	pending;		/* entries may wait on disk */
	time_t	next_look;		/* when to look at the folder again */
	char	idbase[20];		/* 64 random bits, hex: names files and ids */
};

/* is_journal_file - "journal.*.log" or "replay.*.log" */
static bool
is_journal_file(const char *name, const char *kind)
{
	size_t	len = strlen(name);
	size_t	klen = strlen(kind);

	return len > klen + 5 && strncmp(name, kind, klen) == 0 && name[klen] == '.'
	    && strcmp(name + len - 4, ".log") == 0;
}

/* is_waiting_file - a file of entries: "journal.*.log" or "replay.*.log" */
static bool
is_waiting_file(const char *name)
{
	return is_journal_file(name, "journal") || is_journal_file(name, "replay");
}

/* same_file - does path still name the file open on fd? */
static bool
same_file(int fd, const char *path)
{
	struct stat fst;
	struct stat pst;

	return fstat(fd, &fst) == 0 && stat(path, &pst) == 0 && fst.st_nlink > 0
	    && fst.st_dev == pst.st_dev && fst.st_ino == pst.st_ino;
}

/*
 * lock_file - open path and lock it, if no live milter holds it (the
 * writer of a file holds its lock, and so does a replay) and the name
 * still names the file once locked. The locked descriptor; else -1 and
 * errno: EWOULDBLOCK held, ENOENT gone, another when it cannot be opened.
 */
static int
lock_file(const char *path)
{
	int	fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		errno = EWOULDBLOCK;
		return -1;
	}
	if (!same_file(fd, path)) {
		close(fd);			/* replayed or renamed meanwhile */
		errno = ENOENT;
		return -1;
	}
	return fd;
}

/*
 * folder_scan - is any file waiting in the folder that no live milter
 * holds? (A held one its owner replays; if the owner dies, a later look
 * finds it free.)
 */
static bool
folder_scan(const char *folder)
{
	char	path[PATH_MAX];
	DIR    *d = opendir(folder);
	struct dirent *de;
	bool	found = false;
	int	fd;

	if (d == NULL)
		return false;
	while (!found && (de = readdir(d)) != NULL) {
		if (!is_waiting_file(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", folder, de->d_name);
		if ((fd = lock_file(path)) >= 0)
			close(fd);
		if (fd >= 0 || (errno != EWOULDBLOCK && errno != ENOENT))
			found = true;		/* free, or to be set aside */
	}
	closedir(d);
	return found;
}

/* look - set pending from the folder; jr->lock held */
static void
look(struct journal *jr)
{
	jr->pending = jr->fd >= 0 || folder_scan(jr->folder);
	jr->next_look = time(NULL) + JOURNAL_LOOK_SECS;
}

/* journal_open - use the folder, creating it if missing */
struct journal *
journal_open(const char *folder, char *err, size_t errlen)
{
	struct journal *jr;
	unsigned long long rnd = 0;

	if (mkdir(folder, 0750) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "journal %s: cannot create: %s", folder, strerror(errno));
		return NULL;
	}
	if (access(folder, W_OK | X_OK) < 0) {
		snprintf(err, errlen, "journal %s: not writable: %s", folder, strerror(errno));
		return NULL;
	}
	if ((jr = calloc(1, sizeof(*jr))) == NULL || (jr->folder = strdup(folder)) == NULL) {
		free(jr);
		snprintf(err, errlen, "journal: out of memory");
		return NULL;
	}
	pthread_mutex_init(&jr->lock, NULL);
	jr->fd = -1;

	/*
	 * Entry ids must differ across hosts and restarts (a container's
	 * milter is often PID 1 on every host): 64 random bits per process.
	 * They also name this process's files, so that no replay rename can
	 * replace another process's file.
	 */
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
		rnd = ((unsigned long long) time(NULL) << 32) ^ (unsigned long long) getpid()
		    ^ (unsigned long long) (uintptr_t) jr;
	snprintf(jr->idbase, sizeof(jr->idbase), "%016llx", rnd);
	look(jr);
	return jr;
}

/* journal_close - free; entries stay on disk */
void
journal_close(struct journal *jr)
{
	if (jr == NULL)
		return;
	if (jr->fd >= 0)
		close(jr->fd);
	pthread_mutex_destroy(&jr->lock);
	free(jr->folder);
	free(jr);
}

/* sync_folder - make a file creation or rename in the folder durable */
static void
sync_folder(const char *folder)
{
	int	fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void) fsync(fd);
		close(fd);
	}
}

/* write_all - write the whole buffer or fail */
static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t	n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t) n;
	}
	return 0;
}

/* format_entry - the entry's line; its length, or -1 when it does not fit */
static int
format_entry(char *line, size_t size, const struct journal_entry *e)
{
	int	len = snprintf(line, size, "%s %s %s %s %lld %lld%s%s%s\n", e->id, e->month,
			       e->account, e->category[0] ? e->category : "-", e->units,
			       e->refused, e->cancel ? " cancel" : e->refusal ? " refused" : "",
			       e->window[0] ? " " : "", e->window);

	return len < 0 || (size_t) len >= size ? -1 : len;
}

/* terminated - does the field hold a NUL? */
#define terminated(field) (memchr((field), 0, sizeof(field)) != NULL)

/* journal_entry_valid - would the entry be read back from its line as it is? */
bool
journal_entry_valid(const struct journal_entry *e)
{
	struct journal_entry again;
	char	line[512];

	if (!terminated(e->id) || !terminated(e->month) || !terminated(e->account)
	    || !terminated(e->category) || !terminated(e->window)
	    || format_entry(line, sizeof(line), e) < 0 || !journal_parse_line(line, &again))
		return false;
	return strcmp(again.id, e->id) == 0 && strcmp(again.month, e->month) == 0
	    && strcmp(again.account, e->account) == 0 && strcmp(again.category, e->category) == 0
	    && again.units == e->units && again.refused == e->refused && again.cancel == e->cancel
	    && again.refusal == e->refusal && strcmp(again.window, e->window) == 0;
}

/*
 * open_file - a new file to append to, locked for as long as it is open:
 * no other milter's replay takes it meanwhile. A replay of another milter
 * may take it between its creation and the lock (it is empty then): the
 * next name is tried. Returns 0, or -1 with err. jr->lock held.
 */
static int
open_file(struct journal *jr, char *err, size_t errlen)
{
	for (int tries = 0; tries < 8; tries++) {
		snprintf(jr->path, sizeof(jr->path), "%s/journal.%s.%lu.log", jr->folder,
			 jr->idbase, ++jr->file_seq);
		jr->fd = open(jr->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
		if (jr->fd < 0 && errno == EEXIST)
			continue;
		if (jr->fd < 0) {
			snprintf(err, errlen, "journal %s: %s", jr->path, strerror(errno));
			return -1;
		}
		if (flock(jr->fd, LOCK_EX | LOCK_NB) == 0 && same_file(jr->fd, jr->path)) {
			sync_folder(jr->folder);
			return 0;
		}
		close(jr->fd);
		jr->fd = -1;
	}
	snprintf(err, errlen, "journal %s: every new file taken at once by other milters",
		 jr->folder);
	return -1;
}

/* journal_append - give the entry an id and write it durably */
int
journal_append(struct journal *jr, struct journal_entry *e, char *err, size_t errlen)
{
	char	line[512];
	int	len;
	int	rc = -1;

	if (!account_valid(e->account, NULL) || !month_valid(e->month)) {
		snprintf(err, errlen, "journal: bad entry");
		return -1;
	}
	/* A line the replay would refuse would set its whole file aside. */
	if (e->window[0] != 0 && (memchr(e->window, 0, sizeof(e->window)) == NULL
				  || !month_hour_of(e->window, e->month)))
		e->window[0] = 0;
	pthread_mutex_lock(&jr->lock);
	if (jr->fd < 0 && open_file(jr, err, errlen) < 0)
		goto out;
	if (e->id[0] == 0 || strpbrk(e->id, " \t\r\n") != NULL)
		snprintf(e->id, sizeof(e->id), "%s-%lu", jr->idbase, ++jr->entry_seq);
	if ((len = format_entry(line, sizeof(line), e)) < 0) {
		snprintf(err, errlen, "journal: entry too long");
		goto out;
	}
	if (write_all(jr->fd, line, (size_t) len) < 0 || fdatasync(jr->fd) < 0) {
		snprintf(err, errlen, "journal %s: %s", jr->path, strerror(errno));
		/* A half-written line is refused by the parser; start a new file. */
		close(jr->fd);
		jr->fd = -1;
		goto out;
	}
	jr->pending = true;
	rc = 0;
out:
	pthread_mutex_unlock(&jr->lock);
	return rc;
}

/*
 * journal_pending - are there entries waiting for Redis? While none
 * are, the folder is looked at again every JOURNAL_LOOK_SECS: files a
 * milter that died left there, which any live one replays.
 */
bool
journal_pending(struct journal *jr)
{
	bool	pending;

	pthread_mutex_lock(&jr->lock);
	if (!jr->pending && time(NULL) >= jr->next_look)
		look(jr);
	pending = jr->pending;
	pthread_mutex_unlock(&jr->lock);
	return pending;
}

/*
 * journal_waiting - the entries (lines) in the folder's waiting files,
 * without the journal's lock: the folder never changes, and a line being
 * written counts or not
 */
unsigned long long
journal_waiting(struct journal *jr)
{
	char	path[PATH_MAX], buf[8192];
	unsigned long long lines = 0;
	struct dirent *de;
	DIR    *d = opendir(jr->folder);
	ssize_t got;
	int	fd;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (!is_waiting_file(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", jr->folder, de->d_name);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		while ((got = read(fd, buf, sizeof(buf))) > 0)
			for (char *p = buf; (p = memchr(p, '\n', (size_t) (buf + got - p))) != NULL; p++)
				lines++;
		close(fd);
	}
	closedir(d);
	return lines;
}

/* parse_count - a decimal count 0..999999999, digits only */
static bool
parse_count(const char *text, long long *out)
{
	size_t	len = strlen(text);

	if (len == 0 || len > 9 || strspn(text, "0123456789") != len)
		return false;
	*out = strtoll(text, NULL, 10);
	return true;
}

/* copy_field - copy a field that must fit, whole */
static bool
copy_field(char *dst, size_t size, const char *src)
{
	size_t	len = strlen(src);

	if (len == 0 || len >= size)
		return false;
	memcpy(dst, src, len + 1);
	return true;
}

/*
 * journal_parse_line - parse one journal line; false if malformed. A line
 * is six fields separated by single spaces, ID MONTH ACCOUNT CATEGORY
 * UNITS REFUSED, then for a cancel or a refusal the word "cancel" or
 * "refused", then (since caps) the charge's hour "YYYY-MM-DDTHH", which
 * must lie in MONTH; lines of older versions, without it, read as they
 * did. It ends in a newline (or its end). A field too long for its place
 * is an error, never cut down.
 */
bool
journal_parse_line(const char *line, struct journal_entry *e)
{
	char	buf[512];
	char   *field[8];
	char   *save = NULL;
	size_t	len = strlen(line);
	int	n = 0;

	memset(e, 0, sizeof(*e));
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, line, len);
	buf[len] = 0;
	if (buf[0] == ' ' || buf[len - 1] == ' ' || strstr(buf, "  ") != NULL)
		return false;
	for (char *tok = strtok_r(buf, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
		if (n == 8)
			return false;
		field[n++] = tok;
	}
	if (n > 6 && strcmp(field[6], "cancel") == 0)
		e->cancel = true;
	else if (n > 6 && strcmp(field[6], "refused") == 0)
		e->refusal = true;
	if (n - 6 - (e->cancel || e->refusal) == 1) {
		if (!copy_field(e->window, sizeof(e->window), field[n - 1])
		    || !month_hour_of(e->window, field[1]))
			return false;
	} else if (n - 6 - (e->cancel || e->refusal) != 0) {
		return false;
	}
	if (!copy_field(e->id, sizeof(e->id), field[0])
	    || !copy_field(e->month, sizeof(e->month), field[1])
	    || !copy_field(e->account, sizeof(e->account), field[2])
	    || !copy_field(e->category, sizeof(e->category), field[3])
	    || !parse_count(field[4], &e->units) || !parse_count(field[5], &e->refused))
		return false;
	for (const char *cp = e->id; *cp; cp++)
		if (*cp < 0x21 || *cp > 0x7e)
			return false;
	/* A cancel names a charge, a refusal itself: by a charge id. */
	if ((e->cancel || e->refusal) && !keys_charge_id_valid(e->id))
		return false;
	if (strcmp(e->category, "-") == 0)
		e->category[0] = 0;
	else if (keys_reserved_field(e->category) || !conf_name_valid(e->category))
		return false;
	return account_valid(e->account, NULL) && month_valid(e->month);
}

/* journal_set_aside - keep an unusable file as *.bad and say so */
void
journal_set_aside(const char *what, const char *path, const char *why, journal_warn_fn warn)
{
	char	bad[PATH_MAX + 8];
	char	text[PATH_MAX * 2 + 128];

	snprintf(bad, sizeof(bad), "%s.bad", path);
	if (rename(path, bad) < 0)
		snprintf(text, sizeof(text), "%s %s: %s; cannot set it aside: %s",
			 what, path, why, strerror(errno));
	else
		snprintf(text, sizeof(text), "%s %s: %s; kept as %s, not used", what, path, why, bad);
	if (warn != NULL)
		warn(text);
}

/* keep_rejected - append an entry Redis refused to PATH.rejected, and say so */
static void
keep_rejected(const char *path, const char *line, const char *why, journal_warn_fn warn)
{
	char	bad[PATH_MAX + 16];
	char	text[PATH_MAX * 2 + 256];
	FILE   *fp;

	snprintf(bad, sizeof(bad), "%s.rejected", path);
	if ((fp = fopen(bad, "ae")) == NULL || fputs(line, fp) == EOF || fflush(fp) == EOF
	    || fsync(fileno(fp)) < 0)
		snprintf(text, sizeof(text), "journal %s: entry refused by Redis (%s), "
			 "and cannot be kept in %s: %s", path, why, bad, strerror(errno));
	else
		snprintf(text, sizeof(text), "journal %s: entry refused by Redis (%s); kept in %s",
			 path, why, bad);
	if (fp != NULL)
		fclose(fp);
	if (warn != NULL)
		warn(text);
}

/*
 * take_file - lock FOLDER/NAME for a replay (see lock_file), renamed
 * replay.* if it was a journal.* file; path gets its name. The locked
 * descriptor, or -1 with errno as lock_file().
 */
static int
take_file(const char *folder, const char *name, char *path, size_t size)
{
	char	dest[PATH_MAX];
	int	fd;

	snprintf(path, size, "%s/%s", folder, name);
	if ((fd = lock_file(path)) < 0 || !is_journal_file(name, "journal"))
		return fd;
	snprintf(dest, sizeof(dest), "%s/replay.%s", folder, name + strlen("journal."));
	if (rename(path, dest) == 0)
		snprintf(path, size, "%s", dest);
	return fd;
}

/*
 * replay_file - apply every entry of one file, open and locked on fd
 * (closed here, after the file is removed or set aside): 1 done, 0 set
 * aside, -1 failed
 */
static int
replay_file(int fd, const char *path, journal_apply_fn apply, void *arg, journal_warn_fn warn,
	    long *applied, char *err, size_t errlen)
{
	FILE   *fp = fdopen(fd, "r");
	char   *line = NULL;
	size_t	cap = 0;
	ssize_t	n;
	unsigned long lineno = 0;
	struct journal_entry e;
	char	why[128];
	int	rc = 1;

	if (fp == NULL) {
		close(fd);
		snprintf(err, errlen, "journal %s: %s", path, strerror(errno));
		return -1;
	}
	while (rc > 0 && (n = getline(&line, &cap, fp)) > 0) {
		lineno++;
		if (line[n - 1] != '\n' || !journal_parse_line(line, &e)) {
			snprintf(why, sizeof(why), "line %lu is malformed", lineno);
			journal_set_aside("journal", path, why, warn);
			rc = 0;
			break;
		}
		switch (apply(arg, &e, err, errlen)) {
		case 0:
			(*applied)++;
			break;
		case JOURNAL_REJECTED:
			/* Redis will never take this entry: keep it aside, go on. */
			keep_rejected(path, line, err, warn);
			break;
		default:
			rc = -1;
			break;
		}
	}
	free(line);
	/* Removed while still locked: a replay waiting for it finds it gone. */
	if (rc > 0 && unlink(path) < 0 && warn != NULL) {
		snprintf(why, sizeof(why), "journal: cannot remove a replayed file: %s",
			 strerror(errno));
		warn(why);
	}
	fclose(fp);
	return rc;
}

/*
 * journal_replay - apply every waiting entry; keep the rest on failure.
 * Only files no live milter holds are taken: this process's own current
 * file is closed first, so that it can be taken too.
 */
long
journal_replay(struct journal *jr, journal_apply_fn apply, void *arg,
	       journal_warn_fn warn, char *err, size_t errlen)
{
	char	path[PATH_MAX];
	DIR    *d;
	struct dirent *de;
	long	applied = 0;
	int	rc = 0;
	int	fd;

	/* Release the file being written: new appends go to a new one. */
	pthread_mutex_lock(&jr->lock);
	if (jr->fd >= 0) {
		close(jr->fd);
		jr->fd = -1;
	}
	pthread_mutex_unlock(&jr->lock);

	if ((d = opendir(jr->folder)) == NULL) {
		snprintf(err, errlen, "journal %s: %s", jr->folder, strerror(errno));
		return -1;
	}
	while (rc >= 0 && (de = readdir(d)) != NULL) {
		if (!is_waiting_file(de->d_name))
			continue;
		if ((fd = take_file(jr->folder, de->d_name, path, sizeof(path))) >= 0)
			rc = replay_file(fd, path, apply, arg, warn, &applied, err, errlen);
		else if (errno != EWOULDBLOCK && errno != ENOENT)
			journal_set_aside("journal", path, strerror(errno), warn);
	}
	closedir(d);
	sync_folder(jr->folder);

	pthread_mutex_lock(&jr->lock);
	look(jr);
	jr->pending = jr->pending || rc < 0;
	pthread_mutex_unlock(&jr->lock);
	return rc < 0 ? -1 : applied;
}
