#!/bin/sh
# deps.sh - install with apt-get whatever the build and the tests need and
# this machine lacks. Postfix is preseeded to "No configuration" so that no
# system instance starts; the tests run their own. dpkg-dev, debhelper and
# lintian build and check the package (t_deb.sh); m4 and libwrap0 are what
# the unpacked, not installed, Sendmail of t_sendmail.sh needs (sendmail-bin
# conflicts with postfix). libfaketime moves the milter's clock across a month's end
# (t_milter_accounting.sh). python3-prometheus-client parses the output of
# quota-milter-ctl metrics (t_stats.sh).
set -eu

PKGS="gcc make pkg-config libc6-dev libmilter-dev libhiredis-dev libconfuse-dev
check redis-server redis-tools postfix miltertest valgrind
dpkg-dev debhelper lintian tzdata m4 libwrap0 jq groff-base
clang libclang-rt-14-dev libfaketime python3-prometheus-client"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing packages:$missing" >&2
	echo "deps.sh: run as root, or: sudo apt-get install$missing" >&2
	exit 1
fi
echo "deps.sh: installing$missing"
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
