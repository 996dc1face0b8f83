#!/usr/bin/env bash
# The README's quick start, run as a script: curl for the REST side, wscat for
# a subscriber and a publisher (installed with `npm install -g wscat` when
# missing; without npm, the pubsubd CLI stands in). Prints each command and what
# the server answered.
#
# Usage: scripts/demo.sh [URL]        default http://localhost:8080
# Env:   DEMO_TOPIC=orders            the topic to create, use and delete
#        PUBSUBD_API_KEY              sent as X-API-Key (first key of a comma list)
#        PUBSUBD_BIN                  the CLI for the fallback (default: cargo
#                                     build target/debug/pubsubd, else PATH)
#        DEMO_CLIENT=wscat|cli        force one client
#        STEP_TIMEOUT=10              seconds allowed for each step
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init demo

url=${1:-http://localhost:8080}
url=${url%/}
topic=${DEMO_TOPIC:-orders}

say() { printf '\n# %s\n' "$*"; }

command -v curl >/dev/null || fail "curl is required"

key=${PUBSUBD_API_KEY:-}
key=${key%%,*}
curl_auth=()
wscat_auth=()
if [[ -n $key ]]; then
	curl_auth=(-H "X-API-Key: $key")
	wscat_auth=(-H "X-API-Key: $key")
fi

# quote ARG: ARG as it would be typed in a shell.
quote() {
	if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
		printf '%s' "$1"
	else
		printf "'%s'" "${1//\'/\'\\\'\'}"
	fi
}

# show CMD...: prints the command as a shell line, runs it, prints its output.
show() {
	local arg line=\$
	for arg in "$@"; do
		line+=" $(quote "$arg")"
	done
	printf '%s\n' "$line"
	"$@"
	echo
}

# until_seen FILE PATTERN: waits until FILE has a line with PATTERN; false on timeout.
until_seen() {
	local deadline=$((SECONDS + STEP_TIMEOUT))
	until grep -q "$2" "$1" 2>/dev/null; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

client=${DEMO_CLIENT:-}
if [[ -z $client ]]; then
	if command -v wscat >/dev/null; then
		client=wscat
	elif command -v npm >/dev/null && timeout 120 npm install -g wscat >"$work/npm.log" 2>&1 &&
		command -v wscat >/dev/null; then
		echo "demo: installed wscat $(wscat --version) from npm"
		client=wscat
	else
		echo "demo: wscat is not available (and npm could not install it): using the pubsubd CLI"
		client=cli
	fi
fi
if [[ $client == cli ]]; then
	pubsubd_bin
	export PUBSUBD_URL=$url
fi

ws=ws://${url#*://}/ws

say "Create a topic, list topics, check health"
show curl -sS "${curl_auth[@]}" -X POST "$url/topics" -H 'Content-Type: application/json' -d "{\"name\":\"$topic\"}"
show curl -sS "${curl_auth[@]}" "$url/topics"
show curl -sS "$url/health"

subscribe="{\"type\":\"subscribe\",\"topic\":\"$topic\",\"client_id\":\"s1\",\"last_n\":5,\"request_id\":\"r1\"}"
payload='{"order_id":"ORD-123","amount":99.5}'
publish="{\"type\":\"publish\",\"topic\":\"$topic\",\"message\":{\"id\":\"550e8400-e29b-41d4-a716-446655440000\",\"payload\":$payload},\"request_id\":\"r3\"}"

if [[ $client == wscat ]]; then
	say "Subscribe with wscat (in the background)"
	printf '$ wscat -c %s\n> %s\n' "$ws" "$subscribe"
	# Scripted, wscat drops lines typed before it connects (so -x sends the
	# request) and quits when its stdin ends: hold stdin open until the demo is
	# over, watching what wscat writes (reading its output file is the point).
	# shellcheck disable=SC2094
	until_seen "$work/sub.out" topic_deleted |
		timeout 60 wscat -c "$ws" "${wscat_auth[@]}" -x "$subscribe" -w -1 >"$work/sub.out" 2>&1 &
	track "$!"
	until_seen "$work/sub.out" '"request_id":"r1"' || fail "no answer to subscribe: $(cat "$work/sub.out")"
	sed 's/^/< /' "$work/sub.out"

	say "Publish from a second wscat"
	printf '$ wscat -c %s\n> %s\n' "$ws" "$publish"
	# shellcheck disable=SC2094
	until_seen "$work/pub.out" '"request_id":"r3"' |
		timeout 30 wscat -c "$ws" "${wscat_auth[@]}" -x "$publish" -w -1 >"$work/pub.out" 2>&1 || true
	sed 's/^/< /' "$work/pub.out"
	grep -q '"type":"ack"' "$work/pub.out" || fail "the publish was not acknowledged"
else
	say "Subscribe with the pubsubd CLI (in the background)"
	printf '$ pubsubd sub %s --last-n 5\n' "$topic"
	timeout 60 "$bin" sub "$topic" --last-n 5 >"$work/sub.out" 2>"$work/sub.err" &
	track "$!"
	subscribed() { curl -sS "${curl_auth[@]}" "$url/topics" | grep -q "\"name\":\"$topic\",\"subscribers\":[1-9]"; }
	wait_for "the subscriber to subscribe (stderr: $(cat "$work/sub.err"))" subscribed

	say "Publish with the pubsubd CLI"
	show "$bin" pub "$topic" "$payload"
fi

say "The subscriber sees the event"
until_seen "$work/sub.out" '"type":"event"' || fail "no event reached the subscriber"
grep '"type":"event"' "$work/sub.out" | sed 's/^/< /'

say "Look at the counters and clean up"
show curl -sS "${curl_auth[@]}" "$url/stats"
show curl -sS "${curl_auth[@]}" -X DELETE "$url/topics/$topic"

if [[ $client == wscat ]]; then
	say "The subscriber is told, and stays connected"
	until_seen "$work/sub.out" topic_deleted || fail "the subscriber was not told about the deletion"
	grep topic_deleted "$work/sub.out" | sed 's/^/< /'
fi
