"""A small app to put Portico in front of: HTTP and a WebSocket echo, on one port.

    python echo_app.py [--port 0]

It binds 127.0.0.1 (port 0: any free port) and prints `listening on http://127.0.0.1:PORT`
once it accepts connections, so whoever starts it learns the port without a race.

- `HEAD /` and `GET /` answer 200 (Front Door's health probe is `HEAD /`, only a 200 passes).
- A WebSocket upgrade on any path is accepted and every message is echoed back.
- A plain request on any other path (an upgrade whose `Upgrade` header an edge stripped)
  gets the app's own `426 Upgrade Required`, marked `X-Echo-App: python`, so a test can
  tell the app's answer from an edge's.
"""

import argparse
import asyncio
import http

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response


def plain(status, body, head=False):
    headers = Headers(
        {
            "Content-Type": "text/plain",
            "Content-Length": str(len(body)),
            "X-Echo-App": "python",
            "Connection": "close",
        }
    )
    return Response(status.value, status.phrase, headers, b"" if head else body)


def process_request(connection, request):
    """Plain HTTP before the WebSocket handshake: the probe, `/`, and refused upgrades."""
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if upgrade and request.method == "GET":
        return None  # the handshake goes on: 101
    if request.path == "/":
        return plain(http.HTTPStatus.OK, b"echo app\n", head=request.method == "HEAD")
    return plain(
        http.HTTPStatus.UPGRADE_REQUIRED,
        b"echo app: this path speaks WebSocket; the request had no Upgrade header\n",
        head=request.method == "HEAD",
    )


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(port):
    async with serve(echo, "127.0.0.1", port, process_request=process_request) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening on http://127.0.0.1:{bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    try:
        asyncio.run(main(parser.parse_args().port))
    except KeyboardInterrupt:
        pass
