#!/bin/bash
# t_milter.sh BUILD - protocol tests: the real daemon under miltertest,
# against a real redis-server. Also run against the ASan+UBSan build.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
build=${1:-build}

redis_start
# seed_accounts - the accounts header_account.lua expects
seed_accounts() {
	accounts <<-EOA
	acme basic limit 5
	tiny basic suspended 1
	bigcorp enterprise
	gold-co gold
	EOA
}
seed_accounts

# trust_relay CONF - the login crm-relay may name accounts (header_account.lua)
trust_relay() {
	sed -i 's|^[[:space:]]*#trusted_logins .*|	trusted_logins = { "crm-relay" }|' "$1"
	grep -q 'trusted_logins = { "crm-relay" }' "$1" || notok "$1 trusts the login crm-relay"
}

# 0. Built on libmilter, and says so.
check "the daemon links Sendmail's libmilter" grep -q 'libmilter\.so' <(ldd "$build/quota-milter")
check "-V names libmilter, hiredis and libconfuse" \
	grep -q '(libmilter, hiredis, libconfuse)' <("$build/quota-milter" -V)

# 1. Header accounts, the shipped conf's categories.
mport=$(free_port)
write_conf "$T/a.conf" "inet:$mport@127.0.0.1" \
	'reply unknown_plan { text = "Plan $plan of account $account is not configured, 100% sure" }'
trust_relay "$T/a.conf"
grep -q "127.0.0.1:$REDIS_PORT" "$T/a.conf" || notok "test conf points at the test Redis"
milter_up milter-a "$T/a.conf" "inet:$mport@127.0.0.1" && mt "inet:$mport@127.0.0.1" header_account
pa=$MILTER_PID
check "decision lines logged with queue id and fields" \
	grep -qE 'NOQUEUE: account=acme plan=basic category=crm units=3 used=3/5 decision=accept' "$T/milter-a.log"
# What the shipped conf negotiates: headers without replies, DATA over TCP.
rcli HSET 'qm:account:{nego-full}' plan basic limit 0 >/dev/null
mt "inet:$mport@127.0.0.1" negotiate -D part=header

# 2. Sender-domain accounts, decided at RCPT.
accounts <<EOA
shop.example basic limit 2
race.example basic limit 1
busy.example basic
near.example basic limit 100
EOA
bsock="$T/b.sock"
sd_conf "$T/b.conf" "unix:$bsock"
milter_up milter-b "$T/b.conf" "unix:$bsock" && mt "unix:$bsock" sender_domain
pb=$MILTER_PID
mt "unix:$bsock" negotiate -D part=envelope
check "unix socket is mode 0660" test "$(stat -c %a "$bsock")" = 660
check "milter-b stops cleanly (no sanitizer report)" milter_stop "$pb" milter-b
check "and its unix socket is gone (an MTA finds no stale one)" test ! -e "$bsock"

# 3. Redis stops, then comes back on the same port: 451 4.3.0, then accepted.
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null
start=$(date +%s%N)
mt "inet:$mport@127.0.0.1" redis_down -D phase=down
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
check "tempfail came without a hang (${elapsed} ms)" test "$elapsed" -lt 5000
redis_start "$REDIS_PORT"
rcli HSET 'qm:account:{downco}' plan basic >/dev/null
# The pool may still be in its connect backoff (at most 2 s): try for 4 s.
for try in 1 2 3 4; do
	out=$(mt "inet:$mport@127.0.0.1" redis_down -D phase=up)
	grep -q '^ok - ' <<<"$out" && break
	sleep 1
done
echo "$out"
check_eq "counted once after Redis came back, tempfailed tries not counted" 1 \
	"$(rcli HGET "qm:usage:{downco}:$month" total)"
check "milter-a stops cleanly (no sanitizer report)" milter_stop "$pa" milter-a


# 4. Monitor mode.
rcli HSET 'qm:account:{mon-co}' plan basic limit 1 >/dev/null
cport=$(free_port)
write_conf "$T/c.conf" "inet:$cport@127.0.0.1" "" 's/^mode .*/mode = "monitor"/'
milter_up milter-c "$T/c.conf" "inet:$cport@127.0.0.1" && mt "inet:$cport@127.0.0.1" monitor
pc=$MILTER_PID
check "monitor decision logged" grep -q 'account=mon-co .*decision=accept reason=monitor: would refuse' "$T/milter-c.log"

# 5. SIGUSR1 reload: a new reply text for new sessions; a bad file keeps the old.
rcli HSET 'qm:account:{rl-co}' plan basic limit 0 >/dev/null
mt_reload() { mt "inet:$cport@127.0.0.1" message -D account=rl-co -D expect="$1" -D label="reload $1"; }
sed -i 's/^mode .*/mode = "enforce"/' "$T/c.conf"
echo 'reply exhausted { text = "Reloaded: $account is over $limit" }' >> "$T/c.conf"
kill -USR1 "$pc"
wait_for "reload" 10 grep -q "reloaded $T/c.conf" "$T/milter-c.log" || notok "reload logged"
mt_reload "Reloaded: rl-co is over 0"
echo 'mode = "sideways"' >> "$T/c.conf"
kill -USR1 "$pc"
wait_for "failed reload" 10 grep -q "reload failed, keeping the running configuration: $T/c.conf:[0-9]*: " "$T/milter-c.log" ||
	notok "bad reload logged with file and line"
mt_reload "Reloaded: rl-co is over 0"
# A reload that changes timezone keeps counting in the zone of the start
# (setting TZ while other threads format times would be a data race), and
# says so; a zone that a restart would refuse fails the reload.
sed -i -e '/^mode = "sideways"$/d' -e 's|^timezone .*|timezone = "Mars/Olympus_Mons"|' "$T/c.conf"
kill -USR1 "$pc"
wait_for "unknown zone reload" 10 grep -q "reload failed, keeping the running configuration: .*unknown time zone \"Mars/Olympus_Mons\"" \
	"$T/milter-c.log" || notok "a reload to an unknown zone fails"
sed -i 's|^timezone .*|timezone = "Pacific/Kiritimati"|' "$T/c.conf"
rcli HSET 'qm:account:{rl-co}' limit 10 >/dev/null
kill -USR1 "$pc"
wait_for "zone reload" 10 grep -q "socket, user, journal and timezone changes take effect at restart only" \
	"$T/milter-c.log" || notok "a timezone change at reload warns that it takes effect at restart only"
mt_reload accept
check_eq "counted in the month of the start zone, UTC ($month)" 1 \
	"$(rcli HGET "qm:usage:{rl-co}:$month" total)"
kmonth=$(TZ=Pacific/Kiritimati date +%Y-%m)
[ "$kmonth" = "$month" ] || check_eq "nothing in the new zone's month ($kmonth)" "" \
	"$(rcli HGET "qm:usage:{rl-co}:$kmonth" total)"
check "milter-c survived reloads and stops cleanly" milter_stop "$pc" milter-c

# 5b. Negotiation pins the conf for the whole connection: a session that
# negotiated headers away keeps its sender-domain conf across a reload to
# header accounts, which new sessions get.
rcli HSET 'qm:account:{nego.example}' plan basic >/dev/null
rcli HSET 'qm:account:{nego-co}' plan basic >/dev/null
nsock="$T/n.sock"
small_conf "$T/n.conf" "unix:$nsock" 'account { source = "sender-domain" }' \
	'category crm { sender = "@" }' 'default_plan = "basic"' 'plan basic { monthly = 10000 }'
if milter_up milter-n "$T/n.conf" "unix:$nsock"; then
	pn=$MILTER_PID
	# the conf the reload will load; the running daemon still has the first
	small_conf "$T/n.conf" "unix:$nsock" 'account { source = "header" }' \
		'category crm { header = "X-Quota-Category" match = "^crm$" }' \
		'default_plan = "basic"' 'plan basic { monthly = 10000 }'
	mt "unix:$nsock" negotiate -D part=reload -D pid="$pn" -D log="$T/milter-n.log"
	check "milter-n stops cleanly" milter_stop "$pn" milter-n
fi

# 5c. An out-of-memory error in a callback that may not reply (here the
# copy of the sender at MAIL, made to fail by tests/oomfail.c) tempfails
# the message at its next reply, end of message. Not under ASan, whose
# runtime must come first.
if ! ldd "$build/quota-milter" | grep -q libasan; then
	if cc -shared -fPIC -o "$T/oomfail.so" tests/oomfail.c -ldl; then
		osock="$T/o.sock"
		write_conf "$T/o.conf" "unix:$osock" ""
		LD_PRELOAD="$T/oomfail.so" milter_up milter-o "$T/o.conf" "unix:$osock" &&
			mt "unix:$osock" negotiate -D part=oom
		po=$MILTER_PID
		check "the deferred failure is logged" \
			grep -q 'NOQUEUE: out of memory earlier in this message: tempfail' "$T/milter-o.log"
		check "milter-o stops cleanly" milter_stop "$po" milter-o
	else
		notok "tests/oomfail.c compiles"
	fi

	# 5d. A libmilter stop that hangs (tests/stophang.c: smfi_main() never
	# returns) still ends the process: the stop watch, 10 s after libmilter
	# closed its socket.
	if cc -shared -fPIC -o "$T/stophang.so" tests/stophang.c -ldl; then
		hsock="$T/h.sock"
		write_conf "$T/h.conf" "unix:$hsock" ""
		LD_PRELOAD="$T/stophang.so" milter_up milter-h "$T/h.conf" "unix:$hsock"
		ph=$MILTER_PID
		t0=$SECONDS
		check "a hung libmilter stop: the process ends anyway, status 0" milter_stop "$ph" milter-h
		check "within the stop watch's 10 s, and not before ($((SECONDS - t0)) s)" \
			test $((SECONDS - t0)) -ge 9 -a $((SECONDS - t0)) -le 30
		check "and says why" grep -q 'libmilter did not stop within 10 s' "$T/milter-h.log"
		check "its unix socket is gone" test ! -e "$hsock"
	else
		notok "tests/stophang.c compiles"
	fi
fi

# 6. -t checks a file: 0 when good, 1 with FILE:LINE: reason when bad.
check "-t accepts the shipped conf" "$build/quota-milter" -t -c conf/quota-milter.conf
printf 'socket = "inet:1@127.0.0.1"\nunit = "parcels"\n' > "$T/bad.conf"
out=$("$build/quota-milter" -t -c "$T/bad.conf" 2>&1); rc=$?
check_eq "-t refuses a bad conf with exit 1" 1 "$rc"
check "-t names file and line" grep -q "^quota-milter: $T/bad.conf:2: " <<<"$out"
# A plan larger than quota.lua reads would answer unknown_plan to every message.
printf 'socket = "inet:1@127.0.0.1"\ndefault_plan = "huge"\nplan huge { monthly = 1000000000000000 }\n' \
	> "$T/huge.conf"
out=$("$build/quota-milter" -t -c "$T/huge.conf" 2>&1); rc=$?
check_eq "-t refuses a plan above 999999999999999 with exit 1" 1 "$rc"
check "-t names file and line of that plan" \
	grep -q "^quota-milter: $T/huge.conf:3: monthly = 1000000000000000 is out of range" <<<"$out"
out=$("$build/quota-milter" -t -c "$T/missing.conf" 2>&1); rc=$?
check "-t on a missing file exits 1 naming it" test "$rc" = 1 -a -n "$(grep -F "$T/missing.conf" <<<"$out")"

# 7. Started as root with user = "nobody": privileges dropped after the
# socket is open. A missing journal folder whose parent exists (root's,
# as /var/lib is) is made before, for nobody; with no parent, the warning
# says what is lost without a journal.
if [ "$(id -u)" = 0 ]; then
	dport=$(free_port)
	mkdir -m 755 "$T/state"
	write_conf "$T/d.conf" "inet:$dport@127.0.0.1" "" 's/^user .*/user = "nobody"/' \
		"s|^journal .*|journal = \"$T/state/journal\"|"
	milter_up milter-d "$T/d.conf" "inet:$dport@127.0.0.1"
	pd=$MILTER_PID
	wait_for "milter-d journal" 10 grep -q 'starting quota-milter' "$T/milter-d.log"
	check_eq "runs as nobody" "$(id -u nobody)" "$(awk '/^Uid:/ {print $3}' /proc/$pd/status)"
	check_eq "with nobody's group only" "$(id -g nobody)" "$(awk '/^Gid:/ {print $3}' /proc/$pd/status)"
	check_eq "the missing journal folder made for nobody, mode 0750" \
		"$(id -u nobody):$(id -g nobody) 750" "$(stat -c '%u:%g %a' "$T/state/journal" 2>&1)"
	check "and used: its inflight file is there" \
		bash -c "ls '$T/state/journal' | grep -q '^inflight\..*\.map$'"
	check "no journal warning" test -z "$(grep -i 'journal' "$T/milter-d.log")"
	check "milter-d stops cleanly" milter_stop "$pd" milter-d
	sed -i "s|^journal .*|journal = \"$T/absent/journal\"|" "$T/d.conf"
	dport=$(free_port)
	sed -i "s|^socket .*|socket = \"inet:$dport@127.0.0.1\"|" "$T/d.conf"
	milter_up milter-d2 "$T/d.conf" "inet:$dport@127.0.0.1"
	wait_for "milter-d2 journal" 10 grep -q 'starting quota-milter' "$T/milter-d2.log"
	check "no parent: the start-up warning says what is lost" grep -q \
		"journal $T/absent/journal: cannot create: .*; without a journal, a charge left in doubt by a Redis failure or a killed milter stays counted although its message got 451, and on_redis_error = accept cannot be used" \
		"$T/milter-d2.log"
	check "milter-d2 stops cleanly" milter_stop "$MILTER_PID" milter-d2
fi

# 8. on_redis_error = accept: counts go to the journal while Redis is down
# and are replayed once it is back, once, even after a crash mid-replay.
eport=$(free_port)
write_conf "$T/e.conf" "inet:$eport@127.0.0.1" "" 's/^on_redis_error .*/on_redis_error = "accept"/'
rcli HSET 'qm:account:{jco}' plan basic >/dev/null
milter_up milter-e "$T/e.conf" "inet:$eport@127.0.0.1"
pe=$MILTER_PID
mt_accept() { mt "inet:$eport@127.0.0.1" redis_down -D phase="$1" -D account=jco; }
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null
mt_accept accept
mt_accept accept
jfiles() { find "$T/journal" -name '*.log' 2>/dev/null | sort; }
check_eq "two entries journaled" 2 "$(cat $(jfiles) /dev/null | wc -l)"
check "journal entry names account, category, units and the hour" \
	grep -qE " jco crm 1 0 $month-[0-9]{2}T[0-9]{2}\$" $(jfiles) /dev/null
cp $(jfiles) "$T/saved.log"
printf 'garbage line\n' > "$T/journal/journal.1.1.log"
redis_start "$REDIS_PORT"
wait_for "replay" 10 bash -c "[ \"\$(redis-cli -p $REDIS_PORT HGET 'qm:usage:{jco}:$month' total)\" = 2 ]" ||
	notok "journal replayed after Redis came back"
check_eq "both journaled messages counted" 2 "$(rcli HGET "qm:usage:{jco}:$month" total)"
wait_for "journal emptied" 5 bash -c "[ -z \"\$(find $T/journal -name '*.log')\" ]"
check_eq "replayed journal files removed" "" "$(jfiles)"
check "unreadable journal kept as .bad" test -f "$T/journal/replay.1.1.log.bad"
check "and reported" grep -q "replay.1.1.log: line 1 is malformed; kept as" "$T/milter-e.log"
# A crash between applying entries and removing the file: replayed again, counted once.
kill -9 "$pe"; wait "$pe" 2>/dev/null
cp "$T/saved.log" "$T/journal/journal.99999.1.log"
# And an entry Redis will never take (its usage hash holds a non-number):
# kept aside, the good entry after it still replayed.
rcli HSET "qm:usage:{rej}:$month" total not-a-number >/dev/null
printf 'test-1 %s rej crm 1 0\ntest-2 %s jco crm 1 0\n' "$month" "$month" \
	> "$T/journal/journal.77.1.log"
milter_start "$build" "$T/e.conf" milter-e2
pe=$MILTER_PID
wait_for "second replay" 10 bash -c "[ -z \"\$(find $T/journal -name '*.log')\" ]" ||
	notok "journal left by a killed milter is replayed at start"
check_eq "entries replayed twice are counted once, the new one too" 3 \
	"$(rcli HGET "qm:usage:{jco}:$month" total)"
check "an entry Redis refuses is kept aside" grep -q ' rej crm 1 0$' "$T/journal/replay.77.1.log.rejected"
check "and reported" grep -q 'replay.77.1.log: entry refused by Redis (Redis: QUOTA quota.lua' "$T/milter-e2.log"
check "milter-e2 stops cleanly" milter_stop "$pe" milter-e2

# 8a. strip_headers covers mail of no category too (tests/milter/strip.lua).
rcli HSET 'qm:account:{strip-co}' plan enterprise >/dev/null
for part in on off; do
	sport=$(free_port)
	off='s|^\([[:space:]]*strip_headers *=\).*|\1 false|'
	[ "$part" = off ] || off=''
	write_conf "$T/s-$part.conf" "inet:$sport@127.0.0.1" "category crm { sender = '@crm[.]example\$' }" \
		'/^category /d' "$off"
	if milter_up "milter-s-$part" "$T/s-$part.conf" "inet:$sport@127.0.0.1"; then
		mt "inet:$sport@127.0.0.1" strip -D part="$part"
		check "milter-s-$part stops cleanly" milter_stop "$MILTER_PID" "milter-s-$part"
	fi
done

# 8b. Redis ACL users with the least privilege README gives: the milter's
# user runs the whole header-account session (the script's commands
# included), quota-milter-ctl's user every ctl command; a wrong password is
# a Redis failure (451), not a crash.
rcli FLUSHALL >/dev/null
seed_accounts
acl_milter="on >milter-pw resetkeys ~qm:* resetchannels -@all +evalsha +eval +script|load +ping +select +role +exists +expireat +get +hget +hincrby +hmget +hset +hsetnx +pexpire +pttl +set +time +type +xadd"
acl_ctl="on >ctl-pw resetkeys ~qm:* resetchannels -@all +hget +hmget +hgetall +hset +hdel +hkeys +del +scan +type +xrevrange +ping +select +evalsha +eval +script|load +expireat +time"
# shellcheck disable=SC2086  # one rule a word
check_eq "ACL user qm-milter made" OK "$(rcli ACL SETUSER qm-milter reset $acl_milter)"
# shellcheck disable=SC2086
check_eq "ACL user qm-ctl made" OK "$(rcli ACL SETUSER qm-ctl reset $acl_ctl)"
uport=$(free_port)
write_conf "$T/u.conf" "inet:$uport@127.0.0.1" \
	'reply unknown_plan { text = "Plan $plan of account $account is not configured, 100% sure" }' \
	's|^\([[:space:]]*\)password *=.*|\1username = "qm-milter"\n\1password = "milter-pw"|'
trust_relay "$T/u.conf"
if milter_up milter-u "$T/u.conf" "inet:$uport@127.0.0.1"; then
	uout=$(mt "inet:$uport@127.0.0.1" header_account)
	check_eq "as ACL user qm-milter: the header-account session, no failed case" 0 \
		"$(grep -c '^not ok' <<<"$uout")"
	grep '^not ok' <<<"$uout" | sed 's/^/# /'
	check "its connections are the ACL user's" grep -q ' user=qm-milter ' <(rcli CLIENT LIST)
	check "as ACL user qm-milter: its health report written" test "$(rcli EXISTS "qm:host:{$(uname -n)}")" = 1
	check_eq "and it counted (acme: 5 of its limit 5)" 5 "$(rcli HGET "qm:usage:{acme}:$month" total)"
	check "milter-u stops cleanly" milter_stop "$MILTER_PID" milter-u
fi
sed -e 's|username = "qm-milter"|username = "qm-ctl"|' -e 's|"milter-pw"|"ctl-pw"|' "$T/u.conf" > "$T/uc.conf"
ctl_ok=0
for args in "usage acme" "top" "plans" "events" "export $month" "set-plan acme standard" \
	"set-limit acme 7" "set-limit acme plan" "suspend acme" "resume acme" "reset acme" \
	"hosts" "metrics"; do
	# shellcheck disable=SC2086  # the command's words
	"$build/quota-milter-ctl" -c "$T/uc.conf" $args >"$T/ctl.out" 2>&1 ||
		{ ctl_ok=1; echo "# quota-milter-ctl $args: $(head -2 "$T/ctl.out")"; }
done
check_eq "as ACL user qm-ctl: every ctl command works" 0 "$ctl_ok"
check_eq "and it reset the month" 0 "$(rcli EXISTS "qm:usage:{acme}:$month")"
sed -i 's|"milter-pw"|"wrong-pw"|' "$T/u.conf"
if milter_up milter-w "$T/u.conf" "inet:$uport@127.0.0.1"; then
	wout=$(mt "inet:$uport@127.0.0.1" redis_down -D phase=down)
	check "a wrong Redis password: 451 4.3.0, as Redis away" grep -q '^ok - ' <<<"$wout"
	check "and the log says why" grep -q 'WRONGPASS' "$T/milter-w.log"
	check "milter-w stops cleanly" milter_stop "$MILTER_PID" milter-w
fi

# 9. The same protocol session with the daemon under valgrind (for the
# plain build; the ASan build checks itself): no errors, no leaks.
if ! ldd "$build/quota-milter" | grep -q libasan; then
	vport=$(free_port)
	write_conf "$T/v.conf" "inet:$vport@127.0.0.1" \
		'reply unknown_plan { text = "Plan $plan of account $account is not configured, 100% sure" }'
	trust_relay "$T/v.conf"
	rcli FLUSHALL >/dev/null
	seed_accounts
	valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
		--log-file="$T/valgrind.log" "$build/quota-milter" -f -c "$T/v.conf" >"$T/milter-v.log" 2>&1 &
	pv=$!
	PIDS="$PIDS $pv"
	wait_for milter-v 30 bash -c "echo > /dev/tcp/127.0.0.1/$vport" || notok "daemon started under valgrind"
	vout=$(mt "inet:$vport@127.0.0.1" header_account)
	check_eq "protocol session under valgrind: no failed case" 0 "$(grep -c '^not ok' <<<"$vout")"
	kill -TERM "$pv"
	rc=0; wait "$pv" || rc=$?
	check_eq "valgrind: no errors, no leaks (exit status)" 0 "$rc"
	[ "$rc" = 0 ] || sed 's/^/# /' "$T/valgrind.log" | head -30
fi

# 10. Two milters share one journal folder (accept mode, Redis away for
# both). Milter j1's Redis comes back and it replays while milter j2 keeps
# journaling into its own file, whose Redis is still away; then j2's Redis
# is back too. Each process takes only files no live process holds: every
# accepted message is counted once, none lost.
rcli FLUSHALL >/dev/null
rcli HSET 'qm:account:{shared-co}' plan enterprise >/dev/null
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null
away=$(free_port)			# j2's Redis: nothing listens there yet
for j in j1 j2; do
	port=$(free_port)
	write_conf "$T/$j.conf" "inet:$port@127.0.0.1" "" 's/^on_redis_error .*/on_redis_error = "accept"/' \
		"s|^journal .*|journal = \"$T/shared-journal\"|"
	eval "${j}_port=$port"
done
sed -i "s|127.0.0.1:$REDIS_PORT|127.0.0.1:$away|" "$T/j2.conf"
milter_up milter-j1 "$T/j1.conf" "inet:$j1_port@127.0.0.1"
pj1=$MILTER_PID
sleep 0.5			# out of step with j1's once-a-second replay
milter_up milter-j2 "$T/j2.conf" "inet:$j2_port@127.0.0.1"
pj2=$MILTER_PID
# mt_shared PORT N - N messages to that milter, a line in $T/sent for each accepted
mt_shared() {
	local i
	for i in $(seq 1 "$2"); do
		[ -e "$T/shared-stop" ] && break
		mt "inet:$1@127.0.0.1" redis_down -D phase=accept -D account=shared-co |
			grep '^ok - ' >> "$T/sent"
	done
}
: > "$T/sent"
mt_shared "$j1_port" 3
mt_shared "$j2_port" 3
check_eq "six messages accepted while Redis is away" 6 "$(wc -l < "$T/sent")"
# j2 journals without a pause while j1's Redis comes back and j1 replays
# (once a second), until 2 s after j1's first replay: two loops of at most
# 400 messages.
mt_shared "$j2_port" 400 &
pload=$!
mt_shared "$j2_port" 400 &
pload="$pload $!"
redis_start "$REDIS_PORT"
wait_for "j1 replay" 10 grep -q 'entries replayed into Redis' "$T/milter-j1.log" ||
	notok "milter j1 replayed the journal"
sleep 2
touch "$T/shared-stop"
wait $pload
rm "$T/shared-stop"
mt_shared "$j2_port" 3
sent=$(wc -l < "$T/sent")
echo "# $sent messages accepted, $(grep -c 'accept-journaled' "$T/milter-j2.log") journaled by j2"
sed -i "s|127.0.0.1:$away|127.0.0.1:$REDIS_PORT|" "$T/j2.conf"
kill -USR1 "$pj2"
wait_for "j2 reload" 10 grep -q "reloaded $T/j2.conf" "$T/milter-j2.log" || notok "milter j2 reloaded"
wait_for "shared journal emptied" 15 bash -c "[ -z \"\$(find $T/shared-journal -name '*.log*')\" ]" ||
	notok "shared journal emptied"
check_eq "every accepted message counted once" "$sent" \
	"$(rcli HGET "qm:usage:{shared-co}:$month" total)"
check_eq "no file set aside" "" "$(find "$T/shared-journal" -name '*.bad' -o -name '*.rejected')"
check "milter-j1 stops cleanly" milter_stop "$pj1" milter-j1
check "milter-j2 stops cleanly" milter_stop "$pj2" milter-j2

finish
