//! The reference card's state file: everything the card keeps across restarts (identity,
//! PIN/PUK counters, management key, data objects and its software keys), written through
//! the carrier's atomic [`StateFile`] whenever the applet asks ([`KeyStore::persist`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tessera_carrier::store::StateFile;
use tessera_piv::card::{CardState, KeyError, KeyInfo, KeyStore, Persist, SoftKeyStore};
use tessera_piv::piv::{Algorithm, KeyRef, PinPolicy};

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

/// The same content, borrowed, for writing.
#[derive(Serialize)]
struct SavedRef<'a> {
    format: u32,
    card: &'a CardState,
    keys: &'a SoftKeyStore,
}

impl SavedCard {
    /// Reads a state file.
    pub fn load(file: &StateFile) -> Result<Self> {
        let saved: Self = file.load()?;
        anyhow::ensure!(
            saved.format == FORMAT,
            "card state {} has format {}, this program reads format {FORMAT}",
            file.path().display(),
            saved.format
        );
        Ok(saved)
    }

    /// Writes a state file (a new card's first save).
    pub fn save(card: &CardState, keys: &SoftKeyStore, file: &StateFile) -> Result<()> {
        file.save(
            &SavedRef {
                format: FORMAT,
                card,
                keys,
            },
            Persist::Change,
        )?;
        Ok(())
    }
}

/// The reference card's keys with its state file behind them: the applet's persistence
/// hook writes the whole card (state and software keys) to the file.
#[derive(Debug)]
pub struct FileKeys {
    keys: SoftKeyStore,
    /// The keys as last written, for [`KeyStore::rollback`].
    saved: SoftKeyStore,
    file: StateFile,
    /// Where each write is noted (its size only), for the write-pattern tests.
    trace: Option<std::fs::File>,
}

impl FileKeys {
    pub fn new(keys: SoftKeyStore, file: StateFile, trace: Option<std::fs::File>) -> Self {
        Self {
            saved: keys.clone(),
            keys,
            file,
            trace,
        }
    }
}

impl KeyStore for FileKeys {
    fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch_policy: u8,
    ) -> Result<KeyInfo, KeyError> {
        self.keys.generate(slot, alg, pin_policy, touch_policy)
    }

    fn info(&self, slot: KeyRef) -> Option<&KeyInfo> {
        self.keys.info(slot)
    }

    fn sign(&mut self, slot: KeyRef, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.keys.sign(slot, input)
    }

    fn ecdh(&mut self, slot: KeyRef, peer_point: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.keys.ecdh(slot, peer_point)
    }

    fn delete(&mut self, slot: KeyRef) {
        self.keys.delete(slot);
    }

    fn persist(&mut self, state: &CardState, why: Persist) -> Result<(), KeyError> {
        let saved = SavedRef {
            format: FORMAT,
            card: state,
            keys: &self.keys,
        };
        let written = self.file.save(&saved, why).map_err(|e| {
            eprintln!("tessera-card-sim: {e}");
            KeyError::Backend(e.to_string())
        })?;
        self.saved = self.keys.clone();
        if let Some(t) = self.trace.as_mut() {
            // Only the size: never the content (it holds the PIN and keys). A diagnostic
            // aid; a full disk must not stop the card.
            let _ = writeln!(t, "state saved ({written} bytes)");
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.keys = self.saved.clone();
    }
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

/// Reads a state file, with the path in the error.
pub fn load(path: &Path) -> Result<SavedCard> {
    SavedCard::load(&StateFile::new(path)).with_context(|| format!("card state {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_piv::apdu::StatusWord;
    use tessera_piv::card::{Applet, Interface, DEFAULT_MANAGEMENT_KEY};
    use tessera_piv::host::{Error, PivClient};

    #[test]
    fn a_key_whose_state_write_failed_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        // The state file's directory is a regular file: every write fails.
        let blocker = dir.path().join("not-a-directory");
        std::fs::write(&blocker, b"").unwrap();
        let file = StateFile::new(blocker.join("card.json"));
        let state = CardState::factory(&mut rand::rngs::OsRng, 12_345_678);
        let keys = FileKeys::new(SoftKeyStore::new(), file, None);
        let mut c = PivClient::new(Applet::new(state, keys, Interface::Contact));
        c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
            .unwrap();
        match c.generate(KeyRef::AUTHENTICATION, Algorithm::EccP256, None) {
            Err(Error::Card(StatusWord::MEMORY_FAILURE)) => {}
            other => panic!("generation with an unwritable state file: {other:?}"),
        }
        // The key the applet made is gone from memory too: nothing on the card that its
        // storage does not hold.
        match c.metadata(KeyRef::AUTHENTICATION) {
            Err(Error::Card(StatusWord::NOT_FOUND)) => {}
            other => panic!("metadata after the failed write: {other:?}"),
        }
    }
}
