//! Uploaded files: type sniffing, measuring, completeness, and the bounded picture decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsim::proto::wsim::media::{self, Accept};
use wsim::proto::wsim::picture;

fuzz_target!(|data: &[u8]| {
    // The server catches panics inside third-party parsers (media::guarded): only a panic that gets
    // out is a crash. libFuzzer's hook would abort on caught ones too; a silent hook leaves them.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = picture::decode_limited(data);
    let path = std::env::temp_dir().join(format!("wsim-fuzz-media-{}", std::process::id()));
    for accept in [Accept::Audio, Accept::ImageOrAudio, Accept::Video] {
        let Some(ty) = media::sniff(data, accept) else { continue };
        if std::fs::write(&path, data).is_err() {
            return;
        }
        let _ = media::measure(&path, ty);
        let _ = media::check_complete(&path, ty);
    }
});
