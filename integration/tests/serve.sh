# End-to-end tests of `grove serve` with the real nix as client and uploader.

TOP=$(dataset)
CLOSURE=$(nix-store -qR "$TOP" | sort)
H=$(basename "$TOP" | cut -c1-32)
SS=$WORK/serve-store; rm -rf "$SS"
grove --store "$SS" init >/dev/null 2>&1
grove --store "$SS" add "$TOP" >/dev/null 2>&1
start_grove SRV "$SS"
UP=$WORK/serve-upload; rm -rf "$UP"
grove --store "$UP" init >/dev/null 2>&1
printf 'server:\n  write_token: s3cret\n' > "$WORK/upload.yaml"
start_grove UPL "$UP" "$WORK/upload.yaml"
printf 'machine 127.0.0.1 login grove password s3cret\n' > "$WORK/netrc"

substitute_closure() {
  local fresh; fresh=$(mktemp -d)/store
  nix copy --from "$SRV_URL" --to "$fresh" --option trusted-public-keys "$SRV_KEY" "$TOP"
  [[ $(nix path-info --store "$fresh" -r "$TOP" | sort) == "$CLOSURE" ]] || fail "closure incomplete"
  nix store verify --store "$fresh" --sigs-needed 1 --option trusted-public-keys "$SRV_KEY" -r "$TOP"
}

wrong_key_is_refused() {
  local other; other=$(grove --store "$(mktemp -d)/s" init 2>/dev/null)
  local fresh; fresh=$(mktemp -d)/store
  if nix copy --from "$SRV_URL" --to "$fresh" --option trusted-public-keys "$other" "$TOP" 2>"$WORK/serve-wrongkey.err"; then
    fail "substituted with a wrong trusted key"
  fi
  grep -q "lacks a valid signature" "$WORK/serve-wrongkey.err" || fail "$(cat "$WORK/serve-wrongkey.err")"
}

upload_then_substitute_back() {
  nix copy --to "$UPL_URL" --option netrc-file "$WORK/netrc" "$TOP"
  [[ "$(grove --store "$UP" list)" == "$CLOSURE" ]] || fail "upload incomplete"
  grove --store "$UP" verify
  # zstd uploads of paths already present are accepted and change nothing.
  local before; before=$(refs "$UP")
  nix copy --to "$UPL_URL?compression=zstd" --option netrc-file "$WORK/netrc" "$TOP"
  [[ "$(refs "$UP")" == "$before" ]] || fail "re-upload changed refs"
  # Substitute as another client would: the uploader's Nix caches the unsigned narinfo it sent.
  local fresh; fresh=$(mktemp -d)/store
  XDG_CACHE_HOME=$(mktemp -d) nix copy --from "$UPL_URL" --to "$fresh" --option trusted-public-keys "$UPL_KEY" "$TOP"
  nix store verify --store "$fresh" --sigs-needed 1 --option trusted-public-keys "$UPL_KEY" -r "$TOP"
}

head_range_ls_and_compression() {
  local nar=$WORK/python.nar; nix-store --dump "$TOP" > "$nar"
  local size; size=$(stat -c %s "$nar")
  local hdr; hdr=$(curl -sfI "$SRV_URL/nar/$H.nar" | tr -d '\r')
  grep -qi "^content-length: $size$" <<<"$hdr" || fail "HEAD content-length: $hdr"
  grep -qi "^accept-ranges: bytes$" <<<"$hdr" || fail "no accept-ranges"
  [[ $(curl -s -X HEAD "$SRV_URL/nar/$H.nar" --max-time 5 | wc -c) == 0 ]] || fail "HEAD sent a body"
  [[ $(curl -s -o /dev/null -w '%{http_code}' -r 1000-1999 "$SRV_URL/nar/$H.nar") == 206 ]] || fail "no 206"
  cmp <(curl -sf -r 1000-1999 "$SRV_URL/nar/$H.nar") <(tail -c +1001 "$nar" | head -c 1000) || fail "range bytes"
  cmp <(curl -sf -r -100 "$SRV_URL/nar/$H.nar") <(tail -c 100 "$nar") || fail "suffix range"
  cmp <(curl -sf -r 5000- "$SRV_URL/nar/$H.nar") <(tail -c +5001 "$nar") || fail "open range"
  curl -sI -r 1000-1999 "$SRV_URL/nar/$H.nar" | tr -d '\r' | grep -qi "^content-range: bytes 1000-1999/$size$" || fail "content-range"
  [[ $(curl -s -o /dev/null -w '%{http_code}' -r "$size-" "$SRV_URL/nar/$H.nar") == 416 ]] || fail "no 416"
  cmp <(curl -sf "$SRV_URL/nar/$H.nar") "$nar" || fail "full NAR"
  # The whole NAR is now in the server's NAR cache: ranges and HEAD served from it agree.
  cmp <(curl -sf "$SRV_URL/nar/$H.nar") "$nar" || fail "full NAR from cache"
  cmp <(curl -sf -r 1000-1999 "$SRV_URL/nar/$H.nar") <(tail -c +1001 "$nar" | head -c 1000) || fail "cached range"
  cmp <(curl -sf -r -100 "$SRV_URL/nar/$H.nar") <(tail -c 100 "$nar") || fail "cached suffix range"
  curl -sfI "$SRV_URL/nar/$H.nar" | tr -d '\r' | grep -qi "^content-length: $size$" || fail "cached HEAD"
  [[ $(curl -s -o /dev/null -w '%{http_code}' -r "$size-" "$SRV_URL/nar/$H.nar") == 416 ]] || fail "cached 416"
  # Compressing costs seconds of CPU: a cache serves only the compression it advertises.
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$SRV_URL/nar/$H.nar.xz") == 404 ]] || fail "xz made on demand"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$SRV_URL/nar/$H.nar.zst") == 404 ]] || fail "zstd made on demand"
  # Every regular file's narOffset in the .ls points at its contents in the NAR.
  curl -sf "$SRV_URL/$H.ls" > "$WORK/python.ls"
  python3 - "$WORK/python.ls" "$nar" "$TOP" <<'PY'
import json, os, sys
ls, nar, top = json.load(open(sys.argv[1])), open(sys.argv[2], 'rb').read(), sys.argv[3]
assert ls["version"] == 1
n = 0
def walk(node, path):
    global n
    if node["type"] == "regular":
        data = open(path, 'rb').read()
        off = node["narOffset"]
        assert node["size"] == len(data) and nar[off:off + len(data)] == data, path
        assert node.get("executable", False) == os.access(path, os.X_OK), path
        n += 1
    elif node["type"] == "symlink":
        assert os.readlink(path) == node["target"], path
    else:
        assert sorted(node["entries"]) == sorted(os.listdir(path)), path
        for name, child in node["entries"].items():
            walk(child, os.path.join(path, name))
walk(ls["root"], top)
assert n > 10, n
PY
}

errors_are_4xx_not_500() {
  code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
  [[ $(code "$SRV_URL/xyz.narinfo") == 400 ]] || fail "malformed hash"
  [[ $(code "$SRV_URL/00000000000000000000000000000000.narinfo") == 404 ]] || fail "unknown narinfo"
  [[ $(code "$SRV_URL/nar/00000000000000000000000000000000.nar") == 404 ]] || fail "unknown nar"
  [[ $(code "$SRV_URL/nar/$H.nar.lz4") == 404 ]] || fail "unknown compression"
  [[ $(code "$SRV_URL/00000000000000000000000000000000.ls") == 404 ]] || fail "unknown ls"
  [[ $(code "$SRV_URL/nothing/here") == 404 ]] || fail "unknown resource"
  [[ $(code -X DELETE "$SRV_URL/$H.narinfo") == 405 ]] || fail "DELETE"
  [[ $(code -X PUT --data x "$SRV_URL/$H.narinfo") == 403 ]] || fail "upload without write_token configured"
  # Nix's own narinfo parser accepts what we serve, and the served narinfo verifies.
  curl -sf "$SRV_URL/$H.narinfo" | grep -q "^Sig: ${SRV_KEY%%:*}:" || fail "unsigned narinfo"
}

bad_uploads_change_nothing() {
  local before; before=$(refs "$UP")
  local auth=(-u grove:s3cret)
  local zlib; zlib=$(grep -- -zlib <<<"$CLOSURE"); local zh; zh=$(basename "$zlib" | cut -c1-32)
  local nar=$WORK/zlib.nar; nix-store --dump "$zlib" > "$nar"
  local fresh=$WORK/serve-bad; rm -rf "$fresh"; grove --store "$fresh" init >/dev/null 2>&1
  start_grove BAD "$fresh" "$WORK/upload.yaml"
  local u=$BAD_URL
  put() { curl -s -o "$WORK/put.out" -w '%{http_code}' -X PUT "$@"; }
  narinfo() { # narinfo for zlib with URL $1, NarHash $2, NarSize $3, References $4
    printf 'StorePath: %s\nURL: %s\nCompression: none\nNarHash: %s\nNarSize: %s\nReferences: %s\n' "$zlib" "$1" "$2" "$3" "$4"
  }
  local hash; hash=$(nix-store -q --hash "$zlib"); local size; size=$(stat -c %s "$nar")
  local glibc; glibc=$(grep -- -glibc <<<"$CLOSURE" | xargs basename)
  [[ $(put --data-binary @"$nar" "$u/nar/zlib1.nar") == 401 ]] || fail "no token accepted"
  [[ $(put -u grove:wrong --data-binary @"$nar" "$u/nar/zlib1.nar") == 401 ]] || fail "wrong token accepted"
  [[ $(put -H "Authorization: Bearer wrong" --data-binary @"$nar" "$u/nar/zlib1.nar") == 401 ]] || fail "wrong bearer"
  head -c 5000 "$nar" > "$WORK/trunc.nar"
  [[ $(put "${auth[@]}" --data-binary @"$WORK/trunc.nar" "$u/nar/trunc.nar") == 400 ]] || fail "truncated NAR"
  grep -q truncated "$WORK/put.out" || fail "no reason given: $(cat "$WORK/put.out")"
  [[ $(put "${auth[@]}" --path-as-is --data-binary @"$nar" "$u/nar/../../etc/x.nar") =~ ^4 ]] || fail "traversal"
  [[ $(put "${auth[@]}" --data-binary @"$nar" "$u/nar/..%2F..%2Fx.nar") == 400 ]] || fail "encoded traversal"
  [[ $(put "${auth[@]}" --data-binary @"$nar" "$u/nar/x.nar.lz4") == 415 ]] || fail "unknown compression"
  # A NAR arrives, but its narinfo lies about the hash, the size, or misses a reference.
  [[ $(put -H "Authorization: Bearer s3cret" --data-binary @"$nar" "$u/nar/zlib1.nar") == 200 ]] || fail "good NAR refused"
  [[ $(put "${auth[@]}" --data-binary "$(narinfo nar/zlib1.nar "$(nix-store -q --hash "$TOP")" "$size" "$glibc")" "$u/$zh.narinfo") == 400 ]] || fail "wrong hash"
  grep -q "hash mismatch" "$WORK/put.out" || fail "$(cat "$WORK/put.out")"
  put -H "Authorization: Bearer s3cret" --data-binary @"$nar" "$u/nar/zlib2.nar" >/dev/null
  [[ $(put "${auth[@]}" --data-binary "$(narinfo nar/zlib2.nar "$hash" $((size + 8)) "$glibc")" "$u/$zh.narinfo") == 400 ]] || fail "wrong size"
  put -H "Authorization: Bearer s3cret" --data-binary @"$nar" "$u/nar/zlib3.nar" >/dev/null
  [[ $(put "${auth[@]}" --data-binary "$(narinfo nar/zlib3.nar "$hash" "$size" "$glibc")" "$u/$zh.narinfo") == 400 ]] || fail "missing reference"
  grep -q "not in the store" "$WORK/put.out" || fail "$(cat "$WORK/put.out")"
  [[ $(put "${auth[@]}" --data-binary "$(narinfo nar/never.nar "$hash" "$size" "")" "$u/$zh.narinfo") == 400 ]] || fail "narinfo without NAR"
  [[ $(put "${auth[@]}" --data-binary "$(narinfo nar/zlib3.nar "$hash" "$size" "")" "$u/00000000000000000000000000000000.narinfo") == 400 ]] || fail "narinfo under another hash"
  [[ $(put "${auth[@]}" --data-binary "$(narinfo nar/zlib3.nar "$hash" "$size" "../../x")" "$u/$zh.narinfo") == 400 ]] || fail "bad reference name"
  [[ $(put "${auth[@]}" --data-binary "StorePath: /nix/store/$zh-a/b" "$u/$zh.narinfo") == 400 ]] || fail "name with slash"
  [[ -z "$(refs "$fresh")" ]] || fail "a bad upload left refs: $(refs "$fresh")"
  # The same NAR with an honest narinfo (reference uploaded first) is accepted.
  nix copy --to "$u" --option netrc-file "$WORK/netrc" "/nix/store/$glibc"
  put -H "Authorization: Bearer s3cret" --data-binary @"$nar" "$u/nar/zlib4.nar" >/dev/null
  [[ $(put "${auth[@]}" --data-binary "$(narinfo nar/zlib4.nar "$hash" "$size" "$glibc")" "$u/$zh.narinfo") == 200 ]] || fail "honest upload refused: $(cat "$WORK/put.out")"
  [[ $(grove --store "$fresh" list | wc -l) == 2 ]] || fail "expected glibc and zlib"
  stop_grove "$BAD_PID"
  [[ "$(refs "$UP")" == "$before" ]] || fail "other store changed"
}

many_clients_at_once() {
  # 256 requests, 32 at a time: narinfo and whole NARs of every path, checked.
  for p in $CLOSURE; do nix-store --dump "$p" | sha256sum | cut -d' ' -f1 > "$WORK/$(basename "$p" | cut -c1-32).sum"; done
  fetch() {
    local h=$1
    curl -sf "$SRV_URL/$h.narinfo" | grep -q "^StorePath: " || { echo "narinfo $h"; return 1; }
    [[ $(curl -sf "$SRV_URL/nar/$h.nar" | sha256sum | cut -d' ' -f1) == "$(cat "$WORK/$h.sum")" ]] || { echo "nar $h"; return 1; }
  }
  export -f fetch; export SRV_URL WORK
  for i in $(seq 15); do for p in $CLOSURE; do basename "$p" | cut -c1-32; done; done | head -256 |
    xargs -P 32 -I{} bash -c 'fetch {}'
}

read_token_guards_reads() {
  local s=$WORK/serve-private; rm -rf "$s"; grove --store "$s" init >/dev/null 2>&1
  printf 'r34d\n' > "$WORK/read-token"
  printf 'server:\n  read_token_file: %s\n  compression: zstd\n' "$WORK/read-token" > "$WORK/private.yaml"
  start_grove PRIV "$s" "$WORK/private.yaml"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$PRIV_URL/nix-cache-info") == 401 ]] || fail "read without token"
  curl -sf -H "Authorization: Bearer r34d" "$PRIV_URL/nix-cache-info" | grep -q StoreDir || fail "bearer read"
  curl -sf -u x:r34d "$PRIV_URL/nix-cache-info" | grep -q StoreDir || fail "basic read"
  stop_grove "$PRIV_PID"
}

zstd_served_to_nix() {
  local s=$WORK/serve-zstd; rm -rf "$s"; cp -a "$SS" "$s"
  printf 'server:\n  compression: zstd\n' > "$WORK/zstd.yaml"
  start_grove ZST "$s" "$WORK/zstd.yaml"
  curl -sf "$ZST_URL/$H.narinfo" | grep -qx "URL: nar/$H.nar.zst" || fail "zstd not advertised"
  local nar=$WORK/python-zst.nar; nix-store --dump "$TOP" > "$nar"
  cmp <(curl -sf "$ZST_URL/nar/$H.nar.zst" | zstd -dc) "$nar" || fail "zstd NAR"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$ZST_URL/nar/$H.nar.xz") == 404 ]] || fail "xz made on demand"
  cmp <(curl -sf "$ZST_URL/nar/$H.nar") "$nar" || fail "plain NAR from a zstd cache"
  local fresh; fresh=$(mktemp -d)/store
  nix copy --from "$ZST_URL" --to "$fresh" --option trusted-public-keys "$ZST_KEY" "$TOP"
  nix store verify --store "$fresh" --sigs-needed 1 --option trusted-public-keys "$ZST_KEY" -r "$TOP"
  stop_grove "$ZST_PID"
}

check "serve: substitute the closure with nix copy --from" substitute_closure
check "serve: a wrong trusted key is refused" wrong_key_is_refused
check "serve: nix copy --to uploads, then substitute back" upload_then_substitute_back
check "serve: HEAD, Range, .ls offsets, no compression on demand" head_range_ls_and_compression
check "serve: bad requests get 4xx" errors_are_4xx_not_500
check "serve: bad uploads are refused and store nothing" bad_uploads_change_nothing
check "serve: 256 requests from 32 clients at once" many_clients_at_once
check "serve: read token" read_token_guards_reads
check "serve: zstd NARs substituted by nix" zstd_served_to_nix
stop_grove "$SRV_PID"; stop_grove "$UPL_PID"
