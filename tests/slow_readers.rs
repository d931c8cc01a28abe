//! Peers that stop reading, on every front-end and transport: each is dropped once the outbound
//! queue limit of unsent data waits for it (counted in `wsim_slow_consumers_dropped_total`), the
//! server's anonymous memory stays bounded while 12,000 messages of 8,000 bytes (96 MB) are sent
//! its way, and what was stored stays stored for its next login.

mod common;

use std::time::Duration;

use common::raw::{MemoryWatch, RawPeer};
use common::{eventually, Backend, TestServer};

on_both_backends!(
    wsim_unicast_to_a_peer_that_never_reads,
    wsim_readers_that_stop_before_during_and_after_their_replay,
    wsim_peer_that_asks_without_reading,
    gateway_ws_sse_and_poll_readers_that_stop,
    longweb_socket_and_poll_box_that_stop,
    gru_websocket_and_polling_sockets_that_stop,
);

/// Messages sent at a peer that does not read, and their size.
const MESSAGES: usize = 12_000;
const SIZE: usize = 8_000;
/// Growth of the server's anonymous memory allowed meanwhile.
const MEMORY_BOUND_KIB: u64 = 32 * 1024;

/// A payload of `SIZE` bytes carrying its sequence number.
fn payload(seq: usize) -> String {
    let head = format!("{seq}:");
    format!("{head}{}", "x".repeat(SIZE - head.len()))
}

/// The sequence number at the start of a payload.
fn seq_in(content: &str) -> usize {
    content.split(':').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("content {content:.80}"))
}

/// Waits until `total` messages are stored and `dropped` slow consumers of `frontend` counted.
async fn wait_stored_and_dropped(s: &TestServer, total: i64, frontend: &str, dropped: f64) {
    let series = format!("wsim_slow_consumers_dropped_total{{frontend=\"{frontend}\"}}");
    let stored = || s.count_rows("SELECT COUNT(*) AS n FROM messages");
    assert!(
        eventually(Duration::from_secs(90), || async {
            stored() == total && s.metric(&series).await == dropped
        })
        .await,
        "{frontend}: stored {} of {total}, dropped {} of {dropped}",
        stored(),
        s.metric(&series).await
    );
}

/// Checks the memory bound and reports the figure.
fn check_memory(frontend: &str, memory: MemoryWatch) {
    check_memory_within(frontend, memory, MEMORY_BOUND_KIB);
}

fn check_memory_within(frontend: &str, memory: MemoryWatch, bound_kib: u64) {
    let growth = memory.peak_growth_kib();
    drop(memory);
    eprintln!("{frontend}: server RssAnon grew by at most {growth} KiB while its peers did not read");
    assert!(growth < bound_kib, "{frontend}: RssAnon grew by {growth} KiB");
}

/// The server gave up on `peer`: what it still finds when it reads again ends in a close, long before
/// the 96 MB sent its way. Returns what it read.
fn assert_cut_off(name: &str, peer: &mut RawPeer) -> Vec<u8> {
    let got = peer.read_until_closed(Duration::from_secs(20)).unwrap_or_else(|| panic!("{name}: still open"));
    eprintln!("{name} read {} bytes before the close", got.len());
    assert!(got.len() < 16 << 20, "{name} read {} bytes before the close", got.len());
    got
}

/// The sequence number of a wsim receive frame from `sender`.
fn seq_of(frame: &str, sender: &str) -> usize {
    let rest = frame.strip_prefix(&format!("text_{sender}_")).unwrap_or_else(|| panic!("frame {frame:.80}"));
    rest.split(':').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("frame {frame:.80}"))
}

/// The plainest case: a raw client logs in and never reads (not even `ok`); another user sends it
/// 12,000 direct messages of 8,000 bytes.
async fn wsim_unicast_to_a_peer_that_never_reads(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut victim = RawPeer::websocket(&s.base, "/entry");
    victim.send_text("login_victim");
    let sender = s.login("sender").await;
    assert!(
        eventually(Duration::from_secs(10), || async { s.metric("wsim_users_online").await == 2.0 }).await
    );
    let memory = MemoryWatch::start(s.pid());
    for seq in 0..MESSAGES {
        sender.send(&format!("text_victim_{}_unicast_e", payload(seq)));
    }
    wait_stored_and_dropped(&s, MESSAGES as i64, "wsim", 1.0).await;
    check_memory("wsim (unicast)", memory);
    assert_cut_off("victim", &mut victim);
    let mut again = s.login("victim").await;
    for want in 0..MESSAGES {
        assert_eq!(seq_of(&again.recv().await, "sender"), want);
    }
}

async fn wsim_readers_that_stop_before_during_and_after_their_replay(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=sender&members=v_before,v_during,v_after").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let sender = s.login("sender").await;
    // 300 messages (2.4 MB, over the 1 MiB limit) wait for the three while they are offline.
    let offline = 300;
    for seq in 0..offline {
        sender.send(&format!("text_{gid}_{}_group_e", payload(seq)));
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            s.count_rows("SELECT COUNT(*) AS n FROM messages") == offline as i64
        })
        .await,
        "the offline messages were not stored"
    );
    // v_before reads nothing, not even `ok`; v_during reads a third of its replay; v_after reads all
    // of it. Then none of them reads again.
    let mut before = RawPeer::websocket(&s.base, "/entry");
    before.send_text("login_v_before");
    let mut during = RawPeer::websocket(&s.base, "/entry");
    during.send_text("login_v_during");
    assert_eq!(during.read_text_frame(), "ok");
    for seq in 0..offline / 3 {
        assert_eq!(seq_of(&during.read_text_frame(), "sender"), seq);
    }
    let mut after = RawPeer::websocket(&s.base, "/entry");
    after.send_text("login_v_after");
    assert_eq!(after.read_text_frame(), "ok");
    for seq in 0..offline {
        assert_eq!(seq_of(&after.read_text_frame(), "sender"), seq);
    }

    let memory = MemoryWatch::start(s.pid());
    for seq in offline..offline + MESSAGES {
        sender.send(&format!("text_{gid}_{}_group_e", payload(seq)));
    }
    wait_stored_and_dropped(&s, (offline + MESSAGES) as i64, "wsim", 3.0).await;
    check_memory("wsim", memory);
    assert_cut_off("v_before", &mut before);
    assert_cut_off("v_during", &mut during);
    assert_cut_off("v_after", &mut after);
    // Nothing was lost: each gets every message, in order, at its next login (none of them answered
    // a ping, so none of what they read counts as delivered).
    for name in ["v_before", "v_during", "v_after"] {
        let mut again = s.login(name).await;
        for want in 0..offline + MESSAGES {
            let f = match again.next_event(Duration::from_secs(10)).await {
                Some(common::Event::Text(f)) => f,
                other => panic!("{name}: expected message {want}, got {other:?}"),
            };
            assert_eq!(seq_of(&f, "sender"), want, "{name}");
        }
        again.close().await;
    }
}

async fn gateway_ws_sse_and_poll_readers_that_stop(b: Backend) {
    let s = TestServer::start(&b, &[]);
    // A wsim group is a gateway conversation: the sender writes on /entry, the readers are gateway
    // sessions on the three /notify transports.
    let v = s.get_json("/creategrp?creator=sender&members=g_ws,g_sse,g_poll").await;
    let conv = v["data"]["groupid"].as_str().expect("group id").to_string();
    let (t_ws, t_sse, t_poll) = (
        s.gateway_token("g_ws", 1).await,
        s.gateway_token("g_sse", 1).await,
        s.gateway_token("g_poll", 1).await,
    );
    let mut ws = RawPeer::websocket(&s.base, &format!("/notify?token={t_ws}&protoc=ws"));
    let mut sse = RawPeer::get(&s.base, &format!("/notify?token={t_sse}&protoc=sse"), "");
    let mut poll = RawPeer::get(&s.base, &format!("/notify?token={t_poll}&protoc=poll"), "");
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.metric("wsim_connections_open{frontend=\"gateway\"}").await >= 2.0
        })
        .await
    );
    let sender = s.login("sender").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let memory = MemoryWatch::start(s.pid());
    for seq in 0..MESSAGES {
        sender.send(&format!("text_{conv}_{}_group_e", payload(seq)));
    }
    wait_stored_and_dropped(&s, MESSAGES as i64, "gateway", 2.0).await;
    check_memory("gateway", memory);
    assert_cut_off("ws", &mut ws);
    // An SSE client resumes after the last event it read (`Last-Event-ID`): what the socket took
    // counts as delivered on this transport.
    let read = String::from_utf8_lossy(&assert_cut_off("sse", &mut sse)).into_owned();
    let complete = &read[..read.rfind("\n\n").map_or(0, |i| i + 2)];
    let last_id = complete.lines().rev().find_map(|l| l.strip_prefix("id: ")).map(str::to_string);
    let resumed_from = complete.lines().filter(|l| l.starts_with("data: ")).count();
    // The long-poll was answered with one message and holds nothing else.
    let head = poll.read_head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    poll.close();

    // Nothing was lost: the WebSocket session gets every message at its next notify, the SSE session
    // everything after the last event it read, and the long-poll session's next poll answers the
    // first message it has not had.
    let mut again = s.ws(&format!("/notify?token={t_ws}&protoc=ws")).await;
    for want in 0..MESSAGES {
        let f: serde_json::Value = serde_json::from_str(&again.recv().await).expect("MsgData");
        assert_eq!(seq_in(f["Content"].as_str().expect("Content")), want, "ws");
    }
    again.close().await;
    let client = awc::Client::builder().timeout(Duration::from_secs(120)).finish();
    let mut req = client.get(s.url(&format!("/notify?token={t_sse}&protoc=sse")));
    if let Some(id) = &last_id {
        req = req.insert_header(("Last-Event-ID", id.as_str()));
    }
    let mut stream = req.send().await.expect("SSE");
    let (mut buf, mut want) = (String::new(), resumed_from);
    while want < MESSAGES {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("sse: waiting for message {want}"))
            .expect("SSE chunk")
            .expect("SSE bytes");
        buf.push_str(std::str::from_utf8(&chunk).expect("utf8"));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                let f: serde_json::Value = serde_json::from_str(data).expect("MsgData");
                assert_eq!(seq_in(f["Content"].as_str().expect("Content")), want, "sse");
                want += 1;
            }
        }
    }
    drop(stream);
    let mut res =
        client.get(s.url(&format!("/notify?token={t_poll}&protoc=poll"))).send().await.expect("poll");
    let next: serde_json::Value = res.json().limit(1 << 20).await.expect("MsgData");
    assert!(seq_in(next["Content"].as_str().expect("Content")) <= 1, "{next:.80}");
}

async fn longweb_socket_and_poll_box_that_stop(b: Backend) {
    let s = TestServer::start_with_config(
        &b,
        "[longweb]\nallowips = [\"127.0.0.1\"]\n[[longweb.apps]]\nappid = \"700\"\nname = \"slow\"\ntimeout = 30\n",
    );
    let mut socket = RawPeer::websocket(&s.base, "/ws/onsocket?appid=700&groupid=g1&userid=u_ws");
    // The poll is answered with the first message; the client never polls again.
    let mut poll = RawPeer::get(&s.base, "/poll/onpolling?appid=700&groupid=g1&userid=u_poll&querykey=k", "");
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.metric("wsim_connections_open{frontend=\"longweb\"}").await >= 1.0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let memory = MemoryWatch::start(s.pid());
    let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
    let url = s.url("/sendmessage");
    // Eight senders at a time, each waiting for its answer.
    let mut seqs = (0..MESSAGES).collect::<Vec<_>>().into_iter();
    let mut lanes = Vec::new();
    for _ in 0..8 {
        let chunk: Vec<usize> = seqs.by_ref().take(MESSAGES / 8).collect();
        let (client, url) = (client.clone(), url.clone());
        lanes.push(async move {
            for seq in chunk {
                let body = serde_json::json!({"AppID": "700", "GroupID": "g1", "ToAppID": "700",
                    "ToGroupID": "g1", "ToUserID": "", "MessageLevel": "0", "Content": payload(seq)});
                let mut res = client.post(&url).send_json(&body).await.expect("POST /sendmessage");
                let v: serde_json::Value = res.json().await.expect("JSON");
                assert_eq!(v["RetCode"], 0, "{v}");
            }
        });
    }
    futures_util::future::join_all(lanes).await;
    wait_stored_and_dropped(&s, MESSAGES as i64, "longweb", 2.0).await;
    check_memory("longweb", memory);
    assert_cut_off("socket", &mut socket);
    let head = poll.read_head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

async fn gru_websocket_and_polling_sockets_that_stop(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let token2 = |user: u64| {
        let s = &s;
        async move {
            let t = s.get_json(&format!("/ticket?userType=1&userName=u{user}&userId={user}&token1=x")).await;
            t["data"]["token"].as_str().expect("token2").to_string()
        }
    };
    let auth = |user: u64, t2: &str| {
        format!(
            "42{}",
            serde_json::json!(["auth", {"id": user, "name": format!("u{user}"), "token2": t2, "type": 1, "groupId": 9}])
        )
    };
    // A WebSocket client that authenticates into group 9 and stops reading.
    let mut ws = RawPeer::websocket(&s.base, "/socket.io/?EIO=4&transport=websocket");
    ws.send_text("40");
    ws.send_text(&auth(1, &token2(1).await));
    // A polling client that does the same and never polls again.
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut open = client.get(s.url("/socket.io/?EIO=4&transport=polling")).send().await.expect("handshake");
    let open = String::from_utf8(open.body().await.expect("body").to_vec()).expect("utf8");
    let sid = open.split("\"sid\":\"").nth(1).and_then(|r| r.split('"').next()).expect("sid").to_string();
    let poll_url = s.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let body = format!("40\u{1e}{}", auth(2, &token2(2).await));
    let res = client.post(&poll_url).insert_header(("Content-Type", "text/plain")).send_body(body).await;
    assert_eq!(res.expect("POST").status().as_u16(), 200);
    let mut answer = client.get(&poll_url).send().await.expect("poll");
    let answer = String::from_utf8(answer.body().await.expect("body").to_vec()).expect("utf8");
    assert!(answer.contains("auth_result") && answer.contains("\"success\":true"), "{answer}");

    // The sender, in the same group, reads its own echo and results.
    let mut sender = s.ws("/socket.io/?EIO=4&transport=websocket").await;
    sender.recv().await;
    sender.send("40");
    sender.recv().await;
    sender.send(&auth(3, &token2(3).await));
    assert!(sender.recv().await.contains("\"success\":true"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            let online = s.metric("wsim_connections_open{frontend=\"gru\"}").await;
            online >= 3.0
        })
        .await
    );

    let memory = MemoryWatch::start(s.pid());
    let mut results = 0;
    let mut echoes = 0;
    for seq in 0..MESSAGES {
        let m = serde_json::json!(["msg", {"type": 1, "target": {"id": 9}, "content": payload(seq)}]);
        sender.send(&format!("42{m}"));
        // Keep up with what comes back, so the sender is a reader that keeps reading.
        while let Some(common::Event::Text(f)) = sender.next_event(Duration::ZERO).await {
            results += usize::from(f.starts_with("42[\"msg_result\""));
            echoes += usize::from(f.starts_with("42[\"msg\""));
        }
    }
    while results < MESSAGES || echoes < MESSAGES {
        let f = sender.recv().await;
        if f.starts_with("42[\"msg_result\"") {
            assert!(f.contains("\"success\":true"), "{f:.200}");
            results += 1;
        }
        echoes += usize::from(f.starts_with("42[\"msg\""));
    }
    wait_stored_and_dropped(&s, MESSAGES as i64, "gru", 2.0).await;
    check_memory("gru", memory);
    assert_cut_off("websocket", &mut ws);
    let mut gone = client.get(&poll_url).send().await.expect("poll");
    assert_eq!(gone.status().as_u16(), 400, "{:?}", gone.body().await);
}

/// A peer that keeps asking for history (400 KB an answer) and reads none of it.
async fn wsim_peer_that_asks_without_reading(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=asker&members=sender").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let sender = s.login("sender").await;
    for seq in 0..50 {
        sender.send(&format!("text_{gid}_{}_group_e", payload(seq)));
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            s.count_rows("SELECT COUNT(*) AS n FROM messages") == 50
        })
        .await
    );
    let mut asker = RawPeer::websocket(&s.base, "/entry");
    asker.send_text("login_asker");
    assert_eq!(asker.read_text_frame(), "ok");
    for seq in 0..50 {
        assert_eq!(seq_of(&asker.read_text_frame(), "sender"), seq);
    }
    let memory = MemoryWatch::start(s.pid());
    // 300 answers would be 120 MB.
    for _ in 0..300 {
        asker.send_text(&format!("records_{gid}_0"));
    }
    let series = "wsim_slow_consumers_dropped_total{frontend=\"wsim\"}";
    assert!(
        eventually(Duration::from_secs(30), || async { s.metric(series).await == 1.0 }).await,
        "the asker was not dropped"
    );
    // Answers of 400 KB (fifty times the messages above) are built, encoded and copied on their way
    // out while the peer is being given up on; the allocator keeps some of that: a bound of its own.
    check_memory_within("wsim (queries)", memory, 48 * 1024);
    assert_cut_off("asker", &mut asker);
    // The others carry on.
    let mut again = s.login("asker").await;
    again.send(&format!("records_{gid}_0"));
    assert_eq!(seq_of(&again.recv().await, "sender"), 0);
}
