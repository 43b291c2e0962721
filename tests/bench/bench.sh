#!/bin/bash
# bench.sh BUILD - `make bench`: quota-milter's cost in a real Postfix, and
# on its own. Loopback only; everything it starts lives in a temporary
# folder and is stopped on exit, even on failure.
#
# One throwaway Postfix (tests/postfix.sh) discards all mail
# (default_transport = discard) and listens on one port per configuration,
# each port with its own smtpd_milters; one redis-server listens on TCP and
# on a unix socket; one quota-milter per configuration runs at once, each
# with its own Redis database, so that its connections and counts can be
# told apart. smtp-source then drives the ports in turn, ALTERNATING the
# configurations within each round, so that the machine's background noise
# spreads over all of them alike; the table shows medians and ratios.
#
#   1  Postfix, no milter
#   2  quota-milter counting nothing (the shipped conf: its categories need
#      an X-Quota-Category header, which smtp-source does not send; the
#      comparison for 3h)
#   2e quota-milter counting nothing with the counting conf of 3 (a category
#      no sender matches: let through at the first RCPT; the comparison for 3)
#   3  quota-milter counting every message (account from the sender's
#      domain, a category matching every sender), milter socket unix or
#      inet, Redis over TCP or a unix socket; 3h: the shipped conf with
#      X-Quota-Account/-Category headers (decided at end of message, the
#      headers stripped)
#   4  rspamd's milter proxy, postfwd: optional, skipped when not installed
#
# Then, with one SMTP session (a Nagle/delayed-ACK stall shows only there),
# the milter alone (tests/bench/milterload, no MTA), its peak RSS with 500
# sessions held open mid-transaction, Redis commands and connections per
# configuration, and instructions per message from callgrind.
#
# Environment:
#   BENCH_ROUNDS   rounds (default 5)        BENCH_MSGS   messages per run (3000)
#   BENCH_MSGS1    the same with -s 1 (300)  BENCH_WARMUP warm-up messages (300)
#   BENCH_LOAD_SECS  seconds per milterload run (5)
#   BENCH_CG_MSGS  messages under callgrind (2000); BENCH_CG=0 skips callgrind
#   BENCH_HOLD_CONNS sessions held open for the memory peak (500)
#   BENCH_QUICK=1  1 round of 100 messages, 50 sessions held, no callgrind
#                  (BENCH_CG=1 runs it tiny): what the smoke test
#                  (tests/t_bench_smoke.sh) uses
#   BENCH_OUT      the table (default bench/RESULTS.md)
#   BENCH_DATA     if set, also key=value results there (for the smoke test)
#   KEEP_TEST_DIR=1  keep the temporary folder (logs, confs, callgrind files)
# Exit status: 0 when every run worked and every count matched.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}
month=$(date -u +%Y-%m)

if [ -n "${BENCH_QUICK:-}" ]; then
	ROUNDS=${BENCH_ROUNDS:-1} MSGS=${BENCH_MSGS:-100} MSGS1=${BENCH_MSGS1:-10}
	WARMUP=${BENCH_WARMUP:-10} LOAD_SECS=${BENCH_LOAD_SECS:-0.5} CG=${BENCH_CG:-0}
	CG_MSGS=${BENCH_CG_MSGS:-20} HOLD_CONNS=${BENCH_HOLD_CONNS:-50} MON_MSGS=20
else
	ROUNDS=${BENCH_ROUNDS:-5} MSGS=${BENCH_MSGS:-3000} MSGS1=${BENCH_MSGS1:-300}
	WARMUP=${BENCH_WARMUP:-300} LOAD_SECS=${BENCH_LOAD_SECS:-5} CG=${BENCH_CG:-1}
	CG_MSGS=${BENCH_CG_MSGS:-2000} HOLD_CONNS=${BENCH_HOLD_CONNS:-500} MON_MSGS=200
fi
OUT=${BENCH_OUT:-bench/RESULTS.md}
DATA=${BENCH_DATA:-}
LOAD=$build/tests/bench/milterload
POOL_SIZE=8			# the conf's redis pool_size (the default)
ERRORS=()			# what went wrong, for the table and the exit status

# say TEXT - progress on stderr
say() { echo "bench: [${SECONDS}s] $*" >&2; }
# fail TEXT - remember an error
fail() { say "ERROR: $*"; ERRORS+=("$*"); }

for tool in smtp-source redis-server redis-cli postfix valgrind callgrind_annotate; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is not installed (make deps)" >&2; exit 1; }
done
if [ ! -x "$build/quota-milter" ] || [ ! -x "$LOAD" ]; then
	echo "bench: build first: make all (missing $build/quota-milter or $LOAD)" >&2
	exit 1
fi
[ "$(id -u)" = 0 ] || { echo "bench: needs root (Postfix's own users)" >&2; exit 1; }

# --- Redis: TCP and a unix socket, one database per milter -------------------
RPORT=$(free_port)
RSOCK=$T/redis.sock
mkdir -p "$T/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --unixsocket "$RSOCK" --unixsocketperm 777 \
	--save "" --appendonly no --databases 16 --dir "$T/redis" --logfile "$T/redis/redis.log" &
PIDS="$PIDS $!"
wait_for redis-server 10 redis-cli -p "$RPORT" ping || { echo "bench: redis-server did not start" >&2; exit 1; }
r() { redis-cli -p "$RPORT" --raw "$@"; }

# --- the configurations -------------------------------------------------------
# name: label, milter socket (libmilter and Postfix syntax), Redis address,
# Redis database, kind (nothing, count, hdr), message (plain or hdr)
CFGS=(none nothing_unix nothing_inet nothing_env_unix nothing_env_inet count_unix count_inet
	count_unix_ru count_inet_ru hdr_unix hdr_inet)
declare -A LABEL=(
	[none]="1. Postfix, no milter"
	[nothing_unix]="2. milter counting nothing, unix socket"
	[nothing_inet]="2. milter counting nothing, inet socket"
	[nothing_env_unix]="2e. counting nothing, the counting conf (no sender matches), unix socket"
	[nothing_env_inet]="2e. counting nothing, the counting conf (no sender matches), inet socket"
	[count_unix]="3. counting every message, unix socket, Redis TCP"
	[count_inet]="3. counting every message, inet socket, Redis TCP"
	[count_unix_ru]="3. counting every message, unix socket, Redis unix socket"
	[count_inet_ru]="3. counting every message, inet socket, Redis unix socket"
	[hdr_unix]="3h. counting, header account (shipped conf), unix socket, Redis TCP"
	[hdr_inet]="3h. counting, header account (shipped conf), inet socket, Redis TCP"
)
declare -A KIND=([nothing_unix]=nothing [nothing_inet]=nothing [nothing_env_unix]=nothing
	[nothing_env_inet]=nothing [count_unix]=count [count_inet]=count [count_unix_ru]=count
	[count_inet_ru]=count [hdr_unix]=hdr [hdr_inet]=hdr)
# the conf: shipped (header account and categories), count (sender-domain account, a
# category every sender matches), envnone (the same, a category no sender matches)
declare -A CONF=([nothing_unix]=shipped [nothing_inet]=shipped [nothing_env_unix]=envnone
	[nothing_env_inet]=envnone [count_unix]=count [count_inet]=count [count_unix_ru]=count
	[count_inet_ru]=count [hdr_unix]=shipped [hdr_inet]=shipped)
declare -A RADDR=([nothing_unix]=tcp [nothing_inet]=tcp [nothing_env_unix]=tcp
	[nothing_env_inet]=tcp [count_unix]=tcp [count_inet]=tcp
	[count_unix_ru]=unix [count_inet_ru]=unix [hdr_unix]=tcp [hdr_inet]=tcp)
declare -A DB=([nothing_unix]=1 [nothing_inet]=2 [count_unix]=3 [count_inet]=4
	[count_unix_ru]=5 [count_inet_ru]=6 [hdr_unix]=7 [hdr_inet]=8 [nothing_env_unix]=11
	[nothing_env_inet]=12)
declare -A MSPEC PFSPEC SMTP_PORT MPID EXPECTED
# the comparisons the issue sets: counting vs counting nothing on the same socket, with
# the same conf (a conf that reads headers cannot let mail pass before its end)
declare -A SAME_SOCKET=([count_unix]=nothing_env_unix [count_inet]=nothing_env_inet
	[count_unix_ru]=nothing_env_unix [count_inet_ru]=nothing_env_inet [hdr_unix]=nothing_unix
	[hdr_inet]=nothing_inet)

# write_conf FILE SOCKET CONF REDIS_ADDRESS DB - a conf from the shipped one
# (CONF: shipped, count or envnone, see CONF above)
write_conf() {
	local file=$1 sock=$2 kind=$3 raddr=$4 db=$5
	sed -e "s|^socket .*|socket = \"$sock\"|" -e 's|^user .*|user = "postfix"|' \
	    -e "s|^journal .*|journal = \"$T/journal\"|" \
	    -e "s|address *= *\"127.0.0.1:6379\"|address = \"$raddr\"|" \
	    -e "s|^\([[:space:]]*database[[:space:]]*=\).*|\1 $db|" \
	    conf/quota-milter.conf > "$file"
	if [ "$kind" = count ] || [ "$kind" = envnone ]; then
		sed -i -e 's|^\([[:space:]]*source[[:space:]]*=\).*|\1 "sender-domain"|' \
		    -e '/^category /d' "$file"
		if [ "$kind" = count ]; then
			echo 'category all { sender = "." }' >> "$file"
		else
			echo "category none { sender = '^nobody@never[.]invalid\$' }" >> "$file"
		fi
	fi
}

# sock_ready SPEC - the milter listens there
sock_ready() {
	case $1 in
	unix:*) [ -S "${1#unix:}" ] ;;
	inet:*) local p=${1#inet:}; (echo > "/dev/tcp/127.0.0.1/${p%@*}") 2>/dev/null ;;
	esac
}

# milter_up CFG - start the configuration's milter; sets MPID[CFG]
milter_up() {
	local cfg=$1 raddr
	[ "${RADDR[$cfg]}" = unix ] && raddr=$RSOCK || raddr=127.0.0.1:$RPORT
	write_conf "$T/$cfg.conf" "${MSPEC[$cfg]}" "${CONF[$cfg]}" "$raddr" "${DB[$cfg]}"
	"$build/quota-milter" -t -c "$T/$cfg.conf" >/dev/null ||
		{ echo "bench: bad generated conf $T/$cfg.conf" >&2; exit 1; }
	r -n "${DB[$cfg]}" HSET 'qm:account:{bench.example}' plan enterprise >/dev/null
	milter_start "$build" "$T/$cfg.conf" "$cfg"
	MPID[$cfg]=$MILTER_PID
	EXPECTED[$cfg]=0
	wait_for "$cfg milter" 20 sock_ready "${MSPEC[$cfg]}" ||
		{ sed 's/^/# /' "$T/$cfg.log" >&2; exit 1; }
}

extra_master=""
SMTP_PORT[none]=$(free_port)
for cfg in "${CFGS[@]}"; do
	[ "$cfg" = none ] && continue
	case $cfg in
	*_unix*) MSPEC[$cfg]="unix:$T/$cfg.sock"; PFSPEC[$cfg]="unix:$T/$cfg.sock" ;;
	*)	p=$(free_port); MSPEC[$cfg]="inet:$p@127.0.0.1"; PFSPEC[$cfg]="inet:127.0.0.1:$p" ;;
	esac
	milter_up "$cfg"
	SMTP_PORT[$cfg]=$(free_port)
	extra_master+="127.0.0.1:${SMTP_PORT[$cfg]} inet n - n - - smtpd -o smtpd_milters=${PFSPEC[$cfg]}"$'\n'
done

# --- Postfix: one listener per configuration ----------------------------------
PF_MASTER_EXTRA=$extra_master
if ! postfix_start "$T/postfix" "${SMTP_PORT[none]}" "default_transport = discard
milter_protocol = 6
milter_default_action = tempfail"; then
	echo "bench: postfix would not start" >&2
	exit 1
fi
for cfg in "${CFGS[@]}"; do
	wait_for "smtpd for $cfg" 10 bash -c "echo > /dev/tcp/127.0.0.1/${SMTP_PORT[$cfg]}" ||
		{ echo "bench: no smtpd on ${SMTP_PORT[$cfg]}" >&2; exit 1; }
done

# The message of the header configurations: the account and category headers.
{
	printf '%s\n' "From: <from@bench.example>" "To: <to@dest.example>" "Subject: bench" \
		"X-Quota-Account: bench.example" "X-Quota-Category: crm" ""
	for i in $(seq 1 14); do printf '%070d\n' "$i"; done
} > "$T/hdr.eml"

# --- measurements -------------------------------------------------------------
declare -A RATES RATES1 CMDS MAXCONN NMSG_CMD MCPU PCPU
PF_MASTER_PID=$(_pf_pid "$PF_DIR")

# ticks PID... - CPU time (user + system, clock ticks) of running processes
ticks() {
	local p f=()
	for p in "$@"; do [ -n "$p" ] && f+=("/proc/$p/stat"); done
	[ ${#f[@]} -gt 0 ] || { echo 0; return; }
	cat "${f[@]}" 2>/dev/null | awk '{ sub(/.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
# pf_ticks - CPU time of the Postfix instance: its master, the children it
# reaped and those alive
pf_ticks() {
	local kids
	kids=$(pgrep -P "$PF_MASTER_PID" | sed 's|.*|/proc/&/stat|')
	# shellcheck disable=SC2086  # one path a word
	{ sed 's/^/M /' "/proc/$PF_MASTER_PID/stat"; cat $kids; } 2>/dev/null |
		awk '{ m = ($1 == "M"); sub(/.*\) /, ""); t += $12 + $13; if (m) t += $14 + $15 }
			END { print t + 0 }'
}
HZ=$(getconf CLK_TCK)

# poll_clients DB FILE - until killed (at most 20 minutes): the number of
# Redis connections in database DB, one line every 0.25 s
poll_clients() {
	local db=$1 file=$2 i
	for i in $(seq 1 4800); do
		redis-cli -p "$RPORT" CLIENT LIST 2>/dev/null | grep -c " db=$db " >> "$file"
		sleep 0.25
	done
}

# run_smtp CFG SESSIONS MSGS [measure] - one smtp-source run; sets RESULT
# to its msgs/s (0 when it failed). With "measure" it also polls the Redis
# connections and adds up the Redis commands of the run.
run_smtp() {
	local cfg=$1 s=$2 n=$3 measure=${4:-} t0 t1 rc poller="" pfile args m0 p0
	if [ "$cfg" != none ] && [ -n "$measure" ]; then
		pfile=$T/poll.$cfg.$RANDOM
		: > "$pfile"
		poll_clients "${DB[$cfg]}" "$pfile" &
		poller=$!
		PIDS="$PIDS $poller"
		r CONFIG RESETSTAT >/dev/null
	fi
	if [ "${KIND[$cfg]:-}" = hdr ]; then args=(-F "$T/hdr.eml"); else args=(-l 1000); fi
	m0=$(ticks "${MPID[$cfg]:-}") p0=$(pf_ticks)
	t0=$EPOCHREALTIME
	timeout $((n / 5 + 120)) smtp-source -s "$s" -m "$n" "${args[@]}" -f from@bench.example \
		-t to@dest.example "127.0.0.1:${SMTP_PORT[$cfg]}" > "$T/smtp-source.out" 2>&1
	rc=$?
	t1=$EPOCHREALTIME
	if [ -n "$poller" ]; then
		kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null
		MAXCONN[$cfg]=$(sort -n "$pfile" | tail -1 | awk -v m="${MAXCONN[$cfg]:-0}" '{print ($1 > m) ? $1 : m}')
		if [ "${KIND[$cfg]}" != nothing ]; then
			while IFS=: read -r name calls; do
				CMDS[$cfg:$name]=$(( ${CMDS[$cfg:$name]:-0} + calls ))
			done < <(r INFO commandstats | tr -d '\r' |
				sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\).*/\1:\2/p' |
				grep -vE '^(info|config\|resetstat|client\|list):')
			NMSG_CMD[$cfg]=$(( ${NMSG_CMD[$cfg]:-0} + n ))
		fi
	fi
	[ "${KIND[$cfg]:-}" = nothing ] || [ "$cfg" = none ] || EXPECTED[$cfg]=$(( EXPECTED[$cfg] + n ))
	if [ "$rc" != 0 ]; then
		fail "$cfg: smtp-source -s $s -m $n exited $rc: $(tail -2 "$T/smtp-source.out" | tr '\n' ' ')"
		RESULT=0
		return 1
	fi
	postfix_wait_queue 120 >&2 || fail "$cfg: the queue did not drain"
	RESULT=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
	if [ -n "$measure" ]; then	# CPU ms per message, the delivery included
		MCPU[$cfg]+=" $(awk -v t=$(( $(ticks "${MPID[$cfg]:-}") - m0 )) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.3f", t * 1000 / hz / n }')"
		PCPU[$cfg]+=" $(awk -v t=$(( $(pf_ticks) - p0 )) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.3f", t * 1000 / hz / n }')"
	fi
}

# monitor_run CFG MSGS - send MSGS messages with Redis MONITOR on; count the
# commands the milter sent (its round trips) and those its scripts ran
declare -A RTRIP RSCRIPT
monitor_run() {
	local cfg=$1 n=$2 mon
	mon=$T/monitor.$cfg
	redis-cli -p "$RPORT" MONITOR > "$mon" 2>/dev/null &
	local mpid=$!
	PIDS="$PIDS $mpid"
	sleep 0.3
	run_smtp "$cfg" 10 "$n"
	sleep 0.3
	kill "$mpid" 2>/dev/null; wait "$mpid" 2>/dev/null
	# lines: TIME [DB ADDR] "COMMAND" ...; ADDR is "lua" inside a script
	RTRIP[$cfg]=$(awk -v db="${DB[$cfg]}" -v n="$n" '
		$2 == "[" db && $3 != "lua]" { c[tolower($4)]++; t++ }
		END { out = sprintf("%.2f", t / n); for (k in c) { gsub(/"/, "", k); x = x ", " k " " sprintf("%.2f", c["\"" k "\""] / n) }
			print out (x ? " (" substr(x, 3) ")" : "") }' "$mon")
	RSCRIPT[$cfg]=$(awk -v db="${DB[$cfg]}" -v n="$n" '
		$2 == "[" db && $3 == "lua]" { c[tolower($4)]++; t++ }
		END { out = sprintf("%.2f", t / n); for (k in c) { gsub(/"/, "", k); x = x ", " k " " sprintf("%.2f", c["\"" k "\""] / n) }
			print out (x ? " (" substr(x, 3) ")" : "") }' "$mon")
}

# median "VALUES" - the median of space-separated values (empty when none)
median() {
	local v
	read -ra v <<<"$*"
	printf '%s\n' "${v[@]}" | grep -E '^[0-9.]+$' | sort -g |
		awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2];
			else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ratio A B - A/B with two decimals, "-" when either is missing or 0
ratio() {
	awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (a + 0 == 0 || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

# rotate N LIST... - the list rotated by N, so that no configuration always runs first
rotate() {
	local n=$1; shift
	local a=("$@") k
	k=$(( n % ${#a[@]} ))
	echo "${a[@]:k}" "${a[@]:0:k}"
}

say "warm-up: $WARMUP messages through each configuration"
for cfg in "${CFGS[@]}"; do
	run_smtp "$cfg" 10 "$WARMUP"
done

say "$ROUNDS rounds of $MSGS messages, 10 sessions, configurations alternating"
for round in $(seq 1 "$ROUNDS"); do
	for cfg in $(rotate "$round" "${CFGS[@]}"); do
		run_smtp "$cfg" 10 "$MSGS" measure
		RATES[$cfg]="${RATES[$cfg]:-} $RESULT"
		say "round $round: $cfg $RESULT msgs/s"
	done
done

say "Redis MONITOR: $MON_MSGS messages through each counting configuration"
for cfg in count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet; do
	monitor_run "$cfg" "$MON_MSGS"
done

CFGS1=(none nothing_unix nothing_inet count_unix count_inet hdr_unix hdr_inet)
say "$ROUNDS rounds of $MSGS1 messages, one session"
for round in $(seq 1 "$ROUNDS"); do
	for cfg in $(rotate "$round" "${CFGS1[@]}"); do
		run_smtp "$cfg" 1 "$MSGS1"
		RATES1[$cfg]="${RATES1[$cfg]:-} $RESULT"
		say "round $round, 1 session: $cfg $RESULT msgs/s"
	done
done

# --- the milter alone ---------------------------------------------------------
declare -A LRATES NEGO
LCFGS=(nothing_unix nothing_env_unix count_unix count_inet count_unix_ru count_unix_k100 hdr_unix_c1
	hdr_inet_c1)
declare -A LLABEL=(
	[nothing_unix]="counting nothing (shipped conf: decided at end of message), unix socket"
	[nothing_env_unix]="counting nothing, the counting conf (let through at the first RCPT), unix socket"
	[count_unix]="counting, unix socket, Redis TCP"
	[count_inet]="counting, inet socket, Redis TCP"
	[count_unix_ru]="counting, unix socket, Redis unix socket"
	[count_unix_k100]="counting, unix socket, Redis TCP, 100 messages per connection"
	[hdr_unix_c1]="header account (shipped conf), unix socket, Redis TCP, 1 connection"
	[hdr_inet_c1]="header account (shipped conf), inet socket, Redis TCP, 1 connection"
)
# run_load NAME - one milterload run; sets RESULT to its msgs/s. NAME is a
# configuration, with _k100 for 100 messages per connection, _c1 for one
# connection; the header configurations get the account and category headers.
run_load() {
	local cfg=$1 k=1 c=10 hdrs=() out rc acc
	case $1 in
	*_k100) cfg=${1%_k100} k=100 ;;
	*_c1) cfg=${1%_c1} c=1 ;;
	esac
	[ "${KIND[$cfg]}" = hdr ] &&
		hdrs=(-h "X-Quota-Account: bench.example" -h "X-Quota-Category: crm")
	out=$("$LOAD" -v -c "$c" -k "$k" "${hdrs[@]}" -n 100000000 -t "$LOAD_SECS" "${MSPEC[$cfg]}" 2>&1)
	rc=$?
	NEGO[$cfg]=$(sed -n 's/.*asked for protocol flags \(0x[0-9a-f]*\).*/\1/p' <<<"$out")
	acc=$(sed -n 's/.* accepted=\([0-9]*\) .*/\1/p' <<<"$out")
	[ "${KIND[$cfg]}" = nothing ] || EXPECTED[$cfg]=$(( EXPECTED[$cfg] + ${acc:-0} ))
	if [ "$rc" != 0 ] || ! grep -q ' rejected=0 tempfail=0 discard=0 errors=0 ' <<<"$out"; then
		fail "milterload on $1: $out"
	fi
	RESULT=$(sed -n 's/.*msgs_per_sec=\([0-9.]*\).*/\1/p' <<<"$out")
}
say "the milter alone: milterload, ${LOAD_SECS}s per run"
for round in $(seq 1 "$ROUNDS"); do
	for cfg in $(rotate "$round" "${LCFGS[@]}"); do
		run_load "$cfg"
		LRATES[$cfg]="${LRATES[$cfg]:-} $RESULT"
		say "round $round, milterload: $cfg $RESULT msgs/s"
	done
done

# --- memory with many sessions held open --------------------------------------
say "peak RSS with $HOLD_CONNS sessions held mid-transaction"
RSS_SPEC="unix:$T/rss.sock"
write_conf "$T/rss.conf" "$RSS_SPEC" count "127.0.0.1:$RPORT" 9
r -n 9 HSET 'qm:account:{bench.example}' plan enterprise >/dev/null
milter_start "$build" "$T/rss.conf" rss
RSS_PID=$MILTER_PID
HELD="" HWM_HELD="" THREADS_HELD="" HWM="" HOLD_ACC="" HOLD_TEMPFAIL=""
# accepted LINE - the accepted= count of a milterload result line
accepted() { sed -n 's/.* accepted=\([0-9]*\) .*/\1/p' <<<"$1"; }
if wait_for "rss milter" 20 sock_ready "$RSS_SPEC"; then
	warm_out=$("$LOAD" -c 10 -n 200 "$RSS_SPEC" 2>&1)	# warm: the Redis pool, the script
	hold_out=$("$LOAD" -c "$HOLD_CONNS" -H 2 -p "$RSS_PID" "$RSS_SPEC" 2>&1) ||
		fail "milterload -c $HOLD_CONNS -H: $hold_out"
	HOLD_ACC=$(accepted "$hold_out")
	HOLD_TEMPFAIL=$(sed -n 's/.* tempfail=\([0-9]*\) .*/\1/p' <<<"$hold_out")
	HELD=$(sed -n 's/^held=\([0-9]*\).*/\1/p' <<<"$hold_out")
	HWM_HELD=$(sed -n 's/^held=.* vmhwm_kib=\([0-9]*\).*/\1/p' <<<"$hold_out")
	THREADS_HELD=$(sed -n 's/^held=.* threads=\([0-9]*\).*/\1/p' <<<"$hold_out")
	HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$RSS_PID/status" 2>/dev/null)
	[ "$HELD" = "$HOLD_CONNS" ] || fail "only ${HELD:-0} of $HOLD_CONNS sessions were held at once"
	# Released at once, the held messages all want a Redis connection at
	# the same moment: some may wait longer than timeout_ms and be
	# tempfailed (and so not counted). That is reported, not an error.
	rss_expected=$(( $(accepted "$warm_out") + ${HOLD_ACC:-0} ))
	[ "$(r -n 9 HGET "qm:usage:{bench.example}:$month" total)" = "$rss_expected" ] ||
		fail "the RSS milter counted $(r -n 9 HGET "qm:usage:{bench.example}:$month" total), $rss_expected accepted"
else
	fail "the RSS milter did not start"
fi
milter_stop "$RSS_PID" rss || fail "the RSS milter did not stop cleanly"

# --- instructions per message under callgrind ---------------------------------
declare -A IR
# cg_run NAME KIND MESSAGES - total Ir of a daemon's whole life under
# callgrind, with MESSAGES milterload messages (2 connections)
cg_run() {
	local name=$1 kind=$2 n=$3 spec="unix:$T/cg-$1.sock" pid i
	write_conf "$T/cg-$name.conf" "$spec" "$kind" "$RSOCK" 10
	sed -i 's|^user .*|user = ""|' "$T/cg-$name.conf"
	valgrind --tool=callgrind --callgrind-out-file="$T/cg-$name.out" \
		"$build/quota-milter" -f -c "$T/cg-$name.conf" > "$T/cg-$name.log" 2>&1 &
	pid=$!
	PIDS="$PIDS $pid"
	if ! wait_for "milter under callgrind" 60 sock_ready "$spec"; then
		fail "callgrind $name: the milter did not start"; kill "$pid"; return 1
	fi
	if [ "$n" -gt 0 ]; then
		"$LOAD" -c 2 -n "$n" -t 300 "$spec" > "$T/cg-$name.load" 2>&1 ||
			fail "callgrind $name: milterload: $(cat "$T/cg-$name.load")"
	fi
	kill -TERM "$pid"
	for i in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	wait "$pid" 2>/dev/null
	IR[$name]=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$T/cg-$name.out" 2>/dev/null)
	[ -n "${IR[$name]}" ] || fail "callgrind $name: no totals in $T/cg-$name.out"
}
if [ "$CG" = 1 ]; then
	say "callgrind: the daemon's instructions with 0 and $CG_MSGS messages"
	r -n 10 HSET 'qm:account:{bench.example}' plan enterprise >/dev/null
	cg_run zero count 0
	cg_run count count "$CG_MSGS"
	cg_run nothing envnone "$CG_MSGS"
else
	say "callgrind: skipped (BENCH_CG=0)"
fi
# shellcheck disable=SC2016  # the backticks are Markdown
CG_TOP=$(callgrind_annotate --inclusive=no "$T/cg-count.out" 2>/dev/null |
	grep -E '^ *[0-9,]+ \([ 0-9.]+%\) ' | grep -v 'PROGRAM TOTALS' | head -12 |
	sed -E 's/^ *([0-9,]+) \( *([0-9.]+)%\) +(.*)$/| \1 | \2% | `\3` |/')
# per_msg NAME - (Ir(NAME) - Ir(zero)) / messages
per_msg() {
	awk -v a="${IR[$1]:-}" -v z="${IR[zero]:-}" -v n="$CG_MSGS" \
		'BEGIN { if (a == "" || z == "" || n == 0) print "-"; else printf "%.0f", (a - z) / n }'
}

# --- counts: every accepted counted message is in Redis, once -----------------
declare -A COUNTED
for cfg in "${CFGS[@]}"; do
	[ "$cfg" = none ] && continue
	got=$(r -n "${DB[$cfg]}" HGET "qm:usage:{bench.example}:$month" total)
	got=${got:-0}
	COUNTED[$cfg]="$got/${EXPECTED[$cfg]}"
	[ "$got" = "${EXPECTED[$cfg]}" ] ||
		fail "$cfg: Redis counted $got, $((EXPECTED[$cfg])) accepted; the milter tempfailed $(grep -c 'decision=tempfail' "$T/$cfg.log") (e.g. $(grep -m1 'decision=tempfail' "$T/$cfg.log" | cut -d' ' -f2-))"
done
say "stopping the milters"
for cfg in "${CFGS[@]}"; do [ "$cfg" = none ] || kill -TERM "${MPID[$cfg]}" 2>/dev/null; done
for cfg in "${CFGS[@]}"; do
	[ "$cfg" = none ] || milter_stop "${MPID[$cfg]}" "$cfg" || fail "$cfg: the milter did not stop cleanly"
done
grep -h 'warning\|fatal\|panic' "$T"/*.log 2>/dev/null | grep -v '^#' | head -5 |
	while IFS= read -r l; do say "milter log: $l"; done

# --- the table ------------------------------------------------------------------
med() { median "${RATES[$1]:-}"; }
med1() { median "${RATES1[$1]:-}"; }
medl() { median "${LRATES[$1]:-}"; }
medm() { median "${MCPU[$1]:-}"; }
medp() { median "${PCPU[$1]:-}"; }
base=$(med none)
base1=$(med1 none)
# yn CONDITION - "yes" or "**no**" (an awk condition)
yn() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo "**no**"; fi; }
# num VALUE - the value, or 0 when it is not a number (for yn)
num() { [[ ${1:-} =~ ^-?[0-9.]+$ ]] && echo "$1" || echo 0; }
# cost CFG - the counting configuration's cost against counting nothing, in %
cost() { awk -v a="$(med "$1")" -v b="$(med "${SAME_SOCKET[$1]}")" \
	'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.1f\n", (1 - a / b) * 100 }'; }
# cpu_cost CFG - the same by CPU time per message (milter and Postfix), in %
cpu_cost() {
	awk -v a="$(medm "$1")" -v b="$(medp "$1")" -v c="$(medm "${SAME_SOCKET[$1]}")" \
		-v d="$(medp "${SAME_SOCKET[$1]}")" \
		'BEGIN { if (a == "" || b == "" || c == "" || d == "" || c + d == 0) print "-";
			else printf "%.1f\n", ((a + b) / (c + d) - 1) * 100 }'
}
# cmds_per_msg CFG - Redis commands per message, scripts' included
cmds_per_msg() {
	local cfg=$1 total=0 k
	for k in "${!CMDS[@]}"; do [[ $k == "$cfg":* ]] && total=$((total + CMDS[$k])); done
	awk -v t="$total" -v n="${NMSG_CMD[$cfg]:-0}" 'BEGIN { if (n == 0) print "-"; else printf "%.2f\n", t / n }'
}
# cmds_detail CFG - the same by command name
cmds_detail() {
	local cfg=$1 k out=""
	for k in $(printf '%s\n' "${!CMDS[@]}" | grep "^$cfg:" | sort); do
		out+="${out:+, }${k#*:} $(awk -v t="${CMDS[$k]}" -v n="${NMSG_CMD[$cfg]:-0}" \
			'BEGIN { if (n == 0) print "-"; else printf "%.2f", t / n }')"
	done
	echo "${out:--}"
}
# smfip_names HEX - the SMFIP_* names of a protocol mask, "-" when empty
smfip_names() {
	local n=(NOCONNECT NOHELO NOMAIL NORCPT NOBODY NOHDRS NOEOH NR_HDR NOUNKNOWN NODATA
		SKIP RCPT_REJ NR_CONN NR_HELO NR_MAIL NR_RCPT NR_DATA NR_UNKN NR_EOH NR_BODY
		HDR_LEADSPC) i v out=()
	[ -n "${1:-}" ] || { echo "-"; return; }
	v=$(( $1 ))
	for i in "${!n[@]}"; do (( v & (1 << i) )) && out+=("${n[$i]}"); done
	echo "${out[*]:--}"
}
# ms N - "N ms", blank when empty
ms() { [ -n "${1:-}" ] && echo "$1" || echo "-"; }

pf_version=$(postconf -d -h mail_version 2>/dev/null)
redis_version=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
r_unix=$(ratio "$(med count_unix)" "$base")
r_inet=$(ratio "$(med count_inet)" "$base")
worst_cost=$(for c in count_unix count_inet count_unix_ru count_inet_ru; do cost "$c"; done | sort -g | tail -1)
worst_cpu_cost=$(for c in count_unix count_inet count_unix_ru count_inet_ru; do cpu_cost "$c"; done | sort -g | tail -1)
rt_count=$(for c in count_unix count_inet count_unix_ru count_inet_ru; do echo "${RTRIP[$c]%% *}"; done | sort -g | tail -1)
rt_hdr=$(for c in hdr_unix hdr_inet; do echo "${RTRIP[$c]%% *}"; done | sort -g | tail -1)
maxconn=$(for c in count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet; do echo "${MAXCONN[$c]:-0}"; done | sort -n | tail -1)
alone=$(medl count_unix)
hwm_mib=$(awk -v k="${HWM:-0}" -v h="${HWM_HELD:-0}" 'BEGIN { m = k > h ? k : h; printf "%.1f", m / 1024 }')
stall=$(awk -v a="$(num "$(med1 hdr_inet)")" -v b="$(num "$(med1 hdr_unix)")" \
	'BEGIN { if (a > 0 && b > 0 && 1000 / a - 1000 / b > 25) print "yes"; else print "no" }')

{
echo "# quota-milter benchmark"
echo
echo "Made by \`make bench\` (tests/bench/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC')${BENCH_QUICK:+ in QUICK mode (the smoke test: the numbers mean nothing)}."
echo "Machine: $(nproc) × $cpu_model, Linux $(uname -r), Postfix $pf_version, Redis $redis_version."
echo "quota-milter speaks the milter protocol itself (milter/engine.c), not through libmilter."
echo "The machine is shared with other work: compare ratios within this run, not numbers across runs."
echo
echo "Method: one throwaway Postfix on loopback discarding all mail, one smtpd port per"
echo "configuration; one milter per configuration, all running at once, each with its own Redis"
echo "database; smtp-source sends $MSGS messages of 1000 bytes per run, one message per SMTP session"
echo "(smtp-source without -d), from from@bench.example, after a $WARMUP-message warm-up; $ROUNDS rounds,"
echo "the configurations alternating within each round; medians. CPU columns: CPU time of the milter"
echo "process and of all Postfix processes (delivery included) per message, from /proc."
echo
echo "## Targets"
echo
echo "| target | measured | met |"
echo "|---|---|---|"
echo "| counting over a unix socket ≥ 0.95 of no milter (10 sessions) | $r_unix | $(yn "$(num "$r_unix") >= 0.95") |"
echo "| counting over inet ≥ 0.90 of no milter (10 sessions) | $r_inet | $(yn "$(num "$r_inet") >= 0.90") |"
echo "| counting costs ≤ 3% against counting nothing, same socket | worst ${worst_cost}% in msgs/s, ${worst_cpu_cost}% in CPU per message | $(yn "\"$worst_cost\" != \"-\" && $(num "$worst_cost") <= 3 && $(num "$worst_cpu_cost") <= 3") |"
echo "| ≤ 1 Redis round trip before DATA and 1 at end of data | $rt_count per message (account known at MAIL), $rt_hdr (header account) | $(yn "$(num "$rt_count") > 0 && $(num "$rt_count") <= 2.02 && $(num "$rt_hdr") <= 1.01") |"
echo "| Redis connections ≤ pool size | at most $maxconn, pool_size $POOL_SIZE | $(yn "$maxconn <= $POOL_SIZE") |"
echo "| the milter alone ≥ 10 000 messages/s | ${alone:--} (counting, unix socket) | $(yn "$(num "$alone") >= 10000") |"
echo "| peak RSS ≤ 32 MiB with $HOLD_CONNS sessions | $hwm_mib MiB | $(yn "$hwm_mib <= 32 && $(num "$HELD") == $HOLD_CONNS") |"
echo "| no Nagle / delayed-ACK stall with one session | header account over inet: $(ms "$(awk -v m="$(num "$(med1 hdr_inet)")" 'BEGIN { if (m > 0) printf "%.1f ms", 1000 / m }')") a message, over unix $(ms "$(awk -v m="$(num "$(med1 hdr_unix)")" 'BEGIN { if (m > 0) printf "%.1f ms", 1000 / m }')") | $([ "$stall" = no ] && echo yes || echo "**no**") |"
echo
echo "## Through Postfix, 10 parallel sessions (smtp-source -s 10)"
echo
echo "| configuration | msgs/s (median) | runs | vs no milter | cost vs counting nothing, same socket: msgs/s, CPU | milter CPU ms/msg | Postfix CPU ms/msg |"
echo "|---|---:|---|---:|---:|---:|---:|"
for cfg in "${CFGS[@]}"; do
	c=""; [ -n "${SAME_SOCKET[$cfg]:-}" ] && c="$(cost "$cfg")%, $(cpu_cost "$cfg")%"
	m=""; [ "$cfg" != none ] && m=$(medm "$cfg")
	echo "| ${LABEL[$cfg]} | $(med "$cfg") | ${RATES[$cfg]# } | $(ratio "$(med "$cfg")" "$base") | $c | $m | $(medp "$cfg") |"
done
for opt in "rspamd milter proxy:rspamd" "postfwd policy server:postfwd"; do
	name=${opt%%:*} bin=${opt#*:}
	if command -v "$bin" >/dev/null || command -v "${bin}3" >/dev/null; then
		echo "| 4. (optional) $name | installed, but bench.sh has no configuration for it yet | | | | | |"
	else
		echo "| 4. (optional) $name | skipped: not installed | | | | | |"
	fi
done
echo
echo "3h sends a message with X-Quota-Account and X-Quota-Category headers (smtp-source -F, about"
echo "the same size); its account is known only at end of message, where both headers are removed"
echo "(two SMFIR_CHGHEADER replies before the final one)."
echo
echo "## One session (smtp-source -s 1, $MSGS1 messages)"
echo
echo "A Nagle / delayed-ACK stall between MTA and milter shows only here (about 40 ms a message)."
echo
echo "| configuration | msgs/s (median) | ms per message | runs | vs no milter |"
echo "|---|---:|---:|---|---:|"
for cfg in "${CFGS1[@]}"; do
	m=$(med1 "$cfg")
	echo "| ${LABEL[$cfg]} | $m | $(awk -v m="$(num "$m")" 'BEGIN { if (m > 0) printf "%.2f", 1000 / m; else print "-" }') | ${RATES1[$cfg]# } | $(ratio "$m" "$base1") |"
done
echo
echo "## Redis"
echo
echo "Round trips: the commands the milter sent, seen by MONITOR during $MON_MSGS messages per"
echo "configuration (apart from the timed runs); inside the script: the commands its Lua script ran."
echo "All commands: INFO commandstats over the timed 10-session runs (CONFIG RESETSTAT before each),"
echo "scripts' commands included. Connections: the most seen at once in the milter's database"
echo "(CLIENT LIST every 0.25 s during the timed runs). Counted: the usage hash's total against the"
echo "messages accepted, all runs included."
echo
echo "| configuration | round trips per message | inside the script, per message | all commands per message | most connections (pool_size $POOL_SIZE) | counted |"
echo "|---|---|---|---|---:|---:|"
for cfg in "${CFGS[@]}"; do
	[ "$cfg" = none ] && continue
	if [ "${KIND[$cfg]}" = nothing ]; then
		echo "| ${LABEL[$cfg]} | 0 (Redis never asked) | - | - | ${MAXCONN[$cfg]:-0} | ${COUNTED[$cfg]} |"
	else
		echo "| ${LABEL[$cfg]} | ${RTRIP[$cfg]:--} | ${RSCRIPT[$cfg]:--} | $(cmds_per_msg "$cfg") | ${MAXCONN[$cfg]:-0} | ${COUNTED[$cfg]} |"
	fi
done
echo
echo "## The milter alone (tests/bench/milterload, no MTA)"
echo
echo "10 connections unless said otherwise, a new milter session per message as Postfix opens one"
echo "per SMTP session: negotiation (v6, offering what Postfix 3.7 offers), CONNECT, HELO, MAIL,"
echo "RCPT, DATA, 6 headers (8 with the account and category headers), end of headers, a"
echo "1000-byte body, end of message, QUIT, each unless the milter negotiated it away (see below),"
echo "with Postfix's macros (only those the milter asks for, as Postfix does); ${LOAD_SECS} s per run,"
echo "$ROUNDS runs alternating. With one connection the last two lines show the milter's own latency per"
echo "message: a Nagle stall there is the milter's (milterload sets no socket option; -N, TCP_NODELAY"
echo "on its side, changes nothing)."
echo
echo "| configuration | msgs/s (median) | runs |"
echo "|---|---:|---|"
for cfg in "${LCFGS[@]}"; do
	echo "| ${LLABEL[$cfg]} | $(medl "$cfg") | ${LRATES[$cfg]# } |"
done
echo
echo "## What each milter negotiated"
echo
echo "The SMFIP_* protocol steps each milter asked for (milterload -v; it offers what Postfix 3.7"
echo "offers, so Postfix gets the same): NO* events are not sent, NR_* events get no reply."
echo
echo "| configuration | protocol steps asked for |"
echo "|---|---|"
for cfg in nothing_unix count_unix count_inet count_unix_ru hdr_unix hdr_inet; do
	[ -n "${NEGO[$cfg]:-}" ] && echo "| ${LABEL[$cfg]#[0-9]*. } | ${NEGO[$cfg]} $(smfip_names "${NEGO[$cfg]}") |"
done
echo
echo "## Memory"
echo
echo "A fresh milter (counting, unix socket, Redis TCP), warmed with 200 messages, then"
echo "$HOLD_CONNS milterload sessions opened at once and held after RCPT until all are open."
echo
echo "| sessions held | VmHWM while held | VmHWM after | threads while held | released at once: accepted, tempfailed |"
echo "|---:|---:|---:|---:|---:|"
echo "| ${HELD:-0} | $(awk -v k="$(num "$HWM_HELD")" 'BEGIN { printf "%.1f MiB", k / 1024 }') | $(awk -v k="$(num "$HWM")" 'BEGIN { printf "%.1f MiB", k / 1024 }') | ${THREADS_HELD:--} | ${HOLD_ACC:--}, ${HOLD_TEMPFAIL:--} |"
echo
echo "Tempfailed ones waited longer than timeout_ms (250 ms) for one of the pool's $POOL_SIZE Redis"
echo "connections, all released at the same moment."
echo
echo "## Instructions per message (valgrind --tool=callgrind)"
echo
echo "The daemon's whole life under callgrind with $CG_MSGS milterload messages (2 connections,"
echo "Redis over a unix socket), minus the same with none; libraries included, the kernel not."
echo
echo "| path | instructions per message |"
echo "|---|---:|"
echo "| counting (sender-domain account, decided at RCPT, charged at end of message) | $(per_msg count) |"
echo "| counting nothing (the counting conf, no sender matches: let through at the first RCPT) | $(per_msg nothing) |"
echo "| start and stop, no message | ${IR[zero]:-skipped} in all |"
echo
echo "Where the counting run spends its instructions (self cost, top 12):"
echo
echo "| Ir | share | function |"
echo "|---:|---:|---|"
echo "${CG_TOP:-| - | - | - |}"
echo
if [ ${#ERRORS[@]} -eq 0 ]; then
	echo "Errors: none."
else
	echo "Errors:"
	echo
	for e in "${ERRORS[@]}"; do echo "- $e"; done
fi
} > "$T/results.md"

mkdir -p "$(dirname "$OUT")"
cp "$T/results.md" "$OUT"
cat "$OUT"

if [ -n "$DATA" ]; then
	{
		for cfg in "${CFGS[@]}"; do echo "rate.$cfg=$(med "$cfg")"; done
		for cfg in "${CFGS1[@]}"; do echo "rate1.$cfg=$(med1 "$cfg")"; done
		for cfg in "${LCFGS[@]}"; do echo "load.$cfg=$(medl "$cfg")"; done
		for cfg in "${!COUNTED[@]}"; do echo "counted.$cfg=${COUNTED[$cfg]}"; done
		for cfg in count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet; do
			echo "cmds.$cfg=$(cmds_per_msg "$cfg")"
			echo "maxconn.$cfg=${MAXCONN[$cfg]:-0}"
			echo "rtrip.$cfg=${RTRIP[$cfg]%% *}"
		done
		for cfg in "${CFGS[@]}"; do echo "mcpu.$cfg=$(medm "$cfg")"; echo "pcpu.$cfg=$(medp "$cfg")"; done
		echo "held=${HELD:-0}"
		echo "hwm_kib=${HWM:-}"
		echo "ir.count=$(per_msg count)"
		echo "ir.nothing=$(per_msg nothing)"
		echo "errors=${#ERRORS[@]}"
	} > "$DATA"
fi
[ ${#ERRORS[@]} -eq 0 ]
