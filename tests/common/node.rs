//! A Node.js helper process from tests/node (real Socket.IO clients, a browser driver), driven by one
//! JSON command per line on its stdin; it answers with one JSON event per line on its stdout.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// How long an expected event may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct NodeAgent {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    seen: VecDeque<Value>,
}

impl NodeAgent {
    /// Starts `tests/node/<script>` once `node_modules/<needs>` is installed, and waits for its
    /// `ready` event.
    pub async fn start(script: &str, needs: &str) -> NodeAgent {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
        assert!(
            std::path::Path::new(dir).join("node_modules").join(needs).exists(),
            "{needs} is missing: run `make test` (or `npm ci` in tests/node)"
        );
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut a = NodeAgent { child, stdin, events, seen: VecDeque::new() };
        a.expect_raw(|v| v["event"] == "ready").await;
        a
    }

    pub fn cmd(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").expect("write to node");
        self.stdin.flush().expect("flush");
    }

    /// The first event (seen before or coming within [`WAIT`]) that `want` takes.
    pub async fn expect_raw(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&want) {
            return self.seen.remove(i).expect("present");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) if v["event"] == "agent_error" => panic!("agent: {v}"),
                Ok(Some(v)) if want(&v) => return v,
                Ok(Some(v)) => self.seen.push_back(v),
                Ok(None) => panic!("the node agent exited"),
                Err(_) => {
                    let last: Vec<&Value> = self.seen.iter().rev().take(20).collect();
                    panic!("timed out; {} events not taken, the last: {last:?}", self.seen.len())
                }
            }
        }
    }

    /// The next `event` of `name` (its `data`, or the whole event when it has none).
    pub async fn expect(&mut self, name: &str, event: &str) -> Value {
        let v = self.expect_raw(|v| v["name"] == name && v["event"] == event).await;
        if v.get("data").is_some() {
            v["data"].clone()
        } else {
            v
        }
    }

    /// Collects the events that come within `wait`.
    pub async fn gather(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(v)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.seen.push_back(v);
        }
    }

    /// Asserts that `name` gets no `event` within `wait`.
    pub async fn expect_none(&mut self, name: &str, event: &str, wait: Duration) {
        self.gather(wait).await;
        let hit = self.seen.iter().find(|v| v["name"] == name && v["event"] == event);
        assert!(hit.is_none(), "{name} got {event}: {hit:?}");
    }

    /// The events seen so far and not yet taken.
    pub fn seen(&self) -> impl Iterator<Item = &Value> {
        self.seen.iter()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
