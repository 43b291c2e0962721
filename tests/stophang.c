/*
 * stophang.c - an LD_PRELOAD library for t_milter.sh: smfi_main() never
 * returns once libmilter's own stops, as when its worker pool deadlocks
 * at a stop under load, so that a test can see the daemon end anyway
 * (its stop watch). Everything else is the real thing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>

/* smfi_main - libmilter's, then a wait that never ends */
int
smfi_main(void)
{
	int     (*real) (void);

	*(void **) &real = dlsym(RTLD_NEXT, "smfi_main");
	(void) real();
	for (;;)
		pause();
}
