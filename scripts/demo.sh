#!/usr/bin/env bash
# The built-in demo: installs what is needed, builds fanhsm, generates a sample tree,
# serves it with a local nginx on 127.0.0.1 (directory listings on), mounts that URL with
# fanhsm (cache on a loop-mounted ext4 image), browses and streams from it, shows what was
# fetched, then unmounts and stops everything it started.
# Run as root. Keeps nothing running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/install-deps.sh
bash scripts/build.sh
fanhsm="$root/build/fanhsm"

work=$(mktemp -d /var/tmp/fanhsm-demo.XXXXXX)
src="$work/archive"; mnt="$work/mnt"; cachefs="$work/cachefs"; www="$work/nginx"
mkdir -p "$src" "$mnt" "$cachefs" "$www"
chmod 755 "$work"
nginx_pid=""
export FANHSM_RUN_DIR="$work/run"
cleanup() {
  set +e
  if [ -e "$FANHSM_RUN_DIR" ] && ls "$FANHSM_RUN_DIR"/*.json >/dev/null 2>&1; then
    "$fanhsm" umount "$mnt" 2>/dev/null || "$fanhsm" umount --lazy "$mnt"
  fi
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  mountpoint -q "$cachefs" && umount "$cachefs"
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "== generating a sample archive in $src"
mkdir -p "$src/docs" "$src/data/2024" "$src/data/2025" "$src/media"
tar czf "$src/docs/usr-share-doc.tar.gz" -C /usr/share doc 2>/dev/null
for i in $(seq 1 200); do echo "record $i of the sample archive" > "$src/data/2024/rec-$i.txt"; done
cp /etc/os-release "$src/data/2025/os-release"
head -c $((256 << 20)) /dev/urandom > "$src/media/video.bin"
chmod -R a+rX "$src"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$www/nginx.conf" <<CONF
user root; worker_processes 1; daemon off; pid $www/nginx.pid; error_log $www/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $www/b; proxy_temp_path $www/p; fastcgi_temp_path $www/f;
  uwsgi_temp_path $www/u; scgi_temp_path $www/s;
  server { listen 127.0.0.1:$port; root $src; location / { autoindex on; autoindex_format json; } }
}
CONF
/usr/sbin/nginx -c "$www/nginx.conf" -p "$www" &
nginx_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port/"
echo "== nginx serves $src at $url"

echo "== cache on a loop-mounted ext4 image (fanotify pre-content needs ext4, xfs or btrfs)"
truncate -s 2G "$work/cache.img"
mkfs.ext4 -q "$work/cache.img"
mount -o loop "$work/cache.img" "$cachefs"

say fanhsm mount --cache "$cachefs/cache" "$url" "$mnt"
"$fanhsm" mount --cache "$cachefs/cache" "$url" "$mnt"
say ls -l "$mnt" "$mnt/media"
ls -l "$mnt" "$mnt/media"
say "tar tzvf $mnt/docs/usr-share-doc.tar.gz | head -5     # streams: only what tar reads is fetched"
tar tzvf "$mnt/docs/usr-share-doc.tar.gz" | head -5 || true
say "dd if=$mnt/media/video.bin bs=4k skip=30000 count=1 | sha256sum   # 4 KiB in the middle"
dd if="$mnt/media/video.bin" bs=4k skip=30000 count=1 status=none | sha256sum
dd if="$src/media/video.bin" bs=4k skip=30000 count=1 status=none | sha256sum
say fanhsm status "$mnt/media/video.bin"
"$fanhsm" status "$mnt/media/video.bin"
say "time curl -s -o /dev/null ${url}media/video.bin   # the network limit, for comparison"
time curl -s -o /dev/null "${url}media/video.bin"
say "time cat $mnt/media/video.bin > /dev/null   # cold: fetched from the server"
time cat "$mnt/media/video.bin" > /dev/null
sleep 0.5
say "time cat $mnt/media/video.bin > /dev/null   # hydrated: native speed, no events"
time cat "$mnt/media/video.bin" > /dev/null
say "cmp $src/media/video.bin $mnt/media/video.bin"
cmp "$src/media/video.bin" "$mnt/media/video.bin" && echo "identical"
say "touch $mnt/new-file     # the view is read-only"
touch "$mnt/new-file" || true
say "getfattr -n user.fanhsm.state $mnt/media/video.bin   # the state, for any tool"
getfattr -n user.fanhsm.state "$mnt/media/video.bin"
say "fanhsm release $mnt/media/video.bin   # free its content (no reader has it open)"
"$fanhsm" release "$mnt/media/video.bin"
say "fanhsm fetch -r $mnt/docs   # hydrate a subtree now"
"$fanhsm" fetch -r "$mnt/docs"
say fanhsm status "$mnt"
"$fanhsm" status "$mnt"
say fanhsm umount "$mnt"
"$fanhsm" umount "$mnt"
echo
echo "demo done: everything it started is stopped and removed."
