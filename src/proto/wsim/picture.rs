//! Writing JPEG pictures — video thumbnails and posters, the default avatar and group picture, group
//! snaps — with one encoder (the image crate's), and the one error type for it.

use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};

/// Why a picture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    #[error("a picture of {0}x{1} is too large for JPEG")]
    TooLarge(u32, u32),
    #[error("{0} bytes of pixels for a picture of {1}x{2}")]
    BadPixels(usize, u32, u32),
    #[error("JPEG encoding: {0}")]
    Encode(#[from] image::ImageError),
    #[error("writing the picture: {0}")]
    Io(#[from] std::io::Error),
    #[error("the drawing task failed: {0}")]
    Task(String),
}

/// Largest side a JPEG can have.
const MAX_SIDE: u32 = 65_535;

/// An RGB picture (`w`×`h`, 3 bytes a pixel) as JPEG bytes.
pub fn encode_rgb(w: u32, h: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, PictureError> {
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(PictureError::TooLarge(w, h));
    }
    if rgb.len() as u64 != u64::from(w) * u64::from(h) * 3 {
        return Err(PictureError::BadPixels(rgb.len(), w, h));
    }
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality).write_image(rgb, w, h, ExtendedColorType::Rgb8)?;
    Ok(out)
}

/// Largest side of a picture decoded from untrusted bytes (avatars drawn into group snaps): the
/// decoder refuses larger ones from their header, before it allocates anything.
pub const DECODE_MAX_SIDE: u32 = 4096;
/// Most memory the decoder may allocate for one picture.
pub const DECODE_MAX_ALLOC: u64 = 96 << 20;

/// Decodes a picture from untrusted bytes within [`DECODE_MAX_SIDE`] and [`DECODE_MAX_ALLOC`]: a
/// small file claiming a huge picture (a decompression bomb) is refused, not expanded.
pub fn decode_limited(bytes: &[u8]) -> Result<image::DynamicImage, image::ImageError> {
    // A panic in a decoder (a bug it has on some input) is a picture that cannot be decoded.
    std::panic::catch_unwind(|| decode_unguarded(bytes)).unwrap_or_else(|_| {
        Err(image::ImageError::Decoding(image::error::DecodingError::from_format_hint(
            image::error::ImageFormatHint::Unknown,
        )))
    })
}

fn decode_unguarded(bytes: &[u8]) -> Result<image::DynamicImage, image::ImageError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(DECODE_MAX_SIDE);
    limits.max_image_height = Some(DECODE_MAX_SIDE);
    limits.max_alloc = Some(DECODE_MAX_ALLOC);
    reader.limits(limits);
    reader.decode()
}

/// Writes `bytes` to `path` through a temporary file, so readers never see half a picture.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PictureError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// An RGB picture as a JPEG file (video thumbnails).
pub fn write_rgb_jpeg(path: &Path, w: u32, h: u32, rgb: &[u8]) -> Result<(), PictureError> {
    write_atomically(path, &encode_rgb(w, h, rgb, 85)?)
}

/// A plain JPEG of one colour (default avatar and group picture, video posters).
pub fn write_solid_jpeg(path: &Path, w: u16, h: u16, rgb: [u8; 3]) -> Result<(), PictureError> {
    let pixels: Vec<u8> = std::iter::repeat_n(rgb, usize::from(w) * usize::from(h)).flatten().collect();
    write_rgb_jpeg(path, u32::from(w), u32::from(h), &pixels)
}

/// A neutral grey poster of a video's size (a smaller one for huge sizes, same aspect ratio).
pub fn write_poster(path: &Path, w: u32, h: u32) -> Result<(), PictureError> {
    let scale = (f64::from(w.max(h)) / 1920.0).max(1.0);
    let (w, h) = (((f64::from(w) / scale) as u16).max(1), ((f64::from(h) / scale) as u16).max(1));
    write_solid_jpeg(path, w, h, [0x9e, 0x9e, 0x9e])
}

/// PNG files made byte by byte, for tests: a header claiming `w`×`h` (1-bit grey) and pixel data
/// that is all zeros (a real, tiny, well-formed picture for small sizes; a bomb for large ones).
#[cfg(test)]
pub(crate) mod craft {
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

    /// A zlib stream of `n` zero bytes in stored (uncompressed) blocks.
    fn zlib_zeros(n: usize) -> Vec<u8> {
        let mut out = vec![0x78, 0x01];
        let mut left = n;
        loop {
            let len = left.min(65_535);
            left -= len;
            out.push(u8::from(left == 0));
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&(!(len as u16)).to_le_bytes());
            out.extend(std::iter::repeat_n(0u8, len));
            if left == 0 {
                break;
            }
        }
        // Adler-32 of n zeros: a = 1, b = n (mod 65521).
        let adler = (((n % 65_521) as u32) << 16) | 1;
        out.extend_from_slice(&adler.to_be_bytes());
        out
    }

    /// A PNG of `w`×`h` 1-bit grey pixels, all black; with `rows` set, only that many rows of pixel
    /// data are included (the rest missing, as in a file cut short).
    pub fn png(w: u32, h: u32, rows: Option<u32>) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        let row = 1 + (w as usize).div_ceil(8);
        let rows = rows.unwrap_or(h).min(h) as usize;
        chunk(&mut out, b"IDAT", &zlib_zeros(row * rows));
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_pictures_decode_within_limits() {
        let small = craft::png(16, 8, None);
        let img = decode_limited(&small).expect("a small picture decodes");
        assert_eq!((img.width(), img.height()), (16, 8));
        // A header claiming 20000x20000 is refused from the header, before anything is allocated.
        for (w, h) in [(20_000, 20_000), (DECODE_MAX_SIDE + 1, 10), (10, DECODE_MAX_SIDE + 1)] {
            let bomb = craft::png(w, h, Some(1));
            assert!(bomb.len() < 4096, "{} bytes", bomb.len());
            let err = decode_limited(&bomb).expect_err("refused");
            assert!(matches!(err, image::ImageError::Limits(_)), "{w}x{h}: {err}");
        }
        assert!(decode_limited(b"not a picture").is_err());
    }

    #[test]
    fn pictures_encode_and_bad_sizes_are_refused() {
        let jpeg = encode_rgb(2, 1, &[255, 0, 0, 0, 0, 255], 90).expect("encodes");
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG");
        assert_eq!(imagesize::blob_size(&jpeg).map(|s| (s.width, s.height)).ok(), Some((2, 1)));
        assert!(matches!(encode_rgb(70_000, 1, &[], 90), Err(PictureError::TooLarge(70_000, 1))));
        assert!(matches!(encode_rgb(0, 5, &[], 90), Err(PictureError::TooLarge(0, 5))));
        assert!(matches!(encode_rgb(2, 2, &[0; 5], 90), Err(PictureError::BadPixels(5, 2, 2))));
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("poster.jpg");
        write_poster(&p, 20_000, 10_000).expect("poster");
        let size = imagesize::size(&p).expect("size");
        assert_eq!((size.width, size.height), (1920, 960), "scaled down, same aspect ratio");
    }
}
