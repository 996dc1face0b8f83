#!/usr/bin/env bash
# Builds the static, stripped binary exactly as the Dockerfile does and runs it
# the way the scratch image does: alone in an empty root directory, with an
# empty environment plus the image's PUBSUBD_* variables, as uid 65534 when
# possible. Then checks /health (curl and the binary's own healthcheck, as the
# HEALTHCHECK runs it), a pub/sub round trip with the CLI from inside the root,
# and a clean exit 0 on SIGTERM (what `docker stop` sends).
#
# Usage: scripts/scratch-check.sh
# Env:   REQUIRE_ISOLATION=1  fail instead of running unisolated when no
#                             chroot/unshare method works here
#        ISOLATION=auto       or chroot | unshare-chroot | unshare-root | none,
#                             to force one method (auto: the first that works)
#        STEP_TIMEOUT=10      seconds allowed for each step
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init scratch-check
cd "$repo"

TARGET=x86_64-unknown-linux-gnu
REQUIRE_ISOLATION=${REQUIRE_ISOLATION:-0}
ISOLATION=${ISOLATION:-auto}
TOPIC=scratch-check

# The logs of what this script started, for failure messages.
diagnostics() {
	local f
	for f in "$work"/*.log "$work"/*.err; do
		if [[ -s $f ]]; then
			printf '\n--- %s ---\n%s' "${f##*/}" "$(tail -n 5 "$f")"
		fi
	done
}

# --- 1. The binary, built as in the Dockerfile ---------------------------------
# getrandom finds glibc's getrandom() with dlsym, which fails in a static binary,
# and falls back to /dev/urandom, which scratch lacks: UUIDs and WebSocket masks
# would panic. The cfg makes it call getrandom() directly (Linux >= 3.17).
rustflags='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'
log "building: RUSTFLAGS='$rustflags' cargo build --release --target $TARGET (stripped, LTO)"
RUSTFLAGS=$rustflags \
	CARGO_PROFILE_RELEASE_STRIP=symbols \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	cargo build --release --locked --quiet --target "$TARGET"
bin=target/$TARGET/release/pubsubd
size=$(stat -c %s "$bin")
log "binary: $bin, $size bytes ($((size / 1024)) KiB)"

# --- 2. Static and stripped? ----------------------------------------------------
if command -v file >/dev/null; then
	description=$(file -b "$bin")
	log "file: $description"
	[[ $description == *"statically linked"* || $description == *"static-pie linked"* ]] ||
		fail "the binary is not statically linked"
	[[ $description == *stripped* && $description != *"not stripped"* ]] ||
		fail "the binary is not stripped"
fi
if command -v ldd >/dev/null; then
	linkage=$(ldd "$bin" 2>&1 || true)
	log "ldd: $(echo "$linkage" | head -n1 | tr -s '[:space:]' ' ')"
	[[ $linkage == *"not a dynamic executable"* || $linkage == *"statically linked"* ]] ||
		fail "ldd lists shared libraries: $linkage"
fi

# --- 3. An empty root holding only the binary ----------------------------------
root=$work/root
mkdir -m 755 "$root"
install -m 755 "$bin" "$root/pubsubd"
[[ $(ls -A "$root") == pubsubd ]] || fail "the root holds more than the binary"

# With `env -i` there is no PATH: name the tools by their full paths.
chroot_bin=$(command -v chroot || true)
unshare_bin=$(command -v unshare || true)
exe=/pubsubd
isolation=""
try_isolation() {
	local name=$1
	shift
	if env -i "$@" "$exe" --help >/dev/null 2>&1; then
		isolate=("$@")
		isolation=$name
		return 0
	fi
	return 1
}
isolate=()
want() { [[ $ISOLATION == auto || $ISOLATION == "$1" ]]; }
if want chroot && [[ $(id -u) == 0 && -n $chroot_bin ]] &&
	try_isolation "chroot as uid 65534 (like USER 65534:65534)" "$chroot_bin" --userspec=65534:65534 "$root"; then
	:
elif want unshare-chroot && [[ -n $unshare_bin && -n $chroot_bin ]] &&
	try_isolation "unshare --user --map-root-user + chroot" "$unshare_bin" --user --map-root-user "$chroot_bin" "$root"; then
	:
elif want unshare-root && [[ -n $unshare_bin ]] &&
	try_isolation "unshare --user --map-root-user --root" "$unshare_bin" --user --map-root-user --root="$root"; then
	:
elif [[ $REQUIRE_ISOLATION == 1 ]]; then
	fail "no way to run in an empty root here (tried: chroot as root, unshare -r + chroot, unshare -r --root; ISOLATION=$ISOLATION)"
else
	# Loud, because a pass without isolation proves much less: the binary
	# could still be reading files outside the root (a missing /etc file,
	# /dev/urandom) without this check noticing.
	{
		echo
		echo "scratch-check: ################################################################"
		echo "scratch-check: WARNING: NOT ISOLATED. No empty-root method works here"
		echo "scratch-check: WARNING: (chroot needs root; unshare needs user namespaces),"
		echo "scratch-check: WARNING: or ISOLATION=none was asked for. The binary runs from"
		echo "scratch-check: WARNING: $root with an empty environment, but it can see the"
		echo "scratch-check: WARNING: host's filesystem: this check does NOT prove that the"
		echo "scratch-check: WARNING: scratch image works. REQUIRE_ISOLATION=1 makes this fatal."
		echo "scratch-check: ################################################################"
		echo
	} >&2
	exe=$root/pubsubd
	isolation="NONE (unisolated fallback: the scratch image is NOT proven)"
fi
log "isolation: $isolation"

# in_root [VAR=VALUE...] -- ARG...: runs the binary in the root with only those variables.
in_root() {
	local vars=()
	while [[ $1 != -- ]]; do
		vars+=("$1")
		shift
	done
	shift
	timeout "$STEP_TIMEOUT" env -i "${vars[@]}" "${isolate[@]}" "$exe" "$@"
}

# --- 4. The server, as the image starts it --------------------------------------
# Port 0: the kernel picks a free port, read back from the start-up log line.
start_server "$work/server.log" timeout --kill-after=5 120 env -i PUBSUBD_HOST=0.0.0.0 PUBSUBD_PORT=8080 \
	"${isolate[@]}" "$exe" --host 127.0.0.1 --port 0 --log-level info
log "server listening on $url"

# --- 5. Health, as curl and as the HEALTHCHECK sees it ---------------------------
if command -v curl >/dev/null; then
	health=$(curl -fsS --max-time 2 "$url/health") || fail "curl $url/health"
	log "curl /health: $health"
fi
in_root PUBSUBD_HOST=0.0.0.0 PUBSUBD_PORT="$port" -- healthcheck >/dev/null ||
	fail "'pubsubd healthcheck' inside the root did not report healthy"
log "healthcheck inside the root: exit 0"
if in_root PUBSUBD_PORT=1 -- healthcheck >/dev/null 2>&1; then
	fail "'pubsubd healthcheck' against a dead port reported healthy"
fi
log "healthcheck against a dead port: exit 1"

# --- 6. A pub/sub round trip with the CLI from inside the root -------------------
in_root PUBSUBD_URL="$url" -- topics create "$TOPIC" >/dev/null || fail "topics create"
timeout --kill-after=5 60 env -i PUBSUBD_URL="$url" "${isolate[@]}" "$exe" sub "$TOPIC" \
	>"$work/sub.out" 2>"$work/sub.err" &
sub=$!
track "$sub"
subscribed() { in_root PUBSUBD_URL="$url" -- topics | grep -qx "$TOPIC"$'\t'1; }
wait_for "the subscriber to be counted by GET /topics" subscribed
payload='{"check":"scratch","n":1}'
in_root PUBSUBD_URL="$url" -- pub "$TOPIC" "$payload" || fail "pub"
delivered() { grep -qF "\"payload\":$payload" "$work/sub.out"; }
wait_for "the event on the subscriber's stdout" delivered
log "round trip: $(head -n1 "$work/sub.out")"

# --- 7. docker stop: SIGTERM, clean exit 0, the subscriber told and closed -------
kill -TERM "$server"
exited() { ! kill -0 "$server" 2>/dev/null; }
wait_for "the server to exit after SIGTERM" exited
server_rc=0
wait "$server" || server_rc=$?
[[ $server_rc == 0 ]] || fail "the server exited with $server_rc after SIGTERM (log: $(tail -n 3 "$work/server.log"))"
sub_done() { ! kill -0 "$sub" 2>/dev/null; }
wait_for "the subscriber to exit after the shutdown" sub_done
sub_rc=0
wait "$sub" || sub_rc=$?
[[ $sub_rc == 0 ]] || fail "pubsubd sub exited with $sub_rc after the server shut down: $(cat "$work/sub.err")"
pids=()
log "SIGTERM: server exit 0, subscriber exit 0"

if [[ $exe == /pubsubd ]]; then
	log "PASS: static binary of $size bytes, isolation: $isolation"
else
	log "PASS WITHOUT ISOLATION: static binary of $size bytes, isolation: $isolation"
fi
