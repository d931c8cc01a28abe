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

/// Reads the measure of a file of a known type.
pub fn measure(path: &Path, ty: MediaType) -> Result<Measure, MediaError> {
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
            Ok(Measure::Size(w, h))
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
                return Ok(Measure::Size(w, h));
            }
        }
    }
    Err(MediaError::Unreadable("no video track".into()))
}

/// The first picture of an H.264 video track as RGB (width, height, pixels), decoded with the bundled
/// OpenH264; `None` for other codecs or an undecodable stream.
pub fn first_frame_rgb(path: &Path) -> Option<(u32, u32, Vec<u8>)> {
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
        Some((
            t.track_id(),
            t.sequence_parameter_set().ok()?.to_vec(),
            t.picture_parameter_set().ok()?.to_vec(),
        ))
    })?;
    let start = [0u8, 0, 0, 1];
    let mut stream: Vec<u8> = Vec::new();
    for nal in [&sps, &pps] {
        stream.extend_from_slice(&start);
        stream.extend_from_slice(nal);
    }
    let mut decoder = openh264::decoder::Decoder::new().ok()?;
    let samples = reader.sample_count(id).ok()?.min(60);
    for sample_id in 1..=samples {
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
