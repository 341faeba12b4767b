"""HOST PORT PATH N HOLD READY: N HTTP/1.1 keep-alive connections over TLS, one GET each,
then held for HOLD seconds.

The client of `bench/idle-memory tls` and of `bench/run`'s scenario 10: the standard
library only. Writes "opened=N failed=M" to READY once every connection is open and idle.
"""

import signal
import socket
import ssl
import sys
import time


def get(host, port, path, ctx):
    """A TLS connection that has made one GET and read its whole response."""
    conn = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost")
    conn.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            raise EOFError("the edge closed the connection")
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    assert b" 200 " in head.split(b"\r\n")[0], head
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += conn.recv(65536)
    return conn


def main():
    host, port, path, n, hold, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns, failed = [], 0
    for _ in range(n):
        try:
            conns.append(get(host, port, path, ctx))
        except Exception:
            failed += 1
    open(ready, "w").write("opened=%d failed=%d\n" % (len(conns), failed))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(hold)


if __name__ == "__main__":
    main()
