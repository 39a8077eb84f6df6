# Read replicas behind a load balancer: one writer takes uploads; two Groves follow it
# (store.follow) and serve behind nginx; `nix copy --from` through nginx gets every path, and a
# follower that was down catches up when it comes back.

TOP=$(dataset)
CLOSURE=$(nix-store -qR "$TOP" | sort)
REP=$WORK/replicas; rm -rf "$REP"; mkdir -p "$REP"
printf 'server:\n  write_token: s3cret\n' > "$REP/writer.yaml"
printf 'machine 127.0.0.1 login grove password s3cret\n' > "$REP/netrc"
grove --store "$REP/writer" init >/dev/null 2>&1
start_grove RW "$REP/writer" "$REP/writer.yaml" || abort "the writer did not start"
# Followers sign with the writer's key: clients trust one key, whichever replica answers.
for f in f1 f2; do
  printf 'store:\n  follow: "%s/git"\n  follow_interval_s: 0.2\n  sign_private_key_path: %s\n' \
    "$RW_URL" "$REP/writer/grove.key" > "$REP/$f.yaml"
  grove --store "$REP/$f" init >/dev/null 2>&1
done
start_grove RF1 "$REP/f1" "$REP/f1.yaml" || abort "follower 1 did not start"
start_grove RF2 "$REP/f2" "$REP/f2.yaml" || abort "follower 2 did not start"
LB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$REP/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $REP/nginx.pid; error_log $REP/nginx.err;
events { worker_connections 256; }
http { log_format upstream '\$upstream_addr'; access_log $REP/access.log upstream;
  client_body_temp_path $REP/nginx-tmp; proxy_temp_path $REP/nginx-tmp;
  upstream replicas { server ${RF1_URL#http://}; server ${RF2_URL#http://}; }
  server { listen 127.0.0.1:$LB_PORT; location / { proxy_pass http://replicas; } } }
CONF
mkdir -p "$REP/nginx-tmp"
nginx -c "$REP/nginx.conf" 2>>"$REP/nginx.err" & track "$!"
LB=http://127.0.0.1:$LB_PORT

# has_all URL PATHS...: every path's narinfo is 200 at URL.
has_all() {
  local url=$1 p; shift
  for p in "$@"; do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$url/$(basename "$p" | cut -c1-32).narinfo") == 200 ]] || return 1
  done
}
# wait_for URL SECONDS PATHS...: until URL has every path; fails after SECONDS.
wait_for() {
  local url=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 10; i++)); do has_all "$url" "$@" && return 0; sleep 0.1; done
  fail "$url lacks some of $* after ${secs}s"
}

upload_reaches_followers() {
  nix copy --to "$RW_URL" --option netrc-file "$REP/netrc" "$TOP"
  local start=$SECONDS
  wait_for "$RF1_URL" 20 $CLOSURE
  wait_for "$RF2_URL" 20 $CLOSURE
  echo "both followers had the closure $((SECONDS - start))s after the upload" >&2
}

copy_through_the_balancer() {
  local fresh; fresh=$(mktemp -d)/store
  nix copy --from "$LB" --to "$fresh" --option trusted-public-keys "$RW_KEY" "$TOP"
  [[ $(nix path-info --store "$fresh" -r "$TOP" | sort) == "$CLOSURE" ]] || fail "closure incomplete"
  # Both followers answered (nginx alternates between them).
  grep -qx "${RF1_URL#http://}" "$REP/access.log" || fail "follower 1 answered nothing"
  grep -qx "${RF2_URL#http://}" "$REP/access.log" || fail "follower 2 answered nothing"
}

late_follower_catches_up() {
  stop_grove "$RF2_PID"
  local src; src=$(mktemp -d)/grove-replica-late; printf 'added while f2 was down\n' > "$src"
  local late; late=$(nix-store --add "$src")
  nix copy --to "$RW_URL" --option netrc-file "$REP/netrc" "$late"
  wait_for "$RF1_URL" 20 "$late"
  ! grove --store "$REP/f2" list | grep -qx "$late" || fail "f2 has $late while down"
  LISTEN=${RF2_URL#http://} start_grove RF2 "$REP/f2" "$REP/f2.yaml"
  wait_for "$RF2_URL" 20 "$late" $CLOSURE
  grove --store "$REP/f2" verify >/dev/null
}

check "replicas: an upload to the writer reaches both followers within seconds" upload_reaches_followers
check "replicas: nix copy --from nginx in front of two followers gets every path" copy_through_the_balancer
check "replicas: a follower that was down catches up when it returns" late_follower_catches_up
