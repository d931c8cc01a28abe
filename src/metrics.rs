//! Process-wide metrics in the Prometheus/OpenMetrics text format, served on `/metrics`.
//!
//! Counters are plain atomics: hot paths hold handles ([`FrontendMetrics`]) obtained once, so
//! counting costs an atomic add. Imports nothing from the crate, so every layer may use it.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontendLabel {
    pub frontend: String,
}

/// What a rate limit refused: `http` (requests per address), `message` (per connection), `upload`
/// (per address or user).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub what: String,
}

/// Why something was given up (offline push: `feed`, a stored message the push resolver had no room
/// for; `queue`, a notification with no room before the webhook; `rejected` by the webhook with a
/// 4xx; `failed` after the retries; `store`, the database did not answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub why: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Family<FrontendLabel, Gauge>,
    pub received: Family<FrontendLabel, Counter>,
    pub delivered: Family<FrontendLabel, Counter>,
    pub slow_dropped: Family<FrontendLabel, Counter>,
    pub users_online: Gauge,
    pub stored: Counter,
    pub replayed: Counter,
    pub store_failures: Counter,
    pub poll_dropped: Counter,
    pub handshakes_refused: Counter,
    pub rate_limited: Family<LimitLabel, Counter>,
    pub cluster_published: Counter,
    pub cluster_received: Counter,
    pub cluster_dropped: Counter,
    pub cluster_catch_ups: Counter,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
    pub http_requests: Family<HttpLabel, Counter>,
    pub push_sent: Counter,
    pub push_dropped: Family<ReasonLabel, Counter>,
}

/// The handles one front-end counts with.
#[derive(Clone, Debug)]
pub struct FrontendMetrics {
    pub connections: Gauge,
    pub received: Counter,
    pub delivered: Counter,
    pub slow_dropped: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wsim");
        let connections = Family::<FrontendLabel, Gauge>::default();
        registry.register("connections_open", "Open client connections, by front-end", connections.clone());
        let received = Family::<FrontendLabel, Counter>::default();
        registry.register("messages_received", "Messages sent by clients, by front-end", received.clone());
        let delivered = Family::<FrontendLabel, Counter>::default();
        registry.register("messages_delivered", "Messages written to client connections", delivered.clone());
        let slow_dropped = Family::<FrontendLabel, Counter>::default();
        registry.register(
            "slow_consumers_dropped",
            "Connections dropped because the peer stopped reading",
            slow_dropped.clone(),
        );
        let users_online = Gauge::default();
        registry.register(
            "users_online",
            "Users with at least one logged-in connection",
            users_online.clone(),
        );
        let stored = Counter::default();
        registry.register("messages_stored", "Messages written to the store", stored.clone());
        let replayed = Counter::default();
        registry.register("offline_replayed", "Messages replayed to users at login", replayed.clone());
        let store_failures = Counter::default();
        registry.register(
            "store_batch_failures",
            "Store batches that could not be written",
            store_failures.clone(),
        );
        let poll_dropped = Counter::default();
        registry.register(
            "poll_messages_dropped",
            "Messages dropped from a full long-poll box (oldest first)",
            poll_dropped.clone(),
        );
        let handshakes_refused = Counter::default();
        registry.register(
            "handshakes_refused",
            "Engine.IO handshakes refused because their address opened too many",
            handshakes_refused.clone(),
        );
        let rate_limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests, messages and uploads refused by a rate limit ([limits]), by what was limited",
            rate_limited.clone(),
        );
        let cluster_published = Counter::default();
        registry.register(
            "cluster_published",
            "Messages published to other nodes of the cluster (one per target node)",
            cluster_published.clone(),
        );
        let cluster_received = Counter::default();
        registry.register(
            "cluster_received",
            "Messages received from other nodes of the cluster",
            cluster_received.clone(),
        );
        let cluster_dropped = Counter::default();
        registry.register(
            "cluster_dropped",
            "Stored messages not published to other nodes (queue full, Redis unreachable)",
            cluster_dropped.clone(),
        );
        let cluster_catch_ups = Counter::default();
        registry.register(
            "cluster_catch_ups",
            "Times this node's online users read what other nodes' messages it may have missed from the store",
            cluster_catch_ups.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("store_batch_size", "Messages per store transaction", batch_size.clone());
        let batch_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register("store_batch_seconds", "Duration of store transactions", batch_seconds.clone());
        let http_requests = Family::<HttpLabel, Counter>::default();
        registry.register("http_requests", "HTTP requests, by route and status", http_requests.clone());
        let push_sent = Counter::default();
        registry.register("push_sent", "Offline-push notifications the webhook accepted", push_sent.clone());
        let push_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "push_dropped",
            "Offline push given up, by why: stored messages not looked at (feed), notifications not sent (queue, rejected, failed, store)",
            push_dropped.clone(),
        );
        Metrics {
            registry,
            connections,
            received,
            delivered,
            slow_dropped,
            users_online,
            stored,
            replayed,
            store_failures,
            poll_dropped,
            handshakes_refused,
            rate_limited,
            cluster_published,
            cluster_received,
            cluster_dropped,
            cluster_catch_ups,
            batch_size,
            batch_seconds,
            http_requests,
            push_sent,
            push_dropped,
        }
    }

    /// Counts one refusal by the rate limit of `what`.
    pub fn limited(&self, what: &str) {
        self.rate_limited.get_or_create(&LimitLabel { what: what.to_string() }).inc();
    }

    /// Handles for one front-end (look them up once, then count freely).
    pub fn frontend(&self, name: &str) -> FrontendMetrics {
        let l = FrontendLabel { frontend: name.to_string() };
        FrontendMetrics {
            connections: self.connections.get_or_create(&l).clone(),
            received: self.received.get_or_create(&l).clone(),
            delivered: self.delivered.get_or_create(&l).clone(),
            slow_dropped: self.slow_dropped.get_or_create(&l).clone(),
        }
    }

    /// Counts `n` offline-push notifications given up for `why`.
    pub fn push_dropped_n(&self, why: &str, n: u64) {
        self.push_dropped.get_or_create(&ReasonLabel { why: why.to_string() }).inc_by(n);
    }

    pub fn push_dropped(&self, why: &str) {
        self.push_dropped_n(why, 1);
    }

    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests.get_or_create(&HttpLabel { route: route.to_string(), status }).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// One sample of the text exposition: a metric's name, its labels and its value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The samples of a text exposition (comments and lines that do not parse are skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, len) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, &line[open + 1 + len..])
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
        return None;
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample { name: name.to_string(), labels, value })
}

/// `k="v",…}` → the labels and the bytes read, up to and including the `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, usize)> {
    let mut labels = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        let mut key = String::new();
        loop {
            match chars.next()? {
                (i, '}') if key.is_empty() => return Some((labels, i + 1)),
                (_, '=') => break,
                (_, ',') if key.is_empty() => {}
                (_, c) => key.push(c),
            }
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, '"') => break,
                (_, c) => value.push(c),
            }
        }
        labels.push((key.trim().to_string(), value));
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_from_the_exposition() {
        let text = "# HELP wsim_x x\n# TYPE wsim_x counter\nwsim_x_total 3\n\
                    wsim_c{frontend=\"wsim\"} 2\n\
                    wsim_h_bucket{le=\"+Inf\",route=\"/a,b\"} 1.5e1\n\
                    wsim_q{v=\"say \\\"hi\\\"\\\\\\n\"} 4\n\
                    garbage\nwsim_bad{x=1} 2\nwsim_nan abc\n# EOF\n";
        let samples = parse_samples(text);
        let l = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            samples,
            vec![
                Sample { name: "wsim_x_total".into(), labels: vec![], value: 3.0 },
                Sample { name: "wsim_c".into(), labels: vec![l("frontend", "wsim")], value: 2.0 },
                Sample {
                    name: "wsim_h_bucket".into(),
                    labels: vec![l("le", "+Inf"), l("route", "/a,b")],
                    value: 15.0
                },
                Sample { name: "wsim_q".into(), labels: vec![l("v", "say \"hi\"\\\n")], value: 4.0 },
            ]
        );
        // What the registry renders parses whole.
        let m = Metrics::new();
        m.frontend("gru").connections.inc();
        let parsed = parse_samples(&m.render());
        let open = parsed.iter().find(|s| s.name == "wsim_connections_open").expect("connections");
        assert_eq!((open.labels.clone(), open.value), (vec![l("frontend", "gru")], 1.0));
    }

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        let fm = m.frontend("wsim");
        fm.delivered.inc_by(3);
        fm.connections.inc();
        m.http_request("/creategrp", 200);
        m.batch_size.observe(5.0);
        let text = m.render();
        assert!(text.contains("wsim_messages_delivered_total{frontend=\"wsim\"} 3"), "{text}");
        assert!(text.contains("wsim_connections_open{frontend=\"wsim\"} 1"), "{text}");
        assert!(text.contains("wsim_http_requests_total{route=\"/creategrp\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("wsim_store_batch_size_count 1"), "{text}");
    }
}
