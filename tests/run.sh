#!/bin/bash
# run.sh - run every test and end with one line "N passed, N failed".
#
#   Check binaries   build/tests/check_*, then the same from build-asan/
#                    (ASan+UBSan), then the unit ones under valgrind
#   shell tests      tests/t_*.sh BUILD_DIR; t_milter* and t_postfix* run
#                    against the ASan build too
#
# A test that cannot run (a missing tool) counts as failed, not skipped.
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
asan=${ASAN_BUILD:-build-asan}
passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# count_check NAME OUTPUT_FILE STATUS - add a Check run's summary
count_check() {
	local name=$1 out=$2 status=$3 line n f e
	line=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$out" | tail -n 1)
	if [ -z "$line" ]; then
		echo "FAIL $name: no Check summary (exit $status)"
		tail -n 20 "$out"
		failed=$((failed + 1))
		return
	fi
	n=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
	f=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$line")
	e=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line")
	passed=$((passed + n - f - e))
	failed=$((failed + f + e))
	if [ "$status" != 0 ] || [ $((f + e)) -gt 0 ]; then
		echo "FAIL $name: $line"
		grep -E ':[EF]:' "$out" | head -n 20
		[ $((f + e)) -gt 0 ] || failed=$((failed + 1))
	else
		echo "ok   $name: $line"
	fi
}

# count_tap NAME OUTPUT_FILE STATUS - add a shell test's ok / not ok lines
count_tap() {
	local name=$1 out=$2 status=$3 ok nok
	ok=$(grep -c '^ok - ' "$out")
	nok=$(grep -c '^not ok - ' "$out")
	passed=$((passed + ok))
	failed=$((failed + nok))
	if [ "$status" != 0 ] || [ "$nok" -gt 0 ] || [ "$ok" -eq 0 ]; then
		echo "FAIL $name: $ok ok, $nok not ok, exit $status"
		grep -E '^not ok - |^# ' "$out" | head -n 40
		[ "$nok" -gt 0 ] || failed=$((failed + 1))
	else
		echo "ok   $name: $ok cases"
	fi
}

for dir in "$build" "$asan"; do
	[ -d "$dir/tests" ] || { echo "FAIL $dir: not built"; failed=$((failed + 1)); continue; }
	for t in "$dir"/tests/check_*; do
		[ -x "$t" ] || continue
		out="$log/$(basename "$t").$(basename "$dir")"
		"$t" >"$out" 2>&1
		count_check "$t" "$out" $?
	done
done

# The unit tests once more, without fork, under valgrind's leak checker.
for t in "$build"/tests/check_conf "$build"/tests/check_policy "$build"/tests/check_month \
	"$build"/tests/check_stats; do
	[ -x "$t" ] || { echo "FAIL valgrind $t: not built"; failed=$((failed + 1)); continue; }
	out="$log/$(basename "$t").valgrind"
	CK_FORK=no valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
		--error-exitcode=99 "$t" >"$out" 2>&1
	count_check "valgrind $t" "$out" $?
done

for t in tests/t_*.sh; do
	[ -f "$t" ] || continue
	out="$log/$(basename "$t").$build"
	timeout 900 bash "$t" "$build" >"$out" 2>&1
	count_tap "$t $build" "$out" $?
	case $(basename "$t") in
	t_milter* | t_postfix* | t_stats*)
		out="$log/$(basename "$t").$asan"
		timeout 900 bash "$t" "$asan" >"$out" 2>&1
		count_tap "$t $asan" "$out" $?
		;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
