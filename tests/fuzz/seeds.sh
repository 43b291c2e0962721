#!/bin/bash
# seeds.sh - write the seed corpora in tests/fuzz/corpus/<target>/
#
# The seeds are small, meaningful inputs in each target's input format
# (see the comment at the top of each fuzz_*.c); this script is how they
# were made, so a format change can regenerate them. Run from anywhere:
#	bash tests/fuzz/seeds.sh
set -eu
cd "$(dirname "$0")"
C=corpus
rm -rf "$C.new"
mkdir -p "$C.new"/{fuzz_conf,fuzz_classify,fuzz_account,fuzz_reply}

# put TARGET NAME FORMAT [ARGS...] - one seed, written with printf
put() { local t=$1 n=$2; shift 2; printf "$@" >"$C.new/$t/$n"; }

# --- fuzz_conf: whole conf files, good and bad
cp ../../conf/quota-milter.conf "$C.new/fuzz_conf/shipped.conf"
put fuzz_conf empty.conf ''
put fuzz_conf sentinel-replies.conf '%s\n' \
	'mode = "monitor"  unit = "messages"  on_redis_error = "accept"' \
	'warn_percent = { 100, 50, 90 }  keep_months = 1  default_plan = ""' \
	'redis { address = "[::1]:6379" sentinels = { "10.0.0.1:26379", "[2001:db8::2]:26379" } master = "mymaster" prefix = "t:" }' \
	'account { source = "sasl" pattern = "^[^@]+@(.+)$" trusted_networks = { "::ffff:10.0.0.0/104" } strip_headers = false }' \
	'category relay { sasl = "^app-[0-9]+$" sender = '"'"'@notify\.example\.com$'"'"' client = { "10.1.0.0/16", "2001:db8:1::/48" } daemon = "submission" }' \
	'plan basic { monthly = 10 }' \
	'reply exhausted { text = "Account $account used $used of $limit (100%) $$" }' \
	'reply unavailable { code = "450" xcode = "4.3.0" }'
put fuzz_conf unix-socket.conf '%s\n' 'socket = "unix:/run/qm.sock"' 'redis { address = "unix:/run/redis.sock" }' \
	'category c { daemon = "smtpd" }' 'plan free { monthly = 0 }'
put fuzz_conf bad-option.conf 'nosuchoption = 1\n'
put fuzz_conf bad-regex.conf 'category c { header = "X-C" match = "(" }\nplan free { monthly = 0 }\n'
put fuzz_conf bad-cidr.conf 'account { trusted_networks = { "10.0.0.1/8" } }\nplan free { monthly = 0 }\n'
put fuzz_conf no-default-plan.conf 'default_plan = "gold"\nplan free { monthly = 0 }\n'
put fuzz_conf lone-dollar.conf 'plan free { monthly = 0 }\nreply conflict { text = "costs 5$" }\n'
put fuzz_conf xcode-mismatch.conf 'plan free { monthly = 0 }\nreply race { code = "550" }\n'
put fuzz_conf reserved-category.conf 'plan free { monthly = 0 }\ncategory Total { sasl = "." }\n'
put fuzz_conf duplicate-plan.conf 'plan free { monthly = 0 }\nplan free { monthly = 1 }\n'
put fuzz_conf unterminated.conf 'plan free { monthly = 0 }\naccount { header = "X-A\n'
put fuzz_conf comment-env.conf '/* c */\nplan free { monthly = 0 }\nuser = "${USER}"\n/* open'
# A quoted value with a newline in an error: the reason must stay one line.
put fuzz_conf bug-reason-newline.conf 'user = "a\\nb"\n'

# --- fuzz_classify: FLAGS, 16 address bytes, sender, sasl, daemon, headers
# FLAGS: conf (0 header, 1 sasl, 2 sender-domain, 3 header+pattern)
#	+ 4 * client (0 none, 1 IPv4, 2 IPv6, 3 IPv4-mapped)
#	+ 0x10 no sasl + 0x20 no daemon + 0x40 headers not seen + 0x80 truncated
v4() { local IFS=.; set -- $1; printf '\\x%02x\\x%02x\\x%02x\\x%02x' "$@"; printf '\\x00%.0s' {1..12}; }
v6_2001db8() { printf '\\x20\\x01\\x0d\\xb8'; printf '\\x00%.0s' {1..11}; printf '\\x%02x' "$1"; }
put fuzz_classify header-trusted "\\x04$(v4 127.0.0.1)%s\\0%s\\0%s\\0%s\\0%s\\0%s\\0%s" \
	news@acme.example "" smtpd X-Quota-Account acme x-quota-category crm
put fuzz_classify header-untrusted "\\x04$(v4 192.0.2.1)%s\\0%s\\0%s\\0%s\\0%s\\0%s\\0%s" \
	news@acme.example "" smtpd X-Quota-Account acme X-Quota-Category marketing
put fuzz_classify header-conflict "\\x04$(v4 127.0.0.2)%s\\0%s\\0%s\\0%s\\0%s\\0%s\\0%s\\0%s\\0%s" \
	a@b.example "" smtpd X-Quota-Account acme X-QUOTA-ACCOUNT globex X-Quota-Category workflow
put fuzz_classify header-authenticated-badid "\\x00$(v4 0.0.0.0)%s\\0%s\\0%s\\0%s\\0%s\\0%s\\0%s" \
	a@b.example user1 smtpd X-Quota-Account 'acme corp' X-Quota-Category automation
put fuzz_classify header-before-eoh "\\x44$(v4 127.0.0.1)%s\\0%s\\0%s" a@b.example "" smtpd
put fuzz_classify header-truncated "\\x84$(v4 127.0.0.1)%s\\0%s\\0%s\\0%s\\0%s" \
	a@b.example "" smtpd X-Quota-Category crm
put fuzz_classify relay "\\x04$(v4 10.1.2.3)%s\\0%s\\0%s" alerts@notify.example.com app-12 submission
put fuzz_classify relay-v6 "\\x08$(v6_2001db8 0)%s\\0%s\\0%s" alerts@notify.example.com app-7 submission
put fuzz_classify sasl-pattern-mapped "\\x0d$(v4 192.0.2.9)%s\\0%s\\0%s" \
	bounce@acme.example mailer@acme-corp submission
put fuzz_classify sasl-tagged "\\x05$(v4 10.9.9.9)%s\\0%s\\0%s\\0%s\\0%s" \
	x@crm.example api-1@globex smtpd X-Kind yes
put fuzz_classify sasl-none "\\x31$(v4 10.9.9.9)%s\\0%s\\0%s" bounce@x.example "" ""
put fuzz_classify sender-domain "\\x0a$(v6_2001db8 1)%s\\0%s\\0%s\\0%s\\0%s" \
	Info@Acme.EXAMPLE "" smtpd x-quota-category news
put fuzz_classify sender-domain-null "\\x02$(v4 0.0.0.0)%s\\0%s\\0%s" "" "" smtpd
put fuzz_classify header-pattern "\\x07$(v4 192.0.2.5)%s\\0%s\\0%s\\0%s\\0%s\\0%s\\0%s" \
	a@b.example "" smtpd X-Tenant 'tenant-globex rest' X-Quota-Category 'a crm b'
put fuzz_classify header-pattern-empty "\\x07$(v4 192.0.2.5)%s\\0%s\\0%s\\0%s\\0%s" \
	a@b.example "" smtpd x-tenant tenant-

# --- fuzz_account: account, prefix, month, journal line, category
put fuzz_account valid 'acme\0qm:\0002026-11\0%s\0crm' $'0123456789abcdef-1 2026-11 acme crm 3 0\n'
put fuzz_account email-id 'info@acme-corp.example+tag_1\0prod:qm:\0002199-12\0%s\0-' \
	$'fedcba9876543210-42 2199-12 info@acme-corp.example+tag_1 - 0 2\n'
put fuzz_account bad-chars 'acme corp\0qm:\0001969-12\0%s' $'x 2026-13 acme crm 1 1\n'
put fuzz_account too-long "$(printf 'a%.0s' {1..129})\\0qm:\\0002026-01\\0%s" \
	"id 2026-01 $(printf 'a%.0s' {1..129}) crm 1 1"$'\n'
put fuzz_account max-length "$(printf 'b%.0s' {1..128})\\0$(printf 'p%.0s' {1..64})\\0002026-01\\0%s" \
	"id 2026-01 $(printf 'b%.0s' {1..128}) c 999999999 999999999"$'\n'
put fuzz_account brace-prefix 'acme\0qm{x}:\0002026-11\0%s' $'id 2026-11 acme total 1 0\n'
put fuzz_account empty '\0\0\0\0'
put fuzz_account journal-extra 'acme\0qm:\0002026-11\0%s' $'id 2026-11 acme crm 1 0 extra\n'
put fuzz_account journal-negative 'acme\0qm:\0002026-11\0%s' $'id 2026-11 acme crm -1 0\n'
# Lines journal_parse_line() must refuse: fields glued or split by sscanf widths.
put fuzz_account bug-journal-glued-month 'acme\0qm:\0002026-11\0%s' $'id 2026-11acme crm 5 1\n'
put fuzz_account bug-journal-long-account 'acme\0qm:\0002026-11\0%s' \
	"id 2026-01 $(printf 'a%.0s' {1..129}) 1 1"$'\n'
put fuzz_account bug-journal-plus-number 'acme\0qm:\0002026-11\0%s' $'id 2026-11 acme crm 5+1\n'

# --- fuzz_reply: size byte, limit (8), used (8), NULL mask, template, vars
le() { local n=$1 i; for i in 0 1 2 3 4 5 6 7; do printf '\\x%02x' $(( (n >> (8 * i)) & 255 )); done; }
put fuzz_reply exhausted "\\x40$(le 10000)$(le 10000)\\x00%s\\0%s\\0%s\\0%s\\0%s\\0%s" \
	'Monthly sending limit of $limit emails reached for account $account (plan $plan)' \
	acme basic crm X-Quota-Account exhausted
put fuzz_reply unlimited "\\x10$(le 0)$(le 5)\\x80%s\\0%s\\0%s" 'Limit $limit, used $used' acme enterprise
put fuzz_reply percent-dollar "\\x05$(le 1)$(le 2)\\x00%s\\0%s\\0%s" '100%% sure: $$5, $unknown, $' '50%off' 'p%'
put fuzz_reply nulls "\\xff$(le -5)$(le -9223372036854775808)\\x3e%s" 'No sending account for $category mail: $reason ($header)'
put fuzz_reply control-bytes "\\x00$(le 7)$(le 7)\\x00%s\\0%s\\0\\xc3\\xa9t\\xc3\\xa9\\0%s" \
	$'line\r\nbreak\tand \x7f del' $'acc\nount' 'reason'
put fuzz_reply prefix-vars "\\x03$(le 3)$(le 4)\\x00%s\\0%s\\0%s" '$accounts $plans $limits$used$$$account' a b

# Inputs the fuzzers found (regress-*) are kept as they are.
for f in "$C"/*/regress-*; do
	[ -e "$f" ] && cp "$f" "$C.new/$(basename "$(dirname "$f")")/"
done
rm -rf "$C"
mv "$C.new" "$C"
for d in "$C"/*; do echo "$(basename "$d"): $(ls "$d" | wc -l) seeds"; done
