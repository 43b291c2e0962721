#!/bin/bash
# t_postfix.sh BUILD - end to end: the real daemon attached to a throwaway
# Postfix on loopback (smtpd_milters and non_smtpd_milters), a real
# redis-server, and mail relayed to smtp-sink, which keeps every delivered
# message in a file. Header accounts: every message is decided at end of data.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}

[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }

# send ACCOUNT CATEGORY SUBJECT RCPTS - one message through Postfix's smtpd
send() { smtp_msg "$PF_SMTP_PORT" "$@"; }

# submit ACCOUNT SENDER RCPT SUBJECT - one message through sendmail(1)
submit() {
	NMSG=$((NMSG + 1))
	printf '%s\n' "From: $2" "To: $3" "Subject: $4" "Date: $(date -R)" \
		"Message-ID: <t$NMSG.$$@client.qm-test.example>" \
		"X-Quota-Account: $1" "X-Quota-Category: crm" "" "$MSG_BODY" |
		postfix_sendmail "$2" "$3"
}

# log_has TEXT1 TEXT2 - a maillog line holds both
# shellcheck disable=SC2317  # called through check
log_has() { grep -F -- "$1" "$PF_LOG" | grep -qF -- "$2"; }

limit_reply() { echo "550 5.7.1 Monthly sending limit of $1 emails reached for account $2 (plan $3)"; }

redis_start
accounts <<EOA
acme basic limit 3
duo basic limit 5
nocat basic limit 1
pickupco basic limit 2
EOA

mport=$(free_port)
write_conf "$T/qm.conf" "inet:$mport@127.0.0.1" ""
milter_up milter "$T/qm.conf" "inet:$mport@127.0.0.1" || finish
if ! postfix_start "$T/postfix" "$(free_port)" "$(postfix_milter_conf "inet:127.0.0.1:$mport")"; then
	notok "postfix started"; finish
fi
ok "postfix with the milter started"

# 1. The plan fills up: 3 accepted, the 4th refused at end of DATA.
replies=""
for i in 1 2 3 4; do
	send acme crm "case1 message $i" "c1-$i@dest.example"
	replies+="${SMTP_DATA_REPLY%% *} "
done
check_eq "1: first 3 accepted at end of DATA, 4th refused" "250 250 250 550 " "$replies"
check_eq "1: the refusal's reply" "$(limit_reply 3 acme basic)" "$SMTP_DATA_REPLY"
check_eq "1: 4th refused at end of DATA, not before" "250 2.1.5 Ok" "${SMTP_RCPT_REPLIES[0]:-}"
postfix_wait_queue 20
check_eq "1: usage total" 3 "$(usage acme total)"
check_eq "1: usage messages" 3 "$(usage acme messages)"
check_eq "1: usage crm" 3 "$(usage acme crm)"
check_eq "1: smtp-sink got 3 messages" 3 "$(sink_count)"
check_eq "1: the 4th was not delivered" 0 "$(sink_count '^X-Rcpt-Args: <c1-4@')"
mapfile -t files < <(sink_files '^X-Rcpt-Args: <c1-')
check "1: account and category headers stripped" no_quota_headers "${files[@]}"
check_eq "1: delivered messages keep their Subject" 3 \
	"$(grep -lE '^Subject: case1 message [123]$' "${files[@]}" | wc -l)"
check "1: maillog shows the milter-reject at END-OF-MESSAGE" grep -qF \
	"milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: $(limit_reply 3 acme basic | cut -d' ' -f2-)" "$PF_LOG"

# 2. Two recipients with one left: refused whole at end of DATA, not counted.
replies=""
for i in 1 2 3; do
	send duo crm "case2 message $i" "c2-$i-a@dest.example c2-$i-b@dest.example"
	replies+="${SMTP_DATA_REPLY%% *} "
done
check_eq "2: 2+2 accepted, then 2 with 1 left refused" "250 250 550 " "$replies"
check_eq "2: the refusal's reply" "$(limit_reply 5 duo basic)" "$SMTP_DATA_REPLY"
check_eq "2: both recipients passed RCPT (decided at end of data)" \
	"250 2.1.5 Ok|250 2.1.5 Ok" "${SMTP_RCPT_REPLIES[0]:-}|${SMTP_RCPT_REPLIES[1]:-}"
postfix_wait_queue 20
check_eq "2: usage total" 4 "$(usage duo total)"
check_eq "2: usage messages" 2 "$(usage duo messages)"
check_eq "2: usage crm" 4 "$(usage duo crm)"
mapfile -t files < <(sink_files '^Subject: case2 ')
check_eq "2: delivered to 4 recipients" 4 "$(cat /dev/null "${files[@]}" | grep -c '^X-Rcpt-Args: <c2-')"
check_eq "2: nothing of the refused message delivered" 0 "$(sink_count '^X-Rcpt-Args: <c2-3-')"

# 3. No category header, or one naming no category: delivered, uncounted
# (the limit of 1 does not apply either), and the internal headers removed
# all the same (strip_headers): no recipient learns the tenant's id.
replies=""
for i in 1 2; do
	send nocat "" "case3 message $i" "c3-$i@dest.example"
	replies+="${SMTP_DATA_REPLY%% *} "
done
send nocat bogus "case3 message 3" "c3-3@dest.example"
replies+="${SMTP_DATA_REPLY%% *} "
check_eq "3: uncategorized mail accepted" "250 250 250 " "$replies"
postfix_wait_queue 20
mapfile -t files < <(sink_files '^X-Rcpt-Args: <c3-')
check_eq "3: delivered" 3 "${#files[@]}"
check "3: the account and category headers removed, counted or not" no_quota_headers "${files[@]}"
check_eq "3: Subject left in place" 3 "$(grep -lE '^Subject: case3 message [123]$' "${files[@]}" | wc -l)"
check_eq "3: no usage key for the account" 0 "$(rcli EXISTS "qm:usage:{nocat}:$month")"

# 4. The non-SMTP path: sendmail(1) -> maildrop -> pickup -> cleanup, which
# runs non_smtpd_milters. The milter sees a made-up client: hostname
# "localhost", 127.0.0.1, port 0, HELO "localhost", and MAIL/RCPT arguments
# without <>. What the submitter sees of a refusal: sendmail exits 0 (postdrop
# only queued the file); cleanup logs "milter-reject: END-OF-MESSAGE from
# localhost[127.0.0.1]: 5.7.1 <text>; from=<..> to=<..>" and "status=bounced
# (<text>)", and the sender gets a non-delivery notification from
# MAILER-DAEMON ("Undelivered Mail Returned to Sender", Status: 5.7.1,
# Diagnostic-Code: X-Postfix; <text>) with the refused message's headers.
# (A 451 tempfail there instead leaves the file in maildrop, for pickup's
# next scan.)
#
# 4a. By default a local submission may not name an account: any local user
# can run sendmail(1) (the milter cannot tell root from nobody: cleanup
# presents them alike), so its X-Quota-Account is refused as untrusted and
# nobody is charged. Then trust_local_submissions = true (a reload) for 4.
submit victim sender4a@acme.example c4a@dest.example "case4a"
postfix_wait_queue 20
check "4a: a local submission naming an account is refused (untrusted)" grep -qF \
	"milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Account header X-Quota-Account not accepted: local submission, trust_local_submissions is off" "$PF_LOG"
check_eq "4a: the named account is not charged" 0 "$(rcli EXISTS "qm:usage:{victim}:$month")"
check_eq "4a: nothing delivered" 0 "$(sink_count '^X-Rcpt-Args: <c4a@')"
sed -i 's|^[[:space:]]*trust_local_submissions .*|	trust_local_submissions = true|' "$T/qm.conf"
reloaded=$(grep -c 'reloaded' "$T/milter.log")
kill -USR1 "$MILTER_PID"
check "4: trust_local_submissions = true, reloaded" wait_for reload 10 \
	bash -c "[ \$(grep -c reloaded '$T/milter.log') -gt $reloaded ]"

rcs=""
for i in 1 2 3; do
	submit pickupco sender4@acme.example "c4-$i@dest.example" "case4 message $i"
	rcs+="$? "
	postfix_wait_queue 20   # one at a time: the 3rd is the one over quota
done
check_eq "4: sendmail exits 0 each time, even when refused" "0 0 0 " "$rcs"
check_eq "4: usage total" 2 "$(usage pickupco total)"
check_eq "4: usage messages" 2 "$(usage pickupco messages)"
check_eq "4: usage crm" 2 "$(usage pickupco crm)"
mapfile -t files < <(sink_files '^X-Rcpt-Args: <c4-')
check_eq "4: first 2 delivered, the 3rd not" \
	"1 1 0" "$(for i in 1 2 3; do sink_count "^X-Rcpt-Args: <c4-$i@"; done | xargs)"
check "4: account and category headers stripped" no_quota_headers "${files[@]}"
check "4: maillog shows the milter-reject at END-OF-MESSAGE" grep -qF \
	"milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: $(limit_reply 2 pickupco basic | cut -d' ' -f2-); from=<sender4@acme.example> to=<c4-3@dest.example>" "$PF_LOG"
check "4: maillog shows it bounced" log_has "to=<c4-3@dest.example>, relay=none" "status=bounced"
mapfile -t bounces < <(sink_files '^X-Rcpt-Args: <sender4@acme.example>')
check_eq "4: the sender got one bounce" 1 "${#bounces[@]}"
bounce=${bounces[0]:-/dev/null}
# (the bounce folds long lines)
check "4: the sender got a bounce with the reason" grep -qF \
	"Diagnostic-Code: X-Postfix; $(limit_reply 2 pickupco basic | cut -d' ' -f3-)" \
	<(tr -s '\n\t ' '   ' < "$bounce")
check "4: the bounce is from MAILER-DAEMON" grep -qx 'X-Mail-Args: <> BODY=8BITMIME' "$bounce"
check_eq "no RCPT-stage refusal anywhere (header accounts)" 0 "$(grep -c 'milter-reject: RCPT' "$PF_LOG")"

# 5. Redis down: 451 4.3.0, nothing counted or delivered; the same over
# sendmail(1) leaves the message in maildrop. Redis back on the same port:
# the SMTP retry is accepted and counted (retried a few times: the milter may
# wait out a reconnect backoff), and so is the maildrop message once pickup
# scans again.
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null
send acme5 crm "case5 message 1" "c5-1@dest.example"
check_eq "5: Redis down: tempfail at end of DATA" \
	"451 4.3.0 Quota service temporarily unavailable" "$SMTP_REPLY"
submit acme5 sender5@acme.example c5-3@dest.example "case5 message 3"
check "5: Redis down: sendmail(1) mail tempfailed" wait_for "milter tempfail" 20 \
	grep -qF "4.3.0 Quota service temporarily unavailable; from=<sender5@acme.example>" "$PF_LOG"
check_eq "5: Redis down: it waits in maildrop" 1 \
	"$(find "$PF_QUEUE/maildrop" -type f | wc -l)"
redis_start "$REDIS_PORT"
rcli HSET 'qm:account:{acme5}' plan basic limit 5 >/dev/null
for i in $(seq 1 20); do
	send acme5 crm "case5 message 2" "c5-2@dest.example" && break
	echo "# Redis back, attempt $i: $SMTP_REPLY"
	sleep 0.25
done
check_eq "5: Redis back: accepted" 250 "${SMTP_DATA_REPLY%% *}"
postfix_kick_pickup
postfix_wait_queue 20
check_eq "5: counted once each" 2 "$(usage acme5 total)"
check_eq "5: only the accepted ones delivered" "0 1 1" \
	"$(for i in 1 2 3; do sink_count "^X-Rcpt-Args: <c5-$i@"; done | xargs)"

check_eq "smtp-sink got nothing else" 14 "$(sink_count)"
check "milter logged decisions with the queue id" \
	grep -qE '[0-9A-F]{6,}: account=acme plan=basic category=crm units=1 used=3/3 decision=accept' "$T/milter.log"
postfix_stop
check "milter stops cleanly (no sanitizer report)" milter_stop "$MILTER_PID" milter

finish
