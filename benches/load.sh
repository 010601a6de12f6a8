#!/usr/bin/env bash
# Whole-gateway load benchmark: bo-gateway as the extra target of the shared harness
# (../shared/bench/run.sh: nginx origin, nginx and HAProxy peers, wrk), in one run per mode.
#
#   benches/load.sh                 # every mode
#   MODES="cache tls" benches/load.sh
#
# Modes (each starts bo-gateway pinned to CPU 1 with one worker thread, like the peers):
#   cache   EdDSA tokens, token cache on (as deployed)        vs origin, nginx-proxy, haproxy-proxy
#   es256   ES256, cache_capacity = 0 (verify every request)  vs haproxy-es256
#   hs256   HS256, cache_capacity = 0                         vs haproxy-hs256
#   tls     EdDSA, cache on, over TLS                         vs nginx-proxy-tls, haproxy-hs256-tls
#   logins  as `cache`, then again with 10 logins/s (argon2id, default cost) running beside the load
#   h2      HTTP/2 over TLS (harness MODE=h2: h2load -c64 -m10)      vs nginx-proxy-h2
#   log     access log on, text (BO_GATEWAY_LOG=info, to a file)     vs nginx-proxy-log, nginx-proxy
#   logjson the same with --log-format json                          vs nginx-proxy-log, nginx-proxy
#   newconn a new connection per request (harness MODE=newconn), plain and TLS (full handshakes)
#                                                                    vs nginx-proxy, nginx-proxy-tls
# FAST_PATH=false serves everything on hyper's path (server.fast_path), for comparison.
# Harness settings (ROUNDS, DURATION, CONNS, ...) pass through; see ../shared/bench/README.md.
# Summaries are copied to $OUT (default /tmp/bo-gateway-load).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${HARNESS:-$ROOT/../shared/bench/run.sh}"
if [[ ! -x "$HARNESS" && ! -f "$HARNESS" ]]; then
  echo "benches/load.sh: the shared harness is not at $HARNESS" >&2
  echo "  (it lives in the project's shared folder: ../shared/bench/run.sh beside the checkout;" >&2
  echo "   set HARNESS=/path/to/run.sh to use another copy)" >&2
  exit 2
fi
MODES="${MODES:-cache es256 hs256 tls logins}"
OUT="${OUT:-/tmp/bo-gateway-load}"
PORT_PLAIN=9010 PORT_TLS=9011 PORT_ADMIN=9019
mkdir -p "$OUT"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

# BIN=/path/to/bo-gateway measures that binary as it is (no build).
if [[ -z "${BIN:-}" ]]; then
  echo "== building bo-gateway (release)"
  (cd "$ROOT" && cargo build --release --locked --bin bo-gateway)
  BIN="$ROOT/target/release/bo-gateway"
fi

GW_PID=""
LOGIN_PID=""
cleanup() {
  [[ -n "$LOGIN_PID" ]] && kill "$LOGIN_PID" 2>/dev/null || true
  [[ -n "$GW_PID" ]] && kill -TERM "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
  GW_PID="" LOGIN_PID=""
}
trap cleanup EXIT

start_gateway() {  # algorithm cache_capacity [log level] [log format]
  local alg=$1 cap=$2 level=${3:-warn} format=${4:-text} dir
  dir=$(mktemp -d /tmp/bo-gateway-load.XXXXXX)
  bench_user "$dir"
  local secret=""
  [[ $alg == HS256 ]] && secret="secret_file = \"$dir/hs256.secret\""
  cat > "$dir/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$PORT_TLS"
plain_listen = "127.0.0.1:$PORT_PLAIN"
admin_listen = "127.0.0.1:$PORT_ADMIN"
shutdown_grace = "2s"
fast_path = ${FAST_PATH:-true}
[tls]
cert = "$dir/tls.crt"
key = "$dir/tls.key"
generate_self_signed = true
[tokens]
algorithm = "$alg"
signing_key = "$dir/signing.pem"
$secret
generate_signing_key = true
cache_capacity = $cap
access_lifetime = "2h"
[credentials]
users_file = "$dir/users.toml"
[login_limits]
failures_per_login = 0
failures_per_address = 0
[[routes]]
name = "origin"
prefix = "/"
upstreams = ["http://127.0.0.1:9001"]
CONF
  # The log goes to a file, as nginx-proxy-log's does (a pipe to a terminal would measure the terminal).
  BO_GATEWAY_LOG=$level TOKIO_WORKER_THREADS=1 taskset -c 1 "$BIN" --config "$dir/gateway.toml" --log-format "$format" \
    2> "$dir/gateway.log" &
  GW_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT_ADMIN/healthz" > /dev/null && break
    sleep 0.1
  done
  TOKEN=$(bench_token "$PORT_PLAIN")
  [[ -n "$TOKEN" ]] || { echo "login failed; see $dir/gateway.log" >&2; exit 1; }
}

run_harness() {  # name url targets [peer]
  EXTRA_NAME="$1" EXTRA_URL="$2" EXTRA_AUTH_HEADER="Bearer $TOKEN" TARGETS="$3" EXTRA_PEER="${4:-${EXTRA_PEER:-}}" \
    bash "$HARNESS" | tee "$OUT/$1.log"
  cp /tmp/bench/results/summary.md "$OUT/$1.md" 2>/dev/null || true
}

for mode in $MODES; do
  echo "== mode $mode"
  case $mode in
    cache)  start_gateway EdDSA 100000; run_harness gw-eddsa-cache "http://127.0.0.1:$PORT_PLAIN/" "origin nginx-proxy haproxy-proxy" ;;
    es256)  start_gateway ES256 0;      run_harness gw-es256-nocache "http://127.0.0.1:$PORT_PLAIN/" "haproxy-es256" ;;
    hs256)  start_gateway HS256 0;      run_harness gw-hs256-nocache "http://127.0.0.1:$PORT_PLAIN/" "haproxy-hs256" ;;
    tls)    start_gateway EdDSA 100000; run_harness gw-eddsa-tls "https://127.0.0.1:$PORT_TLS/" "nginx-proxy-tls haproxy-hs256-tls" ;;
    h2)     start_gateway EdDSA 100000
            MODE=h2 run_harness gw-h2 "https://127.0.0.1:$PORT_TLS/" "nginx-proxy-h2" nginx-proxy-h2 ;;
    log)    start_gateway EdDSA 100000 info text
            MODE=log run_harness gw-log-text "http://127.0.0.1:$PORT_PLAIN/" "nginx-proxy nginx-proxy-log" nginx-proxy-log ;;
    logjson) start_gateway EdDSA 100000 info json
            MODE=log run_harness gw-log-json "http://127.0.0.1:$PORT_PLAIN/" "nginx-proxy nginx-proxy-log" nginx-proxy-log ;;
    newconn) start_gateway EdDSA 100000
            MODE=newconn EXTRA2_NAME=gw-newconn-tls EXTRA2_URL="https://127.0.0.1:$PORT_TLS/" \
              EXTRA2_AUTH_HEADER="Bearer $TOKEN" EXTRA2_PEER=nginx-proxy-tls \
              run_harness gw-newconn "http://127.0.0.1:$PORT_PLAIN/" "nginx-proxy nginx-proxy-tls" nginx-proxy ;;
    logins)
      start_gateway EdDSA 100000
      # The same gateway process first without logins, then with them. p99 drifts between two
      # harness runs even for a peer nothing changed for, so nginx-proxy, which never gets a
      # login, is measured in both as the control.
      run_harness gw-eddsa-cache-nologins "http://127.0.0.1:$PORT_PLAIN/" "nginx-proxy"
      # 10 logins per second, open loop, for as long as the harness runs (bounded: 15 minutes).
      # One client process on the client core (wrk's): a curl per login cost wrk's core enough
      # to move every target's p99 (nginx-proxy's too), whatever the server did.
      taskset -c "${WRK_CPUS:-0}" python3 - "$PORT_PLAIN" <<'PY' &
import sys, threading, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/auth/token"
body = b'{"login":"bench","password":"bench-password"}'
def login():
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30).read()
    except Exception:
        pass
end = time.monotonic() + 900
due = time.monotonic()
while due < end:
    threading.Thread(target=login, daemon=True).start()
    due += 0.1
    time.sleep(max(0.0, due - time.monotonic()))
PY
      LOGIN_PID=$!
      run_harness gw-eddsa-cache-logins "http://127.0.0.1:$PORT_PLAIN/" "nginx-proxy"
      echo "logins served during the run (gateway metrics):"
      curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" | grep '^bo_gateway_logins' | tee -a "$OUT/gw-eddsa-cache-logins.log"
      python3 - "$OUT" <<'PY' | tee -a "$OUT/gw-eddsa-cache-logins.log"
import sys
def p99(run, target):
    for line in open(f"{sys.argv[1]}/{run}.md"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == target:
            return float(cells[3])
    sys.exit(f"no row for {target} in {run}.md")
before, after = "gw-eddsa-cache-nologins", "gw-eddsa-cache-logins"
for name, a, b in [("bo-gateway", p99(before, before), p99(after, after)),
                   ("nginx-proxy (control, no logins)", p99(before, "nginx-proxy"), p99(after, "nginx-proxy"))]:
    print(f"p99 without -> with logins: {name}: {a:.3f} -> {b:.3f} ms ({(b / a - 1) * 100:+.1f} %)")
PY
      ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  cleanup
done
echo "== summaries in $OUT"
