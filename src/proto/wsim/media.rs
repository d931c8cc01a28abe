//! What an uploaded file really is: its type from the magic bytes, and its duration (audio) or size
//! (image, video) read with well-kept parsers (symphonia, imagesize, mp4). AMR, which none of them
//! reads, is measured by counting its fixed-size frames. Blocking file I/O: run off the actor threads.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// What an upload endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// writev1
    Audio,
    /// writev2
    ImageOrAudio,
    /// writev3
    Video,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Mp3,
    M4a,
    Amr,
    AmrWb,
    Wav,
    Ogg,
    Jpeg,
    Png,
    Gif,
    Webp,
    Mp4,
    Mov,
}

impl MediaType {
    pub fn ext(self) -> &'static str {
        match self {
            MediaType::Mp3 => "mp3",
            MediaType::M4a => "m4a",
            MediaType::Amr | MediaType::AmrWb => "amr",
            MediaType::Wav => "wav",
            MediaType::Ogg => "ogg",
            MediaType::Jpeg => "jpg",
            MediaType::Png => "png",
            MediaType::Gif => "gif",
            MediaType::Webp => "webp",
            MediaType::Mp4 => "mp4",
            MediaType::Mov => "mov",
        }
    }

    pub fn is_audio(self) -> bool {
        matches!(
            self,
            MediaType::Mp3
                | MediaType::M4a
                | MediaType::Amr
                | MediaType::AmrWb
                | MediaType::Wav
                | MediaType::Ogg
        )
    }

    pub fn is_image(self) -> bool {
        matches!(self, MediaType::Jpeg | MediaType::Png | MediaType::Gif | MediaType::Webp)
    }
}

/// The real measure of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Audio duration, whole seconds (rounded).
    Seconds(u64),
    /// Image or video size in pixels.
    Size(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("unknown or unsupported file type")]
    UnknownType,
    #[error("unreadable or truncated file: {0}")]
    Unreadable(String),
    #[error("a picture or video of {0}x{1} (at most {MAX_SIDE} a side)")]
    TooLarge(u32, u32),
}

/// Largest side of an uploaded picture or video.
pub const MAX_SIDE: u32 = 8192;
/// Largest side of a video whose first frame is decoded for its thumbnail (larger ones get a poster;
/// OpenH264 is C code reading untrusted bytes: it gets small pictures only, one at a time).
pub const FRAME_MAX_SIDE: u32 = 2048;

/// How long the first frame may take to decode (checked between samples).
const FRAME_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

static FRAME_DECODING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Refuses a picture or video larger than [`MAX_SIDE`] a side.
fn within_limits(w: u32, h: u32) -> Result<Measure, MediaError> {
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(MediaError::TooLarge(w, h));
    }
    Ok(Measure::Size(w, h))
}

/// Checks that a file of a known type is whole, as its own structure says (a file cut short is
/// refused even when its header, which gives its size, came through): a PNG's chunks up to IEND, a
/// JPEG's end-of-image marker, a GIF's trailer, a WebP's RIFF length, an MP4/MOV's top-level boxes.
pub fn check_complete(path: &Path, ty: MediaType) -> Result<(), MediaError> {
    use std::io::{Seek, SeekFrom};
    let unreadable = |e: std::io::Error| MediaError::Unreadable(e.to_string());
    let cut = |what: &str| Err(MediaError::Unreadable(format!("{} cut short: {what}", ty.ext())));
    let mut file = File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    // `n` bytes at `pos`, or `None` past the end (files are read in small pieces, never whole).
    let mut read_at = |pos: u64, n: usize| -> Result<Option<Vec<u8>>, MediaError> {
        if pos.saturating_add(n as u64) > len {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(pos)).map_err(unreadable)?;
        let mut buf = vec![0u8; n];
        file.read_exact(&mut buf).map_err(unreadable)?;
        Ok(Some(buf))
    };
    let tail = |read_at: &mut dyn FnMut(u64, usize) -> Result<Option<Vec<u8>>, MediaError>, n: u64| {
        let n = n.min(len);
        read_at(len - n, n as usize).map(Option::unwrap_or_default)
    };
    match ty {
        MediaType::Png => {
            let mut pos = 8u64;
            loop {
                let Some(head) = read_at(pos, 8)? else { return cut("no IEND chunk") };
                let chunk = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
                let end = pos + 12 + chunk;
                if end > len {
                    return cut("a chunk runs past the end");
                }
                if &head[4..8] == b"IEND" {
                    return Ok(());
                }
                pos = end;
            }
        }
        // The end-of-image marker, possibly followed by a little padding.
        MediaType::Jpeg if tail(&mut read_at, 1024)?.windows(2).any(|w| w == [0xff, 0xd9]) => Ok(()),
        MediaType::Jpeg => cut("no end-of-image marker"),
        MediaType::Gif if len > 13 && tail(&mut read_at, 16)?.contains(&0x3b) => Ok(()),
        MediaType::Gif => cut("no trailer"),
        MediaType::Webp => {
            let Some(riff) = read_at(4, 4)? else { return cut("no RIFF length") };
            let riff = u64::from(u32::from_le_bytes([riff[0], riff[1], riff[2], riff[3]]));
            if riff + 8 <= len {
                Ok(())
            } else {
                cut("shorter than its RIFF length")
            }
        }
        MediaType::Mp4 | MediaType::Mov => {
            let mut pos = 0u64;
            while pos < len {
                let Some(head) = read_at(pos, 8)? else { return cut("a box header") };
                let size = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
                    0 => len - pos,
                    1 => match read_at(pos + 8, 8)? {
                        Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                        None => return cut("a large box header"),
                    },
                    s => u64::from(s),
                };
                if size < 8 || pos.saturating_add(size) > len {
                    return cut("a box runs past the end");
                }
                pos += size;
            }
            Ok(())
        }
        // Audio is measured by walking its frames or packets: what is missing is not counted.
        _ => Ok(()),
    }
}

/// The type of a file from its first bytes; `accept` settles what an ISO-BMFF (`ftyp`) file is.
pub fn sniff(head: &[u8], accept: Accept) -> Option<MediaType> {
    let starts = |magic: &[u8]| head.len() >= magic.len() && &head[..magic.len()] == magic;
    let at =
        |off: usize, magic: &[u8]| head.len() >= off + magic.len() && &head[off..off + magic.len()] == magic;
    let found = if starts(b"#!AMR-WB\n") {
        MediaType::AmrWb
    } else if starts(b"#!AMR\n") {
        MediaType::Amr
    } else if starts(b"OggS") {
        MediaType::Ogg
    } else if starts(b"RIFF") && at(8, b"WAVE") {
        MediaType::Wav
    } else if starts(b"RIFF") && at(8, b"WEBP") {
        MediaType::Webp
    } else if starts(&[0xff, 0xd8, 0xff]) {
        MediaType::Jpeg
    } else if starts(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        MediaType::Png
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        MediaType::Gif
    } else if at(4, b"ftyp") {
        let brand = head.get(8..12).unwrap_or(b"");
        match accept {
            Accept::Video if brand == b"qt  " => MediaType::Mov,
            Accept::Video => MediaType::Mp4,
            _ => MediaType::M4a,
        }
    } else if starts(b"ID3") || (head.len() >= 2 && head[0] == 0xff && head[1] & 0xe0 == 0xe0) {
        MediaType::Mp3
    } else {
        return None;
    };
    let ok = match accept {
        Accept::Audio => found.is_audio(),
        Accept::ImageOrAudio => found.is_audio() || found.is_image(),
        Accept::Video => matches!(found, MediaType::Mp4 | MediaType::Mov),
    };
    ok.then_some(found)
}

/// Runs the parsers of an untrusted file: a panic inside one of them (a bug it has on some input;
/// fuzzing found one in symphonia's ADTS reader) makes the file unreadable, not the upload a crash.
fn guarded<T>(what: &str, parse: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).unwrap_or_else(|_| {
        log::warn!("{what}: a parser panicked on an uploaded file; refused as unreadable");
        Err(MediaError::Unreadable(format!("{what}: unreadable")))
    })
}

/// Reads the measure of a file of a known type.
pub fn measure(path: &Path, ty: MediaType) -> Result<Measure, MediaError> {
    guarded(ty.ext(), || measure_unguarded(path, ty))
}

fn measure_unguarded(path: &Path, ty: MediaType) -> Result<Measure, MediaError> {
    let bad = |e: &dyn std::fmt::Display| MediaError::Unreadable(e.to_string());
    match ty {
        MediaType::Amr | MediaType::AmrWb => amr_seconds(path, ty == MediaType::AmrWb).map(Measure::Seconds),
        t if t.is_audio() => audio_seconds(path, t).map(Measure::Seconds),
        t if t.is_image() => {
            let s = imagesize::size(path).map_err(|e| bad(&e))?;
            let (w, h) = (u32::try_from(s.width).unwrap_or(0), u32::try_from(s.height).unwrap_or(0));
            if w == 0 || h == 0 {
                return Err(MediaError::Unreadable("zero-sized image".into()));
            }
            within_limits(w, h)
        }
        _ => video_size(path),
    }
}

/// Duration of an audio file, read with symphonia: from the stream header when it says, else by
/// walking the packets (no decoding).
fn audio_seconds(path: &Path, ty: MediaType) -> Result<u64, MediaError> {
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;
    let bad = |e: &dyn std::fmt::Display| MediaError::Unreadable(e.to_string());
    let file = File::open(path).map_err(|e| bad(&e))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(ty.ext());
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|e| bad(&e))?;
    let mut format = probed.format;
    let track = format.default_track().ok_or_else(|| MediaError::Unreadable("no audio track".into()))?;
    let (id, params) = (track.id, track.codec_params.clone());
    if let (Some(frames), Some(rate)) = (params.n_frames, params.sample_rate) {
        if rate > 0 && frames > 0 {
            return Ok(((frames as f64) / f64::from(rate)).round() as u64);
        }
    }
    let tb = params.time_base.ok_or_else(|| MediaError::Unreadable("no time base".into()))?;
    let mut end = 0u64;
    let mut packets = 0u64;
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == id => {
                end = end.max(p.ts() + p.dur());
                packets += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if packets == 0 {
        return Err(MediaError::Unreadable("no audio packets".into()));
    }
    let t = tb.calc_time(end);
    Ok((t.seconds as f64 + t.frac).round() as u64)
}

/// AMR (narrow or wide band): 20 ms frames whose size follows from each frame header.
fn amr_seconds(path: &Path, wide: bool) -> Result<u64, MediaError> {
    const NB: [usize; 16] = [13, 14, 16, 18, 20, 21, 27, 32, 6, 0, 0, 0, 0, 0, 0, 1];
    const WB: [usize; 16] = [18, 24, 33, 37, 41, 47, 51, 59, 61, 6, 0, 0, 0, 0, 1, 1];
    let mut data = Vec::new();
    File::open(path)
        .and_then(|f| BufReader::new(f).read_to_end(&mut data))
        .map_err(|e| MediaError::Unreadable(e.to_string()))?;
    let (mut pos, sizes) = if wide { (9, &WB) } else { (6, &NB) };
    let mut frames = 0u64;
    while pos < data.len() {
        let size = sizes[usize::from((data[pos] >> 3) & 0x0f)];
        if size == 0 || pos + size > data.len() {
            return Err(MediaError::Unreadable("truncated or corrupt AMR frame".into()));
        }
        pos += size;
        frames += 1;
    }
    if frames == 0 {
        return Err(MediaError::Unreadable("no AMR frames".into()));
    }
    Ok(((frames as f64) * 0.02).round() as u64)
}

/// Width and height of the first video track (mp4 / mov), read with the `mp4` crate.
fn video_size(path: &Path) -> Result<Measure, MediaError> {
    let bad = |e: &dyn std::fmt::Display| MediaError::Unreadable(e.to_string());
    let file = File::open(path).map_err(|e| bad(&e))?;
    let size = file.metadata().map_err(|e| bad(&e))?.len();
    let reader = mp4::Mp4Reader::read_header(BufReader::new(file), size).map_err(|e| bad(&e))?;
    for track in reader.tracks().values() {
        if matches!(track.track_type(), Ok(mp4::TrackType::Video)) {
            let (w, h) = (u32::from(track.width()), u32::from(track.height()));
            if w > 0 && h > 0 {
                return within_limits(w, h);
            }
        }
    }
    Err(MediaError::Unreadable("no video track".into()))
}

/// The first picture of an H.264 video track as RGB (width, height, pixels), decoded with the bundled
/// OpenH264; `None` for other codecs or an undecodable stream.
pub fn first_frame_rgb(path: &Path) -> Option<(u32, u32, Vec<u8>)> {
    guarded("first frame", || first_frame_unguarded(path).ok_or(MediaError::UnknownType)).ok()
}

fn first_frame_unguarded(path: &Path) -> Option<(u32, u32, Vec<u8>)> {
    use openh264::formats::YUVSource;
    let file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut reader = mp4::Mp4Reader::read_header(BufReader::new(file), size).ok()?;
    let (id, sps, pps) = reader.tracks().values().find_map(|t| {
        let video = matches!(t.track_type(), Ok(mp4::TrackType::Video));
        let h264 = matches!(t.media_type(), Ok(mp4::MediaType::H264));
        if !(video && h264) {
            return None;
        }
        // The container says how large the pictures are: larger ones are not decoded at all.
        let (w, h) = (u32::from(t.width()), u32::from(t.height()));
        if w == 0 || h == 0 || w > FRAME_MAX_SIDE || h > FRAME_MAX_SIDE {
            return None;
        }
        Some((
            t.track_id(),
            t.sequence_parameter_set().ok()?.to_vec(),
            t.picture_parameter_set().ok()?.to_vec(),
        ))
    })?;
    // One decoder at a time, on the caller's (blocking) thread.
    let _one_at_a_time = FRAME_DECODING.lock().unwrap_or_else(|e| e.into_inner());
    let start = [0u8, 0, 0, 1];
    let mut stream: Vec<u8> = Vec::new();
    for nal in [&sps, &pps] {
        stream.extend_from_slice(&start);
        stream.extend_from_slice(nal);
    }
    let mut decoder = openh264::decoder::Decoder::new().ok()?;
    let samples = reader.sample_count(id).ok()?.min(60);
    // A stream that takes this long to give a picture gets the poster instead.
    let deadline = std::time::Instant::now() + FRAME_DEADLINE;
    for sample_id in 1..=samples {
        if std::time::Instant::now() > deadline {
            return None;
        }
        let sample = reader.read_sample(id, sample_id).ok()??;
        // Samples hold NAL units behind 4-byte big-endian lengths; the decoder wants start codes.
        let mut data: &[u8] = &sample.bytes;
        while data.len() >= 4 {
            let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            data = &data[4..];
            if n > data.len() {
                return None;
            }
            stream.extend_from_slice(&start);
            stream.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if let Ok(Some(yuv)) = decoder.decode(&stream) {
            let (w, h) = yuv.dimensions();
            // What the stream itself says (the container could lie).
            if w > FRAME_MAX_SIDE as usize || h > FRAME_MAX_SIDE as usize {
                return None;
            }
            let mut rgb = vec![0u8; w * h * 3];
            yuv.write_rgb8(&mut rgb);
            return Some((u32::try_from(w).ok()?, u32::try_from(h).ok()?, rgb));
        }
        stream.clear();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_cut_short_are_refused_whole_ones_pass() {
        let dir = tempfile::tempdir().expect("tmp");
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            p
        };
        let png = crate::proto::wsim::picture::craft::png(746, 750, None);
        let jpeg = crate::proto::wsim::picture::encode_rgb(4, 4, &[200; 48], 90).expect("jpeg");
        // An MP4 of three top-level boxes.
        let mut mp4 = Vec::new();
        for (kind, body) in [(b"ftyp", 8usize), (b"moov", 16), (b"mdat", 100)] {
            mp4.extend_from_slice(&((body + 8) as u32).to_be_bytes());
            mp4.extend_from_slice(kind);
            mp4.extend(std::iter::repeat_n(0u8, body));
        }
        let mut webp = b"RIFF".to_vec();
        webp.extend_from_slice(&20u32.to_le_bytes());
        webp.extend_from_slice(b"WEBPVP8 ");
        webp.extend(std::iter::repeat_n(0u8, 12));
        // (type, whole file, the same cut short)
        let table: [(MediaType, &[u8], &[u8]); 5] = [
            (MediaType::Png, &png, &png[..60]),
            (MediaType::Jpeg, &jpeg, &jpeg[..jpeg.len() - 10]),
            (MediaType::Gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", b"GIF89a\x01\x00\x01\x00"),
            (MediaType::Mp4, &mp4, &mp4[..mp4.len() - 1]),
            (MediaType::Webp, &webp, &webp[..20]),
        ];
        for (ty, whole, cut) in table {
            assert!(check_complete(&write("whole", whole), ty).is_ok(), "{ty:?} whole");
            assert!(check_complete(&write("cut", cut), ty).is_err(), "{ty:?} cut short");
        }
        // The 60-byte PNG still claims its size: measuring alone would have taken it.
        assert!(matches!(
            measure(&write("cut.png", &png[..60]), MediaType::Png),
            Ok(Measure::Size(746, 750))
        ));
    }

    #[test]
    fn a_parser_that_panics_makes_the_file_unreadable_not_a_crash() {
        // Found by fuzz/ (media): symphonia's ADTS reader divides by a zero step on this file.
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("crash.mp3");
        let bytes: &[u8] = include_bytes!("../../../fuzz/regressions/media/adts-step-by-zero");
        std::fs::write(&p, bytes).expect("write");
        assert_eq!(sniff(bytes, Accept::Audio), Some(MediaType::Mp3));
        assert!(matches!(measure(&p, MediaType::Mp3), Err(MediaError::Unreadable(_))));
    }

    #[test]
    fn pictures_larger_than_the_limit_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("big.png");
        std::fs::write(&p, crate::proto::wsim::picture::craft::png(20_000, 20_000, Some(1))).expect("write");
        assert!(matches!(measure(&p, MediaType::Png), Err(MediaError::TooLarge(20_000, 20_000))));
        std::fs::write(&p, crate::proto::wsim::picture::craft::png(MAX_SIDE, 16, None)).expect("write");
        assert!(matches!(measure(&p, MediaType::Png), Ok(Measure::Size(MAX_SIDE, 16))));
    }

    #[test]
    fn sniffs_magic_bytes_not_names() {
        let cases: Vec<(&[u8], Accept, Option<MediaType>)> = vec![
            (b"#!AMR\n\x3c", Accept::Audio, Some(MediaType::Amr)),
            (b"#!AMR-WB\n", Accept::Audio, Some(MediaType::AmrWb)),
            (b"ID3\x04\x00", Accept::Audio, Some(MediaType::Mp3)),
            (&[0xff, 0xfb, 0x90, 0x00], Accept::Audio, Some(MediaType::Mp3)),
            (b"OggS\x00\x02", Accept::Audio, Some(MediaType::Ogg)),
            (b"RIFF\x24\x00\x00\x00WAVEfmt ", Accept::Audio, Some(MediaType::Wav)),
            (b"\x00\x00\x00\x20ftypM4A ", Accept::Audio, Some(MediaType::M4a)),
            (b"\x00\x00\x00\x20ftypisom", Accept::Video, Some(MediaType::Mp4)),
            (b"\x00\x00\x00\x14ftypqt  ", Accept::Video, Some(MediaType::Mov)),
            (&[0xff, 0xd8, 0xff, 0xe0], Accept::ImageOrAudio, Some(MediaType::Jpeg)),
            (b"\x89PNG\r\n\x1a\n", Accept::ImageOrAudio, Some(MediaType::Png)),
            (b"GIF89a", Accept::ImageOrAudio, Some(MediaType::Gif)),
            (b"RIFF\x24\x00\x00\x00WEBPVP8 ", Accept::ImageOrAudio, Some(MediaType::Webp)),
            (b"ID3\x04\x00", Accept::ImageOrAudio, Some(MediaType::Mp3)),
            // Wrong endpoint for the type, or unknown.
            (&[0xff, 0xd8, 0xff, 0xe0], Accept::Audio, None),
            (b"ID3\x04\x00", Accept::Video, None),
            (b"\x89PNG\r\n\x1a\n", Accept::Video, None),
            (b"hello world", Accept::ImageOrAudio, None),
            (b"", Accept::Audio, None),
        ];
        for (head, accept, want) in cases {
            assert_eq!(sniff(head, accept), want, "{head:?} {accept:?}");
        }
    }
}
