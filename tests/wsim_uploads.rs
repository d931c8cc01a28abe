//! Media uploads over real HTTP: real metadata from every listed format, the documented URLs, every
//! error, and the files served back with their headers and range requests.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use md5::{Digest, Md5};

on_both_backends!(uploads_read_real_metadata_and_serve_files_back);

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

async fn get(url: &str, range: Option<&str>) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut req = client.get(url);
    if let Some(r) = range {
        req = req.insert_header(("Range", r));
    }
    let mut res = req.send().await.expect("GET");
    let body = res.body().limit(1 << 24).await.expect("body").to_vec();
    (res.status().as_u16(), res.headers().clone(), body)
}

async fn uploads_read_real_metadata_and_serve_files_back(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let cases = [
        ("/upload/writev1", "clip.mp3", "emopic", "3.mp3", "OK"),
        ("/upload/writev1", "clip.m4a", "emopic", "3.m4a", "OK"),
        ("/upload/writev1", "clip.amr", "emopic", "3.amr", "OK"),
        ("/upload/writev1", "clip.wav", "emopic", "3.wav", "OK"),
        ("/upload/writev1", "clip.ogg", "emopic", "3.ogg", "OK"),
        ("/upload/writev2", "pic.jpg", "emopic", "64x48.jpg", "OK"),
        ("/upload/writev2", "pic.png", "emopic", "64x48.png", "OK"),
        ("/upload/writev2", "pic.gif", "emopic", "64x48.gif", "OK"),
        ("/upload/writev2", "pic.webp", "emopic", "64x48.webp", "OK"),
        ("/upload/writev2", "clip.mp3", "emopic", "3.mp3", "OK"),
        ("/upload/writev3", "clip.mp4", "emovideo", "160x120.mp4", "Succeeded"),
        ("/upload/writev3", "clip.mov", "emovideo", "176x144.mov", "Succeeded"),
    ];
    for (endpoint, file, dir, tail, message) in cases {
        let data = fixture(file);
        // The name lies: the type comes from the bytes.
        let (status, v) = s.upload(endpoint, "file", "upload.bin", &data).await;
        assert_eq!(status, 200);
        let want = format!("{}/{dir}/{}-{tail}", s.base, md5_hex(&data));
        assert_eq!(v["code"], 0, "{file}: {v}");
        assert_eq!(v["message"], message);
        assert_eq!(v["data"], want.as_str(), "{file}");
        let (status, headers, body) = get(&want, None).await;
        assert_eq!(status, 200, "{want}");
        assert_eq!(body, data, "served back byte for byte");
        assert!(headers.contains_key("etag"));
        assert!(headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("max-age")));
    }
    // Content types.
    for (file, ty) in [("clip.mp3", "audio/mpeg"), ("pic.png", "image/png")] {
        let data = fixture(file);
        let (_, v) = s.upload("/upload/writev2", "file", file, &data).await;
        let (_, headers, _) = get(v["data"].as_str().expect("url"), None).await;
        assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some(ty));
    }
    // Video thumbnail at the same URL with .jpg.
    let data = fixture("clip.mp4");
    let (_, v) = s.upload("/upload/writev3", "file", "v.mp4", &data).await;
    let url = v["data"].as_str().expect("url").to_string();
    let (status, headers, thumb) = get(&url.replace(".mp4", ".jpg"), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("image/jpeg"));
    assert_eq!(&thumb[..3], &[0xff, 0xd8, 0xff]);
    // The H.264 clip's thumbnail is its real first frame (a colourful test pattern), not a flat poster.
    let img = image::load_from_memory(&thumb).expect("thumbnail decodes").to_rgb8();
    assert_eq!(img.dimensions(), (160, 120));
    let distinct: std::collections::HashSet<[u8; 3]> =
        img.pixels().map(|p| [p.0[0] / 32, p.0[1] / 32, p.0[2] / 32]).collect();
    assert!(distinct.len() > 8, "a real picture, not a poster ({} colours)", distinct.len());
    // The MPEG-4 Part 2 clip gets a neutral poster of its size.
    let (_, v) = s.upload("/upload/writev3", "file", "v.mov", &fixture("clip.mov")).await;
    let mov = v["data"].as_str().expect("url").to_string();
    let (_, _, poster) = get(&mov.replace(".mov", ".jpg"), None).await;
    let img = image::load_from_memory(&poster).expect("poster decodes").to_rgb8();
    assert_eq!(img.dimensions(), (176, 144));
    let distinct: std::collections::HashSet<[u8; 3]> =
        img.pixels().map(|p| [p.0[0] / 32, p.0[1] / 32, p.0[2] / 32]).collect();
    assert!(distinct.len() <= 2, "a flat poster");
    // Range requests (video seeking).
    let (status, headers, part) = get(&url, Some("bytes=100-199")).await;
    assert_eq!(status, 206);
    assert_eq!(part, &data[100..200]);
    assert!(headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("bytes 100-199/")));
    // The same file twice: one stored copy, the same URL.
    let (_, again) = s.upload("/upload/writev3", "file", "again.mp4", &data).await;
    assert_eq!(again["data"], url.as_str());

    // Errors: no file, unknown type, wrong kind for the endpoint, truncated file.
    let err = |code: i64, msg: &str| serde_json::json!({"code": code, "message": msg, "data": ""});
    let (_, v) = s.upload("/upload/writev1", "other", "x.mp3", &fixture("clip.mp3")).await;
    assert_eq!(v, err(1, "参数错误"));
    let (_, v) = s.upload("/upload/writev2", "file", "x.jpg", b"just some text, not an image").await;
    assert_eq!(v, err(1, "参数错误"));
    let (_, v) = s.upload("/upload/writev1", "file", "x.mp3", &fixture("pic.jpg")).await;
    assert_eq!(v, err(1, "参数错误"));
    let mp4 = fixture("clip.mp4");
    let (_, v) = s.upload("/upload/writev3", "file", "x.mp4", &mp4[..mp4.len() / 3]).await;
    assert_eq!(v, err(1, "参数错误"));
    let amr = fixture("clip.amr");
    let (_, v) = s.upload("/upload/writev1", "file", "x.amr", &amr[..amr.len() - 7]).await;
    assert_eq!(v, err(1, "参数错误"));
    // Nothing is left behind by refused uploads.
    let tmp = s.data_dir().join("tmp");
    assert!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0, "temporary files left");
    // Paths outside the media folders are unreachable.
    for path in ["/emopic/..%2Fwsim.db", "/emopic/%2E%2E%2Fwsim.db", "/emovideo/.hidden", "/emopic/nope.jpg"]
    {
        let (status, _, _) = get(&s.url(path), None).await;
        assert_eq!(status, 404, "{path}");
    }
    // A browser form on GET.
    let (status, headers, body) = get(&s.url("/upload/writev1"), None).await;
    assert_eq!(status, 200);
    assert!(headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html")));
    assert!(String::from_utf8_lossy(&body).contains("name=file"));
    // The default images exist.
    let (status, _, _) = get(&s.url("/emovideo/default_group.jpg"), None).await;
    assert_eq!(status, 200);
}

/// Size limits come from the configuration and are enforced while streaming.
#[actix_rt::test]
async fn too_large_uploads_are_refused_and_leave_nothing() {
    let s = TestServer::start_with_config(
        &Backend::any(),
        "[uploads]\nmax_audio_mib = 1\nmax_image_mib = 1\nmax_video_mib = 1\n",
    );
    let mut big = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    big.resize(3 << 20, 0x55);
    for endpoint in ["/upload/writev1", "/upload/writev2", "/upload/writev3"] {
        let (_, v) = s.upload(endpoint, "file", "big.bin", &big).await;
        assert_eq!(v, serde_json::json!({"code": 3, "message": "文件过大", "data": ""}), "{endpoint}");
    }
    let tmp = s.data_dir().join("tmp");
    assert!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0, "temporary files left");
    let stored = std::fs::read_dir(s.data_dir().join("emopic")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 1, "only the default avatar");
}

/// A client that goes away in the middle of an upload leaves no file behind.
#[actix_rt::test]
async fn an_interrupted_upload_leaves_nothing() {
    use std::io::Write;
    let s = TestServer::start(&Backend::any(), &[]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let boundary = "cut";
    let head =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\r\n");
    let mut body = head.into_bytes();
    body.extend_from_slice(&fixture("clip.mp3"));
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        conn,
        "POST /upload/writev1 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len() + 1_000_000
    )
    .expect("head");
    // A few KB of the promised megabyte, then the client vanishes.
    conn.write_all(&body).expect("part of the body");
    conn.flush().expect("flush");
    let tmp = s.data_dir().join("tmp");
    let temporary = || std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert!(
        common::eventually(Duration::from_secs(10), || async { temporary() == 1 }).await,
        "no upload under way"
    );
    drop(conn);
    assert!(
        common::eventually(Duration::from_secs(10), || async { temporary() == 0 }).await,
        "temporary file left"
    );
    let pics: Vec<_> = std::fs::read_dir(s.data_dir().join("emopic"))
        .expect("emopic")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(pics.len(), 1, "only the default avatar: {pics:?}");
}

/// Files cut short and pictures larger than 8192 pixels a side are refused (`code` 1) although their
/// headers, which give the size, came through; the whole files pass.
#[actix_rt::test]
async fn files_cut_short_or_too_large_are_refused() {
    let s = TestServer::start(&Backend::any(), &[]);
    let png = fixture("pic.png");
    let mp4 = fixture("clip.mp4");
    let mut huge = png[..16].to_vec();
    huge.extend_from_slice(&20_000u32.to_be_bytes());
    huge.extend_from_slice(&20_000u32.to_be_bytes());
    huge.extend_from_slice(&png[24..]);
    // (endpoint, bytes, code)
    let table: [(&str, &[u8], i64); 5] = [
        ("/upload/writev2", &png[..60], 1),
        ("/upload/writev2", &huge, 1),
        ("/upload/writev3", &mp4[..mp4.len() - 100], 1),
        ("/upload/writev2", &png, 0),
        ("/upload/writev3", &mp4, 0),
    ];
    for (endpoint, bytes, code) in table {
        let (_, v) = s.upload(endpoint, "file", "f.bin", bytes).await;
        assert_eq!(v["code"], code, "{endpoint} {} bytes: {v}", bytes.len());
    }
}
