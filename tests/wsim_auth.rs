//! `[wsim] auth` (an extension): with tokens, nobody logs in as somebody else or reads, joins or edits
//! a group that is not theirs; over real sockets, on SQLite and MariaDB, in token and callback modes.

mod common;

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{fields, Backend, TestServer, Ws};

on_both_backends!(tokens_bind_logins_and_the_group_api_to_their_user, a_callback_checks_tokens);

const CONFIG: &str =
    "[wsim]\nauth = \"token\"\nadmin_token = \"root-token\"\n[limits]\nuploads_per_min = 1\n";

async fn token_of(s: &TestServer, user: &str) -> String {
    let v = s.get_json(&format!("/inner/wsim_token?userid={user}")).await;
    assert_eq!(v["code"], 1, "{v}");
    assert_eq!(v["data"]["userid"], user);
    v["data"]["token"].as_str().expect("token").to_string()
}

/// `login_<arg>` refused: `error_401_…`, then the socket closes.
async fn refused(s: &TestServer, arg: &str, why: &str) {
    let mut ws = s.ws("/entry").await;
    ws.send(&format!("login_{arg}"));
    assert_eq!(ws.recv().await, format!("error_401_{why}"), "login_{arg}");
    assert!(ws.expect_closed(Duration::from_secs(5)).await.is_some(), "closed after login_{arg}");
}

async fn logged_in(s: &TestServer, user: &str, token: &str) -> Ws {
    let mut ws = s.ws("/entry").await;
    ws.send(&format!("login_{user}_{token}"));
    assert_eq!(ws.recv().await, "ok");
    ws
}

async fn tokens_bind_logins_and_the_group_api_to_their_user(b: Backend) {
    let s = TestServer::start_with_config(&b, CONFIG);
    let (ta, tb, tc) = (token_of(&s, "alice").await, token_of(&s, "bob").await, token_of(&s, "carol").await);

    // /entry: no token, another user's token, a forged one.
    // carol's token with its last hex digit changed.
    let last = if tc.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &tc[..tc.len() - 1]);
    refused(&s, "carol", "token required").await;
    refused(&s, &format!("carol_{tb}"), "invalid token").await;
    refused(&s, &format!("carol_{forged}"), "invalid token").await;
    let alice = logged_in(&s, "alice", &ta).await;
    let mut bob = logged_in(&s, "bob", &tb).await;
    alice.send("text_bob_hello_unicast_e");
    assert_eq!(fields(&bob.recv().await).2, "hello");
    // A message waits for carol: nobody else's token gets it out of her mailbox.
    bob.send("text_carol_for carol only_unicast_e");
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused(&s, &format!("carol_{tb}"), "invalid token").await;
    let mut carol = logged_in(&s, "carol", &tc).await;
    assert_eq!(fields(&carol.recv().await).2, "for carol only");

    // The group API: (query, expected code).
    let v = s.get_json("/creategrp?creator=alice&members=bob").await;
    assert_eq!(v["code"], -3, "no token: {v}");
    let v = s.get_json(&format!("/creategrp?creator=alice&members=bob&token={tb}")).await;
    assert_eq!(v["code"], -3, "bob's token does not create alice's group: {v}");
    let v = s.get_json(&format!("/creategrp?creator=alice&members=bob&name=g&token={ta}")).await;
    assert_eq!(v["code"], 1, "{v}");
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let table: Vec<(String, i64)> = vec![
        (format!("/grpinfo?groupid={gid}"), -3),
        (format!("/grpinfo?groupid={gid}&token={tc}"), -3),
        (format!("/grpinfo?groupid={gid}&token={tb}"), 1),
        (format!("/addmembers?groupid={gid}&members=carol&token={tc}"), -3),
        (format!("/editgrp?groupid={gid}&name=mine&token={tb}"), -3),
        (format!("/editgrp?groupid={gid}&name=ours&token={ta}"), 1),
        (format!("/querymygrps?userid=alice&token={tb}"), -3),
        (format!("/querymygrps?userid=bob&token={tb}"), 1),
        (format!("/setuserinfo?userid=bob&nickname=evil&token={ta}"), -3),
        (format!("/setuserinfo?userid=bob&nickname=Bob&token={tb}"), 1),
        (format!("/grpinfo?groupid={gid}&uid=alice&token={tb}"), -3),
        (format!("/refreshgrp?groupid={gid}&token={tc}"), -3),
        // The admin token does what the creator does.
        (format!("/addmembers?groupid={gid}&members=carol&token=root-token"), 1),
        (format!("/grpinfo?groupid={gid}&token={tc}"), 1),
        // A member removes only itself; the creator anyone.
        (format!("/delmembers?groupid={gid}&members=bob&token={tc}"), -3),
        (format!("/delmembers?groupid={gid}&members=carol&token={tc}"), 1),
        (format!("/delmembers?groupid={gid}&members=bob&token={ta}"), 1),
    ];
    for (q, code) in table {
        let v = s.get_json(&q).await;
        assert_eq!(v["code"], code, "{q}: {v}");
    }
    let v = s.get_json(&format!("/grpinfo?groupid={gid}&token={ta}")).await;
    assert_eq!(v["data"]["name"], "ours");
    assert_eq!(v["data"]["members"].as_array().map(Vec::len), Some(1), "{v}");
    // members_ and records_ of a group: members only.
    carol.send(&format!("members_{gid}"));
    assert_eq!(carol.recv().await, "error_403_not a member");

    // Uploads need a token too (checked before the file is read).
    let png = b"\x89PNG\r\n\x1a\n".to_vec();
    let (_, v) = s.upload("/upload/writev2", "file", "a.png", &png).await;
    assert_eq!(v["code"], 4, "{v}");
    let (_, v) = s.upload(&format!("/upload/writev2?token={forged}"), "file", "a.png", &png).await;
    assert_eq!(v["code"], 4, "{v}");
    let (_, v) = s.upload(&format!("/upload/writev2?token={tc}"), "file", "a.png", &png).await;
    assert_ne!(v["code"], 4, "authenticated (the file itself is refused as cut short): {v}");
    // Per user too (a burst of three minutes' worth at one a minute), even from an exempt address
    // (loopback: a reverse proxy): carol's fourth upload is refused, bob's first is not.
    for expected_refused in [false, false, true] {
        let (_, v) = s.upload(&format!("/upload/writev2?token={tc}"), "file", "a.png", &png).await;
        assert_eq!(v["code"] == 5, expected_refused, "{v}");
    }
    let (_, v) = s.upload(&format!("/upload/writev2?token={tb}"), "file", "a.png", &png).await;
    assert_ne!(v["code"], 5, "{v}");
}

/// The business system's token check: a token is good for `u` when it is `ok-<u>`.
fn start_checker() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(|| {
        App::new().route(
            "/check",
            web::get().to(|q: web::Query<std::collections::HashMap<String, String>>| async move {
                let ok = match (q.get("userid"), q.get("token")) {
                    (Some(u), Some(t)) => *t == format!("ok-{u}"),
                    _ => false,
                };
                HttpResponse::Ok().json(serde_json::json!({"success": ok}))
            }),
        )
    })
    .listen(listener)
    .expect("listen")
    .workers(1)
    .run();
    actix_rt::spawn(server);
    format!("http://{addr}/check")
}

async fn a_callback_checks_tokens(b: Backend) {
    let url = start_checker();
    let s = TestServer::start_with_config(
        &b,
        &format!("[wsim]\nauth = \"callback\"\nauth_callback = \"{url}\"\n"),
    );
    refused(&s, "dave_ok-eve", "invalid token").await;
    refused(&s, "dave", "token required").await;
    let mut dave = logged_in(&s, "dave", "ok-dave").await;
    let eve = logged_in(&s, "eve", "ok-eve").await;
    eve.send("text_dave_checked by the business_unicast_e");
    assert_eq!(fields(&dave.recv().await).2, "checked by the business");
    // The group API names the acting user with uid= (or the user the call is about).
    let v = s.get_json("/creategrp?creator=dave&members=eve&token=ok-dave").await;
    assert_eq!(v["code"], 1, "{v}");
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let v = s.get_json(&format!("/editgrp?groupid={gid}&name=x&uid=eve&token=ok-eve")).await;
    assert_eq!(v["code"], -3, "eve is not the creator: {v}");
    let v = s.get_json(&format!("/editgrp?groupid={gid}&name=x&uid=dave&token=ok-eve")).await;
    assert_eq!(v["code"], -3, "eve's token is not dave's: {v}");
    let v = s.get_json(&format!("/editgrp?groupid={gid}&name=x&uid=dave&token=ok-dave")).await;
    assert_eq!(v["code"], 1, "{v}");
    // Tokens are not issued here in this mode.
    let v = s.get_json("/inner/wsim_token?userid=dave").await;
    assert_eq!(v["code"], -3, "{v}");
}
