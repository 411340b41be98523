//! M-of-N custody of a token's activation secret (LoA3 K4.3: activation data under
//! multi-person control), with Shamir's secret sharing (the `blahaj` crate, GF(256)). The
//! embedded default is 1 of 1: the secret itself, in the data directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use zeroize::Zeroizing;

use tessera_issuer_types::config::{files, Custody as Scheme};

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

/// The activation secret of the issuer's deployment in `dir`: the 1-of-1 secret file, or
/// the combination of the custodians' share files.
pub fn activation_secret(
    dir: &Path,
    scheme: Scheme,
    share_files: &[PathBuf],
) -> Result<Zeroizing<String>> {
    activation_secret_from(&dir.join(files::ACTIVATION_SECRET), scheme, share_files)
}

/// The activation secret: the 1-of-1 secret file `single`, or the combination of the
/// custodians' share files.
pub fn activation_secret_from(
    single: &Path,
    scheme: Scheme,
    share_files: &[PathBuf],
) -> Result<Zeroizing<String>> {
    if scheme.is_single() {
        let s = Zeroizing::new(
            std::fs::read_to_string(single)
                .with_context(|| format!("reading the activation secret {}", single.display()))?,
        );
        return Ok(Zeroizing::new(s.trim().to_owned()));
    }
    ensure!(
        share_files.len() >= usize::from(scheme.threshold),
        "activating the keys needs {} custodian shares ({scheme}); {} given with --share",
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
