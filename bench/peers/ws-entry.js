// The reference for the /entry benchmark: a naive in-memory Node server of the wsim signaling on the
// `ws` package, doing what wsim does for the benchmark's traffic and nothing more (no storage, no
// offline replay): login_<user> → ok; <kind>_<to>_<payload>_<unicast|group>_<ext> delivered in the
// receive format to every connection of the user or of the group's members but the sender's
// connection; heartbeat_<secs> with a WebSocket ping every 30 s, peers silent for 90 s dropped;
// /creategrp over HTTP (form or query) answering like wsim. Usage: node ws-entry.js <port>
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 6071);
const users = new Map(); // user -> Set<socket>
const groups = new Map(); // group id -> Set<user>
let nextGroup = 10;

function createGroup(params) {
  const members = new Set([params.get('creator'), ...(params.get('members') || '').split(',')].filter(Boolean));
  const id = String(nextGroup++);
  groups.set(id, members);
  return { code: 1, message: 'OK', data: { groupid: id, creator: params.get('creator'), name: params.get('name') || '', notice: '', snap: '', members: [...members] } };
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/creategrp') {
    res.statusCode = 404;
    res.end();
    return;
  }
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    const params = new URLSearchParams(body || url.search);
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(createGroup(params)));
  });
});

const wss = new WebSocketServer({ server, path: '/entry' });
wss.on('connection', (ws) => {
  ws.alive = Date.now();
  ws.on('pong', () => { ws.alive = Date.now(); });
  ws.on('message', (data) => {
    ws.alive = Date.now();
    const f = data.toString();
    if (f.startsWith('login_')) {
      ws.user = f.slice(6);
      if (!users.has(ws.user)) users.set(ws.user, new Set());
      users.get(ws.user).add(ws);
      ws.send('ok');
      return;
    }
    if (!ws.user) return;
    const p = f.split('_');
    if (p.length < 5) return;
    const kind = p[0], to = p[1], ext = p[p.length - 1], type = p[p.length - 2];
    const payload = p.slice(2, p.length - 2).join('_');
    const timet = Math.floor(Date.now() / 1000);
    if (type === 'unicast') {
      const out = `${kind}_${ws.user}_${payload}_unicast_${ws.user}_${timet}_${ext}`;
      for (const s of users.get(to) || []) s.send(out);
    } else if (type === 'group') {
      const members = groups.get(to);
      if (!members || !members.has(ws.user)) return;
      const out = `${kind}_${ws.user}_${payload}_group_${to}_${timet}_${ext}`;
      for (const m of members) for (const s of users.get(m) || []) if (s !== ws) s.send(out);
    }
  });
  ws.on('close', () => {
    const set = ws.user && users.get(ws.user);
    if (set) {
      set.delete(ws);
      if (!set.size) users.delete(ws.user);
    }
  });
});

setInterval(() => {
  const now = Date.now();
  for (const ws of wss.clients) {
    if (now - ws.alive > 90000) { ws.terminate(); continue; }
    ws.send(`heartbeat_${Math.floor(now / 1000)}`);
    ws.ping();
  }
}, 30000);

server.listen(port, '127.0.0.1', () => console.log(`ws /entry peer listening on http://127.0.0.1:${port}`));
