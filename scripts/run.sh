#!/bin/sh
# make run: a private Redis under var/ (AOF on, unix socket only), the demo dossiers, then the
# gateway in the foreground. Ctrl-C stops the gateway and then Redis.
set -e
cd "$(dirname "$0")/.."
mkdir -p var
VAR=$(pwd)/var
if ! redis-cli -s "$VAR/redis.sock" ping >/dev/null 2>&1; then
	redis-server --port 0 --unixsocket "$VAR/redis.sock" --unixsocketperm 700 \
	    --dir "$VAR" --appendonly yes --appendfsync everysec --save "" \
	    --daemonize yes --pidfile "$VAR/redis.pid" --logfile "$VAR/redis.log"
	i=0
	until redis-cli -s "$VAR/redis.sock" ping >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 50 ] || { echo "run: redis did not start, see var/redis.log"; exit 1; }
		sleep 0.1
	done
fi
stop_redis() { redis-cli -s "$VAR/redis.sock" shutdown >/dev/null 2>&1 || true; }
trap stop_redis EXIT
trap 'exit 0' INT TERM
build/dvcgw import -c config/dvcgw.json config/demo-dossiers.json
cat <<MSG

dvcgw is starting on http://127.0.0.1:8080 — replies appear below and in var/sms-outbox.log.
Try, from another terminal:
  curl 'http://127.0.0.1:8080/sms/kannel?from=0912345678&to=8077&text=HS+000.00.20.H21-231125-0001&id=demo-1'
  build/dvcgw chat -c config/dvcgw.json --channel sms --user 0912345678
Provider endpoints (/sms/*, /ussd) answer only this machine until a provider token is configured:
  build/dvcgw token new -c config/dvcgw.json kannel provider   (then add key=TOKEN to Kannel's URLs)

MSG
build/dvcgw -c config/dvcgw.json &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' INT TERM
wait $pid || true
wait $pid 2>/dev/null || true
