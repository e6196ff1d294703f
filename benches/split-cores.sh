#!/bin/bash
# A one-shard holdalld pinned to core 0 (block cache off: every read is from the log) and its
# load on core 1, as if they ran on two machines (docs/BENCHMARKS.md): client A's
# `holdall sync --once` of one 1 GiB file, then store_batch and retrieve_batch runs.
# usage: benches/split-cores.sh SCRATCH_DIR [HOLDALL_BINARY]
# Needs a release build (cargo build --release) and at least two cores.
set -euo pipefail
scratch=${1:?usage: split-cores.sh SCRATCH_DIR [HOLDALL_BINARY]}
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release
client=${2:-$bin/holdall}
w=$(mktemp -d "$scratch/split-cores.XXXXXX")
trap 'kill $server 2>/dev/null; wait; rm -rf "$w"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 0 "$bin/holdalld" serve --data "$w/data" --listen "127.0.0.1:$port" --shards 1 --block-cache 0 \
  >"$w/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  [ -f "$w/data/admin.token" ] && curl -sf "127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
export HOLDALL_SERVER=http://127.0.0.1:$port
HOLDALL_TOKEN=$(HOLDALL_TOKEN=$(cat "$w/data/admin.token") "$bin/holdall" admin add-user bench)
export HOLDALL_TOKEN
mkdir -p "$w/a"
head -c 1073741824 /dev/urandom >"$w/a/big"
sync
start=$(date +%s.%N)
HOLDALL_LOG=warn,holdall::sync=debug,holdall::transfer::upload=debug taskset -c 1 "$client" sync --once "$w/a" \
  2>"$w/a.log"
end=$(date +%s.%N)
echo "A up: $(echo "$end - $start" | bc) s ($client)"
grep -oE "scanned_ms=[0-9]+|stored_ms=[0-9]+|early_blocks=[0-9]+" "$w/a.log" | head -3 | tr '\n' ' '
echo
# The same one-shard holdalld on core 0, store_batch and retrieve_batch from the load
# generator on core 1: the server's core-seconds per GB with nothing else on its core.
token=$(cat "$w/data/admin.token")
for what in ingest fetch; do
  taskset -c 1 "$bin/holdall-bench" "$what" --server "$HOLDALL_SERVER" --token "$token" \
    --blocks 256 --concurrency 8 --runs 3 --dir "$w" | tail -1
done
