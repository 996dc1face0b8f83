#!/usr/bin/env bash
# Soak: a release server under a bounded mix of load for SECONDS on loopback,
# then a check that it is still healthy and gave its memory back.
#
#   - steady publishers: `bench fanout`, 2 publishers → 20 subscribers on 4
#     topics at 2 000 publishes/s;
#   - a stalled reader: `bench slow`, one subscriber that never reads beside
#     5 normal ones, 5 000 publishes/s (the server must cut it off and the
#     others must lose nothing);
#   - churn: rounds of `bench conns` (200 connections open, subscribe, get a
#     publish, close) and REST requests, back to back.
#
# Prints the server's RSS at start, every 5 s, and at the end, and exits
# non-zero if the server died, stopped answering, a normal subscriber lost,
# duplicated or reordered an event, the stalled reader was not cut off by the
# server, or the server's RSS at the end, once the load is gone,
# is more than MAX_RSS_GROWTH_KB above its RSS at start.
#
# Usage: scripts/soak.sh [SECONDS]      (default 60)
# Env:   MAX_RSS_GROWTH_KB=6144         the memory the server may keep
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init soak

seconds=${1:-60}
cd "$repo"
release_bin

rss() { sed -n 's/^VmRSS:[[:space:]]*//p' "/proc/$server/status"; }

start_server "$work/server.log" "$bin" --host 127.0.0.1 --port 0 --log-level info \
	--outbound-limit 262144 --slow-consumer-grace 2 --max-connections 2000
echo "soak: server pid $server on $url for $seconds s"
echo "soak: RSS at start: $(rss)"

# The baseline for the memory check at the end: the idle server.
rss_start=$(rss)
"$bin" bench fanout --url "$url" --publishers 2 --subscribers 20 --topics 4 \
	--rate 2000 --warmup 0 --duration "$seconds" >"$work/fanout.json" 2>"$work/fanout.txt" &
benches=($!)
"$bin" bench slow --url "$url" --subscribers 5 --rate 5000 --warmup 0 \
	--duration "$seconds" >"$work/slow.json" 2>"$work/slow.txt" &
benches+=($!)
for pid in "${benches[@]}"; do track "$pid"; done

end=$((SECONDS + seconds))
rounds=0
requests=0
peak=0
next_sample=$((SECONDS + 5))
while ((SECONDS < end)); do
	kill -0 "$server" 2>/dev/null || fail "the server died"
	"$bin" bench conns --url "$url" --connections 200 --messages 1 >/dev/null 2>"$work/conns.txt" ||
		fail "a churn round failed: $(cat "$work/conns.txt")"
	rounds=$((rounds + 1))
	for _ in 1 2 3 4 5; do
		"$bin" stats --url "$url" >/dev/null || fail "GET /stats failed"
		requests=$((requests + 1))
	done
	now=$(rss)
	kb=${now%% *}
	((kb > peak)) && peak=$kb
	if ((SECONDS >= next_sample)); then
		echo "soak: t=$((seconds - end + SECONDS)) s RSS $now"
		next_sample=$((SECONDS + 5))
	fi
done
for pid in "${benches[@]}"; do
	wait "$pid" || fail "a bench run failed: $(cat "$work"/fanout.txt "$work"/slow.txt)"
	untrack "$pid"
done

kill -0 "$server" 2>/dev/null || fail "the server died"
health=$(curl -sf "$url/health") || fail "/health does not answer"
field() { grep -o "\"$1\":[0-9]*" "$2" | head -1 | cut -d: -f2; }
echo "soak: churn: $rounds rounds of 200 WebSocket connections, $requests REST requests"
echo "soak: steady fan-out: $(field received "$work/fanout.json") events received," \
	"lost $(field lost "$work/fanout.json"), duplicates $(field duplicates "$work/fanout.json")," \
	"order violations $(field order_violations "$work/fanout.json")"
echo "soak: beside a stalled reader: $(field received "$work/slow.json") events received," \
	"lost $(field lost "$work/slow.json"); $(tail -1 "$work/slow.txt" | sed 's/^ *//')"
echo "soak: /health after the load: $health"
echo "soak: RSS peak ${peak} kB, at end: $(rss)"
for f in fanout slow; do
	[[ $(field lost "$work/$f.json") == 0 ]] || fail "$f: events lost"
	[[ $(field duplicates "$work/$f.json") == 0 ]] || fail "$f: duplicates"
	[[ $(field order_violations "$work/$f.json") == 0 ]] || fail "$f: events out of order"
done
# The stalled reader must have been cut off by the server as a slow consumer
# (it never reads, so it never sees the 1008 close frame queued for it: the
# server drops the socket after the grace period).
stalled=$(grep -o '"stalled":{[^}]*}[^}]*}' "$work/slow.json" || true)
echo "soak: the stalled reader: ${stalled:-nothing reported}"
[[ $stalled == *'"closed_by_server":true'* ]] ||
	fail "the stalled reader was not cut off by the server: ${stalled:-no outcome in slow.json}"
# Memory given back: the RSS with the load gone, against the RSS at start.
max_growth=${MAX_RSS_GROWTH_KB:-6144}
start_kb=${rss_start%% *}
end_kb=$(rss)
end_kb=${end_kb%% *}
growth=$((end_kb - start_kb))
echo "soak: RSS growth over the run: ${growth} kB (bound ${max_growth} kB)"
((growth <= max_growth)) || fail "the server kept ${growth} kB more than at start (bound ${max_growth} kB)"
echo "soak: ok"
