// The reference for the Gru benchmark: Node's socket.io 4.x server doing what wsim's Gru front-end does
// for the benchmark's traffic (auth into a room, msg type 1 to the room including the sender, msg
// type 0 to one user's sockets, msg_result to the sender; no storage), plus a /ticket that hands out
// a dummy token. Usage: node socketio-gru.js <port> [pingIntervalMs]
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 6070);
const pingInterval = Number(process.argv[3] || 25000);
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/ticket')) {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({
      success: true, errorCode: 0, msg: '',
      data: { time: Date.now(), addr: `http://127.0.0.1:${port}`, name: 'node_1', token: 'peer', backupNodes: [] },
    }));
    return;
  }
  res.statusCode = 404;
  res.end();
});
const io = new Server(server, { pingInterval, pingTimeout: 20000, serveClient: false });
const parse = (d) => (typeof d === 'string' ? JSON.parse(d) : d);
let nextId = 1;

io.on('connection', (socket) => {
  socket.on('auth', (data, ack) => {
    const a = parse(data);
    socket.data.user = String(a.id);
    socket.data.group = a.groupId == null ? null : String(a.groupId);
    socket.join('u:' + a.id);
    if (socket.data.group) socket.join('g:' + socket.data.group);
    const r = { success: true, errorCode: 0, msg: '', data: { userType: String(a.type) === '0' ? 'TEACHER' : 'STUDENT' } };
    socket.emit('auth_result', r);
    if (typeof ack === 'function') ack(r);
  });
  socket.on('msg', (data, ack) => {
    const m = parse(data);
    const target = m.target || {};
    const out = {
      id: nextId++, createTime: Date.now(), content: m.content, expireTime: 0,
      fromId: socket.data.user, msgType: m.type, target,
    };
    let r;
    if (m.type === 1 || m.type === '1') {
      io.to('g:' + (target.id != null ? target.id : socket.data.group)).emit('msg', out);
      r = { success: true, errorCode: 0, msg: '', data: { id: out.id, createTime: out.createTime } };
    } else if (m.type === 0 || m.type === '0') {
      socket.to('u:' + target.id).emit('msg', out);
      r = { success: true, errorCode: 0, msg: '', data: { id: out.id, createTime: out.createTime } };
    } else {
      r = { success: false, errorCode: -2, msg: '消息类型不正确，请注明类型' };
    }
    socket.emit('msg_result', r);
    if (typeof ack === 'function') ack(r);
  });
});

server.listen(port, '127.0.0.1', () => console.log(`socket.io peer listening on http://127.0.0.1:${port}`));
