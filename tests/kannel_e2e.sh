#!/bin/bash
# kannel_e2e.sh: end-to-end test of the SMS channel through a REAL Kannel.
#
#   fakesmsc --> bearerbox --> smsbox --get-url--> dvcgw --> Redis
#   fakesmsc <-- bearerbox <-- smsbox <--sendsms-- dvcgw (outbox, driver "kannel")
#
# It derives a test kannel.conf from config/kannel.conf (free ports, logs and store in a temp dir),
# starts a private redis-server, imports config/demo-dossiers.json, starts build/dvcgw with
# sms.driver "kannel", then bearerbox and smsbox, and injects two messages with fakesmsc: a plain
# one and a UCS-2 one typed with diacritics. The replies fakesmsc receives must carry the dossier.
# Then dvcgw is restarted with sms.kannel.reply "body" (unaccented, then with diacritics): the
# replies must reach fakesmsc from the get-url answers, from our short code, nothing via sendsms.
# Every wait has a timeout and the whole test stops after TEST_TIMEOUT seconds (default 55).
# Output: one "ok - ..." / "not ok - ..." line per check; logs on failure; last line
# "N passed, M failed"; exit status 1 when M > 0. KEEP_TMP=1 keeps the temp dir.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

BEARERBOX=${BEARERBOX:-/usr/sbin/bearerbox}
SMSBOX=${SMSBOX:-/usr/sbin/smsbox}
FAKESMSC=${FAKESMSC:-/usr/lib/kannel/test/fakesmsc}
DVCGW_BIN=${DVCGW_BIN:-build/dvcgw}
TEST_TIMEOUT=${TEST_TIMEOUT:-55}

CODE=000.00.20.H21-231125-0001
SHORT=8077
PLAIN_FROM=0912345678
UCS2_FROM=0983214567
PLAIN_TEXT="HS $CODE"
UCS2_TEXT="tra cứu $CODE"
# What the reply for $CODE must say (unaccented: sms.unaccented is on by default).
EXPECT=("$CODE" "Cap giay chung nhan quyen su dung dat" "Dang xu ly")

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
notok() { echo "not ok - $*"; failed=$((failed + 1)); }

T=$(mktemp -d "${TMPDIR:-/tmp}/dvcgw-kannel.XXXXXX") || { echo "not ok - mktemp"; echo "0 passed, 1 failed"; exit 1; }
START=$SECONDS
PIDS=()		# started processes, in start order
WATCHDOG=

# ---- cleanup, log dump and summary (always, via EXIT) ----

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

dump_logs() {
	local f
	for f in dvcgw.log bearerbox.out bearerbox.log smsbox.out smsbox.log smsbox-access.log \
	    access.log fakesmsc.out redis.log import.out kannel.conf dvcgw.json; do
		[ -s "$T/$f" ] || continue
		echo "# ---- $T/$f (last 80 lines) ----"
		case $f in
		kannel.conf) grep -v -e '^#' -e '^$' "$T/$f";;	# the settings, not the comments
		*) tail -n 80 "$T/$f";;
		esac | sed 's/^/# /'
	done
}

on_exit() {
	local i
	trap '' INT TERM HUP
	# Newest first: fakesmsc, smsbox, bearerbox, dvcgw, redis. fakesmsc is killed before its stdin
	# closes: on EOF it frees its message table twice and aborts.
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--))
		do stop_pid "${PIDS[i]}"; done
	exec 3>&-
	if [ -n "$WATCHDOG" ]; then kill -TERM "$WATCHDOG" 2>/dev/null; wait "$WATCHDOG" 2>/dev/null; fi
	[ "$failed" -gt 0 ] && dump_logs
	if [ "${KEEP_TMP:-0}" = 1 ]; then echo "# kept $T"; else rm -rf "$T"; fi
	echo "# took $((SECONDS - START)) s"
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}
trap on_exit EXIT
trap 'notok "interrupted or timed out after $((SECONDS - START)) s (limit $TEST_TIMEOUT s)"; exit 1' INT TERM HUP
trap '' PIPE	# a dead fakesmsc must not kill us through its stdin
ulimit -c 0 2>/dev/null	# no core files from a crashing box in the source tree

# The whole test has a hard limit, whatever hangs.
( trap 'kill $s 2>/dev/null; exit 0' TERM; sleep "$TEST_TIMEOUT" & s=$!; wait $s; kill -TERM $$ ) &
WATCHDOG=$!

left() { echo $((START + TEST_TIMEOUT - 3 - SECONDS)); }	# seconds left before the limit

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
	local secs=$1 what=$2 end
	shift 2
	[ "$secs" -gt "$(left)" ] && secs=$(left)
	end=$((SECONDS + secs))
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		[ "$SECONDS" -ge "$end" ] && { echo "# gave up waiting ${secs} s for $what" >&2; return 1; }
		sleep 0.1
	done
}

alive() { kill -0 "$1" 2>/dev/null; }

# listening PORT: a TCP socket is listening on PORT (without connecting to it: a connection to the
# fake SMSC would be taken as fakesmsc).
listening() {
	local hex
	hex=$(printf ':%04X' "$1")
	awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
	    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

http_code() {	# http_code URL: the status, 000 when nothing answers
	curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null
}
http_is() { [ "$(http_code "$2")" = "$1" ]; }
http_any() { [ "$(http_code "$1")" != 000 ]; }

bail() {	# bail REASON: a prerequisite failed; count it and stop
	notok "$*"
	exit 1
}

# ---- prerequisites ----

missing=
for b in "$BEARERBOX" "$SMSBOX" "$FAKESMSC"; do
	[ -x "$b" ] || missing="$missing $b"
done
if [ -n "$missing" ]; then
	bail "Kannel binaries missing:$missing (apt-get install kannel kannel-extras)"
fi
for b in redis-server redis-cli python3 curl awk sed; do
	command -v "$b" >/dev/null 2>&1 || missing="$missing $b"
done
[ -x "$DVCGW_BIN" ] || missing="$missing $DVCGW_BIN (run make)"
[ -n "$missing" ] && bail "missing:$missing"
ok "Kannel binaries present ($("$BEARERBOX" --version 2>&1 | sed -n 's/.*Kannel bearerbox version `\([^'"'"']*\).*/\1/p' | head -n 1))"

# Six distinct free ports: dvcgw, bearerbox admin, bearerbox smsbox port, sendsms, fake SMSC, and a
# recording proxy in front of sendsms (what smsbox was asked, parameters included, and its answer).
read -r GW ADMIN BOXPORT SENDSMS FAKE PROXY < <(python3 -c '
import socket
ss = []
for _ in range(6):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))')
[ -n "${PROXY:-}" ] || bail "could not pick free ports"

# ---- test kannel.conf, derived from the sample ----
# dvcgw gets a provider token, so Kannel must present it (key= in get-url and in the dlr-url), and a
# portal token for the OTP part.
PTOKEN="e2e-provider-$$-$RANDOM"
OTOKEN="e2e-portal-$$-$RANDOM"
OTP_PHONE=0912000111

sed -e "s|^admin-port = .*|admin-port = $ADMIN|" \
    -e "s|^smsbox-port = .*|smsbox-port = $BOXPORT|" \
    -e "s|^sendsms-port = .*|sendsms-port = $SENDSMS|" \
    -e "s|^port = .*|port = $FAKE|" \
    -e "s|127\.0\.0\.1:8080/|127.0.0.1:$GW/|g" \
    -e "s|/sms/kannel?from=|/sms/kannel?key=$PTOKEN\&from=|" \
    -e "s|^log-file = \"/var/log/kannel/\(.*\)\"|log-file = \"$T/\1\"|" \
    -e "s|^access-log = \"/var/log/kannel/\(.*\)\"|access-log = \"$T/\1\"|" \
    -e "s|^store-location = .*|store-location = \"$T/kannel.store\"|" \
    -e "s|^log-level = .*|log-level = 0|" \
    config/kannel.conf >"$T/kannel.conf" || bail "cannot read config/kannel.conf"

# conf_get GROUP KEY: a value from the test kannel.conf, quotes removed.
conf_get() {
	awk -v g="$1" -v k="$2" '
	    /^[ \t]*#/ { next }
	    /^[ \t]*$/ { grp = ""; next }
	    { line = $0; sub(/^[ \t]+/, "", line) }
	    line ~ /^group[ \t]*=/ { sub(/^group[ \t]*=[ \t]*/, "", line); grp = line; next }
	    grp == g && line ~ ("^" k "[ \t]*=") {
		sub("^" k "[ \t]*=[ \t]*", "", line); sub(/[ \t]+$/, "", line)
		gsub(/^"|"$/, "", line); print line; exit
	    }' "$T/kannel.conf"
}
KUSER=$(conf_get sendsms-user username)
KPASS=$(conf_get sendsms-user password)
APASS=$(conf_get core admin-password)
GETURL=$(conf_get sms-service get-url)
stale=$(grep -v '^[[:space:]]*#' "$T/kannel.conf" | grep -nE '(^|[^0-9])(13000|13001|13013|10000|8080)([^0-9]|$)|/var/')
if [ -n "$KUSER" ] && [ -n "$APASS" ] && [ -z "$stale" ] &&
    [ "$(conf_get core admin-port)" = "$ADMIN" ] && [ "$(conf_get core smsbox-port)" = "$BOXPORT" ] &&
    [ "$(conf_get smsbox sendsms-port)" = "$SENDSMS" ] && [ "$(conf_get smsc port)" = "$FAKE" ] &&
    [ "$(conf_get smsc smsc)" = fake ] && [ "$(conf_get sms-service max-messages)" = 10 ] &&
    [ "$(conf_get sms-service omit-empty)" = true ] &&
    [ "$(conf_get sms-service accept-x-kannel-headers)" = true ] &&
    [[ "$GETURL" == "http://127.0.0.1:$GW/sms/kannel?"* ]]; then
	ok "test kannel.conf derived from config/kannel.conf (ports $ADMIN/$BOXPORT/$SENDSMS/$FAKE, gateway $GW)"
else
	bail "test kannel.conf not derived as expected (user '$KUSER', get-url '$GETURL', left over: ${stale:-none})"
fi

# ---- Redis, dossiers, dvcgw ----

redis-server --port 0 --unixsocket "$T/redis.sock" --unixsocketperm 700 --dir "$T" \
    --save "" --appendonly no --logfile "$T/redis.log" >/dev/null 2>&1 &
PIDS+=($!)
rcli() { timeout 3 redis-cli -s "$T/redis.sock" "$@"; }
redis_up() { [ "$(rcli ping 2>/dev/null)" = PONG ]; }
wait_for 5 redis redis_up || bail "private redis-server did not start"

T="$T" ROOT="$ROOT" GW="$GW" SENDSMS="$PROXY" KUSER="$KUSER" KPASS="$KPASS" SHORT="$SHORT" \
    PTOKEN="$PTOKEN" OTOKEN="$OTOKEN" python3 -c '
import hashlib, json, os
e = os.environ
cfg = {
    "listen": {"host": "127.0.0.1", "port": int(e["GW"])},
    "redis": {"url": "unix://" + e["T"] + "/redis.sock", "prefix": "dvcgw:"},
    "flows": {"dir": e["ROOT"] + "/flows"},
    "sms": {
        "driver": "kannel",
        "kannel": {
            "sendsms_url": "http://127.0.0.1:%s/cgi-bin/sendsms" % e["SENDSMS"],
            "username": e["KUSER"], "password": e["KPASS"], "from": e["SHORT"],
            "dlr_url": "http://127.0.0.1:%s/sms/dlr?key=%s" % (e["GW"], e["PTOKEN"]),
        },
    },
    "api": {"tokens": [{"name": "kannel", "role": "provider",
                        "sha256": hashlib.sha256(e["PTOKEN"].encode()).hexdigest()},
                       {"name": "portal", "role": "portal",
                        "sha256": hashlib.sha256(e["OTOKEN"].encode()).hexdigest()}]},
    "otp": {"secret": "3c" * 32},
    "outbox": {"retry_base_ms": 200, "retry_max_ms": 1000, "send_timeout_ms": 3000,
               "sms_rate": 50},
    "log": {"level": "debug"},
}
open(e["T"] + "/dvcgw.json", "w").write(json.dumps(cfg, indent=2) + "\n")' || bail "cannot write the test dvcgw.json"

t=$(left); [ "$t" -gt 10 ] && t=10; [ "$t" -lt 1 ] && t=1
if timeout "$t" "$DVCGW_BIN" import -c "$T/dvcgw.json" config/demo-dossiers.json >"$T/import.out" 2>&1; then
	ok "demo dossiers imported ($(head -n 1 "$T/import.out" | cut -c1-80))"
else
	bail "$DVCGW_BIN import failed"
fi

"$DVCGW_BIN" -c "$T/dvcgw.json" >"$T/dvcgw.log" 2>&1 &
DVCGW=$!
PIDS+=($DVCGW)
if wait_for 10 "dvcgw /healthz" http_is 200 "http://127.0.0.1:$GW/healthz"; then
	ok "dvcgw up with sms.driver \"kannel\" (/healthz 200 on port $GW)"
else
	bail "dvcgw did not become healthy on port $GW"
fi

# ---- Kannel ----

"$BEARERBOX" -v 2 "$T/kannel.conf" >"$T/bearerbox.out" 2>&1 &
BB=$!
PIDS+=($BB)
status_url="http://127.0.0.1:$ADMIN/status.txt?password=$APASS"
wait_for 10 "bearerbox admin" http_is 200 "$status_url" || bail "bearerbox did not start (admin port $ADMIN)"
wait_for 5 "fake SMSC port" listening "$FAKE" || bail "bearerbox's fake SMSC is not listening on $FAKE"

"$SMSBOX" -v 2 "$T/kannel.conf" >"$T/smsbox.out" 2>&1 &
SB=$!
PIDS+=($SB)
smsbox_connected() { curl -s --max-time 2 "$status_url" | grep -q '^ *smsbox:.*on-line'; }
if wait_for 10 "smsbox sendsms port" http_any "http://127.0.0.1:$SENDSMS/" &&
    wait_for 10 "smsbox connected to bearerbox" smsbox_connected; then
	ok "bearerbox and smsbox up (smsbox connected, sendsms on $SENDSMS)"
else
	bail "smsbox did not start or did not connect to bearerbox"
fi

# The recording proxy: every sendsms request dvcgw makes goes through it to smsbox unchanged; it
# logs "<smsbox status> <path and query>" per request.
PROXY="$PROXY" SENDSMS="$SENDSMS" LOG="$T/sendsms.log" python3 -c '
import http.server, os, socketserver, urllib.request, urllib.error
e = os.environ
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        try:
            r = urllib.request.urlopen("http://127.0.0.1:%s%s" % (e["SENDSMS"], self.path), timeout=5)
            status, body = r.status, r.read()
        except urllib.error.HTTPError as x:
            status, body = x.code, x.read()
        except Exception:
            status, body = 502, b"proxy: smsbox did not answer"
        with open(e["LOG"], "a") as f:
            f.write("%d %s\n" % (status, self.path))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("127.0.0.1", int(e["PROXY"])), H).serve_forever()' >"$T/proxy.out" 2>&1 &
PIDS+=($!)
wait_for 5 "the sendsms proxy" listening "$PROXY" || bail "the sendsms proxy did not start"

# ---- the messages ----

UCS2_HEX=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1].encode("utf-16-be"), safe=""))' "$UCS2_TEXT")
# fakesmsc in interactive mode: one message per stdin line ("FROM TO TYPE TEXT"), replies logged
# at debug level as "Got message N: <FROM TO TYPE TEXT>". (EOF on stdin makes it exit, with a crash:
# on_exit kills it first.)
mkfifo "$T/fakesmsc.in" || bail "mkfifo failed"
"$FAKESMSC" -H 127.0.0.1 -r "$FAKE" -i 0.1 -v 0 <"$T/fakesmsc.in" >"$T/fakesmsc.out" 2>&1 &
FS=$!
PIDS+=($FS)
exec 3>"$T/fakesmsc.in"
sent_count() { grep -c 'fakesmsc: sent message' "$T/fakesmsc.out" 2>/dev/null; }
sent_at_least() { [ "$(sent_count)" -ge "$1" ]; }
# One line at a time: fakesmsc select()s on stdin and reads with stdio, so a second line written
# together with the first would sit in its buffer until EOF.
echo "$PLAIN_FROM $SHORT text $PLAIN_TEXT" >&3
s1=0; wait_for 5 "fakesmsc to send message 1" sent_at_least 1 && s1=1
echo "$UCS2_FROM $SHORT ucs2 $UCS2_HEX" >&3
s2=0; wait_for 5 "fakesmsc to send message 2" sent_at_least 2 && s2=1
if [ $s1 = 1 ] && [ $s2 = 1 ]; then
	ok "fakesmsc sent both messages (text \"$PLAIN_TEXT\" from $PLAIN_FROM, ucs2 \"$UCS2_TEXT\" from $UCS2_FROM)"
else
	notok "fakesmsc did not send both messages (alive: $(alive $FS && echo yes || echo no))"
fi

# replies.py: fakesmsc's output as JSON {receiver: {"from": [...], "types": [...], "text": joined}}.
# A reply holding newlines comes as several "Got message" lines: the ones that do not start with
# "FROM TO TYPE" continue the previous message. Parts of one reply are joined as they are (dvcgw
# keeps the spaces at the cuts).
cat >"$T/replies.py" <<'PY'
import json, re, sys, urllib.parse
out = {}
cur = None
head = re.compile(r'^(\+?[0-9]+) (\+?[0-9]+) (text|data|ucs-2|udh) ?(.*)$', re.S)
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.search(r'Got message [0-9]+: <(.*)>\s*$', line)
    if not m:
        continue
    body = m.group(1)
    h = head.match(body)
    if h is None:
        if cur is not None:
            cur["text"] += "\n" + body
        continue
    frm, to, typ, data = h.groups()
    udh = None
    if typ == "udh":	# a part of a concatenated SMS: "udh <UDH> <type> <data>"
        u, typ, data = (data.split(" ", 2) + ["", ""])[:3]
        udh = list(urllib.parse.unquote_to_bytes(u))
    raw = None
    if typ in ("ucs-2", "data"):
        raw = urllib.parse.unquote_to_bytes(data.replace("+", "%20"))
        data = raw.decode("utf-16-be" if typ == "ucs-2" else "latin-1", "replace")
    r = out.setdefault(to, {"from": [], "types": [], "text": "", "udh": [], "raw": ""})
    # a concatenated part shows as "data" whatever its coding: its bytes, for a UCS-2 reply
    r["raw"] += (raw or b"").hex()
    r["udh"].append(udh)
    r["from"].append(frm)
    r["types"].append(typ)
    if r["text"]:
        r["text"] += "\x00"	# part boundary, removed below
    r["text"] += data
    cur = r
for r in out.values():
    r["parts"] = r["text"].count("\x00") + 1
    r["text"] = r["text"].replace("\x00", "")
json.dump(out, sys.stdout, ensure_ascii=False)
PY

canon() { case $1 in 0[1-9]????????) echo "84${1#0}";; *) echo "$1";; esac; }

# reply_json: the replies fakesmsc got so far; reply_get JSON SENDER WHAT: one field of the reply to
# SENDER, found under the number as sent or in its 84 form (dvcgw replies to the canonical number).
reply_json() {
	python3 "$T/replies.py" "$T/fakesmsc.out" 2>/dev/null
}
reply_get() {
	python3 -c '
import json, sys
d = json.loads(sys.argv[1] or "{}")
a, c, what = sys.argv[2], sys.argv[3], sys.argv[4]
r = d.get(a) or d.get(c)
if r is None: sys.exit(1)
to = a if a in d else c
if what == "to": print(to)
elif what == "text": print(" ".join(r["text"].split()))
elif what == "raw": print(r["text"])
elif what == "from": print(",".join(sorted(set(r["from"]))))
elif what == "types": print(",".join(sorted(set(r["types"]))))
elif what == "parts": print(r["parts"])
elif what == "ucs2": print(" ".join(bytes.fromhex(r["raw"]).decode("utf-16-be", "replace").split()))
elif what == "concat":	# every part carries one concatenation UDH: same ref, n parts, in order
    u = r["udh"]
    ok = len(u) >= 2 and all(x is not None and len(x) == 6 and x[:3] == [5, 0, 3] and
        x[3] == u[0][3] and x[4] == len(u) and x[5] == i + 1 for i, x in enumerate(u))
    sys.exit(0 if ok else 1)
elif what == "ascii": sys.exit(0 if all(ord(ch) < 128 for ch in r["text"]) else 1)
' "$1" "$2" "$(canon "$2")" "$3"
}
has_all() {	# has_all TEXT: every EXPECT string is in TEXT
	local e
	for e in "${EXPECT[@]}"; do [[ "$1" == *"$e"* ]] || return 1; done
}
complete_for() {
	local j t
	j=$(reply_json) || return 1
	t=$(reply_get "$j" "$1" text) || return 1
	has_all "$t"
}
both_complete() { complete_for "$PLAIN_FROM" && complete_for "$UCS2_FROM"; }
wait_for 15 "the replies" both_complete
# Then every part dvcgw queued must leave: its outbox streams and retry sets empty...
outbox_left() {	# the parts still queued, one "TO: TEXT" line each
	local k
	for k in $(rcli --scan --pattern 'dvcgw:*:outbox'); do
		rcli --no-raw xrange "$k" - + | awk '
		    /^ *[0-9]+\) "to"$/ { getline; gsub(/^ *[0-9]+\) "|"$/, ""); to = $0 }
		    /^ *[0-9]+\) "text"$/ { getline; gsub(/^ *[0-9]+\) "|"$/, ""); print to ": " substr($0, 1, 40) }'
	done
	for k in $(rcli --scan --pattern 'dvcgw:*:retry'); do
		[ "$(rcli zcard "$k")" = 0 ] || echo "$k: $(rcli zcard "$k") waiting for a retry"
	done
}
outbox_empty() { [ -z "$(outbox_left)" ]; }
wait_for 8 "dvcgw's outbox to drain" outbox_empty
# ...and reach fakesmsc: at least one message there for each sendsms request smsbox accepted.
n_sendsms() { grep -c 'send-SMS request added' "$T/smsbox-access.log" 2>/dev/null; }
n_got() { grep -cE 'Got message [0-9]+: <[+0-9]+ [+0-9]+ (text|data|ucs-2|udh) ' "$T/fakesmsc.out" 2>/dev/null; }
all_arrived() { [ "$(n_got)" -ge "$(n_sendsms)" ]; }
wait_for 5 "fakesmsc to receive what smsbox accepted" all_arrived
J=$(reply_json)

left_over=$(outbox_left)
if [ -z "$left_over" ]; then
	ok "dvcgw's outbox drained: every queued reply part was sent ($(n_sendsms) sendsms requests, $(n_got) SMS at fakesmsc)"
else
	notok "dvcgw's outbox not drained after $((SECONDS - START)) s; parts never sent: $(echo "$left_over" | tr '\n' '|' | sed 's/|$//; s/|/ | /g')"
fi

check_reply() {	# check_reply SENDER KIND
	local s=$1 kind=$2 to text
	if ! to=$(reply_get "$J" "$s" to); then
		notok "$kind message from $s: no reply arrived at fakesmsc (receivers seen: $(python3 -c 'import json,sys; print(",".join(json.loads(sys.argv[1] or "{}")) or "none")' "$J"))"
		return
	fi
	text=$(reply_get "$J" "$s" text)
	if has_all "$text"; then
		ok "$kind message from $s: reply to $to in $(reply_get "$J" "$s" parts) part(s) has the code, the procedure and \"Dang xu ly\""
	else
		notok "$kind message from $s: reply to $to lacks some of: ${EXPECT[*]} -- got: $text"
	fi
	if [ "$(reply_get "$J" "$s" from)" = "$SHORT" ]; then
		ok "$kind message from $s: reply sent from the short code $SHORT"
	else
		notok "$kind message from $s: reply sent from '$(reply_get "$J" "$s" from)', expected $SHORT"
	fi
	if reply_get "$J" "$s" concat; then
		ok "$kind message from $s: the $(reply_get "$J" "$s" parts)-part reply arrived as ONE concatenated SMS (UDH 05 00 03, one reference, parts in order)"
	else
		notok "$kind message from $s: the reply did not arrive as one concatenated SMS (UDH per part: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1] or "{}"); print([r["udh"] for r in d.values()])' "$J"))"
	fi
	if [[ "$(reply_get "$J" "$s" types)" =~ ^(text|data)$ ]] && reply_get "$J" "$s" ascii; then
		ok "$kind message from $s: reply is unaccented GSM text (coding 0)"
	else
		notok "$kind message from $s: reply types '$(reply_get "$J" "$s" types)', non-ASCII text: $(reply_get "$J" "$s" raw | head -c 200)"
	fi
}
check_reply "$PLAIN_FROM" plain
check_reply "$UCS2_FROM" UCS-2

# smsbox logs each get-url call with dvcgw's status.
n200=$(grep -c "url: 'http://127.0.0.1:$GW/sms/kannel?.*' reply: 200 " "$T/smsbox-access.log" 2>/dev/null)
if [ "${n200:-0}" -ge 2 ]; then
	ok "dvcgw answered Kannel's get-url with 200 for both messages"
else
	notok "dvcgw answered 200 to $n200 of 2 get-url calls (see smsbox-access.log)"
fi

# Delivery reports: fake SMSC reports every message as delivered; smsbox calls sms.kannel.dlr_url.
dlr_states() {	# e.g. "6 delivered"
	rcli --scan --pattern 'dvcgw:{?}:dlr:*' | while read -r k; do rcli get "$k"; done | sort | uniq -c |
	    awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }'
}
# One report per reply: the whole concatenated SMS carries one id.
nparts=$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1] or "{}")))' "$J")
dlr_done() { [ "$(rcli --scan --pattern 'dvcgw:{?}:dlr:*' | wc -l)" -ge "${nparts:-1}" ]; }
wait_for 5 "delivery reports" dlr_done
st=$(dlr_states)
if dlr_done && [[ "$st" =~ ^[0-9]+\ delivered$ ]]; then
	ok "delivery reports reached dvcgw through dlr-url for all $nparts replies ($st)"
else
	notok "delivery reports: expected $nparts replies delivered, got: ${st:-none}"
fi

# Kannel accepted every sendsms request at once: nothing retried, nothing dead-lettered.
dead=0
for k in $(rcli --scan --pattern 'dvcgw:*:dead'); do dead=$((dead + $(rcli xlen "$k"))); done
retried=$(grep -c 'outbox: .* failed (' "$T/dvcgw.log")
if [ "$dead" -eq 0 ] && [ "$retried" -eq 0 ] && ! grep -q 'dead-lettered' "$T/dvcgw.log"; then
	ok "smsbox accepted every sendsms request first time (no retry, nothing dead-lettered)"
else
	notok "sendsms: $retried failed attempts, $dead replies dead-lettered (see dvcgw.log)"
fi

# ---- an OTP ahead of a backlog of 200 replies ----
# 200 replies queued across the eight shards (sms_rate 50/s: four seconds of sending), then a portal
# asks for a code: it must reach fakesmsc while most of the backlog is still waiting, sent by smsbox
# with priority 3 and a validity.
for ((i = 0; i < 200; i++)); do
	printf 'XADD dvcgw:{%d}:outbox * ch sms to 8497%07d from "" text "Backlog reply %d" att 0\n' \
	    $((i % 8)) $((1000000 + i)) "$i"
done | rcli >/dev/null
otp_answer=$(curl -s --max-time 3 -H "Authorization: Bearer $OTOKEN" -H 'Content-Type: application/json' \
    -d "{\"phone\":\"$OTP_PHONE\",\"purpose\":\"login\"}" "http://127.0.0.1:$GW/api/v1/otp")
otp_got() { grep -qE "Got message [0-9]+: <[+0-9]+ $(canon $OTP_PHONE) text [0-9]{6} " "$T/fakesmsc.out"; }
if [[ "$otp_answer" == *'"status":"pending"'* ]] && wait_for 5 "the OTP at fakesmsc" otp_got; then
	before=$(awk -v p="$(canon $OTP_PHONE)" '/Backlog reply/ { n++ } index($0, " " p " text ") { print n + 0; exit }' "$T/fakesmsc.out")
	if [ "${before:-200}" -lt 100 ]; then
		ok "the OTP reached fakesmsc ahead of the backlog (after $before of 200 queued replies)"
	else
		notok "the OTP waited behind the backlog: $before of 200 replies arrived before it"
	fi
else
	notok "no OTP at fakesmsc (API answer: $otp_answer)"
fi
otp_q=$(grep "to=$(canon $OTP_PHONE)&" "$T/sendsms.log" | tail -n 1)
if [[ "$otp_q" == 202\ * ]] && [[ "$otp_q" == *"&priority=3&"* || "$otp_q" == *"&priority=3" ]] &&
    [[ "$otp_q" =~ \&validity=[45](\&|$) ]] && [[ "$otp_q" == *"&dlr-mask=31&"* ]]; then
	ok "smsbox accepted the OTP with priority=3, validity=${BASH_REMATCH[0]//[!0-9]/} min and dlr-mask=31 (202)"
else
	notok "smsbox was not asked for the OTP with priority=3, validity and dlr-mask=31, or refused it: ${otp_q:0:400}"
fi
otp_dlr() { grep -q '"delivery":"delivered"' <<<"$(curl -s --max-time 2 -H "Authorization: Bearer $OTOKEN" \
    "http://127.0.0.1:$GW/api/v1/otp/$(sed -n 's/.*"id":"\(VE[0-9a-f]*\)".*/\1/p' <<<"$otp_answer")")"; }
if wait_for 5 "the OTP's delivery report" otp_dlr; then
	ok "the OTP's delivery report reached its send: GET /api/v1/otp/{id} says delivered"
else
	notok "the OTP's send is not marked delivered after Kannel's DLR"
fi
backlog_done() { [ "$(grep -c 'Backlog reply' "$T/fakesmsc.out")" -ge 200 ]; }
if wait_for 15 "the backlog at fakesmsc" backlog_done; then
	ok "the whole backlog arrived too (200 replies)"
else
	notok "only $(grep -c 'Backlog reply' "$T/fakesmsc.out") of 200 backlog replies arrived"
fi


# ---- sms.kannel.reply "body": the reply is the get-url answer, sent by smsbox ----
# dvcgw restarted on the same port with sms.kannel.reply "body", first with unaccented replies,
# then with diacritics; each citizen writes to another number than ours (9000): the reply must
# still come from sms.kannel.from. bearerbox's access.log says which service sent a message
# ([SVC:default] the sms-service, i.e. a get-url answer; sendsms says its user) and its coding.
restart_body() {	# restart_body UNACCENTED(true|false)
	stop_pid "$DVCGW"
	python3 -c 'import json, sys
c = json.load(open(sys.argv[1])); c["sms"]["kannel"]["reply"] = "body"
c["sms"]["unaccented"] = sys.argv[3] == "true"
open(sys.argv[2], "w").write(json.dumps(c, indent=2) + "\n")' "$T/dvcgw.json" "$T/dvcgw-body.json" "$1" ||
	    bail "cannot write the body-mode dvcgw.json"
	"$DVCGW_BIN" -c "$T/dvcgw-body.json" >>"$T/dvcgw.log" 2>&1 &
	DVCGW=$!
	PIDS+=($DVCGW)
	wait_for 10 "dvcgw /healthz (body mode)" http_is 200 "http://127.0.0.1:$GW/healthz" ||
	    bail "dvcgw did not come back in body mode"
}
BODY_PLAIN_FROM=0912000222
BODY_UCS2_FROM=0983000333
sent_lines() {	# sent_lines RECEIVER: bearerbox's "Sent SMS" lines to it (as sent or in its 84 form)
	grep -E "Sent SMS .* \[to:(\+?$1|$(canon "$1"))\] " "$T/access.log" 2>/dev/null
}
restart_body true
n0=$(sent_count)
echo "$BODY_PLAIN_FROM 9000 text $PLAIN_TEXT" >&3
wait_for 5 "fakesmsc to send the body-mode message" sent_at_least $((n0 + 1))
wait_for 10 "the body-mode reply" complete_for "$BODY_PLAIN_FROM"
J=$(reply_json)
if text=$(reply_get "$J" "$BODY_PLAIN_FROM" text) && has_all "$text" &&
    [[ "$(reply_get "$J" "$BODY_PLAIN_FROM" types)" =~ ^(text|data)$ ]] &&
    reply_get "$J" "$BODY_PLAIN_FROM" ascii; then
	ok "body mode: the reply came back in the get-url answer and reached fakesmsc, unaccented GSM text in $(reply_get "$J" "$BODY_PLAIN_FROM" parts) part(s)"
else
	notok "body mode: no complete unaccented reply for $BODY_PLAIN_FROM at fakesmsc -- got: ${text:-nothing}"
fi
restart_body false
n0=$(sent_count)
echo "$BODY_UCS2_FROM 9000 text $PLAIN_TEXT" >&3
wait_for 5 "fakesmsc to send the accented body-mode message" sent_at_least $((n0 + 1))
ucs2_done() {
	local t
	t=$(reply_get "$(reply_json)" "$BODY_UCS2_FROM" ucs2) && [[ "$t" == *"Đang xử lý"* ]]
}
wait_for 10 "the accented body-mode reply" ucs2_done
J=$(reply_json)
text=$(reply_get "$J" "$BODY_UCS2_FROM" ucs2)
lines=$(sent_lines "$BODY_UCS2_FROM")
if [[ "$text" == *"$CODE"* && "$text" == *"Đang xử lý"* && "$text" == *"Cấp giấy chứng nhận"* ]] &&
    [ -n "$lines" ] && ! grep -qv '\[flags:[-0-9]*:2:' <<<"$lines"; then
	ok "body mode: the accented reply reached fakesmsc as UCS-2 with its diacritics (coding 2 in bearerbox's $(wc -l <<<"$lines") line(s) for it)"
else
	notok "body mode: the accented reply is not UCS-2 with its diacritics -- text: ${text:-none}; bearerbox: $(cut -c1-300 <<<"$lines")"
fi
froms="$(reply_get "$J" "$BODY_PLAIN_FROM" from),$(reply_get "$J" "$BODY_UCS2_FROM" from)"
if [ "$froms" = "$SHORT,$SHORT" ]; then
	ok "body mode: both replies sent from sms.kannel.from $SHORT although the citizens wrote to 9000"
else
	notok "body mode: replies sent from '$froms', expected $SHORT (X-Kannel-From)"
fi
lines=$(sent_lines "$BODY_PLAIN_FROM"; sent_lines "$BODY_UCS2_FROM")
asked=$(grep -cE "[?&]to=(%2B)?($BODY_PLAIN_FROM|$(canon $BODY_PLAIN_FROM)|$BODY_UCS2_FROM|$(canon $BODY_UCS2_FROM))&" "$T/sendsms.log")
if [ "$asked" = 0 ] && [ -n "$lines" ] && ! grep -qv '\[SVC:default\]' <<<"$lines"; then
	ok "body mode: nothing went through sendsms (no sendsms request to either citizen; every part sent by the sms-service)"
else
	notok "body mode: $asked sendsms requests to the body-mode citizens; bearerbox: $(cut -c1-200 <<<"$lines" | tr '\n' '|')"
fi

alive "$DVCGW" && alive "$BB" && alive "$SB" && ok "dvcgw, bearerbox and smsbox still running" ||
    notok "a process died (dvcgw $(alive $DVCGW && echo up || echo down), bearerbox $(alive $BB && echo up || echo down), smsbox $(alive $SB && echo up || echo down))"
exit 0
