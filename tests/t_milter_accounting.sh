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
month=$(date -u +%Y-%m)

redis_start

# sd_conf FILE SOCKET MODE - sender-domain accounts, decided at RCPT
sd_conf() {
	cat > "$1" <<EOC
socket = "unix:$2"
user = ""
mode = "$3"
timezone = "UTC"
journal = "$T/journal-$(basename "$1" .conf)"
default_plan = "free"
redis { address = "127.0.0.1:$REDIS_PORT" }
account { source = "sender-domain" }
category crm { sender = "@" }
plan free { monthly = 0 }
plan basic { monthly = 10000 }
EOC
}

# mt SOCKET PHASE [-D NAME=VALUE...] - run tests/milter/accounting.lua
mt() {
	local sock=$1 phase=$2
	shift 2
	miltertest -D sock="unix:$sock" -D rport="$REDIS_PORT" -D month="$month" \
		-D lib=tests/milter/common.lua -D phase="$phase" "$@" -s tests/milter/accounting.lua
}

# up NAME CONF SOCKET - start the daemon (env as given) and wait for its socket
up() {
	milter_start "$build" "$2" "$1"
	wait_for "$1" 20 test -S "$3" && return 0
	notok "$1 started"
	sed 's/^/# /' "$T/$1.log"
	return 1
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
	sd_conf "$T/m.conf" "$T/m.sock" enforce
	if TZ=UTC FAKETIME_TIMESTAMP_FILE="$T/clock" FAKETIME_NO_CACHE=1 \
	   FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD="$libft" \
	   ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:verify_asan_link_order=0 \
	   up milter-m "$T/m.conf" "$T/m.sock"; then
		mt "$T/m.sock" month -D clock="$T/clock" -D m1="$m1" -D m2="$m2"
		check "milter-m stops cleanly" milter_stop "$MILTER_PID" milter-m
	fi
fi

# 2. Monitor mode, recipients decided one by one: would_refuse is what
# enforce would have refused, not the whole message.
rcli HSET 'qm:account:{mon.example}' plan basic limit 10 >/dev/null
rcli HSET "qm:usage:{mon.example}:$month" total 8 >/dev/null
sd_conf "$T/n.conf" "$T/n.sock" monitor
if up milter-n "$T/n.conf" "$T/n.sock"; then
	mt "$T/n.sock" monitor
	check "milter-n stops cleanly" milter_stop "$MILTER_PID" milter-n
fi

# 3. RCPT refusals of a message that then tempfails (Redis gone at its
# end): journaled, recorded once Redis is back.
rcli HSET 'qm:account:{cut.example}' plan basic limit 2 >/dev/null
rcli HSET "qm:usage:{cut.example}:$month" total 1 >/dev/null
sd_conf "$T/c.conf" "$T/c.sock" enforce
if up milter-c "$T/c.conf" "$T/c.sock"; then
	mt "$T/c.sock" cut
	wait "$REDIS_PID" 2>/dev/null
	check "the refusal was journaled" grep -q 'account cut.example: 1 refused journaled' "$T/milter-c.log"
	redis_start "$REDIS_PORT"
	wait_for "journal replay" 10 bash -c \
		"[ \"\$(redis-cli -p $REDIS_PORT HGET 'qm:usage:{cut.example}:$month' refused)\" = 1 ]"
	check_eq "the refusal recorded once Redis is back" 1 \
		"$(rcli HGET "qm:usage:{cut.example}:$month" refused)"
	check "milter-c stops cleanly" milter_stop "$MILTER_PID" milter-c
fi
