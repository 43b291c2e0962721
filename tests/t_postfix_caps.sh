#!/bin/bash
# t_postfix_caps.sh BUILD - hourly caps end to end: the real daemon (its
# clock held by libfaketime on a day of the future) attached to a
# throwaway Postfix on loopback, a real redis-server, mail relayed to
# smtp-sink. Sender-domain accounts: recipients beyond a cap get the
# cap's 451 at RCPT one by one, as an SMTP client sees it; the next hour
# takes mail again; the month still refuses for good first.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}

[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }
libft=$(find /usr/lib -name libfaketimeMT.so.1 2>/dev/null | head -n 1)
[ -n "$libft" ] || { notok "libfaketime is installed (make check installs it)"; finish; }

day=2027-03-10 fmonth=2027-03
echo "$day 13:59:50" > "$T/clock"

# send DOMAIN SUBJECT RCPTS - one message from crm@DOMAIN over SMTP
send() {
	local h=("From: CRM <crm@$1>" "To: ${3// /, }" "Subject: $2" "Date: $(date -R)"
		 "Message-ID: <$2.$$@client.qm-test.example>")
	smtp_send "$PF_SMTP_PORT" "crm@$1" "$3" "${h[@]}"
}

# rcpt_codes - the RCPT reply codes of the last send, space-separated
rcpt_codes() { local r out=''; for r in "${SMTP_RCPT_REPLIES[@]}"; do out+="${r:0:3} "; done; echo "${out% }"; }

# delivered SUBJECT - recipients of the message with that subject at the sink
delivered() {
	grep -l -F "Subject: $1" "$PF_SINK"/* 2>/dev/null | xargs -r cat | grep -c '^X-Rcpt-Args:'
}

cap_reply() { echo "451 4.7.1 Hourly sending limit of $1 emails reached for account $2, try again after $3"; }

redis_start
accounts <<EOA
capco.example capped
monthco.example capped limit 2
EOA
rcli HSET "qm:usage:{monthco.example}:$fmonth" total 1 >/dev/null

mport=$(free_port)
small_conf "$T/qm.conf" "inet:$mport@127.0.0.1" 'timezone = "UTC"' "journal = \"$T/journal\"" \
	'default_plan = ""' 'account { source = "sender-domain" }' 'category crm { sender = "^crm@" }' \
	'plan capped { monthly = 100  daily = 10  hourly = 3 }'
TZ=UTC FAKETIME_TIMESTAMP_FILE="$T/clock" FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \
	LD_PRELOAD="$libft" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:verify_asan_link_order=0 \
	milter_up milter "$T/qm.conf" "inet:$mport@127.0.0.1" || finish
if ! postfix_start "$T/postfix" "$(free_port)" "$(postfix_milter_conf "inet:127.0.0.1:$mport")"; then
	notok "postfix started"; finish
fi
ok "postfix with the milter started"

# 1. Four recipients, an hourly cap of 3: the fourth gets the cap's 451.
send capco.example caps1 "a@dest.example b@dest.example c@dest.example d@dest.example"
check_eq "1: RCPT replies" "250 250 250 451" "$(rcpt_codes)"
check_eq "1: the 4th recipient's reply names the cap and when it reopens" \
	"$(cap_reply 3 capco.example "14:00 UTC")" "${SMTP_RCPT_REPLIES[3]:-}"
check_eq "1: the message of 3 accepted" 250 "${SMTP_DATA_REPLY:0:3}"
postfix_wait_queue 20
check_eq "1: the sink got 3 recipients" 3 "$(delivered caps1)"
check_eq "1: the month counts 3" 3 "$(rcli HGET "qm:usage:{capco.example}:$fmonth" total)"
check_eq "1: the hour's hash counts 3" 3 "$(rcli HGET "qm:usage:{capco.example}:${day}T13" total)"
check_eq "1: nothing recorded as refused" "" "$(rcli HGET "qm:usage:{capco.example}:$fmonth" refused)"

# 2. The hour is full: the next message's only recipient gets the 451.
send capco.example caps2 "e@dest.example"
check_eq "2: the next message in the hour: 451 at RCPT" \
	"$(cap_reply 3 capco.example "14:00 UTC")" "${SMTP_RCPT_REPLIES[0]:-}"
check_eq "2: no DATA" "" "$SMTP_DATA_REPLY"

# 3. The next hour takes mail again.
echo "$day 14:00:05" > "$T/clock"
send capco.example caps3 "f@dest.example g@dest.example"
check_eq "3: at 14:00 both recipients accepted" "250 250" "$(rcpt_codes)"
check_eq "3: and the message" 250 "${SMTP_DATA_REPLY:0:3}"
check_eq "3: the new hour counts 2" 2 "$(rcli HGET "qm:usage:{capco.example}:${day}T14" total)"
check_eq "3: the day counts 5" 5 "$(rcli HGET "qm:usage:{capco.example}:$day" total)"

# 4. The month reached before the cap: 550, recorded as refused.
send monthco.example caps4 "h@dest.example i@dest.example"
check_eq "4: one fits the month, one refused for good" "250 550" "$(rcpt_codes)"
check_eq "4: the month's reply" \
	"550 5.7.1 Monthly sending limit of 2 emails reached for account monthco.example (plan capped)" \
	"${SMTP_RCPT_REPLIES[1]:-}"
check_eq "4: the refusal recorded" 1 "$(rcli HGET "qm:usage:{monthco.example}:$fmonth" refused)"

check_eq "no milter warning or error in the maillog" "" \
	"$(grep -E '(warning|error|fatal|panic):.*milter' "$PF_LOG" | head -3)"
postfix_stop_all
check "milter stops cleanly" milter_stop "$MILTER_PID" milter
finish
