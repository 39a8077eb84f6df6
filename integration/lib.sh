# Shared helpers for the end-to-end tests: a real nix, real Git, the release grove binary.
# Sourced by integration/run and integration/bench.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$ROOT/integration/.work
SHARED=${GROVE_SHARED:-$ROOT/../shared}
GROVE_BIN=$ROOT/target/release/grove
mkdir -p "$WORK"

# Single-user Nix as root, no network substituters (see shared/nix-testing.md).
export NIX_CONFIG=$'experimental-features = nix-command\nsubstituters =\nbuild-users-group =\nsandbox = false'
unset GROVE_CONFIG GROVE_STORE

grove() { "$GROVE_BIN" "$@"; }

# The python closure from the shared dataset, built once per machine state: prints its top path.
dataset() {
  local ds=$WORK/ds
  if [[ ! -s $ds/paths ]] || ! nix-store --check-validity $(cat "$ds/paths") 2>/dev/null; then
    echo "building the python dataset (about 1.5 minutes on a fresh machine)..." >&2
    bash "$SHARED/datasets/debian-closure.sh" "$SHARED/datasets/python.spec" "$ds" >/dev/null
  fi
  tail -n1 "$ds/paths"
}

# The refs of a store with their targets: its visible state.
refs() { git --git-dir="$1" for-each-ref --format='%(refname) %(objectname)'; }

PASSED=0
FAILED=0
FAILURES=()

# check NAME CMD...: runs CMD in a subshell with `set -e`; counts a pass or a failure.
check() {
  local name=$1; shift
  local log; log=$WORK/logs/$(tr -c 'A-Za-z0-9\n' '_' <<<"$name").log
  mkdir -p "$WORK/logs"
  local t0=$SECONDS
  # Not inside `if` or `||`: there bash would ignore `set -e` in the subshell. Callers must not
  # run with `set -e` themselves.
  ( set -euo pipefail; export XDG_CACHE_HOME; XDG_CACHE_HOME=$(mktemp -d); "$@" ) >"$log" 2>&1
  local rc=$?
  if ((rc == 0)); then
    PASSED=$((PASSED + 1)); echo "ok   $name ($((SECONDS - t0))s)"
  else
    FAILED=$((FAILED + 1)); FAILURES+=("$name"); echo "FAIL $name (log: $log)"; tail -n 20 "$log" | sed 's/^/     /'
  fi
}

fail() { echo "assertion failed: $*" >&2; return 1; }

# start_grove NAME STORE [CONFIG]: serves STORE on a free loopback port (or $LISTEN) in the
# background; sets ${NAME}_URL, ${NAME}_KEY and ${NAME}_PID.
start_grove() {
  local name=$1 store=$2 config=${3:-}
  local out=$WORK/$name.out err=$WORK/$name.err
  local args=(--store "$store"); [[ -n $config ]] && args=(-c "$config" "${args[@]}")
  "$GROVE_BIN" "${args[@]}" serve --listen "${LISTEN:-127.0.0.1:0}" >"$out" 2>"$err" &
  local pid=$!
  for _ in $(seq 100); do
    grep -q '^trusted-public-keys' "$out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; return 1; }
    sleep 0.1
  done
  printf -v "${name}_PID" '%s' "$pid"
  printf -v "${name}_URL" '%s' "$(sed -n 's/^substituters = //p' "$out")"
  printf -v "${name}_KEY" '%s' "$(sed -n 's/^trusted-public-keys = //p' "$out")"
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' "$(sed -n 's/^substituters = //p' "$out")/nix-cache-info")
  [[ $code != 000 ]] || { cat "$err" >&2; return 1; }
}

stop_grove() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }
