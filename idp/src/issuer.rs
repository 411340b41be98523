//! The IdP as a client of the issuer's API, with its own service token (role
//! `identity_provider`): who holds a certificate (at login) and the status feed (to end
//! the sessions of a suspended or revoked credential within seconds). The IdP never reads
//! the issuer's database.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tessera_issuer_types::api::{Holder, StatusFeed};
use zeroize::Zeroizing;

/// Status-feed events asked for at once (the issuer's maximum).
pub const FEED_PAGE: usize = 1000;
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

/// Refuses an issuer URL whose link an attacker on the path could take over: `https://`,
/// or `http://` to a loopback address (the issuer on the same machine).
pub fn check_link(base: &str) -> Result<()> {
    if base.starts_with("https://") {
        return Ok(());
    }
    let host = base
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .map(|authority| {
            authority
                .rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .map_or(authority, |(h, _)| h)
        })
        .unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        bail!("issuer_url {base}: https:// (with the issuer's TLS CA), or http:// to the issuer on this machine only — who logs in is the issuer's answer, so the link must be authenticated")
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
    /// The issuer at `base` (its base URL), with the token in `token_file`. Over https
    /// the issuer's certificate must chain to `ca` (its own TLS CA, PEM) when given, else
    /// to the public roots. Plain http is for a loopback issuer only: what the issuer says
    /// decides who is logged in, so the link must be its.
    pub fn new(
        base: &str,
        token_file: &std::path::Path,
        ca: Option<&std::path::Path>,
    ) -> Result<Self> {
        check_link(base)?;
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false);
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let cert = ureq::tls::Certificate::from_pem(&pem)
                .map_err(|e| anyhow!("{}: {e}", ca.display()))?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token_file: token_file.to_owned(),
            agent: config.build().into(),
        })
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
            200 => {
                let holder: Holder = serde_json::from_slice(&body)
                    .map_err(|e| HolderError::Unavailable(format!("the issuer's answer: {e}")))?;
                // The answer must be about the certificate asked for.
                if !holder.serial.eq_ignore_ascii_case(serial) {
                    return Err(HolderError::Unavailable(format!(
                        "the issuer answered about certificate {}, not {serial}",
                        holder.serial
                    )));
                }
                Ok(holder)
            }
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
        let (status, body) = self.get(&format!("status-feed?after={after}&limit={FEED_PAGE}"))?;
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

#[cfg(test)]
mod tests {
    use super::check_link;

    #[test]
    fn the_issuer_is_reached_over_an_authenticated_link_or_on_this_machine() {
        for ok in [
            "https://issuer.example.org",
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
        ] {
            assert!(check_link(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example.org",
            "http://10.0.0.5:8080",
            "http://127.0.0.1.evil.example:80",
            "ftp://127.0.0.1",
        ] {
            assert!(check_link(bad).is_err(), "{bad}");
        }
    }
}
