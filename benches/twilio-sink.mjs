// The peers' loopback sink (../shared/bench-peers/sink.mjs), speaking Twilio's dialect so that
// reminderctl's real Twilio adapter can talk to it unchanged. Same runtime (node 22, the `http`
// module, one thread), same parsing and the same per-request work; only the path and the reply
// differ:
//   POST /2010-04-01/Accounts/<sid>/Messages.json  form (To, From, Body) -> 201 {"sid":"SM<n>"}
//   GET  /stats  -> {"count","bad","dups","conns","first_ms","last_ms"}
//   POST /reset  -> zero the counters
// A duplicate is the same Body twice: every benchmark reminder names its own invoice number.
// Listens on 127.0.0.1 only (SINK_PORT, default 18081).
import http from 'node:http';

const port = parseInt(process.env.SINK_PORT || '18081', 10);

let count = 0, bad = 0, dups = 0, first = 0, last = 0, conns = 0;
let seen = new Set();

function reply(res, status, obj) {
  const out = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
  res.end(out);
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/2010-04-01/Accounts/') && req.url.endsWith('/Messages.json')) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let to, body;
      try {
        const p = new URLSearchParams(raw);
        to = p.get('To'); body = p.get('Body');
      } catch { /* fallthrough to bad */ }
      if (!to || !body) { bad++; return reply(res, 400, { code: 21602, message: 'bad request' }); }
      count++;
      const now = Date.now();
      if (!first) first = now;
      last = now;
      if (seen.has(body)) dups++; else seen.add(body);
      reply(res, 201, { sid: 'SM' + count, status: 'queued' });
    });
    return;
  }
  if (req.method === 'GET' && req.url === '/stats') {
    return reply(res, 200, { count, bad, dups, conns, first_ms: first, last_ms: last });
  }
  if (req.method === 'POST' && req.url === '/reset') {
    count = 0; bad = 0; dups = 0; first = 0; last = 0; conns = 0; seen = new Set();
    req.resume();
    return reply(res, 200, { ok: true });
  }
  req.resume();
  reply(res, 404, { error: 'not found' });
});
server.on('connection', () => { conns++; });
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`sink listening on 127.0.0.1:${port} pid=${process.pid}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { server.close(); process.exit(0); });
