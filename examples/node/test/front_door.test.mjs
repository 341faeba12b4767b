// What Azure Front Door does to this app's WebSockets, met in a test (`portico emulate`),
// with Node's test runner and the `ws` package.
//
// Front Door's emulation runs in front of the app, with `/legacy/*` a route with caching
// on and `/chat` a WebSocket route.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { startApp, startEmulate } from './portico.mjs';

const TIMEOUT_MS = 10_000; // for anything a test waits for

let app;
let edge;

before(async () => {
  app = await startApp();
  edge = await startEmulate(app.url, ['--cached', '/legacy/*', '--websocket', '/chat']);
});

after(async () => {
  await edge?.stop();
  await app?.process.stop();
});

/** Values put by event handlers, awaited by the test with a deadline. */
class Queue {
  items = [];
  waiting = [];

  put(item) {
    const next = this.waiting.shift();
    if (next) next(item);
    else this.items.push(item);
  }

  get(what, timeoutMs = TIMEOUT_MS) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = this.waiting.filter((w) => w !== take);
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const take = (item) => { clearTimeout(timer); resolve(item); };
      this.waiting.push(take);
    });
  }
}

/** Opens a WebSocket to `url` and sends `ping`: resolves to `{ echo }`, or to the HTTP
 *  answer (`{ status, headers }`) when the server does not upgrade. */
function tryUpgrade(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: TIMEOUT_MS });
    ws.on('unexpected-response', (request, response) => {
      resolve({ status: response.statusCode, headers: response.headers });
      request.destroy();
    });
    ws.on('open', () => ws.send('ping'));
    ws.on('message', (data) => {
      resolve({ echo: data.toString() });
      ws.close();
    });
    ws.on('error', reject);
  });
}

test('the WebSocket route echoes', async () => {
  const ws = new WebSocket(edge.wsUrl('/chat'), { handshakeTimeout: TIMEOUT_MS });
  const received = new Queue();
  ws.on('message', (data, isBinary) => received.put(isBinary ? Buffer.from(data) : data.toString()));
  const closed = new Promise((resolve) => ws.on('close', resolve));
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  for (const message of ['hello', 'x'.repeat(100_000), Buffer.from([0, 1, 2, 255])]) {
    ws.send(message);
    assert.deepEqual(await received.get('echo'), message);
  }
  ws.close();
  await closed;
});

test("a cached route's upgrade fails with the app's answer", async () => {
  // Straight to the app, /legacy/x upgrades: the failure below is the edge's doing.
  assert.deepEqual(await tryUpgrade(`${app.url.replace('http:', 'ws:')}/legacy/x`), { echo: 'ping' });

  // Through Front Door the route caches, so `Upgrade` is not forwarded: the app sees a
  // plain GET and the client gets the app's answer to it instead of a 101.
  const answer = await tryUpgrade(edge.wsUrl('/legacy/x'));
  assert.equal(answer.status, 426, JSON.stringify(answer));
  assert.equal(answer.headers['x-echo-app'], 'node', "the app's answer, not the edge's");
  assert.equal(answer.headers['x-cache'], 'UNCACHEABLE', 'and the edge did not cache it');
});

/** An app's client with retry logic, as Microsoft recommends for Front Door: when the
 *  connection drops it connects again (with backoff), and says hello on each connection. */
class ReconnectingClient {
  greeted = new Queue(); // the echo of each connection's hello
  closes = new Queue(); // the close code of each connection that was open
  connections = 0;
  stopped = false;
  backoffMs = 50;

  constructor(url) {
    this.url = url;
    this.connect();
  }

  connect() {
    const n = ++this.connections;
    const ws = (this.ws = new WebSocket(this.url, { handshakeTimeout: TIMEOUT_MS }));
    let opened = false;
    let greeted = false;
    ws.on('open', () => {
      opened = true;
      this.backoffMs = 50;
      ws.send(`hello #${n}`);
    });
    ws.on('message', (data) => {
      if (!greeted) {
        greeted = true;
        this.greeted.put(data.toString());
      }
    });
    ws.on('error', () => {}); // 'close' follows
    ws.on('close', (code) => {
      if (opened) this.closes.put(code);
      if (this.stopped) return;
      setTimeout(() => this.connect(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, 2000);
    });
  }

  stop() {
    this.stopped = true;
    this.ws.terminate();
  }
}

test('the client reconnects after a maintenance close', async () => {
  const client = new ReconnectingClient(edge.wsUrl('/chat'));
  try {
    assert.equal(await client.greeted.get('first hello'), 'hello #1');

    // A maintenance event: the edge closes the tunnels with a Close frame, 1001.
    const answer = await edge.closeTunnels({ all: true, how: 'close' });
    assert.equal(answer.how, 'close_1001', JSON.stringify(answer));
    assert.ok(answer.closed >= 1, JSON.stringify(answer));
    assert.equal(await client.closes.get('close'), 1001);

    // The client's retry logic brings it back, through the edge, on a new tunnel.
    assert.equal(await client.greeted.get('second hello'), 'hello #2');
  } finally {
    client.stop();
  }
  await edge.accessLogHas('"closed_by":"admin"');
});
