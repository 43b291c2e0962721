#!/bin/bash
# t_milter_caps.sh BUILD - hourly and daily caps through the real daemon
# under miltertest against a real redis-server, the milter's clock held by
# libfaketime on a day of the future (the window hashes expire an hour
# after their window, in Redis's real time): recipients beyond a cap
# refused at RCPT, the next hour reopening, the month still refusing
# first, overrides, a cap of 0, the cap event, replies at end of message
# with the window and when it reopens, monitor mode, a Redis hang during
# a charge (cancelled from every window). Also run against
# the ASan+UBSan build.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
build=${1:-build}

[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }
libft=$(find /usr/lib -name libfaketimeMT.so.1 2>/dev/null | head -n 1)
[ -n "$libft" ] || { notok "libfaketime is installed (make check installs it)"; finish; }

day=2027-03-10 nextday=2027-03-11 fmonth=2027-03
echo "$day 13:59:50" > "$T/clock"
redis_start

# caps_milter NAME MODE SOURCE [LINE...] - start milter NAME under the
# fake clock, plan capped (monthly 100, daily 10, hourly 3), timezone UTC,
# accounts from SOURCE (sender-domain: category crm for any sender;
# header: the shipped headers); then run caps.lua's phase NAME
caps_milter() {
	local name=$1 mode=$2 source=$3 sock="unix:$T/$1.sock"
	shift 3
	small_conf "$T/$name.conf" "$sock" "mode = \"$mode\"" 'timezone = "UTC"' \
		"journal = \"$T/journal-$name\"" 'default_plan = ""' \
		"account { source = \"$source\" }" \
		'plan capped { monthly = 100  daily = 10  hourly = 3 }' "$@"
	if TZ=UTC FAKETIME_TIMESTAMP_FILE="$T/clock" FAKETIME_NO_CACHE=1 \
	   FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD="$libft" \
	   ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:verify_asan_link_order=0 \
	   milter_up "milter-$name" "$T/$name.conf" "$sock"; then
		mt "$sock" caps -D phase="$name" -D clock="$T/clock" -D day="$day" \
			-D nextday="$nextday" -D fmonth="$fmonth" -D rpid="$REDIS_PID"
		check "milter-$name stops cleanly" milter_stop "$MILTER_PID" "milter-$name"
	fi
}

# log_has NAME TEXT... - the milter's log has a line holding every TEXT
log_has() {
	local lines t
	lines=$(cat "$T/milter-$1.log" 2>/dev/null)
	shift
	for t in "$@"; do lines=$(grep -F -- "$t" <<<"$lines") || return 1; done
}

# 1. Sender-domain accounts: recipients decided one by one.
accounts <<EOA
hour.example capped
month.example capped limit 2
lift.example capped limit_hourly -1
daily.example capped limit_daily 2
zero.example capped limit_hourly 0
EOA
rcli HSET "qm:usage:{month.example}:$fmonth" total 1 >/dev/null
caps_milter rcpt enforce sender-domain 'category crm { sender = "@" }'
check "the RCPT refusal's log line names the hour" log_has rcpt \
	'account=hour.example' 'decision=refuse-rcpt' "reason=hourly_cap window=${day}T13 used=3/3"
check "the daily cap's log line names the day" log_has rcpt \
	'account=daily.example' "reason=daily_cap window=$day used=0/2"
check "the month's RCPT refusal stays exhausted" log_has rcpt \
	'account=month.example' 'decision=refuse-rcpt reason=exhausted'
check "a cap of 0 refuses as the hourly cap" log_has rcpt \
	'account=zero.example' 'reason=hourly_cap'

# 2. Header accounts: the whole message decided at end of data.
echo "$day 13:59:50" > "$T/clock"
accounts <<EOA
acme capped
duo capped
dayco capped limit_daily 1
full capped limit 1
EOA
rcli HSET "qm:usage:{full}:$fmonth" total 1 >/dev/null
caps_milter eom enforce header \
	'category crm { header = "X-Quota-Category" match = "^crm$" }' \
	'reply daily_cap { text = "$account used $used of $limit in $window, retry after $retry_after" }'
check "the end-of-message 451's log line says tempfail and names the hour" log_has eom \
	'account=acme' 'decision=tempfail' "reason=hourly_cap window=${day}T13 used=3/3"

# 3. Monitor mode.
accounts <<EOA
mon.example capped
EOA
caps_milter monitor monitor sender-domain 'category crm { sender = "@" }'

# 4. Redis stops during a charge: the cancel the milter journals takes
# the charge back from the month and from both windows.
accounts <<EOA
hang capped
EOA
caps_milter hang enforce header 'category crm { header = "X-Quota-Category" match = "^crm$" }'
check "the charge in doubt had its cancel journaled" log_has hang \
	'account hang: charge' 'in doubt, cancel journaled'
finish
