#!/bin/bash
# bench.sh BUILD - `make bench`: quota-milter's cost in a real Postfix, and
# on its own, side by side with the ceiling of any libmilter milter and with
# two peers. Loopback only; everything it starts lives in a temporary
# folder and is stopped on exit, even on failure.
#
# One throwaway Postfix (tests/postfix.sh) discards all mail
# (default_transport = discard) and listens on one port per configuration,
# each port with its own smtpd_milters (or policy service); one
# redis-server listens on TCP and on a unix socket; one milter per
# configuration runs at once, each quota-milter with its own Redis
# database, so that its connections and counts can be told apart.
# smtp-source then drives the ports in turn, ALTERNATING the configurations
# within each round, so that the machine's background noise spreads over
# all of them alike; the table shows medians and ratios.
#
#   1  Postfix, no milter
#   2  the null libmilter milter (tests/bench/nullmilter): answers continue
#      to everything, negotiating the same steps as 3e (asked of 3e's milter
#      with milterload -v before it starts): the ceiling for any libmilter
#      milter on this Postfix
#   3  quota-milter counting nothing (the shipped conf: its categories need
#      an X-Quota-Category header, which smtp-source does not send; the
#      comparison for 4h)
#   3e quota-milter counting nothing with the counting conf of 4 (a category
#      no sender matches: let through at the first RCPT; the comparison for 4)
#   4  quota-milter counting every message (account from the sender's
#      domain, a category matching every sender), milter socket unix or
#      inet, Redis over TCP or a unix socket; 4h: the shipped conf with
#      X-Quota-Account/-Category headers (decided at end of message, the
#      headers stripped)
#   4m 4 on a plan with a monthly quota only (1e9), unix socket, Redis TCP;
#   4c the same with hourly and daily caps (1e9 each): what the caps cost
#   5  the peers, Debian's packages (`make bench` installs them with
#      tests/bench/peers.sh): rspamd's milter proxy scanning by itself with
#      only its ratelimit module (Redis TCP), and postfwd as a policy
#      server with one rate rule; not run with BENCH_QUICK or BENCH_PEERS=0
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
#   BENCH_SCAN_ACCOUNTS accounts with usage for the metrics timing (100000)
#   BENCH_QUICK=1  1 round of 100 messages, 50 sessions held, no callgrind
#                  (BENCH_CG=1 runs it tiny), no peers: what the smoke test
#                  (tests/t_bench_smoke.sh) uses
#   BENCH_PEERS    1 runs the peers (the default but with BENCH_QUICK), 0 not
#   BENCH_ONLY=caps  only 1, 4m and 4c through Postfix and their Redis
#                  figures: what the caps cost, in minutes (the rest of the
#                  table stays empty)
#   BENCH_OUT      the table (default bench/RESULTS.md)
#   BENCH_DATA     if set, also key=value results there (for the smoke test)
#   KEEP_TEST_DIR=1  keep the temporary folder (logs, confs, callgrind files)
# Exit status: 0 when every run worked, every count matched and every peer
# ran (when asked for).
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
	SCAN_ACCOUNTS=${BENCH_SCAN_ACCOUNTS:-2000}
	PEERS=${BENCH_PEERS:-0}
else
	ROUNDS=${BENCH_ROUNDS:-5} MSGS=${BENCH_MSGS:-3000} MSGS1=${BENCH_MSGS1:-300}
	WARMUP=${BENCH_WARMUP:-300} LOAD_SECS=${BENCH_LOAD_SECS:-5} CG=${BENCH_CG:-1}
	CG_MSGS=${BENCH_CG_MSGS:-2000} HOLD_CONNS=${BENCH_HOLD_CONNS:-500} MON_MSGS=200
	SCAN_ACCOUNTS=${BENCH_SCAN_ACCOUNTS:-100000}
	PEERS=${BENCH_PEERS:-1}
fi
OUT=${BENCH_OUT:-bench/RESULTS.md}
DATA=${BENCH_DATA:-}
LOAD=$build/tests/bench/milterload
NULLM=$build/tests/bench/nullmilter
POOL_SIZE=8			# the conf's redis pool_size (the default)
ERRORS=()			# what went wrong, for the table and the exit status

# say TEXT - progress on stderr
say() { echo "bench: [${SECONDS}s] $*" >&2; }
# fail TEXT - remember an error
fail() { say "ERROR: $*"; ERRORS+=("$*"); }

for tool in smtp-source redis-server redis-cli postfix valgrind callgrind_annotate; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is not installed (make deps)" >&2; exit 1; }
done
if [ ! -x "$build/quota-milter" ] || [ ! -x "$LOAD" ] || [ ! -x "$NULLM" ]; then
	echo "bench: build first: make all (missing $build/quota-milter, $LOAD or $NULLM)" >&2
	exit 1
fi
[ "$(id -u)" = 0 ] || { echo "bench: needs root (Postfix's own users)" >&2; exit 1; }

# --- Redis: TCP and a unix socket, one database per milter -------------------
RPORT=$(free_port)
RSOCK=$T/redis.sock
mkdir -p "$T/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --unixsocket "$RSOCK" --unixsocketperm 777 \
	--save "" --appendonly no --databases 20 --dir "$T/redis" --logfile "$T/redis/redis.log" &
REDIS_PID=$!
PIDS="$PIDS $REDIS_PID"
wait_for redis-server 10 redis-cli -p "$RPORT" ping || { echo "bench: redis-server did not start" >&2; exit 1; }
r() { redis-cli -p "$RPORT" --raw "$@"; }

# --- the configurations -------------------------------------------------------
# name: label, kind (none, null, nothing, count, hdr, peer), milter socket
# (libmilter and Postfix syntax), quota-milter's conf, Redis address and
# database, message (plain or hdr)
QM_CFGS=(nothing_unix nothing_inet nothing_env_unix nothing_env_inet count_unix count_inet
	count_unix_ru count_inet_ru hdr_unix hdr_inet count_month_unix count_caps_unix \
	count_unix_s0 count_unix_s1)
PEER_CFGS=(peer_rspamd peer_postfwd)
CFGS=(none null_unix null_inet "${QM_CFGS[@]}")	# and the peers that start
ONLY=${BENCH_ONLY:-}
if [ "$ONLY" = caps ]; then
	QM_CFGS=(count_month_unix count_caps_unix)
	CFGS=(none "${QM_CFGS[@]}")
	PEERS=0 CG=0
fi
declare -A LABEL=(
	[none]="1. Postfix, no milter"
	[null_unix]="2. null libmilter milter (answers continue), unix socket"
	[null_inet]="2. null libmilter milter (answers continue), inet socket"
	[nothing_unix]="3. quota-milter counting nothing (shipped conf), unix socket"
	[nothing_inet]="3. quota-milter counting nothing (shipped conf), inet socket"
	[nothing_env_unix]="3e. counting nothing, the counting conf (no sender matches), unix socket"
	[nothing_env_inet]="3e. counting nothing, the counting conf (no sender matches), inet socket"
	[count_unix]="4. counting every message, unix socket, Redis TCP"
	[count_inet]="4. counting every message, inet socket, Redis TCP"
	[count_unix_ru]="4. counting every message, unix socket, Redis unix socket"
	[count_inet_ru]="4. counting every message, inet socket, Redis unix socket"
	[hdr_unix]="4h. counting, header account (shipped conf), unix socket, Redis TCP"
	[hdr_inet]="4h. counting, header account (shipped conf), inet socket, Redis TCP"
	[count_month_unix]="4m. counting every message, the monthly quota only, unix socket, Redis TCP"
	[count_caps_unix]="4c. counting every message with hourly and daily caps, unix socket, Redis TCP"
	[count_unix_s0]="4s. counting, unix socket, Redis TCP, health reports off (stats_interval 0)"
	[count_unix_s1]="4s. counting, unix socket, Redis TCP, health reports every second"
	[peer_rspamd]="5. peer: rspamd's milter proxy, ratelimit module only, inet socket, Redis TCP"
	[peer_postfwd]="5. peer: postfwd policy server, one rate rule"
)
declare -A KIND=([none]=none [null_unix]=null [null_inet]=null [nothing_unix]=nothing
	[nothing_inet]=nothing [nothing_env_unix]=nothing [nothing_env_inet]=nothing
	[count_unix]=count [count_inet]=count [count_unix_ru]=count [count_inet_ru]=count
	[hdr_unix]=hdr [hdr_inet]=hdr [peer_rspamd]=peer [peer_postfwd]=peer
	[count_month_unix]=count [count_caps_unix]=count [count_unix_s0]=count
	[count_unix_s1]=count)
# the conf: shipped (header account and categories), count (sender-domain account, a
# category every sender matches), envnone (the same, a category no sender matches)
declare -A CONF=([nothing_unix]=shipped [nothing_inet]=shipped [nothing_env_unix]=envnone
	[nothing_env_inet]=envnone [count_unix]=count [count_inet]=count [count_unix_ru]=count
	[count_inet_ru]=count [hdr_unix]=shipped [hdr_inet]=shipped [count_month_unix]=count
	[count_caps_unix]=count [count_unix_s0]=count [count_unix_s1]=count)
# the account's plan: enterprise (unlimited), but for 4m and 4c (their plans
# are in every generated conf)
declare -A PLAN=([count_month_unix]=benchmonth [count_caps_unix]=benchcaps)
BENCH_PLANS='plan benchmonth { monthly = 1000000000 }
plan benchcaps { monthly = 1000000000  daily = 1000000000  hourly = 1000000000 }'
# stats_interval where not the shipped one (health reports: off, or every second)
declare -A STATS=([count_unix_s0]=0 [count_unix_s1]=1)
declare -A RADDR=([nothing_unix]=tcp [nothing_inet]=tcp [nothing_env_unix]=tcp
	[nothing_env_inet]=tcp [count_unix]=tcp [count_inet]=tcp
	[count_unix_ru]=unix [count_inet_ru]=unix [hdr_unix]=tcp [hdr_inet]=tcp
	[count_month_unix]=tcp [count_caps_unix]=tcp [count_unix_s0]=tcp [count_unix_s1]=tcp)
declare -A DB=([nothing_unix]=1 [nothing_inet]=2 [count_unix]=3 [count_inet]=4
	[count_unix_ru]=5 [count_inet_ru]=6 [hdr_unix]=7 [hdr_inet]=8 [nothing_env_unix]=11
	[nothing_env_inet]=12 [peer_rspamd]=13 [count_month_unix]=14 [count_caps_unix]=15
	[count_unix_s0]=16 [count_unix_s1]=17)
declare -A MSPEC PFSPEC PFOPT SMTP_PORT MPID EXPECTED STEPS NEGO NOTRUN
# the comparisons the issue sets: counting vs counting nothing on the same socket, with
# the same conf (a conf that reads headers cannot let mail pass before its end)
declare -A SAME_SOCKET=([count_unix]=nothing_env_unix [count_inet]=nothing_env_inet
	[count_unix_ru]=nothing_env_unix [count_inet_ru]=nothing_env_inet [hdr_unix]=nothing_unix
	[hdr_inet]=nothing_inet [count_month_unix]=nothing_env_unix [count_caps_unix]=nothing_env_unix)
# and against the null libmilter milter on the same socket, which negotiates
# the steps of 3e (and so of 4)
declare -A NULL_SAME=([nothing_env_unix]=null_unix [nothing_env_inet]=null_inet
	[count_unix]=null_unix [count_inet]=null_inet [count_unix_ru]=null_unix
	[count_inet_ru]=null_inet [count_month_unix]=null_unix [count_caps_unix]=null_unix)

# counts CFG - quota-milter counts the configuration's messages in Redis
counts() { [ "${KIND[$1]:-}" = count ] || [ "${KIND[$1]:-}" = hdr ]; }
# is_qm CFG - the configuration is a quota-milter
is_qm() { counts "$1" || [ "${KIND[$1]:-}" = nothing ]; }

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
	echo "$BENCH_PLANS" >> "$file"
}

# sock_ready SPEC - the milter listens there
sock_ready() {
	case $1 in
	unix:*) [ -S "${1#unix:}" ] ;;
	inet:*) local p=${1#inet:}; (echo > "/dev/tcp/127.0.0.1/${p%@*}") 2>/dev/null ;;
	esac
}

# set_spec CFG - the configuration's milter socket, unix or inet by its name
set_spec() {
	local p
	case $1 in
	*_unix*) MSPEC[$1]="unix:$T/$1.sock"; PFSPEC[$1]="unix:$T/$1.sock" ;;
	*)	p=$(free_port); MSPEC[$1]="inet:$p@127.0.0.1"; PFSPEC[$1]="inet:127.0.0.1:$p" ;;
	esac
	PFOPT[$1]="-o smtpd_milters=${PFSPEC[$1]}"
}

# nego SPEC - the SMFIP_* steps the milter there asks for, as milterload -v
# tells after one message ("" if it could not)
nego() {
	"$LOAD" -v -c 1 -n 1 -t 10 "$1" 2>&1 | sed -n 's/.*asked for protocol flags \(0x[0-9a-f]*\).*/\1/p'
}

# nego_ok SPEC - a milter there negotiates and takes a message
nego_ok() { [ -n "$(nego "$1")" ]; }

# milter_up CFG - start the configuration's quota-milter; sets MPID[CFG]
milter_up() {
	local cfg=$1 raddr
	[ "${RADDR[$cfg]}" = unix ] && raddr=$RSOCK || raddr=127.0.0.1:$RPORT
	write_conf "$T/$cfg.conf" "${MSPEC[$cfg]}" "${CONF[$cfg]}" "$raddr" "${DB[$cfg]}"
	[ -z "${STATS[$cfg]:-}" ] ||
		sed -i "s|^stats_interval .*|stats_interval = ${STATS[$cfg]}|" "$T/$cfg.conf"
	"$build/quota-milter" -t -c "$T/$cfg.conf" >/dev/null ||
		{ echo "bench: bad generated conf $T/$cfg.conf" >&2; exit 1; }
	r -n "${DB[$cfg]}" HSET 'qm:account:{bench.example}' plan "${PLAN[$cfg]:-enterprise}" >/dev/null
	milter_start "$build" "$T/$cfg.conf" "$cfg"
	MPID[$cfg]=$MILTER_PID
	EXPECTED[$cfg]=0
	wait_for "$cfg milter" 20 sock_ready "${MSPEC[$cfg]}" ||
		{ sed 's/^/# /' "$T/$cfg.log" >&2; exit 1; }
}

# null_up CFG STEPS - start a null libmilter milter asking for STEPS
null_up() {
	local cfg=$1
	STEPS[$cfg]=$2
	"$NULLM" -p "${MSPEC[$cfg]}" -s "$2" > "$T/$cfg.log" 2>&1 &
	MPID[$cfg]=$!
	PIDS="$PIDS $!"
	wait_for "$cfg milter" 20 sock_ready "${MSPEC[$cfg]}" ||
		{ sed 's/^/# /' "$T/$cfg.log" >&2; exit 1; }
}

# --- the peers -----------------------------------------------------------------
# descendants PID - the process's children, theirs, and so on
descendants() {
	ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
		END { n = split(kids[root], q, " ")
			for (i = 1; i <= n; i++) { m = split(kids[q[i]], more, " "); for (j = 1; j <= m; j++) q[++n] = more[j] }
			for (i = 1; i <= n; i++) print q[i] }'
}

RSPAMD_MODULES="" RSPAMD_OFF=""
# rspamd_up - a throwaway rspamd in the foreground: only its proxy worker,
# in milter mode, scanning by itself (self_scan: no normal worker), and
# only the ratelimit module: no C module (filters empty), no rules file,
# and no other Lua plugin configured, so rspamd disables each. One bucket,
# keyed by the envelope sender, far above what the bench sends. Redis:
# the bench's, database 13. Everything else is rspamd's default.
rspamd_up() {
	local d=$T/rspamd port
	command -v rspamd >/dev/null ||
		{ NOTRUN[peer_rspamd]="rspamd is not installed"; fail "peer_rspamd: rspamd is not installed (make bench installs it: tests/bench/peers.sh)"; return 1; }
	port=$(free_port)
	MSPEC[peer_rspamd]="inet:$port@127.0.0.1" PFSPEC[peer_rspamd]="inet:127.0.0.1:$port"
	PFOPT[peer_rspamd]="-o smtpd_milters=inet:127.0.0.1:$port"
	if ! { mkdir -p "$d/db" "$d/run" && chown _rspamd:_rspamd "$d/db" "$d/run"; }; then
		NOTRUN[peer_rspamd]="no folders for _rspamd"
		fail "peer_rspamd: cannot make its folders for the _rspamd user"
		return 1
	fi
	cat > "$d/rspamd.conf" <<RSPAMD
# A throwaway rspamd for quota-milter's bench (tests/bench/bench.sh).
options {
	pidfile = "$d/run/rspamd.pid";
	filters = "";
	cache_file = "$d/db/symbols.cache";
	hs_cache_dir = "$d/db/";
	control_socket = "$d/run/rspamd.sock mode=0600";
	dns { nameserver = ["127.0.0.1"]; }
}
logging {
	type = "file";
	filename = "$d/rspamd.log";
	level = "info";
}
modules {
	path = "\${PLUGINSDIR}";
}
redis {
	servers = "127.0.0.1:$RPORT";
	db = "${DB[peer_rspamd]}";
}
ratelimit {
	rates {
		bench_sender = {
			selector = "from:addr";
			bucket = { burst = 10000000; rate = "10000000 / 1m"; }
		}
	}
}
actions {
	reject = 1000;
	add_header = 999;
	greylist = 998;
}
worker "rspamd_proxy" {
	bind_socket = "127.0.0.1:$port";
	milter = yes;
	timeout = 120s;
	count = 1;
	upstream "local" {
		default = yes;
		self_scan = yes;
	}
}
RSPAMD
	rspamd -f -u _rspamd -g _rspamd -c "$d/rspamd.conf" > "$T/peer_rspamd.log" 2>&1 &
	MPID[peer_rspamd]=$!
	PIDS="$PIDS $!"
	# It first compiles its list of domain suffixes (seconds), then forks
	# the proxy; one message through it shows it works.
	if ! wait_for "rspamd's proxy" 120 grep -q "starting rspamd_proxy process" "$d/rspamd.log" ||
	   ! wait_for "rspamd's milter" 30 nego_ok "${MSPEC[peer_rspamd]}"; then
		NOTRUN[peer_rspamd]="did not start"
		fail "peer_rspamd: rspamd did not start: $(tail -3 "$T/peer_rspamd.log" "$d/rspamd.log" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
	NEGO[peer_rspamd]=$(nego "${MSPEC[peer_rspamd]}")
	RSPAMD_MODULES=$(sed -n 's/.*init lua module \([a-z_0-9]*\) .*/\1/p' "$d/rspamd.log" | sort -u | xargs)
	RSPAMD_OFF=$(grep -c 'disabling unconfigured lua module' "$d/rspamd.log")
	[ "$RSPAMD_MODULES" = ratelimit ] ||
		fail "peer_rspamd: rspamd runs Lua modules other than ratelimit: $RSPAMD_MODULES"
	grep -q 'enabled ratelimit: bench_sender' "$d/rspamd.log" ||
		fail "peer_rspamd: rspamd's ratelimit bucket is not enabled"
}

POSTFWD_RULE='id=R1; action=rate(sender/10000000/3600/450 4.7.1 rate exceeded)'
# policy_ok PORT - a policy request there gets DUNNO
policy_ok() {
	local fd reply
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf '%s\n' request=smtpd_access_policy protocol_state=RCPT protocol_name=SMTP \
		client_address=127.0.0.1 client_name=localhost sender=probe@bench.invalid \
		recipient=to@dest.example "" >&"$fd"
	IFS= read -r -t 5 -u "$fd" reply
	exec {fd}>&-
	[ "$reply" = action=DUNNO ]
}
# postfwd_up - a throwaway postfwd2 (Debian's postfwd; it always runs as a
# daemon): its policy server on a loopback port, its cache daemon on a
# unix socket in our folder, one rate rule far above what the bench sends,
# no logging (there is no syslog; postfwd's stdout logging would go to the
# policy clients).
postfwd_up() {
	local d=$T/postfwd port
	command -v postfwd2 >/dev/null ||
		{ NOTRUN[peer_postfwd]="postfwd is not installed"; fail "peer_postfwd: postfwd is not installed (make bench installs it: tests/bench/peers.sh)"; return 1; }
	port=$(free_port)
	PFOPT[peer_postfwd]="-o smtpd_recipient_restrictions=check_policy_service,inet:127.0.0.1:$port,permit"
	install -d -o nobody -g nogroup "$d" || { NOTRUN[peer_postfwd]="no folder"; fail "peer_postfwd: cannot make $d"; return 1; }
	if ! postfwd2 -u nobody -g nogroup --perfmon --rule "$POSTFWD_RULE" --interface 127.0.0.1 \
		--port "$port" --cache_port "$d/cache.sock" --pidfile "$d/postfwd.pid" \
		> "$T/peer_postfwd.log" 2>&1 ||
	   ! wait_for "postfwd's pid file" 20 test -s "$d/postfwd.pid"; then
		NOTRUN[peer_postfwd]="did not start"
		fail "peer_postfwd: postfwd did not start: $(tail -3 "$T/peer_postfwd.log" | tr '\n' ' ')"
		return 1
	fi
	MPID[peer_postfwd]=$(tr -dc 0-9 < "$d/postfwd.pid")
	if ! wait_for "postfwd's policy server" 30 policy_ok "$port"; then
		NOTRUN[peer_postfwd]="did not answer"
		fail "peer_postfwd: postfwd does not answer policy requests"
		postfwd_stop
		return 1
	fi
}
# postfwd_stop - stop postfwd (not our child: a daemon); its policy server
# outlives the master's TERM a while, so each of its processes gets one
postfwd_stop() {
	local pid=${MPID[peer_postfwd]:-} all p i alive
	[ -n "$pid" ] || return 0
	unset 'MPID[peer_postfwd]'
	all="$pid $(descendants "$pid")"
	for p in $all; do
		grep -q postfwd "/proc/$p/cmdline" 2>/dev/null && kill -TERM "$p" 2>/dev/null
	done
	for i in $(seq 1 100); do
		alive=""
		for p in $all; do grep -q postfwd "/proc/$p/cmdline" 2>/dev/null && alive+=" $p"; done
		[ -z "$alive" ] && return 0
		sleep 0.1
	done
	say "postfwd did not stop:$alive"
	return 1
}
trap 'unset IFS; postfwd_stop; postfix_stop_all; cleanup' EXIT

# --- start everything ------------------------------------------------------------
extra_master=""
# add_port CFG - an smtpd port for the configuration, with its -o options
add_port() {
	SMTP_PORT[$1]=$(free_port)
	extra_master+="127.0.0.1:${SMTP_PORT[$1]} inet n - n - - smtpd ${PFOPT[$1]}"$'\n'
}
SMTP_PORT[none]=$(free_port)
for cfg in "${QM_CFGS[@]}"; do
	set_spec "$cfg"
	milter_up "$cfg"
	add_port "$cfg"
done
# The null milters ask for the steps that quota-milter's 3e asks for.
[ "$ONLY" = caps ] ||
for sock in unix inet; do
	steps=$(nego "${MSPEC[nothing_env_$sock]}")
	[ -n "$steps" ] || { echo "bench: milterload could not tell what nothing_env_$sock negotiated" >&2; exit 1; }
	NEGO[nothing_env_$sock]=$steps
	set_spec "null_$sock"
	null_up "null_$sock" "$steps"
	add_port "null_$sock"
done
if [ "$PEERS" = 1 ]; then
	say "starting the peers: rspamd, postfwd"
	rspamd_up && CFGS+=(peer_rspamd) && add_port peer_rspamd
	postfwd_up && CFGS+=(peer_postfwd) && add_port peer_postfwd
else
	for cfg in "${PEER_CFGS[@]}"; do
		NOTRUN[$cfg]=${BENCH_QUICK:+"not run in QUICK mode"}
		NOTRUN[$cfg]=${NOTRUN[$cfg]:-"not run (BENCH_PEERS=0)"}
	done
fi

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
declare -A RATES RATES1 CMDS MAXCONN NMSG_CMD MCPU PCPU RCPU
PF_MASTER_PID=$(_pf_pid "$PF_DIR")

# ticks PID - CPU time (user + system, clock ticks) of a process and of its
# descendants, alive or reaped (a milter's threads; a peer's worker
# processes; Postfix's master, smtpd, cleanup and the rest)
ticks() {
	local p f=()
	[ -n "${1:-}" ] || { echo 0; return; }
	for p in "$1" $(descendants "$1"); do f+=("/proc/$p/stat"); done
	cat "${f[@]}" 2>/dev/null | awk '{ sub(/.*\) /, ""); t += $12 + $13 + $14 + $15 } END { print t + 0 }'
}
# pf_ticks - CPU time of the Postfix instance
pf_ticks() { ticks "$PF_MASTER_PID"; }
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
	local cfg=$1 s=$2 n=$3 measure=${4:-} t0 t1 rc poller="" pfile args m0 p0 q0
	if [ -n "${DB[$cfg]:-}" ] && [ -n "$measure" ]; then
		pfile=$T/poll.$cfg.$RANDOM
		: > "$pfile"
		poll_clients "${DB[$cfg]}" "$pfile" &
		poller=$!
		PIDS="$PIDS $poller"
		r CONFIG RESETSTAT >/dev/null
	fi
	if [ "${KIND[$cfg]:-}" = hdr ]; then args=(-F "$T/hdr.eml"); else args=(-l 1000); fi
	m0=$(ticks "${MPID[$cfg]:-}") p0=$(pf_ticks) q0=$(ticks "$REDIS_PID")
	t0=$EPOCHREALTIME
	timeout $((n / 5 + 120)) smtp-source -s "$s" -m "$n" "${args[@]}" -f from@bench.example \
		-t to@dest.example "127.0.0.1:${SMTP_PORT[$cfg]}" > "$T/smtp-source.out" 2>&1
	rc=$?
	t1=$EPOCHREALTIME
	if [ -n "$poller" ]; then
		kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null
		MAXCONN[$cfg]=$(sort -n "$pfile" | tail -1 | awk -v m="${MAXCONN[$cfg]:-0}" '{print ($1 > m) ? $1 : m}')
		if [ "${KIND[$cfg]}" != nothing ]; then	# counting, and rspamd
			while IFS=: read -r name calls; do
				CMDS[$cfg:$name]=$(( ${CMDS[$cfg:$name]:-0} + calls ))
			done < <(r INFO commandstats | tr -d '\r' |
				sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\).*/\1:\2/p' |
				grep -vE '^(info|config\|resetstat|client\|list):')
			NMSG_CMD[$cfg]=$(( ${NMSG_CMD[$cfg]:-0} + n ))
		fi
	fi
	! counts "$cfg" || EXPECTED[$cfg]=$(( EXPECTED[$cfg] + n ))
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
		RCPU[$cfg]+=" $(awk -v t=$(( $(ticks "$REDIS_PID") - q0 )) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.3f", t * 1000 / hz / n }')"
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
		$2 == "[" db && $3 != "lua]" && index($0, "host:{") == 0 { c[tolower($4)]++; t++ }
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

# ran CFG - the configuration ran (a peer may not have)
ran() { [[ " ${CFGS[*]} " == *" $1 "* ]]; }

MON_CFGS=(count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet count_month_unix
	count_caps_unix)
ran peer_rspamd && MON_CFGS+=(peer_rspamd)
[ "$ONLY" = caps ] && MON_CFGS=(count_month_unix count_caps_unix)
say "Redis MONITOR: $MON_MSGS messages through each configuration that uses Redis"
for cfg in "${MON_CFGS[@]}"; do
	monitor_run "$cfg" "$MON_MSGS"
done

CFGS1=(none null_unix null_inet nothing_unix nothing_inet nothing_env_unix nothing_env_inet
	count_unix count_inet hdr_unix hdr_inet)
for cfg in "${PEER_CFGS[@]}"; do ran "$cfg" && CFGS1+=("$cfg"); done
[ "$ONLY" = caps ] && CFGS1=()
say "$ROUNDS rounds of $MSGS1 messages, one session"
for round in $(seq 1 "$ROUNDS"); do
	[ ${#CFGS1[@]} -gt 0 ] || break
	for cfg in $(rotate "$round" "${CFGS1[@]}"); do
		run_smtp "$cfg" 1 "$MSGS1"
		RATES1[$cfg]="${RATES1[$cfg]:-} $RESULT"
		say "round $round, 1 session: $cfg $RESULT msgs/s"
	done
done

# --- quota-milter-ctl metrics over a month of many accounts --------------------
# SCAN_ACCOUNTS usage hashes (in their own database), made with one pipe;
# metrics must read them (SCAN COUNT 1000, pipelined HMGET) in under 2 s.
say "metrics: $SCAN_ACCOUNTS accounts with usage this month"
awk -v n="$SCAN_ACCOUNTS" -v m="$month" 'function bulk(s) { printf "$%d\r\n%s\r\n", length(s), s }
	BEGIN { for (i = 1; i <= n; i++) { printf "*8\r\n"; bulk("HSET")
		bulk(sprintf("qm:usage:{a%06d.example}:%s", i, m)); bulk("total"); bulk(i % 12000)
		bulk("limit"); bulk("10000"); bulk("plan"); bulk("basic") } }' |
	redis-cli -p "$RPORT" -n 18 --pipe > "$T/scan-fill.log" 2>&1 ||
	fail "metrics: the usage hashes could not be made: $(tail -1 "$T/scan-fill.log")"
write_conf "$T/scan.conf" "inet:1@127.0.0.1" count "127.0.0.1:$RPORT" 18
t0=$EPOCHREALTIME
"$build/quota-milter-ctl" -c "$T/scan.conf" metrics > "$T/scan.prom" 2> "$T/scan.err" ||
	fail "metrics: quota-milter-ctl failed: $(head -1 "$T/scan.err")"
SCAN_SECS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
# accounts a000001..: total i % 12000 of 10000: exhausted when that is 10000 or more
scan_exhausted=$(awk -v n="$SCAN_ACCOUNTS" 'BEGIN { for (i = 1; i <= n; i++) if (i % 12000 >= 10000) e++; print e + 0 }')
grep -qx "quota_milter_accounts_exhausted $scan_exhausted" "$T/scan.prom" ||
	fail "metrics: accounts_exhausted is not $scan_exhausted: $(grep '^quota_milter_accounts_exhausted' "$T/scan.prom")"
say "metrics: $SCAN_ACCOUNTS accounts in $SCAN_SECS s"

# --- the milter alone ---------------------------------------------------------
declare -A LRATES
LCFGS=(null_unix null_inet nothing_unix nothing_env_unix count_unix count_inet count_unix_ru
	count_unix_k100 hdr_unix_c1 hdr_inet_c1)
declare -A LLABEL=(
	[null_unix]="null libmilter milter (answers continue), unix socket"
	[null_inet]="null libmilter milter (answers continue), inet socket"
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
	! counts "$cfg" || EXPECTED[$cfg]=$(( EXPECTED[$cfg] + ${acc:-0} ))
	if [ "$rc" != 0 ] || ! grep -q ' rejected=0 tempfail=0 discard=0 errors=0 ' <<<"$out"; then
		fail "milterload on $1: $out"
	fi
	RESULT=$(sed -n 's/.*msgs_per_sec=\([0-9.]*\).*/\1/p' <<<"$out")
}
[ "$ONLY" = caps ] && LCFGS=()
say "the milter alone: milterload, ${LOAD_SECS}s per run"
for round in $(seq 1 "$ROUNDS"); do
	[ ${#LCFGS[@]} -gt 0 ] || break
	for cfg in $(rotate "$round" "${LCFGS[@]}"); do
		run_load "$cfg"
		LRATES[$cfg]="${LRATES[$cfg]:-} $RESULT"
		say "round $round, milterload: $cfg $RESULT msgs/s"
	done
done
# the null milters got what they asked for: the steps quota-milter asked for
for cfg in null_unix null_inet; do
	[ "$ONLY" = caps ] && break
	[ "${NEGO[$cfg]:-}" = "${STEPS[$cfg]}" ] ||
		fail "$cfg negotiated ${NEGO[$cfg]:-nothing}, not ${STEPS[$cfg]} as quota-milter"
done

# --- memory with many sessions held open --------------------------------------
say "peak RSS with $HOLD_CONNS sessions held mid-transaction"
RSS_SPEC="unix:$T/rss.sock"
[ "$ONLY" = caps ] && HOLD_CONNS=0
write_conf "$T/rss.conf" "$RSS_SPEC" count "127.0.0.1:$RPORT" 9
r -n 9 HSET 'qm:account:{bench.example}' plan enterprise >/dev/null
RSS_PID=''
if [ "$HOLD_CONNS" != 0 ]; then
	milter_start "$build" "$T/rss.conf" rss
	RSS_PID=$MILTER_PID
fi
HELD="" HWM_HELD="" THREADS_HELD="" HWM="" HOLD_ACC="" HOLD_TEMPFAIL=""
# accepted LINE - the accepted= count of a milterload result line
accepted() { sed -n 's/.* accepted=\([0-9]*\) .*/\1/p' <<<"$1"; }
if [ "$HOLD_CONNS" = 0 ]; then
	say "peak RSS: skipped (BENCH_ONLY=$ONLY)"
elif wait_for "rss milter" 20 sock_ready "$RSS_SPEC"; then
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
[ -z "$RSS_PID" ] || milter_stop "$RSS_PID" rss || fail "the RSS milter did not stop cleanly"

# --- instructions per message under callgrind ---------------------------------
declare -A IR
# cg_run NAME KIND MESSAGES - total Ir of a daemon's whole life under
# callgrind, with MESSAGES milterload messages (2 connections); KIND is a
# conf of quota-milter's, or null for the null libmilter milter asking for
# what quota-milter asks for over a unix socket
cg_run() {
	local name=$1 kind=$2 n=$3 spec="unix:$T/cg-$1.sock" pid i cmd
	if [ "$kind" = null ]; then
		cmd=("$NULLM" -p "$spec" -s "${STEPS[null_unix]}")
	else
		write_conf "$T/cg-$name.conf" "$spec" "$kind" "$RSOCK" 10
		sed -i 's|^user .*|user = ""|' "$T/cg-$name.conf"
		cmd=("$build/quota-milter" -f -c "$T/cg-$name.conf")
	fi
	valgrind --tool=callgrind --callgrind-out-file="$T/cg-$name.out" \
		"${cmd[@]}" > "$T/cg-$name.log" 2>&1 &
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
	cg_run nullzero null 0
	cg_run null null "$CG_MSGS"
else
	say "callgrind: skipped (BENCH_CG=0)"
fi
# shellcheck disable=SC2016  # the backticks are Markdown
CG_TOP=$(callgrind_annotate --inclusive=no "$T/cg-count.out" 2>/dev/null |
	grep -E '^ *[0-9,]+ \([ 0-9.]+%\) ' | grep -v 'PROGRAM TOTALS' | head -12 |
	sed -E 's/^ *([0-9,]+) \( *([0-9.]+)%\) +(.*)$/| \1 | \2% | `\3` |/' |
	sed "s|$PWD/||g")
# per_msg NAME [ZERO] - (Ir(NAME) - Ir(ZERO, default zero)) / messages
per_msg() {
	awk -v a="${IR[$1]:-}" -v z="${IR[${2:-zero}]:-}" -v n="$CG_MSGS" \
		'BEGIN { if (a == "" || z == "" || n == 0) print "-"; else printf "%.0f", (a - z) / n }'
}

# --- counts: every accepted counted message is in Redis, once -----------------
declare -A COUNTED
for cfg in "${QM_CFGS[@]}"; do
	got=$(r -n "${DB[$cfg]}" HGET "qm:usage:{bench.example}:$month" total)
	got=${got:-0}
	COUNTED[$cfg]="$got/${EXPECTED[$cfg]}"
	[ "$got" = "${EXPECTED[$cfg]}" ] ||
		fail "$cfg: Redis counted $got, $((EXPECTED[$cfg])) accepted; the milter tempfailed $(grep -c 'decision=tempfail' "$T/$cfg.log") (e.g. $(grep -m1 'decision=tempfail' "$T/$cfg.log" | cut -d' ' -f2-))"
done
# The peers: rspamd's ratelimit wrote its buckets to Redis; and nothing was
# refused anywhere (a refusal would skew a rate).
RL_KEYS=""
if ran peer_rspamd; then
	RL_KEYS=$(r -n "${DB[peer_rspamd]}" DBSIZE)
	[ "${RL_KEYS:-0}" -gt 0 ] || fail "peer_rspamd: its ratelimit module wrote nothing to Redis"
fi
refused=$(grep -c 'milter-reject\|NOQUEUE: reject' "$PF_LOG")
[ "$refused" = 0 ] ||
	fail "Postfix refused $refused times, e.g. $(grep -m1 'milter-reject\|NOQUEUE: reject' "$PF_LOG" | cut -d' ' -f5-)"

say "stopping the milters and peers"
postfwd_stop || fail "peer_postfwd: postfwd did not stop"
for cfg in "${CFGS[@]}"; do [ -n "${MPID[$cfg]:-}" ] && kill -TERM "${MPID[$cfg]}" 2>/dev/null; done
for cfg in "${CFGS[@]}"; do
	[ -n "${MPID[$cfg]:-}" ] || continue
	milter_stop "${MPID[$cfg]}" "$cfg" || fail "$cfg: the milter did not stop cleanly"
done
for cfg in "${QM_CFGS[@]}"; do cat "$T/$cfg.log"; done | grep -h 'warning\|fatal\|panic' | head -5 |
	while IFS= read -r l; do say "milter log: $l"; done

# --- the table ------------------------------------------------------------------
med() { median "${RATES[$1]:-}"; }
med1() { median "${RATES1[$1]:-}"; }
medl() { median "${LRATES[$1]:-}"; }
medm() { median "${MCPU[$1]:-}"; }
medp() { median "${PCPU[$1]:-}"; }
medr() { median "${RCPU[$1]:-}"; }
base=$(med none)
base1=$(med1 none)
# yn CONDITION - "yes" or "**no**" (an awk condition)
yn() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo "**no**"; fi; }
# num VALUE - the value, or 0 when it is not a number (for yn)
num() { [[ ${1:-} =~ ^-?[0-9.]+$ ]] && echo "$1" || echo 0; }
# cost CFG - the counting configuration's cost against counting nothing, in %
cost() { awk -v a="$(med "$1")" -v b="$(med "${SAME_SOCKET[$1]}")" \
	'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.1f\n", (1 - a / b) * 100 }'; }
# stats_cost - the milter's CPU per message with reports every second against none, in %
stats_cost() {
	awk -v a="$(medm count_unix_s1)" -v b="$(medm count_unix_s0)" \
		'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.1f\n", (a / b - 1) * 100 }'
}
# cpu_cost CFG - the same by CPU time per message (milter, Postfix and Redis), in %
cpu_cost() {
	awk -v a="$(medm "$1")" -v b="$(medp "$1")" -v e="$(medr "$1")" \
		-v c="$(medm "${SAME_SOCKET[$1]}")" -v d="$(medp "${SAME_SOCKET[$1]}")" \
		-v f="$(medr "${SAME_SOCKET[$1]}")" \
		'BEGIN { if (a == "" || b == "" || c == "" || d == "" || c + d == 0) print "-";
			else printf "%.1f\n", ((a + b + e) / (c + d + f) - 1) * 100 }'
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
milter_version=$(dpkg-query -W -f='${Version}' libmilter1.0.1 2>/dev/null)
rspamd_version=$(dpkg-query -W -f='${Version}' rspamd 2>/dev/null)
postfwd_version=$(dpkg-query -W -f='${Version}' postfwd 2>/dev/null)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
# vs_null CFG - msgs/s against the null libmilter milter on the same socket
vs_null() { [ -n "${NULL_SAME[$1]:-}" ] && ratio "$(med "$1")" "$(med "${NULL_SAME[$1]}")"; }
# cpu_vs_null CFG - CPU per message (milter, Postfix, Redis) against the null
# libmilter milter's on the same socket: what the rate would be on a machine
# busy with nothing else, where the rate follows the CPU
cpu_vs_null() {
	[ -n "${NULL_SAME[$1]:-}" ] || return 0
	awk -v a="$(medm "$1")" -v b="$(medp "$1")" -v e="$(medr "$1")" \
		-v c="$(medm "${NULL_SAME[$1]}")" -v d="$(medp "${NULL_SAME[$1]}")" \
		-v f="$(medr "${NULL_SAME[$1]}")" \
		'BEGIN { if (a == "" || b == "" || c == "" || d == "" || c + d == 0) print "-";
			else printf "%.2f\n", (a + b + e) / (c + d + f) }'
}
# ms1 CFG - milliseconds per message with one session ("" if none)
ms1() { awk -v m="$(num "$(med1 "$1")")" 'BEGIN { if (m > 0) printf "%.2f", 1000 / m }'; }
# lat CFG - its ms per message with one session against the null libmilter
# milter's on the same socket
lat() { [ -n "${NULL_SAME[$1]:-}" ] && ratio "$(ms1 "$1")" "$(ms1 "${NULL_SAME[$1]}")"; }
# lowest VALUES... - the lowest number ("-" if none)
lowest() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | head -1 | grep . || echo -; }
r_unix=$(ratio "$(med count_unix)" "$base")
r_inet=$(ratio "$(med count_inet)" "$base")
n_unix=$(lowest "$(vs_null count_unix)" "$(vs_null count_unix_ru)")
n_inet=$(lowest "$(vs_null count_inet)" "$(vs_null count_inet_ru)")
lat_unix=$(lat count_unix)
lat_inet=$(lat count_inet)
worst_cost=$(for c in count_unix count_inet count_unix_ru count_inet_ru; do cost "$c"; done | sort -g | tail -1)
worst_cpu_cost=$(for c in count_unix count_inet count_unix_ru count_inet_ru; do cpu_cost "$c"; done | sort -g | tail -1)
# rt CFG - round trips per message ("" when not measured)
rt() { local v=${RTRIP[$1]:-}; echo "${v%% *}"; }
rt_count=$(for c in count_unix count_inet count_unix_ru count_inet_ru; do rt "$c"; done | sort -g | tail -1)
rt_hdr=$(for c in hdr_unix hdr_inet; do rt "$c"; done | sort -g | tail -1)
maxconn=$(for c in count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet; do echo "${MAXCONN[$c]:-0}"; done | sort -n | tail -1)
hwm_mib=$(awk -v k="${HWM:-0}" -v h="${HWM_HELD:-0}" 'BEGIN { m = k > h ? k : h; printf "%.1f", m / 1024 }')
# caps: 4c against 4m, milter CPU per message, round trips, the script's
# commands. Round trips may differ by the peeks that replace an expired
# recent answer (about one a second, counters_recent()): 0.02 a message.
caps_cpu=$(ratio "$(medm count_caps_unix)" "$(medm count_month_unix)")
rt_caps=$(rt count_caps_unix) rt_month=$(rt count_month_unix)
stall=$(awk -v a="$(num "$(med1 hdr_inet)")" -v b="$(num "$(med1 hdr_unix)")" \
	'BEGIN { if (a > 0 && b > 0 && 1000 / a - 1000 / b > 25) print "yes"; else print "no" }')

{
echo "# quota-milter benchmark"
echo
echo "Made by \`make bench\` (tests/bench/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC')${BENCH_QUICK:+ in QUICK mode (the smoke test: the numbers mean nothing)}."
echo "Machine: $(nproc) × $cpu_model, Linux $(uname -r), Postfix $pf_version, Redis $redis_version."
echo "quota-milter runs on Sendmail's libmilter (Debian's libmilter1.0.1 ${milter_version:-?}), as does the null"
echo "milter of 2 (tests/bench/nullmilter.c), the ceiling for any libmilter milter on this Postfix."
echo "The machine is shared with other work: compare ratios within this run, not numbers across runs."
echo
echo "Method: one throwaway Postfix on loopback discarding all mail, one smtpd port per"
echo "configuration; one milter (or peer) per configuration, all running at once, each quota-milter"
echo "with its own Redis database; smtp-source sends $MSGS messages of 1000 bytes per run, one message"
echo "per SMTP session (smtp-source without -d), from from@bench.example, after a $WARMUP-message"
echo "warm-up; $ROUNDS rounds, the configurations alternating within each round; medians. CPU columns:"
echo "CPU time of the milter's (or peer's) processes, of all Postfix processes (delivery included)"
echo "and of redis-server per message, from /proc (10 ms ticks); Redis serves every configuration"
echo "but only the one running uses it (the bench polls CLIENT LIST 4 times a second)."
echo
echo "## Targets"
echo
echo "| target | measured | met |"
echo "|---|---|---|"
echo "| counting ≥ 0.95 × the null libmilter milter, unix socket (10 sessions, msgs/s) | Redis TCP $(vs_null count_unix), Redis unix socket $(vs_null count_unix_ru) (inet socket, not a target: $(vs_null count_inet), $(vs_null count_inet_ru)); CPU per message (milter, Postfix, Redis) against the null milter's: ×$(cpu_vs_null count_unix), ×$(cpu_vs_null count_unix_ru) (inet ×$(cpu_vs_null count_inet), ×$(cpu_vs_null count_inet_ru)) | $(yn "$(num "$n_unix") >= 0.95") |"
echo "| health reports cost ≤ 1 % of the milter's CPU per message (every second against off, same run) | $(stats_cost) % ($(medm count_unix_s1) against $(medm count_unix_s0) ms/msg) | $(yn "\"$(stats_cost)\" != \"-\" && $(num "$(stats_cost)") <= 1 && $(num "$(stats_cost)") >= -1") |"
echo "| quota-milter-ctl metrics reads $SCAN_ACCOUNTS accounts in < 2 s | $SCAN_SECS s | $(yn "$(num "$SCAN_SECS") > 0 && $(num "$SCAN_SECS") < 2") |"
echo "| counting costs ≤ 3% against counting nothing, same socket | worst ${worst_cost}% in msgs/s, ${worst_cpu_cost}% in CPU per message (milter, Postfix, Redis) | $(yn "\"$worst_cost\" != \"-\" && $(num "$worst_cost") <= 3 && $(num "$worst_cpu_cost") <= 3") |"
echo "| ≤ 1 Redis round trip before DATA and 1 at end of data | $rt_count per message (account known at MAIL), $rt_hdr (header account) | $(yn "$(num "$rt_count") > 0 && $(num "$rt_count") <= 2.02 && $(num "$rt_hdr") <= 1.01") |"
echo "| Redis connections ≤ pool size, plus the health reports' own one | at most $maxconn, pool_size $POOL_SIZE | $(yn "$maxconn <= $POOL_SIZE + 1") |"
echo "| peak RSS ≤ 32 MiB with $HOLD_CONNS sessions held, not a thread each (libmilter's worker pool) | $hwm_mib MiB, ${THREADS_HELD:-?} threads | $(yn "$hwm_mib <= 32 && $(num "$HELD") == $HOLD_CONNS && $(num "$THREADS_HELD") > 0 && $(num "$THREADS_HELD") < $HOLD_CONNS") |"
echo "| one session: latency per message within 10 % of the null libmilter milter, unix and inet | unix $(ms "$(ms1 count_unix)") ms against $(ms "$(ms1 null_unix)") (×$lat_unix), inet $(ms "$(ms1 count_inet)") ms against $(ms "$(ms1 null_inet)") (×$lat_inet) | $(yn "$(num "$lat_unix") > 0 && $(num "$lat_unix") <= 1.10 && $(num "$lat_inet") > 0 && $(num "$lat_inet") <= 1.10") |"
echo "| hourly and daily caps: milter CPU per message ≤ 1.03 × the monthly quota only (4c vs 4m), no more round trips | CPU ×$caps_cpu ($(ms "$(medm count_caps_unix)") ms against $(ms "$(medm count_month_unix)") ms a message); round trips ${rt_caps:--} against ${rt_month:--}; the script's commands per message ${RSCRIPT[count_caps_unix]:--} against ${RSCRIPT[count_month_unix]:--} | $(yn "$(num "$caps_cpu") > 0 && $(num "$caps_cpu") <= 1.03 && $(num "$rt_caps") > 0 && $(num "$rt_caps") <= $(num "$rt_month") + 0.02") |"
echo "| no Nagle / delayed-ACK stall with one session | header account over inet: $(ms "$(ms1 hdr_inet)") ms a message, over unix $(ms "$(ms1 hdr_unix)") ms | $([ "$stall" = no ] && echo yes || echo "**no**") |"
echo
echo "For information (targets set in the era of the hand-written protocol engine, not on libmilter): counting"
echo "against no milter, 10 sessions: unix socket $r_unix, inet $r_inet (the null libmilter milter:"
echo "$(ratio "$(med null_unix)" "$base"), $(ratio "$(med null_inet)" "$base")); the milter alone (milterload, counting, unix socket): $(medl count_unix) messages/s"
echo "(the null libmilter milter: $(medl null_unix))."
echo
echo "## Through Postfix, 10 parallel sessions (smtp-source -s 10)"
echo
echo "| configuration | msgs/s (median) | runs | vs no milter | vs null libmilter milter, same socket | cost vs counting nothing, same socket: msgs/s, CPU | milter (peer) CPU ms/msg | Postfix CPU ms/msg | Redis CPU ms/msg |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
for cfg in "${CFGS[@]}"; do
	c=""; [ -n "${SAME_SOCKET[$cfg]:-}" ] && c="$(cost "$cfg")%, $(cpu_cost "$cfg")%"
	m=""; [ "$cfg" != none ] && m=$(medm "$cfg")
	echo "| ${LABEL[$cfg]} | $(med "$cfg") | ${RATES[$cfg]# } | $(ratio "$(med "$cfg")" "$base") | $(vs_null "$cfg") | $c | $m | $(medp "$cfg") | $(medr "$cfg") |"
done
for cfg in "${PEER_CFGS[@]}"; do
	ran "$cfg" || echo "| ${LABEL[$cfg]} | ${NOTRUN[$cfg]:-not run} | | | | | | | |"
done
echo
echo "2 asks for the SMFIP_* steps that 3e's quota-milter asked for (see below), so that Postfix"
echo "sends it the same events and waits for the same replies as with 3e and 4, and answers continue"
echo "to each, end of message included, as 4 must (it charges there). 3e lets its mail through at"
echo "the first RCPT with SMFIS_ACCEPT, after which Postfix sends it nothing more for that message:"
echo "one exchange fewer than 2 and 4, so 3e can be faster than the null milter. 4h sends a message"
echo "with X-Quota-Account and X-Quota-Category headers (smtp-source -F, about the same size); its"
echo "account is known only at end of message, where both headers are removed (two SMFIR_CHGHEADER"
echo "replies before the final one)."
echo
echo "The peers (5), Debian's packages, run as throwaway instances on loopback:"
if ran peer_rspamd; then
	echo "rspamd ${rspamd_version}: one proxy worker in milter mode scanning by itself (self_scan; Debian's"
	echo "count = 1), Lua modules loaded: ${RSPAMD_MODULES:-none} (${RSPAMD_OFF:-?} other plugins disabled as unconfigured), no C"
	echo "module (filters = \"\"), no rules file; one ratelimit bucket keyed by the envelope sender, far"
	echo "above what the bench sends, in Redis (TCP, a database of its own, which held ${RL_KEYS:-?} key(s) at"
	echo "the end); actions thresholds out of reach; logging at rspamd's default level (info) to a file."
else
	echo "rspamd: ${NOTRUN[peer_rspamd]:-not run}."
fi
if ran peer_postfwd; then
	echo "postfwd ${postfwd_version} (postfwd2: a master, a cache daemon and a pre-forking policy server), the"
	echo "one rule \`$POSTFWD_RULE\`, no logging, called by"
	echo "smtpd_recipient_restrictions = check_policy_service (no milter on that port)."
else
	echo "postfwd: ${NOTRUN[peer_postfwd]:-not run}."
fi
echo
echo "## One session (smtp-source -s 1, $MSGS1 messages)"
echo
echo "A Nagle / delayed-ACK stall between MTA and milter shows only here (about 40 ms a message)."
echo
echo "| configuration | msgs/s (median) | ms per message | runs | vs no milter | ms per message vs null libmilter milter, same socket |"
echo "|---|---:|---:|---|---:|---:|"
for cfg in "${CFGS1[@]}"; do
	m=$(med1 "$cfg")
	echo "| ${LABEL[$cfg]} | $m | $(ms "$(ms1 "$cfg")") | ${RATES1[$cfg]# } | $(ratio "$m" "$base1") | $(lat "$cfg") |"
done
for cfg in "${PEER_CFGS[@]}"; do
	ran "$cfg" || echo "| ${LABEL[$cfg]} | ${NOTRUN[$cfg]:-not run} | | | | |"
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
echo "| configuration | round trips per message | inside the script, per message | all commands per message | most connections (quota-milter's pool_size $POOL_SIZE) | counted |"
echo "|---|---|---|---|---:|---:|"
for cfg in "${QM_CFGS[@]}" peer_rspamd; do
	ran "$cfg" || continue
	if [ "${KIND[$cfg]}" = nothing ]; then
		echo "| ${LABEL[$cfg]} | 0 (Redis never asked) | - | - | ${MAXCONN[$cfg]:-0} | ${COUNTED[$cfg]} |"
	else
		echo "| ${LABEL[$cfg]} | ${RTRIP[$cfg]:--} | ${RSCRIPT[$cfg]:--} | $(cmds_per_msg "$cfg") | ${MAXCONN[$cfg]:-0} | ${COUNTED[$cfg]:-its own keys} |"
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
for cfg in null_unix null_inet nothing_env_unix nothing_env_inet nothing_unix count_unix count_inet \
	count_unix_ru hdr_unix hdr_inet peer_rspamd; do
	[ -n "${NEGO[$cfg]:-}" ] && echo "| ${LABEL[$cfg]#[0-9]*. } | ${NEGO[$cfg]} $(smfip_names "${NEGO[$cfg]}") |"
done
echo
echo "## Memory"
echo
echo "A fresh milter (counting, unix socket, Redis TCP), warmed with 200 messages, then"
echo "$HOLD_CONNS milterload sessions opened at once and held after RCPT until all are open."
echo "libmilter serves sessions from a pool of worker threads, not one thread per session."
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
echo "| the null libmilter milter (the same steps, continue to everything) | $(per_msg null nullzero) |"
echo "| counting minus the null libmilter milter: quota-milter's own, Redis client included | $(awk -v a="$(per_msg count)" -v b="$(per_msg null nullzero)" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) print a - b; else print "-" }') |"
echo "| start and stop, no message | ${IR[zero]:-skipped} in all (the null milter: ${IR[nullzero]:-skipped}) |"
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

# The history kept below the tables (## History to the end) survives the run.
if [ -f "$OUT" ] && grep -q '^## History' "$OUT"; then
	{ echo; sed -n '/^## History/,$p' "$OUT"; } >> "$T/results.md"
fi
mkdir -p "$(dirname "$OUT")"
cp "$T/results.md" "$OUT"
cat "$OUT"

if [ -n "$DATA" ]; then
	{
		for cfg in "${CFGS[@]}"; do echo "rate.$cfg=$(med "$cfg")"; done
		for cfg in "${CFGS1[@]}"; do echo "rate1.$cfg=$(med1 "$cfg")"; done
		for cfg in "${LCFGS[@]}"; do echo "load.$cfg=$(medl "$cfg")"; done
		for cfg in "${!COUNTED[@]}"; do echo "counted.$cfg=${COUNTED[$cfg]}"; done
		for cfg in count_unix count_inet count_unix_ru count_inet_ru hdr_unix hdr_inet \
			count_month_unix count_caps_unix; do
			echo "cmds.$cfg=$(cmds_per_msg "$cfg")"
			echo "maxconn.$cfg=${MAXCONN[$cfg]:-0}"
			echo "rtrip.$cfg=$(rt "$cfg")"
		done
		for cfg in "${CFGS[@]}"; do
			echo "mcpu.$cfg=$(medm "$cfg")"; echo "pcpu.$cfg=$(medp "$cfg")"; echo "rcpu.$cfg=$(medr "$cfg")"
		done
		for cfg in "${!NEGO[@]}"; do echo "nego.$cfg=${NEGO[$cfg]}"; done
		for cfg in null_unix null_inet; do echo "steps.$cfg=${STEPS[$cfg]:-}"; done
		echo "caps.cpu_ratio=$caps_cpu"
		echo "caps.rtrip=${rt_caps:-}"
		echo "month.rtrip=${rt_month:-}"
		echo "vs_null.unix=$n_unix"
		echo "vs_null.inet=$n_inet"
		echo "cpu_vs_null.unix=$(cpu_vs_null count_unix)"
		echo "stats_cost=$(stats_cost)"
		echo "scan_secs=$SCAN_SECS"
		echo "lat.unix=$lat_unix"
		echo "lat.inet=$lat_inet"
		echo "peers=$(for cfg in "${PEER_CFGS[@]}"; do ran "$cfg" && echo "$cfg"; done | xargs)"
		echo "held=${HELD:-0}"
		echo "threads_held=${THREADS_HELD:-}"
		echo "hwm_kib=${HWM:-}"
		echo "ir.count=$(per_msg count)"
		echo "ir.nothing=$(per_msg nothing)"
		echo "ir.null=$(per_msg null nullzero)"
		echo "errors=${#ERRORS[@]}"
	} > "$DATA"
fi
[ ${#ERRORS[@]} -eq 0 ]
