// Drives real Socket.IO clients for the Gru integration tests. Reads one JSON command per line on
// stdin and writes one JSON event per line on stdout:
//   {"op":"connect","name":"a","v":1|2|4,"url":"http://…","transports":["websocket"],"reconnection":false}
//   {"op":"emit","name":"a","event":"auth","data":…,"ack":true}
//   {"op":"close","name":"a"}
//   {"op":"transport","name":"a"}
// Events: {"name","event":"connect"|"disconnect"|"connect_error"|"upgrade"|"transport"|"ack"|<server event>,
//          "data"?, "transport"?, "for"?}
'use strict';

const readline = require('readline');
const sio1 = require('sio1');
const sio2 = require('sio2');
const { io: sio4 } = require('sio4');

const SERVER_EVENTS = ['auth_result', 'subscribe_result', 'msg_result', 'msg', 'online_result'];
const sockets = new Map();

function out(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

function transportOf(socket) {
  const engine = socket.io && socket.io.engine;
  return engine && engine.transport ? engine.transport.name : null;
}

function connect(cmd) {
  const opts = {
    transports: cmd.transports || ['polling', 'websocket'],
    forceNew: true,
    reconnection: !!cmd.reconnection,
    reconnectionDelay: 200,
    reconnectionDelayMax: 500,
    timeout: 5000,
  };
  const socket = cmd.v === 1 ? sio1(cmd.url, opts) : cmd.v === 2 ? sio2(cmd.url, opts) : sio4(cmd.url, opts);
  sockets.set(cmd.name, socket);
  const name = cmd.name;
  socket.io.on('open', () => {
    const engine = socket.io.engine;
    engine.on('upgrade', (t) => out({ name, event: 'upgrade', transport: t.name }));
  });
  socket.on('connect', () => out({ name, event: 'connect', transport: transportOf(socket) }));
  socket.on('disconnect', (reason) => out({ name, event: 'disconnect', data: String(reason) }));
  socket.on('connect_error', (err) => out({ name, event: 'connect_error', data: String(err && err.message) }));
  for (const ev of SERVER_EVENTS) {
    socket.on(ev, (data) => out({ name, event: ev, data }));
  }
}

function handle(cmd) {
  const socket = sockets.get(cmd.name);
  switch (cmd.op) {
    case 'connect':
      return connect(cmd);
    case 'emit':
      if (cmd.ack) {
        socket.emit(cmd.event, cmd.data, (data) => out({ name: cmd.name, event: 'ack', for: cmd.event, data }));
      } else {
        socket.emit(cmd.event, cmd.data);
      }
      return;
    case 'close':
      socket.close();
      return;
    case 'transport':
      out({ name: cmd.name, event: 'transport', transport: transportOf(socket) });
      return;
    default:
      out({ name: cmd.name, event: 'agent_error', data: `unknown op ${cmd.op}` });
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  try {
    handle(JSON.parse(line));
  } catch (e) {
    out({ event: 'agent_error', data: String(e && e.stack) });
  }
});
rl.on('close', () => process.exit(0));
out({ event: 'ready' });
