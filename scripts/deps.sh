#!/bin/sh
# Install the Debian packages dvcgw needs to build, run and test; as root with apt-get, otherwise
# print the exact command. Quiet when everything is there.
PKGS="build-essential pkg-config libevent-dev libhiredis-dev libjansson-dev libsodium-dev
libcurl4-openssl-dev redis-server redis-tools kannel kannel-extras wrk python3 curl tzdata
chromium chromium-driver python3-selenium python3-prometheus-client"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
	    { echo "deps: apt-get failed" >&2; exit 1; }
	# Debian starts the packaged services on install; dvcgw runs its own private Redis and Kannel.
	for s in redis-server kannel; do
		systemctl disable --now "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
	done
else
	echo "deps: missing packages:$missing" >&2
	echo "deps: run: sudo apt-get install -y$missing" >&2
	exit 1
fi
