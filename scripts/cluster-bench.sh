#!/usr/bin/env bash
# Cluster mode under load: a redis-server (no persistence) and two release
# nodes A and B on loopback, then the cluster rows of the README's
# "Two nodes and Redis" table, each on a fresh Redis and fresh nodes, printed
# as Markdown, with what Redis spent per script call (INFO commandstats).
#
# Usage: scripts/cluster-bench.sh [SECONDS]   measured window per row [5]
# Env:   SERVER_BIN=PATH   run these nodes (an older build, say) with this
#                          checkout's bench
#        REDIS_SERVER      the redis-server binary (default: on PATH;
#                          installed with apt-get when missing and run as root)
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init cluster-bench

seconds=${1:-5}
need_redis
cd "$repo"
release_bin
bench=$bin
nodes=${SERVER_BIN:-$bin}

# redis_info SECTION: one INFO section from the running Redis (plain bash).
redis_info() {
	timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "*2\r\n\$4\r\nINFO\r\n\$%d\r\n%s\r\n" "${#2}" "$2" >&3
		read -r -t 2 len <&3
		len=${len%$'"'"'\r'"'"'}
		head -c "${len#\$}" <&3' _ "$redis_port" "$1" 2>/dev/null | tr -d '\r'
}

# cluster: a fresh Redis and nodes A and B. Sets $a_url, $b_url.
cluster() {
	start_redis
	start_server "$work/a.log" "$nodes" --host 127.0.0.1 --port 0 --redis "$redis_url" --log-level info
	a_url=$url
	a_pid=$server
	start_server "$work/b.log" "$nodes" --host 127.0.0.1 --port 0 --redis "$redis_url" --log-level info
	b_url=$url
	b_pid=$server
	local node
	for node in "$a_url" "$b_url"; do
		linked() { [[ $(curl -sS --max-time 2 "$node/health") == *'"redis":"up"'* ]]; }
		wait_for "$node to link to Redis" linked
	done
}

stop_cluster() {
	local pid
	for pid in "$a_pid" "$b_pid" "$redis_pid"; do
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		untrack "$pid"
	done
}

# row LABEL LAYOUT [BENCH OPTION...]: LAYOUT is `1to1` (a publisher on A, a
# subscriber on B) or `1to100` (a publisher on A, 50 subscribers on A and 50 on B).
costs=()
row() {
	local label=$1 layout=$2
	shift 2
	cluster
	local where
	case $layout in
	1to1) where=(--subscribers 1 --pub-url "$a_url" --sub-url "$b_url") ;;
	1to100) where=(--subscribers 100 --pub-url "$a_url" --sub-url "$a_url" --sub-url "$b_url") ;;
	*) fail "unknown layout $layout" ;;
	esac
	"$bench" bench fanout "${where[@]}" "$@" --duration "$seconds" --markdown "$label" \
		>"$work/row.json" 2>"$work/row.txt" || { cat "$work/row.txt" >&2; exit 1; }
	cat "$work/row.txt"
	local calls
	calls=$(redis_info commandstats | grep -E '^cmdstat_eval(sha)?:' | tr '\n' ' ') || calls="(INFO commandstats unreadable)"
	costs+=("$label: $calls")
	stop_cluster
}

echo "pubsubd nodes $("$nodes" --version 2>/dev/null || echo "$nodes"), bench $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
	"$("$redis_server" --version | cut -d' ' -f1-3), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
	"payload 128 B, ${seconds} s per row, Redis, nodes and bench on the same machine"
echo
echo "| scenario | published/s | delivered/s | lost / dup / order | latency µs p50 / p90 / p99 / p99.9 / max | errors | bench CPU | server CPU | server RSS | notes |"
echo "|---|---:|---:|---|---|---|---:|---:|---:|---|"
row "cluster, 1 on A → 1 on B" 1to1
row "cluster, 1 on A → 1 on B, --window 1024" 1to1 --window 1024
row "cluster, 1 on A → 100 over A and B" 1to100
echo
echo "Redis, per row:"
printf -- '- %s\n' "${costs[@]}"
