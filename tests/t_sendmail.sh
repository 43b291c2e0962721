#!/bin/bash
# t_sendmail.sh BUILD - end to end through a real Sendmail: the daemon
# attached with the INPUT_MAIL_FILTER line of README.md, a real
# redis-server, and mail relayed to smtp-sink, which keeps every delivered
# message in a file. Header accounts: every message is decided at end of
# data.
#
# sendmail-bin conflicts with postfix, so it is not installed: `apt-get
# download` fetches sendmail-bin, sendmail-cf and sendmail-base from the
# Debian archive once into BUILD/sendmail-debs (reused by later runs) and
# `dpkg-deb -x` unpacks them into the test's folder. Needs root, m4 and
# libwrap0 (tests/deps.sh), Postfix's smtp-sink, and the network to the
# archive on the first run. Sendmail runs in a mount namespace of its own
# with a private /etc/hosts naming the host with dots: without one it
# stalls about a minute at start trying to qualify its own name.
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh
. tests/postfix.sh	# smtp_send, msg_text and the sink_* helpers; no Postfix starts
build=${1:-build}
DEBS=${SENDMAIL_DEBS:-$build/sendmail-debs}
SM_PID=""

# descendants PID - the pids of its children, theirs, and so on
descendants() {
	local c
	for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done
}

# shellcheck disable=SC2317  # called by the EXIT trap
# sendmail_stop - stop the daemon (SM_PID is `timeout`, which passes SIGTERM
# on) and whatever children it still has
sendmail_stop() {
	local kids k
	[ -n "$SM_PID" ] || return 0
	kids=$(descendants "$SM_PID")
	kill -TERM "$SM_PID" 2>/dev/null
	for _ in $(seq 1 100); do kill -0 "$SM_PID" 2>/dev/null || break; sleep 0.05; done
	kill -9 "$SM_PID" 2>/dev/null
	# a child still there (its pid not reused meanwhile by something else)
	for k in $kids; do
		grep -qa sendmail "/proc/$k/cmdline" 2>/dev/null && kill -9 "$k" 2>/dev/null
	done
	wait "$SM_PID" 2>/dev/null
	SM_PID=""
	return 0
}
# postfix.sh's EXIT trap with sendmail_stop in place of postfix_stop_all
trap 'unset IFS; sendmail_stop; cleanup' EXIT

# fetch_debs - the three packages in $DEBS, downloaded if missing or broken
fetch_debs() {
	local p missing="" f
	mkdir -p "$DEBS" || return 1
	for p in sendmail-bin sendmail-cf sendmail-base; do
		f=$(find "$DEBS" -name "${p}_*.deb" | sort | tail -1)
		if [ -z "$f" ] || ! dpkg-deb -f "$f" Package >/dev/null 2>&1; then
			rm -f "$DEBS/${p}"_*.deb
			missing="$missing $p"
		fi
	done
	[ -n "$missing" ] || return 0
	# shellcheck disable=SC2086
	(cd "$DEBS" && timeout 120 apt-get download $missing) >"$T/apt.log" 2>&1 && return 0
	# apt may never have read the archive's lists on this machine
	timeout 300 apt-get update -qq >>"$T/apt.log" 2>&1
	# shellcheck disable=SC2086
	(cd "$DEBS" && timeout 120 apt-get download $missing) >>"$T/apt.log" 2>&1 ||
		{ grep -v '^W: Download is performed unsandboxed' "$T/apt.log" | tail -5 | sed 's/^/# /'; return 1; }
}

for tool in m4 unshare smtp-sink redis-server; do
	command -v "$tool" >/dev/null || { notok "$tool is installed (tests/deps.sh)"; finish; }
done
[ "$(id -u)" = 0 ] || { notok "t_sendmail.sh runs as root (sendmail, a mount namespace)"; finish; }
[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }
if ! fetch_debs; then notok "sendmail packages downloaded into $DEBS"; finish; fi
SM=$T/sendmail
ROOT=$SM/root
mkdir -p "$ROOT"
for f in "$DEBS"/sendmail-{bin,cf,base}_*.deb; do
	dpkg-deb -x "$f" "$ROOT" || { notok "unpack $f"; finish; }
done
if ! ldd "$ROOT/usr/libexec/sendmail/sendmail" >"$T/ldd.log" 2>&1 || grep -q 'not found' "$T/ldd.log"; then
	notok "sendmail's libraries are installed (libwrap0?)"; sed 's/^/# /' "$T/ldd.log"; finish
fi
ok "sendmail $(dpkg-deb -f "$(find "$DEBS" -name 'sendmail-bin_*.deb' | sort | tail -1)" Version) unpacked"

# send ACCOUNT CATEGORY SUBJECT RCPT - one message over SMTP to Sendmail
send() { smtp_msg "$SM_PORT" "$@"; }

# queue_id REPLY - the queue id in Sendmail's "250 2.0.0 ID Message accepted"
queue_id() { sed -nE 's/^250 2\.0\.0 ([A-Za-z0-9]+) Message accepted.*/\1/p' <<<"$1"; }

redis_start
accounts <<EOA
acme basic limit 3
nocat basic limit 1
dmnco basic limit 5
EOA

mport=$(free_port)
# Two categories that hold only for mail through a Sendmail daemon of that
# name ({daemon_name}, DAEMON_OPTIONS Name=MTA below).
write_conf "$T/qm.conf" "inet:$mport@127.0.0.1" \
'category viamta { header = "X-Quota-Category" match = "^mta$" daemon = "MTA" }
category viasub { header = "X-Quota-Category" match = "^sub$" daemon = "submission" }'

milter_up milter "$T/qm.conf" "inet:$mport@127.0.0.1" || finish

# The sink: smtp-sink writes each message to a file; sink_files & co. read
# $PF_SINK.
PF_SINK=$SM/sink
mkdir -p "$PF_SINK" && chown nobody "$PF_SINK"
sink_start "$SM/smtp-sink.log" || { notok "smtp-sink started"; finish; }

# The .mc: everything Sendmail writes or reads lives in $SM; the milter line
# is the one README.md shows, with the test's port.
SM_PORT=$(free_port)
mkdir -m 700 "$SM/queue"
: > "$SM/aliases"
: > "$SM/helpfile"
printf 'hosts\tfiles\naliases\tfiles\n' > "$SM/service.switch"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tmta.qm-test.example %s\n' "$(hostname)" > "$SM/hosts"
cat > "$SM/test.mc" <<EOF
divert(-1)
# A throwaway Sendmail made by tests/t_sendmail.sh; loopback only.
divert(0)dnl
OSTYPE(\`linux')dnl
define(\`QUEUE_DIR', \`$SM/queue')dnl
define(\`confPID_FILE', \`$SM/sendmail.pid')dnl
define(\`STATUS_FILE', \`$SM/statistics')dnl
define(\`HELP_FILE', \`$SM/helpfile')dnl
define(\`ALIAS_FILE', \`$SM/aliases')dnl
define(\`confSERVICE_SWITCH_FILE', \`$SM/service.switch')dnl
define(\`SMART_HOST', \`esmtp:[127.0.0.1]')dnl
define(\`ESMTP_MAILER_ARGS', \`TCP \$h $PF_SINK_PORT')dnl
FEATURE(\`no_default_msa')dnl
FEATURE(\`accept_unresolvable_domains')dnl
DAEMON_OPTIONS(\`Port=$SM_PORT, Addr=127.0.0.1, Name=MTA')dnl
INPUT_MAIL_FILTER(\`quota-milter', \`S=inet:$mport@127.0.0.1, F=T, T=C:10s;S:30s;R:30s;E:1m')dnl
MAILER(\`local')dnl
MAILER(\`smtp')dnl
EOF
if ! m4 -D_CF_DIR_="$ROOT/usr/share/sendmail/cf/" "$ROOT/usr/share/sendmail/cf/m4/cf.m4" \
	"$SM/test.mc" >"$SM/test.cf" 2>"$SM/m4.log"; then
	notok "sendmail.cf built from test.mc"; sed 's/^/# /' "$SM/m4.log"; finish
fi
check "sendmail.cf carries the milter line" grep -qxF \
	"Xquota-milter, S=inet:$mport@127.0.0.1, F=T, T=C:10s;S:30s;R:30s;E:1m" "$SM/test.cf"

# Sendmail in the foreground (-bD), in a mount namespace with the private
# /etc/hosts; `timeout` bounds its life should this script be killed.
# shellcheck disable=SC2016  # $1 and $@ are the inner shell's
timeout 900 unshare -m sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh \
	"$SM/hosts" "$ROOT/usr/libexec/sendmail/sendmail" -C "$SM/test.cf" -bD -q1h \
	>"$SM/sendmail.out" 2>&1 &
SM_PID=$!
start=$(date +%s%N)
if ! wait_for sendmail 20 bash -c "echo > /dev/tcp/127.0.0.1/$SM_PORT"; then
	notok "sendmail started"; sed 's/^/# /' "$SM/sendmail.out"; finish
fi
ok "sendmail started ($(( ($(date +%s%N) - start) / 1000000 )) ms)"

# 1. The plan fills up: 3 accepted and delivered, the 4th refused at end of DATA.
replies="" ids=()
for i in 1 2 3 4; do
	send acme crm "sm message $i" "s1-$i@dest.example"
	replies+="${SMTP_DATA_REPLY%% *} "
	ids+=("$(queue_id "$SMTP_DATA_REPLY")")
done
check_eq "first 3 accepted at end of DATA, 4th refused" "250 250 250 550 " "$replies"
check_eq "the refusal's reply" \
	"550 5.7.1 Monthly sending limit of 3 emails reached for account acme (plan basic)" \
	"$SMTP_DATA_REPLY"
check_eq "the 4th passed RCPT (decided at end of data)" 250 "$(cut -c1-3 <<<"${SMTP_RCPT_REPLIES[0]:-}")"
check_eq "usage total" 3 "$(usage acme total)"
check_eq "usage crm" 3 "$(usage acme crm)"
check "smtp-sink got the 3 accepted" sink_wait 3 20 '^X-Rcpt-Args: <s1-'
sleep 0.5	# anything more would come now
check_eq "the 4th was not delivered" 0 "$(sink_count '^X-Rcpt-Args: <s1-4@')"
mapfile -t files < <(sink_files '^X-Rcpt-Args: <s1-')
check_eq "3 delivered" 3 "${#files[@]}"
check "account and category headers stripped" no_quota_headers "${files[@]}"
check_eq "delivered messages keep their Subject" 3 \
	"$(cat /dev/null "${files[@]}" | grep -cE '^Subject: sm message [123]$')"
# Sendmail gives the queue id (macro i) from MAIL FROM on: the milter's
# decision lines carry the id Sendmail announced, not NOQUEUE.
for n in 1 2 3; do
	check "milter logged message $n with Sendmail's queue id ${ids[n - 1]:-?}" grep -qE \
		"${ids[n - 1]:-none}: account=acme plan=basic category=crm units=1 used=$n/3 decision=accept" "$T/milter.log"
done
check "milter logged the refusal with a queue id" grep -qE \
	'[A-Za-z0-9]{8,}: account=acme plan=basic category=crm units=1 used=3/3 decision=refuse reason=exhausted' "$T/milter.log"
check_eq "no decision logged as NOQUEUE" 0 "$(grep -c 'NOQUEUE: account=' "$T/milter.log")"

# 2. No category header: delivered and uncounted, its account header
# removed all the same (strip_headers; Sendmail honours the change).
send nocat "" "sm uncounted" "s2-1@dest.example"
check_eq "uncategorized mail accepted" 250 "${SMTP_DATA_REPLY%% *}"
check "and delivered" sink_wait 1 20 '^X-Rcpt-Args: <s2-1@'
mapfile -t files < <(sink_files '^X-Rcpt-Args: <s2-1@')
check "without its account header" bash -c "! grep -q '^X-Quota-Account:' ${files[*]} /dev/null"
check "its other headers in place" grep -qx 'Subject: sm uncounted' "${files[@]}" /dev/null
check_eq "no usage key for the account" 0 "$(rcli EXISTS "qm:usage:{nocat}:$month")"

# 3. Sendmail's {daemon_name} reaches the category matcher.
send dmnco mta "sm via MTA" "s3-1@dest.example"
check_eq "daemon = \"MTA\": accepted" 250 "${SMTP_DATA_REPLY%% *}"
send dmnco sub "sm via submission" "s3-2@dest.example"
check_eq "daemon = \"submission\": accepted" 250 "${SMTP_DATA_REPLY%% *}"
check_eq "only the daemon MTA category counted" "1 1 -" \
	"$(usage dmnco total) $(usage dmnco viamta) $(usage dmnco viasub | grep . || echo -)"
check "both delivered" sink_wait 2 20 '^X-Rcpt-Args: <s3-'

# 4. Milter down: F=T tempfails the mail; nothing delivered or counted.
check "milter stops cleanly (no sanitizer report)" milter_stop "$MILTER_PID" milter
send acme crm "sm milter down" "s4-1@dest.example"
check_eq "milter down: tempfailed at MAIL FROM (F=T)" "451 4.3.2 Please try again later" \
	"$SMTP_MAIL_REPLY"
sleep 0.5
check_eq "milter down: nothing delivered" 0 "$(sink_count '^X-Rcpt-Args: <s4-')"
check_eq "smtp-sink got nothing else" 6 "$(sink_count)"
check_eq "usage total unchanged" 3 "$(usage acme total)"

sendmail_stop
finish
