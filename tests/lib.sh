# lib.sh - shared by the shell tests: sourced, not run.
#
# Every test makes its own folder ($T), picks free loopback ports, starts
# its own redis-server and quota-milter, and stops them on exit.

T=$(mktemp -d "${TMPDIR:-/tmp}/qm-test.XXXXXX")
chmod 755 "$T"
PIDS=""
NFAIL=0

# ours PID - is the process still a child of this test's shell? A PID of
# one reaped long ago may be another program's by now: never signal that.
ours() {
	local stat
	{ read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
	stat=${stat##*) }		# the name may hold spaces: fields after it
	set -- $stat
	[ "$2" = "$$" ]
}

cleanup() {
	local p
	unset IFS		# a trap may fire inside "IFS= read"
	for p in $PIDS; do ours "$p" && kill "$p" 2>/dev/null; done
	sleep 0.2
	for p in $PIDS; do ours "$p" && kill -9 "$p" 2>/dev/null; done
	[ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; NFAIL=$((NFAIL + 1)); }
# check NAME COMMAND... - one case: ok if the command succeeds
check() { local name=$1; shift; if "$@"; then ok "$name"; else notok "$name"; fi; }
# check_eq NAME EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else notok "$1 (expected '$2', got '$3')"; fi
}
finish() { exit $((NFAIL > 0)); }

# port_free PORT - nothing listens there
port_free() { ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port - a loopback port nothing listens on, below the kernel's
# ephemeral range: a port that an outgoing connection used moments ago sits
# in TIME_WAIT, and a listener cannot bind it ("Address already in use")
# though nothing listens there.
free_port() {
	local p i lo=32768 span
	read -r lo _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null
	span=$((${lo:-0} - 20000))
	[ "$span" -ge 4000 ] || span=40000
	for i in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % span))
		port_free "$p" && { echo "$p"; return 0; }
	done
	return 1
}

# wait_for NAME SECONDS COMMAND... - poll until the command succeeds
wait_for() {
	local name=$1 secs=$2 i
	shift 2
	for i in $(seq 1 $((secs * 20))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "# timed out waiting for $name" >&2
	return 1
}

# redis_start - start a private redis-server; sets REDIS_PORT, REDIS_PID
redis_start() {
	REDIS_PORT=${1:-$(free_port)}
	mkdir -p "$T/redis"
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
		--dir "$T/redis" --logfile "$T/redis/redis.log" &
	REDIS_PID=$!
	PIDS="$PIDS $REDIS_PID"
	wait_for redis-server 10 redis-cli -p "$REDIS_PORT" ping
}

# rcli ARGS... - redis-cli on the test's Redis, raw output
rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }

# month - this month in UTC, the month the test confs count in
month=$(date -u +%Y-%m)

# usage ACCOUNT FIELD - a field of the account's usage hash this month
usage() { rcli HGET "qm:usage:{$1}:$month" "$2"; }

# accounts - account hashes in the test's Redis, from stdin, one a line:
# NAME PLAN [FIELD VALUE]...
accounts() {
	local a
	while read -r -a a; do
		[ "${#a[@]}" -ge 2 ] || continue
		rcli HSET "qm:account:{${a[0]}}" plan "${a[1]}" "${a[@]:2}" >/dev/null
	done
}

# write_conf FILE SOCKET [EXTRA [SED...]] - the shipped conf with the test's
# socket, Redis, journal folder and starting user, and each SED expression
# applied; then the EXTRA lines
write_conf() {
	local file=$1 sock=$2 extra=${3:-} e more=()
	shift $(($# < 3 ? $# : 3))
	for e in "$@"; do more+=(-e "$e"); done
	sed -e "s|^socket .*|socket = \"$sock\"|" -e 's|^user .*|user = ""|' \
	    -e "s|^journal .*|journal = \"$T/journal\"|" \
	    -e "s|address *= *\"127.0.0.1:6379\"|address = \"127.0.0.1:$REDIS_PORT\"|" \
	    "${more[@]}" conf/quota-milter.conf > "$file"
	printf '%s\n' "$extra" >> "$file"
}

# small_conf FILE SOCKET LINE... - a conf of the test's own, not the shipped
# one: the socket, no user switch, the test's Redis, then the LINEs
small_conf() {
	local file=$1 sock=$2
	shift 2
	printf '%s\n' "socket = \"$sock\"" 'user = ""' \
		"redis { address = \"127.0.0.1:$REDIS_PORT\" }" "$@" > "$file"
}

# sd_conf FILE SOCKET LINE... - a small_conf with sender-domain accounts,
# category crm { sender = "@" }, plans free (0, the default) and basic
sd_conf() {
	local file=$1 sock=$2
	shift 2
	small_conf "$file" "$sock" 'default_plan = "free"' 'account { source = "sender-domain" }' \
		'category crm { sender = "@" }' 'plan free { monthly = 0 }' \
		'plan basic { monthly = 10000 }' "$@"
}

# mt SOCKET SCRIPT [-D NAME=VALUE...] - run tests/milter/SCRIPT.lua under miltertest
mt() {
	local sock=$1 script=$2
	shift 2
	miltertest -D sock="$sock" -D rport="$REDIS_PORT" -D month="$month" \
		-D lib=tests/milter/common.lua "$@" -s "tests/milter/$script.lua"
}

# milter_start BUILD CONF [NAME] - run the daemon in the foreground; sets MILTER_PID
milter_start() {
	local build=$1 conf=$2 name=${3:-milter}
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
		"$build/quota-milter" -f -c "$conf" >"$T/$name.log" 2>&1 &
	MILTER_PID=$!
	PIDS="$PIDS $MILTER_PID"
}

# milter_stop PID NAME - SIGTERM, wait, and report sanitizer findings
milter_stop() {
	local pid=$1 name=$2 rc=0
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
	wait "$pid" 2>/dev/null || rc=$?
	if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T/$name.log"; then
		grep -E -A5 'ERROR: |runtime error:' "$T/$name.log" | sed 's/^/# /' | head -40
		return 1
	fi
	[ "$rc" = 0 ] || { echo "# $name exited $rc"; tail -5 "$T/$name.log" | sed 's/^/# /'; return 1; }
}

# milter_up NAME CONF SOCKET - milter_start the daemon of $build and wait for
# its socket (inet:PORT@HOST or unix:PATH); when it does not come up, a not ok
# line, the log, and status 1
milter_up() {
	local name=$1 conf=$2 sock=$3 ready
	case $sock in
	unix:*)	ready=(test -S "${sock#unix:}") ;;
	*)	ready=(bash -c "echo > /dev/tcp/127.0.0.1/$(sed 's/inet:\([0-9]*\)@.*/\1/' <<<"$sock")") ;;
	esac
	milter_start "$build" "$conf" "$name"
	wait_for "$name" 20 "${ready[@]}" && return 0
	notok "$name started"
	sed 's/^/# /' "$T/$name.log" | tail -40
	return 1
}
