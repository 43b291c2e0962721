#!/bin/bash
# t_fuzz.sh - the libFuzzer targets (tests/fuzz/): build them with clang
# (`make fuzz-build`, into build-fuzz/, ASan+UBSan), run each on its seed
# corpus, then fuzz each for FUZZ_TIME seconds (default 10) on a copy of
# it. A case fails on a non-zero exit or any crash, leak, timeout or
# broken invariant; the input that did it is kept in build-fuzz/artifacts/.
#
#   bash tests/t_fuzz.sh [BUILD_DIR]	(BUILD_DIR is ignored: run.sh passes it)
#
# No clang or no libFuzzer runtime (libclang-rt-14-dev) is a failure, not
# a skip. `make fuzz` fuzzes longer (FUZZ_SECONDS, default 60).
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh

FUZZ_TIME=${FUZZ_TIME:-10}
FUZZ_B=build-fuzz
targets="fuzz_conf fuzz_classify fuzz_account fuzz_reply"

# report LOG - the lines of a libFuzzer log that say what went wrong
report() {
	grep -E -A14 'invariant failed|ERROR: |runtime error:' "$1" \
		| grep -v -E 'in fuzzer::|libc_start|in _start|in main |stat::|Base64:|^MS: |^0x' \
		| grep -v -E '__sanitizer_print|libc\.so|pthread_kill|raise\.c|abort\.c|artifact_prefix' \
		| head -n 24 | sed 's/^/# /'
}

# keep DIR NAME - copy what libFuzzer left in DIR to build-fuzz/artifacts/
keep() {
	local dir=$1 name=$2 f
	for f in "$dir"/*; do
		[ -e "$f" ] || continue
		mkdir -p "$FUZZ_B/artifacts"
		cp "$f" "$FUZZ_B/artifacts/$name-$(basename "$f")"
		echo "# reproduce: $FUZZ_B/$name $FUZZ_B/artifacts/$name-$(basename "$f")"
	done
}

# run_case NAME TARGET ARGS... - one libFuzzer run that must end cleanly
# and leave no crash, leak, timeout or out-of-memory input behind
run_case() {
	local name=$1 t=$2 rc=0 art
	shift 2
	art="$T/$t/art.$RANDOM"
	mkdir -p "$art"
	"$FUZZ_B/$t" -timeout=10 -print_final_stats=1 -artifact_prefix="$art/" "$@" \
		>"$T/$t.log" 2>&1 || rc=$?
	if [ "$rc" = 0 ] && [ -z "$(ls -A "$art")" ]; then
		ok "$name ($(grep -E -o 'number_of_executed_units: [0-9]+' "$T/$t.log" \
			| grep -E -o '[0-9]+$') runs)"
	else
		notok "$name (exit $rc)"
		report "$T/$t.log"
		keep "$art" "$t"
	fi
}

cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
	notok "fuzz: $cc not found (apt-get install clang libclang-rt-14-dev)"
	finish
fi
if make -s fuzz-build FUZZ_CC="$cc" FUZZ_B="$FUZZ_B" >"$T/build.log" 2>&1; then
	ok "fuzz: targets build with $cc -fsanitize=fuzzer,address,undefined"
else
	notok "fuzz: targets build with $cc (libFuzzer runtime: libclang-rt-14-dev)"
	tail -n 20 "$T/build.log" | sed 's/^/# /'
	finish
fi

for t in $targets; do
	seeds=tests/fuzz/corpus/$t
	if ! ls "$seeds"/* >/dev/null 2>&1; then
		notok "$t: seed corpus $seeds"
		continue
	fi
	# Every seed, once, straight from the repo (nothing is written there).
	before=$NFAIL
	run_case "$t: every seed" "$t" -runs=0 "$seeds"
	if [ "$NFAIL" != "$before" ]; then
		notok "$t: fuzzing ${FUZZ_TIME}s (not run: a seed fails)"
		continue
	fi
	# Then fuzzing, on a copy: new inputs go to $T, not the repo.
	mkdir -p "$T/$t/corpus"
	cp "$seeds"/* "$T/$t/corpus/"
	run_case "$t: fuzzing ${FUZZ_TIME}s" "$t" -max_total_time="$FUZZ_TIME" "$T/$t/corpus"
	[ -z "$(find "$seeds" -newer "$T/build.log" -type f)" ] ||
		notok "$t: fuzzing wrote into $seeds"
done
finish
