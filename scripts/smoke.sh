#!/usr/bin/env bash
# A full round trip against a running pubsubd, with plain curl and the CLI:
# health, create a topic (and 409 on a second create), list, subscribe with
# `pubsubd sub`, publish with `pubsubd pub` (argument and stdin), see the
# events arrive in order, stats count them, delete (the subscriber is told),
# 404 on a second delete. Exits non-zero on the first failure.
#
# Usage: scripts/smoke.sh [URL]
#   URL              a running server, e.g. http://127.0.0.1:8080. Without it,
#                    the script starts a server of its own on a free port
#                    and stops it at the end.
# Env:  PUBSUBD_API_KEY  sent by curl and the CLI (first key of a comma list)
#       PUBSUBD_BIN      the pubsubd binary (default: build target/debug/pubsubd,
#                        else `pubsubd` on PATH)
#       STEP_TIMEOUT=10  seconds allowed for each step
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init smoke

command -v curl >/dev/null || fail "curl is required"
pubsubd_bin

url=${1:-}
if [[ -z $url ]]; then
	start_server "$work/server.log" timeout --kill-after=5 300 "$bin" --host 127.0.0.1 --port 0 --log-level info
	log "started a server on $url"
fi
url=${url%/}
export PUBSUBD_URL=$url

key=${PUBSUBD_API_KEY:-}
key=${key%%,*}
auth=()
if [[ -n $key ]]; then
	auth=(-H "X-API-Key: $key")
fi

# http METHOD PATH [BODY]: prints "STATUS BODY" of a curl request.
http() {
	local args=(-sS --max-time "$STEP_TIMEOUT" -X "$1" "${auth[@]}" -o "$work/body" -w '%{http_code}')
	if [[ $# -ge 3 ]]; then
		args+=(-H 'Content-Type: application/json' --data "$3")
	fi
	local status
	status=$(curl "${args[@]}" "$url$2") || fail "curl $1 $2"
	printf '%s %s' "$status" "$(cat "$work/body")"
}

# expect_status WANT METHOD PATH [BODY]
expect_status() {
	local want=$1
	shift
	local answer
	answer=$(http "$@")
	[[ ${answer%% *} == "$want" ]] || fail "$1 $2: expected $want, got: $answer"
	log "curl $1 $2 -> $answer"
}

cli() { timeout "$STEP_TIMEOUT" "$bin" "$@"; }

topic=smoke-$$-$RANDOM

# Health, with curl and with the CLI.
expect_status 200 GET /health
cli healthcheck >/dev/null || fail "pubsubd healthcheck"

# Create, and 409 on a second create.
expect_status 201 POST /topics "{\"name\":\"$topic\"}"
expect_status 409 POST /topics "{\"name\":\"$topic\"}"

# List, with curl and with the CLI.
listing=$(http GET /topics)
[[ $listing == 200* && $listing == *"\"name\":\"$topic\""* ]] || fail "GET /topics does not list $topic: $listing"
cli topics | grep -qx "$topic"$'\t'0 || fail "pubsubd topics does not list '$topic<TAB>0'"

# Subscribe with the CLI; wait until the server counts the subscription.
timeout --kill-after=5 60 "$bin" sub "$topic" >"$work/sub.out" 2>"$work/sub.err" &
sub=$!
track "$sub"
subscribed() { cli topics | grep -qx "$topic"$'\t'1; }
wait_for "the subscriber (stderr: $(cat "$work/sub.err"))" subscribed
log "pubsubd sub $topic: subscribed"

# Publish with the CLI: one from the argument, two from stdin lines.
cli pub "$topic" '{"smoke":1}' || fail "pubsubd pub (argument)"
printf '{"smoke":2}\n\n{"smoke":3}\n' | cli pub "$topic" || fail "pubsubd pub (stdin)"
three_events() { [[ $(wc -l <"$work/sub.out") -ge 3 ]]; }
wait_for "three events on the subscriber (got: $(cat "$work/sub.out"))" three_events
for n in 1 2 3; do
	line=$(sed -n "${n}p" "$work/sub.out")
	[[ $line == *'"type":"event"'* && $line == *"\"topic\":\"$topic\""* && $line == *"\"payload\":{\"smoke\":$n}"* ]] ||
		fail "event $n is not the one published: $line"
done
log "pubsubd sub received 3 events in order"

# A publish to a missing topic fails with the server's reason.
if cli pub "$topic-missing" '1' 2>"$work/pub.err"; then
	fail "pubsubd pub to a missing topic succeeded"
fi
grep -q TOPIC_NOT_FOUND "$work/pub.err" || fail "no TOPIC_NOT_FOUND in: $(cat "$work/pub.err")"

# Stats count the messages.
stats=$(http GET /stats)
if command -v jq >/dev/null; then
	messages=$(jq -r --arg t "$topic" '.topics[$t].messages' <<<"${stats#* }")
else
	messages=$(grep -oE "\"$topic\":\\{[^}]*\"messages\":[0-9]+" <<<"$stats" | grep -oE '[0-9]+$' || true)
fi
[[ $messages == 3 ]] || fail "GET /stats: expected 3 messages for $topic: $stats"
cli stats | grep -q "\"$topic\"" || fail "pubsubd stats does not show $topic"
log "stats: $topic has 3 messages"

# Delete with the CLI: the subscriber is told and exits 1.
cli topics delete "$topic" >/dev/null || fail "pubsubd topics delete"
sub_done() { ! kill -0 "$sub" 2>/dev/null; }
wait_for "the subscriber to end after the delete" sub_done
sub_rc=0
wait "$sub" || sub_rc=$?
untrack "$sub"
if [[ $sub_rc != 1 ]] || ! grep -q "was deleted" "$work/sub.err"; then
	fail "the subscriber should exit 1 on topic deletion: exit $sub_rc, $(cat "$work/sub.err")"
fi

# 404 on a second delete, with curl and with the CLI.
expect_status 404 DELETE "/topics/$topic"
if cli topics delete "$topic" 2>/dev/null; then
	fail "pubsubd topics delete of a missing topic succeeded"
fi

log "PASS against $url"
