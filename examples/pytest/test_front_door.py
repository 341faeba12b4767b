"""What Azure Front Door does to this app's WebSockets, met in a test (`portico emulate`).

The `edge` fixture (conftest.py) runs Front Door's emulation in front of the app, with
`/legacy/*` a route with caching on and `/chat` a WebSocket route.
"""

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 10  # seconds, for anything a test waits for


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 3 * TIMEOUT))


def test_the_websocket_route_echoes(edge):
    async def talk():
        async with connect(edge.ws_url("/chat"), open_timeout=TIMEOUT) as ws:
            for message in ["hello", "x" * 100_000, b"\x00\x01binary"]:
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message

    run(talk())


def test_a_cached_routes_upgrade_fails_with_the_apps_answer(app, edge):
    async def upgrade(url):
        async with connect(url, open_timeout=TIMEOUT) as ws:
            await ws.send("ping")
            return await asyncio.wait_for(ws.recv(), TIMEOUT)

    # Straight to the app, /legacy/x upgrades: the failure below is the edge's doing.
    assert run(upgrade(app.replace("http://", "ws://") + "/legacy/x")) == "ping"

    # Through Front Door, the route caches, so `Upgrade` is not forwarded: the app sees a
    # plain GET and the client gets the app's answer to it instead of a 101.
    with pytest.raises(InvalidStatus) as refused:
        run(upgrade(edge.ws_url("/legacy/x")))
    response = refused.value.response
    assert response.status_code == 426
    assert response.headers["X-Echo-App"] == "python", "the app's answer, not the edge's"
    assert response.headers["X-Cache"] == "UNCACHEABLE", "and the edge did not cache it"


class ReconnectingClient:
    """An app's client with retry logic, as Microsoft recommends for Front Door: when the
    connection drops it connects again (websockets' `async for ... in connect(...)`), and
    says hello on each connection."""

    def __init__(self, url):
        self.url = url
        self.greeted = asyncio.Queue()  # the echo of each connection's hello
        self.closes = asyncio.Queue()  # the close code the edge sent, per dropped connection

    async def run(self):
        n = 0
        async for ws in connect(self.url, open_timeout=TIMEOUT):
            n += 1
            try:
                await ws.send(f"hello #{n}")
                await self.greeted.put(await ws.recv())
                async for _ in ws:
                    pass
            except ConnectionClosed as closed:
                await self.closes.put(closed.rcvd.code if closed.rcvd else None)
                continue
            await self.closes.put(ws.close_code)


def test_the_client_reconnects_after_a_maintenance_close(edge):
    async def scenario():
        client = ReconnectingClient(edge.ws_url("/chat"))
        task = asyncio.create_task(client.run())
        try:
            assert await asyncio.wait_for(client.greeted.get(), TIMEOUT) == "hello #1"

            # A maintenance event: the edge closes the tunnels with a Close frame, 1001.
            answer = edge.close_tunnels(all=True, how="close")
            assert answer["how"] == "close_1001" and answer["closed"] >= 1, answer
            assert await asyncio.wait_for(client.closes.get(), TIMEOUT) == 1001

            # The client's retry logic brings it back, through the edge, on a new tunnel.
            assert await asyncio.wait_for(client.greeted.get(), TIMEOUT) == "hello #2"
        finally:
            task.cancel()

    run(scenario())
    edge.access_log_has('"closed_by":"admin"')
