#!/bin/bash
# t_bench_smoke.sh BUILD - `make bench` in its tiny mode (BENCH_QUICK=1:
# one round of 100 messages, 50 sessions held, no callgrind, no peers),
# checking only that it works: the table is written, every configuration
# produced a number (the null libmilter milter's too, which negotiated
# what quota-milter did), the counting configurations counted every
# accepted message once, and nothing failed. No timing is asserted: the
# numbers of a tiny run on a shared machine mean nothing.
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh
build=${1:-build}

out=$T/results.md
data=$T/results.data
BENCH_QUICK=1 BENCH_OUT=$out BENCH_DATA=$data \
	timeout 170 bash tests/bench/bench.sh "$build" > "$T/bench.out" 2> "$T/bench.err"
rc=$?
check_eq "bench.sh exits 0" 0 "$rc"
[ "$rc" = 0 ] || { tail -20 "$T/bench.err" | sed 's/^# */# /; s/^/# /'; grep -A20 '^Errors:' "$out" 2>/dev/null | sed 's/^/# /'; }
check "the table is written" grep -q '^## Targets' "$out"
check "the table is printed too" grep -q '^## Through Postfix' "$T/bench.out"
[ -f "$data" ] || { notok "the results data is written"; finish; }

# value KEY - a value of the data file
value() { sed -n "s/^$1=//p" "$data"; }
# positive VALUE - a number above 0
# shellcheck disable=SC2317  # called through check
positive() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v v="$1" 'BEGIN { exit !(v > 0) }'; }

for cfg in none null_unix null_inet nothing_unix nothing_inet nothing_env_unix nothing_env_inet \
	count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet; do
	check "10 sessions, $cfg: a rate ($(value "rate.$cfg"))" positive "$(value "rate.$cfg")"
done
for cfg in none null_unix null_inet nothing_unix nothing_inet nothing_env_unix nothing_env_inet \
	count_unix count_inet hdr_unix hdr_inet; do
	check "1 session, $cfg: a rate ($(value "rate1.$cfg"))" positive "$(value "rate1.$cfg")"
done
for cfg in null_unix null_inet nothing_unix count_unix count_inet count_unix_ru count_unix_k100 \
	hdr_unix_c1 hdr_inet_c1; do
	check "milterload, $cfg: a rate ($(value "load.$cfg"))" positive "$(value "load.$cfg")"
done
for sock in unix inet; do
	check "null_$sock: milter CPU per message measured ($(value "mcpu.null_$sock"))" \
		positive "$(value "mcpu.null_$sock")"
	steps=$(value "steps.null_$sock")
	check "null_$sock asked for what quota-milter asked for ($steps)" \
		test -n "$steps" -a "$steps" = "$(value "nego.nothing_env_$sock")"
	check_eq "null_$sock negotiated it" "$steps" "$(value "nego.null_$sock")"
done
check_eq "no peers in QUICK mode" "" "$(value peers)"
check "the table says the peers were not run in QUICK mode" grep -q 'not run in QUICK mode' "$out"
check "health reports: their CPU cost measured ($(value stats_cost) %)" \
	grep -qE '^-?[0-9]+(\.[0-9]+)?$' <<<"$(value stats_cost)"
check "metrics over many accounts: timed ($(value scan_secs) s)" positive "$(value scan_secs)"
check "the table has both rows" test "$(grep -cE '^\| (health reports cost|quota-milter-ctl metrics reads)' "$out")" = 2
for cfg in count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet count_month_unix \
	count_caps_unix; do
	c=$(value "counted.$cfg")
	check "$cfg counted every accepted message once ($c)" \
		awk -v c="$c" 'BEGIN { split(c, a, "/"); exit !(a[1] > 0 && a[1] == a[2]) }'
	check "$cfg: Redis round trips per message measured ($(value "rtrip.$cfg"))" \
		positive "$(value "rtrip.$cfg")"
	check "$cfg: milter CPU per message measured ($(value "mcpu.$cfg"))" \
		positive "$(value "mcpu.$cfg")"
done
for cfg in nothing_unix nothing_inet nothing_env_unix nothing_env_inet; do
	check_eq "$cfg counted nothing" 0/0 "$(value "counted.$cfg")"
done
check_eq "50 sessions held open at once" 50 "$(value held)"
check "the milter's peak RSS measured ($(value hwm_kib) KiB)" positive "$(value hwm_kib)"
check_eq "no errors" 0 "$(value errors)"
check "the table says no errors" grep -qx 'Errors: none.' "$out"
finish
