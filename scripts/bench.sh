#!/usr/bin/env bash
# Runs the standard benchmark table against a release server on loopback and
# prints it as Markdown (the README's "Performance" section is one run).
#
# Usage: scripts/bench.sh [SECONDS]     measured window per scenario [5]
# Env:   CONNS=19000   idle connections for the `conns` row (the server and
#                      the bench each need one file descriptor per connection;
#                      see the README for why not 20 000 here)
#        OUT=DIR       keep each scenario's JSON in DIR
#        SERVER_BIN=PATH  measure this server build (an older commit, say)
#                      with this checkout's bench
#        ROLES=1       the server has keys with roles (an operator key, a
#                      publish key and a subscribe key limited to `bench.*`);
#                      publishers and subscribers use the limited keys
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init bench.sh

seconds=${1:-5}
conns=${CONNS:-19000}
cd "$repo"
release_bin
server_bin=${SERVER_BIN:-$bin}
out=${OUT:-$work/json}
mkdir -p "$out"

# A server with room for the `conns` row; it raises its own open-file limit
# as far as the hard limit allows.
server_keys=()
bench_keys=()
if [[ ${ROLES:-0} == 1 ]]; then
	server_keys=(--api-key ops-k --publish-key 'svc-k:bench.*' --subscribe-key 'web-k:bench.*')
	bench_keys=(--api-key ops-k --pub-key svc-k --sub-key web-k)
fi
start() {
	start_server "$work/server.log" "$server_bin" --host 127.0.0.1 --port 0 --log-level info \
		--max-connections $((conns + 200)) "${server_keys[@]}" "$@"
}

stop() { stop_server || true; }

n=0
row() {
	local label=$1
	shift
	n=$((n + 1))
	"$bin" bench "$@" "${bench_keys[@]}" --url "$url" --server-pid "$server" \
		--markdown "$label" >"$out/$n.json" 2>"$out/$n.row" ||
		{ cat "$out/$n.row" >&2; exit 1; }
	cat "$out/$n.row"
}

echo "pubsubd $(if [[ -n ${SERVER_BIN:-} ]]; then echo "server $SERVER_BIN, bench"; fi) $(git rev-parse HEAD 2>/dev/null || echo unknown), $(nproc) cores," \
	"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
	"payload 128 B, ${seconds} s per row, server and bench on the same machine$([[ ${ROLES:-0} == 1 ]] && echo ", keys with roles (bench.*)")"
echo
echo "| scenario | published/s | delivered/s | lost / dup / order | latency µs p50 / p90 / p99 / p99.9 / max | errors | bench CPU | server CPU | server RSS | notes |"
echo "|---|---:|---:|---|---|---|---:|---:|---:|---|"

# A fresh server for each row, so one row's memory does not show in the next.
start
row "1 → 1" fanout --duration "$seconds"
stop
start
row "1 → 100" fanout --subscribers 100 --duration "$seconds"
stop
start
row "1 → 1 000" fanout --subscribers 1000 --duration "$seconds"
stop
start
row "4 → 100 on 10 topics" fanout --publishers 4 --subscribers 100 --topics 10 --duration "$seconds"
stop
start
row "1 → 100 at 100 000 delivered/s" fanout --subscribers 100 --rate 1000 --duration "$seconds"
stop
start
row "same, bench busy-polling (--spin)" fanout --subscribers 100 --rate 1000 --duration "$seconds" --spin
stop
start
row "$conns idle subscribers, 10 publishes" conns --connections "$conns" --messages 10
stop
start --outbound-limit 1048576
row "1 stalled + 10 normal at 10 000/s, --spin" slow --subscribers 10 --rate 10000 --duration "$((seconds * 2))" --spin
stop
