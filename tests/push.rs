//! Offline push (`[push] webhook`, an extension) against a fake webhook inside the test, over real
//! sockets, on SQLite and MariaDB: an offline recipient is pushed once, an online one not; a group
//! with online and offline members; the quiet period and unread counts; muting (wsim signal and
//! gateway endpoint); a webhook that is down then back (retries), one that refuses (no retry), and
//! one so slow that the queue overflows while delivery goes on at full speed.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::webhook::{Hook, Mode, SECRET};
use common::{eventually, fields, Backend, TestServer};
use serde_json::json;

on_both_backends!(
    offline_recipients_are_pushed_once_online_ones_never,
    the_quiet_period_holds_back_and_unread_counts_grow,
    muted_conversations_are_not_pushed,
    a_webhook_down_then_back_gets_what_waited,
    a_refusing_webhook_is_not_retried,
    a_slow_webhook_never_slows_delivery,
    a_stalled_webhook_holds_little_memory_whatever_the_messages
);

fn config(url: &str, extra: &str) -> String {
    format!("[push]\nwebhook = \"{url}\"\nsecret = \"{SECRET}\"\nmax_delay_ms = 50\n{extra}")
}

async fn group(s: &TestServer, creator: &str, members: &str) -> String {
    let v = s.get_json(&format!("/creategrp?creator={creator}&members={members}")).await;
    v["data"]["groupid"].as_str().expect("group id").to_string()
}

/// Sends a direct message to `sentinel` (offline, never notified before) and waits for its
/// notification: whatever was stored before it has been looked at by then.
async fn settle(s: &TestServer, hook: &Hook, from: &common::Ws, sentinel: &str) {
    from.send(&format!("text_{sentinel}_sentinel_unicast_e"));
    let _ = s;
    hook.wait_for(sentinel, 1).await;
}

async fn offline_recipients_are_pushed_once_online_ones_never(b: Backend) {
    let hook = Hook::start(Mode::Accept);
    let s = TestServer::start_with_config(&b, &config(&hook.url, ""));
    let alice = s.login("alice").await;
    let mut dave = s.login("dave").await;

    // bob is offline: one notification, with what the README promises.
    alice.send("text_bob_晚上一起吃饭吗？🍜 还有_下划线_unicast_e");
    let n = hook.wait_for("bob", 1).await.remove(0);
    assert_eq!(n["app"], "default");
    assert_eq!(n["sender"], "alice");
    assert_eq!(n["conversation"], json!({"kind": "direct", "id": "alice", "type": 0}));
    assert_eq!(n["kind"], "text");
    assert_eq!(n["preview"], "晚上一起吃饭吗？🍜 还有_下划线");
    assert_eq!(n["unread"], 1);
    assert!(n["message_id"].as_str().is_some_and(|id| id.parse::<i64>().is_ok()), "{n}");
    let sent_ms = n["sent_ms"].as_i64().expect("sent_ms");
    assert!((chrono::Utc::now().timestamp_millis() - sent_ms).abs() < 60_000, "{n}");
    // dave is online: delivered, never pushed.
    alice.send("text_dave_you are here_unicast_e");
    assert_eq!(fields(&dave.recv().await).2, "you are here");

    // A group of online and offline members: the offline ones (not the sender) are pushed.
    let gid = group(&s, "alice", "bob,dave,erin").await;
    alice.send(&format!("picture_{gid}_http://img.example/p-32x24.png_group_e"));
    assert!(fields(&dave.recv().await).2.starts_with("http://img.example/"));
    for user in ["bob", "erin"] {
        let got = hook.wait_for(user, if user == "bob" { 2 } else { 1 }).await;
        let g = got.last().expect("group notification");
        assert_eq!(g["conversation"], json!({"kind": "group", "id": gid, "type": 0}), "{g}");
        assert_eq!((g["kind"].as_str(), g["preview"].as_str()), (Some("picture"), Some("[picture]")));
        assert_eq!(g["url"], "http://img.example/p-32x24.png");
    }
    settle(&s, &hook, &alice, "zed").await;
    assert!(hook.of("dave").is_empty() && hook.of("alice").is_empty(), "{:?}", hook.notifications());
    // bob logs in: his messages are replayed, and he is not pushed while he is online.
    let mut bob = s.login("bob").await;
    let _ = bob.recv().await;
    let _ = bob.recv().await;
    alice.send("text_bob_now you are online_unicast_e");
    assert_eq!(fields(&bob.recv().await).2, "now you are online");
    settle(&s, &hook, &alice, "zoe").await;
    assert_eq!(hook.of("bob").len(), 2);
    assert_eq!(s.metric("wsim_push_sent_total").await, hook.notifications().len() as f64);
}

async fn the_quiet_period_holds_back_and_unread_counts_grow(b: Backend) {
    let hook = Hook::start(Mode::Accept);
    let s = TestServer::start_with_config(&b, &config(&hook.url, "quiet_secs = 2\npreview_chars = 8\n"));
    let alice = s.login("alice").await;
    alice.send("text_bob_first message_unicast_e");
    let first = hook.wait_for("bob", 1).await;
    assert_eq!((first[0]["unread"].as_i64(), first[0]["preview"].as_str()), (Some(1), Some("first me…")));
    let started = Instant::now();
    alice.send("text_bob_second_unicast_e");
    // Another conversation is not held back by bob's.
    let gid = group(&s, "alice", "bob").await;
    alice.send(&format!("text_{gid}_to the group_group_e"));
    let got = hook.wait_for("bob", 2).await;
    assert_eq!(got[1]["conversation"]["kind"], "group");
    settle(&s, &hook, &alice, "zed").await;
    assert_eq!(hook.of("bob").len(), 2, "the second direct message was held back");
    // After the quiet period: one more, counting the three unread direct messages.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()) + Duration::from_millis(200))
        .await;
    alice.send("text_bob_third_unicast_e");
    let got = hook.wait_for("bob", 3).await;
    assert_eq!((got[2]["preview"].as_str(), got[2]["unread"].as_i64()), (Some("third"), Some(3)));
}

async fn muted_conversations_are_not_pushed(b: Backend) {
    let hook = Hook::start(Mode::Accept);
    let s = TestServer::start_with_config(&b, &config(&hook.url, "quiet_secs = 0\n"));
    let gid = group(&s, "alice", "bob,carol").await;
    let mut bob = s.login("bob").await;
    bob.send(&format!("mute_{gid}_on"));
    assert_eq!(bob.recv().await, format!("mute_{gid}_on"));
    bob.send("mute_alice_on");
    assert_eq!(bob.recv().await, "mute_alice_on");
    bob.send("mute_alice_maybe");
    assert_eq!(bob.recv().await, "error_400_bad signal");
    bob.close().await;
    let alice = s.login("alice").await;
    alice.send(&format!("text_{gid}_group news_group_e"));
    alice.send("text_bob_direct news_unicast_e");
    hook.wait_for("carol", 1).await;
    settle(&s, &hook, &alice, "zed").await;
    assert!(hook.of("bob").is_empty(), "muted: {:?}", hook.of("bob"));
    // Unmuted, the group is pushed again; the direct conversation stays muted.
    let mut bob = s.login("bob").await;
    // What waited for him (muted for push, not for delivery) comes first.
    let replayed = [fields(&bob.recv().await).2, fields(&bob.recv().await).2];
    assert_eq!(replayed, ["group news", "direct news"]);
    bob.send(&format!("mute_{gid}_off"));
    assert_eq!(bob.recv().await, format!("mute_{gid}_off"));
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send(&format!("text_{gid}_more news_group_e"));
    alice.send("text_bob_more direct news_unicast_e");
    let got = hook.wait_for("bob", 1).await;
    assert_eq!(got[0]["preview"], "more news");
    settle(&s, &hook, &alice, "zoe").await;
    assert_eq!(hook.of("bob").len(), 1);

    // The gateway's endpoint: a session mutes a conversation it is in (members only).
    let token = s.gateway_token("carol", 1).await;
    let v =
        s.post_json("/mute_conversation", json!({"conversation_id": gid, "mute": true}), Some(&token)).await;
    assert_eq!(v, json!({"code": 0, "data": {"Muted": true}}));
    let other = group(&s, "alice", "bob").await;
    let v = s
        .post_json("/mute_conversation", json!({"conversation_id": other, "mute": true}), Some(&token))
        .await;
    assert_eq!(v["code"], 10004, "{v}");
    let v = s.post_json("/mute_conversation", json!({"conversation_id": gid}), Some(&token)).await;
    assert_eq!(v["code"], 10001, "{v}");
    let before = hook.of("carol").len();
    alice.send(&format!("text_{gid}_carol muted this_group_e"));
    hook.wait_for("bob", 2).await;
    settle(&s, &hook, &alice, "zack").await;
    assert_eq!(hook.of("carol").len(), before, "carol muted the conversation");
}

async fn a_webhook_down_then_back_gets_what_waited(b: Backend) {
    // Nothing listens at the webhook's address at first: connection refused, retried.
    let reserved = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = reserved.local_addr().expect("addr");
    drop(reserved);
    let url = format!("http://{addr}/push");
    let s = TestServer::start_with_config(&b, &config(&url, "retries = 6\n"));
    let alice = s.login("alice").await;
    alice.send("text_bob_while the hook is down_unicast_e");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // It comes back answering 503 twice, then 200.
    let hook = Hook::start_on(TcpListener::bind(addr).expect("rebind"), Mode::FailFirst(2));
    let got = hook.wait_for("bob", 1).await;
    assert_eq!(got[0]["preview"], "while the hook is down");
    assert!(hook.requests() >= 3, "{} requests", hook.requests());
    s.wait_metric("wsim_push_sent_total", 1.0).await;
    assert_eq!(s.metric("wsim_push_dropped_total{why=\"failed\"}").await, 0.0);
}

async fn a_refusing_webhook_is_not_retried(b: Backend) {
    let hook = Hook::start(Mode::Refuse);
    let s = TestServer::start_with_config(&b, &config(&hook.url, ""));
    let alice = s.login("alice").await;
    alice.send("text_bob_refused_unicast_e");
    s.wait_metric("wsim_push_dropped_total{why=\"rejected\"}", 1.0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.requests(), 1, "a 4xx is not retried");
    assert_eq!(s.metric("wsim_push_sent_total").await, 0.0);
}

async fn a_slow_webhook_never_slows_delivery(b: Backend) {
    const MESSAGES: usize = 300;
    let hook = Hook::start(Mode::Slow(Duration::from_secs(3)));
    let s = TestServer::start_with_config(
        &b,
        &config(&hook.url, "quiet_secs = 0\nmax_batch = 1\nqueue = 20\ntimeout_secs = 10\n"),
    );
    let gid = group(&s, "alice", "carol").await;
    let alice = s.login("alice").await;
    let mut carol = s.login("carol").await;
    let started = Instant::now();
    for i in 0..MESSAGES {
        alice.send(&format!("text_u{i}_for an offline user_unicast_e"));
        alice.send(&format!("text_{gid}_m{i}_group_e"));
    }
    for i in 0..MESSAGES {
        assert_eq!(fields(&carol.recv().await).2, format!("m{i}"));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "delivery took {took:?} behind a webhook taking 3 s a request");
    // Each direct message to an offline user makes a notification; the webhook takes one every 3 s
    // and the queues hold 20 each: what does not fit is dropped, counted (stored messages the
    // resolver had no room for as `feed`, notifications as `queue`).
    let (feed, queue) = ("wsim_push_dropped_total{why=\"feed\"}", "wsim_push_dropped_total{why=\"queue\"}");
    let settled = || async {
        let (a, b) = (s.metric(feed).await, s.metric(queue).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        b > 0.0 && (a, b) == (s.metric(feed).await, s.metric(queue).await)
    };
    assert!(eventually(Duration::from_secs(5), settled).await, "nothing dropped: {}", s.metrics().await);
    let (feed, queue) = (s.metric(feed).await, s.metric(queue).await);
    println!(
        "{MESSAGES} group messages delivered to the online member (and {MESSAGES} direct ones stored for \
         offline users) in {took:?}; dropped: {feed} stored messages, {queue} notifications"
    );
    assert!(hook.requests() <= 2, "{} requests", hook.requests());
}

async fn a_stalled_webhook_holds_little_memory_whatever_the_messages(b: Backend) {
    // 1,500 pictures whose "URL" is 60 KB, to 1,500 offline users (90 MB), while the webhook hangs
    // on its first request: every notification waits in the queue (10,000 places). Each keeps a
    // digest of its message, not the message: a URL that long is left out.
    const MESSAGES: usize = 1500;
    let hook = Hook::start(Mode::Slow(Duration::from_secs(60)));
    let s = TestServer::start_with_config(
        &b,
        &config(
            &hook.url,
            "timeout_secs = 60
max_batch = 1
",
        ),
    );
    let alice = s.login("alice").await;
    let memory = common::raw::MemoryWatch::start(s.pid());
    let url = format!("http://img.example/{}.png", "a".repeat(60_000));
    for i in 0..MESSAGES {
        alice.send(&format!("picture_u{i}_{url}_unicast_e"));
        if i % 100 == 99 {
            // Keep the sender's own inflow under its bound: wait for the store to catch up.
            s.wait_rows("SELECT COUNT(*) AS n FROM messages", i as i64 + 1).await;
        }
    }
    s.wait_rows("SELECT COUNT(*) AS n FROM messages", MESSAGES as i64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let growth = memory.peak_growth_kib();
    drop(memory);
    eprintln!(
        "{MESSAGES} pictures of 60 KB for offline users behind a stalled webhook: RssAnon +{growth} KiB"
    );
    assert!(growth < 32 << 10, "RssAnon grew by {growth} KiB");
    assert_eq!(s.metric("wsim_push_dropped_total{why=\"queue\"}").await, 0.0, "all queued");
}
