//! Micro-benchmark of the hot pure functions on the message path: parsing a send signal and rendering
//! a receive frame. Run with `cargo bench --bench codec`; it prints nanoseconds per call (median of
//! several rounds), so figures can be compared between commits on the same machine.

use std::hint::black_box;
use std::time::Instant;

use wsim::core::Message;
use wsim::proto::wsim::codec::parse;
use wsim::proto::wsim::render::incoming_frame;

fn median_ns_per_call(rounds: usize, calls: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_nanos() as f64 / calls as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[rounds / 2]
}

fn main() {
    let frame = format!("text_10_{}_group_eyJzZW5kZXIiOiJhIn0=", "x".repeat(100));
    let parse_ns = median_ns_per_call(15, 200_000, || {
        let _ = black_box(parse(black_box(&frame)));
    });
    let msg = Message {
        id: 1,
        app: "default".into(),
        conv: "10".into(),
        sender: "1000001653".into(),
        recipient: String::new(),
        kind: "text".into(),
        payload: "x".repeat(100),
        extension: "eyJzZW5kZXIiOiJhIn0=".into(),
        sent_us: 1_700_000_000_000_000,
        status: 0,
        conv_type: 0,
    };
    let render_ns = median_ns_per_call(15, 200_000, || {
        black_box(incoming_frame(black_box(&msg), "1000006331"));
    });
    println!("codec/parse_send_100B     {parse_ns:>8.1} ns/call");
    println!("render/incoming_100B      {render_ns:>8.1} ns/call");
}
