#!/usr/bin/env bash
# Cluster mode by hand: starts a redis-server and three pubsubd nodes on
# loopback, checks that a topic created on one node exists on the others,
# runs a cross-node round trip with the CLI (`pubsubd sub` on node 3,
# `pubsubd pub` on node 1), SIGKILLs node 3, publishes while its subscriber
# is gone, and resumes that subscriber on node 2 with `--since N --epoch E`:
# it gets exactly what it missed (recovered: true), then live events. Stops
# everything it started (only those PIDs) and exits non-zero on any failed check.
#
# Usage: scripts/cluster.sh
# Env:   PUBSUBD_BIN     the pubsubd binary (default: build target/debug/pubsubd)
#        REDIS_SERVER    the redis-server binary (default: redis-server on PATH;
#                        installed with apt-get when missing and run as root)
#        STEP_TIMEOUT=10 seconds allowed for each step
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init cluster

need_redis
pubsubd_bin
start_redis
log "redis-server (pid $redis_pid) on $redis_url"

# Three nodes sharing that Redis.
node_urls=()
node_pids=()
for i in 1 2 3; do
	# No `timeout` wrapper: node 3 is SIGKILLed by its own PID below (the
	# EXIT trap stops the others).
	start_server "$work/node$i.log" "$bin" --host 127.0.0.1 --port 0 --redis "$redis_url" --log-level info
	node_urls+=("$url")
	node_pids+=("$server")
	log "node $i (pid $server) on $url"
done

# get URL PATH: the body of a GET, or fail.
get() { curl -sS --max-time "$STEP_TIMEOUT" "$1$2"; }
for i in 0 1 2; do
	linked() { [[ $(get "${node_urls[$i]}" /health) == *'"redis":"up"'* ]]; }
	wait_for "node $((i + 1)) to link to Redis" linked
done
log "every node reports \"redis\":\"up\""

cli() { timeout "$STEP_TIMEOUT" "$bin" "$@"; }
topic=cluster-$$-$RANDOM

# A topic created on node 1 exists on nodes 2 and 3.
cli topics create "$topic" --url "${node_urls[0]}" >/dev/null || fail "create $topic on node 1"
status=$(curl -sS --max-time "$STEP_TIMEOUT" -o /dev/null -w '%{http_code}' -X POST \
	-H 'Content-Type: application/json' --data "{\"name\":\"$topic\"}" "${node_urls[1]}/topics")
[[ $status == 409 ]] || fail "create $topic again on node 2: expected 409, got $status"
listed() { cli topics --url "${node_urls[2]}" | grep -q "^$topic"$'\t'; }
wait_for "node 3 to list $topic" listed
log "created $topic on node 1: 409 on node 2, listed on node 3"

# A subscriber on node 3, a publisher on node 1. With --follow the CLI tells
# the epoch on stderr, and keeps trying node 3 once it is gone (it reconnects
# to the same URL: resuming on another node is the user's move, below).
timeout --kill-after=5 120 "$bin" sub "$topic" --follow --url "${node_urls[2]}" \
	>"$work/sub1.out" 2>"$work/sub1.err" &
sub1=$!
track "$sub1"
subscribed() { grep -q "subscribed to '$topic'" "$work/sub1.err"; }
wait_for "the subscriber on node 3 (stderr: $(cat "$work/sub1.err"))" subscribed
epoch=$(sed -n "s/.*subscribed to '$topic' at seq [0-9]* in epoch \([0-9a-f]*\).*/\1/p" "$work/sub1.err")
[[ -n $epoch ]] || fail "no epoch in: $(cat "$work/sub1.err")"
printf '{"n":1}\n{"n":2}\n{"n":3}\n' | cli pub "$topic" --url "${node_urls[0]}" ||
	fail "pubsubd pub on node 1"

# expect_events FILE FIRST LAST: FILE holds exactly the events FIRST..LAST,
# in order, each with seq k and payload {"n":k}.
expect_events() {
	local file=$1 first=$2 last=$3
	has_all() { [[ $(wc -l <"$file") -ge $((last - first + 1)) ]]; }
	wait_for "events $first..$last in $file (got: $(cat "$file"))" has_all
	local k=$first line
	while IFS= read -r line; do
		[[ $line == *"\"seq\":$k,"* && $line == *"\"payload\":{\"n\":$k}"* ]] ||
			fail "expected event $k, got: $line"
		k=$((k + 1))
	done <"$file"
	((k == last + 1)) || fail "expected events $first..$last, got $((k - first)): $(cat "$file")"
}
expect_events "$work/sub1.out" 1 3
log "published 3 events on node 1; the subscriber on node 3 got seq 1..3 in order"

# Node 3 dies (SIGKILL): its subscriber loses the connection.
kill -KILL "${node_pids[2]}"
wait "${node_pids[2]}" 2>/dev/null || true
untrack "${node_pids[2]}"
lost() { grep -q "reconnecting" "$work/sub1.err"; }
wait_for "the subscriber to notice node 3 is gone (stderr: $(cat "$work/sub1.err"))" lost
kill "$sub1" 2>/dev/null || true
wait "$sub1" 2>/dev/null || true
untrack "$sub1"
log "SIGKILLed node 3 (pid ${node_pids[2]}); its subscriber ended at seq 3 of epoch $epoch"

# Published while nobody listens.
printf '{"n":4}\n{"n":5}\n' | cli pub "$topic" --url "${node_urls[0]}" || fail "pubsubd pub on node 1"

# The subscriber resumes on node 2 where it left off: 4 and 5, then live ones.
timeout --kill-after=5 120 "$bin" sub "$topic" --since 3 --epoch "$epoch" --url "${node_urls[1]}" \
	>"$work/sub2.out" 2>"$work/sub2.err" &
sub2=$!
track "$sub2"
resumed() { grep -q "recovered: true" "$work/sub2.err"; }
wait_for "the subscriber to resume on node 2 (stderr: $(cat "$work/sub2.err"))" resumed
expect_events "$work/sub2.out" 4 5
cli pub "$topic" '{"n":6}' --url "${node_urls[1]}" >/dev/null || fail "pubsubd pub on node 2"
expect_events "$work/sub2.out" 4 6
log "resumed on node 2 with --since 3 --epoch $epoch: recovered: true, seq 4..6, nothing twice"

kill "$sub2" 2>/dev/null || true
wait "$sub2" 2>/dev/null || true
untrack "$sub2"
cli topics delete "$topic" --url "${node_urls[1]}" >/dev/null || fail "delete $topic on node 2"

# The two nodes left stop cleanly on SIGTERM.
for i in 0 1; do
	server=${node_pids[$i]}
	stop_server || fail "node $((i + 1)) did not stop cleanly: $(tail -n 5 "$work/node$((i + 1)).log")"
done
log "PASS: 3 nodes on $redis_url, cross-node round trip, a node killed, resumed elsewhere"
