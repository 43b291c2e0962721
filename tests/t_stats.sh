#!/bin/bash
# t_stats.sh BUILD - fleet health: the milter's reports in qm:host:{HOST}
# and quota-milter-ctl hosts and metrics, end to end. A throwaway Postfix
# with the real daemon (stats_interval = 1) takes a known mix of accepted,
# refused and tempfailed mail; hosts --json and metrics (parsed by Debian's
# python3-prometheus-client) must report exactly those counts. A second
# milter with another hostname is a second host, gone 3 intervals after it
# stops; a host name from Redis is untrusted and comes out escaped; with
# Redis away mail is still decided and the skipped write logged once.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
. tests/postfix.sh
build=${1:-build}
ctl=$build/quota-milter-ctl

[ -x "$build/quota-milter" ] || { notok "$build/quota-milter is built"; finish; }
PY=python3
$PY -c 'import prometheus_client' 2>/dev/null || PY=/usr/bin/python3
$PY -c 'import prometheus_client' 2>/dev/null ||
	{ notok "python3-prometheus-client is installed (tests/deps.sh)"; finish; }

# send ACCOUNT CATEGORY SUBJECT - one message, one recipient, through Postfix
send() { smtp_msg "$PF_SMTP_PORT" "$1" "$2" "$3" "r$NMSG@dest.example"; }

# field HOST NAME - one field of a host's report
field() { rcli HGET "qm:host:{$1}" "$2"; }

# field_is HOST NAME VALUE - does the report's field hold VALUE now?
field_is() { [ "$(field "$1" "$2")" = "$3" ]; }

# hosts_json - quota-milter-ctl --json hosts on the first conf
hosts_json() { "$ctl" -c "$T/a.conf" --json hosts; }

# jq_host HOST EXPR - EXPR on HOST's object of hosts --json
jq_host() { hosts_json | jq -r --arg h "$1" ".hosts[] | select(.host == \$h) | $2"; }

# host_count - how many hosts hosts --json lists
host_count() { hosts_json | jq '.hosts | length'; }

# hosts_are N - does hosts --json list N hosts now?
hosts_are() { [ "$(host_count)" = "$1" ]; }

redis_start
accounts <<EOA
acme basic limit 3
sus basic suspended 1
zed gold
EOA

aport=$(free_port)
write_conf "$T/a.conf" "inet:$aport@127.0.0.1" 'hostname = "mx-a"' \
	's|^stats_interval .*|stats_interval = 1|'
milter_up mx-a "$T/a.conf" "inet:$aport@127.0.0.1" || finish
apid=$MILTER_PID
if ! postfix_start "$T/postfix" "$(free_port)" "$(postfix_milter_conf "inet:127.0.0.1:$aport")"; then
	notok "postfix started"; finish
fi
ok "postfix with milter mx-a started"

# 1. The known mix: 3 accepted, 1 refused exhausted (550), 1 refused
# suspended (550), 2 tempfailed unknown_plan (451, plan gold not in the
# conf), 1 without a category (let through uncounted): 8 messages.
replies=""
for i in 1 2 3 4; do send acme crm "acme $i"; replies+="${SMTP_DATA_REPLY%% *} "; done
send sus crm "sus"; replies+="${SMTP_DATA_REPLY%% *} "
for i in 1 2; do send zed crm "zed $i"; replies+="${SMTP_DATA_REPLY%% *} "; done
send "" "" "no category"; replies+="${SMTP_DATA_REPLY%% *} "
check_eq "1: the mix's replies" "250 250 250 550 550 451 451 250 " "$replies"
wait_for "8 messages in mx-a's report" 10 field_is mx-a messages 8
wait_for "no session open in mx-a's report" 10 field_is mx-a sessions_open 0
sleep 1.2			# one report more: prev_ holds these counts too

check_eq "1: one host" 1 "$(host_count)"
check_eq "1: hosts --json counts of mx-a" \
	"8 3 1 1 1 2 0 0 0 0 0" \
	"$(jq_host mx-a '[.messages, .accepted, .uncounted, .refused.exhausted, .refused.suspended,
		.tempfailed.unknown_plan, .tempfailed.unavailable, .tempfailed.race,
		.redis_errors, .sessions_open, .journal_pending] | map(tostring) | join(" ")')"
check_eq "1: no other reply counted" 4 \
	"$(jq_host mx-a '([.refused[], .tempfailed[]] | add)')"
check "1: Redis round trips counted" test "$(jq_host mx-a .redis_round_trips)" -ge 6
check_eq "1: version, interval, reloads" "0.1.0 1 0" \
	"$(jq_host mx-a '"\(.version) \(.interval) \(.reloads)"')"
check "1: latency p50 and p99 from the histogram" \
	test "$(jq_host mx-a '.redis_latency_p50_seconds > 0 and .redis_latency_p99_seconds >= .redis_latency_p50_seconds')" = true
check "1: rates over the last interval: nothing new, 0/s" \
	test "$(jq_host mx-a '"\(.messages_per_second) \(.refusals_per_second)"')" = "0 0"
check "1: the report expires after 3 intervals" \
	test "$(rcli PTTL 'qm:host:{mx-a}')" -gt 0 -a "$(rcli PTTL 'qm:host:{mx-a}')" -le 3000
check "1: hosts prints a line for mx-a" grep -qE '^mx-a +0\.1\.0 ' <("$ctl" -c "$T/a.conf" hosts)

# 2. metrics, parsed by the real Prometheus parser: names, types, labels,
# the histogram, and the same counts; the fleet gauges from the usage hashes.
"$ctl" -c "$T/a.conf" metrics > "$T/metrics.prom"
check "2: metrics exits 0" test -s "$T/metrics.prom"
cat > "$T/parse.py" <<'EOF'
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
host = sys.argv[2]
def one(name, **labels):
    labels = dict(labels, **({"host": host} if name not in fleet else {}))
    got = [s.value for f in fams.values() for s in f.samples
           if s.name == name and s.labels == labels]
    return "missing" if len(got) != 1 else "%g" % got[0]
fleet = {"quota_milter_accounts_at_or_above_percent", "quota_milter_accounts_exhausted",
         "quota_milter_used_units"}
want_types = {"quota_milter_messages": "counter", "quota_milter_accepted": "counter",
    "quota_milter_uncounted": "counter", "quota_milter_refused": "counter",
    "quota_milter_tempfailed": "counter", "quota_milter_redis_round_trips": "counter",
    "quota_milter_redis_errors": "counter", "quota_milter_redis_timeouts": "counter",
    "quota_milter_redis_latency_seconds": "histogram", "quota_milter_journal_pending": "gauge",
    "quota_milter_sessions_open": "gauge", "quota_milter_start_time_seconds": "gauge",
    "quota_milter_reloads": "counter", "quota_milter_info": "gauge",
    "quota_milter_accounts_at_or_above_percent": "gauge",
    "quota_milter_accounts_exhausted": "gauge", "quota_milter_used_units": "gauge"}
bad = [n for n, t in want_types.items() if n not in fams or fams[n].type != t]
print("types", "ok" if not bad else "bad: " + " ".join(bad))
print("documented", all(f.documentation for f in fams.values()))
print("counts", one("quota_milter_messages_total"), one("quota_milter_accepted_total"),
      one("quota_milter_uncounted_total"),
      one("quota_milter_refused_total", reply="exhausted"),
      one("quota_milter_refused_total", reply="suspended"),
      one("quota_milter_tempfailed_total", reply="unknown_plan"),
      one("quota_milter_tempfailed_total", reply="unavailable"),
      one("quota_milter_redis_errors_total"), one("quota_milter_sessions_open"),
      one("quota_milter_journal_pending"))
h = fams["quota_milter_redis_latency_seconds"]
b = [(s.labels["le"], s.value) for s in h.samples
     if s.name.endswith("_bucket") and s.labels.get("host") == host]
les = [le for le, _ in b]
print("buckets", " ".join(les))
vals = [v for _, v in b]
count = [s.value for s in h.samples if s.name.endswith("_count") and s.labels["host"] == host]
total = [s.value for s in h.samples if s.name.endswith("_sum") and s.labels["host"] == host]
print("cumulative", vals == sorted(vals) and count == [vals[-1]] and total[0] > 0,
      "count=round_trips", "%g" % count[0] == one("quota_milter_redis_round_trips_total"))
print("info", [s.labels.get("version") for s in fams["quota_milter_info"].samples
               if s.labels.get("host") == host])
print("fleet", one("quota_milter_accounts_at_or_above_percent", percent="80"),
      one("quota_milter_accounts_at_or_above_percent", percent="100"),
      one("quota_milter_accounts_exhausted"), one("quota_milter_used_units", plan="basic"))
EOF
$PY "$T/parse.py" "$T/metrics.prom" mx-a > "$T/parsed" 2>&1
sed 's/^/# /' "$T/parsed" | grep -i -A3 'error\|traceback' | head -20
check_eq "2: every family, its type" "types ok" "$(grep '^types' "$T/parsed")"
check_eq "2: every family has HELP" "documented True" "$(grep '^documented' "$T/parsed")"
check_eq "2: the mix's counts, labelled host and reply" "counts 8 3 1 1 1 2 0 0 0 0" \
	"$(grep '^counts' "$T/parsed")"
check_eq "2: the histogram's buckets" \
	"buckets 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 +Inf" \
	"$(grep '^buckets' "$T/parsed")"
check_eq "2: cumulative, _count is the round trips, _sum > 0" "cumulative True count=round_trips True" \
	"$(grep '^cumulative' "$T/parsed")"
check_eq "2: info carries the version" "info ['0.1.0']" "$(grep '^info' "$T/parsed")"
# acme: 3 of 3 (80 % and 100 %, exhausted); sus: refused, total 0; zed: no usage
check_eq "2: fleet gauges from this month's usage hashes" "fleet 1 1 1 3" \
	"$(grep '^fleet' "$T/parsed")"
check "2: HELP and TYPE lines name the _total" \
	grep -qx '# TYPE quota_milter_messages_total counter' "$T/metrics.prom"

# 3. Day and hour usage keys of the month are not monthly usage; a SCAN
# pattern that took them would count acme's units twice.
rcli HSET "qm:usage:{acme}:$(date -u +%Y-%m-%d)" total 3 limit 3 plan basic >/dev/null
rcli HSET "qm:usage:{acme}:$(date -u +%Y-%m-%dT%H)" total 3 limit 3 plan basic >/dev/null
"$ctl" -c "$T/a.conf" metrics > "$T/metrics3.prom"
check "3: a day's and an hour's usage keys are not counted" \
	grep -qx 'quota_milter_used_units{plan="basic"} 3' "$T/metrics3.prom"

# 4. A hostile host name in Redis: escaped in JSON, in labels, on the terminal.
rcli HSET $'qm:host:{ev"il\\\n\e[31m}' time 1 version $'1\e]0;x\a' messages 5 >/dev/null
check_eq "4: JSON: the name read back as it is" $'ev"il\\\n\e[31m' \
	"$(hosts_json | jq -r '.hosts[] | select(.messages == 5) | .host')"
"$ctl" -c "$T/a.conf" metrics > "$T/metrics4.prom"
$PY -c 'import sys
from prometheus_client.parser import text_string_to_metric_families as parse
for f in parse(open(sys.argv[1]).read()):
    if f.name == "quota_milter_messages":
        print("hosts", " ".join(sorted(s.labels["host"] for s in f.samples)))' \
	"$T/metrics4.prom" > "$T/parsed4" 2>&1
check_eq "4: Prometheus: parsed, its label escaped (\\e made ?)" "hosts ev\"il\\"$'\n'"?[31m mx-a" \
	"$(grep -A1 '^hosts' "$T/parsed4")"
check "4: no control byte in the metrics" bash -c "! LC_ALL=C grep -q \$'[\\x01-\\x09\\x0b-\\x1f]' '$T/metrics4.prom'"
"$ctl" -c "$T/a.conf" hosts > "$T/hosts4.txt"
check "4: no control byte in hosts" bash -c "! LC_ALL=C grep -q \$'[\\x01-\\x09\\x0b-\\x1f]' '$T/hosts4.txt'"
rcli DEL $'qm:host:{ev"il\\\n\e[31m}' >/dev/null

# 4b. Hand-made reports the milter never writes: two names that print
# alike once escaped give one series, not two (a duplicate breaks the
# whole file for node_exporter); buckets that decrease are made cumulative;
# a usage total beyond any count the milter keeps is not summed.
rcli HSET $'qm:host:{\xc3\xa9}' time 1 version x messages 7 redis_latency_le_0.001 5 \
	redis_latency_le_0.0025 2 >/dev/null
rcli HSET $'qm:host:{\xc3\xa8}' time 1 version x messages 8 redis_latency_le_0.001 5 \
	redis_latency_le_0.0025 2 >/dev/null
rcli HSET "qm:usage:{huge}:$(date -u +%Y-%m)" total 999999999999999999 plan basic >/dev/null
"$ctl" -c "$T/a.conf" metrics > "$T/metrics4b.prom" 2> "$T/metrics4b.err"
$PY -c 'import sys
from prometheus_client.parser import text_string_to_metric_families as parse
seen = set()
for f in parse(open(sys.argv[1]).read()):
    for s in f.samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        if key in seen:
            print("duplicate", key)
        seen.add(key)
        if s.name == "quota_milter_messages_total" and s.labels["host"] == "??":
            print("messages", int(s.value))
        if s.name == "quota_milter_redis_latency_seconds_bucket" and s.labels["host"] == "??":
            print("le", s.labels["le"], int(s.value))
        if s.name == "quota_milter_used_units" and s.labels["plan"] == "basic":
            print("basic", int(s.value))' "$T/metrics4b.prom" > "$T/parsed4b" 2>&1
check_eq "4b: no duplicate series, one sample for the two hosts" 1 \
	"$(grep -cE '^(duplicate|messages)' "$T/parsed4b")"
check "4b: that of either (whichever SCAN gave first)" grep -qxE 'messages (7|8)' "$T/parsed4b"
check_eq "4b: the other one named on stderr" 1 "$(grep -c 'left out' "$T/metrics4b.err")"
check_eq "4b: a decreasing bucket reads as the one before" "le 0.0025 5" \
	"$(grep '^le 0.0025 ' "$T/parsed4b")"
check "4b: a total beyond QM_COUNT_MAX not summed" \
	awk '$1 == "basic" { found = 1; if ($2 >= 999999999999999999) exit 1 } END { exit !found }' "$T/parsed4b"
rcli DEL $'qm:host:{\xc3\xa9}' $'qm:host:{\xc3\xa8}' "qm:usage:{huge}:$(date -u +%Y-%m)" >/dev/null

# 5. A reload: the new conf applies, the report says so.
kill -USR1 "$apid"
wait_for "mx-a's report shows the reload" 10 field_is mx-a reloads 1
check_eq "5: reloads 1" 1 "$(field mx-a reloads)"
check "5: conf_loaded moved" test "$(field mx-a conf_loaded)" -ge "$(field mx-a started)"

# 6. Two milters, two host names: two hosts; a stopped one drops out after
# its expiry (3 intervals), not before its last report ends.
bport=$(free_port)
write_conf "$T/b.conf" "inet:$bport@127.0.0.1" 'hostname = "mx-b"' \
	's|^stats_interval .*|stats_interval = 1|'
if milter_up mx-b "$T/b.conf" "inet:$bport@127.0.0.1"; then
	bpid=$MILTER_PID
	wait_for "mx-b reports" 10 hosts_are 2
	check_eq "6: two hosts" "mx-a mx-b" "$(hosts_json | jq -r '[.hosts[].host] | join(" ")')"
	check_eq "6: mx-b saw no mail" 0 "$(jq_host mx-b .messages)"
	check "6: mx-b stops cleanly" milter_stop "$bpid" mx-b
	check_eq "6: just stopped, still listed" 2 "$(host_count)"
	wait_for "mx-b to drop out" 6 hosts_are 1
	check_eq "6: 3 intervals later, only mx-a" "mx-a" "$(hosts_json | jq -r '[.hosts[].host] | join(" ")')"
fi

# 7. stats_interval = 0: no report at all.
cport=$(free_port)
write_conf "$T/c.conf" "inet:$cport@127.0.0.1" 'hostname = "mx-c"' \
	's|^stats_interval .*|stats_interval = 0|'
if milter_up mx-c "$T/c.conf" "inet:$cport@127.0.0.1"; then
	sleep 1.5
	check_eq "7: stats_interval = 0 writes no report" 0 "$(rcli EXISTS 'qm:host:{mx-c}')"
	check "7: mx-c stops cleanly" milter_stop "$MILTER_PID" mx-c
fi

# 8. Redis away: mail is still decided (on_redis_error = tempfail: 451), the
# report is skipped and that logged once; once back, logged again, and the
# report counts the tempfail and the Redis errors.
kill "$REDIS_PID"
wait_for "redis-server to stop" 10 bash -c "! redis-cli -p $REDIS_PORT ping"
send acme crm "while Redis is away"
check_eq "8: Redis away: the message is tempfailed" "451 4.3.0" "$(cut -d' ' -f1-2 <<<"$SMTP_DATA_REPLY")"
sleep 3.5
check_eq "8: the skipped write logged once" 1 \
	"$(grep -c 'stats: write to Redis skipped: ' "$T/mx-a.log")"
redis_start "$REDIS_PORT"
wait_for "mx-a's report back" 10 field_is mx-a tempfailed_unavailable 1
check_eq "8: logged again when it works again" 1 \
	"$(grep -c 'stats: writing to Redis again' "$T/mx-a.log")"
check_eq "8: the tempfail counted, and the messages" "1 9" \
	"$(jq_host mx-a '"\(.tempfailed.unavailable) \(.messages)"')"
check "8: Redis errors counted" test "$(jq_host mx-a .redis_errors)" -ge 1

postfix_stop
check "mx-a stops cleanly" milter_stop "$apid" mx-a
finish
