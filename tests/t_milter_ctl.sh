#!/bin/bash
# t_milter_ctl.sh BUILD - quota-milter-ctl against a real redis-server, and
# end to end with the real daemon under miltertest: what the milter counts
# is what the ctl shows, and what the ctl sets the milter obeys on the next
# message. Named t_milter* so that run.sh also runs it against the
# ASan+UBSan build (there every ctl run is leak-checked by LeakSanitizer;
# in the normal build a few runs go under valgrind instead).
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
build=${1:-build}
ctlbin="$build/quota-milter-ctl"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

[ -x "$ctlbin" ] || { notok "$ctlbin is built"; finish; }
command -v jq >/dev/null || { notok "jq is installed (tests/deps.sh)"; finish; }

redis_start

# The daemon's conf, pointed at the test's Redis; the ctl reads the same file.
mport=$(free_port)
msock="inet:$mport@127.0.0.1"
write_conf "$T/qm.conf" "$msock"
grep -q "127.0.0.1:$REDIS_PORT" "$T/qm.conf" || notok "test conf points at the test Redis"

# ctl ARGS... - run the ctl on the test conf; sets OUT, ERR and RC
ctl() {
	"$ctlbin" -c "$T/qm.conf" "$@" >"$T/out" 2>"$T/err"
	RC=$?
	OUT=$(cat "$T/out")
	ERR=$(cat "$T/err")
	cat "$T/err" >> "$T/stderr.all"
}

# ctl_ok NAME ARGS... - the ctl succeeds, silent on stderr
ctl_ok() {
	local name=$1
	shift
	ctl "$@"
	if [ "$RC" = 0 ] && [ -z "$ERR" ]; then ok "$name"; else
		notok "$name (exit $RC)"; sed 's/^/# /' "$T/err" | head -5; fi
}

# has NAME REGEX - OUT has a line matching the extended regex
has() {
	if grep -qE -- "$2" <<<"$OUT"; then ok "$1"; else
		notok "$1"; sed 's/^/# /' <<<"$OUT" | head -20; fi
}

# jq_eq NAME FILTER EXPECTED - OUT is valid JSON and the filter gives EXPECTED
jq_eq() {
	local got
	got=$(jq -c "$2" <<<"$OUT" 2>&1)
	check_eq "$1" "$3" "$got"
}

# 1. Help: stdout, exit 0, every command; the daemon's too.
for opt in --help -h; do
	ctl "$opt"
	check_eq "ctl $opt exits 0" 0 "$RC"
	has "ctl $opt prints the usage line" "^usage: quota-milter-ctl \[-c FILE\] \[--json\] COMMAND"
done
for c in usage top plans set-plan set-limit suspend resume reset events export; do
	has "--help names $c" "^  $c( |$)"
done
out=$("$build/quota-milter" -h 2>&1); rc=$?
check_eq "quota-milter -h exits 0" 0 "$rc"
check "quota-milter -h prints its options" grep -q -- "usage: quota-milter \[-c FILE\] \[-f\] \[-t\] \[-V\]" <<<"$out"

# 2. plans: the conf's table, in file order.
ctl_ok "plans" plans
has "plans: head" "^PLAN +MONTHLY +DAILY +HOURLY +DEFAULT$"
has "plans: free is the default" "^free +0 +unlimited +unlimited +yes$"
has "plans: enterprise is unlimited" "^enterprise +unlimited +unlimited +unlimited$"
check_eq "plans: six, in conf order" "free trial basic standard professional enterprise" \
	"$(awk 'NR > 1 {print $1}' <<<"$OUT" | paste -sd' ')"
ctl_ok "plans --json" --json plans
jq_eq "plans --json: default and plans" '[.default_plan, (.plans | length), .plans[5]]' \
	'["free",6,{"name":"enterprise","monthly":-1,"daily":-1,"hourly":-1,"default":false}]'

# 3. What the ctl sets is what redis-cli reads.
ctl_ok "set-plan" set-plan acme basic
check_eq "set-plan says so" "account acme: plan set to basic" "$OUT"
check_eq "set-plan is HSET plan" basic "$(rcli HGET 'qm:account:{acme}' plan)"
ctl_ok "set-limit N" set-limit acme 5
check_eq "set-limit N is HSET limit N" 5 "$(rcli HGET 'qm:account:{acme}' limit)"
ctl_ok "set-limit unlimited" --json set-limit acme unlimited
check_eq "set-limit unlimited is HSET limit -1" -1 "$(rcli HGET 'qm:account:{acme}' limit)"
jq_eq "set-limit --json" . '{"account":"acme","command":"set-limit","limit":-1}'
ctl_ok "usage with an unlimited override" usage acme
has "usage: unlimited shown as such" "^limit +unlimited \(override\)$"
has "usage: remaining unlimited" "^remaining +unlimited$"
ctl_ok "set-limit plan" set-limit acme plan
check_eq "set-limit plan is HDEL limit" 0 "$(rcli HEXISTS 'qm:account:{acme}' limit)"
# The caps of a day and an hour: limit_daily, limit_hourly, the monthly limit untouched.
ctl_ok "set-limit --daily N" set-limit acme --daily 50
check_eq "set-limit --daily says so" "account acme: daily limit set to 50" "$OUT"
check_eq "set-limit --daily N is HSET limit_daily N" 50 "$(rcli HGET 'qm:account:{acme}' limit_daily)"
ctl_ok "set-limit --hourly unlimited" --json set-limit --hourly acme unlimited
check_eq "set-limit --hourly unlimited is HSET limit_hourly -1" -1 "$(rcli HGET 'qm:account:{acme}' limit_hourly)"
jq_eq "set-limit --hourly --json" . '{"account":"acme","command":"set-limit","limit_hourly":-1}'
ctl_ok "set-limit --hourly 007" set-limit acme --hourly 007
check_eq "set-limit --hourly writes the number, 7" 7 "$(rcli HGET 'qm:account:{acme}' limit_hourly)"
ctl_ok "set-limit --hourly 0" set-limit acme --hourly 0
check_eq "set-limit --hourly 0: a cap of 0" 0 "$(rcli HGET 'qm:account:{acme}' limit_hourly)"
check_eq "set-limit --daily/--hourly leave the monthly limit alone" 0 "$(rcli HEXISTS 'qm:account:{acme}' limit)"
ctl_ok "set-limit --daily plan" --json set-limit acme --daily plan
check_eq "set-limit --daily plan is HDEL limit_daily" 0 "$(rcli HEXISTS 'qm:account:{acme}' limit_daily)"
jq_eq "set-limit --daily plan --json" . '{"account":"acme","command":"set-limit","limit_daily":null}'
ctl_ok "set-limit --hourly plan" set-limit acme plan --hourly
check_eq "set-limit --hourly plan says so" \
	"account acme: hourly limit override removed, the plan's hourly limit applies" "$OUT"
check_eq "set-limit --hourly plan is HDEL limit_hourly" 0 "$(rcli HEXISTS 'qm:account:{acme}' limit_hourly)"
ctl_ok "suspend" suspend acme
check_eq "suspend is HSET suspended 1" 1 "$(rcli HGET 'qm:account:{acme}' suspended)"
ctl_ok "usage of a suspended account" --json usage acme
jq_eq "usage --json: suspended" '[.status, .suspended]' '["suspended",true]'
ctl_ok "resume" resume acme
check_eq "resume is HDEL suspended" 0 "$(rcli HEXISTS 'qm:account:{acme}' suspended)"
check_eq "the account hash holds just what was set" "plan basic" \
	"$(rcli HGETALL 'qm:account:{acme}' | paste -sd' ')"

# ... and what redis-cli (the billing system) sets is what the ctl shows.
rcli HSET 'qm:account:{bill}' plan professional limit 123 suspended 1 >/dev/null
rcli HSET "qm:usage:{bill}:$month" total 100 messages 4 crm 60 marketing 40 refused 7 \
	would_refuse 2 legacy 9 >/dev/null
ctl_ok "usage of a billing-made account" usage bill
for line in "account +bill" "month +$month" "plan +professional" "limit +123 \(override\)" \
	"used +100" "remaining +23" "percent +81%" "status +suspended" "suspended +yes" \
	"messages +4" "crm +60" "marketing +40" "automation +0" "refused +7" "would_refuse +2" \
	"legacy +9 \(not a category of the configuration\)"; do
	has "usage shows '$line'" "^$line$"
done
ctl_ok "usage --json of a billing-made account" --json usage bill
jq_eq "usage --json: the same facts, numbers as numbers" \
	'[.account,.month,.plan,.plan_source,.limit,.limit_source,.used,.remaining,.percent,.status,.messages,.categories,.refused,.would_refuse,.other]' \
	"[\"bill\",\"$month\",\"professional\",\"account\",123,\"override\",100,23,81,\"suspended\",4,{\"crm\":60,\"marketing\":40,\"automation\":0},7,2,{\"legacy\":9}]"
rcli HDEL 'qm:account:{bill}' limit suspended >/dev/null
ctl_ok "usage after the billing system dropped the override" --json usage bill
jq_eq "usage --json: the plan's limit applies again" '[.limit,.limit_source,.remaining,.percent,.status]' \
	'[100000,"plan",99900,0,"ok"]'
ctl_ok "usage of an account Redis never heard of" --json usage nobody "$month"
jq_eq "usage --json: default_plan, nothing used" '[.plan,.plan_source,.limit,.used,.percent,.status]' \
	'["free","default_plan",0,0,null,"no_mail"]'
rcli HSET 'qm:account:{ghost}' plan gold >/dev/null
ctl_ok "usage of an account on a plan the conf lacks" --json usage ghost
jq_eq "usage --json: unknown plan has no limit" '[.plan,.limit,.remaining,.status]' '["gold",null,null,"unknown_plan"]'

# 4. Bad input: a message on stderr, nothing on stdout, exit 2 (usage) or 1 (runtime).
long=$(printf 'a%.0s' $(seq 1 129))
rcli HSET 'qm:account:{limitless}' plan basic >/dev/null
while IFS=';' read -r want msg args; do
	eval "set -- $args"
	ctl "$@"
	if [ "$RC" = "$want" ] && [ -z "$OUT" ] && grep -qE -- "^quota-milter-ctl: $msg" <<<"$ERR"; then
		ok "error: $args -> exit $want, $msg"
	else
		notok "error: $args -> exit $want, $msg (exit $RC)"
		sed 's/^/# /' "$T/err" "$T/out" | head -5
	fi
done <<EOF
2;unknown command "frob";frob
2;no command given;
2;no command given;--json
2;bad account id "a b": characters outside A-Z a-z 0-9 . _ @ \+ -;usage 'a b'
2;bad account id "": empty;usage ''
2;bad account id "a\?b": characters outside;usage \$'a\\eb'
2;bad account id "a+": longer than 128 characters;usage $long
2;bad account id ".*": characters outside;set-plan 'x{y}' basic
2;bad month "2026-13": expected YYYY-MM;usage acme 2026-13
2;bad month "26-01";export 26-01
2;bad month "2026-1";top 2026-1
2;bad month "1969-12";reset acme 1969-12
2;bad -n "0": expected a count from 1 to 100000;top -n 0
2;bad -n "100001";top -n 100001
2;bad -n "x";events -n x
2;bad -n "10001";events -n 10001
2;usage takes no -n;usage acme -n 3
2;unknown plan "gold" \(plans of .*: free, trial, basic, standard, professional, enterprise\);set-plan acme gold
2;bad limit "-5": expected a count from 0 to 999999999999999, unlimited or plan;set-limit acme -5
2;bad limit "1.5";set-limit acme 1.5
2;bad limit "1000000000000000";set-limit acme 1000000000000000
2;usage: quota-milter-ctl set-limit ACCOUNT \[--daily\|--hourly\] N\|unlimited\|plan;set-limit acme
2;usage: quota-milter-ctl set-limit;set-limit acme --daily
2;bad daily limit "-5": expected a count from 0 to 999999999999999, unlimited or plan;set-limit acme --daily -5
2;bad hourly limit "x": expected a count;set-limit acme --hourly x
2;bad hourly limit "1000000000000000";set-limit --hourly acme 1000000000000000
2;bad daily limit "";set-limit acme --daily ''
2;--daily and --hourly exclude each other;set-limit acme --daily --hourly 5
2;usage takes no --daily;usage acme --daily
2;top takes no --hourly;top --hourly
2;bad --by "weekly": expected monthly, daily or hourly;top --by weekly
2;bad --by "month";top --by=month
2;bad --by "";top --by=
2;option --by needs a value;top --by
2;top --by hourly takes no month: it ranks the current hour;top --by hourly 2026-01
2;usage takes no --by;usage acme --by daily
2;usage: quota-milter-ctl export YYYY-MM;export
2;usage: quota-milter-ctl plans;plans extra
2;usage: quota-milter-ctl usage ACCOUNT \[YYYY-MM\];usage a b c d
2;unknown option --frob;--frob plans
2;option -c needs a value;plans -c
1;/nonexistent.conf: cannot open: No such file or directory;-c /nonexistent.conf plans
EOF
check_eq "a refused plan never reached Redis" basic "$(rcli HGET 'qm:account:{acme}' plan)"
check_eq "a refused limit never reached Redis" 0 "$(rcli HEXISTS 'qm:account:{acme}' limit)"
check_eq "a refused cap never reached Redis" 00 \
	"$(rcli HEXISTS 'qm:account:{acme}' limit_daily)$(rcli HEXISTS 'qm:account:{acme}' limit_hourly)"

printf 'redis {\n\taddress = "127.0.0.1:%s"\n}\nmode = "sideways"\n' "$REDIS_PORT" > "$T/bad.conf"
ctl -c "$T/bad.conf" plans
check "a bad conf: exit 1 with FILE:LINE: reason" test "$RC" = 1 -a -n "$(grep -F "quota-milter-ctl: $T/bad.conf:4: bad mode" <<<"$ERR")"

deadport=$(free_port)
sed "s|127.0.0.1:$REDIS_PORT|127.0.0.1:$deadport|" "$T/qm.conf" > "$T/dead.conf"
for args in "usage acme" "top" "set-plan acme basic" "suspend acme" "reset acme" "events" "export $month"; do
	start=$(date +%s%N)
	# shellcheck disable=SC2086
	ctl -c "$T/dead.conf" $args
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	check "Redis down: $args -> exit 1 naming the address, in ${ms} ms" \
		test "$RC" = 1 -a "$ms" -lt 3000 -a \
		"$ERR" = "quota-milter-ctl: Redis 127.0.0.1:$deadport: Connection refused"
done
rcli SET 'qm:account:{strkey}' oops >/dev/null
ctl usage strkey
check "a key of the wrong type: exit 1 with Redis's error" \
	test "$RC" = 1 -a -n "$(grep -E '^quota-milter-ctl: account strkey: Redis: WRONGTYPE' <<<"$ERR")"

# 5. export and top over a month of hand-made usage.
m=2025-03
rcli HSET 'qm:account:{zeta}' plan professional >/dev/null
rcli HSET "qm:usage:{zeta}:$m" total 900 messages 9 crm 900 >/dev/null
rcli HSET 'qm:account:{alpha}' plan basic limit 20 >/dev/null
rcli HSET "qm:usage:{alpha}:$m" total 20 messages 2 marketing 15 automation 5 refused 4 >/dev/null
rcli HSET 'qm:account:{m.x@y+z_1-2}' plan enterprise >/dev/null
rcli HSET "qm:usage:{m.x@y+z_1-2}:$m" total 900 messages 3 crm 900 >/dev/null
rcli HSET 'qm:account:{quoted}' plan 'go,ld "x"' >/dev/null
rcli HSET "qm:usage:{quoted}:$m" total 1 messages 1 crm 1 >/dev/null
rcli HSET "qm:usage:{refusedonly}:$m" refused 3 >/dev/null
# Upgraded since: the month shows the plan and limit it was counted under.
rcli HSET 'qm:account:{moved}' plan professional limit 5 >/dev/null
rcli HSET "qm:usage:{moved}:$m" total 7 messages 7 crm 7 plan basic limit 10000 >/dev/null
rcli HSET "qm:usage:{zeta}:2025-04" total 5 >/dev/null		# another month
rcli HSET "other:usage:{alien}:$m" total 5000 >/dev/null	# another prefix
rcli HSET "qm:usage:{bad id}:$m" total 7000 >/dev/null	# no account id: skipped
rcli HSET "qm:usage:{zeta}:$m:x" total 8000 >/dev/null	# not a usage key
ctl_ok "export" export "$m"
cat > "$T/want.csv" <<EOF
account,plan,limit,total,messages,crm,marketing,automation,refused
alpha,basic,20,20,2,0,15,5,4
m.x@y+z_1-2,enterprise,-1,900,3,900,0,0,0
moved,basic,10000,7,7,7,0,0,0
quoted,"go,ld ""x""",,1,1,1,0,0,0
refusedonly,free,0,0,0,0,0,0,3
zeta,professional,100000,900,9,900,0,0,0
EOF
check_eq "export: header, rows sorted by account, CSV quoting" "$(cat "$T/want.csv")" "$OUT"
ctl_ok "export --json" --json export "$m"
jq_eq "export --json: same accounts" '[.month, [.accounts[].account], .accounts[0].refused]' \
	"[\"$m\",[\"alpha\",\"m.x@y+z_1-2\",\"moved\",\"quoted\",\"refusedonly\",\"zeta\"],4]"
jq_eq "export --json: a past month's plan and limit come from its usage" \
	'[.accounts[2] | .plan, .plan_source, .limit, .limit_source]' '["basic","month",10000,"month"]'
ctl_ok "usage of the current month: the account's plan and limit now" --json usage moved
jq_eq "usage of this month: plan and limit of the account" \
	'[.plan, .plan_source, .limit, .limit_source]' '["professional","account",5,"override"]'
ctl_ok "export of a month without usage" export 2001-01
check_eq "export of an empty month: the header only" \
	"account,plan,limit,total,messages,crm,marketing,automation,refused" "$OUT"

# A prefix with glob characters matches itself only.
sed 's|^\([[:space:]]*prefix *=\).*|\1 "q*[m]:"|' "$T/qm.conf" > "$T/glob.conf"
rcli HSET "q*[m]:usage:{globbed}:$m" total 5 >/dev/null
rcli HSET "qxm:usage:{decoy}:$m" total 6 >/dev/null
ctl -c "$T/glob.conf" export "$m"
check_eq "a prefix with glob characters: escaped in MATCH" "globbed,free,0,5,0,0,0,0,0" "$(tail -n +2 "$T/out")"

ctl_ok "top" top "$m"
check_eq "top: head and order (total, then account)" \
	"ACCOUNT PLAN USED LIMIT REMAINING PERCENT STATUS|m.x@y+z_1-2 enterprise 900 unlimited unlimited - ok|zeta professional 900 100000 99100 0% ok|alpha basic 20 20 0 100% exhausted|moved basic 7 10000 9993 0% ok|quoted go,ld \"x\" 1 - - - unknown_plan|refusedonly free 0 0 0 - no_mail" \
	"$(sed -E 's/  +/ /g' <<<"$OUT" | paste -sd'|')"
ctl_ok "top -n 2" top "$m" -n 2
check_eq "top -n 2: the first two" "m.x@y+z_1-2 zeta" "$(awk 'NR > 1 {print $1}' <<<"$OUT" | paste -sd' ')"
ctl_ok "top --json -n 3" --json top -n 3 "$m"
jq_eq "top --json" '[.month, [.accounts[] | [.account, .used, .limit, .remaining, .percent]]]' \
	"[\"$m\",[[\"m.x@y+z_1-2\",900,-1,-1,null],[\"zeta\",900,100000,99100,0],[\"alpha\",20,20,0,100]]]"
ctl_ok "top of an empty month" top 2001-01
check_eq "top of an empty month: the head only" "ACCOUNT  PLAN  USED  LIMIT  REMAINING  PERCENT  STATUS" "$OUT"

# 5b. Caps: usage shows this day's and this hour's use and caps, top ranks by them.
# The windows are those of now (UTC in the test conf): hour_guard waits (at most
# a minute) when the hour ends within the next minute, so a block's hour stays one.
hour_guard() {
	[ "$(date -u +%M)" != 59 ] || sleep $((61 - 10#$(date -u +%S)))
}
hour_guard
day=$(date -u +%Y-%m-%d)
hour=$(date -u +%Y-%m-%dT%H)
hstart=$(date -u -d "$day $(date -u +%H):00" +%s)
nextday="$(date -u -d "$day + 1 day" +%Y-%m-%d) 00:00 UTC"
nextday_utc="$(date -u -d "$day + 1 day" +%Y-%m-%d)T00:00:00Z"
nexthour="$(date -u -d "@$((hstart + 3600))" +%H):00 UTC"
nexthour_utc=$(date -u -d "@$((hstart + 3600))" +%Y-%m-%dT%H:00:00Z)
write_conf "$T/caps.conf" "$msock" 'plan capped { monthly = 1000  daily = 50  hourly = 5 }'
rcli HSET 'qm:account:{capd}' plan capped limit_hourly 3 >/dev/null
rcli HSET "qm:usage:{capd}:$month" total 40 messages 10 crm 40 >/dev/null
rcli HSET "qm:usage:{capd}:$day" total 40 messages 10 crm 40 limit 50 >/dev/null
rcli HSET "qm:usage:{capd}:$hour" total 3 messages 1 crm 3 would_refuse 2 limit 3 cap 1 >/dev/null
ctl_ok "plans with caps" -c "$T/caps.conf" plans
has "plans: a plan's caps" "^capped +1000 +50 +5$"
ctl_ok "plans --json with caps" -c "$T/caps.conf" --json plans
jq_eq "plans --json: a plan's caps" '.plans[6]' '{"name":"capped","monthly":1000,"daily":50,"hourly":5,"default":false}'
ctl_ok "usage of a capped account" -c "$T/caps.conf" usage capd
for line in "used +40" "remaining +960" "status +hourly_cap" \
	"daily window +$day, reopens $nextday" "daily used +40" "daily cap +50 \(plan\)" "daily remaining +10" \
	"hourly window +$hour, reopens $nexthour" "hourly used +3" "hourly cap +3 \(override\)" \
	"hourly remaining +0"; do
	has "usage of a capped account shows '$line'" "^$line$"
done
ctl_ok "usage --json of a capped account" -c "$T/caps.conf" --json usage capd
check "usage --json: the windows, as python's json reads them" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["status"] == "hourly_cap", d["status"]
assert d["daily"] == {"window": sys.argv[2], "used": 40, "cap": 50, "cap_source": "plan",
	"remaining": 10, "reopens": sys.argv[4], "reopens_utc": sys.argv[7], "messages": 10,
	"would_refuse": 0}, d["daily"]
assert d["hourly"] == {"window": sys.argv[3], "used": 3, "cap": 3, "cap_source": "override",
	"remaining": 0, "reopens": sys.argv[5], "reopens_utc": sys.argv[6], "messages": 1,
	"would_refuse": 2}, d["hourly"]
'  "$OUT" "$day" "$hour" "$nextday" "$nexthour" "$nexthour_utc" "$nextday_utc"
ctl_ok "usage of a capped account in another month" -c "$T/caps.conf" --json usage capd 2025-03
jq_eq "usage of another month: no windows" '[.daily, .hourly]' '[null,null]'
ctl_ok "usage text of another month" -c "$T/caps.conf" usage capd 2025-03
check "usage text of another month: no window lines" test -z "$(grep -E '^(daily|hourly) ' <<<"$OUT")"

# No window hash (no use this hour, or no cap), a plan without caps, one the conf lacks.
ctl_ok "usage of an account without caps" -c "$T/caps.conf" --json usage bill
jq_eq "usage --json: no cap is -1, nothing used" '[.daily | .window, .used, .cap, .cap_source, .remaining]' \
	"[\"$day\",0,-1,\"plan\",-1]"
ctl_ok "usage text of an account without caps" -c "$T/caps.conf" usage bill
has "usage: no cap reads unlimited (plan)" "^hourly cap +unlimited \(plan\)$"
rcli HSET 'qm:account:{ghost}' limit_daily 7 >/dev/null
ctl_ok "usage of an account on a plan the conf lacks" -c "$T/caps.conf" --json usage ghost
jq_eq "usage --json: unknown plan: hourly cap unknown, the daily override known" \
	'[.hourly.cap, .hourly.cap_source, .hourly.remaining, .daily.cap, .daily.cap_source]' '[null,null,null,7,"override"]'
ctl_ok "usage text of an account on a plan the conf lacks" -c "$T/caps.conf" usage ghost
has "usage: unknown hourly cap reads -" "^hourly cap +- \(plan not in the configuration\)$"
# The day before the hour, the month before both (quota.lua's order).
rcli HSET 'qm:account:{dayfull}' plan capped >/dev/null
rcli HSET "qm:usage:{dayfull}:$day" total 50 >/dev/null
rcli HSET "qm:usage:{dayfull}:$hour" total 5 >/dev/null
ctl_ok "usage of an account at its daily cap" -c "$T/caps.conf" --json usage dayfull
jq_eq "usage --json: daily_cap before hourly_cap" '[.status, .daily.remaining, .hourly.remaining]' '["daily_cap",0,0]'
rcli HSET 'qm:account:{dayfull}' limit 0 >/dev/null
ctl_ok "usage of an account at its monthly limit and caps" -c "$T/caps.conf" --json usage dayfull
jq_eq "usage --json: exhausted before the caps" .status '"exhausted"'
rcli HSET 'qm:account:{zerocap}' plan capped limit_hourly 0 >/dev/null
ctl_ok "usage of an account with a cap of 0" -c "$T/caps.conf" --json usage zerocap
jq_eq "usage --json: a cap of 0 is reached with nothing used" '[.status, .hourly.used, .hourly.cap]' '["hourly_cap",0,0]'

# Hostile contents: overrides quota.lua ignores, fields that are not counts.
rcli HSET 'qm:account:{hostile}' plan capped limit_daily 1e3 limit_hourly 9999999999999999 >/dev/null
rcli HSET "qm:usage:{hostile}:$day" total 99999999999999999999 messages "$(printf '1\033[31m')" >/dev/null
rcli HSET "qm:usage:{hostile}:$hour" total -4 would_refuse "$(printf '\001')" >/dev/null
ctl -c "$T/caps.conf" --json usage hostile
check "usage of hostile windows: exit 0" test "$RC" = 0
jq_eq "usage of hostile windows: bad overrides give the plan's caps, bad counts 0" \
	'[.daily.cap, .daily.cap_source, .daily.used, .daily.messages, .hourly.cap, .hourly.used, .hourly.would_refuse]' \
	'[50,"plan",0,0,5,0,0]'
check "usage of hostile windows: each bad count warned" test "$(grep -c "^quota-milter-ctl: warning: usage of account hostile: field .* of $day is not a count" <<<"$ERR")" = 2 \
	-a "$(grep -c "field .* of $hour is not a count" <<<"$ERR")" = 2
check "usage of hostile windows: no escape byte on stderr" test -z "$(grep -P '[\x01\x1b]' "$T/err")"
ctl -c "$T/caps.conf" usage hostile
check "usage text of hostile windows: no escape byte reaches the terminal" test -z "$(grep -P '[\x01\x1b]' "$T/out")"
rcli SET "qm:usage:{wrongtype}:$hour" oops >/dev/null
ctl -c "$T/caps.conf" usage wrongtype
check "a window key of the wrong type: exit 1 with Redis's error" \
	test "$RC" = 1 -a -n "$(grep -E '^quota-milter-ctl: account wrongtype: Redis: WRONGTYPE' <<<"$ERR")"
rcli DEL "qm:usage:{wrongtype}:$hour" >/dev/null

# top --by hourly|daily: SCAN for the window's keys, ranked by the window's total.
prevhour=$(date -u -d "@$((hstart - 3600))" +%Y-%m-%dT%H)
rcli HSET "qm:usage:{h1}:$hour" total 4 >/dev/null
rcli HSET "qm:usage:{h1}:$day" total 4 >/dev/null
rcli HSET "qm:usage:{h2}:$hour" total 9 >/dev/null
rcli HSET "qm:usage:{h2}:$day" total 9 >/dev/null
rcli HSET "qm:usage:{h3}:$day" total 45 >/dev/null		# today, not this hour
rcli HSET "qm:usage:{old}:$prevhour" total 500 >/dev/null	# another hour
rcli HSET "qm:usage:{monthonly}:$month" total 800 >/dev/null	# the month only
rcli HSET "qm:usage:{bad id}:$hour" total 700 >/dev/null	# no account id: skipped
rcli HSET "qm:usage:{h9}:$hour" total oops >/dev/null		# not a count: warned, skipped
rcli CONFIG RESETSTAT >/dev/null
ctl -c "$T/caps.conf" top --by hourly
check "top --by hourly: exit 0" test "$RC" = 0
check_eq "top --by hourly: head and order (this hour's total, then account)" \
	"ACCOUNT PLAN WINDOW USED CAP REMAINING STATUS|h2 free $hour 9 unlimited unlimited no_mail|dayfull capped $hour 5 5 0 exhausted|h1 free $hour 4 unlimited unlimited no_mail|capd capped $hour 3 3 0 hourly_cap|hostile capped $hour 0 5 5 ok" \
	"$(sed -E 's/  +/ /g' <<<"$OUT" | paste -sd'|')"
check "top --by hourly: a window total that is not a count is warned" grep -q "h9.*not a count, account skipped" <<<"$ERR"
stats=$(rcli INFO commandstats)
check "top --by hourly used SCAN" grep -q '^cmdstat_scan:calls=' <<<"$stats"
check "top --by hourly never used KEYS" test -z "$(grep '^cmdstat_keys:' <<<"$stats")"
ctl -c "$T/caps.conf" --json top --by=daily -n 3
check "top --by=daily -n 3 --json: exit 0, the huge total warned" \
	test "$RC" = 0 -a -n "$(grep 'hostile.*not a count, account skipped' <<<"$ERR")"
jq_eq "top --by daily --json: by, window, order, the day's numbers" \
	'[.by, .window, .month, [.accounts[] | [.account, .daily.used, .daily.cap]]]' \
	"[\"daily\",\"$day\",\"$month\",[[\"dayfull\",50,50],[\"h3\",45,-1],[\"capd\",40,50]]]"
ctl_ok "top --by monthly --json" -c "$T/caps.conf" --json top --by monthly -n 1
jq_eq "top --by monthly: the month's ranking, as without --by" '[.by, .window, .accounts[0].account]' \
	'["monthly",null,"monthonly"]'
ctl -c "$T/caps.conf" --json top -n 2 --by hourly
check "top --by hourly --json -n 2: exit 0" test "$RC" = 0
jq_eq "top --by hourly --json: the first two, the hour's numbers" \
	'[.by, .window, [.accounts[] | [.account, .hourly.used, .hourly.window]]]' \
	"[\"hourly\",\"$hour\",[[\"h2\",9,\"$hour\"],[\"dayfull\",5,\"$hour\"]]]"
rcli DEL "qm:usage:{hostile}:$day" "qm:usage:{hostile}:$hour" "qm:usage:{h9}:$hour" >/dev/null

# 6. top over 20 000 accounts: SCAN (never KEYS), fast, Redis never blocked.
big=2024-01
nacc=20000
awk -v m="$big" -v n="$nacc" 'BEGIN {
	for (i = 1; i <= n; i++) {
		k = "qm:usage:{acct" i "}:" m; v = (i * 7919) % 20011
		printf "*6\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$5\r\ntotal\r\n$%d\r\n%d\r\n$8\r\nmessages\r\n$1\r\n1\r\n",
			length(k), k, length(v ""), v
	}
}' | redis-cli -p "$REDIS_PORT" --pipe >"$T/pipe.log" 2>&1
check_eq "$nacc synthetic accounts loaded with redis-cli --pipe" "$nacc" \
	"$(rcli --scan --pattern "qm:usage:*:$big" | wc -l)"
want=$(awk -v n="$nacc" 'BEGIN { for (i = 1; i <= n; i++) print (i * 7919) % 20011, "acct" i }' |
	sort -k1,1nr -k2,2 | head -25 | awk '{print $2}' | paste -sd' ')
rcli CONFIG SET slowlog-log-slower-than 20000 >/dev/null
rcli SLOWLOG RESET >/dev/null
rcli CONFIG RESETSTAT >/dev/null
start=$(date +%s%N)
ctl_ok "top -n 25 over $nacc accounts" --json top "$big" -n 25
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "# top -n 25 over $nacc accounts: $ms ms ($build)"
check "top over $nacc accounts in ${ms} ms (< 5000)" test "$ms" -lt 5000
check_eq "top over $nacc accounts: the right 25, in order" "$want" "$(jq -r '[.accounts[].account] | join(" ")' <<<"$OUT")"
stats=$(rcli INFO commandstats)
check "top used SCAN" grep -q '^cmdstat_scan:calls=' <<<"$stats"
check "top never used KEYS" test -z "$(grep '^cmdstat_keys:' <<<"$stats")"
# Speed is the benchmark's business, not a test's: SCAN instead of KEYS is
# what keeps Redis unblocked; the slow log is only shown.
echo "# Redis slow log entries (20 ms or more) during the top: $(rcli SLOWLOG LEN)"
start=$(date +%s%N)
ctl_ok "export over $nacc accounts" export "$big"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "# export over $nacc accounts: $ms ms ($build)"
check_eq "export over $nacc accounts: one row each" $((nacc + 1)) "$(wc -l <<<"$OUT")"
check "export over $nacc accounts: sorted by account" bash -c "tail -n +2 '$T/out' | cut -d, -f1 | LC_ALL=C sort -c"
ctl_ok "top -n 100000 over $nacc accounts (all of them)" top "$big" -n 100000
check_eq "top -n larger than the accounts: each once" $((nacc + 1)) "$(wc -l <<<"$OUT")"

# 7. events: newest first, -n, fields, hostile bytes kept off the terminal.
rcli XADD qm:events '*' type threshold account acme month "$m" percent 80 used 16 limit 20 plan basic >/dev/null
rcli XADD qm:events '*' type exhausted account acme month "$m" used 20 limit 20 plan basic \
	note "$(printf 'x\033[31my')" >/dev/null
ctl_ok "events" events
has "events: head" "^TIME \(UTC\) +TYPE +ACCOUNT +MONTH +PERCENT +USED +LIMIT +PLAN +OTHER$"
check_eq "events: newest first" "exhausted threshold" "$(awk 'NR > 1 {print $3}' <<<"$OUT" | paste -sd' ')"
has "events: threshold fields" "^[0-9-]+ [0-9:]+ +threshold +acme +$m +80 +16 +20 +basic$"
check "events: no escape byte reaches the terminal" test -z "$(grep -P '\x1b' "$T/out")"
ctl_ok "events -n 1 --json" events -n 1 --json
jq_eq "events --json: the latest, fields, numbers as numbers" \
	'[(.events | length), .events[0].fields.type, .events[0].fields.used, .events[0].fields.note]' \
	'[1,"exhausted",20,"x\u001b[31my"]'
jq_eq "events --json: id and time" \
	'.events[0] | (.id | test("^[0-9]+-[0-9]+$")) and (.time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$"))' true

# 8. reset: the usage and the announced thresholds go, replay markers stay.
rcli HSET "qm:usage:{acme}:$m" total 20 messages 2 >/dev/null
rcli HSET "qm:warned:{acme}:$m" 80 1 100 1 exhausted 1 replay:host-1-2-3 1 >/dev/null
ctl_ok "reset" reset acme "$m"
check_eq "reset says so" "account acme: usage of $m reset" "$OUT"
check_eq "reset is DEL of the usage hash" 0 "$(rcli EXISTS "qm:usage:{acme}:$m")"
check_eq "reset clears the thresholds, keeps replay markers, notes when" "replay:host-1-2-3 reset" \
	"$(rcli HKEYS "qm:warned:{acme}:$m" | paste -sd' ')"
ctl_ok "reset again" --json reset acme "$m"
jq_eq "reset --json: nothing left to delete" . \
	"{\"account\":\"acme\",\"command\":\"reset\",\"month\":\"$m\",\"deleted\":false}"

# 9. End to end: the daemon counts, the ctl shows it; the ctl changes, the daemon obeys.
milter_up milter "$T/qm.conf" "$msock"
mpid=$MILTER_PID
# send LABEL RCPTS EXPECT - one crm message of account e2e through the daemon
send() { mt "$msock" message -D account=e2e -D label="$1" -D rcpts="$2" -D expect="$3"; }
ctl_ok "e2e: set-plan basic" set-plan e2e basic
ctl_ok "e2e: set-limit 5" set-limit e2e 5
send "3 recipients within the limit" 3 accept
ctl_ok "e2e: usage after one message" --json usage e2e
jq_eq "e2e: the ctl shows what the milter counted" '[.used,.messages,.categories.crm,.remaining,.percent,.status]' \
	'[3,1,3,2,60,"ok"]'
check_eq "e2e: and so does redis-cli" 3 "$(rcli HGET "qm:usage:{e2e}:$month" total)"
send "a fourth recipient crosses 80%" 1 accept
ctl_ok "e2e: events" --json events -n 1
jq_eq "e2e: the 80% threshold event, as the ctl shows it" \
	'.events[0].fields | [.type,.account,.month,.percent,.used,.limit,.plan]' \
	"[\"threshold\",\"e2e\",\"$month\",80,4,5,\"basic\"]"
ctl_ok "e2e: set-limit 4" set-limit e2e 4
send "after set-limit 4, the next is refused" 1 \
	"Monthly sending limit of 4 emails reached for account e2e (plan basic)"
ctl_ok "e2e: usage after a refusal" usage e2e
has "e2e: the refusal is counted in refused" "^refused +1$"
has "e2e: status exhausted" "^status +exhausted$"
ctl_ok "e2e: set-limit unlimited" set-limit e2e unlimited
send "after set-limit unlimited, accepted" 2 accept
ctl_ok "e2e: suspend" suspend e2e
send "after suspend, refused" 1 "Sending is suspended for account e2e"
ctl_ok "e2e: resume" resume e2e
send "after resume, accepted" 1 accept
ctl_ok "e2e: set-plan free, set-limit plan" set-plan e2e free
ctl_ok "e2e: set-limit plan" set-limit e2e plan
send "on plan free without override, refused" 1 "Plan free of account e2e does not include outgoing mail"
ctl_ok "e2e: set-plan basic" set-plan e2e basic
ctl_ok "e2e: reset" reset e2e
send "after reset, counted from zero" 2 accept
ctl_ok "e2e: usage after reset" --json usage e2e
jq_eq "e2e: usage after reset is the one message since" '[.used,.messages,.refused,.limit]' '[2,1,0,10000]'
# Caps through real charges: an hourly cap of 2 set by the ctl, obeyed and shown.
hour_guard
hour=$(date -u +%Y-%m-%dT%H)
reopens="$(date -u -d "@$(( $(date -u -d "$(date -u +%Y-%m-%d) $(date -u +%H):00" +%s) + 3600 ))" +%H):00 UTC"
ctl_ok "e2e: set-limit --hourly 2" set-limit e2e --hourly 2
send "2 recipients within the hourly cap" 2 accept
ctl_ok "e2e: usage at the hourly cap" --json usage e2e
jq_eq "e2e: the ctl shows the hour the milter counted" \
	'[.used, .hourly.window, .hourly.used, .hourly.cap, .hourly.cap_source, .hourly.remaining, .status]' \
	"[4,\"$hour\",2,2,\"override\",0,\"hourly_cap\"]"
check_eq "e2e: and so does redis-cli" 2 "$(rcli HGET "qm:usage:{e2e}:$hour" total)"
mt "$msock" message -D account=e2e -D label="over the hourly cap: 451 4.7.1" -D rcpts=1 \
	-D code=451 -D xcode=4.7.1 -D expect="Hourly sending limit of 2 emails reached for account e2e, try again after $reopens"
ctl_ok "e2e: top --by hourly" --json top --by hourly
jq_eq "e2e: top --by hourly ranks what the milter counted" \
	'[.accounts[] | select(.account == "e2e") | .hourly.used]' '[2]'
ctl_ok "e2e: set-limit --hourly plan" set-limit e2e --hourly plan
send "after set-limit --hourly plan (no cap in plan basic), accepted" 1 accept
check "e2e: the daemon stops cleanly" milter_stop "$mpid" milter

# 10. No sanitizer report from any ctl run; valgrind on a few (normal build).
check "no sanitizer report from the ctl" test -z "$(grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T/stderr.all")"
if ldd "$ctlbin" 2>/dev/null | grep -q libasan; then
	: # LeakSanitizer checked every run above
elif command -v valgrind >/dev/null; then
	for args in "--json usage bill" "-c $T/caps.conf usage capd" "-c $T/caps.conf --json top --by hourly" "top $m" "export $m" "events" "reset acme $m" "set-plan acme gold"; do
		# shellcheck disable=SC2086
		valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
			"$ctlbin" -c "$T/qm.conf" $args >/dev/null 2>"$T/vg.log"
		rc=$?
		check "valgrind: $args (exit $rc, no errors or leaks)" test "$rc" != 99 -a -z "$(grep '^==' "$T/vg.log")"
	done
else
	notok "valgrind is installed"
fi

# 11. Man pages: clean under groff -ww, and they name what they must.
if command -v groff >/dev/null; then
	for page in man/quota-milter.8 man/quota-milter-ctl.8 man/quota-milter.conf.5; do
		check "$page: no groff warnings" test -z "$(groff -man -Tutf8 -ww -z "$page" 2>&1)"
	done
	text() { groff -man -Tascii -P-cbou "$1" 2>/dev/null; }
	spec=${QM_SPEC:-../shared/SPEC.md}	# the product contract, beside the checkout
	if [ -f "$spec" ]; then
		# The Programs line: "COMMAND`: usage ACCOUNT [YYYY-MM] · top ... · export YYYY-MM ..."
		cmds=$(sed -n '/`quota-milter-ctl \[-c FILE\]/,/^$/p' "$spec" | tr '\n' ' ' |
			sed 's/.*COMMAND`: *//' | tr '·' '\n' | awk 'NF {print $1}' | paste -sd' ')
	else
		echo "# $spec not found (set QM_SPEC): the commands are not checked against SPEC"
	fi
	# What the program implements (its --help) is documented and named by SPEC; what
	# SPEC names and the program lacks is an open issue, reported, not counted.
	have=$("$build/quota-milter-ctl" --help | sed -n 's/^  \([a-z][a-z-]*\)\( .*\)\{0,1\}$/\1/p' | paste -sd' ')
	check "quota-milter-ctl --help lists its commands ($have)" test -n "$have"
	for c in $have; do
		check "quota-milter-ctl.8 documents $c" grep -qE "^ {7}$c( |$)" <(text man/quota-milter-ctl.8)
		[ -z "${cmds:-}" ] || check "SPEC names the command $c" grep -qw -- "$c" <<<"$cmds"
	done
	for c in ${cmds:-}; do
		grep -qw -- "$c" <<<"$have" || echo "# SPEC names $c: not implemented yet"
	done
	for o in $(grep -oE 'CFG_[A-Z_]+\("[a-z_]+"' conf/conf.c | sed -E 's/.*"(.*)"/\1/' | sort -u); do
		check "quota-milter.conf.5 documents $o" grep -qw -- "$o" <(text man/quota-milter.conf.5)
	done
	for r in exhausted no_mail suspended no_account bad_account untrusted conflict no_plan unknown_plan hourly_cap daily_cap race unavailable; do
		check "quota-milter.conf.5 documents reply $r" grep -qw -- "$r" <(text man/quota-milter.conf.5)
	done
	for o in -c -f -t -V SIGUSR1 SIGHUP SIGTERM; do
		check "quota-milter.8 documents $o" grep -qw -- "$o" <(text man/quota-milter.8)
	done
else
	notok "groff is installed (tests/deps.sh: groff-base)"
fi

finish
