#!/bin/bash
# bench/kannel.sh: citizens answered per second through a real Kannel (make bench's Kannel block).
#
# Four runs, each with a fresh bearerbox + smsbox + fakesmsc (config derived from config/kannel.conf
# as tests/kannel_e2e.sh derives it: free ports, logs and store in a temp dir):
#   static   an sms-service with a fixed `text`: Kannel answering alone
#   trivial  get-url to bench/trivial_geturl.c (bare libevent answering 200 with the reply as the
#            body): a get-url application that does no work
#   dvcgw    get-url to build/dvcgw (/sms/kannel with its provider key) with sms.kannel.reply
#            "body": it looks the dossier up in a private Redis and answers the reply as the
#            get-url body, which smsbox sends
#   dvcgw_sendsms  the same with sms.kannel.reply "sendsms": 200 empty, and the reply through
#            smsbox's sendsms (outbox, driver "kannel", dlr-url set as in production)
# The load: KBENCH_CITIZENS (300) citizens, KBENCH_MSGS (3000) messages, each a dossier lookup
# "HS <code>" (the 12 demo dossiers in turn); fakesmsc -m picks a citizen at random for every
# message, so each citizen sends about 10. The fixed reply of the static and trivial runs is as long
# as dvcgw's (two concatenated parts), so Kannel carries the same SMS in the four runs.
# Figure: replies received at fakesmsc / seconds from its first sent message to the last reply (a
# concatenated reply counts once, when its last part arrives).
#
# Prints `name: value` lines on stdout (progress on stderr):
#   kannel_static_per_s, kannel_trivial_per_s, kannel_dvcgw_per_s, kannel_dvcgw_vs_trivial (body
#                              mode), kannel_dvcgw_sendsms_per_s, kannel_dvcgw_sendsms_vs_trivial
#   kannel_dvcgw_body_sendsms  sendsms requests smsbox accepted in the body-mode run (0 expected)
#   kannel_dvcgw_turn_conflicts_per_reply  turns run again because a citizen's messages met (body)
#   kannel_geturl_conns        TCP connections smsbox opened to dvcgw (body mode: get-url only)
#   Of the sendsms-mode run:
#   kannel_sendsms_per_reply   sendsms requests smsbox accepted per dvcgw reply received
#   kannel_reply_parts         SMS parts per dvcgw reply at fakesmsc (1 sendsms call, N parts)
#   kannel_sendsms_attempts_per_reply, kannel_sendsms_retried  the same from dvcgw's /metrics
#   kannel_turn_conflicts_per_reply  turns dvcgw ran again because a citizen's messages met
#   kannel_sendsms_conns       TCP connections dvcgw opened to smsbox's sendsms during the run
#   kannel_sendsms_geturl_conns  TCP connections smsbox opened to dvcgw (get-url and dlr-url)
#   kannel_*_answered          replies received of KBENCH_MSGS (less means the run timed out)
#   kannel_*_cpu_us            CPU per answered message (us): bearerbox, smsbox, the application,
#                              redis-server (dvcgw's); kannel_*_cpu_total_us their sum
#   kannel_dvcgw_cpu_vs_trivial, kannel_dvcgw_sendsms_cpu_vs_trivial  dvcgw's total over the trivial
#                              app's: what the machine pays per answer, steadier than the rates
#   kannel_trivial_geturl_conns  TCP connections smsbox opened to the trivial app
# Knobs: KBENCH_MSGS, KBENCH_CITIZENS, KBENCH_RUN_SECS (15, the longest one run may take),
# KBENCH_CONCURRENCY (outbox.concurrency, the gateway's default when unset), KBENCH_DLR (1: dvcgw
# sets sms.kannel.dlr_url, so smsbox also calls it with each delivery report; 0: none),
# KBENCH_SMSBOX_PENDING (smsbox's max-pending-requests in every run; the sample's 64 when unset),
# KBENCH_KEEP=1,
# DVCGW_BIN (build/dvcgw). Exit status non-zero only when the set-up itself failed.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

BEARERBOX=${BEARERBOX:-/usr/sbin/bearerbox}
SMSBOX=${SMSBOX:-/usr/sbin/smsbox}
FAKESMSC=${FAKESMSC:-/usr/lib/kannel/test/fakesmsc}
DVCGW_BIN=${DVCGW_BIN:-build/dvcgw}
MSGS=${KBENCH_MSGS:-3000}
CITIZENS=${KBENCH_CITIZENS:-300}
RUN_SECS=${KBENCH_RUN_SECS:-15}
SHORT=8077

say() { echo "kannel: $*" >&2; }
die() { say "$*"; exit 1; }

for b in "$BEARERBOX" "$SMSBOX" "$FAKESMSC"; do
	[ -x "$b" ] || die "$b is missing (apt-get install kannel kannel-extras)"
done
for b in redis-server redis-cli python3 curl cc pkg-config ss; do
	command -v "$b" >/dev/null 2>&1 || die "$b is missing"
done
[ -x "$DVCGW_BIN" ] || die "$DVCGW_BIN is missing (run make)"

T=$(mktemp -d "${TMPDIR:-/tmp}/dvcgw-kbench.XXXXXX") || die "mktemp failed"
PIDS=()

stop_pid() {	# stop_pid PID: TERM, up to 3 s, then KILL
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return; }
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}
stop_all() {	# newest first
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--))
		do stop_pid "${PIDS[i]}"; done
	PIDS=()
}
on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	stop_all
	if [ "${KBENCH_KEEP:-0}" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
	exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ulimit -c 0 2>/dev/null

freeports() {	# freeports N: N distinct free ports
	python3 -c '
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
listening() {	# listening PORT, without connecting (a connection to the fake SMSC is taken as fakesmsc)
	local hex
	hex=$(printf ':%04X' "$1")
	awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
	    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null; }
http_is() { [ "$(http_code "$2")" = "$1" ]; }
wait_for() {	# wait_for TENTHS COMMAND...
	local n=$1 i
	shift
	for ((i = 0; i < n; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# --- the messages --------------------------------------------------------------------------------------
# One fakesmsc argument per citizen: "FROM TO text HS <code>".
mapfile -t CODES < <(python3 -c 'import json; [print(d["code"]) for d in json.load(open("config/demo-dossiers.json"))]')
[ "${#CODES[@]}" -gt 0 ] || die "no dossier codes in config/demo-dossiers.json"
MSGV=()
for ((i = 0; i < CITIZENS; i++)); do
	MSGV+=("$(printf '0912%06d' $((100000 + i))) $SHORT text HS ${CODES[i % ${#CODES[@]}]}")
done
# About as long as dvcgw's answer to a lookup (two GSM-7 parts).
FIXED="Ho so 000.00.20.H21-231125-0001 - Cap giay chung nhan quyen su dung dat. Trang thai: Dang xu ly. Han giai quyet: 15/01/2027. Noi tiep nhan: Chi nhanh Van phong dang ky dat dai huyen Ia Grai. Soan MENU de xem them."

# --- the trivial application -----------------------------------------------------------------------------
cc -O2 -o "$T/trivial_geturl" bench/trivial_geturl.c $(pkg-config --cflags --libs libevent) \
    2>"$T/trivial-cc.log" || { cat "$T/trivial-cc.log" >&2; die "building bench/trivial_geturl.c failed"; }

# kannel_conf DIR SERVICE-LINE ADMIN BOXPORT SENDSMS FAKE: DIR/kannel.conf from the sample, its
# sms-service answering with SERVICE-LINE (a `text = ...` or a `get-url = ...`), logs at info. The
# sample's sms-service (max-messages 10, concatenation, omit-empty) serves every run as it is.
kannel_conf() {
	local d=$1 svc=$2
	sed -e "s|^admin-port = .*|admin-port = $3|" \
	    -e "s|^smsbox-port = .*|smsbox-port = $4|" \
	    -e "s|^sendsms-port = .*|sendsms-port = $5|" \
	    -e "s|^port = .*|port = $6|" \
	    -e "s|^log-file = \"/var/log/kannel/\(.*\)\"|log-file = \"$d/\1\"|" \
	    -e "s|^access-log = \"/var/log/kannel/\(.*\)\"|access-log = \"$d/\1\"|" \
	    -e "s|^store-location = .*|store-location = \"$d/kannel.store\"|" \
	    -e "s|^log-level = .*|log-level = 1|" \
	    config/kannel.conf | awk -v svc="$svc" -v pending="${KBENCH_SMSBOX_PENDING:-}" '
		/^group = / { grp = $3 }
		/^get-url = / { print svc; next }
		grp == "smsbox" && pending != "" && /^max-pending-requests = / { print "max-pending-requests = " pending; next }
		{ print }' >"$d/kannel.conf"
	grep -qxF -- "$svc" "$d/kannel.conf" || die "config/kannel.conf has no get-url line to replace"
}

conf_get() {	# conf_get FILE GROUP KEY
	awk -v g="$2" -v k="$3" '
	    /^[ \t]*#/ { next }
	    /^[ \t]*$/ { grp = ""; next }
	    { line = $0; sub(/^[ \t]+/, "", line) }
	    line ~ /^group[ \t]*=/ { sub(/^group[ \t]*=[ \t]*/, "", line); grp = line; next }
	    grp == g && line ~ ("^" k "[ \t]*=") {
		sub("^" k "[ \t]*=[ \t]*", "", line); sub(/[ \t]+$/, "", line)
		gsub(/^"|"$/, "", line); print line; exit
	    }' "$1"
}

# start_kannel DIR ADMIN FAKE SENDSMS: bearerbox and smsbox on DIR/kannel.conf, smsbox connected.
start_kannel() {
	local d=$1 apass url
	apass=$(conf_get "$d/kannel.conf" core admin-password)
	url="http://127.0.0.1:$2/status.txt?password=$apass"
	"$BEARERBOX" -v 3 "$d/kannel.conf" >"$d/bearerbox.out" 2>&1 &
	PIDS+=($!)
	R_BB=$!
	wait_for 100 http_is 200 "$url"
	wait_for 100 listening "$3" || die "bearerbox did not start (see $d/bearerbox.out)"
	"$SMSBOX" -v 3 "$d/kannel.conf" >"$d/smsbox.out" 2>&1 &
	PIDS+=($!)
	R_SB=$!
	connected() { curl -s --max-time 2 "$url" | grep -q '^ *smsbox:.*on-line'; }
	wait_for 100 connected && wait_for 50 listening "$4" || die "smsbox did not connect (see $d/smsbox.out)"
}

# inject DIR FAKE: fakesmsc sends MSGS messages as fast as it can and the replies are counted as they
# arrive; prints "answered parts seconds". The timestamps are taken on fakesmsc's output as it comes.
inject() {
	local d=$1
	python3 - "$d/fakesmsc.out" "$MSGS" "$RUN_SECS" "$FAKESMSC" -H 127.0.0.1 -r "$2" -i 0 \
	    -m "$MSGS" -v 0 "${MSGV[@]}" <<'PY'
import os, re, select, signal, subprocess, sys, time, urllib.parse
log, want, secs, cmd = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
head = re.compile(rb'Got message [0-9]+: <\+?[0-9]+ \+?[0-9]+ (text|data|ucs-2|udh) ?(.*)$')
first = last = None
answered = parts = 0
out = open(log, "wb")
end = time.time() + secs
buf = b""
while answered < want and time.time() < end:
    r, _, _ = select.select([p.stdout], [], [], 0.2)
    if not r:
        if p.poll() is not None:
            break
        continue
    chunk = os.read(p.stdout.fileno(), 1 << 16)
    now = time.time()
    if not chunk:
        break
    out.write(chunk)
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if first is None and b"fakesmsc: sent message" in line:
            first = now
        m = head.search(line)
        if m is None:
            continue
        parts += 1
        if m.group(1) == b"udh":	# "udh <UDH> <type> <data>": complete at its last part
            u = urllib.parse.unquote_to_bytes(m.group(2).split(b" ", 1)[0])
            if len(u) >= 6 and u[5] != u[4]:
                continue
        answered += 1
        last = now
p.send_signal(signal.SIGTERM)
try:
    p.wait(3)
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
out.close()
print(answered, parts, "%.3f" % ((last - first) if first and last and last > first else 0))
PY
}

conns() {	# conns PORT: TCP connections (any state) with PORT as the server side
	ss -Htan "( sport = :$1 )" 2>/dev/null | grep -vc LISTEN
}

cpu_ms() {	# cpu_ms PID: user + system CPU time so far, in ms
	awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1000 / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

per_s() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f\n", (s > 0 ? n / s : 0) }'; }

# run NAME: one run; sets R_ANSWERED R_PARTS R_SECS, and R_SENDSMS_CONNS R_GETURL_CONNS for dvcgw.
run() {
	local name=$1 d=$T/$1 admin boxport sendsms fake gw r gwpid key dlr=
	R_APP= R_REDIS=
	mkdir -p "$d"
	read -r admin boxport sendsms fake gw < <(freeports 5)
	[ -n "${gw:-}" ] || die "cannot find free ports"
	case $name in
	static)
		kannel_conf "$d" "text = \"$FIXED\"" "$admin" "$boxport" "$sendsms" "$fake";;
	trivial)
		# on a port of its own choosing (a port picked free here may be taken by the time it binds)
		"$T/trivial_geturl" 0 "$FIXED" >"$d/trivial.port" 2>"$d/trivial.log" &
		PIDS+=($!)
		R_APP=$!
		port_known() { read -r gw <"$d/trivial.port" && [ -n "$gw" ]; }
		wait_for 50 port_known || die "the trivial get-url app did not start (see $d/trivial.log)"
		read -r gw <"$d/trivial.port"
		kannel_conf "$d" "get-url = \"http://127.0.0.1:$gw/sms?from=%p&to=%P&text=%a\"" \
		    "$admin" "$boxport" "$sendsms" "$fake";;
	dvcgw|dvcgw_sendsms)
		key="kbench-provider-$$-$RANDOM"
		kannel_conf "$d" "get-url = \"http://127.0.0.1:$gw/sms/kannel?key=$key&from=%p&to=%P&text=%a&coding=%c&charset=%C&id=%I&smsc=%i\"" \
		    "$admin" "$boxport" "$sendsms" "$fake"
		redis-server --port 0 --unixsocket "$d/redis.sock" --unixsocketperm 700 --dir "$d" \
		    --appendonly yes --appendfsync everysec --save "" --logfile "$d/redis.log" >/dev/null 2>&1 &
		PIDS+=($!)
		R_REDIS=$!
		redis_up() { [ "$(redis-cli -s "$d/redis.sock" ping 2>/dev/null)" = PONG ]; }
		wait_for 50 redis_up || die "redis-server did not start (see $d/redis.log)"
		D="$d" ROOT="$ROOT" GW="$gw" SENDSMS="$sendsms" SHORT="$SHORT" KEY="$key" \
		    KUSER="$(conf_get "$d/kannel.conf" sendsms-user username)" \
		    KPASS="$(conf_get "$d/kannel.conf" sendsms-user password)" \
		    CONC="${KBENCH_CONCURRENCY:-}" DLR="${KBENCH_DLR:-1}" \
		    REPLY="$( [ "$name" = dvcgw ] && echo body || echo sendsms)" python3 -c '
import hashlib, json, os
e = os.environ
outbox = {}
if e["CONC"]:
    outbox["concurrency"] = int(e["CONC"])
cfg = {
    "listen": {"host": "127.0.0.1", "port": int(e["GW"])},
    "redis": {"url": "unix://" + e["D"] + "/redis.sock", "prefix": "dvcgw:"},
    "flows": {"dir": e["ROOT"] + "/flows"},
    "sms": {"driver": "kannel", "kannel": {
        "sendsms_url": "http://127.0.0.1:%s/cgi-bin/sendsms" % e["SENDSMS"],
        "username": e["KUSER"], "password": e["KPASS"], "from": e["SHORT"],
        "dlr_url": "http://127.0.0.1:%s/sms/dlr?key=%s" % (e["GW"], e["KEY"]),
        "reply": e["REPLY"]}},
    "api": {"tokens": [{"name": "kannel", "role": "provider",
                        "sha256": hashlib.sha256(e["KEY"].encode()).hexdigest()}]},
    "otp": {"secret": "5a" * 32},
    "outbox": outbox,
    "metrics": {"auth": "allow"},
    "log": {"level": "warn"},
}
open(e["D"] + "/dvcgw.json", "w").write(json.dumps(cfg, indent=2) + "\n")' || die "cannot write dvcgw.json"
		"$DVCGW_BIN" import -c "$d/dvcgw.json" config/demo-dossiers.json >"$d/import.out" 2>&1 ||
		    { cat "$d/import.out" >&2; die "importing the demo dossiers failed"; }
		"$DVCGW_BIN" -c "$d/dvcgw.json" >/dev/null 2>"$d/dvcgw.log" &
		gwpid=$!
		PIDS+=($gwpid)
		R_APP=$gwpid
		wait_for 100 http_is 200 "http://127.0.0.1:$gw/healthz" ||
		    die "dvcgw did not become healthy (see $d/dvcgw.log)";;
	esac
	start_kannel "$d" "$admin" "$fake" "$sendsms"
	say "$name: $MSGS messages from $CITIZENS citizens through bearerbox + smsbox"
	local c0 c1
	c0="$(cpu_ms "$R_BB") $(cpu_ms "$R_SB") $( [ -n "$R_APP" ] && cpu_ms "$R_APP" || echo 0) $( [ -n "$R_REDIS" ] && cpu_ms "$R_REDIS" || echo 0)"
	read -r R_ANSWERED R_PARTS R_SECS < <(inject "$d" "$fake")
	c1="$(cpu_ms "$R_BB") $(cpu_ms "$R_SB") $( [ -n "$R_APP" ] && cpu_ms "$R_APP" || echo 0) $( [ -n "$R_REDIS" ] && cpu_ms "$R_REDIS" || echo 0)"
	# CPU per answered message, in microseconds: bearerbox, smsbox, the application, redis-server
	R_CPU=$(awk -v a="$c0" -v b="$c1" -v n="${R_ANSWERED:-0}" 'BEGIN { split(a, x); split(b, y)
	    for (i = 1; i <= 4; i++) printf "%s%.0f", (i > 1 ? " " : ""), (n > 0 ? (y[i] - x[i]) * 1000 / n : 0); print "" }')
	R_GETURL_CONNS=$(conns "$gw")
	if [ "$name" != static ] && [ "$name" != trivial ]; then
		R_SENDSMS=$(grep -c 'send-SMS request added' "$d/smsbox-access.log" 2>/dev/null)
		R_SENDSMS_CONNS=$(conns "$sendsms")
		curl -s --max-time 2 "http://127.0.0.1:$gw/metrics" >"$d/metrics.txt" 2>/dev/null
	fi
	[ "${R_ANSWERED:-0}" -lt "$MSGS" ] && say "$name: only ${R_ANSWERED:-0} of $MSGS answered within $RUN_SECS s"
	stop_all
}

# report NAME: run NAME and print its common lines (kannel_NAME_per_s, _answered, _cpu_us,
# _cpu_total_us, and for the dvcgw runs _vs_trivial and _cpu_vs_trivial); RATE and TOTAL keep the
# figures for the lines after it.
report() {
	local name=$1
	run "$name"
	RATE=$(per_s "$R_ANSWERED" "$R_SECS")
	TOTAL=$(echo "$R_CPU" | awk '{ print $1 + $2 + $3 + $4 }')
	echo "kannel_${name}_per_s: $RATE"
	echo "kannel_${name}_answered: $R_ANSWERED"
	echo "kannel_${name}_cpu_us: $R_CPU"
	echo "kannel_${name}_cpu_total_us: $TOTAL"
	case $name in dvcgw*)
		awk -v a="$RATE" -v b="$trivial_rate" -v n="$name" \
		    'BEGIN { printf "kannel_%s_vs_trivial: %.3f\n", n, (b > 0 ? a / b : 0) }'
		awk -v a="$TOTAL" -v b="$trivial_total" -v n="$name" \
		    'BEGIN { printf "kannel_%s_cpu_vs_trivial: %.2f\n", n, (b > 0 ? a / b : 0) }'
	esac
}

report static
static_parts=$R_PARTS
report trivial
trivial_rate=$RATE
trivial_total=$TOTAL
echo "kannel_trivial_geturl_conns: $R_GETURL_CONNS"
report dvcgw
echo "kannel_dvcgw_body_sendsms: ${R_SENDSMS:-0}"
awk -v n="$R_ANSWERED" '/^dvcgw_turn_conflicts_total / { c = $NF }
    END { printf "kannel_dvcgw_turn_conflicts_per_reply: %.2f\n", (n > 0 ? c / n : 0) }' "$T/dvcgw/metrics.txt"
echo "kannel_geturl_conns: $R_GETURL_CONNS"
report dvcgw_sendsms
awk -v s="$R_SENDSMS" -v n="$R_ANSWERED" 'BEGIN { printf "kannel_sendsms_per_reply: %.2f\n", (n > 0 ? s / n : 0) }'
# dvcgw's own count of sendsms attempts (sent + retried) per reply, from /metrics
awk -v n="$R_ANSWERED" '/^dvcgw_replies_total\{/ && /channel="sms"/ && /result="(sent|retried)"/ { a += $NF }
    /^dvcgw_replies_total\{/ && /channel="sms"/ && /result="retried"/ { r += $NF }
    END { printf "kannel_sendsms_attempts_per_reply: %.2f\nkannel_sendsms_retried: %d\n", (n > 0 ? a / n : 0), r }' "$T/dvcgw_sendsms/metrics.txt"
# turns run again because the same citizen's previous message was being handled at the same moment
awk -v n="$R_ANSWERED" '/^dvcgw_turn_conflicts_total / { c = $NF }
    END { printf "kannel_turn_conflicts_per_reply: %.2f\n", (n > 0 ? c / n : 0) }' "$T/dvcgw_sendsms/metrics.txt"
awk -v p="$R_PARTS" -v n="$R_ANSWERED" 'BEGIN { printf "kannel_reply_parts: %.2f\n", (n > 0 ? p / n : 0) }'
echo "kannel_sendsms_conns: $R_SENDSMS_CONNS"
echo "kannel_sendsms_geturl_conns: $R_GETURL_CONNS"
say "parts per static reply: $(awk -v p="$static_parts" -v n="$MSGS" 'BEGIN { printf "%.2f", p / n }')"
exit 0
