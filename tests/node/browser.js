// Drives pages in Debian's Chromium (playwright-core, the system browser: Playwright's own browser
// download is not used) for the Gru and console browser tests. Reads one JSON command per line on stdin, writes one
// JSON event per line on stdout:
//   {"op":"open","name":"a","url":"http://…"}      a page in a browser context of its own → {"name","event":"opened"}
//   {"op":"eval","name":"a","js":"…","id":"x"}     → {"name","event":"eval","id":"x","data":<result>}
//   {"op":"screenshot","name":"a","path":"…","id":"x"} the page as a PNG at path → {"name","event":"done","id"}
//   {"op":"offline","name":"a","offline":true,"id":"x"} the page's context loses (or regains) the network
//                                                  → {"name","event":"done","id"}
// Events: {"event":"ready"}; {"name","event":<what the page reports>,"data"}; for every request to
// /socket.io/: {"name","event":"http","method","url","requestType","responseType","status"};
// {"name","event":"page_error"|"console_error","data"}; {"event":"agent_error","data"}.
'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

const pages = new Map();

function out(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

async function open(browser, cmd) {
  const name = cmd.name;
  const context = await browser.newContext();
  const page = await context.newPage();
  if (cmd.width && cmd.height) await page.setViewportSize({ width: cmd.width, height: cmd.height });
  pages.set(name, page);
  await page.exposeFunction('reportToTest', (ev) => out({ name, event: ev.event, data: ev.data }));
  page.on('pageerror', (err) => out({ name, event: 'page_error', data: String(err) }));
  page.on('console', (msg) => {
    if (msg.type() === 'error') out({ name, event: 'console_error', data: msg.text() });
  });
  page.on('response', async (res) => {
    const req = res.request();
    if (!req.url().includes('/socket.io/')) return;
    const headers = await req.allHeaders().catch(() => ({}));
    out({
      name,
      event: 'http',
      method: req.method(),
      url: req.url(),
      requestType: headers['content-type'] || null,
      responseType: res.headers()['content-type'] || null,
      status: res.status(),
    });
  });
  await page.goto(cmd.url);
  out({ name, event: 'opened' });
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
      if (cmd.op === 'open') {
        await open(browser, cmd);
      } else if (cmd.op === 'eval') {
        const data = await pages.get(cmd.name).evaluate(cmd.js);
        out({ name: cmd.name, event: 'eval', id: cmd.id, data });
      } else if (cmd.op === 'screenshot') {
        await pages.get(cmd.name).screenshot({ path: cmd.path, fullPage: true });
        out({ name: cmd.name, event: 'done', id: cmd.id });
      } else if (cmd.op === 'offline') {
        await pages.get(cmd.name).context().setOffline(!!cmd.offline);
        out({ name: cmd.name, event: 'done', id: cmd.id });
      } else {
        out({ event: 'agent_error', data: `unknown op ${cmd.op}` });
      }
    } catch (e) {
      out({ name: cmd && cmd.name, event: 'agent_error', data: String(e && e.stack || e) });
    }
  });
  rl.on('close', async () => {
    await browser.close();
    process.exit(0);
  });
  out({ event: 'ready' });
}

main().catch((e) => {
  out({ event: 'agent_error', data: String(e && e.stack || e) });
  process.exit(1);
});
