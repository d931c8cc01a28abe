//! The Gru demo app's browser client as published: the browser build of socket.io-client 1.3.7 (its
//! own `socket.io.js`) in Debian's Chromium, driven by playwright-core (tests/node/browser.js), on a
//! page served from another origin as the demo app's is. It polls with XHR2 binary payloads, upgrades
//! to WebSocket, authenticates without a type with the original's md5 token2, subscribes with the
//! demo's shape and chats in a group and privately. `make test` installs Chromium and the packages.

mod common;

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::node::NodeAgent;
use common::{Backend, TestServer};
use serde_json::{json, Value};

on_both_backends!(the_demo_client_chats_in_chromium);

const TICKET_SALT: &str = "token_gen_for_ticket@sumory.com";
const SPEAR_SALT: &str = "token_gen_for_spear@sumory.com";

fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    format!("{:x}", Md5::digest(text.as_bytes()))
}

/// Serves the demo page and the client's own `socket.io.js` on an origin of their own.
fn start_page_server() -> String {
    let node = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/node_modules/sio13/socket.io.js");
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gru/demo.html");
    let (script, page) = (
        std::fs::read(node).expect("socket.io-client 1.3.7: run `make test`"),
        std::fs::read(page).expect("the demo page"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(move || {
        let (script, page) = (script.clone(), page.clone());
        App::new()
            .route(
                "/socket.io.js",
                web::get().to(move || {
                    let s = script.clone();
                    async move { HttpResponse::Ok().content_type("text/javascript").body(s) }
                }),
            )
            .route(
                "/demo.html",
                web::get().to(move || {
                    let p = page.clone();
                    async move { HttpResponse::Ok().content_type("text/html; charset=utf-8").body(p) }
                }),
            )
    })
    .listen(listener)
    .expect("listen")
    .workers(1)
    .run();
    actix_rt::spawn(server);
    format!("http://{addr}")
}

/// The demo page of user `id` with the tokens its business app computes.
fn page_url(pages: &str, server: &str, id: u32, name: &str, groups: &Value) -> String {
    let token1 = md5_hex(&format!("{id}_{name}_{TICKET_SALT}"));
    let token2 = md5_hex(&format!("{id}_{name}_{token1}_{SPEAR_SALT}"));
    let id = id.to_string();
    let groups = groups.to_string();
    let query = serde_urlencoded::to_string([
        ("server", server),
        ("id", id.as_str()),
        ("name", name),
        ("token1", token1.as_str()),
        ("token2", token2.as_str()),
        ("groups", groups.as_str()),
    ])
    .expect("query");
    format!("{pages}/demo.html?{query}")
}

async fn the_demo_client_chats_in_chromium(b: Backend) {
    let s = TestServer::start_with_config(
        &b,
        &format!(
            "[gru]\ntoken1_check = \"md5\"\ntoken1_salt = \"{TICKET_SALT}\"\n\
             token2_check = \"md5\"\ntoken2_salt = \"{SPEAR_SALT}\"\n"
        ),
    );
    let pages = start_page_server();
    let mut browser = NodeAgent::start("browser.js", "playwright-core").await;
    let groups = json!([{"id": 160, "name": "一班"}]);
    for (name, id, user) in [("a", 201, "张三"), ("b", 202, "李四")] {
        browser.cmd(json!({"op": "open", "name": name, "url": page_url(&pages, &s.base, id, user, &groups)}));
    }
    for name in ["a", "b"] {
        assert_eq!(browser.expect(name, "connect").await, "polling", "{name} starts polling");
        let r = browser.expect(name, "auth_result").await;
        assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": {"userType": "STUDENT"}}));
        let r = browser.expect(name, "subscribe_result").await;
        assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": [160]}));
        assert_eq!(browser.expect(name, "upgrade").await, "websocket", "{name} upgrades");
    }

    // A group message reaches both, the sender included; a private one only its target.
    browser.cmd(json!({"op": "eval", "name": "a", "js": "sendGroup(160, '大家好 👋')"}));
    for name in ["a", "b"] {
        let m = browser.expect(name, "msg").await;
        assert_eq!(m["content"], "大家好 👋", "{name}: {m}");
        assert_eq!(
            (m["msgType"].clone(), m["fromId"].clone(), m["target"]["id"].clone()),
            (json!(1), json!(201), json!(160))
        );
    }
    assert_eq!(browser.expect("a", "msg_result").await["success"], true);
    browser.cmd(json!({"op": "eval", "name": "a", "js": "sendPrivate(202, '悄悄话')"}));
    let m = browser.expect("b", "msg").await;
    assert_eq!(
        (m["content"].clone(), m["msgType"].clone(), m["target"]["id"].clone()),
        (json!("悄悄话"), json!(0), json!(202))
    );
    browser.cmd(json!({"op": "eval", "name": "b", "js": "sendPrivate(201, 'reply ok')"}));
    assert_eq!(browser.expect("a", "msg").await["content"], "reply ok");
    browser.expect_none("a", "msg", Duration::from_millis(300)).await;
    browser.cmd(json!({"op": "eval", "name": "a", "js": "transportName()", "id": "transport"}));
    let t = browser.expect_raw(|e| e["event"] == "eval" && e["id"] == "transport").await;
    assert_eq!(t["data"], "websocket");

    // What went over the wire: one handshake per page (no reconnect loop), polling answered with
    // binary payloads, no errors in the pages.
    browser.gather(Duration::from_millis(200)).await;
    for name in ["a", "b"] {
        let http: Vec<&Value> =
            browser.seen().filter(|e| e["name"] == name && e["event"] == "http").collect();
        let polls: Vec<&&Value> = http
            .iter()
            .filter(|e| e["url"].as_str().is_some_and(|u| u.contains("transport=polling")))
            .collect();
        let handshakes = polls
            .iter()
            .filter(|e| e["method"] == "GET" && !e["url"].as_str().unwrap_or("").contains("sid="))
            .count();
        assert_eq!(handshakes, 1, "{name}: {http:?}");
        assert!(
            polls.iter().any(|e| e["method"] == "GET"
                && e["status"] == 200
                && e["responseType"] == "application/octet-stream"),
            "{name}: binary polling answers: {http:?}"
        );
        assert!(polls.iter().any(|e| e["method"] == "POST" && e["status"] == 200), "{name}: {http:?}");
        assert!(http.iter().all(|e| e["status"].as_u64().is_some_and(|st| st < 400)), "{name}: {http:?}");
        let errors: Vec<&Value> = browser
            .seen()
            .filter(|e| {
                e["name"] == name
                    && matches!(
                        e["event"].as_str(),
                        Some("page_error" | "console_error" | "connect_error" | "reconnect")
                    )
            })
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    // The messages are stored.
    assert_eq!(s.count_rows("SELECT COUNT(*) AS n FROM messages"), 3);
}
