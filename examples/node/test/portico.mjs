// Test helpers: the app, and `portico emulate` (Azure Front Door) in front of it.
//
// Copy this file into your own tests and change `startApp` to start your app. The Portico
// binary is `$PORTICO_BIN`, or `portico` on PATH.
//
// Nothing here sleeps to synchronise: the app prints its port once it listens, and the edge
// is ready when its admin `/healthz` says 200 and its own listener answers, polled until a
// deadline.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PORTICO_BIN = process.env.PORTICO_BIN || 'portico';
const DEADLINE_MS = 30_000; // for anything to start

const children = new Set();
process.on('exit', () => children.forEach((child) => child.kill('SIGKILL')));

/** A child process; what it prints is kept (`output`) for failure messages and logs. */
export class Process {
  constructor(command, args, env = process.env) {
    this.command = command;
    this.output = '';
    this.exit = null;
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    children.add(this.child);
    const keep = (chunk) => { this.output += chunk; };
    this.child.stdout.setEncoding('utf8').on('data', keep);
    this.child.stderr.setEncoding('utf8').on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        children.delete(this.child);
        this.exit = { code, signal };
        resolve(this.exit);
      });
      this.child.on('error', (error) => {
        children.delete(this.child);
        this.output += `${error}\n`;
        this.exit = { error };
        resolve(this.exit);
      });
    });
  }

  /** SIGINT (Portico's fast stop; SIGTERM would drain first), SIGKILL after 10 s. */
  async stop() {
    if (this.exit === null) {
      this.child.kill('SIGINT');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}

export class ProcessExited extends Error {}

/** Calls `check()` until it returns a truthy value, failing if `running` exits or the
 *  deadline passes. */
export async function pollUntil(what, check, running, deadlineMs = DEADLINE_MS) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const found = await check();
    if (found) return found;
    if (running.exit !== null) {
      throw new ProcessExited(`${running.command} exited while waiting for ${what}:\n${running.output}`);
    }
    if (Date.now() > end) throw new Error(`no ${what} within ${deadlineMs} ms:\n${running.output}`);
    await delay(50);
  }
}

/** The status of `url`, or null when nothing answers yet. */
async function httpStatus(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return null;
  }
}

/** A port nothing listens on right now. Portico binds it a moment later; if something else
 *  took it meanwhile, Portico exits with "cannot listen on" and `startEmulate` retries. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The app under test (here `echo_app.mjs`), on a port it picks and prints. */
export async function startApp() {
  const app = new Process(process.execPath, [path.join(HERE, '..', 'echo_app.mjs'), '0']);
  const port = await pollUntil("the app's port", () => {
    const match = app.output.match(/^listening on http:\/\/127\.0\.0\.1:(\d+)$/m);
    return match && Number(match[1]);
  }, app);
  return { process: app, url: `http://127.0.0.1:${port}` };
}

/** A running `portico emulate`. */
export class Edge {
  constructor(running, port, adminPort) {
    this.process = running;
    this.url = `http://127.0.0.1:${port}`;
    this.adminUrl = `http://127.0.0.1:${adminPort}`;
    this.port = port;
  }

  wsUrl(path) {
    return `ws://127.0.0.1:${this.port}${path}`;
  }

  /** `POST /tunnels/close`, e.g. `closeTunnels({ all: true, how: 'close' })`: a maintenance
   *  event. Resolves to the answer, e.g. `{ closed: 1, how: 'close_1001' }`. */
  async closeTunnels(selection) {
    const response = await fetch(`${this.adminUrl}/tunnels/close`, {
      method: 'POST',
      body: JSON.stringify(selection),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`POST /tunnels/close: ${response.status} ${text}`);
    return JSON.parse(text);
  }

  /** Waits until the edge's access log (its stdout) contains `text`. */
  accessLogHas(text, deadlineMs = 10_000) {
    return pollUntil(JSON.stringify(text), () => this.process.output.includes(text), this.process, deadlineMs);
  }

  stop() {
    return this.process.stop();
  }
}

/** `portico emulate --origin ORIGIN ...args` on two free ports, once it is ready. */
export async function startEmulate(origin, args, attempts = 5) {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const [port, adminPort] = [await freePort(), await freePort()];
    if (port === adminPort) continue;
    // emulate writes its configuration under $TMPDIR: a folder of its own, removed at stop.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'portico-example-'));
    const portico = new Process(PORTICO_BIN, [
      'emulate', '--origin', origin,
      '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`,
      ...args,
    ], { ...process.env, TMPDIR: tmp });
    portico.exited.then(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const edge = new Edge(portico, port, adminPort);
    try {
      // The admin endpoints, then the edge itself (it listens once the app's first health
      // probe has finished).
      await pollUntil('/healthz 200', async () => (await httpStatus(`${edge.adminUrl}/healthz`)) === 200, portico);
      await pollUntil('the edge to answer', async () => (await httpStatus(`${edge.url}/`)) !== null, portico);
      return edge;
    } catch (error) {
      await portico.stop();
      if (!(error instanceof ProcessExited) || !error.message.includes('cannot listen on')) throw error;
    }
  }
  throw new Error(`no free ports for portico emulate after ${attempts} attempts`);
}
