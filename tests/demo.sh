#!/bin/bash
# demo.sh BUILD - what `make demo` shows a new user: a local redis-server,
# a throwaway Postfix on loopback with quota-milter attached, three
# accounts on different plans, mail sent for each, every SMTP reply, then
# quota-milter-ctl's usage and top tables. Everything runs in a temporary
# folder on loopback ports and is stopped and removed at the end.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}

die() { echo "demo: $*" >&2; exit 1; }
ctl() { echo "\$ quota-milter-ctl $*"; "$build/quota-milter-ctl" -c "$T/qm.conf" "$@"; }

[ -x "$build/quota-milter" ] && [ -x "$build/quota-milter-ctl" ] || die "build first: make all"
redis_start || die "redis-server did not start"
mport=$(free_port)
write_conf "$T/qm.conf" "inet:$mport@127.0.0.1"
milter_start "$build" "$T/qm.conf" milter
wait_for milter 20 bash -c "echo > /dev/tcp/127.0.0.1/$mport" || die "quota-milter did not start"
postfix_start "$T/postfix" "$(free_port)" "$(postfix_milter_conf "inet:127.0.0.1:$mport")" >/dev/null ||
	die "postfix did not start"

echo "== Three accounts, set the way the billing system would"
ctl set-plan acme basic
ctl set-limit acme 5
ctl set-plan globex standard
echo "(initech has no plan in Redis: default_plan \"free\", which includes no mail)"
echo

# send ACCOUNT CATEGORY RCPTS - one message through Postfix; prints the reply
n=0
send() {
	n=$((n + 1))
	smtp_send "$PF_SMTP_PORT" "crm@$1.example" "$3" \
		"From: CRM <crm@$1.example>" "To: ${3// /, }" "Subject: demo message $n" \
		"Date: $(date -R)" "Message-ID: <demo$n.$$@$1.example>" \
		"X-Quota-Account: $1" "X-Quota-Category: $2"
	printf '%-8s %-10s %d rcpt  -> %s\n' "$1" "$2" "$(wc -w <<<"$3")" "$SMTP_DATA_REPLY"
}

echo "== Mail through Postfix (127.0.0.1:$PF_SMTP_PORT)"
for i in 1 2 3 4 5 6 7; do send acme crm "c$i@customer.example"; done
send globex marketing "a@customer.example b@customer.example"
send globex automation "c@customer.example d@customer.example e@customer.example"
send initech crm "x@customer.example"
echo
echo "== What Redis holds"
ctl usage acme
ctl usage globex
ctl usage initech
ctl top
sink_wait 7 10 >/dev/null
echo
hdrs=$(sink_files | xargs -r cat | grep -ciE '^X-Quota-(Account|Category):')
echo "== Delivered: $(sink_count) messages, with $hdrs X-Quota-* headers left in them"
postfix_stop
milter_stop "$MILTER_PID" milter || die "quota-milter did not stop cleanly"
