//! Signing keys the server makes for itself: the configured one, else one generated on first start
//! and kept (readable by its owner only) in the data directory, so tokens outlive restarts.

use std::path::Path;

/// The configured key, or the one kept in `data_dir/file` (made now if there is none).
pub fn load_or_create(configured: &str, data_dir: &Path, file: &str) -> std::io::Result<Vec<u8>> {
    if !configured.is_empty() {
        return Ok(configured.as_bytes().to_vec());
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok(k.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    std::fs::create_dir_all(data_dir)?;
    write_private(&path, &key)?;
    Ok(key.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(key.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    std::fs::write(path, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(load_or_create("given", dir.path(), "k.key").expect("key"), b"given");
        let made = load_or_create("", dir.path(), "k.key").expect("made");
        assert_eq!(made.len(), 64);
        assert_eq!(load_or_create("", dir.path(), "k.key").expect("kept"), made, "the same after a restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("k.key")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
