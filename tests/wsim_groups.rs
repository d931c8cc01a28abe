//! The wsim group HTTP API, health and process behaviour, over real HTTP on SQLite and MariaDB.

mod common;

use common::{Backend, TestServer};
use serde_json::json;

on_both_backends!(
    creategrp_answers_as_documented,
    membership_endpoints_and_their_errors,
    editgrp_querymygrps_grpinfo_refreshgrp,
    setuserinfo_shows_in_member_objects,
    post_forms_and_the_wsim_prefix,
    ok_code_zero_for_android_clients,
    chinese_and_emoji_round_trip,
    healthz_reports_ok,
    concurrent_creations_on_a_fresh_database_all_succeed,
);

async fn creategrp_answers_as_documented(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v =
        s.get_json("/creategrp?creator=1000001653&members=1000001653,1000006331,1000006123&name=g1").await;
    assert_eq!(v["code"], 1);
    assert_eq!(v["message"], "OK");
    let d = &v["data"];
    let gid = d["groupid"].as_str().expect("groupid string");
    assert!(gid.parse::<u64>().is_ok(), "decimal group id: {gid}");
    assert_eq!(d["creator"], "1000001653");
    assert_eq!(d["name"], "g1");
    assert_eq!(d["notice"], "");
    assert!(d["snap"].as_str().expect("snap").starts_with("http"));
    assert_eq!(d["members"], json!(["1000001653", "1000006331", "1000006123"]));
    // The creator is always a member, first; duplicates and empty entries are dropped.
    let v = s.get_json("/creategrp?creator=7&members=8,,8,%209&name=g2").await;
    assert_eq!(v["data"]["members"], json!(["7", "8", "9"]));
    let second = v["data"]["groupid"].as_str().expect("id").parse::<u64>().expect("num");
    assert_eq!(second, gid.parse::<u64>().expect("num") + 1, "ids come from a counter");
    // No members at all: just the creator.
    let v = s.get_json("/creategrp?creator=7&name=solo").await;
    assert_eq!(v["data"]["members"], json!(["7"]));
    // Errors.
    for q in ["/creategrp", "/creategrp?members=1,2", "/creategrp?creator=", "/creategrp?creator=a%0Ab"] {
        let v = s.get_json(q).await;
        assert_eq!(v["code"], -1, "{q}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let too_many: Vec<String> = (0..2001).map(|i| i.to_string()).collect();
    let v = s.get_json(&format!("/creategrp?creator=1&members={}", too_many.join(","))).await;
    assert_eq!(v["code"], -1);
}

async fn membership_endpoints_and_their_errors(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=1&members=2&name=g").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let v = s.get_json(&format!("/addmembers?groupid={gid}&members=50,60,70,40")).await;
    assert_eq!(v, json!({"code": 1, "message": "OK"}));
    let v = s.get_json(&format!("/grpinfo?groupid={gid}")).await;
    let ids: Vec<&str> = v["data"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["userid"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["1", "2", "50", "60", "70", "40"]);
    // Adding existing members is harmless.
    let v = s.get_json(&format!("/addmembers?groupid={gid}&members=50,2")).await;
    assert_eq!(v["code"], 1);
    let v = s.get_json(&format!("/delmembers?groupid={gid}&members=50,60")).await;
    assert_eq!(v, json!({"code": 1, "message": "OK"}));
    let v = s.get_json(&format!("/grpinfo?groupid={gid}")).await;
    assert_eq!(v["data"]["members"].as_array().expect("members").len(), 4);
    // Errors: missing arguments, unknown group, removing the creator.
    for (q, code) in [
        ("/addmembers?members=5".to_string(), -1),
        (format!("/addmembers?groupid={gid}"), -1),
        ("/addmembers?groupid=999999&members=5".to_string(), -2),
        ("/delmembers?groupid=999999&members=5".to_string(), -2),
        (format!("/delmembers?groupid={gid}&members="), -1),
        (format!("/delmembers?groupid={gid}&members=1"), -3),
        ("/grpinfo?groupid=999999".to_string(), -2),
        ("/grpinfo".to_string(), -1),
        ("/querymygrps".to_string(), -1),
        // An id with whitespace around it is not the id without it.
        ("/querymygrps?userid=1%20".to_string(), -1),
        (format!("/grpinfo?groupid=%20{gid}"), -1),
        ("/setuserinfo?userid=1%20&nickname=not1".to_string(), -1),
    ] {
        let v = s.get_json(&q).await;
        assert_eq!(v["code"], code, "{q}: {v}");
        assert!(v.get("data").is_none(), "{q}: errors carry no data");
    }
}

async fn editgrp_querymygrps_grpinfo_refreshgrp(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let g1 = s.get_json("/creategrp?creator=100&members=200&name=first").await["data"]["groupid"]
        .as_str()
        .expect("gid")
        .to_string();
    let g2 = s.get_json("/creategrp?creator=300&members=100&name=second").await["data"]["groupid"]
        .as_str()
        .expect("gid")
        .to_string();
    let v = s.get_json(&format!("/editgrp?groupid={g1}&notice=hello&name=renamed")).await;
    assert_eq!(v, json!({"code": 1, "message": "OK"}));
    let v = s.get_json(&format!("/editgrp?groupid={g1}&notice=only%20notice")).await;
    assert_eq!(v["code"], 1);
    let v = s.get_json(&format!("/editgrp?groupid={g1}")).await;
    assert_eq!(v["code"], -1);
    let v = s.get_json("/editgrp?groupid=999999&name=x").await;
    assert_eq!(v["code"], -2);

    let v = s.get_json("/querymygrps?userid=100").await;
    assert_eq!(v["code"], 1);
    let groups = v["data"].as_array().expect("array");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["groupid"], g1.as_str());
    assert_eq!(groups[0]["name"], "renamed");
    assert_eq!(groups[0]["notice"], "only notice");
    assert_eq!(groups[0]["creator"], "100");
    assert_eq!(groups[1]["groupid"], g2.as_str());
    let m = &groups[0]["members"][0];
    assert_eq!(m["userid"], "100");
    assert_eq!(m["nickname"], "100", "nickname defaults to the id");
    assert!(m["snap"].as_str().expect("avatar").starts_with("http"));
    // A user in no group gets [] (not null).
    let v = s.get_json("/querymygrps?userid=nobody").await;
    assert_eq!(v["data"], json!([]));

    let v = s.get_json(&format!("/grpinfo?groupid={g2}")).await;
    assert_eq!(v["data"]["groupid"], g2.as_str());
    assert_eq!(v["data"]["members"].as_array().expect("members").len(), 2);
    let v = s.get_json(&format!("/refreshgrp?groupid={g2}")).await;
    assert_eq!(v["code"], 1);
    assert_eq!(v["data"]["groupid"], g2.as_str());
    let v = s.get_json("/refreshgrp?groupid=999999").await;
    assert_eq!(v["code"], -2);
}

async fn setuserinfo_shows_in_member_objects(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/setuserinfo?userid=42&nickname=Ann&snap=http://cdn/a.jpg").await;
    assert_eq!(v["code"], 1);
    assert_eq!(v["data"], json!({"userid": "42", "nickname": "Ann", "snap": "http://cdn/a.jpg"}));
    // Only the given field changes.
    let v = s.get_json("/setuserinfo?userid=42&nickname=Annie").await;
    assert_eq!(v["data"]["snap"], "http://cdn/a.jpg");
    let gid = s.get_json("/creategrp?creator=42&members=43").await["data"]["groupid"]
        .as_str()
        .expect("gid")
        .to_string();
    let v = s.get_json(&format!("/grpinfo?groupid={gid}")).await;
    assert_eq!(
        v["data"]["members"][0],
        json!({"userid": "42", "nickname": "Annie", "snap": "http://cdn/a.jpg"})
    );
    assert_eq!(v["data"]["members"][1]["nickname"], "43");
    let v = s.get_json("/setuserinfo?nickname=x").await;
    assert_eq!(v["code"], -1);
}

async fn post_forms_and_the_wsim_prefix(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s
        .post_form(
            "/wsim/creategrp",
            &[("creator", "9"), ("members", "10,11"), ("name", "posted"), ("app_version", "3.1")],
        )
        .await;
    assert_eq!(v["code"], 1, "{v}");
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let v = s.post_form("/addmembers", &[("groupid", &gid), ("members", "12")]).await;
    assert_eq!(v["code"], 1);
    let v = s.get_json(&format!("/wsim/grpinfo?groupid={gid}")).await;
    assert_eq!(v["data"]["members"].as_array().expect("members").len(), 4);
    let v = s.post_form("/wsim/querymygrps", &[("userid", "12")]).await;
    assert_eq!(v["data"][0]["groupid"], gid.as_str());
    // The WebSocket is there under /wsim/ too.
    let mut ws = s.ws("/wsim/entry").await;
    ws.send("login_9");
    assert_eq!(ws.recv().await, "ok");
}

async fn ok_code_zero_for_android_clients(b: Backend) {
    let s = TestServer::start(&b, &["--ok-code", "0"]);
    let v = s.get_json("/creategrp?creator=1&members=2").await;
    assert_eq!(v["code"], 0);
    let v = s.get_json("/grpinfo?groupid=999999").await;
    assert_eq!(v["code"], -2, "errors stay negative");
}

async fn chinese_and_emoji_round_trip(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v =
        s.post_form("/creategrp", &[("creator", "张三"), ("members", "李四,😀"), ("name", "我的群🎉")]).await;
    assert_eq!(v["data"]["name"], "我的群🎉");
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let v = s.post_form("/editgrp", &[("groupid", &gid), ("notice", "公告：明天开会 🚀")]).await;
    assert_eq!(v["code"], 1);
    let v = s.post_form("/setuserinfo", &[("userid", "李四"), ("nickname", "段思琪")]).await;
    assert_eq!(v["code"], 1);
    let v = s.post_form("/querymygrps", &[("userid", "😀")]).await;
    let g = &v["data"][0];
    assert_eq!(g["name"], "我的群🎉");
    assert_eq!(g["notice"], "公告：明天开会 🚀");
    assert_eq!(g["creator"], "张三");
    assert_eq!(g["members"][1]["nickname"], "段思琪");
    // Messages too, live and from the store.
    let mut li = s.login("李四").await;
    let zhang = s.login("张三").await;
    zhang.send(&format!("text_{gid}_你好，世界 🌏_group_5pys"));
    assert!(li.recv().await.starts_with(&format!("text_张三_你好，世界 🌏_group_{gid}_")));
    zhang.send("text_😀_离线消息 🙂_unicast_e");
    s.wait_rows("SELECT COUNT(*) AS n FROM messages", 2).await;
    let mut smile = s.login("😀").await;
    let mut got = vec![smile.recv().await, smile.recv().await];
    got.sort();
    assert!(got.iter().any(|f| f.starts_with("text_张三_离线消息 🙂_unicast_张三_")), "{got:?}");
    assert!(got.iter().any(|f| f.starts_with("text_张三_你好，世界 🌏_group_")), "{got:?}");
}

async fn healthz_reports_ok(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let client = awc::Client::default();
    let res = client.get(s.url("/healthz")).send().await.expect("GET /healthz");
    assert_eq!(res.status().as_u16(), 200);
}

#[test]
fn help_documents_every_flag() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_wsim")).arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--database-url",
        "--data-dir",
        "--public-url",
        "--node-id",
        "--heartbeat-interval",
        "--client-timeout",
        "--ok-code",
        "--config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_bad_database_url_fails_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsim"))
        .args(["--listen", "127.0.0.1:0", "--database-url", "postgres://nope"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database url"));
}

/// With its database gone, the server says so on /healthz, answers API calls with -5 and keeps serving.
#[actix_rt::test]
async fn healthz_reports_a_lost_database() {
    let Some(b) = Backend::mysql() else { return };
    let s = TestServer::start(&b, &[]);
    let client = awc::Client::default();
    let res = client.get(s.url("/healthz")).send().await.expect("GET /healthz");
    assert_eq!(res.status().as_u16(), 200);
    s.drop_mysql_database();
    // A background probe keeps the state: /healthz says so within a second.
    let lost = std::time::Instant::now();
    let says_503 = || async {
        let res = awc::Client::default().get(s.url("/healthz")).send().await.expect("GET /healthz");
        res.status().as_u16() == 503
    };
    assert!(common::eventually(std::time::Duration::from_millis(1500), says_503).await);
    assert!(lost.elapsed() < std::time::Duration::from_millis(1500), "{:?}", lost.elapsed());
    let v = s.get_json("/querymygrps?userid=1").await;
    assert_eq!(v["code"], -5);
    let mut ws = s.login("still").await;
    ws.send("members_10");
    assert_eq!(ws.recv().await, "error_500_internal error");
}

/// Twenty groups created at once on a fresh database (the first ones race for the id counter; InnoDB
/// rolls some back as deadlock victims, which are run again): every one succeeds, each its own id.
async fn concurrent_creations_on_a_fresh_database_all_succeed(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let paths: Vec<String> = (0..20).map(|i| format!("/creategrp?creator=c{i}&members=m{i}")).collect();
    let answers = futures_util::future::join_all(paths.iter().map(|p| s.get_json(p))).await;
    let mut ids: Vec<String> = answers
        .iter()
        .map(|v| v["data"]["groupid"].as_str().unwrap_or_else(|| panic!("{v}")).to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
}
