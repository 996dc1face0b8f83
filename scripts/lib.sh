# Shared plumbing of the scripts in this folder; source it, do not run it:
#
#   source "$(dirname "$0")/lib.sh"
#   lib_init smoke                      # log prefix, $work, cleanup trap
#   start_server "$work/server.log" "$bin" --host 127.0.0.1 --port 0
#   echo "$url"                         # http://127.0.0.1:PORT or http://[::1]:PORT
#
# Every process a script starts in the background goes through `track PID`
# (start_server does it): the EXIT trap stops exactly those, and nothing else.
# Env: STEP_TIMEOUT=10  seconds allowed for each wait_for (and for the start).

STEP_TIMEOUT=${STEP_TIMEOUT:-10}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lib_name=script
work=""
pids=()
server=""
addr=""
port=""
url=""

# lib_init NAME: names the script in messages, makes $work, sets the EXIT trap.
lib_init() {
	lib_name=$1
	work=$(mktemp -d)
	pids=()
	trap lib_cleanup EXIT
}

log() { printf '%s: %s\n' "$lib_name" "$*" >&2; }
fail() {
	log "FAIL: $*"
	exit 1
}

# track PID: a background process of ours, stopped on exit if still running.
track() { pids+=("$1"); }

# untrack PID: one that has ended (and been waited for) on purpose.
untrack() {
	local kept=() pid
	for pid in "${pids[@]}"; do
		[[ $pid == "$1" ]] || kept+=("$pid")
	done
	pids=("${kept[@]}")
}

lib_cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if declare -F on_cleanup >/dev/null; then
		on_cleanup
	fi
	if [[ -n $work ]]; then
		rm -rf "$work"
	fi
}

# wait_for WHAT COMMAND...: retries COMMAND every 0.1 s until it succeeds, for
# STEP_TIMEOUT seconds. A script may define `diagnostics` to add to the failure.
wait_for() {
	local what=$1
	shift
	local deadline=$((SECONDS + STEP_TIMEOUT))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			local more=""
			if declare -F diagnostics >/dev/null; then
				more=$(diagnostics)
			fi
			fail "timed out after ${STEP_TIMEOUT}s waiting for $what$more"
		fi
		sleep 0.1
	done
}

# listening_addr LOG: the address of the first "listening on ADDR" line, as
# logged: 127.0.0.1:8080 or [::1]:8080.
listening_addr() {
	# The log may not exist yet: the server was started a moment ago.
	sed -n 's/.*listening on \(\[[0-9A-Fa-f:.]*\]:[0-9]*\|[0-9.]*:[0-9]*\).*/\1/p' "$1" 2>/dev/null | head -n1
}

# url_of ADDR: the URL a client uses for a listening address; a wildcard
# address (0.0.0.0, [::]) means this host's loopback.
url_of() {
	local host=${1%:*} p=${1##*:}
	case $host in
	0.0.0.0) host=127.0.0.1 ;;
	"[::]") host="[::1]" ;;
	esac
	printf 'http://%s:%s' "$host" "$p"
}

# start_server LOG COMMAND...: runs COMMAND (a pubsubd server, possibly behind
# timeout, env or valgrind) in the background, its stderr in LOG and its stdout
# in LOG.out, and waits for its "listening on" line (it must log at info). Sets
# $server (its pid), $addr, $port and $url.
start_server() {
	local log_file=$1
	shift
	# Emptied here, not only by the child's redirection: a log reused from an
	# earlier server would otherwise show its old address until the child runs.
	: >"$log_file"
	"$@" >"$log_file.out" 2>"$log_file" &
	server=$!
	track "$server"
	server_listening() {
		[[ -n $(listening_addr "$log_file") ]] && return 0
		kill -0 "$server" 2>/dev/null || fail "the server exited at start-up: $(tail -n 5 "$log_file")"
		return 1
	}
	wait_for "the server to listen (log: $(tail -n 3 "$log_file" 2>/dev/null))" server_listening
	addr=$(listening_addr "$log_file")
	port=${addr##*:}
	url=$(url_of "$addr")
}

# stop_server: SIGTERM to the server, and its exit status (0 for a clean stop)
# as this function's.
stop_server() {
	local rc=0
	kill -TERM "$server" 2>/dev/null || true
	wait "$server" || rc=$?
	untrack "$server"
	server=""
	return "$rc"
}

# pubsubd_bin: $PUBSUBD_BIN, else a debug build of this checkout, else pubsubd
# on PATH. Sets $bin.
pubsubd_bin() {
	if [[ -n ${PUBSUBD_BIN:-} ]]; then
		bin=$PUBSUBD_BIN
	elif [[ -f $repo/Cargo.toml ]] && command -v cargo >/dev/null; then
		(cd "$repo" && cargo build --quiet --bin pubsubd) || fail "cargo build"
		bin=$repo/target/debug/pubsubd
	else
		bin=$(command -v pubsubd) || fail "no pubsubd binary: set PUBSUBD_BIN"
	fi
}

# release_bin: a release build of this checkout. Sets $bin.
release_bin() {
	(cd "$repo" && cargo build --release --quiet) || fail "cargo build --release"
	bin=$repo/target/release/pubsubd
}

# install_missing PACKAGE...: installs them with apt-get (as root, on
# Debian); returns 1 when it cannot.
install_missing() {
	(($#)) || return 0
	[[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || return 1
	log "apt-get install $*"
	timeout 900 apt-get update -qq
	DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@" >/dev/null
}

# need_redis: curl and redis-server ($REDIS_SERVER, else on PATH), installed
# when missing. Sets $redis_server.
need_redis() {
	local missing=()
	command -v curl >/dev/null || missing+=(curl)
	[[ -n ${REDIS_SERVER:-} ]] || command -v redis-server >/dev/null || missing+=(redis-server)
	install_missing "${missing[@]}" ||
		fail "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
	redis_server=${REDIS_SERVER:-$(command -v redis-server)}
}

# redis_answers PORT: whether a Redis answers PING on PORT (plain bash, no redis-cli).
redis_answers() {
	# In a child shell: a refused /dev/tcp redirection would end this one.
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "*1\r\n\$4\r\nPING\r\n" >&3
		read -r -t 2 reply <&3 && [[ $reply == "+PONG"* ]]' _ "$1" 2>/dev/null
}

# start_redis: a redis-server without persistence on a free loopback port (a
# random one, again if another process holds it), tracked. Sets $redis_pid,
# $redis_port and $redis_url.
start_redis() {
	local p rc
	redis_port=""
	for _ in 1 2 3 4 5; do
		p=$((20000 + RANDOM % 40000))
		"$redis_server" --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
			>"$work/redis.log" 2>&1 &
		redis_pid=$!
		track "$redis_pid"
		for _ in $(seq 50); do
			rc=0
			redis_answers "$p" || rc=1
			kill -0 "$redis_pid" 2>/dev/null || rc=2
			((rc == 1)) || break
			sleep 0.1
		done
		if ((rc == 0)); then
			redis_port=$p
			break
		fi
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
		untrack "$redis_pid"
	done
	[[ -n $redis_port ]] || fail "redis-server did not start: $(tail -n 5 "$work/redis.log")"
	redis_url=redis://127.0.0.1:$redis_port
}
