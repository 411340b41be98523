//! Files setup writes: secrets private from the start, nothing overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes a secret file readable only by its owner (mode 0600, created new, synced).
pub(crate) fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    write(path, content, 0o600)
}

/// Writes a new file (mode 0644); refuses to replace an existing one.
pub(crate) fn write_new(path: &Path, content: &[u8]) -> Result<()> {
    write(path, content, 0o644)
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(content)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
