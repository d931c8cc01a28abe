//! Group snaps drawn from member avatars, checked by decoding the JPEG and sampling the tiles, on
//! SQLite and MariaDB.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::Service;
use actix_web::{web, App, HttpResponse, HttpServer};
use common::{Backend, TestServer};
use image::{Rgb, RgbImage};

on_both_backends!(snaps_follow_members_and_avatars, avatar_bombs_are_refused_without_blowing_up_memory);

const RED: [u8; 3] = [220, 30, 30];
const GREEN: [u8; 3] = [30, 200, 30];
const BLUE: [u8; 3] = [30, 30, 220];
const NEUTRAL: [u8; 3] = [0xbb, 0xbb, 0xbb];

fn png(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    RgbImage::from_pixel(60, 60, Rgb(rgb)).write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

fn near(p: &Rgb<u8>, want: [u8; 3]) -> bool {
    p.0.iter().zip(want).all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= 16)
}

/// A web server on an ephemeral port: `/green.png` (a green avatar) and `/redirect?to=URL` (302);
/// counts the requests it gets and keeps the last User-Agent.
struct FakeHost {
    base: String,
    hits: Arc<AtomicUsize>,
    agent: Arc<Mutex<String>>,
}

fn start_host() -> FakeHost {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (hits, agent) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(String::new())));
    let (h, a) = (hits.clone(), agent.clone());
    let server = HttpServer::new(move || {
        let (h, a) = (h.clone(), a.clone());
        App::new()
            .wrap_fn(move |req, srv| {
                h.fetch_add(1, Ordering::SeqCst);
                let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
                if let Ok(mut last) = a.lock() {
                    *last = ua.to_string();
                }
                srv.call(req)
            })
            .route(
                "/green.png",
                web::get().to(|| async { HttpResponse::Ok().content_type("image/png").body(png(GREEN)) }),
            )
            .route(
                "/bomb.png",
                web::get()
                    .to(|| async { HttpResponse::Ok().content_type("image/png").body(bomb().to_vec()) }),
            )
            .route(
                "/redirect",
                web::get().to(|q: web::Query<std::collections::HashMap<String, String>>| async move {
                    let to = q.get("to").cloned().unwrap_or_default();
                    HttpResponse::Found().insert_header(("Location", to)).finish()
                }),
            )
    })
    .listen(listener)
    .expect("listen")
    .workers(1)
    .run();
    actix_rt::spawn(server);
    FakeHost { base: format!("http://{addr}"), hits, agent }
}

async fn snap_of(s: &TestServer, gid: &str) -> (String, RgbImage) {
    let v = s.get_json(&format!("/grpinfo?groupid={gid}")).await;
    let url = v["data"]["snap"].as_str().expect("snap").to_string();
    let client = awc::Client::default();
    let mut res = client.get(&url).send().await.expect("GET snap");
    assert_eq!(res.status().as_u16(), 200, "{url}");
    let body = res.body().limit(1 << 22).await.expect("body");
    let img = image::load_from_memory(&body).expect("a JPEG").to_rgb8();
    assert_eq!(img.dimensions(), (340, 340));
    (url, img)
}

async fn snaps_follow_members_and_avatars(b: Backend) {
    // The business CDN is allowed; the "internal" host is not (a private or loopback service).
    let (cdn_host, internal) = (start_host(), start_host());
    let s =
        TestServer::start_with_config(&b, &format!("[wsim]\navatar_fetch_allow = [\"{}\"]\n", cdn_host.base));
    let cdn = format!("{}/green.png", cdn_host.base);
    let (_, v) = s.upload("/upload/writev2", "file", "red.png", &png(RED)).await;
    let red_url = v["data"].as_str().expect("url").to_string();
    let (_, v) = s.upload("/upload/writev2", "file", "blue.png", &png(BLUE)).await;
    let blue_url = v["data"].as_str().expect("url").to_string();
    for (user, avatar) in [
        ("r", red_url.as_str()),
        ("g", cdn.as_str()),
        ("x", "http://127.0.0.1:1/gone.png"),
        ("b", blue_url.as_str()),
    ] {
        let v = s.get_json(&format!("/setuserinfo?userid={user}&snap={avatar}")).await;
        assert_eq!(v["code"], 1, "{v}");
    }
    // r (own media, red), g (fetched, green), x (unreachable), d (never set: the default avatar).
    let v = s.get_json("/creategrp?creator=r&members=g,x,d&name=snappy").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let created_snap = v["data"]["snap"].as_str().expect("snap").to_string();
    let re = format!("/emovideo/{gid}_");
    assert!(created_snap.contains(&re) && created_snap.ends_with(".jpg"), "{created_snap}");
    let hex = created_snap.rsplit('_').next().expect("tail").trim_end_matches(".jpg");
    assert!(hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{created_snap}");
    let (url1, img) = snap_of(&s, &gid).await;
    assert_eq!(url1, created_snap);
    // 2x2 grid of 150 px tiles: centres at 90 and 250.
    assert!(near(img.get_pixel(90, 90), RED));
    assert!(near(img.get_pixel(250, 90), GREEN));
    assert!(near(img.get_pixel(90, 250), NEUTRAL));
    assert!(!near(img.get_pixel(250, 250), RED) && !near(img.get_pixel(250, 250), GREEN));
    assert!(near(img.get_pixel(3, 3), [0xee, 0xee, 0xee]), "light grey background");

    // A fifth member switches to the 3x3 grid of 100 px tiles (centres 60, 170, 280).
    let v = s.get_json(&format!("/addmembers?groupid={gid}&members=b")).await;
    assert_eq!(v["code"], 1);
    let (url2, img) = snap_of(&s, &gid).await;
    assert_ne!(url2, url1, "a new file name");
    assert!(near(img.get_pixel(60, 60), RED));
    assert!(near(img.get_pixel(170, 60), GREEN));
    assert!(near(img.get_pixel(170, 170), BLUE), "fifth tile");

    // Removing a member redraws too.
    let v = s.get_json(&format!("/delmembers?groupid={gid}&members=g")).await;
    assert_eq!(v["code"], 1);
    let (url3, img) = snap_of(&s, &gid).await;
    assert_ne!(url3, url2);
    assert!(near(img.get_pixel(250, 90), NEUTRAL), "x moved into the second tile");

    // A member's new avatar redraws the snap.
    let v = s.get_json(&format!("/setuserinfo?userid=r&snap={blue_url}")).await;
    assert_eq!(v["code"], 1);
    let (url4, img) = snap_of(&s, &gid).await;
    assert_ne!(url4, url3);
    assert!(near(img.get_pixel(90, 90), BLUE));
    // refreshgrp answers the current snap.
    let v = s.get_json(&format!("/refreshgrp?groupid={gid}")).await;
    assert_eq!(v["data"]["snap"], url4.as_str());
    let agent = cdn_host.agent.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(agent.starts_with("wsim/"), "the fetcher says who it is: {agent:?}");

    // Avatars on a host that is not allowed are never fetched, directly or through a redirect from
    // an allowed one: the tiles stay neutral and the internal host sees no request.
    let inside = format!("{}/green.png", internal.base);
    let via_cdn = format!("{}/redirect?to={inside}", cdn_host.base);
    for (user, avatar) in [("i1", inside.as_str()), ("i2", via_cdn.as_str())] {
        let v = s.get_json(&format!("/setuserinfo?userid={user}&snap={}", urlencode(avatar))).await;
        assert_eq!(v["code"], 1, "{v}");
    }
    let v = s.get_json("/creategrp?creator=i1&members=i2&name=inside").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let (_, img) = snap_of(&s, &gid).await;
    assert!(near(img.get_pixel(90, 90), NEUTRAL) && near(img.get_pixel(250, 90), NEUTRAL));
    assert_eq!(internal.hits.load(Ordering::SeqCst), 0, "the internal host was never asked");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A decompression bomb: a PNG of 20000x20000 black 1-bit pixels, ~300 KB, which decodes into 400 MB.
fn bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| png_of_zeros(20_000, 20_000))
}

/// Bits written least significant first, as deflate packs them.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u64, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: its bits go most significant first.
    fn code(&mut self, code: u64, len: u32) {
        let reversed = (0..len).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
        self.put(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// `n` zero bytes as a zlib stream: one fixed-Huffman block, a literal zero then 258-byte copies of
/// the byte before (13 bits each), the rest as literals.
fn zlib_zeros(n: usize) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.put(1, 1); // the last block
    bits.put(1, 2); // fixed Huffman codes
    let literal_zero = |b: &mut Bits| b.code(0x30, 8);
    literal_zero(&mut bits);
    let mut left = n - 1;
    while left >= 258 {
        bits.code(0xc5, 8); // length 258 (code 285)
        bits.code(0, 5); // distance 1
        left -= 258;
    }
    for _ in 0..left {
        literal_zero(&mut bits);
    }
    bits.code(0, 7); // end of block
    let mut out = vec![0x78, 0x01];
    out.extend(bits.finish());
    let adler = (((n % 65_521) as u32) << 16) | 1;
    out.extend_from_slice(&adler.to_be_bytes());
    out
}

fn png_of_zeros(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let row = 1 + (w as usize).div_ceil(8);
    chunk(&mut out, b"IDAT", &zlib_zeros(row * h as usize));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Nine members whose avatars are decompression bombs, in four groups drawn at once, twice: the
/// tiles stay neutral and the server's memory does not move (decoding them would take 400 MB each).
async fn avatar_bombs_are_refused_without_blowing_up_memory(b: Backend) {
    // The bomb is what it claims: a small file that really inflates to 400 MB.
    let small = png_of_zeros(64, 48);
    let img = image::load_from_memory(&small).expect("the encoder makes real PNGs").to_luma8();
    assert_eq!((img.dimensions(), img.get_pixel(10, 10).0), ((64, 48), [0]));
    assert!(bomb().len() < 400_000, "{} bytes", bomb().len());

    let cdn = start_host();
    let s = TestServer::start_with_config(&b, &format!("[wsim]\navatar_fetch_allow = [\"{}\"]\n", cdn.base));
    let url = format!("{}/bomb.png", cdn.base);
    for i in 0..9 {
        let v = s.get_json(&format!("/setuserinfo?userid=b{i}&snap={url}")).await;
        assert_eq!(v["code"], 1, "{v}");
    }
    let memory = common::raw::MemoryWatch::start(s.pid());
    let members = (1..9).map(|i| format!("b{i}")).collect::<Vec<_>>().join(",");
    let create = format!("/creategrp?creator=b0&members={members}");
    let creates = (0..4).map(|_| s.get_json(&create));
    let groups: Vec<String> = futures_util::future::join_all(creates)
        .await
        .iter()
        .map(|v| v["data"]["groupid"].as_str().expect("gid").to_string())
        .collect();
    let paths: Vec<String> = groups.iter().map(|g| format!("/refreshgrp?groupid={g}")).collect();
    let refreshes = paths.iter().map(|p| s.get_json(p));
    for v in futures_util::future::join_all(refreshes).await {
        assert_eq!(v["code"], 1, "{v}");
    }
    let growth = memory.peak_growth_kib();
    drop(memory);
    eprintln!("eight snaps of nine bomb avatars: server RssAnon grew by at most {growth} KiB");
    assert!(growth < 64 * 1024, "RssAnon grew by {growth} KiB");
    let (_, img) = snap_of(&s, &groups[0]).await;
    assert!(near(img.get_pixel(60, 60), NEUTRAL), "a bomb is a neutral tile");
    assert!(cdn.hits.load(Ordering::SeqCst) >= 9, "the avatars were fetched (and refused when decoded)");
}
