#!/usr/bin/env bash
# Best effort: unpack Debian's TLS-capable redis-server (7.0, from the redis-tools .deb
# and its two libraries) into .cache/tls-redis without installing it system-wide, and
# print the path of a wrapper that runs it. The pip-installed server has no TLS, so this
# is what lets the native `rediss://` tests run instead of skipping. Prints nothing and
# exits non-zero when apt cannot provide it; the tests then skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$PWD/.cache/tls-redis"
wrapper="$dest/bin/redis-server"
if [[ -x "$wrapper" ]] && "$wrapper" --version >/dev/null 2>&1; then
    echo "$wrapper"
    exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || exit 1
rm -rf "$dest" && mkdir -p "$dest/debs" "$dest/root" "$dest/bin"
cd "$dest/debs"
packages=(redis-tools liblzf1 libjemalloc2)
if ! timeout 60 apt-get download "${packages[@]}" >/dev/null 2>&1; then
    timeout 120 apt-get update -qq >/dev/null 2>&1 || exit 1
    timeout 60 apt-get download "${packages[@]}" >/dev/null 2>&1 || exit 1
fi
for deb in ./*.deb; do dpkg-deb -x "$deb" "$dest/root"; done
# Redis picks its mode from argv[0]: the binary must be invoked as redis-server.
ln -sf "$dest/root/usr/bin/redis-check-rdb" "$dest/root/usr/bin/redis-server"
cat > "$wrapper" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$dest/root/usr/lib/x86_64-linux-gnu" exec "$dest/root/usr/bin/redis-server" "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" --version >/dev/null 2>&1 || exit 1
echo "$wrapper"
