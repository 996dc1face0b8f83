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
#        SERVER_BIN=PATH                 measure this server binary (an older
#                                        build, say) with this checkout's bench
#        ROLES=1                         keys with roles on the server; the bench
#                                        publishes and subscribes with limited keys
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init callgrind.sh

n=${1:-5000}
fanouts=${FANOUTS:-1 10 100}
cd "$repo"
command -v valgrind >/dev/null || install_missing valgrind ||
	fail "valgrind is missing: install it (apt-get install valgrind)"
release_bin
server_bin=${SERVER_BIN:-$bin}
# ROLES=1: keys with roles, as in bench.sh (publishers and subscribers on limited keys).
server_keys=()
bench_keys=()
if [[ ${ROLES:-0} == 1 ]]; then
	server_keys=(--api-key ops-k --publish-key 'svc-k:bench.*' --subscribe-key 'web-k:bench.*')
	bench_keys=(--api-key ops-k --pub-key svc-k --sub-key web-k)
fi

# Sets $counted: the instructions the server ran while `count` publishes went
# to `subs` subscribers. (Not in a $(…) subshell: the EXIT trap must know the
# server it started.)
instructions() {
	local subs=$1 count=$2 out=$work/cg.$1.$2
	# Valgrind starts slowly: allow it 30 s to listen.
	STEP_TIMEOUT=30 start_server "$work/log" valgrind --tool=callgrind --callgrind-out-file="$out" \
		"$server_bin" --host 127.0.0.1 --port 0 --log-level info "${server_keys[@]}"
	"$bin" bench fanout "${bench_keys[@]}" --url "$url" --subscribers "$subs" --count "$count" \
		>"$work/bench.json" 2>"$work/bench.txt" || fail "the bench failed: $(cat "$work/bench.txt")"
	grep -q '"lost":0,' "$work/bench.json" || fail "events lost"
	stop_server || true
	counted=$(sed -n 's/^summary: //p' "$out")
}

echo "| subscribers | instructions per publish | per delivered event |"
echo "|---:|---:|---:|"
for subs in $fanouts; do
	instructions "$subs" "$n"
	one=$counted
	instructions "$subs" $((2 * n))
	two=$counted
	per=$(((two - one) / n))
	echo "| $subs | $per | $((per / subs)) |"
done
