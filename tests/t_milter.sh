#!/bin/bash
# t_milter.sh BUILD - protocol tests: the real daemon under miltertest,
# against a real redis-server. Also run against the ASan+UBSan build.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
build=${1:-build}
month=$(date -u +%Y-%m)

redis_start
rcli HSET 'qm:account:{acme}' plan basic limit 5 >/dev/null
rcli HSET 'qm:account:{tiny}' plan basic suspended 1 >/dev/null
rcli HSET 'qm:account:{bigcorp}' plan enterprise >/dev/null
rcli HSET 'qm:account:{gold-co}' plan gold >/dev/null

# write_conf FILE SOCKET EXTRA - the shipped plans with a test's socket and Redis
write_conf() {
	sed -e "s|^socket .*|socket = \"$2\"|" -e 's|^user .*|user = ""|' \
	    -e "s|address *= *\"127.0.0.1:6379\"|address = \"127.0.0.1:$REDIS_PORT\"|" \
	    conf/quota-milter.conf > "$1"
	printf '%s\n' "$3" >> "$1"
}

# 1. Header accounts, the shipped conf's categories.
mport=$(free_port)
write_conf "$T/a.conf" "inet:$mport@127.0.0.1" \
	'reply unknown_plan { text = "Plan $plan of account $account is not configured, 100% sure" }'
grep -q "127.0.0.1:$REDIS_PORT" "$T/a.conf" || notok "test conf points at the test Redis"
milter_start "$build" "$T/a.conf" milter-a
pa=$MILTER_PID
if wait_for milter-a 20 bash -c "echo > /dev/tcp/127.0.0.1/$mport"; then
	miltertest -D sock="inet:$mport@127.0.0.1" -D rport="$REDIS_PORT" -D month="$month" \
		-D lib=tests/milter/common.lua -s tests/milter/header_account.lua
else
	notok "milter-a started"; sed 's/^/# /' "$T/milter-a.log"
fi
check "decision lines logged with queue id and fields" \
	grep -qE 'NOQUEUE: account=acme plan=basic category=crm units=3 used=3/5 decision=accept' "$T/milter-a.log"

# 2. Sender-domain accounts, decided at RCPT.
rcli HSET 'qm:account:{shop.example}' plan basic limit 2 >/dev/null
rcli HSET 'qm:account:{race.example}' plan basic limit 1 >/dev/null
bsock="$T/b.sock"
cat > "$T/b.conf" <<EOC
socket = "unix:$bsock"
user = ""
default_plan = "free"
redis { address = "127.0.0.1:$REDIS_PORT" }
account { source = "sender-domain" }
category crm { sender = "@" }
plan free { monthly = 0 }
plan basic { monthly = 10000 }
EOC
milter_start "$build" "$T/b.conf" milter-b
pb=$MILTER_PID
if wait_for milter-b 20 test -S "$bsock"; then
	miltertest -D sock="unix:$bsock" -D rport="$REDIS_PORT" -D month="$month" \
		-D lib=tests/milter/common.lua -s tests/milter/sender_domain.lua
else
	notok "milter-b started"; sed 's/^/# /' "$T/milter-b.log"
fi
check "unix socket is mode 0660" test "$(stat -c %a "$bsock")" = 660
check "milter-b stops cleanly (no sanitizer report)" milter_stop "$pb" milter-b

# 3. Redis stops, then comes back on the same port: 451 4.3.0, then accepted.
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null
start=$(date +%s%N)
miltertest -D sock="inet:$mport@127.0.0.1" -D rport="$REDIS_PORT" -D month="$month" \
	-D phase=down -D lib=tests/milter/common.lua -s tests/milter/redis_down.lua
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
check "tempfail came without a hang (${elapsed} ms)" test "$elapsed" -lt 5000
redis_start "$REDIS_PORT"
rcli HSET 'qm:account:{downco}' plan basic >/dev/null
miltertest -D sock="inet:$mport@127.0.0.1" -D rport="$REDIS_PORT" -D month="$month" \
	-D phase=up -D lib=tests/milter/common.lua -s tests/milter/redis_down.lua
check_eq "count after Redis came back" 1 "$(rcli HGET "qm:usage:{downco}:$month" total)"
check "milter-a stops cleanly (no sanitizer report)" milter_stop "$pa" milter-a

finish
