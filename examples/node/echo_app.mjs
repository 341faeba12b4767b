// A small app to put Portico in front of: HTTP and a WebSocket echo, on one port.
//
//     node echo_app.mjs [port]
//
// It binds 127.0.0.1 (port 0, the default: any free port) and prints
// `listening on http://127.0.0.1:PORT` once it accepts connections, so whoever starts it
// learns the port without a race.
//
// - `HEAD /` and `GET /` answer 200 (Front Door's health probe is `HEAD /`; only a 200 passes).
// - A WebSocket upgrade on any path is accepted and every message is echoed back.
// - A plain request on any other path (an upgrade whose `Upgrade` header an edge stripped)
//   gets the app's own `426 Upgrade Required`, marked `X-Echo-App: node`, so a test can tell
//   the app's answer from an edge's.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const wss = new WebSocketServer({ noServer: true });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

const server = http.createServer((req, res) => {
  const ok = req.url === '/';
  const body = ok ? 'echo app\n' : 'echo app: this path speaks WebSocket; the request had no Upgrade header\n';
  res.writeHead(ok ? 200 : 426, {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
    'X-Echo-App': 'node',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
});
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
