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

#[cfg(test)]
mod tests {
    use super::*;

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
