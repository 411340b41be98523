//! M-of-N custody of the CA token's activation secret (LoA3 K4.3: activation data under
//! multi-person control), with Shamir's secret sharing (the `blahaj` crate, GF(256)). The
//! embedded default is 1 of 1: the secret itself, in the data directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use zeroize::Zeroizing;

use crate::init::files;

/// How many custodians hold shares, and how many must come together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scheme {
    pub threshold: u8,
    pub shares: u8,
}

impl std::str::FromStr for Scheme {
    type Err = String;

    /// `M-of-N`, e.g. `2-of-3`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (m, n) = s.split_once("-of-").ok_or("write M-of-N, e.g. 2-of-3")?;
        let threshold: u8 = m.parse().map_err(|_| format!("{m:?} is not a number"))?;
        let shares: u8 = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
        if threshold == 0 || threshold > shares {
            return Err("need 1 ≤ M ≤ N".into());
        }
        Ok(Self { threshold, shares })
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-of-{}", self.threshold, self.shares)
    }
}

/// The share files `init` writes: `custodian-<i>.share`, hex, one per custodian.
pub fn share_path(dir: &Path, i: u8) -> PathBuf {
    dir.join(format!("custodian-{i}.share"))
}

/// Splits the secret into the scheme's shares (hex strings).
pub fn split(secret: &[u8], scheme: Scheme) -> Vec<Zeroizing<String>> {
    let sharks = blahaj::Sharks(scheme.threshold);
    sharks
        .dealer(secret)
        .take(usize::from(scheme.shares))
        .map(|share| Zeroizing::new(hex::encode(Vec::from(&share))))
        .collect()
}

/// The activation secret of a deployment: the 1-of-1 secret file, or the combination of
/// the custodians' share files.
pub fn activation_secret(dir: &Path, share_files: &[PathBuf]) -> Result<Zeroizing<String>> {
    let single = dir.join(files::ACTIVATION_SECRET);
    if single.exists() {
        let s = std::fs::read_to_string(&single).context("reading the CA activation secret")?;
        return Ok(Zeroizing::new(s.trim().to_owned()));
    }
    let scheme: Scheme = serde_json::from_str(
        &std::fs::read_to_string(dir.join(files::CUSTODY))
            .context("the deployment has neither an activation secret nor a custody file")?,
    )
    .context("reading the custody file")?;
    ensure!(
        share_files.len() >= usize::from(scheme.threshold),
        "activating the CA keys needs {} custodian shares ({scheme}); {} given with --share",
        scheme.threshold,
        share_files.len()
    );
    let mut shares = Vec::new();
    for f in share_files {
        let text = Zeroizing::new(
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        );
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).with_context(|| format!("{} is not a share", f.display()))?,
        );
        let share = blahaj::Share::try_from(bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("{} is not a share: {e}", f.display()))?;
        shares.push(share);
    }
    let secret = blahaj::Sharks(scheme.threshold)
        .recover(&shares)
        .map_err(|e| anyhow::anyhow!("combining the shares: {e}"))?;
    let secret = Zeroizing::new(secret);
    match std::str::from_utf8(&secret) {
        Ok(s) => Ok(Zeroizing::new(s.to_owned())),
        Err(_) => {
            bail!("the shares do not combine to an activation secret (a wrong or damaged share?)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_m_shares_recover_and_fewer_do_not() {
        let scheme: Scheme = "2-of-3".parse().unwrap();
        let shares = split(b"0123456789abcdef0123456789abcdef", scheme);
        assert_eq!(shares.len(), 3);
        let parse = |h: &str| blahaj::Share::try_from(hex::decode(h).unwrap().as_slice()).unwrap();
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let got = blahaj::Sharks(2)
                .recover(&[parse(&shares[pair[0]]), parse(&shares[pair[1]])])
                .unwrap();
            assert_eq!(got, b"0123456789abcdef0123456789abcdef");
        }
        assert!(blahaj::Sharks(2).recover(&[parse(&shares[0])]).is_err());
        assert!("0-of-2".parse::<Scheme>().is_err());
        assert!("3-of-2".parse::<Scheme>().is_err());
    }
}
