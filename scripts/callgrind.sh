#!/usr/bin/env bash
# Instructions the server executes per publish, counted by callgrind: unlike
# time, instruction counts do not move with a noisy machine.
#
# For each fan-out it runs the release server under callgrind twice, once
# with N and once with 2N publishes from `pubsubd bench fanout --count`, and
# divides the difference by N, so start-up and connection set-up cancel out.
#
# Usage: scripts/callgrind.sh [N]        publishes per run [5000]
# Env:   FANOUTS="1 10 100"              subscriber counts to measure
set -euo pipefail

n=${1:-5000}
fanouts=${FANOUTS:-1 10 100}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if ! command -v valgrind >/dev/null; then
	echo "callgrind.sh: installing valgrind" >&2
	{ apt-get update -qq && apt-get install -y -qq valgrind; } >/dev/null
fi
cargo build --release --quiet
bin=$repo/target/release/pubsubd
work=$(mktemp -d)
server=
cleanup() {
	[[ -z $server ]] || kill "$server" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# Instructions the server ran while `count` publishes went to `subs` subscribers.
instructions() {
	local subs=$1 count=$2 out=$work/cg.$1.$2 addr=
	valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --host 127.0.0.1 \
		--port 0 --log-level info 2>"$work/log" &
	server=$!
	for _ in $(seq 300); do
		addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$work/log" | head -1)
		[[ -n $addr ]] && break
		sleep 0.1
	done
	[[ -n $addr ]] || { cat "$work/log" >&2; exit 1; }
	"$bin" bench fanout --url "http://$addr" --subscribers "$subs" --count "$count" \
		>"$work/bench.json" 2>"$work/bench.txt" || { cat "$work/bench.txt" >&2; exit 1; }
	grep -q '"lost":0,' "$work/bench.json" || { echo "events lost" >&2; exit 1; }
	kill -TERM "$server"
	wait "$server" || true
	server=
	sed -n 's/^summary: //p' "$out"
}

echo "| subscribers | instructions per publish | per delivered event |"
echo "|---:|---:|---:|"
for subs in $fanouts; do
	one=$(instructions "$subs" "$n")
	two=$(instructions "$subs" $((2 * n)))
	per=$(((two - one) / n))
	echo "| $subs | $per | $((per / subs)) |"
done
