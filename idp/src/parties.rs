//! The relying parties we serve: from the federation's signed aggregate (checked with the
//! federation's certificate and its `validUntil` before use, refreshed on a schedule, the
//! last good copy kept on disk and used until it expires) and from the operator's local
//! registry (`DIR/relying-parties/*.xml`, one descriptor or aggregate per file, trusted as
//! files of the deployment). A local entry wins over the federation's for the same entity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::{Context, Result};
use tessera_saml::metadata::{self, Metadata, RelyingParty};

use crate::config::{Config, Federation};

/// The last good copy of the federation's aggregate, in the data directory.
pub const LAST_GOOD: &str = "federation-metadata.xml";
/// The local registry's directory, in the data directory.
pub const LOCAL_DIR: &str = "relying-parties";

/// The longest validity an aggregate may claim (Shibboleth's maxValidityInterval): a
/// signed aggregate that claims more is refused.
pub const MAX_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The new aggregate was taken: how many relying parties it holds.
    Taken(usize),
    /// It was refused, and the last good copy stays in use.
    Refused(String),
}

/// The relying parties known now.
#[derive(Debug, Default)]
pub struct Registry {
    federation: RwLock<Metadata>,
    local: RwLock<BTreeMap<String, RelyingParty>>,
}

impl Registry {
    /// Loads the local registry and the last good federation copy (checked again: its
    /// signature, and its `validUntil` against `now`; an expired copy is not used).
    pub fn load(dir: &Path, config: &Config, now: Duration) -> Result<Self> {
        let registry = Self::default();
        registry.reload_local(dir, now)?;
        if let Some(federation) = &config.federation {
            let path = dir.join(LAST_GOOD);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let certs = federation_certificates(dir, federation)?;
                    match metadata::verify_aggregate(&bytes, &certs, now) {
                        Ok(m) => {
                            *registry
                                .federation
                                .write()
                                .unwrap_or_else(|p| p.into_inner()) = m
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the last good federation metadata is no longer usable")
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
        Ok(registry)
    }

    /// Reads `DIR/relying-parties/*.xml` again (a file that cannot be read is an error:
    /// the operator's registry is taken whole or not at all).
    pub fn reload_local(&self, dir: &Path, now: Duration) -> Result<()> {
        let local_dir = dir.join(LOCAL_DIR);
        let mut parties = BTreeMap::new();
        if local_dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&local_dir)
                .with_context(|| format!("reading {}", local_dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "xml"))
                .collect();
            files.sort();
            for file in files {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let m = metadata::read_local(&bytes, now)
                    .with_context(|| format!("{} is not usable metadata", file.display()))?;
                for rp in m.relying_parties {
                    parties.insert(rp.entity_id.clone(), rp);
                }
            }
        }
        *self.local.write().unwrap_or_else(|p| p.into_inner()) = parties;
        Ok(())
    }

    /// Takes a new federation aggregate if it verifies with the federation's certificates
    /// and is valid at `now`; then keeps it as the last good copy (written to a temporary
    /// file and renamed, so a crash leaves the old copy or the new, never half of one).
    /// Refused: the last good copy stays in use.
    pub fn refresh(
        &self,
        dir: &Path,
        federation: &Federation,
        bytes: &[u8],
        now: Duration,
    ) -> Refreshed {
        let certs = match federation_certificates(dir, federation) {
            Ok(c) => c,
            Err(e) => return Refreshed::Refused(format!("{e:#}")),
        };
        let in_use = self
            .federation
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .valid_until;
        match metadata::verify_aggregate(bytes, &certs, now) {
            // Never older than the copy in use (a replayed aggregate cannot bring back
            // what a newer one removed), never valid for longer than MAX_VALIDITY.
            Ok(m) if m.valid_until < in_use => Refreshed::Refused(
                "the aggregate is older than the copy in use (validUntil)".into(),
            ),
            Ok(m) if m.valid_until.is_some_and(|t| t > now + MAX_VALIDITY) => {
                Refreshed::Refused(format!(
                    "the aggregate claims validity for more than {} days",
                    MAX_VALIDITY.as_secs() / 86_400
                ))
            }
            Ok(m) => {
                // A name of this process's own: two servers on one data directory must
                // not rename each other's half-written copy.
                let mut tag = [0u8; 8];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
                let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
                let tmp = dir.join(format!("{LAST_GOOD}.{}.{tag}.new", std::process::id()));
                if let Err(e) = std::fs::write(&tmp, bytes)
                    .and_then(|()| std::fs::rename(&tmp, dir.join(LAST_GOOD)))
                {
                    return Refreshed::Refused(format!("keeping the new copy failed: {e}"));
                }
                let n = m.relying_parties.len();
                *self.federation.write().unwrap_or_else(|p| p.into_inner()) = m;
                Refreshed::Taken(n)
            }
            Err(e) => Refreshed::Refused(e.to_string()),
        }
    }

    /// The relying party `entity_id`, if it is known and its metadata valid at `now`.
    pub fn get(&self, entity_id: &str, now: Duration) -> Option<RelyingParty> {
        let valid = |rp: &RelyingParty| rp.valid_until.is_none_or(|t| t > now);
        if let Some(rp) = self
            .local
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(entity_id)
            .filter(|rp| valid(rp))
        {
            return Some(rp.clone());
        }
        let federation = self.federation.read().unwrap_or_else(|p| p.into_inner());
        if federation.valid_until.is_some_and(|t| t <= now) {
            return None;
        }
        federation
            .relying_parties
            .iter()
            .find(|rp| rp.entity_id == entity_id && valid(rp))
            .cloned()
    }

    /// How many relying parties are known (local and federation), valid at `now`.
    pub fn count(&self, now: Duration) -> usize {
        let local = self.local.read().unwrap_or_else(|p| p.into_inner());
        let federation = self.federation.read().unwrap_or_else(|p| p.into_inner());
        let from_federation = if federation.valid_until.is_some_and(|t| t <= now) {
            0
        } else {
            federation
                .relying_parties
                .iter()
                .filter(|rp| {
                    !local.contains_key(&rp.entity_id) && rp.valid_until.is_none_or(|t| t > now)
                })
                .count()
        };
        local.len() + from_federation
    }
}

/// The federation's signing certificates (DER), from their PEM files.
fn federation_certificates(dir: &Path, federation: &Federation) -> Result<Vec<Vec<u8>>> {
    federation
        .certificates
        .iter()
        .map(|p| crate::keys::certificate_file(&Config::resolve(dir, p)))
        .collect()
}

/// Fetches the aggregate from its source: an `https://` or `http://` URL, or a file path.
pub fn fetch(dir: &Path, source: &str) -> Result<Vec<u8>> {
    if source.starts_with("https://") || source.starts_with("http://") {
        let mut response = ureq::get(source)
            .call()
            .with_context(|| format!("fetching {source}"))?;
        Ok(response
            .body_mut()
            .with_config()
            .limit(metadata::MAX_AGGREGATE as u64)
            .read_to_vec()
            .with_context(|| format!("reading {source}"))?)
    } else {
        let path = Config::resolve(dir, Path::new(source));
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }
}
