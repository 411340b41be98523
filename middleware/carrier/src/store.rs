//! The card's stable storage: one state file (JSON), replaced atomically — written to a
//! temporary file beside it, synced, renamed over it, and the directory synced — so that a
//! power cut leaves either the old state or the new one, never a torn one. Mode 0600: it
//! holds the PIN, the PUK, the management key and, for the reference card, private keys.
//!
//! A [`Fault`] stops the process right after a chosen kind of write, as a power cut would:
//! the tearing tests use it to show that a PIN try is on disk before it is compared.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_piv::card::Persist;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("card state {path} is not valid: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where a test cuts the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The process aborts right after a write of this kind is durable, before the card
    /// goes on (for [`Persist::Try`]: after the try is counted, before the comparison).
    AbortAfter(Persist),
}

/// One card's state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    fault: Option<Fault>,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fault: None,
        }
    }

    /// Arms a fault point (tests only: it stops the process).
    pub fn with_fault(mut self, fault: Option<Fault>) -> Self {
        self.fault = fault;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Reads the state, first removing temporary files a killed process left beside it.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        self.sweep();
        let text = fs::read(&self.path).map_err(|source| StoreError::Io {
            what: "reading card state",
            path: self.path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| StoreError::Format {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the state atomically and durably; returns the bytes written.
    pub fn save<T: Serialize>(&self, value: &T, why: Persist) -> Result<usize, StoreError> {
        let io = |what| {
            let path = self.path.clone();
            move |source| StoreError::Io { what, path, source }
        };
        let json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Format {
            path: self.path.clone(),
            source,
        })?;
        let tmp = tmp_path(&self.path);
        {
            // A new file with an unpredictable name (O_EXCL: never an existing file or a
            // symlink someone planted), private from the start.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("writing card state"))?;
            let written = f
                .write_all(&json)
                .and_then(|()| f.sync_all())
                .map_err(io("writing card state"));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io("replacing card state")(e));
        }
        // The rename is durable only once the directory is.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // The rename is durable only once the directory is. Some file systems refuse fsync
        // on a directory (EINVAL, ENOTSUP): there the rename is as durable as it gets. Any
        // other failure (EIO) is reported: a PIN try must be on storage before the
        // comparison, and the applet then refuses the comparison.
        let synced = fs::File::open(dir).and_then(|d| d.sync_all());
        if let Err(e) = synced {
            // EINVAL is 22 on every Linux architecture; ENOTSUP maps to Unsupported.
            const EINVAL: i32 = 22;
            let unsupported =
                e.raw_os_error() == Some(EINVAL) || e.kind() == std::io::ErrorKind::Unsupported;
            if !unsupported {
                return Err(io("syncing the directory of card state")(e));
            }
        }
        if self.fault == Some(Fault::AbortAfter(why)) {
            // The power cut the test asked for, right after the write it named.
            std::process::abort();
        }
        Ok(json.len())
    }
}

impl StateFile {
    /// Removes `<file>.<16 hex digits>.tmp` files beside the state file: what a process
    /// killed between creating one and renaming it left. Only names of exactly that form,
    /// so nothing else in the directory is touched. A state file has one owner (the card
    /// process that serves it); two processes on one file would lose writes anyway.
    fn sweep(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        for entry in entries.flatten() {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            let leftover = file
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".tmp"))
                .is_some_and(|r| r.len() == 16 && r.bytes().all(|b| b.is_ascii_hexdigit()));
            if leftover {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// `<file>.<random>.tmp` beside the state file (same file system, so the rename is atomic).
fn tmp_path(path: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness; one hash of nothing is 64 random bits.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{random:016x}.tmp"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_replace_the_file_privately_and_load_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("card.json"));
        assert!(!file.exists());
        file.save(&vec![1u32, 2, 3], Persist::Change).unwrap();
        file.save(&vec![4u32], Persist::Try).unwrap();
        assert_eq!(file.load::<Vec<u32>>().unwrap(), [4]);
        let mode = fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(file.path(), b"{ torn").unwrap();
        assert!(matches!(
            file.load::<Vec<u32>>(),
            Err(StoreError::Format { .. })
        ));
    }

    #[test]
    fn load_sweeps_only_leftover_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("card.json"));
        file.save(&vec![7u32], Persist::Change).unwrap();
        let leftover = dir.path().join("card.json.0123456789abcdef.tmp");
        let unrelated = [
            dir.path().join("card.json.bak"),
            dir.path().join("card.json.12.tmp"),
            dir.path().join("other.json.0123456789abcdef.tmp"),
        ];
        fs::write(&leftover, b"half").unwrap();
        for f in &unrelated {
            fs::write(f, b"keep").unwrap();
        }
        assert_eq!(file.load::<Vec<u32>>().unwrap(), [7]);
        assert!(!leftover.exists());
        assert!(unrelated.iter().all(|f| f.exists()));
    }
}
