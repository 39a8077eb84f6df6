# store.builders (Gachix's key): grove add takes paths from a Nix machine over ssh. The machine
# is this one, reached through a real sshd on loopback; the local store is not read
# (store.use_local_nix_daemon: false).

TOP=$(dataset)
CLOSURE=$(nix-store -qR "$TOP" | sort)
SSHW=$WORK/ssh; rm -rf "$SSHW"; mkdir -p "$SSHW" /run/sshd

start_sshd() {
  ssh-keygen -q -t ed25519 -N '' -f "$SSHW/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$SSHW/client_key"
  cp "$SSHW/client_key.pub" "$SSHW/authorized_keys"
  SSH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$SSHW/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSHW/host_key
AuthorizedKeysFile $SSHW/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
StrictModes no
PidFile $SSHW/sshd.pid
CONF
  /usr/sbin/sshd -D -f "$SSHW/sshd_config" -E "$SSHW/sshd.log" &
  SSHD_PID=$!; track "$SSHD_PID"
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null && return 0; sleep 0.1; done
  cat "$SSHW/sshd.log"; return 1
}
start_sshd || echo "sshd did not start" >&2
# ssh as grove runs it, with a known-hosts file of this test's own.
printf '#!/bin/sh\nexec ssh -o UserKnownHostsFile=%s/known_hosts "$@"\n' "$SSHW" > "$SSHW/ssh"
chmod +x "$SSHW/ssh"
export GROVE_SSH=$SSHW/ssh

add_from_a_builder_over_ssh() {
  local s=$WORK/builders-store; rm -rf "$s"
  printf 'store:\n  path: %s\n  use_local_nix_daemon: false\n  builders: [ "ssh://root@127.0.0.1:%s" ]\n  ssh_private_key_path: %s\n' \
    "$s" "$SSH_PORT" "$SSHW/client_key" > "$SSHW/grove.yaml"
  grove -c "$SSHW/grove.yaml" init >/dev/null 2>&1
  grove -c "$SSHW/grove.yaml" add "$TOP"
  [[ "$(grove -c "$SSHW/grove.yaml" list)" == "$CLOSURE" ]] || fail "closure from the builder differs"
  grove -c "$SSHW/grove.yaml" verify
  for p in $CLOSURE; do
    cmp <(grove -c "$SSHW/grove.yaml" nar "$p") <(nix-store --dump "$p") || fail "NAR of $p"
  done
  grep -q "Accepted publickey for root" "$SSHW/sshd.log" || fail "no ssh login in the sshd log"
  # A path no builder has: one clear error, nothing stored.
  local before; before=$(refs "$s")
  if grove -c "$SSHW/grove.yaml" add /nix/store/cccccccccccccccccccccccccccccccc-none 2>"$SSHW/err"; then fail "added a path nobody has"; fi
  grep -q "any of store.builders has" "$SSHW/err" || fail "$(cat "$SSHW/err")"
  [[ "$(refs "$s")" == "$before" ]] || fail "a failed add changed refs"
}

no_local_store_and_no_builders_is_refused() {
  local s=$WORK/builders-none; rm -rf "$s"
  printf 'store:\n  path: %s\n  use_local_nix_daemon: false\n' "$s" > "$SSHW/none.yaml"
  grove -c "$SSHW/none.yaml" init >/dev/null 2>&1
  if grove -c "$SSHW/none.yaml" add "$TOP" 2>"$SSHW/err2"; then fail "read the local store"; fi
  grep -q "use_local_nix_daemon is false" "$SSHW/err2" || fail "$(cat "$SSHW/err2")"
  [[ -z "$(grove -c "$SSHW/none.yaml" list)" ]] || fail "stored something"
}

check "builders: grove add takes the closure from a Nix machine over ssh" add_from_a_builder_over_ssh
check "builders: use_local_nix_daemon: false without builders refuses clearly" no_local_store_and_no_builders_is_refused
[[ -n ${SSHD_PID:-} ]] && terminate "$SSHD_PID"
