# End-to-end tests of `grove mount` (real FUSE, as root) on the python closure.

TOP=$(dataset)
CLOSURE=$(nix-store -qR "$TOP" | sort)
MS=$WORK/mount-store; rm -rf "$MS"
grove --store "$MS" init >/dev/null 2>&1
grove --store "$MS" add "$TOP" >/dev/null 2>&1
MNT=$WORK/mnt; mkdir -p "$MNT"
fusermount3 -u "$MNT" 2>/dev/null || true
grove --store "$MS" mount --daemon "$MNT"

# Edge cases the dataset may lack: empty file and directory, symlinks, an executable, a store
# path that is a single file and one that is a symlink. Added to the store after mounting.
EDGE_SRC=$(mktemp -d)/grove-edge
mkdir -p "$EDGE_SRC/empty-dir" "$EDGE_SRC/a/b/c"
: > "$EDGE_SRC/empty-file"
printf '#!/bin/sh\necho edge\n' > "$EDGE_SRC/a/b/c/run"; chmod +x "$EDGE_SRC/a/b/c/run"
ln -s a/b/c/run "$EDGE_SRC/link"; ln -s /nowhere "$EDGE_SRC/dangling"
printf 'single\n' > "$(dirname "$EDGE_SRC")/grove-single"
ln -s /nix/store "$(dirname "$EDGE_SRC")/grove-symlink"
EDGE=$(nix-store --add "$EDGE_SRC"); SINGLE=$(nix-store --add "$(dirname "$EDGE_SRC")/grove-single")
SYMLINK=$(nix-store --add "$(dirname "$EDGE_SRC")/grove-symlink")

# Name, type, mode, and size and target of non-directories (directory sizes are the file system's).
listing() { (cd "$1" && find . \( -type d -printf '%P d %m\n' \) -o -printf '%P %y %m %s %l\n' | sort); }

root_lists_every_path() {
  [[ "$(ls "$MNT")" == "$(xargs -n1 basename <<<"$CLOSURE")" ]] || fail "root listing"
  [[ $(ls "$MNT/.nar" | wc -l) == 17 && $(ls "$MNT/.narinfo" | wc -l) == 17 ]] || fail ".nar/.narinfo listing"
  local h; h=$(basename "$TOP" | cut -c1-32)
  cmp "$MNT/.narinfo/$h.narinfo" <(grove --store "$MS" info "$TOP") || fail "narinfo differs from grove info"
  [[ $(stat -c %Y "$MNT/$(basename "$TOP")") == 1 ]] || fail "mtime is not 1"
  local i1 i2; i1=$(stat -c %i "$MNT/$(basename "$TOP")/usr"); i2=$(stat -c %i "$MNT/$(basename "$TOP")/usr")
  [[ $i1 == "$i2" ]] || fail "inode not stable"
  if ls "$MNT/00000000000000000000000000000000-nothing" 2>/dev/null; then fail "unknown path exists"; fi
}

trees_equal_nix_store() {
  for p in $CLOSURE; do
    diff -r --no-dereference "$MNT/$(basename "$p")" "$p" || fail "contents of $p"
    [[ "$(listing "$MNT/$(basename "$p")")" == "$(listing "$p")" ]] || fail "types, modes, sizes or link targets of $p"
  done
}

virtual_nars_hash_to_narhash() {
  for p in $CLOSURE; do
    local h; h=$(basename "$p" | cut -c1-32)
    local hex; hex=$(sha256sum "$MNT/.nar/$h.nar" | cut -d' ' -f1)
    [[ "sha256:$(nix-hash --type sha256 --to-base32 "$hex")" == "$(nix-store -q --hash "$p")" ]] || fail "NarHash of $p"
    [[ $(stat -c %s "$MNT/.nar/$h.nar") == "$(nix-store -q --size "$p")" ]] || fail "NarSize of $p"
  done
}

random_preads_match_dump() {
  for p in $CLOSURE; do nix-store --dump "$p" > "$WORK/dump-$(basename "$p" | cut -c1-32).nar"; done
  python3 - "$MNT/.nar" "$WORK" <<'PY'
import os, random, sys
mnt, work = sys.argv[1], sys.argv[2]
rng = random.Random(1234)
n = 0
for name in sorted(os.listdir(mnt)):
    ref = open(os.path.join(work, "dump-" + name), "rb").read()
    fd = os.open(os.path.join(mnt, name), os.O_RDONLY)
    for _ in range(40):
        off = rng.randrange(0, len(ref))
        size = rng.choice([1, 7, 4096, 65536, 200000])
        assert os.pread(fd, size, off) == ref[off:off + size], (name, off, size)
        n += 1
    assert os.pread(fd, 10, len(ref)) == b"", name
    os.close(fd)
print(n, "preads")
PY
}

new_paths_appear_with_edge_cases() {
  # Listed just before the add, so the kernel holds the root's listing in its cache.
  ls "$MNT" "$MNT/.nar" "$MNT/.narinfo" >/dev/null
  grove --store "$MS" add "$EDGE" "$SINGLE" "$SYMLINK"
  for p in "$EDGE" "$SINGLE" "$SYMLINK"; do
    ls "$MNT" | grep -qx "$(basename "$p")" || fail "$p did not appear"
    ls "$MNT/.narinfo" | grep -qx "$(basename "$p" | cut -c1-32).narinfo" || fail "narinfo of $p did not appear"
    cmp "$MNT/.nar/$(basename "$p" | cut -c1-32).nar" <(nix-store --dump "$p") || fail "NAR of $p"
  done
  local e=$MNT/$(basename "$EDGE")
  [[ "$(listing "$e")" == "$(listing "$EDGE")" ]] || fail "edge listing"
  [[ -d $e/empty-dir && -z "$(ls -A "$e/empty-dir")" ]] || fail "empty dir"
  [[ -f $e/empty-file && ! -s $e/empty-file ]] || fail "empty file"
  [[ $(stat -c %a "$e/a/b/c/run") == 555 && $(stat -c %a "$e/empty-file") == 444 ]] || fail "modes"
  [[ $(readlink "$e/dangling") == /nowhere && $(readlink "$e/link") == a/b/c/run ]] || fail "symlinks"
  [[ $("$e/link") == edge ]] || fail "running through a symlink"
  [[ $(cat "$MNT/$(basename "$SINGLE")") == single && -f $MNT/$(basename "$SINGLE") ]] || fail "single-file path"
  [[ $(readlink "$MNT/$(basename "$SYMLINK")") == /nix/store ]] || fail "symlink path"
}

read_only() {
  local p; p=$MNT/$(basename "$TOP")
  for op in "touch $MNT/x" "mkdir $p/d" "rm -f $p/nix-support/depends" "chmod 777 $p/nix-support" \
            "cp /etc/hostname $p/" "mv $p/nix-support $p/y"; do
    local err; err=$($op 2>&1) && fail "$op succeeded"
    grep -q "Read-only file system" <<<"$err" || fail "$op: $err"
  done
  local err; err=$(python3 -c "import os,sys; os.open(sys.argv[1], os.O_WRONLY)" "$p/nix-support/depends" 2>&1) && fail "opened for writing"
  grep -q "Read-only file system" <<<"$err" || fail "open for writing: $err"
}

access_matches_disk() {
  # access(2) is answered by grove (the mount has no default_permissions): readable and
  # executable as on disk, never writable.
  python3 - "$MNT" $CLOSURE <<'PY'
import os, sys
mnt, paths = sys.argv[1], sys.argv[2:]
n = 0
for p in paths:
    for root, dirs, files in os.walk(p):
        for f in dirs + files:
            disk = os.path.join(root, f)
            if os.path.islink(disk):
                continue
            m = os.path.join(mnt, os.path.relpath(disk, "/nix/store"))
            for mode in (os.R_OK, os.X_OK):
                assert os.access(m, mode) == os.access(disk, mode), (m, mode)
            assert not os.access(m, os.W_OK), m
            n += 1
assert n > 1000, n
print(n, "entries")
PY
}

eight_concurrent_readers() {
  ref=$(cd /nix/store && for p in $CLOSURE; do find "$(basename "$p")" -type f -exec sha256sum {} +; done | sort | sha256sum)
  for i in $(seq 8); do
    (cd "$MNT" && for p in $CLOSURE; do find "$(basename "$p")" -type f -exec sha256sum {} +; done | sort | sha256sum > "$WORK/reader-$i") &
  done
  wait
  for i in $(seq 8); do [[ "$(cat "$WORK/reader-$i")" == "$ref" ]] || fail "reader $i saw other bytes"; done
}

executable_runs_from_mount() {
  local py; py=$(grep -- -pyminimal <<<"$CLOSURE")
  [[ $("$MNT/$(basename "$py")/usr/bin/python3.11" --version) == "Python 3.11."* ]] || fail "python did not run"
  PYTHONHOME="$MNT/$(basename "$py")/usr" "$MNT/$(basename "$py")/usr/bin/python3.11" -c 'print(6*7)' | grep -qx 42 || fail "python -c"
}

mount_on_nix_store_in_a_namespace() {
  # As on a host without Nix: in a private mount namespace, the mount *is* /nix/store.
  local py; py=$(grep -- -pyminimal <<<"$CLOSURE")
  unshare -m bash -euc '
    grove=$1; store=$2; py=$3
    "$grove" --store "$store" mount --daemon /nix/store
    trap "fusermount3 -u /nix/store" EXIT
    mount | grep -q "on /nix/store type fuse.grove"
    [[ $(ls /nix/store | wc -l) -ge 17 ]]
    PYTHONHOME=$py/usr "$py/usr/bin/python3.11" -c "import os; print(os.getcwd() and 6*7)" | grep -qx 42
  ' _ "$GROVE_BIN" "$MS" "$py"
}

busy_unmount_is_a_clean_error() {
  local m2=$WORK/mnt-busy; mkdir -p "$m2"
  grove --store "$MS" mount --daemon "$m2"
  exec 3< "$m2/$(basename "$TOP")/nix-support/depends"
  local err; err=$(timeout 10 fusermount3 -u "$m2" 2>&1) && fail "unmounted a busy mount"
  [[ $? != 124 ]] || fail "fusermount3 hung"
  grep -qi "busy" <<<"$err" || fail "unexpected error: $err"
  [[ -n $(cat <&3) ]] || fail "open file unreadable after failed unmount"
  exec 3<&-
  timeout 10 fusermount3 -u "$m2" || fail "unmount after close"
  for _ in $(seq 50); do pgrep -f "mount --daemon $m2" >/dev/null || break; sleep 0.1; done
  if pgrep -f "mount --daemon $m2" >/dev/null; then fail "grove did not exit after unmount"; fi
  # SIGTERM while busy: the mount is detached lazily, not left stale, and grove exits.
  grove --store "$MS" mount --daemon "$m2"
  exec 3< "$m2/$(basename "$TOP")/nix-support/depends"
  pkill -TERM -f "mount --daemon $m2"
  for _ in $(seq 50); do pgrep -f "mount --daemon $m2" >/dev/null || break; sleep 0.1; done
  exec 3<&-
  if pgrep -f "mount --daemon $m2" >/dev/null; then fail "grove did not exit on SIGTERM"; fi
  if mount | grep -q " $m2 "; then fail "stale mount left behind"; fi
}

check "mount: root lists every path, narinfo, mtime, inodes" root_lists_every_path
check "mount: every path equals /nix/store (diff -r, modes, links)" trees_equal_nix_store
check "mount: sha256 of .nar/*.nar is each NarHash" virtual_nars_hash_to_narhash
check "mount: random preads into virtual NARs match nix-store --dump" random_preads_match_dump
check "mount: paths added after mounting appear (edge cases)" new_paths_appear_with_edge_cases
check "mount: every write gets EROFS" read_only
check "mount: access(2) answers as on disk (read, execute; never write)" access_matches_disk
check "mount: 8 concurrent readers" eight_concurrent_readers
check "mount: an executable runs from the mount" executable_runs_from_mount
check "mount: grove mount /nix/store in a mount namespace" mount_on_nix_store_in_a_namespace
check "mount: unmount while a file is open" busy_unmount_is_a_clean_error
fusermount3 -u "$MNT" 2>/dev/null || true
