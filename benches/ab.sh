#!/usr/bin/env bash
# Two builds of bo-gateway as two extra targets of the shared harness (../shared/bench/run.sh),
# measured in the same alternating rounds: on a shared machine whose speed moves between runs,
# the only fair comparison of builds.
#
#   NEW=target/release/bo-gateway BASE=/tmp/bo-gateway-old benches/ab.sh             # plain HTTP/1.1
#   NEW=... BASE=... MODE=h2 benches/ab.sh                                            # HTTP/2 over TLS
#   NEW=... FLOOR=1 benches/ab.sh          # beside benches/floor/nullproxy.c (plain HTTP/1.1 only)
#
# Each gateway is started as benches/load.sh starts one (pinned to CPU 1, one worker thread, log
# at warn, EdDSA with the token cache): NEW on 9010/9011/9019, BASE (optional) on 9110/9111/9119.
# FLOOR=1 adds the null proxy (bytes copied both ways on a connection per client, no HTTP) on
# 9030, pinned the same way: the most any proxy could reach against nginx-proxy here.
# ROUNDS (default 5) and the harness's other settings pass through.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${HARNESS:-$ROOT/../shared/bench/run.sh}"
MODE="${MODE:-keepalive}"
: "${NEW:?NEW=/path/to/the new build}"
BASE="${BASE:-}" FLOOR="${FLOOR:-0}"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start() {  # binary plain-port tls-port admin-port
  local dir
  dir=$(mktemp -d /tmp/bo-gateway-ab.XXXXXX)
  BIN=$1 bench_user "$dir"
  cat > "$dir/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$3"
plain_listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$4"
shutdown_grace = "2s"
[tls]
cert = "$dir/tls.crt"
key = "$dir/tls.key"
generate_self_signed = true
[tokens]
algorithm = "EdDSA"
signing_key = "$dir/signing.pem"
generate_signing_key = true
access_lifetime = "2h"
[credentials]
users_file = "$dir/users.toml"
[[routes]]
name = "origin"
prefix = "/"
upstreams = ["http://127.0.0.1:9001"]
CONF
  BO_GATEWAY_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 1 "$1" --config "$dir/gateway.toml" 2> "$dir/gateway.log" &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$4/healthz" > /dev/null && return 0
    sleep 0.1
  done
  echo "benches/ab.sh: $1 did not start; see $dir/gateway.log" >&2
  exit 1
}

start "$NEW" 9010 9011 9019
NEW_TOKEN=$(bench_token 9010)
if [[ $MODE == h2 ]]; then
  scheme=https new_port=9011 base_port=9111 peer=nginx-proxy-h2
else
  scheme=http new_port=9010 base_port=9110 peer=nginx-proxy
fi
export EXTRA_NAME=gw-new EXTRA_URL="$scheme://127.0.0.1:$new_port/" EXTRA_AUTH_HEADER="Bearer $NEW_TOKEN" \
  EXTRA_PEER=$peer
extra=2
if [[ -n $BASE ]]; then
  start "$BASE" 9110 9111 9119
  BASE_TOKEN=$(bench_token 9110)
  export EXTRA2_NAME=gw-base EXTRA2_URL="$scheme://127.0.0.1:$base_port/" \
    EXTRA2_AUTH_HEADER="Bearer $BASE_TOKEN" EXTRA2_PEER=$peer
  extra=3
fi
if [[ $FLOOR == 1 ]]; then
  [[ $MODE == h2 ]] && { echo "benches/ab.sh: FLOOR=1 measures plain HTTP/1.1 only" >&2; exit 2; }
  floor=$(mktemp -d /tmp/bo-gateway-floor.XXXXXX)
  cc -O2 -o "$floor/nullproxy" "$ROOT/benches/floor/nullproxy.c"
  taskset -c 1 "$floor/nullproxy" 9030 9001 &
  PIDS+=($!)
  # No auth header: it forwards anything, so the harness checks only that it answers 200.
  export "EXTRA${extra}_NAME=floor" "EXTRA${extra}_URL=http://127.0.0.1:9030/" \
    "EXTRA${extra}_AUTH_HEADER=" "EXTRA${extra}_PEER=$peer"
fi
TARGETS="${TARGETS:-$peer}" ROUNDS="${ROUNDS:-5}" MODE="$MODE" bash "$HARNESS"
