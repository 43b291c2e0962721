#!/bin/bash
# hiredis1.sh - `make check-hiredis1`: build with hiredis 1.x and run the
# tests that talk to Redis against that build.
#
# Debian bookworm ships hiredis 0.14.1, which `make check` uses; the code
# keeps to the calls that 0.14 and 1.x share. This fetches libhiredis-dev
# and its library from Debian's next release (trixie: hiredis 1.2) straight
# from the archive's pool, without installing them: they are unpacked in
# $B/root, the build goes to $B (default build-hiredis1/) and runs with
# LD_LIBRARY_PATH pointing there. Then: check_counters (the pool, the
# script, faults), t_milter.sh and t_faults.sh. Not part of `make check`,
# which must not depend on another release's archive.
#
# Ends with "N passed, N failed", as tests/run.sh does.
set -u
cd "$(dirname "$0")/.." || exit 1
B=${B:-build-hiredis1}
SUITE=${HIREDIS1_SUITE:-trixie}
MIRROR=${HIREDIS1_MIRROR:-http://deb.debian.org/debian}
passed=0
failed=0

# fail TEXT - a failure that stops everything
fail() {
	echo "FAIL $*"
	echo "$passed passed, $((failed + 1)) failed"
	exit 1
}

# filename PACKAGE - the package's path in the pool, from the suite's index
filename() {
	xz -dc "$B/Packages.xz" | awk -v p="$1" '
		$1 == "Package:" { cur = $2 }
		$1 == "Filename:" && cur == p { print $2; exit }'
}

mkdir -p "$B/debs" "$B/pc"
curl -fsS -o "$B/Packages.xz" "$MIRROR/dists/$SUITE/main/binary-amd64/Packages.xz" ||
	fail "cannot fetch the $SUITE package index from $MIRROR"
for pkg in libhiredis-dev libhiredis1.1.0; do
	f=$(filename "$pkg")
	[ -n "$f" ] || fail "$pkg is not in $SUITE"
	curl -fsS -o "$B/debs/${f##*/}" "$MIRROR/$f" || fail "cannot fetch $f"
	dpkg-deb -x "$B/debs/${f##*/}" "$B/root" || fail "cannot unpack ${f##*/}"
done
root=$(cd "$B/root" && pwd)
lib=$root/usr/lib/x86_64-linux-gnu
version=$(sed -n 's/^Version: //p' "$lib/pkgconfig/hiredis.pc")
case $version in
1.*) echo "hiredis $version from $SUITE, unpacked in $B/root" ;;
*) fail "hiredis $version from $SUITE is not a 1.x" ;;
esac
sed -e "s|^libdir=.*|libdir=$lib|" -e "s|^includedir=.*|includedir=$root/usr/include|" \
    -e "s|^pkgincludedir=.*|pkgincludedir=$root/usr/include/hiredis|" \
    "$lib/pkgconfig/hiredis.pc" > "$B/pc/hiredis.pc"

PKG_CONFIG_PATH=$(cd "$B/pc" && pwd) make -s B="$B" all >"$B/make.log" 2>&1 ||
	{ tail -n 20 "$B/make.log"; fail "the build with hiredis $version"; }
export LD_LIBRARY_PATH=$lib
ldd "$B/quota-milter" | grep -q "$lib/libhiredis" ||
	fail "$B/quota-milter does not load the unpacked hiredis"
passed=$((passed + 1))
echo "ok   built with -Werror against hiredis $version"

out=$B/check_counters.log
"$B/tests/check_counters" >"$out" 2>&1
line=$(grep -E '^[0-9]+%: Checks: ' "$out" | tail -n 1)
n=$(sed -nE 's/.*Checks: ([0-9]+).*/\1/p' <<<"$line")
f=$(sed -nE 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1+\2/p' <<<"$line")
if [ -z "$line" ]; then
	echo "FAIL check_counters: no summary"; tail -n 20 "$out"; failed=$((failed + 1))
else
	f=$((f))
	passed=$((passed + n - f)) failed=$((failed + f))
	echo "$([ "$f" = 0 ] && echo "ok  " || echo FAIL) check_counters: $line"
	grep -E ':[EF]:' "$out" | head -n 20
fi
for t in t_milter t_faults; do
	out=$B/$t.log
	bash "tests/$t.sh" "$B" >"$out" 2>&1
	rc=$?
	ok=$(grep -c '^ok - ' "$out")
	nok=$(grep -c '^not ok - ' "$out")
	passed=$((passed + ok)) failed=$((failed + nok))
	if [ "$rc" != 0 ] || [ "$nok" -gt 0 ] || [ "$ok" = 0 ]; then
		echo "FAIL $t: $ok ok, $nok not ok, exit $rc"
		grep -E '^not ok - |^# ' "$out" | head -n 20
		[ "$nok" -gt 0 ] || failed=$((failed + 1))
	else
		echo "ok   $t: $ok cases"
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
