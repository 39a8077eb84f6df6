# Shared helpers for the end-to-end tests: a real nix, real Git, the release grove binary.
# Sourced by integration/run and the benchmarks (integration/bench*), which call begin_run first.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
WORK=$ROOT/integration/.work
GROVE_BIN=$ROOT/target/release/grove
PIDFILE=$WORK/pids
mkdir -p "$WORK"

# Single-user Nix as root, no network substituters.
export NIX_CONFIG=$'experimental-features = nix-command\nsubstituters =\nbuild-users-group =\nsandbox = false'
unset GROVE_CONFIG GROVE_STORE
# Every mktemp of the run (fresh Nix stores, XDG caches) lands in $WORK and goes with it.
export TMPDIR=$WORK/tmp
mkdir -p "$TMPDIR"

grove() { "$GROVE_BIN" "$@"; }

# abort MESSAGE: ends the whole run, even from inside a $(...), with MESSAGE and a non-zero exit.
abort() { echo "error: $*" >&2; kill -TERM $$; exit 1; }

# The python closure of integration/dataset/python.spec: 17 store paths made from Debian packages
# (the tests count on 17). Built once and kept in $WORK/ds; rebuilt when it is no longer in the
# Nix store or the spec or the builder changed. Prints the top path, or aborts the run.
DATASET_PATHS=17
dataset() {
  build_dataset "$WORK/ds" "" || abort "no test dataset, so no end-to-end test can run"
  tail -n1 "$WORK/ds/paths"
}

# build_dataset DIR SUFFIX: builds the python closure in DIR (store names end in SUFFIX) unless
# it is there and valid; checks that DIR/paths holds the whole closure, one path a line.
build_dataset() {
  local ds=$1 suffix=$2 spec=$ROOT/integration/dataset/python.spec
  local builder=$ROOT/integration/dataset/debian-closure.sh stamp
  stamp=$(cat "$spec" "$builder" | sha256sum | cut -c1-64)$suffix
  if [[ $(cat "$ds/stamp" 2>/dev/null) != "$stamp" ]] || ! dataset_complete "$ds/paths" 2>/dev/null; then
    echo "building the python dataset${suffix:+ ($suffix)} from Debian packages (about a minute on a fresh machine)..." >&2
    mkdir -p "$ds"; rm -f "$ds/stamp"
    bash "$builder" "$spec" "$ds" "$suffix" >/dev/null || { echo "error: $builder failed" >&2; return 1; }
    echo "$stamp" > "$ds/stamp"
  fi
  dataset_complete "$ds/paths"
}

# dataset_complete PATHS: PATHS lists the $DATASET_PATHS valid store paths of the last one's
# closure.
dataset_complete() {
  local paths; paths=$(cat "$1" 2>/dev/null) || { echo "error: $1 is missing" >&2; return 1; }
  local n; n=$(grep -c . <<<"$paths")
  ((n == DATASET_PATHS)) || { echo "error: $1 lists $n store paths, not $DATASET_PATHS" >&2; return 1; }
  nix-store --check-validity $paths || { echo "error: $1 names paths missing from the Nix store" >&2; return 1; }
  local closure; closure=$(nix-store -qR "$(tail -n1 <<<"$paths")" | sort) || return 1
  [[ $closure == "$(sort <<<"$paths")" ]] \
    || { echo "error: the closure of $(tail -n1 <<<"$paths") is not the $DATASET_PATHS paths of $1" >&2; return 1; }
}

# --- Processes and mounts: everything a run starts is stopped when it ends --------------------

# start_time PID: when PID started (clock ticks since boot, field 22 of /proc/PID/stat); with the
# PID it names one process even once the PID is reused. Fails for a gone or zombie process.
start_time() {
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  local f; read -ra f <<<"${s##*) }"
  [[ ${f[0]} != Z ]] && echo "${f[19]}"
}

# track PID: stop_leftovers stops PID and whatever PID started. Works from a check's subshell,
# and a later run stops what this run tracked if it was killed before its trap could.
track() { local t; if t=$(start_time "$1"); then echo "$1 $t" >> "$PIDFILE"; fi; }

descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }

# terminate PID...: SIGTERM, then SIGKILL what is still there after 5 s.
terminate() {
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null
  local p left=("$@")
  for _ in $(seq 50); do
    local still=(); for p in "${left[@]}"; do start_time "$p" >/dev/null && still+=("$p"); done
    ((${#still[@]})) || return 0
    left=("${still[@]}"); sleep 0.1
  done
  kill -KILL "${left[@]}" 2>/dev/null; return 0
}

# Mount points under $WORK, deepest first (/proc/mounts escapes blanks as \040).
work_mounts() {
  local dev mp rest
  while read -r dev mp rest; do
    mp=$(printf '%b' "${mp//\\/\\0}")
    [[ $mp == "$WORK" || $mp == "$WORK"/* ]] && printf '%s\n' "$mp"
  done < /proc/mounts | sort -r
}

# grove processes of this checkout's build whose working directory or arguments are in $WORK:
# `grove mount --daemon` forks away from the run, and a run killed with -9 leaves its servers.
stray_groves() {
  local d exe cwd
  for d in /proc/[0-9]*; do
    exe=$(readlink "$d/exe" 2>/dev/null) || continue
    [[ ${exe% (deleted)} == "$GROVE_BIN" ]] || continue
    cwd=$(readlink "$d/cwd" 2>/dev/null)
    if [[ $cwd == "$WORK" || $cwd == "$WORK"/* ]] || tr '\0' '\n' < "$d/cmdline" 2>/dev/null | grep -qF "$WORK/"; then
      echo "${d#/proc/}"
    fi
  done
}

# stop_leftovers: stops the tracked processes (with what they started) and stray groves, and
# unmounts every file system under $WORK (lazily when busy).
stop_leftovers() {
  local pids=() pid t m
  if [[ -f $PIDFILE ]]; then
    while read -r pid t; do
      [[ $(start_time "$pid") == "$t" ]] && pids+=("$pid" $(descendants "$pid"))
    done < "$PIDFILE"
  fi
  terminate "${pids[@]}"
  while IFS= read -r m; do
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null \
      || echo "warning: could not unmount $m" >&2
  done < <(work_mounts)
  terminate $(stray_groves)
  rm -f "$PIDFILE"
}

# rm_work PATH...: removes what a run left in $WORK; Nix makes its store paths read-only.
rm_work() { chmod -R u+w "$@" 2>/dev/null; rm -rf --one-file-system "$@"; }

# begin_run: claims $WORK for this run (one run or benchmark at a time), stops what an earlier
# run left running (a run killed with -9 cannot clean up after itself), and traps EXIT, INT and
# TERM so that whatever this run starts is stopped when it ends: pass, fail or interrupted.
begin_run() {
  local pid t
  if read -r pid t 2>/dev/null < "$WORK/owner" && [[ $pid != "$$" && $(start_time "$pid") == "$t" ]]; then
    echo "error: $WORK is in use by process $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline")" >&2
    exit 1
  fi
  echo "$$ $(start_time $$)" > "$WORK/owner"
  trap 'stop_leftovers; rm_work "$TMPDIR"; rm -f "$WORK/owner"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  stop_leftovers
  rm_work "$TMPDIR"; mkdir -p "$TMPDIR"
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
  # run with `set -e` themselves. In the background, tracked and waited for: a signal to the
  # runner interrupts `wait` (not a foreground command) and its trap stops the check at once.
  ( set -euo pipefail; export XDG_CACHE_HOME; XDG_CACHE_HOME=$(mktemp -d); "$@" ) >"$log" 2>&1 &
  local pid=$!
  track "$pid"
  wait "$pid"
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
  track "$pid"
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
