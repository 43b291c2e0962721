#!/bin/bash
# t_milter_accounting.sh BUILD - what the usage hashes record, through the
# real daemon under miltertest against a real redis-server: refusals in the
# month they were decided in (the milter's clock moved with libfaketime
# across a month's end), monitor mode's what-if figure, refusals of a
# message that then tempfails. Also run against the ASan+UBSan build.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
build=${1:-build}

redis_start

# acct_conf NAME MODE - $T/NAME.conf: sender-domain accounts, decided at
# RCPT, timezone UTC, socket unix:$T/NAME.sock
acct_conf() {
	sd_conf "$T/$1.conf" "unix:$T/$1.sock" "mode = \"$2\"" 'timezone = "UTC"' \
		"journal = \"$T/journal-$1\""
}

# 1. A month's end between RCPT and end of message: the milter's time()
# is read from a file (libfaketime) that the script moves past midnight.
libft=$(find /usr/lib -name libfaketimeMT.so.1 2>/dev/null | head -n 1)
if [ -z "$libft" ]; then
	notok "libfaketime is installed (make check installs it)"
else
	m1=2027-01 m2=2027-02
	rcli HSET 'qm:account:{edge.example}' plan basic limit 2 >/dev/null
	rcli HSET "qm:usage:{edge.example}:$m1" total 1 >/dev/null
	echo "$m1-31 23:59:59" > "$T/clock"
	acct_conf m enforce
	msock="unix:$T/m.sock"
	if TZ=UTC FAKETIME_TIMESTAMP_FILE="$T/clock" FAKETIME_NO_CACHE=1 \
	   FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD="$libft" \
	   ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:verify_asan_link_order=0 \
	   milter_up milter-m "$T/m.conf" "$msock"; then
		mt "$msock" accounting -D phase=month -D clock="$T/clock" -D m1="$m1" -D m2="$m2"
		check "milter-m stops cleanly" milter_stop "$MILTER_PID" milter-m
	fi
fi

# 2. Monitor mode, recipients decided one by one: would_refuse is what
# enforce would have refused, not the whole message.
rcli HSET 'qm:account:{mon.example}' plan basic limit 10 >/dev/null
rcli HSET "qm:usage:{mon.example}:$month" total 8 >/dev/null
acct_conf n monitor
msock="unix:$T/n.sock"
if milter_up milter-n "$T/n.conf" "$msock"; then
	mt "$msock" accounting -D phase=monitor
	check "milter-n stops cleanly" milter_stop "$MILTER_PID" milter-n
fi

# 3. RCPT refusals of a message that then tempfails (Redis gone at its
# end): journaled, recorded once Redis is back.
rcli HSET 'qm:account:{cut.example}' plan basic limit 2 >/dev/null
rcli HSET "qm:usage:{cut.example}:$month" total 1 >/dev/null
acct_conf c enforce
msock="unix:$T/c.sock"
if milter_up milter-c "$T/c.conf" "$msock"; then
	mt "$msock" accounting -D phase=cut
	wait "$REDIS_PID" 2>/dev/null
	check "the refusal was journaled" grep -q 'account cut.example: 1 refused journaled' "$T/milter-c.log"
	redis_start "$REDIS_PORT"
	wait_for "journal replay" 10 bash -c \
		"[ \"\$(redis-cli -p $REDIS_PORT HGET 'qm:usage:{cut.example}:$month' refused)\" = 1 ]"
	check_eq "the refusal recorded once Redis is back" 1 \
		"$(rcli HGET "qm:usage:{cut.example}:$month" refused)"
	check "milter-c stops cleanly" milter_stop "$MILTER_PID" milter-c
fi
