#!/usr/bin/env python3
"""What one idle client connection costs the gateway in memory (issue 14): opens N TLS
connections of one kind to a running gateway, leaves them idle, and reports the growth of the
gateway's resident set per connection.

  benches/idle_memory.py PID HOST:PORT [N]

Kinds: `h1` (a TLS connection that made one request and stays kept alive), `h2` (ALPN h2,
connection preface and SETTINGS sent, no stream). The gateway must allow N more connections
(server.max_connections) and an idle_timeout longer than the run."""
import socket, ssl, sys, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")

def connect(addr, alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    host, port = addr.rsplit(":", 1)
    s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname="localhost")
    if alpn == "h2":
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    else:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    s.settimeout(5)
    s.recv(4096)
    return s

def main():
    pid, addr = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    for kind in ("h1", "h2"):
        alpn = "h2" if kind == "h2" else "http/1.1"
        conns = [connect(addr, alpn) for _ in range(10)]  # warm up allocator pools
        time.sleep(1)
        before = rss_kib(pid)
        conns += [connect(addr, alpn) for _ in range(n)]
        time.sleep(2)
        after = rss_kib(pid)
        print(f"{kind}: {n} idle connections, RSS {before} -> {after} KiB, {(after - before) * 1024 / n / 1024:.1f} KiB each")
        for c in conns:
            c.close()
        time.sleep(2)

main()
