//! The IdP as a client of the issuer's API, with its own service token (role
//! `identity_provider`): who holds a certificate (at login) and the status feed (to end
//! the sessions of a suspended or revoked credential within seconds). The IdP never reads
//! the issuer's database.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tessera_issuer_types::api::{Holder, StatusFeed};
use zeroize::Zeroizing;

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a feed page of 1,000 events is well under this).
const LIMIT: u64 = 1 << 20;

/// The issuer's API, as this IdP may use it.
pub struct Issuer {
    base: String,
    /// The token's file, read at each call: a rotated token is used without a restart,
    /// and a deployment started before its token was made works once it is there.
    token_file: std::path::PathBuf,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why a holder was not found.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// The issuer answered: no live carrier holds this certificate.
    #[error("the issuer knows no holder of this certificate")]
    Unknown,
    /// The issuer could not be asked (fail closed: nobody logs in).
    #[error("the issuer could not be asked: {0}")]
    Unavailable(String),
}

impl Issuer {
    /// The issuer at `base` (its base URL), with the token in `token_file`.
    pub fn new(base: &str, token_file: &std::path::Path) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token_file: token_file.to_owned(),
            agent,
        }
    }

    /// Whether the token's file is there yet.
    pub fn has_token(&self) -> bool {
        self.token_file.exists()
    }

    fn token(&self) -> Result<Zeroizing<String>> {
        let token = Zeroizing::new(
            std::fs::read_to_string(&self.token_file)
                .with_context(|| {
                    format!(
                        "reading the IdP's issuer token {} (an officer with the identity_provider role)",
                        self.token_file.display()
                    )
                })?
                .trim()
                .to_owned(),
        );
        if token.is_empty() || token.contains(char::is_whitespace) {
            bail!("{} does not hold one token", self.token_file.display());
        }
        Ok(token)
    }

    fn get(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let token = self.token()?;
        let url = format!("{}/api/v1/{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", token.as_str()))
            .call()
            .map_err(|e| anyhow!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(LIMIT)
            .read_to_vec()
            .map_err(|e| anyhow!("{url}: {e}"))?;
        Ok((status, body))
    }

    /// The person and carrier behind a certificate (hex serial).
    pub fn holder(&self, serial: &str) -> Result<Holder, HolderError> {
        if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HolderError::Unknown);
        }
        let (status, body) = self
            .get(&format!("certificates/{serial}/holder"))
            .map_err(|e| HolderError::Unavailable(format!("{e:#}")))?;
        match status {
            200 => serde_json::from_slice(&body)
                .map_err(|e| HolderError::Unavailable(format!("the issuer's answer: {e}"))),
            404 => Err(HolderError::Unknown),
            s => Err(HolderError::Unavailable(format!(
                "the issuer answered {s}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))),
        }
    }

    /// The status feed after `after`.
    pub fn feed(&self, after: i64) -> Result<StatusFeed> {
        let (status, body) = self.get(&format!("status-feed?after={after}&limit=1000"))?;
        if status != 200 {
            bail!(
                "the issuer's status feed answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
        }
        serde_json::from_slice(&body).context("the issuer's status feed")
    }
}
