#!/bin/sh
# peers.sh - install from Debian the peers that `make bench` compares
# quota-milter with: rspamd (its milter proxy, with only its ratelimit
# module) and postfwd (a Postfix policy server with one rate rule). The
# bench runs its own throwaway instances of both (tests/bench/bench.sh):
# their system services must neither start now nor at boot. `make check`
# does not install them; the smoke test (BENCH_QUICK=1) does not run them.
set -eu

PKGS="rspamd postfwd"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "peers.sh: missing packages:$missing" >&2
	echo "peers.sh: run as root, or: sudo apt-get install --no-install-recommends$missing" >&2
	exit 1
fi
echo "peers.sh: installing$missing (services kept stopped and disabled)"

# While installing, a policy-rc.d that denies every start keeps the
# packages' init scripts from starting their daemons (unless the machine
# already has one, which is left as it is).
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\n# peers.sh (quota-milter bench): no service starts while installing\nexit 101\n' \
		> /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	made_policy=1
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing

# Not at boot either, and stopped if a policy-rc.d of the machine let
# them start.
for s in rspamd postfwd; do
	if [ -d /run/systemd/system ]; then
		systemctl disable --now "$s.service" >/dev/null 2>&1 || true
	else
		systemctl disable "$s.service" >/dev/null 2>&1 || true
		if [ -z "$made_policy" ] && [ -x "/etc/init.d/$s" ]; then
			"/etc/init.d/$s" stop >/dev/null 2>&1 || true
		fi
	fi
	update-rc.d "$s" disable >/dev/null 2>&1 || true
done
