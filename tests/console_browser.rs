//! The web console (`GET /`, static/ embedded in the binary) in Debian's Chromium, driven by
//! playwright-core (tests/node/browser.js), over the real server on SQLite and MariaDB: people chat
//! one to one and in a group, both ways, in Chinese with emoji, with a picture and an audio clip;
//! the admin (behind its token) creates a group its member sees without a reload; a tab that was
//! offline gets what came meanwhile. Screenshots of every step are kept under the test output
//! directory (`<target>/tmp/console/<backend>/<test>/`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::node::NodeAgent;
use common::{Backend, TestServer};
use serde_json::{json, Value};

on_both_backends!(
    two_people_chat_in_the_console,
    the_admin_creates_a_group_its_member_sees_at_once,
    a_tab_that_was_offline_shows_what_came_meanwhile,
    a_gateway_session_over_sse_chats_with_a_wsim_user
);

/// Chromium pages of one test, with their screenshots.
struct Browser {
    agent: NodeAgent,
    shots: PathBuf,
    step: usize,
    next_id: usize,
}

impl Browser {
    async fn start(b: &Backend, test: &str) -> Browser {
        let backend = if matches!(b, Backend::Sqlite) { "sqlite" } else { "mysql" };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console").join(backend).join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Browser { agent: NodeAgent::start("browser.js", "playwright-core").await, shots, step: 0, next_id: 0 }
    }

    async fn open(&mut self, page: &str, url: &str, size: Option<(u32, u32)>) {
        let mut cmd = json!({"op": "open", "name": page, "url": url});
        if let Some((w, h)) = size {
            cmd["width"] = json!(w);
            cmd["height"] = json!(h);
        }
        self.agent.cmd(cmd);
        self.agent.expect(page, "opened").await;
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// Runs `js` in `page` and answers its value.
    async fn eval(&mut self, page: &str, js: &str) -> Value {
        let id = self.id();
        self.agent.cmd(json!({"op": "eval", "name": page, "js": js, "id": id}));
        let v = self.agent.expect_raw(|v| v["event"] == "eval" && v["id"] == id.as_str()).await;
        v["data"].clone()
    }

    /// Waits (at most 15 s) until `js` is true in `page`.
    async fn until(&mut self, page: &str, js: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if self.eval(page, js).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.eval(page, "document.body.innerText").await;
                self.shot(page, "failed").await;
                panic!("{page}: not {js}; the page shows {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types into an input and submits its form, as a person would.
    async fn fill_and_submit(&mut self, page: &str, input: &str, value: &str, button: &str) {
        self.fill(page, input, value).await;
        self.click(page, button).await;
    }

    async fn fill(&mut self, page: &str, input: &str, value: &str) {
        let js = format!(
            "(() => {{ const i = document.getElementById({input:?}); i.value = {value:?}; \
             i.dispatchEvent(new Event('input')); return true; }})()"
        );
        assert_eq!(self.eval(page, &js).await, Value::Bool(true), "{page}: #{input}");
    }

    async fn click(&mut self, page: &str, id: &str) {
        let js = format!("(() => {{ document.getElementById({id:?}).click(); return true; }})()");
        assert_eq!(self.eval(page, &js).await, Value::Bool(true), "{page}: #{id}");
    }

    /// A screenshot of `page`, numbered in the order taken.
    async fn shot(&mut self, page: &str, what: &str) {
        self.step += 1;
        let path = self.shots.join(format!("{:02}-{page}-{what}.png", self.step));
        let id = self.id();
        self.agent
            .cmd(json!({"op": "screenshot", "name": page, "path": path.display().to_string(), "id": id}));
        self.agent.expect_raw(|v| v["event"] == "done" && v["id"] == id.as_str()).await;
        assert!(std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000), "screenshot {}", path.display());
    }

    async fn set_offline(&mut self, page: &str, offline: bool) {
        let id = self.id();
        self.agent.cmd(json!({"op": "offline", "name": page, "offline": offline, "id": id}));
        self.agent.expect_raw(|v| v["event"] == "done" && v["id"] == id.as_str()).await;
    }

    async fn log_in(&mut self, page: &str, user: &str) {
        self.log_in_via(page, user, "wsim").await;
    }

    /// Logs in over `via`: "wsim" (/entry) or "gateway" (/notify over SSE).
    async fn log_in_via(&mut self, page: &str, user: &str, via: &str) {
        let js =
            format!("(() => {{ document.getElementById('login-via').value = {via:?}; return true; }})()");
        assert_eq!(self.eval(page, &js).await, Value::Bool(true));
        self.fill_and_submit(page, "login-user", user, "login-go").await;
        self.until(page, "document.getElementById('status').textContent === 'online'").await;
    }

    /// Lets what is under way land (half a second).
    async fn gather_quietly(&mut self) {
        self.agent.gather(Duration::from_millis(500)).await;
    }

    /// Page and console errors so far, but those `allowed` names.
    async fn errors(&mut self, allowed: &[&str]) -> Vec<Value> {
        self.agent.gather(Duration::from_millis(200)).await;
        self.agent
            .seen()
            .filter(|v| v["event"] == "page_error" || v["event"] == "console_error")
            .filter(|v| !allowed.iter().any(|a| v["data"].as_str().unwrap_or("").contains(a)))
            .cloned()
            .collect()
    }
}

fn shows(text: &str) -> String {
    format!("[...document.querySelectorAll('#messages .body')].some(e => e.textContent === {text:?})")
}

fn conversation(key: &str) -> String {
    format!("(() => {{ const li = document.querySelector('#convs li[data-key={key:?}]'); if (!li) return false; li.click(); return true; }})()")
}

fn listed(key: &str) -> String {
    format!("!!document.querySelector('#convs li[data-key={key:?}]')")
}

async fn two_people_chat_in_the_console(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=alice&members=bob&name=%E8%8C%B6%E8%AF%9D%E4%BC%9A").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let mut br = Browser::start(&b, "chat").await;
    // Bob is on a phone-sized screen.
    for (page, user, size) in [("a", "alice", None), ("b", "bob", Some((390, 844)))] {
        br.open(page, &s.url("/"), size).await;
        br.shot(page, "login").await;
        br.log_in(page, user).await;
        // The group comes from querymygrps, with its name.
        br.until(
            page,
            &format!("document.body.innerText.includes('# 茶话会') && {}", listed(&format!("g:{gid}"))),
        )
        .await;
    }
    assert_eq!(
        br.eval("b", "document.documentElement.scrollWidth <= window.innerWidth").await,
        Value::Bool(true),
        "the phone-sized page does not scroll sideways"
    );

    // One to one, both ways.
    br.fill_and_submit("a", "peer", "bob", "open-go").await;
    br.fill_and_submit("a", "text", "你好 👋 bob_1", "send").await;
    br.until("b", "!!document.querySelector('#convs li[data-key=\"u:alice\"] .badge')").await;
    br.shot("b", "unread").await;
    br.until("b", &conversation("u:alice")).await;
    br.until("b", &shows("你好 👋 bob_1")).await;
    br.fill_and_submit("b", "text", "收到 ✅", "send").await;
    br.until("a", &shows("收到 ✅")).await;
    br.shot("a", "one-to-one").await;

    // In the group, where each sees the other online.
    br.until("a", &conversation(&format!("g:{gid}"))).await;
    br.fill_and_submit("a", "text", "大家好 🎉", "send").await;
    br.until("b", &conversation(&format!("g:{gid}"))).await;
    br.until("b", &shows("大家好 🎉")).await;
    br.fill_and_submit("b", "text", "hi all", "send").await;
    br.until("a", &shows("hi all")).await;
    let roster = "[...document.querySelectorAll('#roster span')].map(e => e.className + ':' + e.textContent).join(' ')";
    br.until("a", &format!("{roster} === 'on:alice on:bob'")).await;
    br.shot("b", "group").await;

    // A picture drawn in bob's page, uploaded and sent: alice sees it inline.
    let upload = "new Promise((done) => { const c = document.createElement('canvas'); c.width = 32; c.height = 24; \
                  const g = c.getContext('2d'); g.fillStyle = '#c33'; g.fillRect(0, 0, 32, 24); \
                  c.toBlob((b) => window.wsimConsole.uploadAndSend(new File([b], 'red.png', {type: 'image/png'})).then(done)); })";
    let url = br.eval("b", upload).await;
    let url = url.as_str().unwrap_or_else(|| panic!("the upload: {url}")).to_string();
    assert!(url.ends_with("-32x24.png"), "{url}");
    br.until("a", &format!("[...document.querySelectorAll('#messages img')].some(i => i.src === {url:?} && i.complete && i.naturalWidth === 32)")).await;

    // Two seconds of audio (a WAV made in the page): alice sees its duration and can play it.
    let wav = "(() => { const rate = 8000, n = rate * 2, buf = new ArrayBuffer(44 + n * 2), d = new DataView(buf); \
               const str = (o, s) => [...s].forEach((c, i) => d.setUint8(o + i, c.charCodeAt(0))); \
               str(0, 'RIFF'); d.setUint32(4, 36 + n * 2, true); str(8, 'WAVE'); str(12, 'fmt '); \
               d.setUint32(16, 16, true); d.setUint16(20, 1, true); d.setUint16(22, 1, true); \
               d.setUint32(24, rate, true); d.setUint32(28, rate * 2, true); d.setUint16(32, 2, true); \
               d.setUint16(34, 16, true); str(36, 'data'); d.setUint32(40, n * 2, true); \
               for (let i = 0; i < n; i++) d.setInt16(44 + i * 2, Math.round(8000 * Math.sin(i / 8)), true); \
               return window.wsimConsole.uploadAndSend(new File([buf], 'tone.wav', {type: 'audio/wav'})); })()";
    let url = br.eval("a", wav).await;
    let url = url.as_str().unwrap_or_else(|| panic!("the audio upload: {url}")).to_string();
    assert!(url.ends_with("-2.wav"), "{url}");
    br.until(
        "b",
        &format!(
            "[...document.querySelectorAll('#messages .body')].some(e => {{ const a = e.querySelector('audio'); \
             return a && a.src === {url:?} && Math.round(a.duration) === 2 && e.querySelector('.duration').textContent.trim() === '2″'; }})"
        ),
    )
    .await;
    br.shot("b", "media").await;
    br.shot("a", "media").await;

    let errors = br.errors(&[]).await;
    assert!(errors.is_empty(), "{errors:?}");
}

async fn the_admin_creates_a_group_its_member_sees_at_once(b: Backend) {
    let s = TestServer::start_with_config(&b, "[console]\nadmin_token = \"adm-41c2\"\n");
    let mut br = Browser::start(&b, "admin").await;
    br.open("b", &s.url("/"), None).await;
    br.log_in("b", "bob").await;

    br.open("admin", &s.url("/"), None).await;
    br.click("admin", "tab-admin").await;
    br.until("admin", "!document.getElementById('admin-login').classList.contains('hidden')").await;
    br.shot("admin", "token-asked").await;
    // A wrong token is refused: the page says so and shows nothing of the administration.
    br.fill_and_submit("admin", "admin-token", "adm-41c", "admin-go").await;
    br.until("admin", "document.getElementById('admin-refused').textContent === 'wrong admin token'").await;
    assert_eq!(
        br.eval("admin", "document.getElementById('admin').classList.contains('hidden')").await,
        Value::Bool(true)
    );
    br.shot("admin", "token-refused").await;
    br.fill_and_submit("admin", "admin-token", "adm-41c2", "admin-go").await;
    br.until("admin", "!document.getElementById('admin').classList.contains('hidden')").await;
    // The live state: bob's connection, the Gru node.
    br.until("admin", "document.querySelector('#chart-conns .now').textContent === '1'").await;
    br.until("admin", &format!("document.getElementById('gru-nodes').textContent.includes({:?})", s.base))
        .await;

    // The admin creates a group with bob in it: bob's page lists it without a reload.
    br.fill("admin", "grp-creator", "alice").await;
    br.fill("admin", "grp-members", "bob,carol").await;
    br.fill("admin", "grp-name", "周末 ⛰").await;
    br.fill_and_submit("admin", "grp-notice", "十点集合", "grp-create-go").await;
    br.until("admin", "!!document.querySelector('#grp-list .group img') && document.querySelector('#grp-list .group img').complete && document.querySelector('#grp-list .group img').naturalWidth === 340").await;
    let gid = br.eval("admin", "document.querySelector('#grp-list .group').dataset.groupid").await;
    let gid = gid.as_str().expect("group id").to_string();
    br.until(
        "b",
        &format!("{} && document.body.innerText.includes('# 周末 ⛰')", listed(&format!("g:{gid}"))),
    )
    .await;
    br.shot("admin", "group-created").await;
    br.shot("b", "group-appears").await;

    // Edits: carol out, the notice changed, bob's nickname.
    br.until("admin", "(() => { const x = document.querySelector('#grp-list li[data-userid=\"carol\"] button'); if (!x) return false; x.click(); return true; })()").await;
    br.until("admin", "!document.querySelector('#grp-list li[data-userid=\"carol\"]') && !!document.querySelector('#grp-list li[data-userid=\"bob\"]')").await;
    br.until("admin", "(() => { const f = document.querySelector('#grp-list form.edit'); f.querySelectorAll('input')[1].value = '改到十一点 🕚'; f.requestSubmit(); return true; })()").await;
    br.until(
        "admin",
        "document.querySelector('#grp-list .group .note').textContent.includes('改到十一点 🕚')",
    )
    .await;
    br.fill("admin", "user-id", "bob").await;
    br.fill_and_submit("admin", "user-nick", "鲍勃 🐝", "user-go").await;
    br.until("admin", "document.getElementById('user-msg').textContent.startsWith('bob: nickname 鲍勃 🐝')")
        .await;
    let v = s.get_json(&format!("/grpinfo?groupid={gid}")).await;
    assert_eq!(v["data"]["notice"], "改到十一点 🕚", "{v}");
    let members: Vec<&str> = v["data"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["nickname"].as_str())
        .collect();
    assert_eq!(members, ["alice", "鲍勃 🐝"]);
    // Bob removed: the group leaves his list, again without a reload.
    br.until("admin", "(() => { const x = document.querySelector('#grp-list li[data-userid=\"bob\"] button'); if (!x) return false; x.click(); return true; })()").await;
    br.until("b", &format!("!{}", listed(&format!("g:{gid}")))).await;
    br.shot("admin", "group-edited").await;

    // The page's token entry was the only way in: refused 401s are the only console errors.
    let errors = br.errors(&["status of 401"]).await;
    assert!(errors.is_empty(), "{errors:?}");
}

async fn a_tab_that_was_offline_shows_what_came_meanwhile(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut br = Browser::start(&b, "offline").await;
    for (page, user) in [("a", "alice"), ("b", "bob")] {
        br.open(page, &s.url("/"), None).await;
        br.log_in(page, user).await;
    }
    s.wait_metric("wsim_users_online", 2.0).await;
    br.set_offline("b", true).await;
    br.until("b", "document.getElementById('status').textContent.startsWith('offline')").await;
    br.shot("b", "offline").await;
    // The server sees bob gone before alice writes (he is not merely slow).
    s.wait_metric("wsim_users_online", 1.0).await;
    br.fill_and_submit("a", "peer", "bob", "open-go").await;
    br.fill_and_submit("a", "text", "你在吗？📵", "send").await;
    s.wait_rows("SELECT COUNT(*) AS n FROM messages", 1).await;
    br.set_offline("b", false).await;
    br.until("b", "document.getElementById('status').textContent === 'online'").await;
    br.until("b", "!!document.querySelector('#convs li[data-key=\"u:alice\"] .badge')").await;
    br.until("b", &conversation("u:alice")).await;
    br.until("b", &shows("你在吗？📵")).await;
    br.shot("b", "caught-up").await;
    let errors = br.errors(&[]).await;
    assert!(errors.is_empty(), "{errors:?}");
}

async fn a_gateway_session_over_sse_chats_with_a_wsim_user(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=alice&members=bob&name=%E5%B0%8F%E7%BB%84").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let mut alice = s.login("alice").await;
    alice.send(&format!("text_{gid}_早上好 ☀️_group_e"));
    s.wait_rows("SELECT COUNT(*) AS n FROM messages", 1).await;

    // Bob is a gateway session on SSE (its token from /inner/get_token: the browser is on loopback).
    let mut br = Browser::start(&b, "gateway").await;
    br.open("g", &s.url("/"), None).await;
    br.log_in_via("g", "bob", "gateway").await;
    br.until("g", &format!("{} && document.body.innerText.includes('# 小组')", listed(&format!("g:{gid}"))))
        .await;
    // The history comes from the gateway's history call.
    br.until("g", &conversation(&format!("g:{gid}"))).await;
    br.until("g", &shows("早上好 ☀️")).await;
    // Live both ways: /entry to SSE, /send_msg to /entry.
    alice.send(&format!("text_{gid}_在线吗 🙋_group_e"));
    br.until("g", &shows("在线吗 🙋")).await;
    br.fill_and_submit("g", "text", "在的 ✋", "send").await;
    let (kind, from, payload, ty, where_, _, _) = common::fields(&alice.recv().await);
    assert_eq!(
        (kind.as_str(), from.as_str(), payload.as_str(), ty.as_str(), where_.as_str()),
        ("text", "bob", "在的 ✋", "group", gid.as_str())
    );
    // Shown once, though the session's own stream carries it back too.
    br.gather_quietly().await;
    let copies = br.eval("g", "[...document.querySelectorAll('#messages .body')].filter(e => e.textContent === '在的 ✋').length").await;
    assert_eq!(copies, json!(1));
    br.shot("g", "gateway-session").await;
    let errors = br.errors(&[]).await;
    assert!(errors.is_empty(), "{errors:?}");
}
