/*
 * fuzz_util.h - helpers shared by the libFuzzer targets in tests/fuzz/
 *
 * Header-only (each target is one translation unit plus the library
 * sources). An input is read front to back: fixed-size fields first, then
 * NUL-terminated strings, so that seeds stay readable with `od -c`.
 */
#ifndef QM_FUZZ_UTIL_H
#define QM_FUZZ_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf/conf.h"

/*
 * FUZZ_CHECK - an invariant: say which one failed, then abort() so that
 * libFuzzer records the input as a crash.
 */
#define FUZZ_CHECK(cond, ...) do {					\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: invariant failed: %s: ",	\
			__FILE__, __LINE__, #cond);			\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		abort();						\
	}								\
} while (0)

/* The unread rest of an input. */
struct fuzz_in {
	const uint8_t *p;
	size_t	n;
};

/* fuzz_byte - the next byte, or 0 once the input is used up */
static inline uint8_t
fuzz_byte(struct fuzz_in *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

/* fuzz_bytes - copy the next `len` bytes into out, zero-filled past the end */
static inline void
fuzz_bytes(struct fuzz_in *in, void *out, size_t len)
{
	size_t	take = len < in->n ? len : in->n;

	memset(out, 0, len);
	memcpy(out, in->p, take);
	in->p += take;
	in->n -= take;
}

/*
 * fuzz_str - the next string, up to a NUL or the end of the input, as a
 * fresh malloc'd copy; NULL when the input is used up. Free with free().
 */
static inline char *
fuzz_str(struct fuzz_in *in)
{
	const uint8_t *nul;
	size_t	len;
	char   *s;

	if (in->n == 0)
		return NULL;
	nul = memchr(in->p, 0, in->n);
	len = nul ? (size_t) (nul - in->p) : in->n;
	if ((s = malloc(len + 1)) == NULL)
		abort();
	memcpy(s, in->p, len);
	s[len] = 0;
	in->p += len + (nul != NULL);
	in->n -= len + (nul != NULL);
	return s;
}

/*
 * A file the conf parser can read: libconfuse parses files, so each
 * process keeps one memfd (or, without memfd, one temporary file that is
 * removed at once and reached through /proc/self/fd) and rewrites it.
 */
struct fuzz_file {
	int	fd;
	char	path[64];
};

/* fuzz_file_open - make the process's file; aborts if it cannot */
static inline void
fuzz_file_open(struct fuzz_file *f, const char *name)
{
	char	tmp[] = "/tmp/qm-fuzz.XXXXXX";

	f->fd = memfd_create(name, MFD_CLOEXEC);
	if (f->fd < 0) {
		if ((f->fd = mkstemp(tmp)) < 0) {
			fprintf(stderr, "fuzz: mkstemp: %s\n", strerror(errno));
			abort();
		}
		unlink(tmp);
	}
	snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
	if (access(f->path, R_OK) != 0) {
		fprintf(stderr, "fuzz: %s: %s (is /proc mounted?)\n", f->path, strerror(errno));
		abort();
	}
}

/* fuzz_file_set - replace the file's contents */
static inline void
fuzz_file_set(struct fuzz_file *f, const void *data, size_t len)
{
	const char *p = data;
	off_t	off = 0;
	ssize_t	n;

	if (ftruncate(f->fd, 0) < 0)
		abort();
	while ((size_t) off < len) {
		if ((n = pwrite(f->fd, p + off, len - (size_t) off, off)) <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			abort();
		}
		off += n;
	}
}

/*
 * fuzz_conf_text - parse a conf held in memory; aborts with the parser's
 * reason when it is refused (for the fixed confs the targets rely on).
 */
static inline struct qm_conf *
fuzz_conf_text(const char *text)
{
	struct fuzz_file f;
	struct qm_conf *conf;
	char	err[512];

	fuzz_file_open(&f, "fuzz-fixed-conf");
	fuzz_file_set(&f, text, strlen(text));
	conf = conf_load(f.path, err, sizeof(err));
	close(f.fd);
	if (conf == NULL) {
		fprintf(stderr, "fuzz: built-in conf refused: %s\n", err);
		abort();
	}
	return conf;
}

#endif
