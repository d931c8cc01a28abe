//! The web console (`GET /`, static/ embedded in the binary) in Debian's Chromium, driven by
//! playwright-core (tests/node/browser.js): two people log in from two browser contexts and chat one
//! to one and in a group, both ways, in Chinese with emoji, over the real server; no page errors.

mod common;

use std::time::Duration;

use common::node::NodeAgent;
use common::{Backend, TestServer};
use serde_json::{json, Value};

on_both_backends!(two_people_chat_in_the_console);

/// Runs `js` in page `name` and answers its value.
async fn eval(agent: &mut NodeAgent, name: &str, js: &str) -> Value {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
    agent.cmd(json!({"op": "eval", "name": name, "js": js, "id": id}));
    let v = agent.expect_raw(|v| v["event"] == "eval" && v["id"] == id.as_str()).await;
    v["data"].clone()
}

/// Waits (at most 10 s) until `js` is true in page `name`.
async fn until(agent: &mut NodeAgent, name: &str, js: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if eval(agent, name, js).await == Value::Bool(true) {
            return;
        }
        let text = eval(agent, name, "document.body.innerText").await;
        assert!(tokio::time::Instant::now() < deadline, "{name}: not {js}; the page shows {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Types into an input and submits its form, as a person would.
async fn fill_and_submit(agent: &mut NodeAgent, name: &str, input: &str, value: &str, button: &str) {
    let js = format!(
        "(() => {{ const i = document.getElementById({input:?}); i.value = {value:?}; \
         i.dispatchEvent(new Event('input')); document.getElementById({button:?}).click(); return true; }})()"
    );
    assert_eq!(eval(agent, name, &js).await, Value::Bool(true));
}

fn shows(text: &str) -> String {
    format!("[...document.querySelectorAll('#messages .body')].some(e => e.textContent === {text:?})")
}

fn conversation(key: &str) -> String {
    format!("(() => {{ const li = document.querySelector('#convs li[data-key={key:?}]'); if (!li) return false; li.click(); return true; }})()")
}

async fn two_people_chat_in_the_console(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=alice&members=bob&name=%E8%8C%B6%E8%AF%9D%E4%BC%9A").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let mut agent = NodeAgent::start("browser.js", "playwright-core").await;
    for (page, user) in [("a", "alice"), ("b", "bob")] {
        agent.cmd(json!({"op": "open", "name": page, "url": s.url("/")}));
        agent.expect(page, "opened").await;
        fill_and_submit(&mut agent, page, "login-user", user, "login-go").await;
        until(&mut agent, page, "document.getElementById('status').textContent === 'online'").await;
        // The group comes from querymygrps, with its name.
        until(&mut agent, page, &format!("document.body.innerText.includes('# 茶话会') && !!document.querySelector('#convs li[data-key=\"g:{gid}\"]')")).await;
    }

    // One to one, both ways.
    fill_and_submit(&mut agent, "a", "peer", "bob", "open-go").await;
    fill_and_submit(&mut agent, "a", "text", "你好 👋 bob_1", "send").await;
    until(&mut agent, "b", "!!document.querySelector('#convs li[data-key=\"u:alice\"] .badge')").await;
    until(&mut agent, "b", &conversation("u:alice")).await;
    until(&mut agent, "b", &shows("你好 👋 bob_1")).await;
    fill_and_submit(&mut agent, "b", "text", "收到 ✅", "send").await;
    until(&mut agent, "a", &shows("收到 ✅")).await;

    // In the group.
    until(&mut agent, "a", &conversation(&format!("g:{gid}"))).await;
    fill_and_submit(&mut agent, "a", "text", "大家好 🎉", "send").await;
    until(&mut agent, "b", &conversation(&format!("g:{gid}"))).await;
    until(&mut agent, "b", &shows("大家好 🎉")).await;
    fill_and_submit(&mut agent, "b", "text", "hi all", "send").await;
    until(&mut agent, "a", &shows("hi all")).await;

    // A picture drawn in bob's page, uploaded and sent: alice sees it inline.
    let upload = "new Promise((done) => { const c = document.createElement('canvas'); c.width = 32; c.height = 24; \
                  const g = c.getContext('2d'); g.fillStyle = '#c33'; g.fillRect(0, 0, 32, 24); \
                  c.toBlob((b) => window.wsimConsole.uploadAndSend(new File([b], 'red.png', {type: 'image/png'})).then(done)); })";
    let url = eval(&mut agent, "b", upload).await;
    let url = url.as_str().unwrap_or_else(|| panic!("the upload: {url}")).to_string();
    assert!(url.ends_with("-32x24.png"), "{url}");
    until(&mut agent, "a", &format!("[...document.querySelectorAll('#messages img')].some(i => i.src === {url:?} && i.complete && i.naturalWidth === 32)")).await;

    // No errors in either page.
    agent.gather(Duration::from_millis(200)).await;
    let errors: Vec<&Value> =
        agent.seen().filter(|v| v["event"] == "page_error" || v["event"] == "console_error").collect();
    assert!(errors.is_empty(), "{errors:?}");
}
