//! Several nodes as one service, on Redis and one MariaDB database: real processes, the machine's
//! Redis (a key prefix of their own), a database of their own.

mod common;

use std::time::Duration;

use common::{eventually, fields, TestCluster, TestRedis, TestServer};

/// Waits until each of `nodes` sees `n` live nodes (their heartbeats have gone round).
async fn all_see(nodes: &[TestServer], n: usize) {
    for node in nodes {
        let sees = || async {
            let v = node.get_json("/ticket?userType=1&userName=a&userId=1").await;
            1 + v["data"]["backupNodes"].as_array().map_or(0, |b| b.len()) == n
        };
        assert!(eventually(Duration::from_secs(10), sees).await, "{} does not see {n} nodes", node.base);
    }
}

#[actix_rt::test]
async fn wsim_messages_reach_users_on_other_nodes() {
    let Some(c) = TestCluster::start(3, "") else { return };
    all_see(&c.nodes, 3).await;
    let (a, b, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let v = a.get_json("/creategrp?creator=alice&members=bob,carol").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let alice = a.login("alice").await;
    let mut bob = b.login("bob").await;
    let mut carol = n3.login("carol").await;
    let mut alice_too = n3.login("alice").await;
    // Presence travels with the heartbeat-free SADD, but give the logins a moment to land.
    tokio::time::sleep(Duration::from_millis(300)).await;

    alice.send("text_bob_hello from node 1_unicast_e");
    let (kind, from, payload, ty, _, _, _) = fields(&bob.recv().await);
    assert_eq!(
        (kind.as_str(), from.as_str(), payload.as_str(), ty.as_str()),
        ("text", "alice", "hello from node 1", "unicast")
    );
    // The sender's other device, on another node, gets its copy.
    assert!(alice_too.recv().await.starts_with("text_alice_hello from node 1_unicast_bob_"));

    alice.send(&format!("text_{gid}_hi all_group_e"));
    for ws in [&mut bob, &mut carol, &mut alice_too] {
        let f = ws.recv().await;
        assert!(f.starts_with(&format!("text_alice_hi all_group_{gid}_")), "{f}");
    }
    // And back, from node 2 to node 1.
    let mut alice = alice;
    bob.send("text_alice_and back_unicast_e");
    assert!(alice.recv().await.starts_with("text_bob_and back_unicast_bob_"));
    bob.expect_silence(Duration::from_millis(300)).await;
    carol.expect_silence(Duration::from_millis(100)).await;

    // online_ sees the members on every node; one who leaves node 3 is gone from it.
    alice.send(&format!("online_{gid}"));
    assert_eq!(alice.recv().await, format!("online_{gid}_alice,bob,carol"));
    carol.close().await;
    let want = format!("online_{gid}_alice,bob");
    assert_eq!(
        alice.ask_until(&format!("online_{gid}"), &want).await,
        want,
        "carol, gone from node 3, is still online"
    );
}

#[actix_rt::test]
async fn ticket_hands_out_live_nodes_and_a_dead_node_goes() {
    let Some(mut c) = TestCluster::start(3, "") else { return };
    all_see(&c.nodes, 3).await;
    let v = c.nodes[0].get_json("/ticket?userType=1&userName=a&userId=42").await;
    let mut addrs: Vec<String> = vec![v["data"]["addr"].as_str().expect("addr").to_string()];
    for b in v["data"]["backupNodes"].as_array().expect("backups") {
        addrs.push(b["addr"].as_str().expect("addr").to_string());
    }
    addrs.sort();
    let mut want: Vec<String> = c.nodes.iter().map(|n| n.base.clone()).collect();
    want.sort();
    assert_eq!(addrs, want, "every live node, at its public URL");
    // Every node picks the same node for a user.
    for n in &c.nodes[1..] {
        let w = n.get_json("/ticket?userType=1&userName=a&userId=42").await;
        assert_eq!(w["data"]["addr"], v["data"]["addr"]);
    }
    // A node killed outright leaves the list within its TTL (3 s here).
    c.nodes[2].kill();
    all_see(&c.nodes[..2], 2).await;
    let v = c.nodes[0].get_json("/ticket?userType=1&userName=a&userId=42").await;
    let dead = c.nodes[2].base.clone();
    assert_ne!(v["data"]["addr"], dead.as_str());
    assert!(v["data"]["backupNodes"].as_array().expect("backups").iter().all(|b| b["addr"] != dead.as_str()));
}

#[actix_rt::test]
async fn a_node_id_in_use_or_a_cluster_on_sqlite_is_refused() {
    let Some(c) = TestCluster::start(1, "") else { return };
    let redis = common::redis_url();
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("wsim.toml");
    std::fs::write(&config, c.config("")).expect("config");
    let config = config.display().to_string();
    let (status, err) = TestServer::run_to_exit(
        &c.database_url,
        &["--redis-url", &redis, "--node-id", "1", "--config", &config],
    );
    assert!(!status.success());
    assert!(err.contains("node id 1 is in use by"), "{err}");
    let sqlite = format!("sqlite://{}", dir.path().join("x.db").display());
    let (status, err) = TestServer::run_to_exit(&sqlite, &["--redis-url", &redis, "--node-id", "2"]);
    assert!(!status.success());
    assert!(err.contains("SQLite serves a single node"), "{err}");
}

#[actix_rt::test]
async fn gateway_longweb_and_gru_messages_cross_nodes() {
    use serde_json::{json, Value};
    let longweb = "[longweb]\nallowips = [\"127.0.0.1\"]\n[[longweb.apps]]\nappid = \"900\"\nname = \"x\"\ntimeout = 5\n";
    let Some(c) = TestCluster::start(3, longweb) else { return };
    all_see(&c.nodes, 3).await;
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);

    // Gateway: a conversation; alice sends on node 1, bob's notify is on node 2.
    let conv = n1.create_conversation(1, &["alice", "bob"]).await;
    let (alice, bob) = (n1.gateway_token("alice", 1).await, n2.gateway_token("bob", 1).await);
    let mut bob_ws = n2.ws(&format!("/notify?token={bob}&protoc=ws")).await;
    n2.wait_metric("wsim_connections_open{frontend=\"gateway\"}", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = n1
        .post_json(
            "/send_msg",
            json!({"conversation_id": conv, "type": 1, "content": "跨节点"}),
            Some(&alice),
        )
        .await;
    assert_eq!(v["code"], 0, "{v}");
    let m: Value = serde_json::from_str(&bob_ws.recv().await).expect("MsgData");
    assert_eq!((m["Content"].as_str(), m["FromSession"].as_str()), (Some("跨节点"), Some("alice")));

    // longweb: sockets on nodes 2 and 3 in group g; the business app posts to node 1.
    let mut s2 = n2.ws("/ws/onsocket?appid=900&groupid=g&userid=u2").await;
    let mut s3 = n3.ws("/ws/onsocket?appid=900&groupid=g&userid=u3").await;
    n3.wait_metric("wsim_connections_open{frontend=\"longweb\"}", 1.0).await;
    n2.wait_metric("wsim_connections_open{frontend=\"longweb\"}", 1.0).await;
    let push = json!({"AppID": "900", "GroupID": "g", "ToAppID": "900", "ToGroupID": "g", "ToUserID": "", "MessageLevel": "0", "Content": "to everyone"});
    assert_eq!(n1.post_json("/sendmessage", push, None).await["RetCode"], 0);
    assert_eq!(s2.recv().await, "to everyone");
    assert_eq!(s3.recv().await, "to everyone");

    // Gru: sockets of users 1 (node 1) and 2 (node 2) in group 9.
    let mut g1 = n1.gru_socket(1, 9).await;
    let mut g2 = n2.gru_socket(2, 9).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    g1.send(&format!("42{}", json!(["msg", {"type": 1, "target": {"id": 9}, "content": "room hello"}])));
    let got = |f: &str, what: &str| f.starts_with("42[\"msg\"") && f.contains(what);
    for ws in [&mut g1, &mut g2] {
        loop {
            let f = ws.recv().await;
            if got(&f, "room hello") {
                break;
            }
            assert!(f.starts_with("42[\"msg_result\""), "{f}");
        }
    }
    g2.send(&format!("42{}", json!(["msg", {"type": 0, "target": {"id": 1}, "content": "just you"}])));
    loop {
        let f = g1.recv().await;
        if got(&f, "just you") {
            break;
        }
    }
}

#[actix_rt::test]
async fn users_of_a_killed_node_get_everything_on_another_node_once_in_order() {
    let Some(mut c) = TestCluster::start(3, "") else { return };
    all_see(&c.nodes, 3).await;
    let v = c.nodes[0].get_json("/creategrp?creator=alice&members=bob").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let alice = c.nodes[0].login("alice").await;
    let mut bob = c.nodes[2].login("bob").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send("text_bob_before_unicast_e");
    assert!(bob.recv().await.starts_with("text_alice_before_unicast_"));
    // Let bob's copy be confirmed and its watermark written (every 2 s) before the crash.
    c.nodes[0]
        .wait_rows("SELECT COUNT(*) AS n FROM conv_members WHERE user_id = 'bob' AND delivered_upto > 0", 1)
        .await;
    c.nodes[2].kill();
    // While bob is gone: direct and group messages.
    for i in 0..5 {
        alice.send(&format!("text_bob_d{i}_unicast_e"));
        alice.send(&format!("text_{gid}_g{i}_group_e"));
    }
    c.nodes[0].wait_rows("SELECT COUNT(*) AS n FROM messages", 11).await;
    // bob comes back on node 2: each message once, in order.
    let mut bob = c.nodes[1].login("bob").await;
    let mut got = Vec::new();
    for _ in 0..10 {
        let (_, from, payload, _, _, _, _) = fields(&bob.recv().await);
        assert_eq!(from, "alice");
        got.push(payload);
    }
    // Each conversation in its order (the two conversations interleave as the store numbered them).
    let of = |prefix: &str| got.iter().filter(|p| p.starts_with(prefix)).cloned().collect::<Vec<_>>();
    assert_eq!(of("d"), (0..5).map(|i| format!("d{i}")).collect::<Vec<_>>());
    assert_eq!(of("g"), (0..5).map(|i| format!("g{i}")).collect::<Vec<_>>());
    bob.expect_silence(Duration::from_millis(500)).await;
}

#[actix_rt::test]
async fn a_newer_notify_and_membership_changes_reach_every_node() {
    use serde_json::json;
    let Some(c) = TestCluster::start(2, "") else { return };
    all_see(&c.nodes, 2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);

    // Gateway: bob's notify on node 2, then a newer one (same platform) on node 1.
    let conv = n1.create_conversation(1, &["alice", "bob"]).await;
    let mut older = n2.ws(&format!("/notify?token={}&protoc=ws", n2.gateway_token("bob", 1).await)).await;
    n2.wait_metric("wsim_connections_open{frontend=\"gateway\"}", 1.0).await;
    let mut newer = n1.ws(&format!("/notify?token={}&protoc=ws", n1.gateway_token("bob", 1).await)).await;
    let reason = older.expect_closed(Duration::from_secs(5)).await;
    assert_eq!(reason.map(|r| u16::from(r.code)), Some(4001), "the older notify is replaced");
    n2.wait_metric("wsim_connections_open{frontend=\"gateway\"}", 0.0).await;
    let alice = n2.gateway_token("alice", 1).await;
    let v = n2
        .post_json("/send_msg", json!({"conversation_id": conv, "type": 1, "content": "new"}), Some(&alice))
        .await;
    assert_eq!(v["code"], 0, "{v}");
    let m: serde_json::Value = serde_json::from_str(&newer.recv().await).expect("MsgData");
    assert_eq!(m["Content"], "new");
    // Another platform is not replaced.
    let mut web = n2.ws(&format!("/notify?token={}&protoc=ws", n2.gateway_token("bob", 2).await)).await;
    n2.wait_metric("wsim_connections_open{frontend=\"gateway\"}", 1.0).await;
    let content =
        |f: String| serde_json::from_str::<serde_json::Value>(&f).expect("MsgData")["Content"].clone();
    assert_eq!(content(web.recv().await), "new", "a new notify gets what is not confirmed yet");
    let v = n2
        .post_json("/send_msg", json!({"conversation_id": conv, "type": 1, "content": "both"}), Some(&alice))
        .await;
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(content(newer.recv().await), "both", "still open");
    assert_eq!(content(web.recv().await), "both");

    // wsim: the group is live on node 2 (a message went through it) when frank, online there, is
    // added on node 1: the next message reaches her.
    let v = n1.get_json("/creategrp?creator=dave&members=erin").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let dave = n1.login("dave").await;
    let mut erin = n2.login("erin").await;
    let mut frank = n2.login("frank").await;
    dave.send(&format!("text_{gid}_before_group_e"));
    let f = erin.recv().await;
    assert!(f.contains("_before_group_"), "{f}");
    let v = n1.get_json(&format!("/addmembers?groupid={gid}&members=frank")).await;
    assert_eq!(v["code"], 1, "{v}");
    // The change travels as an event; the next message follows it on the same channel.
    dave.send(&format!("text_{gid}_after_group_e"));
    let f = frank.recv().await;
    assert!(f.starts_with(&format!("text_dave_after_group_{gid}_")), "{f}");
    assert!(erin.recv().await.contains("_after_group_"));
    // And frank, a member now, can send from node 2 to the group.
    frank.send(&format!("text_{gid}_from frank_group_e"));
    assert!(erin.recv().await.contains("_from frank_group_"));
}

#[actix_rt::test]
async fn delivery_resumes_after_redis_restarts_under_traffic_nothing_lost_or_doubled() {
    let Some(mut redis) = TestRedis::start() else { return };
    let Some(c) = TestCluster::start_on(&redis.url(), 2, "") else { return };
    all_see(&c.nodes, 2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let v = n1.get_json("/creategrp?creator=alice&members=bob").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let alice = n1.login("alice").await;
    let mut bob = n2.login("bob").await;
    alice.send("text_bob_warm_unicast_e");
    assert!(bob.recv().await.contains("_warm_"));

    let mut sent = Vec::new();
    for i in 0..60 {
        if i == 20 {
            redis.kill();
        }
        if i == 35 {
            redis.restart();
        }
        let (text, to) = if i % 3 == 0 { (format!("g{i}"), gid.as_str()) } else { (format!("d{i}"), "bob") };
        let kind = if to == "bob" { "unicast" } else { "group" };
        alice.send(&format!("text_{to}_{text}_{kind}_e"));
        sent.push(text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n1.wait_rows("SELECT COUNT(*) AS n FROM messages", 61).await;
    // bob, who never reconnected, gets every message once; each conversation in its order.
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match bob.next_event(Duration::from_secs(20)).await {
            Some(common::Event::Text(f)) => got.push(fields(&f).2),
            other => {
                let missing: Vec<&String> = sent.iter().filter(|t| !got.contains(t)).collect();
                panic!("after {} of {} messages: {other:?}; missing {missing:?}", got.len(), sent.len())
            }
        }
    }
    bob.expect_silence(Duration::from_millis(500)).await;
    let of = |list: &[String], p: &str| list.iter().filter(|t| t.starts_with(p)).cloned().collect::<Vec<_>>();
    assert_eq!(of(&got, "d"), of(&sent, "d"));
    assert_eq!(of(&got, "g"), of(&sent, "g"));
    assert!(n2.metric("wsim_cluster_catch_ups_total").await >= 1.0, "node 2 caught up from the store");
    // Live traffic flows through the restarted Redis again.
    alice.send("text_bob_later_unicast_e");
    assert!(bob.recv().await.contains("_later_"));
}

/// Asks a Gru socket's `online` for group 9; the list it answers.
async fn gru_online(ws: &mut common::Ws) -> serde_json::Value {
    ws.send(&format!("42{}", serde_json::json!(["online", 9])));
    loop {
        let f = ws.recv().await;
        if let Some(body) = f.strip_prefix("42") {
            let v: serde_json::Value = serde_json::from_str(body).expect("event");
            if v[0] == "online_result" {
                return v[1]["data"].clone();
            }
        }
    }
}

#[actix_rt::test]
async fn gru_online_lists_the_users_of_every_live_node() {
    use serde_json::{json, Value};
    let Some(mut c) = TestCluster::start(3, "") else { return };
    all_see(&c.nodes, 3).await;
    let mut g1 = c.nodes[0].gru_socket(11, 9).await;
    let _g2 = c.nodes[1].gru_socket(2, 9).await;
    let _g3 = c.nodes[2].gru_socket(3, 9).await;
    let _g2_too = c.nodes[2].gru_socket(2, 9).await;
    let want = json!([2, 3, 11]);
    let mut got = Value::Null;
    for _ in 0..50 {
        got = gru_online(&mut g1).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, want, "every node's users, each once, in numeric order");
    // Node 3 dies: its users go once the cluster sees it gone; user 2 is still on node 2.
    c.nodes[2].kill();
    all_see(&c.nodes[..2], 2).await;
    assert_eq!(gru_online(&mut g1).await, json!([2, 11]));
}

#[actix_rt::test]
async fn a_node_that_just_joined_gets_what_is_sent_to_its_users_before_the_others_know_it() {
    let Some(mut c) = TestCluster::start(2, "") else { return };
    all_see(&c.nodes, 2).await;
    let alice = c.nodes[0].login("alice").await;
    c.add_node(3, "");
    // bob is online on node 3 before nodes 1 and 2 have seen it (their heartbeats go every second).
    let mut bob = c.nodes[2].login("bob").await;
    alice.send("text_bob_at once_unicast_e");
    let f = bob.recv().await;
    assert!(f.starts_with("text_alice_at once_unicast_"), "{f}");
    bob.expect_silence(Duration::from_millis(1500)).await;
    // And live from then on.
    alice.send("text_bob_later_unicast_e");
    assert!(bob.recv().await.starts_with("text_alice_later_unicast_"));
}

#[actix_rt::test]
async fn group_messages_go_only_to_nodes_with_members_online() {
    const RECEIVED: &str = "wsim_cluster_received_total";
    let Some(c) = TestCluster::start(3, "") else { return };
    all_see(&c.nodes, 3).await;
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let v = n1.get_json("/creategrp?creator=alice&members=bob").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let alice = n1.login("alice").await;
    let mut bob = n2.login("bob").await;
    let carol = n3.login("carol").await;
    // Let the nodes' hellos (sync) go by before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (r2, r3) = (n2.metric(RECEIVED).await, n3.metric(RECEIVED).await);
    for i in 0..5 {
        alice.send(&format!("text_{gid}_m{i}_group_e"));
    }
    for i in 0..5 {
        assert!(bob.recv().await.contains(&format!("_m{i}_group_")));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(n2.metric(RECEIVED).await - r2, 5.0, "node 2 has a member online");
    assert_eq!(n3.metric(RECEIVED).await - r3, 0.0, "node 3 has none: nothing published to it");

    // carol, online on node 3, is added on node 1: the next message goes to node 3 too.
    let v = n1.get_json(&format!("/addmembers?groupid={gid}&members=carol")).await;
    assert_eq!(v["code"], 1, "{v}");
    let mut carol = carol;
    alice.send(&format!("text_{gid}_welcome_group_e"));
    let f = carol.recv().await;
    assert!(f.starts_with(&format!("text_alice_welcome_group_{gid}_")), "{f}");
    assert!(bob.recv().await.contains("_welcome_group_"));
    // carol leaves: node 3 has no member online again.
    carol.close().await;
    n3.wait_metric("wsim_connections_open{frontend=\"wsim\"}", 0.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r3 = n3.metric(RECEIVED).await;
    alice.send(&format!("text_{gid}_bye_group_e"));
    assert!(bob.recv().await.contains("_bye_group_"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(n3.metric(RECEIVED).await - r3, 0.0);

    // A group created while its members are online elsewhere reaches them at once.
    let mut dave = n3.login("dave").await;
    let v = n2.get_json("/creategrp?creator=bob&members=alice,dave").await;
    let gid2 = v["data"]["groupid"].as_str().expect("group id").to_string();
    alice.send(&format!("text_{gid2}_new group_group_e"));
    let f = dave.recv().await;
    assert!(f.starts_with(&format!("text_alice_new group_group_{gid2}_")), "{f}");
    assert!(bob.recv().await.contains("_new group_group_"));
}

#[actix_rt::test]
async fn room_messages_go_only_to_nodes_with_their_rooms_or_users() {
    use serde_json::json;
    const RECEIVED: &str = "wsim_cluster_received_total";
    let longweb = "[longweb]\nallowips = [\"127.0.0.1\"]\n[[longweb.apps]]\nappid = \"900\"\nname = \"x\"\ntimeout = 5\n";
    let Some(c) = TestCluster::start(3, longweb) else { return };
    all_see(&c.nodes, 3).await;
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    // u2 in room g on node 2, u3 in room h on node 3.
    let mut s2 = n2.ws("/ws/onsocket?appid=900&groupid=g&userid=u2").await;
    let mut s3 = n3.ws("/ws/onsocket?appid=900&groupid=h&userid=u3").await;
    c.wait_room_interest(2, "r\n900\ng", true).await;
    c.wait_room_interest(3, "u\n900\nu3", true).await;
    // Let the nodes' hellos (sync) go by before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = || async { (n2.metric(RECEIVED).await, n3.metric(RECEIVED).await) };
    let push = |group: &str, user: &str, content: &str| {
        json!({"AppID": "900", "GroupID": "x", "ToAppID": "900", "ToGroupID": group, "ToUserID": user,
               "MessageLevel": "0", "Content": content})
    };
    // (room, user, content, published to node 2, to node 3)
    let table = [
        ("g", "", "to room g", 1.0, 0.0),
        ("h", "", "to room h", 0.0, 1.0),
        ("", "u3", "to u3 anywhere", 0.0, 1.0),
        ("", "", "to every room", 1.0, 1.0),
        ("nobody", "", "to an empty room", 0.0, 0.0),
    ];
    for (room, user, content, to2, to3) in table {
        let before = received().await;
        assert_eq!(n1.post_json("/sendmessage", push(room, user, content), None).await["RetCode"], 0);
        if to2 > 0.0 {
            assert_eq!(s2.recv().await, content);
        }
        if to3 > 0.0 {
            assert_eq!(s3.recv().await, content);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = received().await;
        assert_eq!((after.0 - before.0, after.1 - before.1), (to2, to3), "{content}");
    }
    s2.expect_silence(Duration::from_millis(100)).await;
    s3.expect_silence(Duration::from_millis(100)).await;
    // u3 leaves: node 3 has no room of the app any more, a broadcast skips it.
    s3.close().await;
    c.wait_room_interest(3, "a\n900", false).await;
    let before = received().await;
    assert_eq!(n1.post_json("/sendmessage", push("", "", "after u3 left"), None).await["RetCode"], 0);
    assert_eq!(s2.recv().await, "after u3 left");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = received().await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (1.0, 0.0));
}

#[actix_rt::test]
async fn offline_push_comes_once_from_the_storing_node_and_never_for_users_online_elsewhere() {
    use common::webhook::{Hook, Mode, SECRET};
    let hook = Hook::start(Mode::Accept);
    let toml = format!(
        "[push]\nwebhook = \"{}\"\nsecret = \"{SECRET}\"\nmax_delay_ms = 50\nquiet_secs = 0\n",
        hook.url
    );
    let Some(c) = TestCluster::start(3, &toml) else { return };
    all_see(&c.nodes, 3).await;
    let gid = c.nodes[0].get_json("/creategrp?creator=alice&members=bob,carol").await["data"]["groupid"]
        .as_str()
        .expect("group id")
        .to_string();
    let alice = c.nodes[0].login("alice").await;
    let mut bob = c.nodes[1].login("bob").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // bob is online on node 2, carol nowhere: only carol is pushed, once, by node 1.
    alice.send(&format!("text_{gid}_to everyone_group_e"));
    alice.send("text_bob_to bob_unicast_e");
    assert_eq!(fields(&bob.recv().await).2, "to everyone");
    assert_eq!(fields(&bob.recv().await).2, "to bob");
    hook.wait_for("carol", 1).await;
    alice.send("text_zed_sentinel_unicast_e");
    hook.wait_for("zed", 1).await;
    assert!(hook.of("bob").is_empty(), "bob is online on node 2: {:?}", hook.of("bob"));
    // bob leaves node 2: node 1 pushes him, once.
    bob.close().await;
    let mut pushed = false;
    for i in 0..50 {
        alice.send(&format!("text_bob_are you there {i}_unicast_e"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !hook.of("bob").is_empty() {
            pushed = true;
            break;
        }
    }
    assert!(pushed, "bob, gone from node 2, was never pushed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.of("bob");
    let ids: std::collections::HashSet<&str> = got.iter().filter_map(|n| n["message_id"].as_str()).collect();
    assert_eq!(ids.len(), got.len(), "no message pushed twice: {got:?}");
}
