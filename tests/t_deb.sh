#!/bin/bash
# t_deb.sh BUILD - the Debian package: `make deb` builds it from a copy of
# the files git would commit (so it tests what will be committed, not this
# work tree's builds), lintian checks it, and it is installed on this
# machine, run, reinstalled and purged. Needs root and dpkg-dev, debhelper,
# lintian (tests/deps.sh). The package builds its own; BUILD is what
# `make install` installs from (its conf's mode, never overwritten).
#
# It installs into the real system (maintainer scripts, adduser, the systemd
# unit): meant for a throwaway test machine. It refuses to run where
# quota-milter is installed already or left files behind, and leaves the
# machine as it found it, even on failure: the package purged and the
# quota-milter user and group removed if the test made them.
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh
PKG=quota-milter
CONF=/etc/quota-milter/quota-milter.conf
STATE=/var/lib/quota-milter
month=$(date -u +%Y-%m)
build=${1:-build}

# quiet COMMAND... - run it, its output shown only as comments when it fails
# shellcheck disable=SC2317  # called through check
quiet() {
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	[ "$rc" = 0 ] || sed 's/^/# /' <<<"$out"
	return "$rc"
}

# deb_status - the package's dpkg status word ("installed", "config-files",
# ...), empty when dpkg does not know it
deb_status() { dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null; }

user_before=$(getent passwd "$PKG")
group_before=$(getent group "$PKG")
touched=""

# deb_cleanup - stop what runs as the user, purge, remove what the test made
# shellcheck disable=SC2317  # called by the EXIT trap
deb_cleanup() {
	local p
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for _ in $(seq 1 40); do
		for p in $PIDS; do kill -0 "$p" 2>/dev/null && break; done
		kill -0 "$p" 2>/dev/null || break
		sleep 0.05
	done
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	[ -n "$touched" ] || return 0
	if [ -n "$(deb_status)" ]; then
		echo "# purging $PKG"
		timeout 120 dpkg --purge "$PKG" </dev/null >>"$T/dpkg.log" 2>&1 ||
			tail -5 "$T/dpkg.log" | sed 's/^/# /'
	fi
	[ -z "${made_run:-}" ] || rm -rf /run/quota-milter
	if [ -z "$user_before" ] && getent passwd "$PKG" >/dev/null; then
		userdel "$PKG" || echo "# could not remove the user $PKG"
	fi
	if [ -z "$group_before" ] && getent group "$PKG" >/dev/null; then
		groupdel "$PKG" || echo "# could not remove the group $PKG"
	fi
}
trap 'unset IFS; deb_cleanup; cleanup' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Preconditions: this must be a machine where the test may install.
[ "$(id -u)" = 0 ] || { notok "t_deb.sh runs as root (it installs the package)"; finish; }
for tool in dpkg-buildpackage dh lintian miltertest redis-server; do
	command -v "$tool" >/dev/null || { notok "$tool is installed (tests/deps.sh)"; finish; }
done
if [ -n "$(deb_status)" ] && [ "$(deb_status)" != not-installed ]; then
	notok "$PKG is not installed before the test (status $(deb_status)): not touching it"; finish
fi
for f in /etc/quota-milter "$STATE" /usr/sbin/quota-milter; do
	[ ! -e "$f" ] || { notok "$f does not exist before the test: not touching it"; finish; }
done

# 1. Build and lint.
start=$(date +%s)
if ! timeout 300 make deb DEB_OUT="$T/deb" >"$T/build.log" 2>&1; then
	notok "make deb builds the package"; tail -25 "$T/build.log" | sed 's/^/# /'; finish
fi
ok "make deb builds the package ($(($(date +%s) - start)) s)"
deb=$(find "$T/deb" -name "${PKG}_*.deb" 2>/dev/null | head -1)
check "the .deb is in DEB_OUT" test -f "$deb"
version=$(dpkg-deb -f "$deb" Version)
check "the unit tests ran in the build" grep -q '^100%: Checks: .*Failures: 0, Errors: 0' "$T/build.log"
check "the package depends on libmilter, through shlibs ($(dpkg-deb -f "$deb" Depends))" \
	grep -qw 'libmilter1.0.1' <<<"$(dpkg-deb -f "$deb" Depends)"
lintian --fail-on none "$T"/deb/*.changes >"$T/lintian.log" 2>&1
grep -E '^[EW]: ' "$T/lintian.log" | sed 's/^/# lintian: /'
check_eq "lintian: no errors" 0 "$(grep -c '^E: ' "$T/lintian.log")"

# 2. Install.
port_free 8899 && sys_port_free=1 || sys_port_free=""
touched=1
timeout 120 dpkg -i "$deb" </dev/null >"$T/dpkg.log" 2>&1
check_eq "dpkg -i installs it" installed "$(deb_status)"
[ "$(deb_status)" = installed ] || { tail -20 "$T/dpkg.log" | sed 's/^/# /'; finish; }
check "daemon at /usr/sbin/quota-milter" test -x /usr/sbin/quota-milter
check_eq "quota-milter -V is the package's version" "$PKG ${version%%-*}" \
	"$(/usr/sbin/quota-milter -V | cut -d' ' -f1-2)"
unit=$(dpkg -L "$PKG" | grep -E '/systemd/system/quota-milter\.service$')
check "the systemd unit is installed" test -f "$unit"
check "the unit is enabled" test -L /etc/systemd/system/multi-user.target.wants/quota-milter.service
for u in quota-milter-metrics.service quota-milter-metrics.timer; do
	check "$u is in the package" grep -qE "/systemd/system/$u\$" <(dpkg -L "$PKG")
	check "$u is not enabled" test -z "$(find /etc/systemd/system -name "$u" 2>/dev/null)"
done
check "the metrics service renames a whole file into node_exporter's textfile folder" grep -qE \
	'metrics > "\$\$f\.\$\$\$\$" && mv "\$\$f\.\$\$\$\$" "\$\$f"' \
	"$(dirname "$unit")/quota-milter-metrics.service"
check "the timer runs it every minute" grep -qx 'OnCalendar=minutely' \
	"$(dirname "$unit")/quota-milter-metrics.timer"
check "$CONF is a conffile" grep -qE "^ $CONF [0-9a-f]{32}\$" \
	<(dpkg-query -W -f='${Conffiles}\n' "$PKG")
check "README.Debian is installed" test -f /usr/share/doc/$PKG/README.Debian
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd "$PKG")
check "system user $PKG exists" test -n "${uid:-}"
check "it is a system user with no login" test "${uid:-1000}" -lt 1000 -a "${shell:-}" = /usr/sbin/nologin
check_eq "its home is $STATE" "$STATE" "${home:-}"
check_eq "its group is $PKG" "$PKG" "$(getent group "${gid:-x}" | cut -d: -f1)"
check_eq "$STATE belongs to it, mode 750" "$PKG:$PKG 750" "$(stat -c '%U:%G %a' "$STATE" 2>&1)"
# hardening=+all must reach the Makefile's CFLAGS/LDFLAGS
check "hardened: PIE" grep -q 'Type: *DYN' <(readelf -h /usr/sbin/quota-milter)
check "hardened: RELRO and BIND_NOW" test \
	"$(readelf -lW /usr/sbin/quota-milter | grep -c GNU_RELRO)$(readelf -d /usr/sbin/quota-milter | grep -c BIND_NOW)" = 11
check "hardened: fortified" grep -q '__[a-z]*_chk' <(readelf -sW --dyn-syms /usr/sbin/quota-milter)
check "quota-milter -t accepts the installed conf" quiet /usr/sbin/quota-milter -t
check_eq "$CONF may hold a Redis password: root:$PKG, mode 640" "root:$PKG 640" \
	"$(stat -c '%U:%G %a' "$CONF")"
check_eq "the default milter socket is a unix socket in /run/quota-milter" \
	'socket         = "unix:/run/quota-milter/quota-milter.sock"' "$(grep '^socket ' "$CONF")"
check "the unit makes /run/quota-milter 0750" grep -qx 'RuntimeDirectoryMode=0750' "$unit"
if command -v systemd-analyze >/dev/null; then
	if command -v man >/dev/null; then man=yes; else man=no; fi
	if systemd-analyze verify --man=$man "$unit" "$(dirname "$unit")/quota-milter-metrics.service" \
		"$(dirname "$unit")/quota-milter-metrics.timer" >"$T/verify.log" 2>&1 && ! [ -s "$T/verify.log" ]; then
		ok "systemd-analyze verify accepts the units (man pages checked: $man)"
	else
		notok "systemd-analyze verify accepts the units"; sed 's/^/# /' "$T/verify.log"
	fi
fi
if [ -d /run/systemd/system ]; then
	# systemd runs here: the package started the service on the shipped conf.
	if [ -n "$sys_port_free" ]; then
		check "systemd runs the service" wait_for service 10 systemctl is-active --quiet $PKG
		check "systemctl reload keeps it running" systemctl reload $PKG
		check_eq "the service runs as $PKG" "$PKG" \
			"$(stat -c %U "/proc/$(systemctl show -p MainPID --value $PKG)" 2>&1)"
	else
		echo "# 127.0.0.1:8899 was in use before: not checking the service systemd started"
	fi
fi

# 3. The installed daemon on a copy of the installed conf, with a test Redis.
# (a) as the unit runs it: already the user, umask 007; accept mode, so that
# it makes its journal in $STATE at start. (b) started as root, as by hand:
# it drops to the user and makes a unix socket for the MTA's group.
redis_start
rcli HSET 'qm:account:{pkgco}' plan basic limit 1 >/dev/null
# pkg_conf FILE SOCKET - the installed conf with a test's socket and Redis
pkg_conf() {
	sed -e "s|^socket .*|socket = \"$2\"|" \
	    -e "s|address *= *\"127.0.0.1:6379\"|address = \"127.0.0.1:$REDIS_PORT\"|" \
	    -e 's|^on_redis_error .*|on_redis_error = "accept"|' "$CONF" > "$1"
}
cat > "$T/pkg.lua" <<'EOF'
-- One counted message fits (limit 1), the second is refused.
dofile(lib)
run {
{ name, function()
	local conn = open()
	envelope(conn, "<crm@app.example>", { "<a@x.example>" })
	local r = content(conn, { { "X-Quota-Account", "pkgco" }, { "X-Quota-Category", "crm" } })
	check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT, name .. ": the first message is accepted")
	envelope(conn, "<crm@app.example>", { "<b@x.example>" })
	r = content(conn, { { "X-Quota-Account", "pkgco" }, { "X-Quota-Category", "crm" } })
	check(r == SMFIR_REPLYCODE, name .. ": the second is refused (limit 1)")
	mt.disconnect(conn)
end },
}
EOF
# mt_pkg SOCKET NAME - the script above against the daemon at SOCKET
mt_pkg() {
	timeout 60 miltertest -D sock="$1" -D name="$2" -D lib=tests/milter/common.lua -s "$T/pkg.lua"
}

# 3a. The default socket, as the unit runs the daemon: /run/quota-milter
# 0750 quota-milter:quota-milter (RuntimeDirectory), the socket 0660. A
# local user outside the group cannot open a milter session (the protocol
# has no authentication: it could charge or drain any account); root and
# the group's members (the MTA's user, once added) can.
if [ ! -e /run/quota-milter ]; then
	made_run=1
	install -d -o "$PKG" -g "$PKG" -m 0750 /run/quota-milter
	pkg_conf "$T/r.conf" "unix:/run/quota-milter/quota-milter.sock"
	(umask 007; exec setpriv --reuid="$PKG" --regid="$PKG" --init-groups \
		/usr/sbin/quota-milter -f -c "$T/r.conf") >"$T/pkg-r.log" 2>&1 &
	pr=$!
	PIDS="$PIDS $pr"
	if wait_for pkg-r 20 test -S /run/quota-milter/quota-milter.sock; then
		check_eq "the default socket is $PKG:$PKG, mode 660" "$PKG:$PKG 660" \
			"$(stat -c '%U:%G %a' /run/quota-milter/quota-milter.sock)"
		setpriv --reuid=nobody --regid=nogroup --clear-groups \
			miltertest -D sock=unix:/run/quota-milter/quota-milter.sock -D name=nobody \
			-D lib=tests/milter/common.lua -s "$T/pkg.lua" >"$T/nobody.out" 2>&1
		check "another local user (nobody) cannot open a session" \
			grep -q '^not ok - nobody: mt.connect().*Permission denied' "$T/nobody.out"
		check_eq "nor get a reply" 0 "$(grep -c '^ok - ' "$T/nobody.out")"
		check "a member of the group $PKG (as the MTA's user would be) reaches it" \
			setpriv --reuid=nobody --regid=nogroup --groups="$gid" \
			miltertest -D sock=unix:/run/quota-milter/quota-milter.sock -D name=member \
			-D lib=tests/milter/common.lua -s "$T/pkg.lua"
	else
		notok "the installed daemon listens on the default socket"; sed 's/^/# /' "$T/pkg-r.log"
	fi
	check "on the default socket: it stops cleanly" milter_stop "$pr" pkg-r
	rcli DEL "qm:usage:{pkgco}:$month" >/dev/null
else
	echo "# /run/quota-milter exists (a running service?): default socket not tried"
fi

aport=$(free_port)
pkg_conf "$T/a.conf" "inet:$aport@127.0.0.1"
(umask 007; exec setpriv --reuid="$PKG" --regid="$PKG" --init-groups \
	/usr/sbin/quota-milter -f -c "$T/a.conf") >"$T/pkg-a.log" 2>&1 &
pa=$!
PIDS="$PIDS $pa"
if wait_for pkg-a 20 bash -c "echo > /dev/tcp/127.0.0.1/$aport"; then
	ok "installed daemon, as the unit runs it, listens"
	mt_pkg "inet:$aport@127.0.0.1" "as the unit runs it"
	check_eq "as the unit runs it: counted in Redis" 1 "$(rcli HGET "qm:usage:{pkgco}:$month" total)"
	check_eq "as the unit runs it: it made its journal in $STATE" "$PKG" \
		"$(stat -c %U "$STATE/journal" 2>&1)"
else
	notok "installed daemon, as the unit runs it, listens"; sed 's/^/# /' "$T/pkg-a.log"
fi
check "as the unit runs it: it stops cleanly" milter_stop "$pa" pkg-a

rcli DEL "qm:usage:{pkgco}:$month" >/dev/null
mkdir -m 755 "$T/sock"
pkg_conf "$T/b.conf" "unix:$T/sock/qm.sock"
milter_start /usr/sbin "$T/b.conf" pkg-b
pb=$MILTER_PID
if wait_for pkg-b 20 test -S "$T/sock/qm.sock"; then
	ok "installed daemon, started as root, listens"
	check_eq "started as root: it runs as $PKG" "$uid" "$(awk '/^Uid:/ {print $3}' /proc/$pb/status)"
	check_eq "started as root: the socket is $PKG:$PKG, mode 660" "$PKG:$PKG 660" \
		"$(stat -c '%U:%G %a' "$T/sock/qm.sock")"
	mt_pkg "unix:$T/sock/qm.sock" "started as root"
	check_eq "started as root: counted in Redis" 1 "$(rcli HGET "qm:usage:{pkgco}:$month" total)"
else
	notok "installed daemon, started as root, listens"; sed 's/^/# /' "$T/pkg-b.log"
fi
check "started as root: it stops cleanly" milter_stop "$pb" pkg-b

# 4. Reinstall: idempotent, and a local change to the conffile stays, its
# mode too.
echo '# changed by t_deb.sh' >> "$CONF"
chmod 0600 "$CONF"
timeout 120 dpkg -i "$deb" </dev/null >>"$T/dpkg.log" 2>&1
check_eq "dpkg -i again succeeds" installed "$(deb_status)"
check "the local change to the conffile is kept" grep -qx '# changed by t_deb.sh' "$CONF"
check_eq "and the admin's mode of it" "root:$PKG 600" "$(stat -c '%U:%G %a' "$CONF")"
chmod 0640 "$CONF"

# make install (no DESTDIR; the group exists now): the conf 0640 root:$PKG,
# and never overwritten.
ietc=$T/inst-etc
make -s install PREFIX="$T/inst" SYSCONFDIR="$ietc" B="$build" >"$T/install.log" 2>&1 ||
	{ notok "make install"; sed 's/^/# /' "$T/install.log"; }
check_eq "make install: the conf is root:$PKG, mode 640" "root:$PKG 640" \
	"$(stat -c '%U:%G %a' "$ietc/quota-milter/quota-milter.conf" 2>&1)"
echo '# edited' >> "$ietc/quota-milter/quota-milter.conf"
make -s install PREFIX="$T/inst" SYSCONFDIR="$ietc" B="$build" >"$T/install.log" 2>&1
check "make install again keeps the edited conf" grep -qx '# edited' "$ietc/quota-milter/quota-milter.conf"
check "and says so" grep -q 'exists, kept' "$T/install.log"
check_eq "the user is the same" "$uid" "$(id -u "$PKG" 2>&1)"
check_eq "$STATE and its journal are kept" "$PKG:$PKG 750 $PKG" \
	"$(stat -c '%U:%G %a' "$STATE" 2>&1) $(stat -c %U "$STATE/journal" 2>&1)"
check "quota-milter -t still accepts the conf" quiet /usr/sbin/quota-milter -t

# 5. Purge: nothing left but what policy allows (the user).
files=$(dpkg -L "$PKG" | grep quota-milter)
timeout 120 dpkg --purge "$PKG" </dev/null >>"$T/dpkg.log" 2>&1
check "dpkg --purge succeeds" test -z "$(deb_status)" -o "$(deb_status)" = not-installed
left=""
for f in $files /etc/quota-milter "$STATE" /etc/systemd/system/multi-user.target.wants/quota-milter.service \
	/var/lib/systemd/deb-systemd-helper-enabled/quota-milter.service \
	/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/quota-milter.service; do
	[ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done
check_eq "purge leaves no file behind" "" "$left"
check "purge keeps the system user (policy)" test -n "$(getent passwd "$PKG")"

finish
