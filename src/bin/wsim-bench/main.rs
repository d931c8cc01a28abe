//! wsim-bench: a load generator for wsim's WebSocket front-ends.
//!
//! Scenarios: `idle` (hold many logged-in connections; server memory per connection and idle CPU),
//! `ring` (each user sends direct messages to the next), `group` (rooms of G members, S senders each).
//! Every payload carries a phase, sender, sequence number and send time, so the tool reports delivered
//! messages per second, lost and duplicated messages, end-to-end latency percentiles and, given
//! `--server-pid`, the server's CPU seconds and memory. `--find-knee` raises the offered rate until p99
//! passes 100 ms or a message is lost. Targets loopback only; every run is bounded in count and time.
//!
//! The protocol adapter (`proto`) is separate from the scenario logic: `--proto wsim` (the `/entry`
//! signaling) or `--proto socketio` (Gru over Socket.IO, against wsim or a reference server).
#![deny(clippy::expect_used)]

mod procstat;
mod proto;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use proto::{LoginStep, Protocol};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Ws, Message>;
type Source = SplitStream<Ws>;

const KNEE_P99_MS: f64 = 100.0;
const MAX_CONNECTIONS: usize = 200_000;
const MAX_DURATION_SECS: u64 = 600;
const MAX_RATE: f64 = 2_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Idle,
    Ring,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// wsim `/entry` signaling
    Wsim,
    /// Gru over Socket.IO (Engine.IO v4 WebSocket; wsim or any server speaking the Gru events)
    Socketio,
}

#[derive(Debug, Parser)]
#[command(name = "wsim-bench", about = "Load generator for wsim (loopback only)")]
struct Args {
    /// idle | ring | group
    #[arg(value_enum)]
    scenario: Scenario,
    /// Server address (host:port on this machine); several, comma-separated, for the nodes of a
    /// cluster: user i connects to the (i mod n)-th, so neighbours in a ring are on different nodes
    #[arg(long, default_value = "127.0.0.1:6060")]
    server: String,
    /// The front-end protocol to drive
    #[arg(long, value_enum, default_value = "wsim")]
    proto: Proto,
    /// Connections (users) in total, across shards
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// New connections per second while connecting
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Offered messages per second, all senders together (first step with --find-knee)
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds each measured phase sends (idle: seconds to hold)
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Members per room (group scenario)
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Senders per room (group scenario)
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Payload bytes per message
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// The server's pid, for its CPU time and memory (several, comma-separated: their sum)
    #[arg(long)]
    server_pid: Option<String>,
    /// Raise the rate step by step until p99 > 100 ms or a message is lost
    #[arg(long)]
    find_knee: bool,
    /// Rate multiplier between knee steps
    #[arg(long, default_value_t = 1.5)]
    knee_step: f64,
    /// Most knee steps
    #[arg(long, default_value_t = 10)]
    knee_steps: u32,
    /// This process's share of the users: i/n (run n processes for more connections)
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// Free-form label copied into the JSON (e.g. the backend)
    #[arg(long, default_value = "")]
    label: String,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// What one measured phase saw.
struct PhaseStats {
    received: u64,
    duplicated: u64,
    latency_us: Histogram<u64>,
}

impl PhaseStats {
    // Constant bounds that are valid (the tests make one): this cannot fail.
    #[allow(clippy::expect_used)]
    fn new() -> Self {
        PhaseStats {
            received: 0,
            duplicated: 0,
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        }
    }
}

#[derive(Default)]
struct Stats {
    phases: Vec<PhaseStats>,
    /// Highest sequence seen per (receiver, phase, sender): the server keeps per-sender order, so a
    /// sequence at or below it is a duplicate.
    last_seq: HashMap<(u32, u32, u32), u64>,
}

impl Stats {
    fn record(&mut self, receiver: u32, payload: &str, now: u64) {
        let mut it = payload.split('.');
        let (Some(p), Some(s), Some(q), Some(ts)) = (it.next(), it.next(), it.next(), it.next()) else {
            return;
        };
        let (Ok(phase), Ok(sender), Ok(seq), Ok(ts)) =
            (p.parse(), s.parse(), q.parse::<u64>(), ts.parse::<u64>())
        else {
            return;
        };
        let Some(ps) = self.phases.get_mut(phase as usize) else { return };
        match self.last_seq.get_mut(&(receiver, phase, sender)) {
            Some(last) if seq <= *last => {
                ps.duplicated += 1;
                return;
            }
            Some(last) => *last = seq,
            None => {
                self.last_seq.insert((receiver, phase, sender), seq);
            }
        }
        ps.received += 1;
        let _ = ps.latency_us.record(now.saturating_sub(ts).max(1));
    }
}

fn make_payload(phase: u32, sender: u32, seq: u64, size: usize) -> String {
    let mut p = format!("{phase}.{sender}.{seq}.{}.", now_us());
    while p.len() < size {
        p.push('x');
    }
    p
}

/// Refuses anything but this machine.
fn check_loopback(server: &str) -> Result<(), String> {
    let addrs: Vec<_> = server.to_socket_addrs().map_err(|e| format!("{server}: {e}"))?.collect();
    if addrs.is_empty() || !addrs.iter().all(|a| is_loopback(a.ip())) {
        return Err(format!("{server} is not a loopback address: wsim-bench only targets this machine"));
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

async fn connect(
    server: &str,
    proto: &dyn Protocol,
    user: &str,
    group: Option<&str>,
) -> Result<(Sink, Source), String> {
    let token = if proto.needs_ticket() {
        let q = format!("/ticket?userType=0&userName={user}&userId={user}&token1=bench");
        let answer: serde_json::Value =
            serde_json::from_str(&http_request(server, "GET", &q, "").await?).map_err(|e| e.to_string())?;
        answer["data"]["token"].as_str().ok_or_else(|| format!("no ticket: {answer}"))?.to_string()
    } else {
        String::new()
    };
    let url = format!("ws://{server}{}", proto.path());
    // Nagle off: latency is what we measure.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut sink, mut source) = ws.split();
    for step in proto.login_steps(user, group, &token) {
        match step {
            LoginStep::Send(frame) => sink.send(Message::text(frame)).await.map_err(|e| e.to_string())?,
            LoginStep::Expect(done) => loop {
                match tokio::time::timeout(Duration::from_secs(30), source.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) if done(&t) => break,
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(e))) => return Err(e.to_string()),
                    Ok(None) => return Err("closed during login".into()),
                    Err(_) => return Err("login timed out".into()),
                }
            },
        }
    }
    Ok((sink, source))
}

async fn http_request(server: &str, method: &str, path: &str, body: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(server).await.map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).ok_or_else(|| "bad HTTP answer".to_string())
}

/// Reads a connection's frames (answering pings) and records the deliveries.
fn spawn_reader(stats: Rc<RefCell<Stats>>, proto: Rc<dyn Protocol>, idx: u32, mut source: Source) {
    tokio::task::spawn_local(async move {
        while let Some(Ok(msg)) = source.next().await {
            if let Message::Text(t) = msg {
                if let Some(payload) = proto.delivery_payload(&t) {
                    stats.borrow_mut().record(idx, payload, now_us());
                }
            }
        }
    });
}

/// A logged-in connection's write half, with its user index.
struct Conn {
    idx: u32,
    sink: Sink,
}

struct Bench {
    args: Args,
    /// The server addresses (cluster nodes) and their pids.
    servers: Vec<String>,
    pids: Vec<u32>,
    proto: Rc<dyn Protocol>,
    stats: Rc<RefCell<Stats>>,
    users: Vec<String>,
    /// The room each user joins at login (protocols that join rooms that way).
    groups: Vec<Option<String>>,
    conns: Vec<Option<Conn>>,
    note: Vec<String>,
}

impl Bench {
    /// Opens and logs in this shard's connections at the configured rate; starts their readers.
    async fn open(&mut self) -> Result<(), String> {
        let n = self.users.len();
        let gap = Duration::from_secs_f64(1.0 / self.args.connect_rate.clamp(1.0, 100_000.0));
        let mut pending = Vec::with_capacity(n);
        let mut next = tokio::time::Instant::now();
        for (i, user) in self.users.iter().enumerate() {
            tokio::time::sleep_until(next).await;
            next += gap;
            let server = self.servers[i % self.servers.len()].clone();
            let (proto, user, stats) = (self.proto.clone(), user.clone(), self.stats.clone());
            let group = self.groups.get(i).cloned().flatten();
            pending.push(tokio::task::spawn_local(async move {
                // Read (and so answer the server's pings) from the start, as a real client does: the
                // first connections of a long connect phase would otherwise go silent.
                let (sink, source) = connect(&server, proto.as_ref(), &user, group.as_deref()).await?;
                spawn_reader(stats, proto, i as u32, source);
                Ok::<_, String>(sink)
            }));
            if i % 1000 == 999 {
                eprintln!("  {} connections opening", i + 1);
            }
        }
        let mut failures = 0usize;
        let mut first_error = None;
        for (i, p) in pending.into_iter().enumerate() {
            match p.await.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(sink) => self.conns.push(Some(Conn { idx: i as u32, sink })),
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert(e);
                    self.conns.push(None);
                }
            }
        }
        if failures > 0 {
            let note = format!(
                "{failures} of {n} connections failed ({}); reduce --connect-rate",
                first_error.unwrap_or_default()
            );
            eprintln!("note: {note}");
            self.note.push(note);
        }
        if failures * 10 > n {
            return Err("more than 10% of the connections failed".into());
        }
        Ok(())
    }

    fn received(&self, phase: usize) -> u64 {
        self.stats.borrow().phases.get(phase).map(|p| p.received).unwrap_or(0)
    }

    /// Sends from `senders` (connection index → target frames) at `rate` in total for the phase's
    /// duration, then waits for deliveries to settle. Returns the phase's JSON report.
    async fn phase(&mut self, senders: &[(usize, String)], fanout: u64, rate: f64) -> serde_json::Value {
        let phase = {
            let mut st = self.stats.borrow_mut();
            st.phases.push(PhaseStats::new());
            st.phases.len() - 1
        } as u32;
        let per_sender = rate / senders.len().max(1) as f64;
        let duration = Duration::from_secs(self.args.duration);
        let cpu0 = procstat::cpu_seconds_of(&self.pids);
        let started = Instant::now();
        let until = tokio::time::Instant::now() + duration;
        let mut tasks = Vec::new();
        let period = Duration::from_secs_f64(1.0 / per_sender.max(0.001));
        let start = tokio::time::Instant::now();
        for (k, (conn_idx, target)) in senders.iter().enumerate() {
            // Spread the senders' ticks over one period so they do not fire in lockstep.
            let first = start + period.mul_f64(k as f64 / senders.len() as f64);
            let Some(conn) = self.conns.get_mut(*conn_idx).and_then(Option::take) else { continue };
            let (proto, target, size) = (self.proto.clone(), target.clone(), self.args.payload);
            tasks.push(tokio::task::spawn_local(async move {
                let mut conn = conn;
                let mut iv = tokio::time::interval_at(first, period);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut seq = 0u64;
                while tokio::time::Instant::now() < until {
                    iv.tick().await;
                    let payload = make_payload(phase, conn.idx, seq, size);
                    let frame = match target.strip_prefix("g:") {
                        Some(group) => proto.group_frame(group, &payload),
                        None => proto.unicast_frame(&target, &payload),
                    };
                    if conn.sink.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                    seq += 1;
                }
                (conn, seq)
            }));
        }
        let mut sent = 0u64;
        for t in tasks {
            if let Ok((conn, n)) = t.await {
                sent += n;
                let idx = conn.idx as usize;
                self.conns[idx] = Some(conn);
            }
        }
        let send_secs = started.elapsed().as_secs_f64();
        let expected = sent * fanout;
        // Let deliveries settle: until all arrived, or no progress for 2 s (at most 20 s).
        let mut last = self.received(phase as usize);
        let mut last_progress = Instant::now();
        let settle_start = Instant::now();
        while self.received(phase as usize) < expected
            && last_progress.elapsed() < Duration::from_secs(2)
            && settle_start.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.received(phase as usize);
            if now > last {
                last = now;
                last_progress = Instant::now();
            }
        }
        let cpu = match (cpu0, procstat::cpu_seconds_of(&self.pids)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let st = self.stats.borrow();
        let ps = &st.phases[phase as usize];
        let h = &ps.latency_us;
        let ms = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 };
        let delivered = ps.received;
        json!({
            "tool": "wsim-bench",
            "scenario": format!("{:?}", self.args.scenario).to_lowercase(),
            "proto": format!("{:?}", self.args.proto).to_lowercase(),
            "label": self.args.label,
            "connections": self.users.len(),
            "group_size": if self.args.scenario == Scenario::Group { self.args.group_size } else { 0 },
            "senders": senders.len(),
            "payload_bytes": self.args.payload,
            "offered_rate": rate,
            "sent": sent,
            "send_rate": sent as f64 / send_secs,
            "expected": expected,
            "delivered": delivered,
            "lost": expected.saturating_sub(delivered),
            "duplicated": ps.duplicated,
            "delivered_per_sec": delivered as f64 / send_secs,
            "p50_ms": ms(0.5),
            "p95_ms": ms(0.95),
            "p99_ms": ms(0.99),
            "max_ms": if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
            "server_cpu_s": cpu,
            "deliveries_per_cpu_s": cpu.filter(|c| *c > 0.0).map(|c| delivered as f64 / c),
            "notes": self.note,
        })
    }

    async fn close(&mut self) {
        for c in self.conns.iter_mut().filter_map(Option::as_mut) {
            let _ = c.sink.send(Message::Close(None)).await;
        }
    }
}

fn print_row(v: &serde_json::Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let cpu = v["server_cpu_s"].as_f64().map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into());
    let per_cpu = v["deliveries_per_cpu_s"].as_f64().map(|c| format!("{c:.0}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<6} {:>7} {:>5} {:>10.0} {:>10.0} {:>12.0} {:>7} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>10}",
        v["scenario"].as_str().unwrap_or(""),
        v["connections"].as_u64().unwrap_or(0),
        v["group_size"].as_u64().unwrap_or(0),
        f("offered_rate"),
        f("send_rate"),
        f("delivered_per_sec"),
        v["lost"].as_u64().unwrap_or(0),
        v["duplicated"].as_u64().unwrap_or(0),
        f("p50_ms"),
        f("p95_ms"),
        f("p99_ms"),
        f("max_ms"),
        cpu,
        per_cpu
    );
}

fn print_header() {
    println!(
        "{:<6} {:>7} {:>5} {:>10} {:>10} {:>12} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "scen",
        "conns",
        "G",
        "offered/s",
        "sent/s",
        "delivered/s",
        "lost",
        "dup",
        "p50ms",
        "p95ms",
        "p99ms",
        "maxms",
        "cpu_s",
        "deliv/cpu_s"
    );
}

async fn run(args: Args) -> Result<(), String> {
    let servers: Vec<String> = args.server.split(',').map(|s| s.trim().to_string()).collect();
    for s in &servers {
        check_loopback(s)?;
    }
    let pids: Vec<u32> = match &args.server_pid {
        Some(list) => list
            .split(',')
            .map(|p| p.trim().parse::<u32>().map_err(|_| format!("--server-pid: bad pid {p}")))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let (shard, shards) = args
        .shard
        .split_once('/')
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .filter(|(a, b)| *b > 0 && a < b)
        .ok_or("--shard must be i/n with i < n")?;
    if args.duration > MAX_DURATION_SECS || args.rate > MAX_RATE || args.rate <= 0.0 {
        return Err(format!(
            "bounded runs only: --duration <= {MAX_DURATION_SECS}, 0 < --rate <= {MAX_RATE}"
        ));
    }
    let mut notes = Vec::new();
    let mut n = args.connections.min(MAX_CONNECTIONS) / shards;
    if let Some(limit) = procstat::open_files_limit() {
        let cap = (limit as usize).saturating_sub(64);
        if n > cap {
            notes.push(format!(
                "connections capped at {cap} by this process's open-file limit ({limit}); \
                 run several processes with --shard i/n for more"
            ));
            n = cap;
        }
    }
    if args.scenario == Scenario::Group {
        n = n.max(args.group_size.max(2));
    }
    let run_id = now_us() % 1_000_000_000;
    let users: Vec<String> = (0..n).map(|i| format!("b{run_id}s{shard}u{i}")).collect();
    for note in &notes {
        eprintln!("note: {note}");
    }
    let proto: Rc<dyn Protocol> = match args.proto {
        Proto::Wsim => Rc::new(proto::Wsim),
        Proto::Socketio => Rc::new(proto::SocketIo),
    };
    // Rooms joined at login: user i is in room i / G.
    let g = args.group_size.max(2);
    let groups: Vec<Option<String>> = (0..n)
        .map(|i| {
            let joins = args.scenario == Scenario::Group && proto.joins_rooms_at_login();
            (joins && i < (n / g).max(1) * g).then(|| format!("b{run_id}r{}", i / g))
        })
        .collect();
    let mut bench = Bench {
        servers,
        pids,
        proto,
        stats: Rc::new(RefCell::new(Stats::default())),
        users,
        groups,
        conns: Vec::new(),
        note: notes,
        args,
    };
    let rss0 = procstat::rss_bytes_of(&bench.pids);
    eprintln!("opening {n} connections");
    let t0 = Instant::now();
    bench.open().await?;
    eprintln!("{n} connections logged in after {:.1} s", t0.elapsed().as_secs_f64());

    match bench.args.scenario {
        Scenario::Idle => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss1 = procstat::rss_bytes_of(&bench.pids);
            let cpu0 = procstat::cpu_seconds_of(&bench.pids);
            tokio::time::sleep(Duration::from_secs(bench.args.duration)).await;
            let cpu1 = procstat::cpu_seconds_of(&bench.pids);
            let per_conn = match (rss0, rss1) {
                (Some(a), Some(b)) => {
                    let open = bench.conns.iter().filter(|c| c.is_some()).count();
                    Some(b.saturating_sub(a) as f64 / open.max(1) as f64)
                }
                _ => None,
            };
            let idle_cpu = match (cpu0, cpu1) {
                (Some(a), Some(b)) => Some((b - a) / bench.args.duration as f64 * 100.0),
                _ => None,
            };
            let v = json!({
                "tool": "wsim-bench",
                "scenario": "idle",
                "label": bench.args.label,
                "connections": bench.conns.iter().filter(|c| c.is_some()).count(),
                "server_rss_before": rss0,
                "server_rss_after": rss1,
                "rss_per_connection_bytes": per_conn,
                "idle_cpu_percent": idle_cpu,
                "hold_secs": bench.args.duration,
                "notes": bench.note,
            });
            println!("scenario   conns   rss/conn(KiB)   idle cpu %");
            println!(
                "idle     {:>7}   {:>13}   {:>10}",
                n,
                per_conn.map(|b| format!("{:.2}", b / 1024.0)).unwrap_or_else(|| "-".into()),
                idle_cpu.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into())
            );
            println!("{v}");
        }
        Scenario::Ring | Scenario::Group => {
            let (senders, fanout): (Vec<(usize, String)>, u64) = if bench.args.scenario == Scenario::Ring {
                ((0..n).map(|i| (i, bench.users[(i + 1) % n].clone())).collect(), 1)
            } else {
                let g = bench.args.group_size.max(2);
                let mut senders = Vec::new();
                for room in 0..(n / g).max(1) {
                    let members: Vec<String> = bench.users[room * g..(room + 1) * g].to_vec();
                    let gid = match bench.proto.create_group_request(&members) {
                        Some((path, body)) => {
                            let answer = http_request(&bench.servers[0], "POST", &path, &body).await?;
                            bench
                                .proto
                                .group_id_from_response(&answer)
                                .ok_or_else(|| format!("creating a room failed: {answer}"))?
                        }
                        None => bench.groups[room * g].clone().ok_or("no room joined at login")?,
                    };
                    for s in 0..bench.args.senders.clamp(1, g) {
                        senders.push((room * g + s, format!("g:{gid}")));
                    }
                }
                let echo = u64::from(bench.proto.group_echo());
                (senders, (g - 1) as u64 + echo)
            };
            print_header();
            let mut rate = bench.args.rate;
            let steps = if bench.args.find_knee { bench.args.knee_steps.max(1) } else { 1 };
            let mut knee: Option<f64> = None;
            let mut passed_all = true;
            for _ in 0..steps {
                let v = bench.phase(&senders, fanout, rate).await;
                print_row(&v);
                println!("{v}");
                let ok =
                    v["lost"].as_u64() == Some(0) && v["p99_ms"].as_f64().unwrap_or(f64::MAX) <= KNEE_P99_MS;
                if !bench.args.find_knee {
                    break;
                }
                if !ok {
                    passed_all = false;
                    break;
                }
                knee = Some(rate);
                rate = (rate * bench.args.knee_step).min(MAX_RATE);
            }
            if bench.args.find_knee {
                let v = json!({"tool": "wsim-bench", "scenario": format!("{:?}", bench.args.scenario).to_lowercase(),
                    "label": bench.args.label, "connections": n,
                    "group_size": if bench.args.scenario == Scenario::Group { bench.args.group_size } else { 0 },
                    "knee_rate": knee, "knee_reached": !passed_all,
                    "knee_rule": "highest offered rate with p99 <= 100 ms and nothing lost"});
                let bound = if passed_all { "at least " } else { "" };
                println!(
                    "knee: {}",
                    knee.map(|k| format!("{bound}{k:.0} msg/s offered"))
                        .unwrap_or_else(|| "below the first step".into())
                );
                println!("{v}");
            }
        }
    }
    bench.close().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsim-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsim-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_duplicates_and_latency() {
        let mut st = Stats::default();
        st.phases.push(PhaseStats::new());
        let now = now_us();
        let p = |seq: u64| format!("0.7.{seq}.{}.xx", now - 1000);
        st.record(1, &p(0), now);
        st.record(1, &p(1), now);
        st.record(1, &p(1), now);
        st.record(2, &p(1), now);
        st.record(1, "garbage", now);
        assert_eq!(st.phases[0].received, 3);
        assert_eq!(st.phases[0].duplicated, 1);
        assert!(st.phases[0].latency_us.value_at_quantile(0.5) >= 1000);
    }

    #[test]
    fn only_loopback_is_accepted() {
        assert!(check_loopback("127.0.0.1:6060").is_ok());
        assert!(check_loopback("[::1]:6060").is_ok());
        assert!(check_loopback("10.0.0.1:6060").is_err());
    }

    #[test]
    fn payloads_have_the_asked_size() {
        let p = make_payload(1, 2, 3, 100);
        assert_eq!(p.len(), 100);
        assert!(!p.contains('_'));
    }
}
