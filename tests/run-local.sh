#!/bin/sh
# run-local.sh DAEMON CONF - what `make run` does: make sure a Redis answers
# at the conf's address (starting a local redis-server on 127.0.0.1:6379 if
# none does), then run the milter in the foreground on that conf. The
# starting user is kept when the conf's user does not exist here.
set -eu
daemon=$1
conf=$2

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
	echo "run-local: no Redis on 127.0.0.1:6379, starting one (data in a temporary folder)"
	dir=$(mktemp -d)
	redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no \
		--dir "$dir" --daemonize yes --logfile "$dir/redis.log" >/dev/null
	i=0
	until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -gt 50 ] && { echo "run-local: redis-server did not start" >&2; exit 1; }
		sleep 0.1
	done
fi

# The shipped conf's socket is in the package's folder, /run/quota-milter:
# here it goes next to the build instead (mode 0660, as always).
# So does the journal (the package's is in /var/lib/quota-milter), made by
# the daemon for the user it runs as.
dir=$(cd "$(dirname "$daemon")" && pwd)
sock="unix:$dir/quota-milter.sock"
runconf=$(mktemp)
sed -e "s|^\([[:space:]]*socket[[:space:]]*=\).*|\1 \"$sock\"|" \
    -e "s|^\([[:space:]]*journal[[:space:]]*=\).*|\1 \"$dir/journal\"|" "$conf" > "$runconf"
if ! getent passwd quota-milter >/dev/null; then
	sed -i 's/^\([[:space:]]*user[[:space:]]*=\).*/\1 ""/' "$runconf"
	echo "run-local: no user quota-milter here, running as $(id -un)"
fi
echo "run-local: quota-milter on $sock (Postfix: smtpd_milters = $sock), Ctrl-C stops it"
exec "$daemon" -f -c "$runconf"
