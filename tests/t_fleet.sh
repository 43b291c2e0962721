#!/bin/bash
# t_fleet.sh BUILD - a fleet of two MTA hosts sharing one Redis: two
# throwaway Postfix instances, each with its own quota-milter daemon (its own
# conf, default pool_size), one redis-server. Parallel SMTP clients, split
# across both hosts, race one account near its limit; the account must end
# exactly at its limit, Redis must hold exactly what the SMTP replies
# accepted, and each warn_percent threshold must yield exactly one event.
#
#   phase  accounts        unit        messages
#   A      header          recipients  1 recipient
#   B      header          recipients  1-3 recipients, then 1-recipient fillers
#   C      header          messages    1-3 recipients
#   D      sender-domain   recipients  1 recipient (refused at RCPT)
#   E      sender-domain   recipients  1-4 recipients (refused one by one at RCPT),
#                                      then 1-recipient fillers
#   F      sender-domain   messages    1-3 recipients
#   G      sender-domain   recipients  1-4 recipients against an hourly cap
#                                      (451 at RCPT), then 1-recipient fillers
#
# Why the limit is reached exactly, however the race goes: a message is
# refused (at RCPT or end of data, 5xx or the 451 race reply) only when the
# quota left is smaller than its size, so once any message of a round has
# been refused at most (largest size - 1) units are left; more is offered
# than the limit, so some message is refused; a round of 1-recipient
# fillers then takes what is left, one unit at a time.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}
LIMIT=50
CAP=30			# phase G's hourly cap
LOOPS=8			# client loops per round, alternating between the hosts
LOOP_SECS=60		# a round that takes longer is killed and fails
SMTP_TIMEOUT=20
t0=$SECONDS

[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }

# fleet_conf FILE SOCKET UNIT SOURCE - the shipped conf with a test's socket
# and Redis, unit recipients|messages, accounts from header|sender-domain,
# and plan capped (hourly CAP).
# timeout_ms 2000: this test is about races, not latency; on a loaded
# 2-core machine a Redis reply can take over the shipped 250 ms, and a
# charge that times out after Redis applied it is tempfailed yet counted.
fleet_conf() {
	write_conf "$1" "$2" "plan capped { monthly = 1000  daily = 500  hourly = $CAP }" \
		"s|^unit .*|unit = \"$3\"|" "s|timeout_ms *= *[0-9]*|timeout_ms = 2000|"
	[ "$4" = sender-domain ] || return 0
	# the shipped account section and categories out, these in
	sed -i -e '/^account[ \t]*{/,/^}/d' -e '/^category /d' "$1"
	printf '%s\n' 'account { source = "sender-domain" }' 'category all { sender = "." }' >> "$1"
}

# events ACCOUNT - "TYPE/PERCENT" of each qm:events entry of the account this
# month, sorted, on one line
events() {
	# shellcheck disable=SC2016
	rcli EVAL 'local r = {}
		for _, e in ipairs(redis.call("XRANGE", KEYS[1], "-", "+")) do
			local t = {}
			for i = 1, #e[2], 2 do t[e[2][i]] = e[2][i + 1] end
			if t.account == ARGV[1] and t.month == ARGV[2] then
				r[#r + 1] = t.type .. "/" .. (t.percent or "")
			end
		end
		return r' 1 qm:events "$1" "$month" | sort | xargs
}

# pids_forget PID... - take processes that are gone out of lib.sh's $PIDS:
# its cleanup signals every pid there, and pids are soon reused
pids_forget() {
	local p out=''
	for p in $PIDS; do
		case " $* " in *" $p "*) ;; *) out+=" $p" ;; esac
	done
	PIDS=$out
}

# milters_up TAG UNIT SOURCE - (re)start both daemons on their ports with a
# conf of that kind; logs $T/TAG-1.log and $T/TAG-2.log
MILTER1_PID='' MILTER2_PID='' MTAG=''
milters_up() {
	local tag=$1 n port
	for n in 1 2; do
		port=$([ $n = 1 ] && echo "$MPORT1" || echo "$MPORT2")
		fleet_conf "$T/$tag-$n.conf" "inet:$port@127.0.0.1" "$2" "$3"
		milter_up "$tag-$n" "$T/$tag-$n.conf" "inet:$port@127.0.0.1" || finish
		eval "MILTER${n}_PID=\$MILTER_PID"
	done
	MTAG=$tag
}

# milters_down - stop both daemons, each must stop cleanly
milters_down() {
	# both at once, so that their stops overlap
	kill -TERM "$MILTER1_PID" "$MILTER2_PID" 2>/dev/null
	check "milter $MTAG-1 stops cleanly" milter_stop "$MILTER1_PID" "$MTAG-1"
	check "milter $MTAG-2 stops cleanly" milter_stop "$MILTER2_PID" "$MTAG-2"
	kill -0 "$MILTER1_PID" 2>/dev/null || pids_forget "$MILTER1_PID"
	kill -0 "$MILTER2_PID" 2>/dev/null || pids_forget "$MILTER2_PID"
}

# client_loop OUT PORT N KIND ACCOUNT TAG SIZE... - N messages over SMTP,
# their recipient counts cycling through the SIZEs; one line per message
# to OUT: exit status of smtp_send, the RCPT reply codes (comma-joined),
# the end-of-data reply ("-" when DATA was never sent). Each non-2xx RCPT
# reply also goes to OUT.rcpt. KIND: header (the account in
# X-Quota-Account) or sender-domain (ACCOUNT is the sender's domain).
client_loop() {
	local out=$1 port=$2 n=$3 kind=$4 acct=$5 tag=$6 i k size rcpts rc codes r from
	local -a sizes h
	shift 6
	sizes=("$@")
	SMTP_LOG=$out.smtp
	for ((i = 0; i < n; i++)); do
		size=${sizes[i % ${#sizes[@]}]}
		rcpts=''
		for ((k = 1; k <= size; k++)); do rcpts+="$tag-$i-$k@$PHASE.dest.example "; done
		rcpts=${rcpts% }
		h=("From: News <news@app.example>" "To: ${rcpts// /, }"
		   "Subject: fleet $PHASE $tag message $i" "Date: $(date -R)"
		   "Message-ID: <$PHASE.$tag.$i.$$@client.qm-test.example>")
		if [ "$kind" = header ]; then
			from=news@app.example
			h+=("X-Quota-Account: $acct" "X-Quota-Category: crm")
		else
			from=news@$acct
		fi
		smtp_send "$port" "$from" "$rcpts" "${h[@]}"
		rc=$?
		codes=''
		for r in "${SMTP_RCPT_REPLIES[@]}"; do
			codes+=${codes:+,}${r:0:3}
			[ "${r:0:1}" = 2 ] || printf '%s\n' "${r%%$'\n'*}" >> "$out.rcpt"
		done
		printf '%s\t%s\t%s\n' "$rc" "${codes:--}" "${SMTP_DATA_REPLY%%$'\n'*}" >> "$out"
	done
}

# round NAME N KIND ACCOUNT SIZE... - LOOPS client loops in parallel, each
# sending N messages, loop i through host (i % 2) + 1; at most LOOP_SECS
round() {
	local name=$1 n=$2 kind=$3 acct=$4 i port pids='' p deadline=$((SECONDS + LOOP_SECS)) alive
	shift 4
	mkdir -p "$T/$PHASE"
	for ((i = 0; i < LOOPS; i++)); do
		port=$([ $((i % 2)) = 0 ] && echo "$SMTP1" || echo "$SMTP2")
		client_loop "$T/$PHASE/$name.$i" "$port" "$n" "$kind" "$acct" "$name$i" "$@" &
		pids+=" $!"
	done
	PIDS="$PIDS $pids"
	while :; do
		alive=0
		for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ "$alive" = 0 ] && break
		if [ "$SECONDS" -ge "$deadline" ]; then
			notok "$PHASE: round $name finished within ${LOOP_SECS}s (killed)"
			# shellcheck disable=SC2086
			kill $pids 2>/dev/null
			break
		fi
		sleep 0.1
	done
	# shellcheck disable=SC2086
	wait $pids 2>/dev/null
	# gone: lib.sh's cleanup must not signal their pids once reused
	# shellcheck disable=SC2086
	pids_forget $pids
}

# tally - the outcomes of every message of the phase, from the SMTP replies:
# sets SENT, FAILED (no complete SMTP dialogue), ACC_MSGS, ACC_RCPTS (RCPT
# 250s of messages accepted at end of data), RCPT_5XX, RCPT_4XX, EOM_5XX_MSGS,
# EOM_5XX_RCPTS, EOM_451, ALLREF_MSGS (every RCPT refused), and REPLIES
# (each distinct non-2xx reply text, one a line)
tally() {
	local f
	f=$(find "$T/$PHASE" -type f ! -name '*.smtp' ! -name '*.rcpt' | sort)
	# shellcheck disable=SC2086
	read -r SENT FAILED ACC_MSGS ACC_RCPTS RCPT_5XX RCPT_4XX EOM_5XX_MSGS EOM_5XX_RCPTS \
		EOM_451 ALLREF_MSGS < <(cat $f /dev/null | awk -F'\t' '
		{
			sent++
			if ($1 == 2) failed++
			n = split($2, c, ",")
			ok = 0
			for (i = 1; i <= n; i++) {
				if (c[i] ~ /^2/) ok++
				else if (c[i] ~ /^5/) r5++
				else if (c[i] ~ /^4/) r4++
			}
			if (ok == 0) allref++
			d = substr($3, 1, 3)
			if (d == "250") { msgs++; rcpts += ok }
			else if (d ~ /^5/) { e5++; e5r += ok }
			else if (d == "451") e451++
		}
		END { print sent + 0, failed + 0, msgs + 0, rcpts + 0, r5 + 0, r4 + 0,
			e5 + 0, e5r + 0, e451 + 0, allref + 0 }')
	# shellcheck disable=SC2086
	REPLIES=$({ cut -f3 $f /dev/null; cat "$T/$PHASE"/*.rcpt 2>/dev/null; } |
		grep -v -e '^2' -e '^$' | sort -u)
}

# wait_queues - both instances' queues empty
wait_queues() {
	local d
	for d in "$PF1" "$PF2"; do
		PF_DIR=$d PF_QUEUE=$d/spool PF_CONF=$d/etc postfix_wait_queue 30 || return 1
	done
}

# delivered_rcpts - recipients of this phase that reached either smtp-sink
delivered_rcpts() {
	find "$PF1/sink" "$PF2/sink" -type f -print0 2>/dev/null | xargs -0r cat |
		grep -c "^X-Rcpt-Args: <[^>]*@$PHASE\.dest\.example>"
}

# accepts_logged N - decision=accept lines of the account in daemon N's log
accepts_logged() {
	grep -c "account=$ACCOUNT .*decision=accept" "$T/$MTAG-$1.log"
}

# verify UNIT KIND - every check of a phase, after its rounds
verify() {
	local unit=$1 kind=$2 units exp_refused race a1 a2 t
	tally
	t=$((SECONDS - PHASE_T0))
	echo "# $PHASE ($kind, unit $unit): ${t}s, $SENT messages sent, $ACC_MSGS accepted" \
		"($ACC_RCPTS recipients); RCPT 5xx $RCPT_5XX, end-of-data 5xx $EOM_5XX_MSGS," \
		"451 race $EOM_451"
	check_eq "$PHASE: every SMTP dialogue completed" 0 "$FAILED"
	if [ "$unit" = recipients ]; then units=$ACC_RCPTS; else units=$ACC_MSGS; fi
	check_eq "$PHASE: units accepted per the SMTP replies == limit" "$LIMIT" "$units"
	check_eq "$PHASE: Redis total == accepted" "$units" "$(usage "$ACCOUNT" total)"
	check_eq "$PHASE: Redis messages == messages accepted" "$ACC_MSGS" "$(usage "$ACCOUNT" messages)"
	if [ "$kind" = header ]; then
		check_eq "$PHASE: Redis crm == accepted" "$units" "$(usage "$ACCOUNT" crm)"
	else
		check_eq "$PHASE: Redis all == accepted" "$units" "$(usage "$ACCOUNT" all)"
	fi
	# What a 5xx refused is recorded; a 451 is not (the retry will be).
	if [ "$unit" = recipients ]; then
		exp_refused=$((RCPT_5XX + EOM_5XX_RCPTS))
	elif [ "$kind" = header ]; then
		exp_refused=$EOM_5XX_MSGS
	else
		exp_refused=$ALLREF_MSGS
	fi
	check_eq "$PHASE: Redis refused == units refused with 5xx" "$exp_refused" \
		"$(usage "$ACCOUNT" refused)"
	check_eq "$PHASE: no temporary refusal at RCPT" 0 "$RCPT_4XX"
	race="451 4.7.1 Monthly sending limit of $LIMIT emails reached for account $ACCOUNT meanwhile, try again later"
	if [ "$kind" = header ]; then
		check_eq "$PHASE: header accounts: no refusal at RCPT" 0 "$RCPT_5XX"
		check_eq "$PHASE: header accounts: no 451 race reply" 0 "$EOM_451"
	else
		check_eq "$PHASE: sender-domain: no 5xx at end of data (refused at RCPT)" 0 "$EOM_5XX_MSGS"
	fi
	check_eq "$PHASE: the only refusals are the quota's" "" \
		"$(grep -vxF -e "$race" -e "550 5.7.1 Monthly sending limit of $LIMIT emails reached for account $ACCOUNT (plan basic)" <<<"$REPLIES")"
	check_eq "$PHASE: one event per threshold, one exhausted" \
		"exhausted/ threshold/100 threshold/80" "$(events "$ACCOUNT")"
	a1=$(accepts_logged 1) a2=$(accepts_logged 2)
	check_eq "$PHASE: daemons logged one accept per accepted message" "$ACC_MSGS" "$((a1 + a2))"
	check "$PHASE: both hosts took part ($a1 + $a2 accepted)" test "$a1" -gt 0 -a "$a2" -gt 0
	if wait_queues; then
		check_eq "$PHASE: smtp-sinks got exactly the accepted recipients" "$ACC_RCPTS" "$(delivered_rcpts)"
	else
		notok "$PHASE: queues drained"
	fi
}

# phase NAME ACCOUNT - start a phase: a fresh account on plan basic, limit LIMIT
phase() {
	PHASE=$1 ACCOUNT=$2 PHASE_T0=$SECONDS
	rcli HSET "qm:account:{$ACCOUNT}" plan basic limit "$LIMIT" >/dev/null
}

redis_start || { notok "redis-server started"; finish; }
MPORT1=$(free_port)
MPORT2=$(free_port)
while [ "$MPORT2" = "$MPORT1" ]; do MPORT2=$(free_port); done
milters_up hdr-rcpt recipients header
SMTP1=$(free_port)
postfix_start "$T/pf1" "$SMTP1" "$(postfix_milter_conf "inet:127.0.0.1:$MPORT1")" ||
	{ notok "postfix 1 started"; finish; }
PF1=$PF_DIR
SMTP2=$(free_port)
while [ "$SMTP2" = "$SMTP1" ]; do SMTP2=$(free_port); done
postfix_start "$T/pf2" "$SMTP2" "$(postfix_milter_conf "inet:127.0.0.1:$MPORT2")" ||
	{ notok "postfix 2 started"; finish; }
PF2=$PF_DIR
ok "two Postfix hosts, each with its own quota-milter, one Redis"

# FLEET_PHASES=g runs phase G alone (phases A-F are this test's bulk).
if [ "${FLEET_PHASES:-all}" = all ]; then
# A. Header accounts, 1-recipient messages: 8 loops x 15 = 120 for 50.
phase a fleet-a
round r1 15 header "$ACCOUNT" 1
verify recipients header
check_eq "a: the other 70 refused at end of data" 70 "$EOM_5XX_MSGS"

# B. Header accounts, 1 to 3 recipients: each message fits whole or is
# refused whole at end of data; then fillers.
phase b fleet-b
round r1 6 header "$ACCOUNT" 3 2 3 1 2 3
round r2 2 header "$ACCOUNT" 1
verify recipients header

# C. Header accounts, unit = messages (daemons restarted with that conf).
milters_down
milters_up hdr-msg messages header
phase c fleet-c
round r1 15 header "$ACCOUNT" 1 3 2
verify messages header
check "c: multi-recipient messages were accepted (a message is one unit)" \
	test "$ACC_RCPTS" -gt "$ACC_MSGS"

# D. Sender-domain accounts, 1-recipient messages: refused at RCPT; one
# accepted at RCPT may still meet the 451 race reply at end of data.
milters_down
milters_up sd-rcpt recipients sender-domain
phase d fleet-d.example
round r1 15 sender-domain "$ACCOUNT" 1
verify recipients sender-domain
check "d: refusals happened at RCPT" test "$RCPT_5XX" -gt 0

# E. Sender-domain accounts, 1 to 4 recipients: recipients beyond the quota
# refused one by one at RCPT; then fillers.
phase e fleet-e.example
round r1 6 sender-domain "$ACCOUNT" 4 3 2 4 3 1
round r2 3 sender-domain "$ACCOUNT" 1
verify recipients sender-domain

# F. Sender-domain accounts, unit = messages.
milters_down
milters_up sd-msg messages sender-domain
phase f fleet-f.example
round r1 15 sender-domain "$ACCOUNT" 2 1 3
verify messages sender-domain
check "f: multi-recipient messages were accepted (a message is one unit)" \
	test "$ACC_RCPTS" -gt "$ACC_MSGS"

# Every key is one of the contract's.
check_eq "every Redis key is an account, usage, warned, events or host key" "" \
	"$(rcli --scan | grep -vxE "qm:(account|usage|warned):\{fleet-[a-f](\.example)?\}(:$month)?|qm:charge:\{fleet-[a-f](\.example)?\}:[0-9a-f]{16}|qm:events|qm:host:\{[A-Za-z0-9._-]{1,255}\}")"
fi
milters_down

# G. An hourly cap instead of the month: sender-domain accounts, 1 to 4
# recipients, the recipients beyond the cap get its 451 at RCPT one by
# one (or, raced by the other host, the message its 451 at end of data);
# then fillers. The milters' clock is held by libfaketime in one hour of
# the future: the round cannot straddle an hour, and the window hashes
# live (they expire an hour after the window, in Redis's real time).
libft=$(find /usr/lib -name libfaketimeMT.so.1 2>/dev/null | head -n 1)
if [ -z "$libft" ]; then
	notok "g: libfaketime is installed (make check installs it)"
else
	echo "2027-03-10 13:30:00" > "$T/clock"
	TZ=UTC FAKETIME_TIMESTAMP_FILE="$T/clock" FAKETIME_NO_CACHE=1 \
	FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD="$libft" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:verify_asan_link_order=0 \
		milters_up sd-cap recipients sender-domain
	month=2027-03
	phase g fleet-g.example
	rcli HSET "qm:account:{$ACCOUNT}" plan capped >/dev/null
	rcli HDEL "qm:account:{$ACCOUNT}" limit >/dev/null
	round r1 6 sender-domain "$ACCOUNT" 4 3 2 4 3 1
	round r2 3 sender-domain "$ACCOUNT" 1
	tally
	echo "# g: $SENT messages sent, $ACC_MSGS accepted ($ACC_RCPTS recipients);" \
		"RCPT 4xx $RCPT_4XX, end-of-data 451 $EOM_451"
	check_eq "g: every SMTP dialogue completed" 0 "$FAILED"
	check_eq "g: recipients accepted per the SMTP replies == the hourly cap" "$CAP" "$ACC_RCPTS"
	check_eq "g: the hour's hash total == accepted" "$ACC_RCPTS" \
		"$(rcli HGET "qm:usage:{$ACCOUNT}:2027-03-10T13" total)"
	check_eq "g: the day's hash total == accepted" "$ACC_RCPTS" \
		"$(rcli HGET "qm:usage:{$ACCOUNT}:2027-03-10" total)"
	check_eq "g: the month's total == accepted" "$ACC_RCPTS" "$(usage "$ACCOUNT" total)"
	check_eq "g: the hour's messages == messages accepted" "$ACC_MSGS" \
		"$(rcli HGET "qm:usage:{$ACCOUNT}:2027-03-10T13" messages)"
	check "g: the cap refused at RCPT" test "$RCPT_4XX" -gt 0
	check_eq "g: no 5xx" "0 0" "$RCPT_5XX $EOM_5XX_MSGS"
	check_eq "g: nothing recorded as refused" "" "$(usage "$ACCOUNT" refused)"
	check_eq "g: the only refusal is the hourly cap's" "" \
		"$(grep -vxF "451 4.7.1 Hourly sending limit of $CAP emails reached for account $ACCOUNT, try again after 14:00 UTC" <<<"$REPLIES")"
	check_eq "g: one cap event" "cap/" "$(events "$ACCOUNT")"
	a1=$(accepts_logged 1) a2=$(accepts_logged 2)
	check_eq "g: daemons logged one accept per accepted message" "$ACC_MSGS" "$((a1 + a2))"
	check "g: both hosts took part ($a1 + $a2 accepted)" test "$a1" -gt 0 -a "$a2" -gt 0
	if wait_queues; then
		check_eq "g: smtp-sinks got exactly the accepted recipients" "$ACC_RCPTS" "$(delivered_rcpts)"
	else
		notok "g: queues drained"
	fi
	check_eq "g: its keys are the account, the month, the day, the hour, charges, events" "" \
		"$(rcli --scan | grep -F '{fleet-g' | grep -vxE "qm:(account|usage):\{fleet-g\.example\}(:2027-03(-10(T13)?)?)?|qm:charge:\{fleet-g\.example\}:[0-9a-f]{16}")"
	milters_down
fi

for d in "$PF1" "$PF2"; do
	n=$(basename "$d")
	check_eq "$n: no milter timeout in the maillog" "" \
		"$(grep -iE 'milter.*(time[ds]? ?out|timed out)' "$d/maillog" | head -3)"
	check_eq "$n: no milter warning or error in the maillog" "" \
		"$(grep -E '(warning|error|fatal|panic):.*milter' "$d/maillog" | head -3)"
done
postfix_stop_all
echo "# t_fleet.sh took $((SECONDS - t0))s"
finish
