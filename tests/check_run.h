/*
 * check_run.h - the one way the tests/check_*.c programs run their suite
 */
#ifndef QM_CHECK_RUN_H
#define QM_CHECK_RUN_H

#include <check.h>
#include <stdlib.h>

/* check_run - run every test of s; EXIT_SUCCESS when none failed */
static inline int
check_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int	failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
