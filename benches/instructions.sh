#!/usr/bin/env bash
# Instructions per request under callgrind: steadier than wall-clock ratios on a shared machine.
# The gateway runs under `valgrind --tool=callgrind` twice, for N and 2N requests (h2load), in
# front of the shared harness's nginx origin; (I(2N) - I(N)) / N cancels start-up and
# connection set-up.
#
#   benches/instructions.sh                    # plain HTTP/1.1 (fast path), N = 4000
#   MODE=h2 N=4000 benches/instructions.sh     # HTTP/2 over TLS (hyper's path)
#   MODE=newconn benches/instructions.sh       # plain HTTP/1.1, a new connection per request
#   BIN=/path/to/bo-gateway ...                # that binary (default: a release build)
#
# Needs valgrind, h2load (nghttp2-client), nginx, curl, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS_DIR="${HARNESS_DIR:-$ROOT/../shared/bench}"
MODE="${MODE:-h1}" N="${N:-4000}"
for tool in valgrind h2load nginx curl python3; do
  command -v "$tool" >/dev/null || { echo "benches/instructions.sh: $tool is missing" >&2; exit 2; }
done
if [[ -z "${BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release --locked --bin bo-gateway)
  BIN="$ROOT/target/release/bo-gateway"
fi
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DIR=$(mktemp -d /tmp/bo-gateway-instr.XXXXXX)
ORIGIN_PID="" GW_PID=""
cleanup() {
  [[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null || true
  [[ -n "$ORIGIN_PID" ]] && kill "$ORIGIN_PID" 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$DIR/origin"
nginx -p "$DIR/origin/" -e "$DIR/origin/error.log" -c "$HARNESS_DIR/origin/nginx-origin.conf" > /dev/null 2>&1 &
ORIGIN_PID=$!
bench_user "$DIR"
cat > "$DIR/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:9211"
plain_listen = "127.0.0.1:9210"
admin_listen = "127.0.0.1:9219"
shutdown_grace = "2s"
# One worker (the single-threaded runtime), as benches/load.sh runs it pinned to one CPU.
worker_threads = 1
[tls]
cert = "$DIR/tls.crt"
key = "$DIR/tls.key"
generate_self_signed = true
[tokens]
algorithm = "EdDSA"
signing_key = "$DIR/signing.pem"
generate_signing_key = true
access_lifetime = "2h"
[credentials]
users_file = "$DIR/users.toml"
[[routes]]
name = "origin"
prefix = "/"
upstreams = ["http://127.0.0.1:9001"]
CONF

run() {  # requests -> total instructions
  local n=$1 out="$DIR/callgrind.$1"
  BO_GATEWAY_LOG=warn TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BIN" --config "$DIR/gateway.toml" > "$DIR/gw.$n.log" 2>&1 &
  GW_PID=$!
  for _ in $(seq 300); do curl -sf http://127.0.0.1:9219/healthz > /dev/null && break; sleep 0.2; done
  local token
  token=$(bench_token 9210)
  if [[ $MODE == h2 ]]; then
    h2load -n "$n" -c 8 -m 10 -H "Authorization: Bearer $token" https://127.0.0.1:9211/ > "$DIR/load.$n" 2>&1
  elif [[ $MODE == newconn ]]; then
    h2load --h1 -n "$n" -c 8 -H "Connection: close" -H "Authorization: Bearer $token" \
      http://127.0.0.1:9210/ > "$DIR/load.$n" 2>&1
  else
    h2load --h1 -n "$n" -c 16 -H "Authorization: Bearer $token" http://127.0.0.1:9210/ > "$DIR/load.$n" 2>&1
  fi
  grep -q "status codes: $n 2xx" "$DIR/load.$n" || { echo "not every request got a 2xx: $DIR/load.$n" >&2; exit 1; }
  kill -TERM "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
  GW_PID=""
  # The login and its argon2 hash are in both runs, so they cancel out too. aws-lc's seeding
  # of its random generator from CPU jitter does not: about half of a run's instructions, and
  # a different number each run (±400 per request at N = 4000), so it is taken out.
  local total seeding
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
  seeding=$(callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null \
    | awk '/get_entropy_source \[/ { gsub(",", "", $1); print $1; exit }')
  echo $((total - ${seeding:-0}))
}
one=$(run "$N")
two=$(run $((2 * N)))
echo "$MODE $(basename "$BIN"): $(((two - one) / N)) instructions per request (I($N) = $one, I($((2 * N))) = $two)"
echo "profiles: $DIR/callgrind.$N and $DIR/callgrind.$((2 * N)) (callgrind_annotate)"
