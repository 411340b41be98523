//! The state file: everything the card keeps across restarts (identity, PIN/PUK counters,
//! management key, data objects, software keys), saved atomically after every change.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tessera_piv::card::{CardState, SoftKeyStore};

/// What the state file holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedCard {
    /// Format version of this file.
    pub format: u32,
    pub card: CardState,
    pub keys: SoftKeyStore,
}

/// The current state-file format.
pub const FORMAT: u32 = 1;

impl SavedCard {
    /// Reads a state file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading card state {}", path.display()))?;
        let saved: Self = serde_json::from_str(&text)
            .with_context(|| format!("card state {} is not valid", path.display()))?;
        anyhow::ensure!(
            saved.format == FORMAT,
            "card state {} has format {}, this program reads format {FORMAT}",
            path.display(),
            saved.format
        );
        Ok(saved)
    }

    /// Writes the state file atomically (temporary file, fsync, rename), mode 0600: it
    /// holds private keys and the PIN.
    pub fn save(card: &CardState, keys: &SoftKeyStore, path: &Path) -> Result<()> {
        #[derive(Serialize)]
        struct Ref<'a> {
            format: u32,
            card: &'a CardState,
            keys: &'a SoftKeyStore,
        }
        let json = serde_json::to_vec_pretty(&Ref {
            format: FORMAT,
            card,
            keys,
        })?;
        let tmp = tmp_path(path);
        {
            let mut f = open_private(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
            .with_context(|| format!("replacing card state {}", path.display()))?;
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn open_private(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Where the manufacturer CA certificate of a card is written: beside its state file.
pub fn manufacturer_ca_path(state: &Path) -> PathBuf {
    let mut name = path_stem(state);
    name.push_str(".manufacturer-ca.pem");
    state.with_file_name(name)
}

fn path_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "card".to_owned())
}
