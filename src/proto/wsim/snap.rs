//! Group snaps: a 340×340 JPEG on a light grey background with up to 9 member avatars in a grid
//! (1: one centred 150 px tile; 2–4: a 2×2 grid of 150 px tiles; 5–9: a 3×3 grid of 100 px tiles; 10 px
//! gaps; filled row by row in member order). Avatars are read from disk when they are this server's own
//! media, or fetched with awc (timeout, size cap, User-Agent) from the origins of `[wsim]
//! avatar_fetch_allow` only, redirects included: a user's avatar URL must not make the server reach
//! its loopback or private network. One that cannot be had or decoded (within the decoder's limits)
//! becomes a neutral tile. Decoding and drawing run on the blocking pool, [`DRAWING_AT_ONCE`] snaps at
//! a time. The file is named `<groupid>_<8 hex of its content>.jpg`, so a changed snap always gets a
//! new URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use image::imageops::FilterType;
use image::{Rgb, RgbImage};

use super::picture::{decode_limited, encode_rgb, write_atomically, PictureError};
use md5::{Digest, Md5};

use super::upload::{PIC_DIR, VIDEO_DIR};

pub const SIZE: u32 = 340;
pub const BACKGROUND: [u8; 3] = [0xee, 0xee, 0xee];
pub const NEUTRAL: [u8; 3] = [0xbb, 0xbb, 0xbb];
pub const GAP: u32 = 10;
/// Snaps drawn at once (each decodes up to nine avatars).
pub const DRAWING_AT_ONCE: usize = 2;
/// Redirects an avatar fetch follows (each to an allowed origin).
const MAX_REDIRECTS: usize = 3;

static DRAWING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DRAWING_AT_ONCE);

/// How avatars are fetched.
#[derive(Debug, Clone)]
pub struct SnapSettings {
    pub data_dir: PathBuf,
    pub public_url: String,
    pub fetch_timeout: Duration,
    pub max_avatar_bytes: usize,
    /// Origins (`scheme://host[:port]`) avatars may be fetched from, besides this server's own media.
    pub fetch_allow: Vec<Origin>,
}

/// A URL's scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an `http` or `https` URL (`None` for anything else).
    pub fn of(url: &str) -> Option<Origin> {
        let uri: actix_web::http::Uri = url.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        if host.is_empty() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return None;
        }
        Some(Origin { scheme, host, port: uri.port_u16().unwrap_or(default_port) })
    }
}

impl SnapSettings {
    fn allowed(&self, url: &str) -> bool {
        Origin::of(url).is_some_and(|o| self.fetch_allow.contains(&o))
    }
}

/// Top-left corners and tile size for `n` avatars (at most 9 are drawn).
pub fn layout(n: usize) -> (u32, Vec<(u32, u32)>) {
    let (cols, tile, count) = match n {
        0 => return (0, Vec::new()),
        1 => return (150, vec![((SIZE - 150) / 2, (SIZE - 150) / 2)]),
        2..=4 => (2u32, 150u32, n),
        _ => (3u32, 100u32, n.min(9)),
    };
    let span = cols * tile + (cols - 1) * GAP;
    let margin = (SIZE - span) / 2;
    let cells = (0..count as u32)
        .map(|i| (margin + (i % cols) * (tile + GAP), margin + (i / cols) * (tile + GAP)))
        .collect();
    (tile, cells)
}

/// Draws the snap from the avatars' bytes (`None`: neutral tile); returns the JPEG.
pub fn draw(avatars: &[Option<Vec<u8>>]) -> Result<Vec<u8>, PictureError> {
    let mut canvas = RgbImage::from_pixel(SIZE, SIZE, Rgb(BACKGROUND));
    let (tile, cells) = layout(avatars.len());
    for ((x, y), bytes) in cells.into_iter().zip(avatars) {
        let decoded = bytes.as_deref().and_then(|b| decode_limited(b).ok());
        let tile_img = match decoded {
            Some(img) => img.resize_exact(tile, tile, FilterType::Triangle).to_rgb8(),
            None => RgbImage::from_pixel(tile, tile, Rgb(NEUTRAL)),
        };
        image::imageops::overlay(&mut canvas, &tile_img, i64::from(x), i64::from(y));
    }
    encode_rgb(SIZE, SIZE, canvas.as_raw(), 90)
}

/// Fetches one avatar: this server's own media from disk, anything else with awc.
async fn fetch(settings: &SnapSettings, url: &str) -> Option<Vec<u8>> {
    for dir in [PIC_DIR, VIDEO_DIR] {
        let prefix = format!("{}/{dir}/", settings.public_url);
        if let Some(name) = url.strip_prefix(&prefix) {
            if !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']) {
                let path = settings.data_dir.join(dir).join(name);
                let cap = settings.max_avatar_bytes;
                return actix_web::rt::task::spawn_blocking(move || read_capped(&path, cap))
                    .await
                    .ok()
                    .flatten();
            }
            return None;
        }
    }
    let client = awc::Client::builder()
        .timeout(settings.fetch_timeout)
        .disable_redirects()
        .add_default_header((
            actix_web::http::header::USER_AGENT,
            concat!("wsim/", env!("CARGO_PKG_VERSION"), " (group snap avatar fetcher)"),
        ))
        .finish();
    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        if !settings.allowed(&url) {
            log::debug!("avatar {url}: not an allowed origin ([wsim] avatar_fetch_allow)");
            return None;
        }
        let mut res = client.get(&url).send().await.ok()?;
        if res.status().is_redirection() {
            let next = res.headers().get(actix_web::http::header::LOCATION)?.to_str().ok()?;
            // Relative locations stay on the same origin.
            url = if next.starts_with('/') {
                let o = Origin::of(&url)?;
                format!("{}://{}:{}{next}", o.scheme, o.host, o.port)
            } else {
                next.to_string()
            };
            continue;
        }
        if !res.status().is_success() {
            return None;
        }
        return res.body().limit(settings.max_avatar_bytes).await.ok().map(|b| b.to_vec());
    }
    None
}

fn read_capped(path: &Path, cap: usize) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > cap as u64 {
        return None;
    }
    std::fs::read(path).ok()
}

/// Draws and stores the snap of a group from its members' avatar URLs (in member order); returns the
/// snap's URL.
pub async fn render_group_snap(
    settings: &SnapSettings,
    group: &str,
    avatar_urls: &[String],
) -> Result<String, PictureError> {
    let urls: Vec<&String> = avatar_urls.iter().take(9).collect();
    let avatars = futures_util::future::join_all(urls.iter().map(|u| fetch(settings, u))).await;
    let _drawing = DRAWING.acquire().await.map_err(|e| PictureError::Task(e.to_string()))?;
    let dir = settings.data_dir.join(VIDEO_DIR);
    let group = group.to_string();
    let name = actix_web::rt::task::spawn_blocking(move || -> Result<String, PictureError> {
        let jpeg = draw(&avatars)?;
        let digest: String = Md5::digest(&jpeg).iter().take(4).map(|b| format!("{b:02x}")).collect();
        // Group ids are ids (no separators), but keep file names plain whatever they are.
        let safe: String =
            group.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let name = format!("{safe}_{digest}.jpg");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(&name);
        if !path.exists() {
            write_atomically(&path, &jpeg)?;
        }
        Ok(name)
    })
    .await
    .map_err(|e| PictureError::Task(e.to_string()))??;
    Ok(format!("{}/{VIDEO_DIR}/{name}", settings.public_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_follow_the_rules() {
        assert_eq!(layout(1), (150, vec![(95, 95)]));
        let (tile, cells) = layout(3);
        assert_eq!(tile, 150);
        assert_eq!(cells, vec![(15, 15), (175, 15), (15, 175)]);
        let (tile, cells) = layout(9);
        assert_eq!(tile, 100);
        assert_eq!(cells.len(), 9);
        assert_eq!(cells[0], (10, 10));
        assert_eq!(cells[8], (230, 230));
        assert_eq!(layout(12).1.len(), 9);
    }

    fn solid_png(rgb: [u8; 3]) -> Vec<u8> {
        let img = RgbImage::from_pixel(40, 40, Rgb(rgb));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).expect("png");
        out.into_inner()
    }

    fn near(a: &Rgb<u8>, b: [u8; 3]) -> bool {
        a.0.iter().zip(b).all(|(x, y)| (i16::from(*x) - i16::from(y)).abs() <= 12)
    }

    #[test]
    fn tiles_land_where_the_layout_says() {
        let red = [220, 20, 20];
        let blue = [20, 20, 220];
        let jpeg = draw(&[Some(solid_png(red)), None, Some(solid_png(blue)), Some(b"not an image".to_vec())])
            .expect("draw");
        let img = image::load_from_memory(&jpeg).expect("decodes").to_rgb8();
        assert_eq!(img.dimensions(), (SIZE, SIZE));
        assert!(near(img.get_pixel(90, 90), red));
        assert!(near(img.get_pixel(250, 90), NEUTRAL));
        assert!(near(img.get_pixel(90, 250), blue));
        assert!(near(img.get_pixel(250, 250), NEUTRAL));
        assert!(near(img.get_pixel(5, 5), BACKGROUND));
        assert!(near(img.get_pixel(170, 170), BACKGROUND), "the gap");
    }
}
