#!/usr/bin/env bash
# The whole test suite, browser and Redis included: `cargo test` (the browser
# and cluster tests are #[ignore]d there), then the dashboard's tests in
# headless Chromium, then the cluster tests against real redis-servers they
# start themselves.
#
# Installs what is missing with apt-get (Debian): chromium, which the browser
# tests drive over the DevTools protocol (no chromedriver needed), curl,
# which the smoke scripts use, and redis-server. Without Chromium the browser
# tests fail, without redis-server the cluster tests fail; they never skip.
#
# Usage: scripts/test.sh [extra cargo test args, e.g. --release]
# Env:   CHROMIUM   a Chromium/Chrome binary to use instead of `chromium` on PATH
#        REDIS_SERVER  a redis-server binary to use instead of the one on PATH
#        TEST_TIMEOUT=1800  seconds allowed for each cargo test run
set -euo pipefail

source "$(dirname "$0")/lib.sh"
lib_init test.sh
cd "$repo"

TEST_TIMEOUT=${TEST_TIMEOUT:-1800}

have_chromium() {
	[[ -n "${CHROMIUM:-}" ]] && return 0
	local name
	for name in chromium chromium-browser google-chrome google-chrome-stable; do
		command -v "$name" >/dev/null && return 0
	done
	return 1
}

missing=()
have_chromium || missing+=(chromium)
command -v curl >/dev/null || missing+=(curl)
[[ -n ${REDIS_SERVER:-} ]] || command -v redis-server >/dev/null || missing+=(redis-server)
if ! install_missing "${missing[@]}"; then
	log "missing ${missing[*]}; install them (e.g. apt-get install ${missing[*]})"
	log "or set CHROMIUM=/path/to/chrome, REDIS_SERVER=/path/to/redis-server."
	log "The browser tests fail without a browser, the cluster tests without Redis."
fi

echo "== cargo test"
timeout "$TEST_TIMEOUT" cargo test "$@"
echo "== cargo test --test dashboard -- --ignored (headless Chromium)"
timeout "$TEST_TIMEOUT" cargo test "$@" --test dashboard -- --ignored
echo "== screenshots: target/dashboard.png target/dashboard-dark.png target/dashboard-phone.png"
echo "== cargo test --test cluster -- --ignored (redis-server)"
timeout "$TEST_TIMEOUT" cargo test "$@" --test cluster -- --ignored
