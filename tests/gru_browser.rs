//! The Gru demo app's browser client as published: the browser builds of socket.io-client 1.3.7 and
//! 1.2.1 (their own `socket.io.js`), and 2.5.0's, in Debian's Chromium, driven by playwright-core
//! (tests/node/browser.js), on a page served from another origin as the demo app's is. They poll with
//! XHR2 (binary answers; 1.2 also POSTs binary payloads, 1.3 text ones), upgrade to WebSocket,
//! authenticate without a type with the original's md5 token2, subscribe with the demo's shape and
//! chat in a group and privately. `make test` installs Chromium and the packages.

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

/// The client builds under test: the browser build in the npm package (an alias in
/// tests/node/package.json) of each.
const CLIENTS: [(&str, &str); 3] =
    [("1.3.7", "sio13/socket.io.js"), ("1.2.1", "sio12/socket.io.js"), ("2.5.0", "sio2/dist/socket.io.js")];

/// Serves the demo page and each client's own `socket.io.js` (`/<version>/demo.html`,
/// `/<version>/socket.io.js`) on an origin of their own.
fn start_page_server() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let page = std::fs::read(format!("{dir}/tests/fixtures/gru/demo.html")).expect("the demo page");
    let scripts: Vec<(String, Vec<u8>)> = CLIENTS
        .iter()
        .map(|(version, package)| {
            let path = format!("{dir}/tests/node/node_modules/{package}");
            (version.to_string(), std::fs::read(path).expect("socket.io-client builds: run `make test`"))
        })
        .collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(move || {
        let (scripts, page) = (scripts.clone(), page.clone());
        App::new().route(
            "/{version}/{file}",
            web::get().to(move |path: web::Path<(String, String)>| {
                let (version, file) = path.into_inner();
                let script = scripts.iter().find(|(v, _)| *v == version).map(|(_, s)| s.clone());
                let page = page.clone();
                async move {
                    match (file.as_str(), script) {
                        ("socket.io.js", Some(s)) => {
                            HttpResponse::Ok().content_type("text/javascript").body(s)
                        }
                        ("demo.html", Some(_)) => {
                            HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page)
                        }
                        _ => HttpResponse::NotFound().finish(),
                    }
                }
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

/// The demo page (with client `version`) of user `id` with the tokens its business app computes.
fn page_url(pages: &str, version: &str, server: &str, id: u32, name: &str, groups: &Value) -> String {
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
    format!("{pages}/{version}/demo.html?{query}")
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
    // Two on the demo's 1.3 build, one on 1.2 (binary POSTs), one on 2.5 (whose browser builds take the
    // same binary answers).
    let users = [
        ("a", "1.3.7", 201, "张三"),
        ("b", "1.3.7", 202, "李四"),
        ("c", "1.2.1", 203, "王五"),
        ("d", "2.5.0", 204, "赵六"),
    ];
    for (name, version, id, user) in users {
        let url = page_url(&pages, version, &s.base, id, user, &groups);
        browser.cmd(json!({"op": "open", "name": name, "url": url}));
    }
    for (name, ..) in users {
        assert_eq!(browser.expect(name, "connect").await, "polling", "{name} starts polling");
        let r = browser.expect(name, "auth_result").await;
        assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": {"userType": "STUDENT"}}));
        let r = browser.expect(name, "subscribe_result").await;
        assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": [160]}), "{name}");
        assert_eq!(browser.expect(name, "upgrade").await, "websocket", "{name} upgrades");
    }

    // A group message reaches every member, the sender included; a private one only its target.
    for (from, id, text) in [("a", 201, "大家好 👋"), ("c", 203, "1.2 在此")] {
        browser.cmd(json!({"op": "eval", "name": from, "js": format!("sendGroup(160, '{text}')")}));
        for (name, ..) in users {
            let m = browser.expect(name, "msg").await;
            assert_eq!(m["content"], text, "{name}: {m}");
            let (kind, sender, group) =
                (m["msgType"].clone(), m["fromId"].clone(), m["target"]["id"].clone());
            assert_eq!((kind, sender, group), (json!(1), json!(id), json!(160)));
        }
        assert_eq!(browser.expect(from, "msg_result").await["success"], true);
    }
    browser.cmd(json!({"op": "eval", "name": "a", "js": "sendPrivate(202, '悄悄话')"}));
    let m = browser.expect("b", "msg").await;
    let got = (m["content"].clone(), m["msgType"].clone(), m["target"]["id"].clone());
    assert_eq!(got, (json!("悄悄话"), json!(0), json!(202)));
    browser.cmd(json!({"op": "eval", "name": "b", "js": "sendPrivate(203, 'to 1.2')"}));
    assert_eq!(browser.expect("c", "msg").await["content"], "to 1.2");
    browser.cmd(json!({"op": "eval", "name": "c", "js": "sendPrivate(201, 'reply ok')"}));
    assert_eq!(browser.expect("a", "msg").await["content"], "reply ok");
    browser.expect_none("a", "msg", Duration::from_millis(300)).await;
    browser.cmd(json!({"op": "eval", "name": "a", "js": "transportName()", "id": "transport"}));
    let t = browser.expect_raw(|e| e["event"] == "eval" && e["id"] == "transport").await;
    assert_eq!(t["data"], "websocket");

    // What went over the wire: one handshake per page (no reconnect loop), polling answered with
    // binary payloads (and 1.2's POSTs binary too), no errors in the pages.
    browser.gather(Duration::from_millis(200)).await;
    for (name, version, ..) in users {
        let http: Vec<&Value> =
            browser.seen().filter(|e| e["name"] == name && e["event"] == "http").collect();
        let is_poll = |e: &&&Value| e["url"].as_str().is_some_and(|u| u.contains("transport=polling"));
        let polls: Vec<&&Value> = http.iter().filter(is_poll).collect();
        let handshake =
            |e: &&&Value| e["method"] == "GET" && !e["url"].as_str().unwrap_or("").contains("sid=");
        assert_eq!(polls.iter().filter(|e| handshake(e)).count(), 1, "{name}: {http:?}");
        let binary = |e: &&&Value, m: &str, field: &str| {
            e["method"] == m && e["status"] == 200 && e[field] == "application/octet-stream"
        };
        assert!(polls.iter().any(|e| binary(e, "GET", "responseType")), "{name}: binary answers: {http:?}");
        if version == "1.2.1" {
            assert!(polls.iter().any(|e| binary(e, "POST", "requestType")), "{name}: binary POSTs: {http:?}");
        }
        assert!(polls.iter().any(|e| e["method"] == "POST" && e["status"] == 200), "{name}: {http:?}");
        assert!(http.iter().all(|e| e["status"].as_u64().is_some_and(|st| st < 400)), "{name}: {http:?}");
        let bad = ["page_error", "console_error", "connect_error", "reconnect"];
        let errors: Vec<&Value> = browser
            .seen()
            .filter(|e| e["name"] == name && bad.contains(&e["event"].as_str().unwrap_or("")))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    // The messages are stored.
    assert_eq!(s.count_rows("SELECT COUNT(*) AS n FROM messages"), 5);
}
