#!/bin/bash
# holdalld against nginx (Debian's, WebDAV PUT enabled, on loopback, in a temporary prefix)
# on the same 4 MiB block workload, in one invocation (docs/BENCHMARKS.md, per-core cost).
# usage: benches/versus-nginx.sh SCRATCH_DIR [holdall-bench versus-nginx flags]
# Installs nginx if it is missing; builds the release binaries.
set -euo pipefail
scratch=${1:?usage: versus-nginx.sh SCRATCH_DIR [flags]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "${NGINX:-/usr/sbin/nginx}" ]; then
  sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null; }
fi
# Debian's package starts a system nginx on port 80 where it can; it is not the one measured.
(cd "$root" && cargo build --release -p holdall-server -p holdall-benches >/dev/null)
mkdir -p "$scratch"
exec "$root/target/release/holdall-bench" versus-nginx --dir "$scratch" "$@"
