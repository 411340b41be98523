//! Mechanisms the module offers and the host-side work they need: hashing, PKCS#1 v1.5 and
//! PSS encoding for the card's raw RSA operation, and ECDSA signature format conversion.
//! (PIV RSA is raw: SP 800-73-4 Part 2 §3.2.4 leaves padding to the host.)

use cryptoki_sys as sys;
use rand::RngCore;
use sha2::Digest;

use crate::{Error, Result};

/// The mechanisms of a PIV token, with key sizes and flags (PKCS#11 §5.5 C_GetMechanismInfo).
/// RSA covers what PIV cards hold: 1024 and 2048 (SP 800-78-4), 3072 and 4096 (Yubico 5.7).
pub const MECHANISMS: &[(sys::CK_MECHANISM_TYPE, u64, u64, sys::CK_FLAGS)] = &[
    (
        sys::CKM_ECDSA,
        256,
        384,
        sys::CKF_SIGN | sys::CKF_HW | EC_FLAGS,
    ),
    (
        sys::CKM_ECDSA_SHA1,
        256,
        384,
        sys::CKF_SIGN | sys::CKF_HW | EC_FLAGS,
    ),
    (
        sys::CKM_ECDSA_SHA256,
        256,
        384,
        sys::CKF_SIGN | sys::CKF_HW | EC_FLAGS,
    ),
    (
        sys::CKM_ECDSA_SHA384,
        256,
        384,
        sys::CKF_SIGN | sys::CKF_HW | EC_FLAGS,
    ),
    (
        sys::CKM_ECDSA_SHA512,
        256,
        384,
        sys::CKF_SIGN | sys::CKF_HW | EC_FLAGS,
    ),
    (
        sys::CKM_RSA_PKCS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_DECRYPT | sys::CKF_HW,
    ),
    (
        sys::CKM_SHA1_RSA_PKCS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    (
        sys::CKM_SHA256_RSA_PKCS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    (
        sys::CKM_SHA384_RSA_PKCS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    (
        sys::CKM_SHA512_RSA_PKCS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    (
        sys::CKM_RSA_PKCS_PSS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    (
        sys::CKM_SHA256_RSA_PKCS_PSS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    (
        sys::CKM_SHA384_RSA_PKCS_PSS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    (
        sys::CKM_SHA512_RSA_PKCS_PSS,
        1024,
        4096,
        sys::CKF_SIGN | sys::CKF_HW,
    ),
    // ECDH with the card's key (SP 800-73-4 Part 2 §3.2.4, tag 85), as C_DeriveKey offers.
    (
        sys::CKM_ECDH1_DERIVE,
        256,
        384,
        sys::CKF_DERIVE | sys::CKF_HW | EC_FLAGS,
    ),
];

const EC_FLAGS: sys::CK_FLAGS = sys::CKF_EC_F_P | sys::CKF_EC_NAMEDCURVE | sys::CKF_EC_UNCOMPRESS;

/// A hash function a mechanism uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn from_mechanism(m: sys::CK_MECHANISM_TYPE) -> Option<Self> {
        Some(match m {
            sys::CKM_SHA_1 => Self::Sha1,
            sys::CKM_SHA256 => Self::Sha256,
            sys::CKM_SHA384 => Self::Sha384,
            sys::CKM_SHA512 => Self::Sha512,
            _ => return None,
        })
    }

    pub fn from_mgf(m: sys::CK_RSA_PKCS_MGF_TYPE) -> Option<Self> {
        Some(match m {
            sys::CKG_MGF1_SHA1 => Self::Sha1,
            sys::CKG_MGF1_SHA256 => Self::Sha256,
            sys::CKG_MGF1_SHA384 => Self::Sha384,
            sys::CKG_MGF1_SHA512 => Self::Sha512,
            _ => return None,
        })
    }

    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// The DER prefix of a DigestInfo with this hash (RFC 8017 §9.2 note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Self::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Self::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Self::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Self::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// How a signature mechanism turns the caller's data into what the card signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScheme {
    /// ECDSA over the data as given (`CKM_ECDSA`) or over its hash.
    Ecdsa(Option<Hash>),
    /// PKCS#1 v1.5 over the data as given (a DigestInfo, `CKM_RSA_PKCS`) or over the
    /// DigestInfo of its hash.
    RsaPkcs1(Option<Hash>),
    /// RSASSA-PSS: `hash` of the data (None: the caller hashed), MGF1 hash and salt length.
    RsaPss {
        hash: Option<Hash>,
        params_hash: Hash,
        mgf: Hash,
        salt_len: usize,
    },
}

impl SignScheme {
    /// The scheme of a mechanism; `pss` are the `CK_RSA_PKCS_PSS_PARAMS` when given.
    pub fn from_mechanism(
        m: sys::CK_MECHANISM_TYPE,
        pss: Option<(sys::CK_MECHANISM_TYPE, sys::CK_RSA_PKCS_MGF_TYPE, u64)>,
    ) -> Result<Self> {
        let pss_scheme = |hash: Option<Hash>| -> Result<Self> {
            let (h, mgf, salt) = pss.ok_or(Error::MechanismParamInvalid)?;
            let params_hash = Hash::from_mechanism(h).ok_or(Error::MechanismParamInvalid)?;
            if hash.is_some_and(|x| x != params_hash) {
                return Err(Error::MechanismParamInvalid);
            }
            Ok(Self::RsaPss {
                hash,
                params_hash,
                mgf: Hash::from_mgf(mgf).ok_or(Error::MechanismParamInvalid)?,
                salt_len: usize::try_from(salt).map_err(|_| Error::MechanismParamInvalid)?,
            })
        };
        Ok(match m {
            sys::CKM_ECDSA => Self::Ecdsa(None),
            sys::CKM_ECDSA_SHA1 => Self::Ecdsa(Some(Hash::Sha1)),
            sys::CKM_ECDSA_SHA256 => Self::Ecdsa(Some(Hash::Sha256)),
            sys::CKM_ECDSA_SHA384 => Self::Ecdsa(Some(Hash::Sha384)),
            sys::CKM_ECDSA_SHA512 => Self::Ecdsa(Some(Hash::Sha512)),
            sys::CKM_RSA_PKCS => Self::RsaPkcs1(None),
            sys::CKM_SHA1_RSA_PKCS => Self::RsaPkcs1(Some(Hash::Sha1)),
            sys::CKM_SHA256_RSA_PKCS => Self::RsaPkcs1(Some(Hash::Sha256)),
            sys::CKM_SHA384_RSA_PKCS => Self::RsaPkcs1(Some(Hash::Sha384)),
            sys::CKM_SHA512_RSA_PKCS => Self::RsaPkcs1(Some(Hash::Sha512)),
            sys::CKM_RSA_PKCS_PSS => pss_scheme(None)?,
            sys::CKM_SHA256_RSA_PKCS_PSS => pss_scheme(Some(Hash::Sha256))?,
            sys::CKM_SHA384_RSA_PKCS_PSS => pss_scheme(Some(Hash::Sha384))?,
            sys::CKM_SHA512_RSA_PKCS_PSS => pss_scheme(Some(Hash::Sha512))?,
            _ => return Err(Error::MechanismInvalid),
        })
    }

    pub fn is_ecdsa(&self) -> bool {
        matches!(self, Self::Ecdsa(_))
    }

    /// Whether the mechanism hashes (and so accepts C_SignUpdate).
    pub fn hashes(&self) -> bool {
        matches!(
            self,
            Self::Ecdsa(Some(_)) | Self::RsaPkcs1(Some(_)) | Self::RsaPss { hash: Some(_), .. }
        )
    }

    /// What the card must sign: a digest for ECDSA, a modulus-sized encoded block for RSA.
    pub fn card_input(&self, data: &[u8], modulus_len: usize) -> Result<Vec<u8>> {
        match *self {
            Self::Ecdsa(None) => Ok(data.to_vec()),
            Self::Ecdsa(Some(h)) => Ok(h.digest(data)),
            Self::RsaPkcs1(None) => pkcs1_type1(data, modulus_len),
            Self::RsaPkcs1(Some(h)) => {
                let mut di = h.digest_info_prefix().to_vec();
                di.extend(h.digest(data));
                pkcs1_type1(&di, modulus_len)
            }
            Self::RsaPss {
                hash,
                params_hash,
                mgf,
                salt_len,
            } => {
                let m_hash = match hash {
                    Some(h) => h.digest(data),
                    None => data.to_vec(),
                };
                if m_hash.len() != params_hash.output_len() {
                    return Err(Error::DataLenRange);
                }
                emsa_pss_encode(&m_hash, params_hash, mgf, salt_len, modulus_len * 8 - 1)
            }
        }
    }
}

/// EMSA-PKCS1-v1_5 block type 1 (RFC 8017 §9.2 steps 3–5).
fn pkcs1_type1(t: &[u8], k: usize) -> Result<Vec<u8>> {
    if t.len() + 11 > k {
        return Err(Error::DataLenRange);
    }
    let mut em = vec![0x00, 0x01];
    em.resize(k - t.len() - 1, 0xFF);
    em.push(0x00);
    em.extend_from_slice(t);
    Ok(em)
}

/// MGF1 (RFC 8017 §B.2.1).
fn mgf1(h: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + h.output_len());
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut input = seed.to_vec();
        input.extend_from_slice(&counter.to_be_bytes());
        out.extend(h.digest(&input));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1), written here because the `rsa` crate keeps its
/// encoder private and the card only does the raw RSA operation.
fn emsa_pss_encode(
    m_hash: &[u8],
    h: Hash,
    mgf: Hash,
    s_len: usize,
    em_bits: usize,
) -> Result<Vec<u8>> {
    let em_len = em_bits.div_ceil(8);
    let h_len = h.output_len();
    if h_len
        .checked_add(s_len)
        .and_then(|n| n.checked_add(2))
        .is_none_or(|n| em_len < n)
    {
        return Err(Error::MechanismParamInvalid);
    }
    let mut salt = vec![0u8; s_len];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut m_prime = vec![0u8; 8];
    m_prime.extend_from_slice(m_hash);
    m_prime.extend_from_slice(&salt);
    let hh = h.digest(&m_prime);
    let mut db = vec![0u8; em_len - s_len - h_len - 2];
    db.push(0x01);
    db.extend_from_slice(&salt);
    let mask = mgf1(mgf, &hh, db.len());
    for (d, m) in db.iter_mut().zip(mask) {
        *d ^= m;
    }
    // Clear the leftmost 8·emLen − emBits bits.
    let unused = 8 * em_len - em_bits;
    db[0] &= 0xFF >> unused;
    let mut em = db;
    em.extend_from_slice(&hh);
    em.push(0xBC);
    Ok(em)
}

/// Removes EME-PKCS1-v1_5 padding after an RSA decryption (RFC 8017 §7.2.2 step 3). The
/// checks run over the whole block before deciding, to avoid a padding oracle in timing.
pub fn pkcs1_type2_unpad(em: &[u8]) -> Result<Vec<u8>> {
    use subtle::{ConditionallySelectable, ConstantTimeEq};
    if em.len() < 11 {
        return Err(Error::EncryptedDataInvalid);
    }
    let good_header = em[0].ct_eq(&0) & em[1].ct_eq(&2);
    let mut found = subtle::Choice::from(0);
    let mut index: u32 = 0;
    for (i, b) in em.iter().enumerate().skip(2) {
        let is_zero = b.ct_eq(&0);
        let first = is_zero & !found;
        index.conditional_assign(&(i as u32), first);
        found |= is_zero;
    }
    // At least eight bytes of non-zero padding (index ≥ 10).
    let long_enough = subtle::Choice::from(u8::from(index >= 10));
    if bool::from(good_header & found & long_enough) {
        Ok(em[index as usize + 1..].to_vec())
    } else {
        Err(Error::EncryptedDataInvalid)
    }
}

/// Converts a DER ECDSA signature (what PIV returns) to PKCS#11's `r || s`, each of the
/// curve's size (PKCS#11 §2.3.1).
pub fn ecdsa_der_to_raw(der_sig: &[u8], field_len: usize) -> Result<Vec<u8>> {
    let bad = |_| Error::DeviceError("card returned a malformed ECDSA signature".into());
    match field_len {
        32 => Ok(p256::ecdsa::Signature::from_der(der_sig)
            .map_err(bad)?
            .to_vec()),
        48 => Ok(p384::ecdsa::Signature::from_der(der_sig)
            .map_err(bad)?
            .to_vec()),
        _ => Err(Error::General("unsupported curve size".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs1_type1_layout() {
        let em = pkcs1_type1(&[1, 2, 3], 16).unwrap();
        assert_eq!(
            em,
            [0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 2, 3]
        );
        assert_eq!(pkcs1_type1(&[0; 6], 16), Err(Error::DataLenRange));
    }

    #[test]
    fn type2_unpadding_accepts_good_and_rejects_bad_blocks() {
        let mut em = vec![0, 2];
        em.extend([0x55; 10]);
        em.push(0);
        em.extend(b"secret");
        assert_eq!(pkcs1_type2_unpad(&em).unwrap(), b"secret");
        let mut bad = em.clone();
        bad[1] = 1;
        assert!(pkcs1_type2_unpad(&bad).is_err());
        let mut short_pad = vec![0, 2, 1, 1, 0];
        short_pad.extend([7; 10]);
        assert!(pkcs1_type2_unpad(&short_pad).is_err());
    }

    #[test]
    fn pss_encoding_has_its_trailer_and_fits() {
        let em = emsa_pss_encode(&[7; 32], Hash::Sha256, Hash::Sha256, 32, 2047).unwrap();
        assert_eq!(em.len(), 256);
        assert_eq!(em[255], 0xBC);
        assert_eq!(em[0] & 0x80, 0);
    }
}
