#!/bin/bash
# t_milter_hostile.sh BUILD - hostile input through the real daemon, also
# run against the ASan+UBSan build: three daemons (accounts from headers,
# from the sender's domain, from SMTP AUTH) under miltertest
# (tests/milter/hostile*.lua), garbage on the milter socket, and the header
# daemon behind a throwaway Postfix for what miltertest cannot send (a
# 64 KiB header, a client outside trusted_networks by XCLIENT, a client that
# drops mid-DATA). Afterwards every daemon is alive, answers a normal message,
# every count is exactly the accepted mail, no Redis key is made of a bad
# id, and each stops cleanly with no sanitizer report.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}
t0=$SECONDS

[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }

# plain_conf FILE PORT LINE... - a conf of its own: plans, then the LINEs
plain_conf() {
	local file=$1 port=$2
	shift 2
	small_conf "$file" "inet:$port@127.0.0.1" 'default_plan = "free"' 'plan free { monthly = 0 }' \
		'plan basic { monthly = 10000 }' 'plan enterprise { monthly = -1 }' "$@"
}

redis_start || { notok "redis-server started"; finish; }
long128=$(printf 'L%.0s' $(seq 1 128))
accounts <<EOA
ent-co enterprise
cap-co basic limit 5000
ok-co basic limit 100
gone-co enterprise
abort-co enterprise
$long128 enterprise
rcpt-co.example basic limit 100
drop.example enterprise
app-1 basic limit 100
victim basic limit 100
big-co enterprise
fold-co basic limit 100
pf-co basic limit 100
EOA
# h: the shipped conf (header accounts); s: sender-domain; a: sasl.
hport=$(free_port)
write_conf "$T/h.conf" "inet:$hport@127.0.0.1"
sport=$(free_port)
plain_conf "$T/s.conf" "$sport" 'account { source = "sender-domain" }' 'category all { sender = "." }'
aport=$(free_port)
plain_conf "$T/a.conf" "$aport" 'account { source = "sasl" }' \
	'category sub { daemon = "submission"  sender = "." }' 'category any { sender = "." }'
milter_up milter-h "$T/h.conf" "inet:$hport@127.0.0.1" || finish
ph=$MILTER_PID
milter_up milter-s "$T/s.conf" "inet:$sport@127.0.0.1" || finish
ps=$MILTER_PID
milter_up milter-a "$T/a.conf" "inet:$aport@127.0.0.1" || finish
pa=$MILTER_PID

# 1. Garbage on the milter socket, as from a broken or hostile MTA.
# raw PORT - connect, send stdin, read for a moment, close (in a subshell:
# a peer that hangs up kills the writer with SIGPIPE, not the test)
raw() {
	(
		exec {fd}<>"/dev/tcp/127.0.0.1/$1" || exit 1
		cat 1>&"$fd" 2>/dev/null
		timeout 0.15 cat <&"$fd" >/dev/null 2>&1
		exec {fd}>&-
	)
}
# neg - a real option negotiation packet: version 6, all actions, no steps
neg() { printf '\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x00\x00\x00'; }
for p in "$hport" "$sport" "$aport"; do
	raw "$p" </dev/null
	head -c 4096 /dev/urandom | raw "$p"
	printf '\xff\xff\xff\xffO' | raw "$p"
	printf '\x00\x00\x00\x00' | raw "$p"
	printf '\x7f\xff\xff\xffOabc' | raw "$p"
	printf '\x00\x00\x03\xe8Mshort' | raw "$p"
	# a real negotiation, then: commands with no NUL where one belongs;
	# a good connect, then a recipient without MAIL, end of headers, quit;
	# unknown commands, abort and end of message out of place; a macro
	# packet with an odd count of strings, MAIL, end of message
	{ neg; printf '\x00\x00\x00\x05Cabcd\x00\x00\x00\x04Mxyz\x00\x00\x00\x03Lab\x00\x00\x00\x01E'; } | raw "$p"
	{ neg; printf '\x00\x00\x00\x13Chost\x004\x00\x19127.0.0.1\x00\x00\x00\x00\x02Rx\x00\x00\x00\x01N\x00\x00\x00\x01Q'; } | raw "$p"
	{ neg; printf '\x00\x00\x00\x01Z\x00\x00\x00\x01A\x00\x00\x00\x01E\x00\x00\x00\x01T'; } | raw "$p"
	{ neg; printf '\x00\x00\x00\x09DMi\x00ab\x00j\x00\x00\x00\x00\x07M<a@b>\x00\x00\x00\x00\x01E'; } | raw "$p"
done
check "daemons alive after garbage on their sockets" kill -0 "$ph" "$ps" "$pa"

# 2. miltertest sessions: hostile input, then a normal message each.
mt "inet:$hport@127.0.0.1" hostile -D long128="$long128"
mt "inet:$sport@127.0.0.1" hostile_envelope -D part=sender
mt "inet:$aport@127.0.0.1" hostile_envelope -D part=sasl

# 3. Through Postfix, attached to the header daemon.
if ! postfix_start "$T/postfix" "$(free_port)" "$(postfix_milter_conf "inet:127.0.0.1:$hport")
smtpd_authorized_xclient_hosts = 127.0.0.0/8
mynetworks = 127.0.0.0/8 192.0.2.0/24"; then
	notok "postfix started"; finish
fi
# send ACCOUNT_HEADER_VALUE [HEADER...] - one message, one recipient
# pf_send HEADER... - one message, one recipient, these headers; counts
# what was accepted in NPF
nmsg=0 NPF=0
pf_send() {
	nmsg=$((nmsg + 1))
	smtp_send "$PF_SMTP_PORT" crm@app.example "h$nmsg@dest.example" \
		"From: <crm@app.example>" "Subject: hostile $nmsg" "$@" && NPF=$((NPF + 1))
}
# send ACCOUNT [HEADER...] - the same with the account and category crm
send() {
	local acct=$1
	shift
	pf_send "X-Quota-Account: $acct" "X-Quota-Category: crm" "$@"
}

SMTP_XCLIENT="ADDR=192.0.2.7 NAME=[UNAVAILABLE]" send victim
check_eq "XCLIENT accepted by Postfix" "220" "${SMTP_XCLIENT_REPLY:0:3}"
check_eq "account header from 192.0.2.7, unauthenticated: refused" \
	"550 5.7.1 Account header X-Quota-Account not accepted: client is outside trusted_networks and not authenticated" \
	"$SMTP_DATA_REPLY"
check "the milter saw 192.0.2.7" grep -q 'reason=client is outside trusted_networks' "$T/milter-h.log"

replies=''
for id in '{pf-co}' 'pf}:{co' 'pf co' 'pf%sco%n' '%%' "$(printf 'L%.0s' $(seq 1 129))" \
	$'caf\xc3\xa9' $'pf\x01co' $'pf\x7fco' '' 'pf-co, other-co' '<pf-co>' "qm:usage:{pf-co}:$month"; do
	send "$id"
	replies+="${SMTP_DATA_REPLY%% Invalid sending account:*}|"
done
check_eq "13 hostile ids through Postfix: each 550 5.7.1 Invalid sending account" \
	"$(printf '550 5.7.1|%.0s' $(seq 1 13))" "$replies"

send big-co "Subject-Long: $(head -c 65536 /dev/zero | tr '\0' s)"
check_eq "a 64 KiB header: accepted" 250 "${SMTP_DATA_REPLY:0:3}"
send "$(head -c 65536 /dev/zero | tr '\0' a)"
check_eq "a 64 KiB account header: refused" \
	"550 5.7.1 Invalid sending account: account or category headers too long or too many" "$SMTP_DATA_REPLY"
mapfile -t junk < <(for i in $(seq 1 5000); do echo "X-Junk-$i: junk $i"; done)
send big-co "${junk[@]}"
check_eq "5000 headers: accepted" 250 "${SMTP_DATA_REPLY:0:3}"
jid=$nmsg

# RFC 5322 folding: a header value may start on a continuation line.
send fold-co
pf_send "X-Quota-Account:" "	fold-co" "X-Quota-Category: crm"
check_eq "folded account header: accepted" 250 "${SMTP_DATA_REPLY:0:3}"
pf_send "X-Quota-Account: fold-co" "X-Quota-Category:" " crm"
check_eq "folded category header: accepted" 250 "${SMTP_DATA_REPLY:0:3}"
check_eq "folded headers: both counted (with the plain one: 3)" 3 "$(usage fold-co total)"

# drop PORT STAGE - a client that hangs up after RCPT, after DATA's 354, or
# in the middle of the message
drop() {
	local fd line want i
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
	IFS= read -r -t 5 -u "$fd" line
	printf 'EHLO client.qm-test.example\r\n' >&"$fd"
	for i in $(seq 1 20); do
		IFS= read -r -t 5 -u "$fd" line || break
		[[ $line =~ ^250\  ]] && break
	done
	# pipelined, as PIPELINING allows
	printf 'MAIL FROM:<crm@app.example>\r\nRCPT TO:<drop@dest.example>\r\n' >&"$fd"
	want='^250 2\.1\.5'
	if [ "$2" != rcpt ]; then printf 'DATA\r\n' >&"$fd"; want='^354'; fi
	for i in $(seq 1 20); do
		IFS= read -r -t 5 -u "$fd" line || break
		[[ $line =~ $want ]] && break
	done
	[ "$2" = body ] && printf '%s\r\n' "Subject: dropped" "X-Quota-Account: pf-co" \
		"X-Quota-Category: crm" "" "half a bo" >&"$fd"
	sleep 0.2
	exec {fd}>&-
}
for stage in rcpt data body; do (drop "$PF_SMTP_PORT" "$stage"); done
send pf-co
check_eq "Postfix: a normal message after all that: accepted" 250 "${SMTP_DATA_REPLY:0:3}"
postfix_wait_queue 30
check_eq "clients that hung up mid-transaction: not counted, the normal one is" 1 "$(usage pf-co total)"
jfile=$(sink_files "^Subject: hostile $jid\$")
check_eq "5000 headers: delivered with all 5000" 5000 "$(grep -c '^X-Junk-' "${jfile:-/dev/null}")"
check_eq "5000 headers: quota headers stripped" 0 "$(grep -ciE '^X-Quota-' "${jfile:-/dev/null}")"
check_eq "smtp-sink got the accepted messages only" "$NPF 0" \
	"$(sink_count) $(sink_count '^X-Rcpt-Args: <drop@')"
check_eq "no milter timeout or error in the maillog" "" \
	"$(grep -iE 'milter.*(time[ds]? ?out|timed out)|(warning|error|fatal|panic):.*milter' "$PF_LOG" | head -3)"
postfix_stop

# 4. Alive, exact, clean.
check "all three daemons still alive" kill -0 "$ph" "$ps" "$pa"
exp="ent-co 10001 cap-co - ok-co 1 gone-co 3 $long128 1 rcpt-co.example 100 drop.example 3"
exp+=" app-1 3 victim - big-co 2 pf-co 1"
got=''
# shellcheck disable=SC2086
set -- $exp
while [ $# -ge 2 ]; do got+="$1 $(usage "$1" total | sed 's/^$/-/') "; shift 2; done
check_eq "every account's total is exactly its accepted mail" "$exp" "${got% }"
check_eq "cap-co: 10 000 refused recorded, nothing else" "10000" "$(usage cap-co refused)"
bad=$(rcli --scan | grep -cvE '^qm:(account|usage|warned):\{[A-Za-z0-9._@+-]{1,128}\}(:[0-9]{4}-[0-9]{2})?$|^qm:charge:\{[A-Za-z0-9._@+-]{1,128}\}:[0-9a-f]{16}$|^qm:events$|^qm:host:\{[A-Za-z0-9._-]{1,255}\}$')
check_eq "every Redis key is a well-formed account, usage, warned, events or host key" 0 "$bad"
check_eq "and no key holds a line break" "$(rcli DBSIZE)" "$(rcli --scan | wc -l)"
kill -TERM "$ph" "$ps" "$pa" 2>/dev/null	# all at once, so that their stops overlap
check "milter-h stops cleanly (no sanitizer report)" milter_stop "$ph" milter-h
check "milter-s stops cleanly (no sanitizer report)" milter_stop "$ps" milter-s
check "milter-a stops cleanly (no sanitizer report)" milter_stop "$pa" milter-a
echo "# t_milter_hostile.sh took $((SECONDS - t0))s"
finish
