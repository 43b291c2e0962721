#!/bin/bash
# t_demo.sh BUILD - `make demo` keeps telling the truth: its replies,
# counts and tables are what the README shows.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
build=${1:-build}

out=$(timeout 300 bash tests/demo.sh "$build" 2>&1); rc=$?
check_eq "demo exits 0" 0 "$rc"
[ "$rc" = 0 ] || sed 's/^/# /' <<<"$out" | tail -20
check_eq "acme: 5 accepted" 5 "$(grep -c '^acme .*-> 250 ' <<<"$out")"
check_eq "acme: 2 refused with the limit reply" 2 \
	"$(grep -c '^acme .*-> 550 5.7.1 Monthly sending limit of 5 emails reached for account acme (plan basic)$' <<<"$out")"
check_eq "globex: both accepted" 2 "$(grep -c '^globex .*-> 250 ' <<<"$out")"
check "initech: free plan refused" \
	grep -q '^initech .*-> 550 5.7.1 Plan free of account initech does not include outgoing mail$' <<<"$out"
check "top lists acme exhausted at 5 of 5" \
	grep -qE '^acme +basic +5 +5 +0 +100% +exhausted$' <<<"$out"
check "top lists globex with 5 of 50000" grep -qE '^globex +standard +5 +50000 ' <<<"$out"
check "usage shows acme's 2 refused" grep -qE '^refused +2$' <<<"$out"
check "7 delivered, internal headers stripped" \
	grep -q '^== Delivered: 7 messages, with 0 X-Quota-\* headers left in them$' <<<"$out"
finish
