#!/bin/bash
# shellcheck disable=SC2016,SC2317  # awk programs in single quotes; functions called through check
# t_faults.sh BUILD - faults on purpose, under traffic, end to end: the real
# daemon attached to a throwaway Postfix on loopback, real redis-servers,
# and a few client loops sending counted mail (header accounts, one
# recipient, so one unit each) while the test breaks things:
#
#   1. Redis hangs (SIGSTOP ~2 s; also for an account with hourly and daily
#      caps, whose windows must end as exact as its month), dies (SIGKILL,
#      restarted on its port),
#      restarts (SHUTDOWN NOSAVE), drops every client (CLIENT KILL); then,
#      timed on purpose, a CLIENT KILL or SHUTDOWN in the very event-loop
#      turn in which Redis runs the milter's request
#   2. the milter dies (SIGKILL) and is restarted
#   3. the milter reloads its conf (SIGUSR1) again and again
#   4. Redis Sentinel: the master dies, the replica is promoted
#
# and checks: every reply within 2 x timeout_ms + 2 s (a hang guard, not a
# benchmark), never a milter timeout in Postfix's log, 451 while Redis or
# the milter is away and 250 again within seconds of its return, and the
# usage total equal to the messages that got 250 at end of DATA. Redis runs
# with an fsynced append-only file, so its data survives the kill.
# Measurements go to "# " lines. Takes about a minute (bounded: loops stop
# after MAX_SECS, every wait has a limit). Run only against the normal
# build by run.sh; FAULT_LOOPS sets the number of client loops.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}

LOOPS=${FAULT_LOOPS:-3}			# parallel client loops
TIMEOUT_MS=250				# the conf's redis timeout_ms
BOUND_MS=$((2 * TIMEOUT_MS + 2000))	# the slowest reply allowed
RECOVER_MS=4000				# connect backoff (2 s at most) plus a message
MAX_PER_LOOP=400			# each phase's loops stop by themselves...
MAX_SECS=40				# ...after this many messages or seconds
REDIS_ARGS=(--appendonly yes --appendfsync always)

for tool in redis-server redis-cli postfix smtp-sink; do
	command -v "$tool" >/dev/null || { notok "$tool is installed (tests/deps.sh)"; finish; }
done
[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }

# Stopped processes and client loops go before lib.sh's cleanup.
trap 'unset IFS; fault_cleanup; postfix_stop_all; cleanup' EXIT
fault_cleanup() {
	local p
	touch "$T/stop" 2>/dev/null
	for p in $PIDS; do kill -CONT "$p" 2>/dev/null; done
}

# reaped PID - forget a process the test has waited for: the cleanup must
# not signal its number, which another process may have by then
reaped() {
	local p keep=""
	for p in $PIDS; do [ "$p" = "$1" ] || keep="$keep $p"; done
	PIDS=$keep
}

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# --- Redis -------------------------------------------------------------

declare -A RPID=()

# rping PORT - Redis answers PONG there (not LOADING, not refused)
rping() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; }

# rstart NAME PORT ARGS... - a redis-server with its files in $T/NAME
rstart() {
	local name=$1 port=$2
	shift 2
	mkdir -p "$T/$name"
	redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$T/$name" \
		--logfile "$T/$name/redis.log" "$@" &
	RPID[$name]=$!
	PIDS="$PIDS $!"
	wait_for "$name" 10 rping "$port"
}

# rkill NAME SIGNAL - signal it; after KILL or TERM, wait until it is gone
rkill() {
	kill "-$2" "${RPID[$1]}"
	case $2 in KILL | TERM) wait "${RPID[$1]}" 2>/dev/null; reaped "${RPID[$1]}" ;; esac
	return 0
}

# --- the milter ----------------------------------------------------------

# mconf FILE EXTRA [SED...] - write_conf with the test's socket and timeout_ms
mconf() {
	write_conf "$1" "inet:$mport@127.0.0.1" "$2" "s|timeout_ms *= *[0-9]*|timeout_ms = $TIMEOUT_MS|" "${@:3}"
}

# mup CONF NAME - start the daemon, wait for its port
mup() { milter_up "$2" "$1" "inet:$mport@127.0.0.1" || finish; }

# --- traffic -------------------------------------------------------------

# traffic_loop ID ACCOUNT OUT - counted messages one after another until
# $T/stop appears (or MAX_PER_LOOP, MAX_SECS). One line per transaction:
#   start_us|end_us|rc|end-of-DATA ms|slowest reply ms|stage|last reply
traffic_loop() {
	local id=$1 acct=$2 out=$3 n=0 t0 rc stage rcpt end=$((SECONDS + MAX_SECS))
	SMTP_LOG=$T/smtp.$acct.$id.log
	SMTP_TIMEOUT=20
	while [ ! -e "$T/stop" ] && [ "$n" -lt "$MAX_PER_LOOP" ] && [ "$SECONDS" -lt "$end" ]; do
		n=$((n + 1))
		rcpt=$acct-$id-$n@dest.example
		t0=${EPOCHREALTIME//[!0-9]/}
		smtp_send "$PF_SMTP_PORT" sender@acme.example "$rcpt" \
			"From: <sender@acme.example>" "To: <$rcpt>" \
			"Subject: fault traffic $acct $id.$n" \
			"Message-ID: <$acct.$id.$n.$$@client.qm-test.example>" \
			"X-Quota-Account: $acct" "X-Quota-Category: crm"
		rc=$?
		if [ -n "$SMTP_DATA_MS" ]; then stage=eod
		elif [ -z "$SMTP_GREETING" ]; then stage=connect
		else stage=before-data; fi
		printf '%s|%s|%s|%s|%s|%s|%s\n' "$t0" "${EPOCHREALTIME//[!0-9]/}" "$rc" \
			"${SMTP_DATA_MS:--}" "$SMTP_MAX_MS" "$stage" "${SMTP_REPLY//$'\n'/ }" >> "$out"
	done
}

TRAFFIC_PIDS=""
# traffic_start ACCOUNT - LOOPS loops for the account, results in $T/tr.ACCOUNT.N
traffic_start() {
	local i
	rm -f "$T/stop"
	TRAFFIC_PIDS=""
	for i in $(seq 1 "$LOOPS"); do
		traffic_loop "$i" "$1" "$T/tr.$1.$i" &
		TRAFFIC_PIDS="$TRAFFIC_PIDS $!"
		PIDS="$PIDS $!"
	done
}
traffic_stop() {
	local p
	touch "$T/stop"
	for p in $TRAFFIC_PIDS; do wait "$p"; reaped "$p"; done
	TRAFFIC_PIDS=""
}

# txn ACCOUNT AWK_PROGRAM [AWK ARGS] - run awk over the account's transactions
txn() {
	local acct=$1 prog=$2
	shift 2
	cat "$T"/tr."$acct".* 2>/dev/null | awk -F'|' "$@" "$prog"
}
# tr_count ACCOUNT CONDITION [AWK ARGS] - how many transactions match
tr_count() { txn "$1" "$2 {n++} END {print n+0}" "${@:3}"; }
# tr_max ACCOUNT FIELD - the largest value of a numeric field
tr_max() { txn "$1" '$f != "-" && $f + 0 > m {m = $f + 0} END {print m + 0}' -v f="$2"; }
# tr_pct ACCOUNT FIELD P - a percentile of a numeric field
tr_pct() {
	cat "$T"/tr."$1".* 2>/dev/null | awk -F'|' -v f="$2" '$f != "-" {print $f}' | sort -n |
		awk -v p="$3" '{v[NR] = $1} END {i = int(NR * p / 100); if (i < 1) i = 1; print v[i] + 0}'
}

usage_total() { redis-cli -p "$1" --raw HGET "qm:usage:{$2}:$month" total; }

OK250='$3 == 0 && $7 ~ /^250 /'
T451='$6 == "eod" && $7 == "451 4.3.0 Quota service temporarily unavailable"'

# phase_report LABEL ACCOUNT - one "# " line of what the loops saw
phase_report() {
	echo "# $1: $(tr_count "$2" 1) transactions, $(tr_count "$2" "$OK250") got 250," \
		"$(tr_count "$2" "$T451") got 451 4.3.0, $(tr_count "$2" "!($OK250) && !($T451)") other;" \
		"end-of-DATA reply p50 $(tr_pct "$2" 4 50) ms, p99 $(tr_pct "$2" 4 99) ms," \
		"max $(tr_max "$2" 4) ms; slowest reply $(tr_max "$2" 5) ms"
}

# check_common LABEL ACCOUNT ALLOWED - traffic flowed, no connection
# failures, replies within the bound, and every one 250 or matching the
# awk condition ALLOWED
check_common() {
	local label=$1 acct=$2 allowed=$3 n max
	phase_report "$label" "$acct"
	n=$(tr_count "$acct" 1)
	check "$label: traffic flowed ($n transactions)" test "$n" -ge 15
	check_eq "$label: no connection or protocol failure" 0 "$(tr_count "$acct" '$3 == 2')"
	n=$(tr_count "$acct" "!($OK250) && !($allowed)")
	check_eq "$label: every reply 250 or the expected tempfail" 0 "$n"
	[ "$n" = 0 ] || txn "$acct" "!($OK250) && !($allowed)" | head -5 | sed 's/^/#   /'
	max=$(tr_max "$acct" 5)
	check "$label: every SMTP reply within ${BOUND_MS} ms (slowest $max ms)" test "$max" -lt "$BOUND_MS"
}

# check_outage LABEL ACCOUNT DOWN_US GONE_US BACK_US EXPECTED_AWK_CONDITION -
# from DOWN to GONE the service was certainly away (the fault began before
# DOWN; GONE was taken before it could serve again, BACK once the test saw
# it serve): every transaction wholly in between was tempfailed; soon after
# BACK, everything got 250 again
check_outage() {
	local label=$1 acct=$2 down=$3 gone=$4 back=$5 want=$6 inside first last
	inside=$(tr_count "$acct" '$1 >= d && $2 <= g' -v d="$down" -v g="$gone")
	# How many fall wholly inside depends on the machine's speed: shown,
	# not asserted; each of them must have been tempfailed.
	echo "# $label: transactions wholly inside the outage: $inside"
	check_eq "$label: each of them tempfailed" "$inside" \
		"$(tr_count "$acct" "\$1 >= d && \$2 <= g && ($want)" -v d="$down" -v g="$gone")"
	# the first 250 to end after it, the last tempfailed transaction to begin
	first=$(txn "$acct" "$OK250"' && $2 > b && (m == "" || $2 < m) {m = $2} END {print (m == "" ? -1 : int((m - b) / 1000))}' -v b="$back")
	last=$(txn "$acct" "!($OK250)"' && (m == "" || $1 > m) {m = $1} END {print int((m - b) / 1000)}' -v b="$back")
	echo "# $label: transactions that ended during the outage or 1 s after it:" \
		"$(tr_count "$acct" '$2 >= d && $2 <= b + 1000000' -v d="$down" -v b="$back"), end-of-DATA max" \
		"$(txn "$acct" '$2 >= d && $2 <= b + 1000000 && $4 != "-" && $4 + 0 > m {m = $4 + 0} END {print m + 0}' -v d="$down" -v b="$back") ms"
	echo "# $label: outage $(( (back - down) / 1000 )) ms; after it, first 250 at +$first ms, last tempfailed transaction began at $(printf %+d "$last") ms"
	check "$label: 250 again soon after ($first ms)" test "$first" -ge 0 -a "$first" -lt $((RECOVER_MS + 2000))
	check "$label: no transaction begun ${RECOVER_MS} ms after it tempfailed" test "$last" -lt "$RECOVER_MS"
}

# doubts ACCOUNT - tempfails whose charge was left in doubt (Redis may have
# run it): each had its cancel journaled, to be taken back from Redis
doubts() { cat "$T"/milter*.log | grep -c "account=$1 .*decision=tempfail reason=.*\(timed out\|Redis\)"; }
cancels() { cat "$T"/milter*.log | grep -c "account $1: charge [0-9a-f]* in doubt, cancel journaled"; }

# check_total LABEL ACCOUNT REDIS_PORT [LOSS_WINDOW [IN_FLIGHT]] - the
# usage total is the number of messages that got 250: exactly (charges
# left in doubt by a Redis failure are cancelled by the milter's journal
# within seconds of Redis's return: waited for), unless a failover lost
# at most LOSS_WINDOW counts (reported), or the milter was killed between
# a charge and its verdict (at most IN_FLIGHT, reported)
check_total() {
	local label=$1 acct=$2 port=$3 window=${4:-0} inflight=${5:-0} acc total i
	acc=$(tr_count "$acct" "$OK250")
	for i in $(seq 1 100); do
		total=$(usage_total "$port" "$acct")
		total=${total:-0}
		[ "$total" = "$acc" ] && break
		sleep 0.1
	done
	echo "# $label: usage total $total, messages that got 250: $acc; tempfails after a Redis failure: $(doubts "$acct"), charges in doubt cancelled: $(cancels "$acct")"
	if [ "$total" = "$acc" ]; then
		ok "$label: usage total = messages that got 250 ($acc)"
	elif [ "$total" -gt "$acc" ] && [ "$total" -le $((acc + inflight)) ]; then
		echo "# $label: $((total - acc)) counted for mail whose verdict died with the milter (README)"
		ok "$label: usage total = messages that got 250, plus $((total - acc)) in flight when the milter was killed"
	elif [ "$total" -lt "$acc" ] && [ $((acc - total)) -le "$window" ]; then
		echo "# $label: $((acc - total)) count(s) lost in the failover (asynchronous replication, README)"
		ok "$label: usage total = messages that got 250, less $((acc - total)) lost to replication"
	else
		notok "$label: usage total = messages that got 250 (expected $acc, got $total)"
	fi
}

# === setup ===============================================================

REDIS_PORT=$(free_port)
rstart redis "$REDIS_PORT" "${REDIS_ARGS[@]}" || { notok "redis-server started"; finish; }
for a in fa-stop fa-caps fa-kill fa-restart fa-ckill fb-mkill fc-reload fc-std; do
	redis-cli -p "$REDIS_PORT" HSET "qm:account:{$a}" plan basic >/dev/null
done
# Caps far above the traffic: never reached, but every charge goes to the
# day's and the hour's hashes too.
redis-cli -p "$REDIS_PORT" HSET "qm:account:{fa-caps}" limit_daily 100000 limit_hourly 100000 >/dev/null
redis-cli -p "$REDIS_PORT" HSET "qm:account:{fc-std}" plan standard >/dev/null

mport=$(free_port)
mconf "$T/qm.conf" ""
mup "$T/qm.conf" milter
# Short milter timeouts: a hung milter shows up as a logged timeout in
# seconds, not as a session stuck for Postfix's default minutes.
if ! postfix_start "$T/postfix" "$(free_port)" "$(postfix_milter_conf "inet:127.0.0.1:$mport")
milter_connect_timeout = 5s
milter_command_timeout = 10s
milter_content_timeout = 10s"; then
	notok "postfix started"; finish
fi
ok "postfix, the milter and redis-server (append-only, fsync always) started"

# === 1. Redis faults =====================================================

# 1a. Redis hangs: SIGSTOP for 2 s. Requests sent meanwhile sit in the
# kernel's buffers; when Redis resumes it runs them, though the milter gave
# up on their replies and tempfailed the messages (the README's caveat: a
# reply that does not come in time leaves the outcome unknown).
traffic_start fa-stop
sleep 1
rkill redis STOP; down=$(now_us)
sleep 2
gone=$(now_us); rkill redis CONT; back=$(now_us)
sleep 3
traffic_stop
check_common "1a SIGSTOP" fa-stop "$T451"
check_outage "1a SIGSTOP" fa-stop "$down" "$gone" "$back" "$T451"
check_total "1a SIGSTOP" fa-stop "$REDIS_PORT"
check "1a SIGSTOP: charges left in doubt by the hang were cancelled ($(cancels fa-stop))" \
	test "$(cancels fa-stop)" -ge 1

# 1f. The same hang for an account with caps: the charges left in doubt
# were counted in the month, the day and the hour at once; their cancels
# (the journal entries carry the charge's hour) take them back from all
# three. Each window's total, summed over the windows the traffic ran in
# (it may cross an hour), must equal the messages that got 250.
# window_total ACCOUNT PATTERN - the totals of the account's usage hashes
# whose window matches the glob, summed
window_total() {
	local k sum=0 v
	for k in $(redis-cli -p "$REDIS_PORT" --raw --scan --pattern "qm:usage:{$1}:$2"); do
		v=$(redis-cli -p "$REDIS_PORT" --raw HGET "$k" total)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}
traffic_start fa-caps
sleep 1
rkill redis STOP; down=$(now_us)
sleep 2
gone=$(now_us); rkill redis CONT; back=$(now_us)
sleep 3
traffic_stop
check_common "1f SIGSTOP, caps" fa-caps "$T451"
check_total "1f SIGSTOP, caps" fa-caps "$REDIS_PORT"
check "1f SIGSTOP, caps: charges left in doubt by the hang were cancelled ($(cancels fa-caps))" \
	test "$(cancels fa-caps)" -ge 1
acc=$(tr_count fa-caps "$OK250")
echo "# 1f SIGSTOP, caps: day total $(window_total fa-caps '????-??-??'), hour total $(window_total fa-caps '????-??-??T??'), messages that got 250: $acc"
check_eq "1f SIGSTOP, caps: the day's usage = messages that got 250" "$acc" \
	"$(window_total fa-caps '????-??-??')"
check_eq "1f SIGSTOP, caps: the hour's usage = messages that got 250" "$acc" \
	"$(window_total fa-caps '????-??-??T??')"

# 1b. Redis dies (SIGKILL) and is restarted on its port 1.5 s later; the
# append-only file brings its data back.
traffic_start fa-kill
sleep 1
rkill redis KILL; down=$(now_us)
sleep 1.5
gone=$(now_us)
rstart redis "$REDIS_PORT" "${REDIS_ARGS[@]}" || notok "1b: redis-server restarted"
back=$(now_us)
sleep 3
traffic_stop
check_common "1b SIGKILL" fa-kill "$T451"
check_outage "1b SIGKILL" fa-kill "$down" "$gone" "$back" "$T451"
check_total "1b SIGKILL" fa-kill "$REDIS_PORT"
check_eq "1b SIGKILL: account hashes survived the kill" basic \
	"$(redis-cli -p "$REDIS_PORT" --raw HGET 'qm:account:{fa-kill}' plan)"

# 1c. Redis restarts: SHUTDOWN NOSAVE, back 1 s later.
traffic_start fa-restart
sleep 1
redis-cli -p "$REDIS_PORT" SHUTDOWN NOSAVE >/dev/null 2>&1
wait "${RPID[redis]}" 2>/dev/null; reaped "${RPID[redis]}"
down=$(now_us)
sleep 1
gone=$(now_us)
rstart redis "$REDIS_PORT" "${REDIS_ARGS[@]}" || notok "1c: redis-server restarted"
back=$(now_us)
sleep 3
traffic_stop
check_common "1c SHUTDOWN" fa-restart "$T451"
check_outage "1c SHUTDOWN" fa-restart "$down" "$gone" "$back" "$T451"
check_total "1c SHUTDOWN" fa-restart "$REDIS_PORT"

# 1d. Redis drops every client, ten times: idle connections are noticed
# and re-made, a request cut before its reply is sent again; no tempfail.
traffic_start fa-ckill
sleep 1
killed=0
for i in $(seq 1 10); do
	n=$(redis-cli -p "$REDIS_PORT" CLIENT KILL TYPE normal 2>/dev/null)
	killed=$((killed + ${n:-0}))
	sleep 0.2
done
sleep 1
traffic_stop
echo "# 1d CLIENT KILL: $killed milter connections killed in 10 rounds"
check_common "1d CLIENT KILL" fa-ckill 0
check "1d CLIENT KILL: connections were killed ($killed)" test "$killed" -ge 1
check_total "1d CLIENT KILL" fa-ckill "$REDIS_PORT"

# 1e. The same two faults, timed on purpose: the milter's request and a
# CLIENT KILL (or a SHUTDOWN) reach Redis in one event-loop turn. Redis runs
# the script, then frees the connection (or exits) before the turn's replies
# are written: the milter sees the connection end before a reply byte, which
# does not prove that Redis never ran the request. Redis is frozen while both
# arrive; timeout_ms is raised (by a reload) so that the freeze is no timeout.
cp "$T/qm.conf" "$T/qm-a.conf"
sed "s|timeout_ms = $TIMEOUT_MS|timeout_ms = 3000|" "$T/qm-a.conf" > "$T/qm.next"
mv "$T/qm.next" "$T/qm.conf"
# reloads LOG - how many reloads the milter logged; reloads_reach LOG N
reloads() { grep -c "reloaded $T/qm.conf" "$1"; }
reloads_reach() { [ "$(reloads "$1")" -ge "$2" ]; }
# reload_to CONF LOG - make CONF the milter's conf and wait until it is loaded
reload_to() {
	local n
	n=$(reloads "$2")
	[ "$1" = "$T/qm.conf" ] || { cp "$1" "$T/qm.next"; mv "$T/qm.next" "$T/qm.conf"; }
	kill -USR1 "$MILTER_PID"
	wait_for "reload" 10 reloads_reach "$2" $((n + 1))
}
# request_waiting - bytes wait in the receive queue of Redis's side of one
# of its connections (/proc/net/tcp: local address, state 01 established,
# tx_queue:rx_queue, in hex)
request_waiting() {
	awk -v p="$(printf '%04X' "$REDIS_PORT")" 'NR > 1 && $4 == "01" {
		split($2, l, ":"); split($5, q, ":")
		if (l[2] == p && q[2] != "00000000") n++
	} END {exit !n}' /proc/net/tcp
}
# send_one ACCOUNT NAME - one counted message, its transaction in $T/tr.ACCOUNT.1
send_one() {
	SMTP_LOG=$T/smtp.$1.log
	smtp_send "$PF_SMTP_PORT" sender@acme.example "$2@dest.example" \
		"From: <sender@acme.example>" "To: <$2@dest.example>" \
		"Subject: fault traffic $1 $2" "X-Quota-Account: $1" "X-Quota-Category: crm"
	printf '%s|%s|%s|%s|%s|%s|%s\n' 0 0 "$?" "${SMTP_DATA_MS:--}" "$SMTP_MAX_MS" eod \
		"${SMTP_REPLY//$'\n'/ }" >> "$T/tr.$1.1"
}
# same_turn ACCOUNT COMMAND - one message for the account, then another
# whose request meets COMMAND in one turn of frozen Redis; sets SAME_REPLY
same_turn() {
	local acct=$1 cmd=$2 k vp i
	send_one "$acct" "$acct-warm"		# a pooled connection, the script loaded
	exec {k}<>"/dev/tcp/127.0.0.1/$REDIS_PORT"	# connected before the freeze
	rkill redis STOP
	send_one "$acct" "$acct-victim" &
	vp=$!
	for i in $(seq 1 100); do request_waiting && break; sleep 0.05; done
	check "1e: with Redis frozen, the milter's request for $acct waits in its socket" request_waiting
	printf '%s\r\n' "$cmd" >&"$k"
	sleep 0.1
	rkill redis CONT
	wait "$vp"
	exec {k}>&-
	SAME_REPLY=$(cut -d'|' -f7 "$T/tr.$acct.1" | tail -1)
}
if reload_to "$T/qm.conf" "$T/milter.log"; then
	rcli HSET 'qm:account:{fe-ckill}' plan basic >/dev/null
	rcli HSET 'qm:account:{fe-shut}' plan basic >/dev/null
	same_turn fe-ckill "CLIENT KILL TYPE normal"
	echo "# 1e CLIENT KILL in the request's turn: the message got \"$SAME_REPLY\"; usage total $(usage_total "$REDIS_PORT" fe-ckill) for 2 messages"
	check_eq "1e CLIENT KILL in the request's turn: counted once" \
		"$(tr_count fe-ckill "$OK250")" "$(usage_total "$REDIS_PORT" fe-ckill)"
	same_turn fe-shut "SHUTDOWN NOSAVE"
	wait "${RPID[redis]}" 2>/dev/null; reaped "${RPID[redis]}"
	rstart redis "$REDIS_PORT" "${REDIS_ARGS[@]}" || notok "1e: redis-server restarted"
	echo "# 1e SHUTDOWN in the request's turn: the message got \"$SAME_REPLY\"; usage total $(usage_total "$REDIS_PORT" fe-shut) for 1 + that one"
	# Redis ran the charge, then died before replying: the message is in
	# doubt and gets 451; its cancel, journaled, takes the count back once
	# Redis is up again (README: "When Redis fails"). The pool also sends
	# it once more on a fresh connection: should the restarted Redis answer
	# within the call's time (seen with another build's timing), the
	# message gets 250 and there is nothing to cancel; the charge id keeps
	# a charge that ran twice from counting twice.
	case $SAME_REPLY in
	250*)	check_eq "1e SHUTDOWN in the request's turn: sent again to the restarted Redis, no cancel" \
			0 "$(cancels fe-shut)" ;;
	*)	check_eq "1e SHUTDOWN in the request's turn: the charge's cancel was journaled" \
			1 "$(cancels fe-shut)" ;;
	esac
	check_total "1e SHUTDOWN in the request's turn" fe-shut "$REDIS_PORT"
	# The same with on_redis_error = accept: the message is journaled (and
	# the journal replayed into Redis once it is back).
	sed -i 's/^on_redis_error .*/on_redis_error = "accept"/' "$T/qm.conf"
	if reload_to "$T/qm.conf" "$T/milter.log"; then
		rcli HSET 'qm:account:{fe-shut-acc}' plan basic >/dev/null
		same_turn fe-shut-acc "SHUTDOWN NOSAVE"
		wait "${RPID[redis]}" 2>/dev/null; reaped "${RPID[redis]}"
		rstart redis "$REDIS_PORT" "${REDIS_ARGS[@]}" || notok "1e: redis-server restarted"
		check "1e accept mode: the journal was replayed" wait_for "journal replay" 10 \
			grep -q "journal: .* replayed into Redis" "$T/milter.log"
		echo "# 1e SHUTDOWN in the request's turn, accept mode: the message got \"$SAME_REPLY\"; usage total $(usage_total "$REDIS_PORT" fe-shut-acc) for 2 accepted"
		check_eq "1e SHUTDOWN in the request's turn, accept mode: counted once" \
			"$(tr_count fe-shut-acc "$OK250")" "$(usage_total "$REDIS_PORT" fe-shut-acc)"
	else
		notok "1e: the milter reloaded a conf with on_redis_error = accept"
	fi
else
	notok "1e: the milter reloaded a conf with timeout_ms = 3000"
fi
reload_to "$T/qm-a.conf" "$T/milter.log" || notok "1e: the milter reloaded its conf back"

# === 2. the milter dies ==================================================

# SIGKILL under traffic, restarted 1.5 s later. Meanwhile Postfix applies
# milter_default_action = tempfail.
M451='$7 ~ /^451 4\.7\.1 /'
traffic_start fb-mkill
sleep 1
kill -9 "$MILTER_PID"; wait "$MILTER_PID" 2>/dev/null; reaped "$MILTER_PID"
down=$(now_us)
sleep 1.5
gone=$(now_us)
mup "$T/qm.conf" milter2
back=$(now_us)
sleep 3
traffic_stop
check_common "2 milter SIGKILL" fb-mkill "$M451"
check_outage "2 milter SIGKILL" fb-mkill "$down" "$gone" "$back" "$M451"
echo "# 2 milter SIGKILL: replies seen meanwhile (stage, reply, count):"
txn fb-mkill "!($OK250)"' {print $6 ": " $7}' | sort | uniq -c | sed 's/^/#   /'
# Charges in flight at the kill are cancelled by the restarted milter (its
# inflight file; 2b shows it exactly). Only a kill in the microseconds
# between a slot's release and the reply can leave a count for a message
# that got 451: allowed, at most one per session, and reported.
check_total "2 milter SIGKILL" fb-mkill "$REDIS_PORT" 0 "$LOOPS"
check "2 milter SIGKILL: maillog shows Postfix could not reach the milter" \
	grep -qiE "(connect to milter service|milter) inet:127.0.0.1:$mport: .*(Connection refused|Connection reset|can't read)" "$PF_LOG"
grep -E "[Mm]ilter (service )?inet:127.0.0.1:$mport" "$PF_LOG" | sed -E 's/^.*(warning|error|info): //' |
	sed -E 's/^[0-9A-F]+: //' | sort | uniq -c | sort -rn | head -5 | sed 's/^/#   maillog: /'

# === 2b. the milter dies while its charge waits on Redis =================

# Deterministic: Redis frozen, a message whose charge waits in Redis's
# socket, the milter SIGKILLed, Redis continued (it runs the charge, which
# counts), then the milter restarted: it finds the charge in the inflight
# file its predecessor left and journals its cancel. The message got 451
# from Postfix (milter_default_action), so nothing may stay counted.
total_is() { [ "$(usage_total "$1" "$2")" = "$3" ]; }
rcli HSET 'qm:account:{fb-inflight}' plan basic >/dev/null
cp "$T/qm.conf" "$T/qm-fast.conf"
sed "s|timeout_ms = $TIMEOUT_MS|timeout_ms = 3000|" "$T/qm-fast.conf" > "$T/qm-slow.conf"
MNAME=milter2
if reload_to "$T/qm-slow.conf" "$T/milter2.log"; then
	send_one fb-inflight warm		# a pooled connection, the script loaded
	rkill redis STOP
	send_one fb-inflight victim &
	vp=$!
	for i in $(seq 1 100); do request_waiting && break; sleep 0.05; done
	check "2b: with Redis frozen, the milter's charge waits in its socket" request_waiting
	kill -9 "$MILTER_PID"; wait "$MILTER_PID" 2>/dev/null; reaped "$MILTER_PID"
	rkill redis CONT
	wait "$vp"; reaped "$vp"
	check_eq "2b: the message got 451 4.7.1 (milter_default_action)" "451 4.7.1" \
		"$(tail -1 "$T/tr.fb-inflight.1" | cut -d'|' -f7 | cut -c1-9)"
	check "2b: Redis ran the dead milter's charge (usage total 2)" \
		wait_for "the charge" 10 total_is "$REDIS_PORT" fb-inflight 2
	cp "$T/qm-fast.conf" "$T/qm.conf"
	MNAME=milter2b
	mup "$T/qm.conf" "$MNAME"
	check "2b: the restarted milter journaled the cancel of the charge left in flight" \
		wait_for "inflight recovery" 10 grep -q "inflight: 1 charges a killed milter left in flight" "$T/$MNAME.log"
	check_total "2b milter killed while its charge waits" fb-inflight "$REDIS_PORT"
else
	notok "2b: the milter reloaded a conf with timeout_ms = 3000"
fi
MLOG=$T/$MNAME.log

# === 3. SIGUSR1 reloads ==================================================

# Conf B: a new reply text, and plan standard cut to 1 a month.
cp "$T/qm.conf" "$T/qm-a.conf"
mconf "$T/qm-b.conf" 'reply exhausted { text = "Reloaded: $account is over $limit" }'
sed -i -E 's/^(plan standard +\{ *monthly *= *)[0-9]+/\11/' "$T/qm-b.conf"
grep -q '^plan standard *{ *monthly = 1 }' "$T/qm-b.conf" || notok "conf B cuts plan standard"

# fc-std (plan standard) sends one message under conf A: 250, used 1.
send_std() {
	smtp_send "$PF_SMTP_PORT" sender@acme.example "$1@dest.example" \
		"From: <sender@acme.example>" "To: <$1@dest.example>" "Subject: $1" \
		"X-Quota-Account: fc-std" "X-Quota-Category: crm"
}
SMTP_LOG=$T/smtp.reload.log
send_std fc-std-1
check_eq "3 reload: under conf A, plan standard takes the message" 250 "${SMTP_DATA_REPLY%% *}"

reloads_before=$(reloads "$MLOG")
traffic_start fc-reload
# A session that begins under conf A and ends after the switch to B: its
# message is decided on A (the conf its connection started with).
(
	msg_text() { sleep 2; printf '%s\n' "$@"; printf '\n%s\n' "$MSG_BODY"; }
	send_std fc-std-2
	echo "$SMTP_DATA_REPLY" > "$T/long-session.reply"
) &
long_pid=$!
PIDS="$PIDS $long_pid"
sleep 0.5
for i in 1 2 3 4 5 6 7 8; do
	# alternate A and B, replaced whole (rename), B last
	if [ $((i % 2)) = 0 ]; then cp "$T/qm-b.conf" "$T/qm.next"; else cp "$T/qm-a.conf" "$T/qm.next"; fi
	mv "$T/qm.next" "$T/qm.conf"
	kill -USR1 "$MILTER_PID"
	sleep 0.3
done
wait_for "reloads" 10 reloads_reach "$MLOG" $((reloads_before + 8))
sleep 1
traffic_stop
wait "$long_pid"; reaped "$long_pid"
reloads=$(( $(reloads "$MLOG") - reloads_before ))
echo "# 3 reload: $reloads reloads logged during traffic"
check_common "3 reload" fc-reload 0
check_eq "3 reload: every transaction got 250 (no session dropped, no 4xx)" \
	"$(tr_count fc-reload 1)" "$(tr_count fc-reload "$OK250")"
check_eq "3 reload: 8 reloads, none failed" "8 0" \
	"$reloads $(grep -c 'reload failed' "$MLOG")"
check_total "3 reload" fc-reload "$REDIS_PORT"
check_eq "3 reload: a session begun under conf A ends on A (its limit)" \
	250 "$(cut -c1-3 "$T/long-session.reply")"
SMTP_LOG=$T/smtp.reload.log
send_std fc-std-3
check_eq "3 reload: a new session gets conf B (its limit and text)" \
	"550 5.7.1 Reloaded: fc-std is over 1" "$SMTP_DATA_REPLY"
check "milter stops cleanly after all that" milter_stop "$MILTER_PID" "$MNAME"
reaped "$MILTER_PID"

# === 4. Redis Sentinel failover ==========================================

# A master (refusing writes unless a replica is at most 1 s behind, which
# bounds what a failover can lose), its replica, three sentinels (quorum 2).
smport=$(free_port)
rstart smaster "$smport" --min-replicas-to-write 1 --min-replicas-max-lag 1 \
	--repl-diskless-sync-delay 0 ||
	{ notok "4: master started"; finish; }
srport=$(free_port)
rstart sreplica "$srport" --replicaof 127.0.0.1 "$smport" || { notok "4: replica started"; finish; }
check "4 sentinel: the replica is in sync" wait_for "replica" 15 bash -c \
	"redis-cli -p $smport INFO replication | grep -q '^slave0:.*state=online'"
redis-cli -p "$smport" HSET 'qm:account:{fd-sentinel}' plan basic >/dev/null
redis-cli -p "$smport" WAIT 1 2000 >/dev/null
sports=()
for i in 1 2 3; do
	p=$(free_port)
	mkdir -p "$T/sentinel$i"
	sed -e "s|@PORT@|$p|" -e "s|@DIR@|$T/sentinel$i|" -e "s|@MASTER_PORT@|$smport|" \
		tests/faults/sentinel.conf.in > "$T/sentinel$i/sentinel.conf"
	redis-server "$T/sentinel$i/sentinel.conf" --sentinel &	# what redis-sentinel runs
	PIDS="$PIDS $!"
	sports+=("$p")
	wait_for "sentinel $i" 10 rping "$p" || notok "4: sentinel $i started"
done
# sentinel_field PORT FIELD - a field of SENTINEL MASTER qm
sentinel_field() {
	redis-cli -p "$1" --raw SENTINEL MASTER qm 2>/dev/null | awk -v f="$2" 'k {print; exit} $0 == f {k = 1}'
}
sentinels_ready() {
	local p
	for p in "${sports[@]}"; do
		[ "$(sentinel_field "$p" num-slaves)" = 1 ] || return 1
		[ "$(sentinel_field "$p" num-other-sentinels)" = 2 ] || return 1
	done
}
check "4 sentinel: the sentinels see the replica and each other" wait_for sentinels 20 sentinels_ready
master_port() { redis-cli -p "${sports[0]}" --raw SENTINEL get-master-addr-by-name qm 2>/dev/null | sed -n 2p; }

mconf "$T/qm-sentinel.conf" "" \
	"s|address *= *\"[^\"]*\"|sentinels = { \"127.0.0.1:${sports[0]}\", \"127.0.0.1:${sports[1]}\", \"127.0.0.1:${sports[2]}\" } master = \"qm\"|"
grep -q 'master = "qm"' "$T/qm-sentinel.conf" || notok "4: the milter conf names the sentinels"
mup "$T/qm-sentinel.conf" milter3

traffic_start fd-sentinel
sleep 1.5
rkill smaster KILL
down=$(now_us)
# Until sentinel 1 names the new master, the milter (which asks sentinel 1
# first) cannot reach one: "gone" is when the last poll that saw the old
# one began.
gone=$down
for i in $(seq 1 200); do
	t=$(now_us)
	[ "$(master_port)" = "$srport" ] && break
	gone=$t
	sleep 0.1
done
back=$(now_us)
check_eq "4 sentinel: the replica was promoted" "$srport" "$(master_port)"
sleep 3
traffic_stop
check_common "4 sentinel" fd-sentinel "$T451"
check_outage "4 sentinel" fd-sentinel "$down" "$gone" "$back" "$T451"
# What the old master accepted in its last second may not have reached the replica.
window=$(tr_count fd-sentinel "$OK250"' && $2 >= d - 1000000 && $2 <= d' -v d="$down")
echo "# 4 sentinel: $window messages got 250 in the last second before the kill"
check_total "4 sentinel" fd-sentinel "$srport" "$window"
check "milter stops cleanly after the failover" milter_stop "$MILTER_PID" milter3
reaped "$MILTER_PID"

# === Postfix's side ======================================================

postfix_wait_queue 30
all_ok=0
for a in fa-stop fa-caps fa-kill fa-restart fa-ckill fe-ckill fe-shut fe-shut-acc fb-mkill fb-inflight fc-reload fd-sentinel; do
	all_ok=$((all_ok + $(tr_count "$a" "$OK250")))
done
check_eq "smtp-sink got exactly the messages that got 250" "$all_ok 2" \
	"$(sink_count '^Subject: fault traffic ') $(sink_count '^Subject: fc-std-')"
n=$(cat "$T"/milter*.log | grep -cE 'ERROR: (Address|Leak)Sanitizer|runtime error:')
check_eq "no sanitizer report from any milter" 0 "$n"
n=$(grep -ciE 'milter.*(timed? ?out|timeout)' "$PF_LOG")
check_eq "Postfix never waited out a milter timeout" 0 "$n"
[ "$n" = 0 ] || grep -iE 'milter.*(timed? ?out|timeout)' "$PF_LOG" | head -5 | sed 's/^/# /'

finish
