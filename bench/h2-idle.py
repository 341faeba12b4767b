"""HOST PORT PATH N HOLD READY: N HTTP/2 connections over TLS, one GET each, then held.

bench/idle-memory's client for its `h2` mode: the standard library only (TLS with ALPN
h2, the frames and a literal HPACK block written by hand), so it runs on a bare machine.
Writes "opened=N failed=M" to READY once every connection is open and idle.
"""

import signal
import socket
import ssl
import struct
import sys
import time


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def read_exact(conn, count):
    data = b""
    while len(data) < count:
        more = conn.recv(count - len(data))
        if not more:
            raise EOFError("the edge closed the connection")
        data += more
    return data


def get(conn, request):
    """Sends the preface and one GET on stream 1; returns once its response has ended."""
    conn.sendall(request)
    answered = False
    while True:
        head = read_exact(conn, 9)
        length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
        stream = struct.unpack(">I", head[5:])[0] & 0x7FFFFFFF
        read_exact(conn, length)
        if kind == 4 and not flags & 1:  # SETTINGS, not an ACK
            conn.sendall(frame(4, 1, 0))
        elif kind == 7:
            raise RuntimeError("GOAWAY")
        elif stream == 1 and kind == 1:  # HEADERS
            answered = True
            if flags & 1:
                return
        elif stream == 1 and kind == 0 and flags & 1:  # the last DATA
            if not answered:
                raise RuntimeError("DATA before HEADERS")
            return


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    count, hold, ready = int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    authority = b"localhost"
    # HPACK: GET and https from the static table (2, 7); :path and :authority as literals
    # with indexed names (4, 1), not indexed. END_STREAM | END_HEADERS.
    block = b"\x82\x87" + bytes([4, len(path)]) + path + bytes([1, len(authority)]) + authority
    request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block)
    conns, failed = [], 0
    for _ in range(count):
        try:
            conn = context.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost")
            if conn.selected_alpn_protocol() != "h2":
                raise RuntimeError("no h2 by ALPN")
            get(conn, request)
            conns.append(conn)
        except Exception as error:  # counted; the first is shown
            if not failed:
                print("first failure:", error, file=sys.stderr)
            failed += 1
    with open(ready, "w") as out:
        out.write("opened=%d failed=%d\n" % (len(conns), failed))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(hold)


if __name__ == "__main__":
    main()
