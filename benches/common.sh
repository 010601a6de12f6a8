# Shared by benches/load.sh and benches/instructions.sh (sourced; needs $BIN, the gateway).

# The bench user (login "bench", password "bench-password", role trader) in DIR/users.toml.
bench_user() {  # dir
  printf 'bench-password' | "$BIN" hash-password > "$1/hash"
  cat > "$1/users.toml" <<USERS
[[users]]
login = "bench"
password_hash = "$(cat "$1/hash")"
roles = ["trader"]
USERS
}

# Logs the bench user in on the gateway's plain listener and prints its access token.
bench_token() {  # plain port
  curl -sf "http://127.0.0.1:$1/auth/token" -d '{"login":"bench","password":"bench-password"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'
}
