#!/bin/sh
# make test: every unit binary, the black-box suites (real redis-server, real daemon, fake providers)
# and the end-to-end test with real Kannel. Each prints "N passed, M failed"; this adds them up and
# prints the total as its last line.
cd "$(dirname "$0")/.."
total_p=0
total_f=0
tally() {	# name, output file, exit status
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$2" | tail -n 1)
	if [ -z "$line" ]; then
		echo "$1: no result line (exit $3); counted as 1 failure"
		tail -n 20 "$2"
		total_f=$((total_f + 1))
		return
	fi
	p=${line%% passed*}
	f=${line#*passed, }
	f=${f%% failed*}
	if [ "$3" != 0 ] && [ "$f" = 0 ]; then
		echo "$1: exited $3 with no failed test; counted as 1 failure"
		f=1
	fi
	total_p=$((total_p + p))
	total_f=$((total_f + f))
	echo "$1: $line"
}
out=$(mktemp)
for u in build/unit_*; do
	case "$u" in *.d) continue ;; esac
	"$u" >"$out" 2>&1
	rc=$?
	[ $rc = 0 ] || cat "$out"
	tally "$(basename "$u")" "$out" $rc
done
for f in build/fuzz_*; do	# fuzz targets replay their corpora as regression tests
	case "$f" in *.d) continue ;; esac
	[ -f "$f" ] || continue
	"$f" "tests/corpus/${f#build/fuzz_}" >"$out" 2>&1
	rc=$?
	[ $rc = 0 ] || cat "$out"
	tally "$(basename "$f")" "$out" $rc
done
for t in tests/test_*.py; do
	# a suite needing Debian's own modules (python3-selenium) says so in its first line
	py=python3
	head -n 1 "$t" | grep -q '^#!/usr/bin/python3' && py=/usr/bin/python3
	"$py" "$t" >"$out" 2>&1
	rc=$?
	grep -E '^not ok|^FAIL|Error' "$out" | head -n 40
	tally "$(basename "$t")" "$out" $rc
done
if [ -x tests/kannel_e2e.sh ]; then
	tests/kannel_e2e.sh >"$out" 2>&1
	rc=$?
	[ $rc = 0 ] || cat "$out"
	tally kannel_e2e "$out" $rc
fi
rm -f "$out"
echo "$total_p passed, $total_f failed"
[ "$total_f" = 0 ]
