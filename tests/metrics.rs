//! `/metrics` over real HTTP: the counters move when traffic flows.

mod common;

use std::time::Duration;

use common::{sample, Backend, TestServer};

on_both_backends!(
    counters_follow_traffic,
    slow_consumers_are_counted,
    admin_endpoints_answer_allowed_networks_only
);

async fn scrape(s: &TestServer) -> String {
    let client = awc::Client::default();
    let mut res = client.get(s.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.contains("text"), "content type {ct}");
    String::from_utf8(res.body().await.expect("body").to_vec()).expect("utf8")
}

async fn counters_follow_traffic(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let before = scrape(&s).await;
    assert_eq!(sample(&before, "wsim_connections_open{frontend=\"wsim\"}"), 0.0);
    assert_eq!(sample(&before, "wsim_messages_stored_total"), 0.0);

    let v = s.get_json("/creategrp?creator=a&members=b,c").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let a = s.login("a").await;
    let mut b_ws = s.login("b").await;
    // Let both logins finish their (empty) replay, so what follows is live traffic only.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send(&format!("text_{gid}_hi_group_e"));
    a.send("text_b_direct_unicast_e");
    b_ws.recv().await;
    b_ws.recv().await;
    s.wait_metric("wsim_messages_stored_total", 2.0).await;
    let mut c = s.login("c").await; // c was offline: one replayed message
    c.recv().await;

    let m = scrape(&s).await;
    assert_eq!(sample(&m, "wsim_connections_open{frontend=\"wsim\"}"), 3.0, "{m}");
    assert_eq!(sample(&m, "wsim_users_online"), 3.0);
    assert_eq!(sample(&m, "wsim_messages_received_total{frontend=\"wsim\"}"), 2.0);
    assert_eq!(sample(&m, "wsim_messages_stored_total"), 2.0);
    assert!(sample(&m, "wsim_messages_delivered_total{frontend=\"wsim\"}") >= 3.0);
    assert_eq!(sample(&m, "wsim_offline_replayed_total"), 1.0);
    assert!(sample(&m, "wsim_store_batch_size_count") >= 1.0);
    assert!(sample(&m, "wsim_store_batch_seconds_count") >= 1.0);
    assert_eq!(sample(&m, "wsim_http_requests_total{route=\"/creategrp\",status=\"200\"}"), 1.0);
    assert!(sample(&m, "wsim_http_requests_total{route=\"/metrics\",status=\"200\"}") >= 1.0);

    a.close().await;
    s.wait_metric("wsim_connections_open{frontend=\"wsim\"}", 2.0).await;
    let m = scrape(&s).await;
    assert_eq!(sample(&m, "wsim_connections_open{frontend=\"wsim\"}"), 2.0);
    assert_eq!(sample(&m, "wsim_users_online"), 2.0);
}

async fn slow_consumers_are_counted(b: Backend) {
    let s = TestServer::start(&b, &["--outbound-queue-kib", "64"]);
    let slow = s.login("slow").await;
    let sender = s.login("sender").await;
    slow.pause();
    let big = "z".repeat(60_000);
    for i in 0..300 {
        sender.send(&format!("text_slow_{i}{big}_unicast_e"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(&s).await;
        if sample(&m, "wsim_slow_consumers_dropped_total{frontend=\"wsim\"}") == 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slow consumer counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin_endpoints_answer_allowed_networks_only(b: Backend) {
    // Loopback is allowed by default (every other test scrapes /metrics); here only 10.0.0.0/8 is.
    let s = TestServer::start_with_config(&b, "[admin]\nallow = [\"10.0.0.0/8\"]\n");
    let client = awc::Client::default();
    for path in ["/metrics", "/state"] {
        let res = client.get(s.url(path)).send().await.expect(path);
        assert_eq!(res.status().as_u16(), 403, "{path} from 127.0.0.1");
    }
    let res = client.get(s.url("/healthz")).send().await.expect("healthz");
    assert_eq!(res.status().as_u16(), 200, "the rest of the server answers");
}
