/*
 * oomfail.c - an LD_PRELOAD library for t_milter.sh: strndup() of a
 * string that starts with "oom-" fails as if memory ran out, so that a
 * test can make one callback of the daemon fail on purpose (the envelope
 * sender <oom-...> in qm_envfrom()). Everything else is the real thing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

/* strndup - NULL with ENOMEM for "oom-..."; the C library's otherwise */
char *
strndup(const char *s, size_t n)
{
	static char *(*real) (const char *, size_t);

	if (n >= 4 && strncmp(s, "oom-", 4) == 0) {
		errno = ENOMEM;
		return NULL;
	}
	if (real == NULL)
		*(void **) &real = dlsym(RTLD_NEXT, "strndup");
	return real(s, n);
}
