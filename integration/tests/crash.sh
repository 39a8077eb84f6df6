# kill -9 at many moments of `grove add` and of uploads (`nix copy --to`) of the python closure:
# after each kill every visible path has its references, and the retry completes (issue 12).

TOP=$(dataset)
CLOSURE=$(nix-store -qR "$TOP" | sort)

# every visible path's references are visible (grove verify also re-hashes every path)
closure_safe() { grove --store "$1" verify >/dev/null 2>&1 || { grove --store "$1" verify; return 1; }; }

kill_9_during_add() {
  local s=$WORK/crash-add; rm -rf "$s"; grove --store "$s" init >/dev/null 2>&1
  local t0 t1; t0=$(date +%s%N); grove --store "$WORK/crash-add-timing" init >/dev/null 2>&1
  grove --store "$WORK/crash-add-timing" add "$TOP" >/dev/null 2>&1; t1=$(date +%s%N)
  local whole_ms=$(( (t1 - t0) / 1000000 )) partial=0
  for i in $(seq 12); do
    rm -rf "$s"; grove --store "$s" init >/dev/null 2>&1
    "$GROVE_BIN" --store "$s" add "$TOP" >/dev/null 2>&1 & local pid=$!
    sleep "$(awk -v w="$whole_ms" -v i="$i" 'BEGIN { printf "%.3f", w * (0.5 + i / 24) / 1000 }')"
    kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    closure_safe "$s" || fail "a visible path lacks a reference after kill $i"
    local n; n=$(grove --store "$s" list | wc -l)
    ((n > 0 && n < 17)) && partial=$((partial + 1))
    grove --store "$s" add "$TOP" >/dev/null 2>&1 || fail "retry after kill $i"
    [[ "$(grove --store "$s" list)" == "$CLOSURE" ]] || fail "retry after kill $i is incomplete"
  done
  echo "$partial of 12 kills left part of the closure visible (each one closed)"
}

kill_9_during_upload() {
  local s=$WORK/crash-up; rm -rf "$s"; grove --store "$s" init >/dev/null 2>&1
  printf 'server:\n  write_token: s3cret\n' > "$WORK/crash-up.yaml"
  printf 'machine 127.0.0.1 login grove password s3cret\n' > "$WORK/crash-netrc"
  for i in $(seq 5); do
    start_grove CU "$s" "$WORK/crash-up.yaml"
    nix copy --to "$CU_URL" --option netrc-file "$WORK/crash-netrc" "$TOP" >/dev/null 2>&1 & local copy=$!
    sleep "$(awk -v i="$i" 'BEGIN { printf "%.2f", i * 0.3 }')"
    kill -9 "$CU_PID" 2>/dev/null || true; wait "$CU_PID" 2>/dev/null || true
    wait "$copy" 2>/dev/null || true
    closure_safe "$s" || fail "a visible path lacks a reference after kill $i"
  done
  start_grove CU "$s" "$WORK/crash-up.yaml"
  nix copy --to "$CU_URL" --option netrc-file "$WORK/crash-netrc" "$TOP"
  [[ "$(grove --store "$s" list)" == "$CLOSURE" ]] || fail "the upload after the kills is incomplete"
  grove --store "$s" verify
  stop_grove "$CU_PID"
}

check "crash: kill -9 at 12 moments of grove add, each state closed, retry completes" kill_9_during_add
check "crash: kill -9 of the server at 5 moments of an upload, each state closed" kill_9_during_upload
