# shellcheck shell=bash disable=SC2034
# postfix.sh - a throwaway Postfix instance for the tests: sourced after
# lib.sh, not run. Reused by the end-to-end test, the benchmark and the demo.
# Sourcing it replaces lib.sh's EXIT trap with one that first stops every
# instance, and makes SIGINT, SIGTERM and SIGHUP run that trap too.
# Needs root (Postfix's own users), the postfix package and loopback only.
#
#   postfix_start DIR SMTP_PORT [MAIN_CF_LINES]
#                   an instance with everything under DIR: config (DIR/etc),
#                   queue (DIR/spool), data (DIR/data), log (DIR/maillog);
#                   smtpd on 127.0.0.1:SMTP_PORT; all mail relayed to an
#                   smtp-sink that writes each message to a file in DIR/sink.
#                   Sets PF_DIR PF_CONF PF_QUEUE PF_LOG PF_SINK PF_SINK_PORT
#                   PF_SINK_PID PF_SMTP_PORT. $PF_MASTER_EXTRA, if set, is
#                   appended to master.cf.
#   postfix_milter_conf SPEC
#                   the main.cf lines attaching a milter (SPEC as in main.cf,
#                   e.g. inet:127.0.0.1:PORT) to smtpd and to non-SMTP mail
#   postfix_stop [DIR]  stop it and wait until its master is gone; every
#                   started instance is also stopped when the test exits
#   The functions below work on the instance started last ($PF_DIR):
#   postfix_queue_count            messages in its queue
#   postfix_wait_queue SECS        poll until its queue is empty
#   postfix_sendmail FROM RCPT...  Postfix's sendmail(1) on the instance
#                   (message on stdin): the non-SMTP path, pickup -> cleanup
#   postfix_kick_pickup            make pickup scan maildrop now (it does
#                   so by itself only every 60 s, e.g. after a milter tempfail)
#   sink_files [REGEX]  the delivered message files (those with a line
#                   matching the extended REGEX), one a line; smtp-sink puts
#                   X-Mail-Args: <SENDER> and X-Rcpt-Args: <RCPT> lines first
#   sink_count [REGEX]             how many
#   sink_wait N SECS [REGEX]       poll until at least N
#   msg_text HEADER...             a message: the headers, a blank line,
#                   $MSG_BODY (default one line); LF line ends
#   smtp_send PORT FROM RCPTS [HEADER...]
#                   one SMTP transaction (RCPTS space-separated) with a
#                   msg_text message, in bash over /dev/tcp. Sets
#                   SMTP_GREETING, SMTP_MAIL_REPLY, SMTP_RCPT_REPLIES (array),
#                   SMTP_DATA_REPLY (the reply at end of DATA), SMTP_REPLY
#                   (the last reply), multi-line replies joined by newlines;
#                   SMTP_DATA_MS (milliseconds from the end of the message
#                   to the reply at end of DATA, or to giving up on it; ""
#                   when the message was never sent),
#                   SMTP_MAX_MS (the slowest reply of the transaction, the
#                   greeting's counted from the connect; a reply that never
#                   came counts as the time waited for it);
#                   appends a C:/S: transcript to $SMTP_LOG. With
#                   $SMTP_XCLIENT set (e.g. "ADDR=192.0.2.7 NAME=[UNAVAILABLE]",
#                   for an instance with smtpd_authorized_xclient_hosts) it
#                   sends "XCLIENT $SMTP_XCLIENT" after EHLO, then EHLO again,
#                   and sets SMTP_XCLIENT_REPLY. Returns 0 when
#                   the message was accepted (2xx at end of DATA), 1 if
#                   refused, 2 on a connection or protocol failure.
#
# Postfix facts this relies on: maillog_file must start with one of
# maillog_file_prefixes or Postfix exits silently at start; smtpd refuses to
# start unless the relay restrictions end in reject; with no syslog the
# postfix command's complaints only reach a terminal (hence script(1)).

PF_INSTANCES=""
declare -gA PF_MASTER=()	# instance folder -> its master's pid
SMTP_TIMEOUT=${SMTP_TIMEOUT:-30}
SMTP_LOG=${SMTP_LOG:-$T/smtp.log}
SMTP_EHLO=${SMTP_EHLO:-client.qm-test.example}
MSG_BODY=${MSG_BODY:-This is a test message from the quota-milter tests.}

# Stop every instance before lib.sh's cleanup kills the rest and removes $T.
# A trap that fires during `IFS= read` runs with that empty IFS: reset it.
trap 'unset IFS; postfix_stop_all; cleanup' EXIT
# Bash runs the EXIT trap when a signal ends it only if the signal is trapped.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# sink_start LOG - smtp-sink on a free port, each message a file in $PF_SINK;
# another try on another port if that one was taken meanwhile. Sets
# PF_SINK_PORT and PF_SINK_PID.
sink_start() {
	local i
	for i in 1 2 3; do
		PF_SINK_PORT=$(free_port) || return 1
		smtp-sink -u nobody -h sink.qm-test.example -d "$PF_SINK/%M." \
			"127.0.0.1:$PF_SINK_PORT" 100 >"$1" 2>&1 &
		PF_SINK_PID=$!
		PIDS="$PIDS $PF_SINK_PID"
		wait_for smtp-sink 10 bash -c "kill -0 $PF_SINK_PID && echo > /dev/tcp/127.0.0.1/$PF_SINK_PORT" && return 0
		kill "$PF_SINK_PID" 2>/dev/null
		sed 's/^/# /' "$1"
	done
	return 1
}

# postfix_milter_conf SPEC - main.cf lines attaching one milter
postfix_milter_conf() {
	cat <<EOF
smtpd_milters = $1
non_smtpd_milters = $1
milter_protocol = 6
milter_default_action = tempfail
EOF
}

postfix_start() {
	local dir=$1 port=$2 extra=${3:-} i
	dir=$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")
	PF_DIR=$dir
	PF_CONF=$dir/etc
	PF_QUEUE=$dir/spool
	PF_LOG=$dir/maillog
	PF_SINK=$dir/sink
	PF_SMTP_PORT=$port
	mkdir -p "$PF_CONF" "$PF_QUEUE" "$dir/data" "$PF_SINK" || return 1
	chmod 755 "$dir" "$PF_CONF" "$PF_QUEUE"
	# The folders `postfix set-permissions` or `post-install create-missing`
	# would make (see postfix-files), made here in milliseconds, not seconds.
	(
		set -e
		cd "$PF_QUEUE"
		mkdir -p active bounce corrupt defer deferred flush hold incoming \
			private saved trace maildrop public pid
		chown postfix:root active bounce corrupt defer deferred flush hold \
			incoming private saved trace
		chmod 700 active bounce corrupt defer deferred flush hold incoming \
			private saved trace
		chown postfix:postdrop maildrop public
		chmod 730 maildrop
		chmod 710 public
		chmod 755 pid
		chown postfix "$dir/data"
		chmod 700 "$dir/data"
	) || return 1
	# smtp-sink drops to nobody before it writes a message file
	chown nobody "$PF_SINK" && chmod 755 "$PF_SINK" || return 1

	sink_start "$dir/smtp-sink.log" || return 1

	cat > "$PF_CONF/main.cf" <<EOF
# A throwaway instance made by tests/postfix.sh; loopback only.
compatibility_level = 3.6
config_directory = $PF_CONF
queue_directory = $PF_QUEUE
data_directory = $dir/data
maillog_file_prefixes = $dir
maillog_file = $PF_LOG
myhostname = mta.qm-test.example
mydomain = qm-test.example
myorigin = \$myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$PF_SINK_PORT
biff = no
# if the sink ever defers, retry within seconds, not minutes
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
$extra
EOF
	cat > "$PF_CONF/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$port inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
${PF_MASTER_EXTRA:-}
EOF
	# Postfix rereads main.cf until its mtime is over a second old (so as not
	# to read a file still being written): that costs 2 s per fresh instance.
	touch -d '-1 minute' "$PF_CONF/main.cf" "$PF_CONF/master.cf"
	# With no syslog the postfix command's complaints go nowhere but to a
	# terminal: give it one and keep what it says.
	if ! _pf_cmd "$dir/postfix-start.log" start; then
		echo "# postfix would not start:"
		sed 's/^/# /' "$dir/postfix-start.log" | tail -20
		[ -f "$PF_LOG" ] && tail -20 "$PF_LOG" | sed 's/^/# /'
		return 1
	fi
	PF_INSTANCES="$PF_INSTANCES $dir"
	# `postfix start` returns once master has set up its listeners (-w).
	PF_MASTER[$dir]=$(_pf_pid "$dir") && return 0
	echo "# postfix started but its master is not running"
	tail -20 "$PF_LOG" 2>/dev/null | sed 's/^/# /'
	return 1
}

# _pf_cmd LOG ARGS... - postfix -c $PF_CONF ARGS on a pseudo-terminal
_pf_cmd() {
	local log=$1; shift
	echo "\$ postfix $*" >> "$log"
	timeout 60 script -qec "postfix -c '$PF_CONF' $*" /dev/null >> "$log" 2>&1
}

# _pf_alive PID - the process runs (a zombie does not: the master is a
# child of PID 1, which may take a second to reap it)
_pf_alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat:0:1}" != Z ]
}

# _pf_pid DIR - its master's pid, if it runs: the one seen at start (the
# pid file could be gone with a test folder removed under our feet)
_pf_pid() {
	local pid=${PF_MASTER[$1]:-}
	[ -n "$pid" ] || pid=$(tr -dc 0-9 < "$1/spool/pid/master.pid" 2>/dev/null)
	[ -n "$pid" ] && _pf_alive "$pid" &&
		grep -q master "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

postfix_stop() {
	local dir=${1:-${PF_DIR:-}} pid i
	pid=$(_pf_pid "$dir") || { _pf_forget "$dir"; return 0; }
	# What `postfix stop` does, without its one-second polling: SIGTERM to
	# master, which stops its children and exits.
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 1 200); do
		_pf_alive "$pid" || break
		sleep 0.05
	done
	if _pf_alive "$pid"; then
		echo "# postfix master $pid did not stop; killing its process group"
		kill -9 -- "-$pid" 2>/dev/null
	fi
	_pf_forget "$dir"
	return 0
}

_pf_forget() {
	unset "PF_MASTER[$1]"
	PF_INSTANCES=$(echo "$PF_INSTANCES" | tr ' ' '\n' | grep -vxF -- "$1" | tr '\n' ' ')
}

postfix_stop_all() {
	local d
	for d in ${PF_INSTANCES:-}; do postfix_stop "$d"; done
}

# postfix_queue_count - queue files, listed in the order mail moves
postfix_queue_count() {
	local q=$PF_QUEUE
	find "$q/maildrop" "$q/incoming" "$q/active" "$q/deferred" "$q/hold" \
		-type f 2>/dev/null | wc -l
}

# postfix_wait_queue SECS - empty twice in a row, 50 ms apart
postfix_wait_queue() {
	local secs=$1 i empty=0
	for i in $(seq 1 $((secs * 20))); do
		if [ "$(postfix_queue_count)" = 0 ]; then
			empty=$((empty + 1))
			[ "$empty" -ge 2 ] && return 0
		else
			empty=0
		fi
		sleep 0.05
	done
	echo "# queue of $PF_DIR not empty after ${secs}s:"
	postqueue -c "$PF_CONF" -p 2>&1 | head -20 | sed 's/^/# /'
	return 1
}

postfix_sendmail() {
	local from=$1; shift
	timeout 30 sendmail -C "$PF_CONF" -f "$from" "$@"
}

postfix_kick_pickup() {
	postkick -c "$PF_CONF" public pickup W
}

sink_files() {
	if [ -z "${1:-}" ]; then
		find "$PF_SINK" -type f 2>/dev/null | sort
	else
		find "$PF_SINK" -type f 2>/dev/null | sort | xargs -r grep -lE -- "$1"
	fi
}

sink_count() {
	sink_files "${1:-}" | wc -l
}

sink_wait() {
	local n=$1 secs=$2 re=${3:-} i
	for i in $(seq 1 $((secs * 20))); do
		[ "$(sink_count "$re")" -ge "$n" ] && return 0
		sleep 0.05
	done
	echo "# the sink has $(sink_count "$re") messages${re:+ matching $re}, not $n"
	return 1
}

msg_text() {
	local h
	for h in "$@"; do printf '%s\n' "$h"; done
	printf '\n%s\n' "$MSG_BODY"
}

# no_quota_headers FILE... - none of the files has an account or category header
# shellcheck disable=SC2317  # called through check
no_quota_headers() { ! grep -qiE '^X-Quota-(Account|Category):' "$@"; }

# smtp_msg PORT ACCOUNT CATEGORY SUBJECT RCPTS - one message from
# sender@acme.example to the space-separated RCPTS over SMTP; no account or
# category header when that argument is empty. Counts messages in NMSG.
NMSG=0
smtp_msg() {
	local port=$1 acct=$2 cat=$3 subj=$4 rcpts=$5 h
	NMSG=$((NMSG + 1))
	h=("From: Sender <sender@acme.example>" "To: ${rcpts// /, }" "Subject: $subj"
	   "Date: $(date -R)" "Message-ID: <t$NMSG.$$@client.qm-test.example>")
	[ -n "$acct" ] && h+=("X-Quota-Account: $acct")
	[ -n "$cat" ] && h+=("X-Quota-Category: $cat")
	smtp_send "$port" sender@acme.example "$rcpts" "${h[@]}"
}

# _smtp_now_us - the wall clock in microseconds, without a fork
_smtp_now_us() { _now=${EPOCHREALTIME//[!0-9]/}; }

# _smtp_read - one reply into _reply and its code into _code; how long it
# took (ms) into _ms, and the slowest so far into SMTP_MAX_MS
_smtp_read() {
	local line i _now t0 rc=1
	_reply='' _code=000
	_smtp_now_us; t0=$_now
	for i in $(seq 1 100); do
		if ! IFS= read -r -t "$SMTP_TIMEOUT" -u "$_fd" line; then
			echo "S: (connection closed or ${SMTP_TIMEOUT}s timeout)" >> "$SMTP_LOG"
			break
		fi
		line=${line%$'\r'}
		echo "S: $line" >> "$SMTP_LOG"
		_reply+=${_reply:+$'\n'}$line
		if [[ $line =~ ^[0-9]{3}-  ]]; then continue; fi
		[[ $line =~ ^[0-9]{3} ]] || break
		_code=${line:0:3}
		rc=0
		break
	done
	_smtp_now_us
	_ms=$(( (_now - t0) / 1000 ))
	[ "$_ms" -le "${SMTP_MAX_MS:-0}" ] || SMTP_MAX_MS=$_ms
	return $rc
}

# _smtp_cmd LINE - send one command line, read its reply
_smtp_cmd() {
	echo "C: $1" >> "$SMTP_LOG"
	printf '%s\r\n' "$1" 1>&"$_fd" 2>/dev/null || return 1
	_smtp_read
}

smtp_send() {
	local port=$1 from=$2 rcpts=$3 r accepted=0 rc=2 data line _fd _reply _code _ms _now
	local pipe_trap t0
	shift 3
	SMTP_GREETING='' SMTP_MAIL_REPLY='' SMTP_DATA_REPLY='' SMTP_REPLY=''
	SMTP_XCLIENT_REPLY=''
	SMTP_DATA_MS='' SMTP_MAX_MS=0
	SMTP_RCPT_REPLIES=()
	echo "--- $(date +%T.%N) smtp_send 127.0.0.1:$port" >> "$SMTP_LOG"
	# A peer that hangs up must fail the send, not kill the test.
	pipe_trap=$(trap -p PIPE)
	trap '' PIPE
	_smtp_now_us; t0=$_now
	if ! { exec {_fd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
		echo "S: (cannot connect)" >> "$SMTP_LOG"
		eval "${pipe_trap:-trap - PIPE}"
		return 2
	fi
	while :; do
		_smtp_read; SMTP_GREETING=$_reply
		# the greeting waits count from the connect
		_smtp_now_us; _ms=$(( (_now - t0) / 1000 ))
		[ "$_ms" -le "$SMTP_MAX_MS" ] || SMTP_MAX_MS=$_ms
		[ "$_code" = 220 ] || break
		_smtp_cmd "EHLO $SMTP_EHLO"; [ "$_code" = 250 ] || break
		if [ -n "${SMTP_XCLIENT:-}" ]; then
			# the server starts over: a new greeting, then EHLO again
			_smtp_cmd "XCLIENT $SMTP_XCLIENT"; SMTP_XCLIENT_REPLY=$_reply
			[ "$_code" = 220 ] || { rc=1; break; }
			_smtp_cmd "EHLO $SMTP_EHLO"; [ "$_code" = 250 ] || break
		fi
		_smtp_cmd "MAIL FROM:<$from>"; SMTP_MAIL_REPLY=$_reply
		[ "$_code" = 250 ] || { rc=1; break; }
		for r in $rcpts; do
			_smtp_cmd "RCPT TO:<$r>" || break 2
			SMTP_RCPT_REPLIES+=("$_reply")
			[ "${_code:0:1}" = 2 ] && accepted=$((accepted + 1))
		done
		[ "$accepted" -gt 0 ] || { rc=1; break; }
		_smtp_cmd DATA; [ "$_code" = 354 ] || { rc=1; break; }
		# CRLF line ends, dot-stuffing, then the end of data.
		data=
		while IFS= read -r line; do
			[ "${line:0:1}" = . ] && line=.$line
			data+=$line$'\r\n'
		done < <(msg_text "$@")
		printf '%s.\r\n' "$data" 1>&"$_fd" 2>/dev/null || break
		echo "C: (message, $(msg_text "$@" | wc -l) lines) ." >> "$SMTP_LOG"
		_smtp_read; SMTP_DATA_REPLY=$_reply SMTP_DATA_MS=$_ms
		case $_code in 2??) rc=0 ;; 000) rc=2 ;; *) rc=1 ;; esac
		break
	done
	SMTP_REPLY=$_reply
	[ "$_code" = 000 ] || _smtp_cmd QUIT >/dev/null
	exec {_fd}>&-
	eval "${pipe_trap:-trap - PIPE}"
	return $rc
}
