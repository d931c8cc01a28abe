//! wsim-bench against a real server: a short ring and group run deliver everything, and the report
//! says so in its JSON line.
#![cfg(feature = "bench-tool")]

mod common;

use common::{Backend, TestServer};

fn run_bench(s: &TestServer, args: &[&str]) -> Vec<serde_json::Value> {
    let server = s.base.trim_start_matches("http://").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsim-bench"))
        .args(args)
        .args(["--server", &server, "--duration", "1"])
        .output()
        .expect("run wsim-bench");
    assert!(out.status.success(), "wsim-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn ring_and_group_runs_report_every_delivery() {
    let s = TestServer::start(&Backend::any(), &[]);
    let ring = run_bench(&s, &["ring", "--connections", "20", "--rate", "200"]);
    assert_eq!(ring.len(), 1);
    let r = &ring[0];
    assert!(r["sent"].as_u64().expect("sent") > 100, "{r}");
    assert_eq!(r["delivered"], r["expected"], "{r}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicated"], 0);
    assert!(r["p99_ms"].as_f64().expect("p99") > 0.0);

    let group = run_bench(
        &s,
        &["group", "--connections", "20", "--group-size", "10", "--senders", "2", "--rate", "50"],
    );
    let g = &group[0];
    let sent = g["sent"].as_u64().expect("sent");
    assert_eq!(g["expected"].as_u64(), Some(sent * 9), "{g}");
    assert_eq!(g["delivered"], g["expected"], "{g}");
}

#[test]
fn refuses_addresses_off_this_machine() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsim-bench"))
        .args(["ring", "--server", "10.1.2.3:6060"])
        .output()
        .expect("run wsim-bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
