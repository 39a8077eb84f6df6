# End-to-end tests of the core: grove add/nar/export/import/verify against a real nix.

TOP=$(dataset)
CLOSURE=$(nix-store -qR "$TOP" | sort)
S=$WORK/core-store
rm -rf "$S"
grove --store "$S" init >/dev/null 2>&1

add_closure() {
  grove --store "$S" add "$TOP"
  [[ "$(grove --store "$S" list)" == "$CLOSURE" ]] || fail "grove list differs from nix-store -qR"
  [[ $(grove --store "$S" list | wc -l) == 17 ]] || fail "expected 17 paths"
  # Adding again is a no-op.
  local before; before=$(refs "$S")
  grove --store "$S" add "$TOP"
  [[ "$(refs "$S")" == "$before" ]] || fail "second add changed refs"
}

nar_is_byte_identical() {
  for p in $CLOSURE; do
    cmp <(grove --store "$S" nar "$p") <(nix-store --dump "$p") || fail "NAR of $p differs"
  done
}

narinfo_matches_nix() {
  for p in $CLOSURE; do
    local ni; ni=$(grove --store "$S" info "$p")
    grep -qx "NarHash: $(nix-store -q --hash "$p")" <<<"$ni" || fail "NarHash of $p"
    grep -qx "NarSize: $(nix-store -q --size "$p")" <<<"$ni" || fail "NarSize of $p"
    local refs; refs=$(nix-store -q --references "$p" | xargs -rn1 basename | sort | xargs)
    grep -qx "References: $refs" <<<"$ni" || [[ -z $refs ]] || fail "References of $p"
    grep -q "^Sig: $(grove --store "$S" key public | cut -d: -f1):" <<<"$ni" || fail "no signature"
  done
}

export_imports_into_fresh_nix_store() {
  local fresh; fresh=$(mktemp -d)/store
  grove --store "$S" export --closure "$TOP" | nix-store --store "$fresh" --import >/dev/null
  [[ $(nix path-info --store "$fresh" -r "$TOP" | wc -l) == 17 ]] || fail "fresh store lacks paths"
  nix store verify --store "$fresh" --no-trust -r "$TOP"
}

git_fsck_is_clean() {
  git --git-dir="$S" fsck --strict --no-dangling 2>&1 | tee /dev/stderr | grep -Ev '^(notice|Checking)' | grep . && fail "fsck reported problems"
  git --git-dir="$S" fsck --strict --no-dangling
  # A closure is exactly Git reachability: the commits reachable from python's ref are its closure.
  local h; h=$(basename "$TOP" | cut -c1-32)
  [[ $(git --git-dir="$S" rev-list "refs/nix/$h" | wc -l) == 17 ]] || fail "closure is not reachability"
}

verify_detects_tampering() {
  grove --store "$S" verify
  local bad=$WORK/core-tampered; rm -rf "$bad"; cp -a "$S" "$bad"
  local p; p=$(grep -- -zlib <<<"$CLOSURE"); local h; h=$(basename "$p" | cut -c1-32)
  local g="git --git-dir=$bad"
  local tree; tree=$($g rev-parse "refs/nix/$h^{tree}")
  local ni; ni=$($g cat-file blob "$tree:narinfo" | sed 's/^NarSize: .*/NarSize: 8/' | $g hash-object -w --stdin)
  local newtree; newtree=$($g ls-tree "$tree" | sed "s/[0-9a-f]\{40\}\tnarinfo/$ni\tnarinfo/" | $g mktree)
  local commit; commit=$($g commit-tree "$newtree" -m "$p")
  $g update-ref "refs/nix/$h" "$commit"
  if grove --store "$bad" verify 2>"$WORK/verify.err"; then fail "verify passed a tampered store"; fi
  grep -q "MISMATCH $p" "$WORK/verify.err" || fail "verify did not name $p"
  grep -q "1 of 17 paths failed" "$WORK/verify.err" || fail "verify summary"
}

import_of_nix_export_equals_add() {
  local s2=$WORK/core-import; rm -rf "$s2"; grove --store "$s2" init >/dev/null 2>&1
  nix-store --export $(nix-store -qR "$TOP") > "$WORK/python.export"
  grove --store "$s2" import "$WORK/python.export"
  # Same metadata gives the same commits: both stores are identical, ref for ref.
  [[ "$(refs "$s2")" == "$(refs "$S")" ]] || fail "import and add gave different commits"
  # A truncated stream stores nothing.
  local s3=$WORK/core-trunc; rm -rf "$s3"; grove --store "$s3" init >/dev/null 2>&1
  if head -c 30000000 "$WORK/python.export" | grove --store "$s3" import; then fail "truncated import succeeded"; fi
  [[ -z "$(refs "$s3")" ]] || fail "truncated import left refs"
}

file_caches_from_nix_copy() {
  for c in xz zstd bzip2 none; do
    local cache=$WORK/cache-$c; rm -rf "$cache"
    local url="file://$cache"; [[ $c == xz ]] || url="$url?compression=$c"
    nix copy --to "$url" "$TOP"
    local s2=$WORK/core-cache-$c; rm -rf "$s2"; grove --store "$s2" init >/dev/null 2>&1
    grove --store "$s2" import --cache "$cache"
    [[ "$(grove --store "$s2" list)" == "$CLOSURE" ]] || fail "$c cache: list"
    grove --store "$s2" verify
    cmp <(grove --store "$s2" nar "$TOP") <(nix-store --dump "$TOP") || fail "$c cache: nar"
  done
}

add_refuses_a_tampered_path() {
  local nonce; nonce=$(date +%s%N)
  local p; p=$(nix-build --no-out-link -E "derivation { name = \"tamper\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo $nonce > \$out\" ]; }")
  chmod u+w "$p"; echo extra >> "$p"
  local before; before=$(refs "$S")
  if grove --store "$S" add "$p" 2>"$WORK/tamper.err"; then fail "added a path whose NAR disagrees with Nix"; fi
  grep -q "NAR hash mismatch for $p" "$WORK/tamper.err" || fail "no hash mismatch message: $(cat "$WORK/tamper.err")"
  [[ $(wc -l < "$WORK/tamper.err") == 1 ]] || fail "more than one error line"
  [[ "$(refs "$S")" == "$before" ]] || fail "refs changed"
  nix-store --delete "$p" >/dev/null 2>&1 || true
}

nix_accepts_grove_signatures() {
  local cache=$WORK/grove-file-cache; rm -rf "$cache"; mkdir -p "$cache/nar"
  printf 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n' > "$cache/nix-cache-info"
  for p in $CLOSURE; do
    local h; h=$(basename "$p" | cut -c1-32)
    grove --store "$S" info "$p" > "$cache/$h.narinfo"
    grove --store "$S" nar "$p" > "$cache/nar/$h.nar"
  done
  local key; key=$(grove --store "$S" key public)
  local fresh; fresh=$(mktemp -d)/store
  nix copy --from "file://$cache" --to "$fresh" --option trusted-public-keys "$key" "$TOP"
  nix store verify --store "$fresh" --sigs-needed 1 --option trusted-public-keys "$key" -r "$TOP"
  rm -rf "$WORK/core-wrongkey"
  local wrong; wrong=$(grove --store "$WORK/core-wrongkey" init 2>/dev/null)
  [[ ${wrong%%:*} == "${key%%:*}" ]] || fail "expected same key name, different key"
  local fresh2; fresh2=$(mktemp -d)/store
  if nix copy --from "file://$cache" --to "$fresh2" --option trusted-public-keys "$wrong" "$TOP" 2>"$WORK/wrongkey.err"; then
    fail "nix accepted paths signed by another key"
  fi
  grep -q "lacks a valid signature" "$WORK/wrongkey.err" || fail "unexpected error: $(cat "$WORK/wrongkey.err")"
}

check "add python closure" add_closure
check "nar byte-identical to nix-store --dump" nar_is_byte_identical
check "narinfo matches nix metadata" narinfo_matches_nix
check "nix accepts grove signatures, refuses a wrong key" nix_accepts_grove_signatures
check "export | nix-store --import into fresh store" export_imports_into_fresh_nix_store
check "git fsck clean, closure is reachability" git_fsck_is_clean
check "verify detects tampering" verify_detects_tampering
check "import of nix-store --export equals add" import_of_nix_export_equals_add
check "import --cache from nix copy (xz zstd bzip2 none)" file_caches_from_nix_copy
check "add refuses a tampered path" add_refuses_a_tampered_path
