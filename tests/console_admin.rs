//! The console's administration calls (`/console/api/*`) over real HTTP, on SQLite and MariaDB: the
//! admin token is required when configured (401 without it or with a wrong one), loopback is enough
//! when it is not; with it, the group API acts as the admin even where `[wsim] auth` refuses the
//! caller; the server state carries the metrics, longweb's apps and the Gru nodes.

mod common;

use common::{Backend, TestServer};
use serde_json::Value;

on_both_backends!(the_admin_token_guards_every_administration_call, loopback_administers_without_a_token);

const TOKEN: &str = "adm-7f3e9b";

/// `GET`/`POST` an administration call with `token` (if any): the status and the JSON body.
async fn call(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> (u16, Value) {
    let client = awc::Client::default();
    let mut req = match form {
        Some(_) => client.post(s.url(path)),
        None => client.get(s.url(path)),
    };
    if let Some(t) = token {
        req = req.insert_header(("X-Admin-Token", t));
    }
    let mut res = match form {
        Some(f) => req.send_form(&f).await,
        None => req.send().await,
    }
    .expect("request");
    let body = res.body().await.expect("body");
    let v = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("JSON from {path}: {body:?}"));
    (res.status().as_u16(), v)
}

async fn the_admin_token_guards_every_administration_call(b: Backend) {
    let config = format!(
        "[console]\nadmin_token = \"{TOKEN}\"\n[wsim]\nauth = \"token\"\n\
         [[longweb.apps]]\nappid = \"shop\"\nname = \"商城\"\n"
    );
    let s = TestServer::start_with_config(&b, &config);
    // Every administration call is refused without the token or with a wrong one, from loopback too.
    for path in ["/console/api/admin", "/console/api/server", "/console/api/wsim/grpinfo?groupid=1"] {
        for (token, why) in [(None, "admin token required"), (Some("adm-7f3e9"), "wrong admin token")] {
            let (status, v) = call(&s, path, token, None).await;
            assert_eq!((status, v["message"].as_str()), (401, Some(why)), "{path} with {token:?}: {v}");
        }
    }
    let (status, _) =
        call(&s, "/console/api/wsim/creategrp", Some("wrong"), Some(&[("creator", "alice")])).await;
    assert_eq!(status, 401);
    assert_eq!(s.count_rows("SELECT COUNT(*) AS n FROM conversations"), 0, "a refused call created nothing");

    let (status, v) = call(&s, "/console/api/admin", Some(TOKEN), None).await;
    assert_eq!((status, v["token"].as_bool()), (200, Some(true)), "{v}");

    // The plain group API refuses a caller without a user token; the console's admin may act.
    let refused = s.get_json("/creategrp?creator=alice&members=bob").await;
    assert_eq!(refused["code"], -3, "{refused}");
    let form = [("creator", "alice"), ("members", "bob,carol"), ("name", "周末 ⛰"), ("notice", "十点集合")];
    let (status, v) = call(&s, "/console/api/wsim/creategrp", Some(TOKEN), Some(&form)).await;
    assert_eq!((status, v["code"].as_i64()), (200, Some(1)), "{v}");
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    assert_eq!(v["data"]["members"], serde_json::json!(["alice", "bob", "carol"]));
    // Members out (only the creator may, with auth on), an edit, a profile, the group read back.
    let (_, v) = call(
        &s,
        "/console/api/wsim/delmembers",
        Some(TOKEN),
        Some(&[("groupid", &gid), ("members", "carol")]),
    )
    .await;
    assert_eq!(v["code"], 1, "{v}");
    let (_, v) = call(
        &s,
        "/console/api/wsim/editgrp",
        Some(TOKEN),
        Some(&[("groupid", &gid), ("notice", "改到十一点")]),
    )
    .await;
    assert_eq!(v["code"], 1, "{v}");
    let (_, v) = call(
        &s,
        "/console/api/wsim/setuserinfo",
        Some(TOKEN),
        Some(&[("userid", "bob"), ("nickname", "鲍勃 🐝")]),
    )
    .await;
    assert_eq!(v["data"]["nickname"], "鲍勃 🐝", "{v}");
    let (_, v) = call(&s, &format!("/console/api/wsim/grpinfo?groupid={gid}"), Some(TOKEN), None).await;
    assert_eq!(v["data"]["notice"], "改到十一点", "{v}");
    assert_eq!(v["data"]["name"], "周末 ⛰");
    let members: Vec<(&str, &str)> = v["data"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["userid"].as_str().unwrap_or(""), m["nickname"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(members, [("alice", "alice"), ("bob", "鲍勃 🐝")]);
    let (status, v) = call(&s, "/console/api/wsim/nosuchcall", Some(TOKEN), None).await;
    assert_eq!(status, 404, "{v}");

    // The server's state: a live /entry connection shows in the metrics.
    let token = s.get_json("/inner/wsim_token?userid=alice").await["data"]["token"]
        .as_str()
        .expect("user token")
        .to_string();
    let mut alice = s.ws("/entry").await;
    alice.send(&format!("login_alice_{token}"));
    assert_eq!(alice.recv().await, "ok");
    let (status, v) = call(&s, "/console/api/server", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
    let open = v["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["name"] == "wsim_connections_open" && m["labels"]["frontend"] == "wsim")
        .unwrap_or_else(|| panic!("no wsim connections in {v}"));
    assert_eq!(open["value"], 1.0);
    assert!(
        v["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .all(|m| !m["name"].as_str().unwrap_or("").ends_with("_bucket")),
        "histogram buckets are left out"
    );
    assert_eq!(v["longweb"]["Apps"]["shop"]["Name"], "商城", "{v}");
    assert_eq!(v["longweb"]["Apps"]["shop"]["WebSocket"]["WithoutToken"], 0);
    assert_eq!(v["gru_nodes"][0]["addr"], s.base.as_str(), "{v}");
    assert!(v["cluster"].is_null());
    assert!(v["time_ms"].as_i64().is_some_and(|t| t > 1_700_000_000_000));
}

async fn loopback_administers_without_a_token(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let (status, v) = call(&s, "/console/api/admin", None, None).await;
    assert_eq!((status, v["token"].as_bool()), (200, Some(false)), "{v}");
    let (_, v) = call(&s, "/console/api/wsim/creategrp", None, Some(&[("creator", "alice")])).await;
    assert_eq!(v["code"], 1, "{v}");
    let (status, _) = call(&s, "/console/api/server", None, None).await;
    assert_eq!(status, 200);
}
