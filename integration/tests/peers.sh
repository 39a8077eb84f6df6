# End-to-end tests of read-through and replication: three Groves on loopback.
# PA holds the python closure (and one extra path); PB has PA as a Git remote (PA's /git/);
# PC has PB's HTTP as an upstream with PB's key. A fresh nix substitutes from PC.

TOP=$(dataset)
CLOSURE=$(nix-store -qR "$TOP" | sort)
H=$(basename "$TOP" | cut -c1-32)
EXTRA_SRC=$(mktemp -d)/grove-peers-extra; printf 'only in A\n' > "$EXTRA_SRC"
EXTRA=$(nix-store --add "$EXTRA_SRC"); EXTRA_H=$(basename "$EXTRA" | cut -c1-32)
printf 'also only in A\n' > "$EXTRA_SRC-2"
EXTRA2=$(nix-store --add "$EXTRA_SRC-2"); EXTRA2_H=$(basename "$EXTRA2" | cut -c1-32)
ABSENT_H=00000000000000000000000000000abc

PEERS=$WORK/peers; fusermount3 -u "$PEERS/mnt" 2>/dev/null || true
rm -rf "$PEERS"; mkdir -p "$PEERS"
# new_grove NAME: an empty store at $PEERS/NAME.
new_grove() { grove --store "$PEERS/$1" init >/dev/null 2>&1; }
# log_lines NAME TEXT: how many lines of NAME's server log contain TEXT.
log_lines() { grep -c -- "$2" "$WORK/$1.err" || true; }
# upstream_config FILE URL KEY [TIMEOUT] [URL KEY TIMEOUT...]: a config with HTTP upstreams.
upstream_config() {
  local file=$1; shift
  { printf 'log_level: info\nstore:\n  upstreams:\n'
    while (($#)); do
      printf '    - { url: "%s", trusted_public_keys: [ "%s" ], timeout_s: %s }\n' "$1" "$2" "${3:-10}"
      shift 3 || shift $#
    done; } > "$file"
}
# burst N URL: N concurrent GETs of URL; prints their status codes.
burst() {
  local pids=() i
  for ((i = 0; i < $1; i++)); do curl -s -o /dev/null -w '%{http_code}\n' "$2" & pids+=($!); done
  wait "${pids[@]}"
}
# start_proxy NAME TARGET MODE [SECONDS]: sets NAME_URL and NAME_PID.
start_proxy() {
  local out=$WORK/$1.port
  python3 "$ROOT/integration/proxy.py" "$2" "$3" "${4:-0}" > "$out" &
  printf -v "$1_PID" '%s' "$!"
  track "$!"
  for _ in $(seq 100); do [[ -s $out ]] && break; sleep 0.05; done
  printf -v "$1_URL" 'http://127.0.0.1:%s' "$(cat "$out")"
}

new_grove PA
grove --store "$PEERS/PA" add "$TOP" "$EXTRA" "$EXTRA2" >/dev/null 2>&1
start_grove PA "$PEERS/PA"
new_grove PB
printf 'log_level: info\nstore:\n  remotes: [ "%s/git/" ]\n  remote_timeout_s: 5\n' "$PA_URL" > "$PEERS/PB.yaml"
start_grove PB "$PEERS/PB" "$PEERS/PB.yaml"
new_grove PC
upstream_config "$PEERS/PC.yaml" "$PB_URL" "$PB_KEY" 10
start_grove PC "$PEERS/PC" "$PEERS/PC.yaml"

nix_substitutes_through_two_hops() {
  [[ -z $(grove --store "$PEERS/PB" list) && -z $(grove --store "$PEERS/PC" list) ]] || fail "B or C not empty"
  local fresh; fresh=$(mktemp -d)/store
  nix copy --from "$PC_URL" --to "$fresh" --option trusted-public-keys "$PC_KEY" "$TOP"
  [[ $(nix path-info --store "$fresh" -r "$TOP" | sort) == "$CLOSURE" ]] || fail "closure incomplete"
  nix store verify --store "$fresh" --sigs-needed 1 --option trusted-public-keys "$PC_KEY" -r "$TOP"
  [[ $(grove --store "$PEERS/PC" list) == "$CLOSURE" ]] || fail "C did not store the closure"
  [[ $(grove --store "$PEERS/PB" list) == "$CLOSURE" ]] || fail "B did not store the closure"
  grove --store "$PEERS/PC" verify && grove --store "$PEERS/PB" verify
  [[ $(log_lines PB "fetched $H from $PA_URL/git/") == 1 ]] || fail "B did not fetch from A over Git"
  [[ $(log_lines PC "fetched $H from $PB_URL") == 1 ]] || fail "C did not fetch from B over HTTP"
  # The extra paths are not in the closure: nobody fetched them.
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$PA_URL/$EXTRA_H.narinfo") == 200 ]]
  if grove --store "$PEERS/PB" list | grep -q "$EXTRA_H\|$EXTRA2_H"; then fail "B fetched more than asked"; fi
}

mount_fetches_lazily() {
  new_grove PM
  upstream_config "$PEERS/PM.yaml" "$PB_URL" "$PB_KEY" 10
  local mnt=$PEERS/mnt; mkdir -p "$mnt"
  grove -c "$PEERS/PM.yaml" --store "$PEERS/PM" mount --daemon "$mnt"
  trap "fusermount3 -u '$mnt' 2>/dev/null || true" EXIT
  [[ -z $(ls "$mnt") ]] || fail "mount of an empty store is not empty"
  local base; base=$(basename "$TOP")
  ls "$mnt/$base" >/dev/null || fail "lookup did not fetch"
  diff -r --no-dereference "$mnt/$base" "$TOP" || fail "fetched contents differ"
  local glibc; glibc=$(grep -- '-glibc$' <<<"$CLOSURE")
  local gh; gh=$(basename "$glibc" | cut -c1-32)
  local hex; hex=$(sha256sum "$mnt/.nar/$gh.nar" | cut -d' ' -f1)
  [[ "sha256:$(nix-hash --type sha256 --to-base32 "$hex")" == "$(nix-store -q --hash "$glibc")" ]] || fail "virtual NAR hash"
  cmp "$mnt/.narinfo/$H.narinfo" <(grove --store "$PEERS/PM" info "$TOP") || fail "narinfo"
  if ls "$mnt/${ABSENT_H}-nothing" 2>/dev/null; then fail "absent path exists"; fi
  [[ $(grove --store "$PEERS/PM" list) == "$CLOSURE" ]] || fail "mount did not store the closure"
  fusermount3 -u "$mnt"
  # C's own mount, for a path neither C nor B has: two hops (HTTP to B, Git to A).
  grove -c "$PEERS/PC.yaml" --store "$PEERS/PC" mount --daemon "$mnt"
  [[ $(cat "$mnt/$(basename "$EXTRA")") == "only in A" ]] || fail "cat through C's mount"
  local hex; hex=$(sha256sum "$mnt/.nar/$EXTRA_H.nar" | cut -d' ' -f1)
  [[ "sha256:$(nix-hash --type sha256 --to-base32 "$hex")" == "$(nix-store -q --hash "$EXTRA")" ]] || fail "EXTRA NarHash"
  grove --store "$PEERS/PC" list | grep -q "$EXTRA_H" || fail "C did not store the extra path"
  grove --store "$PEERS/PB" list | grep -q "$EXTRA_H" || fail "B did not store the extra path"
  fusermount3 -u "$mnt"
}

sync_and_conflicts() {
  # git clone over Grove's smart HTTP gets every ref.
  local clone=$PEERS/clone.git
  git clone -q --mirror "$PA_URL/git/" "$clone"
  [[ $(refs "$PEERS/PA") == $(refs "$clone") ]] || fail "clone differs from A"
  # grove sync from a path: everything, verified; a second sync adds nothing.
  new_grove PD
  grove --store "$PEERS/PD" sync "$PEERS/PA" 2> "$PEERS/sync1.err"
  grep -q "19 new paths, 0 present, 0 conflicts, 0 refused" "$PEERS/sync1.err" || fail "$(cat "$PEERS/sync1.err")"
  [[ $(refs "$PEERS/PD") == $(refs "$PEERS/PA") ]] || fail "sync differs from A"
  grove --store "$PEERS/PD" sync "$PEERS/PA" 2> "$PEERS/sync2.err"
  grep -q " 0 new paths" "$PEERS/sync2.err" || fail "$(cat "$PEERS/sync2.err")"
  # The mount's store holds the closure with B's signatures: other commits than A's. Syncing
  # from A reports each as a conflict and keeps the store's own.
  local before; before=$(refs "$PEERS/PM")
  grove --store "$PEERS/PM" sync "file://$PEERS/PA" 2> "$PEERS/sync3.err"
  grep -q "2 new paths, 0 present, 17 conflicts" "$PEERS/sync3.err" || fail "$(cat "$PEERS/sync3.err")"
  grep -q "conflict: $TOP" "$PEERS/sync3.err" || fail "conflict not named"
  [[ $(refs "$PEERS/PM" | grep -v "$EXTRA_H\|$EXTRA2_H") == "$before" ]] || fail "sync overwrote the store's refs"
  grove --store "$PEERS/PM" verify
  if git --git-dir="$PEERS/PM" for-each-ref 'refs/grove/' | grep -q .; then fail "quarantine refs left behind"; fi
  # No config remotes and no REMOTE: a clear error.
  if grove --store "$PEERS/PD" sync 2> "$PEERS/sync4.err"; then fail "sync without remote succeeded"; fi
  grep -q "store.remotes is empty" "$PEERS/sync4.err" || fail "$(cat "$PEERS/sync4.err")"
}

push_without_force() {
  new_grove PE
  grove --store "$PEERS/PA" push "$PEERS/PE" "$TOP" 2> "$PEERS/push1.err"
  grep -q "17 paths pushed, 0 present, 0 conflicts" "$PEERS/push1.err" || fail "$(cat "$PEERS/push1.err")"
  [[ $(grove --store "$PEERS/PE" list) == "$CLOSURE" ]] || fail "push incomplete"
  grove --store "$PEERS/PE" verify
  # Pushing the mount store's (differently signed) closure to E: all conflicts, E unchanged.
  local before; before=$(refs "$PEERS/PE")
  grove --store "$PEERS/PM" push "$PEERS/PE" "$TOP" 2> "$PEERS/push2.err"
  grep -q "0 paths pushed, 0 present, 17 conflicts" "$PEERS/push2.err" || fail "$(cat "$PEERS/push2.err")"
  [[ $(refs "$PEERS/PE") == "$before" ]] || fail "push overwrote E's refs"
  # Everything (no PATH): the extra path goes too.
  grove --store "$PEERS/PA" push "file://$PEERS/PE" 2> "$PEERS/push3.err"
  grep -q "2 paths pushed, 17 present" "$PEERS/push3.err" || fail "$(cat "$PEERS/push3.err")"
}

corrupt_git_peer_is_refused() {
  # A copy of A in which the top path's narinfo claims another NarSize (same parents).
  local bad=$PEERS/bad-git; git clone -q --mirror "$PEERS/PA" "$bad"
  local g=(git --git-dir="$bad")
  local c; c=$("${g[@]}" rev-parse "refs/nix/$H")
  local nb; nb=$("${g[@]}" cat-file blob "$c:narinfo" | sed 's/^NarSize: .*/NarSize: 12345/' | "${g[@]}" hash-object -w --stdin)
  local tree; tree=$("${g[@]}" ls-tree "$c" | sed "s/blob [0-9a-f]*\tnarinfo/blob $nb\tnarinfo/" | "${g[@]}" mktree)
  local parents=(); for p in $("${g[@]}" rev-parse "$c^@"); do parents+=(-p "$p"); done
  ((${#parents[@]} == 4)) || fail "python should have two references"
  local nc; nc=$("${g[@]}" commit-tree "$tree" "${parents[@]}" -m "$TOP")
  "${g[@]}" update-ref "refs/nix/$H" "$nc"
  new_grove PF
  printf 'log_level: info\nstore:\n  remotes: [ "%s" ]\n' "$bad" > "$PEERS/PF.yaml"
  if grove -c "$PEERS/PF.yaml" --store "$PEERS/PF" fetch "$TOP" 2> "$PEERS/fetch-bad.err"; then
    fail "fetched a corrupt path"
  fi
  grep -q "skipping peer $bad for $H: .*NAR size mismatch" "$PEERS/fetch-bad.err" || fail "$(cat "$PEERS/fetch-bad.err")"
  grep -q "no peer has $TOP" "$PEERS/fetch-bad.err" || fail "$(cat "$PEERS/fetch-bad.err")"
  # Nothing at all is stored from a lazy fetch that failed, not even the good references.
  [[ -z $(git --git-dir="$PEERS/PF" for-each-ref) ]] || fail "refs stored from a corrupt peer"
  # A sync takes what checks out and refuses the rest.
  grove --store "$PEERS/PF" sync "$bad" 2> "$PEERS/sync-bad.err"
  grep -q "refused: $TOP: NAR size mismatch" "$PEERS/sync-bad.err" || fail "$(cat "$PEERS/sync-bad.err")"
  grep -q "18 new paths, 0 present, 0 conflicts, 1 refused" "$PEERS/sync-bad.err" || fail "$(cat "$PEERS/sync-bad.err")"
  if grove --store "$PEERS/PF" list | grep -q "$H"; then fail "kept the corrupt path"; fi
  grove --store "$PEERS/PF" verify
}

tampered_upstreams_are_refused() {
  # A Grove with another key serves the same closure: its signatures are not B's.
  new_grove PW; grove --store "$PEERS/PW" sync "$PEERS/PA" 2>/dev/null
  start_grove PW "$PEERS/PW"
  new_grove PG
  upstream_config "$PEERS/PG.yaml" "$PW_URL" "$PB_KEY" 10
  start_grove PG "$PEERS/PG" "$PEERS/PG.yaml"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$PG_URL/$H.narinfo") == 404 ]] || fail "wrong key accepted"
  [[ $(log_lines PG "skipping peer $PW_URL for $H: .*has no valid signature by a trusted key") == 1 ]] || fail "$(cat "$WORK/PG.err")"
  stop_grove "$PG_PID"; stop_grove "$PW_PID"
  [[ -z $(git --git-dir="$PEERS/PG" for-each-ref) ]] || fail "stored from a wrongly signed peer"
  # A proxy that flips a byte in every NAR, then B itself: the proxy is skipped, B serves.
  start_proxy BADPROXY "$PB_URL" corrupt
  new_grove PH
  upstream_config "$PEERS/PH.yaml" "$BADPROXY_URL" "$PB_KEY" 10 "$PB_URL" "$PB_KEY" 10
  start_grove PH "$PEERS/PH" "$PEERS/PH.yaml"
  curl -sf "$PH_URL/$H.narinfo" >/dev/null || fail "the good peer after the bad one was not tried"
  [[ $(log_lines PH "skipping peer $BADPROXY_URL for $H: ") == 1 ]] || fail "$(cat "$WORK/PH.err")"
  [[ $(log_lines PH "fetched $H from $PB_URL:") == 1 ]] || fail "$(cat "$WORK/PH.err")"
  grove --store "$PEERS/PH" verify
  stop_grove "$PH_PID"
  # The corrupting proxy alone: 404 and nothing stored.
  new_grove PI
  upstream_config "$PEERS/PI.yaml" "$BADPROXY_URL" "$PB_KEY" 10
  start_grove PI "$PEERS/PI" "$PEERS/PI.yaml"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$PI_URL/nar/$H.nar") == 404 ]] || fail "corrupt NAR served"
  stop_grove "$PI_PID"; kill "$BADPROXY_PID"
  [[ -z $(git --git-dir="$PEERS/PI" for-each-ref 'refs/nix/') ]] || fail "stored a corrupt NAR"
}

slow_upstream_times_out() {
  start_proxy SLOWPROXY "$PB_URL" delay 30
  new_grove PJ
  upstream_config "$PEERS/PJ.yaml" "$SLOWPROXY_URL" "$PB_KEY" 1 "$PB_URL" "$PB_KEY" 10
  start_grove PJ "$PEERS/PJ" "$PEERS/PJ.yaml"
  curl -sf --max-time 20 "$PJ_URL/$H.narinfo" >/dev/null || fail "the peer after the slow one was not tried"
  [[ $(log_lines PJ "skipping peer $SLOWPROXY_URL for $H") == 1 ]] || fail "$(cat "$WORK/PJ.err")"
  stop_grove "$PJ_PID"; kill "$SLOWPROXY_PID"
}

concurrent_misses_fetch_once() {
  # A proxy that answers every request after 0.2 s keeps the fetch (35 requests) in flight
  # while all 32 requests arrive.
  start_proxy LAGPROXY "$PB_URL" delay 0.2
  new_grove PK
  upstream_config "$PEERS/PK.yaml" "$LAGPROXY_URL" "$PB_KEY" 10
  start_grove PK "$PEERS/PK" "$PEERS/PK.yaml"
  local codes=$PEERS/codes
  burst 32 "$PK_URL/$H.narinfo" > "$codes"
  [[ $(grep -c '^200$' "$codes") == 32 ]] || fail "not all 32 answered 200: $(sort "$codes" | uniq -c)"
  [[ $(log_lines PK "fetching $H from peers") == 1 ]] || fail "$(log_lines PK "fetching $H") fetches"
  # Misses are remembered: 32 requests for an absent path ask the peers once.
  burst 32 "$PK_URL/$ABSENT_H.narinfo" > "$codes"
  [[ $(grep -c '^404$' "$codes") == 32 ]] || fail "absent path: $(sort "$codes" | uniq -c)"
  [[ $(log_lines PK "fetching $ABSENT_H from peers") == 1 ]] || fail "negative cache: $(log_lines PK "fetching $ABSENT_H")"
  stop_grove "$PK_PID"; kill "$LAGPROXY_PID"
}

upstreams_in_a_cycle_do_not_loop() {
  # X and Y are each other's upstream; X also has B. Ports are chosen first so each config can
  # name the other.
  local ports; ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(2)]
[s.bind(("127.0.0.1", 0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
  local px=${ports% *} py=${ports#* }
  new_grove PX; new_grove PY
  local kx ky; kx=$(grove --store "$PEERS/PX" key public); ky=$(grove --store "$PEERS/PY" key public)
  upstream_config "$PEERS/PX.yaml" "http://127.0.0.1:$py" "$ky" 10 "$PB_URL" "$PB_KEY" 10
  upstream_config "$PEERS/PY.yaml" "http://127.0.0.1:$px" "$kx" 10
  LISTEN=127.0.0.1:$px start_grove PX "$PEERS/PX" "$PEERS/PX.yaml"
  LISTEN=127.0.0.1:$py start_grove PY "$PEERS/PY" "$PEERS/PY.yaml"
  local t0=$SECONDS
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$PX_URL/$ABSENT_H.narinfo") == 404 ]] || fail "no 404"
  ((SECONDS - t0 < 5)) || fail "the cycle took $((SECONDS - t0))s: it waited for a timeout"
  [[ $(log_lines PX "fetching $ABSENT_H from peers") == 1 && $(log_lines PY "fetching $ABSENT_H from peers") == 1 ]] \
    || fail "X: $(cat "$WORK/PX.err") Y: $(cat "$WORK/PY.err")"
  # Y gets the closure through X, which gets it from B.
  curl -sf --max-time 30 "$PY_URL/$H.narinfo" >/dev/null || fail "Y did not get the path through X"
  [[ $(grove --store "$PEERS/PY" list) == "$CLOSURE" ]] || fail "Y's closure"
  stop_grove "$PX_PID"; stop_grove "$PY_PID"
}

dead_git_peer_falls_through() {
  stop_grove "$PA_PID"
  local t0=$SECONDS
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$PB_URL/$EXTRA2_H.narinfo") == 404 ]] || fail "no 404"
  ((SECONDS - t0 < 15)) || fail "a dead peer took $((SECONDS - t0))s"
  [[ $(log_lines PB "skipping peer $PA_URL/git/ for $EXTRA2_H") == 1 ]] || fail "$(cat "$WORK/PB.err")"
  # Through C as well, and B still serves what it holds.
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$PC_URL/$EXTRA2_H.narinfo") == 404 ]] || fail "C: no 404"
  curl -sf "$PB_URL/$H.narinfo" >/dev/null || fail "B lost what it had"
  if grove --store "$PEERS/PB" list | grep -q "$EXTRA2_H"; then fail "B stored the extra path"; fi
  # grove fetch says so too.
  if grove -c "$PEERS/PB.yaml" --store "$PEERS/PB" fetch "$EXTRA2_H" 2> "$PEERS/fetch-dead.err"; then fail "fetch succeeded"; fi
  grep -q "no peer has $EXTRA2_H" "$PEERS/fetch-dead.err" || fail "$(cat "$PEERS/fetch-dead.err")"
}

check "peers: nix substitutes the closure from C via B via A" nix_substitutes_through_two_hops
check "peers: the mount fetches lazily (ls, cat, sha256sum of .nar)" mount_fetches_lazily
check "peers: git clone, grove sync, conflicts are kept and reported" sync_and_conflicts
check "peers: grove push never forces" push_without_force
check "peers: a Git peer with a wrong NarSize is refused" corrupt_git_peer_is_refused
check "peers: wrong signature and corrupt NAR are refused, next peer used" tampered_upstreams_are_refused
check "peers: a slow upstream times out, next peer used" slow_upstream_times_out
check "peers: 32 concurrent misses cause one fetch; misses are cached" concurrent_misses_fetch_once
check "peers: upstreams in a cycle answer without looping" upstreams_in_a_cycle_do_not_loop
check "peers: a dead Git peer falls through to 404" dead_git_peer_falls_through
stop_grove "$PA_PID"; stop_grove "$PB_PID"; stop_grove "$PC_PID"
