//! Proof that a key lives in a TPM (the TPM virtual card's proof of possession), checked
//! with no TPM on the issuer's side:
//!
//! 1. the endorsement key's certificate chains to a configured TPM manufacturer CA, and its
//!    public key is the EK the credential is made for;
//! 2. credential activation (TPM 2.0 Part 1 §24): the issuer makes a credential for the
//!    attestation key's name, encrypted to the EK ([`make_credential`]); only the TPM that
//!    holds that EK, and holds a key of that name, recovers the secret, so the AK is in the
//!    EK's TPM and is the TPM-bound, restricted signing key it claims;
//! 3. `TPM2_Certify` of each slot key by that AK, over the issuer's nonce: the key's public
//!    area, whose name the AK certified, says fixedTPM, fixedParent, sensitiveDataOrigin.
//!
//! The TPM structures are parsed here by hand (TPM 2.0 Part 2 marshalling; no maintained
//! pure-Rust crate parses them, and tss-esapi needs the TSS libraries and a TPM stack), and
//! so is the credential construction (Part 1 §24.4, KDFa of §11.4.10.2) over RustCrypto.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use spki::EncodePublicKey;
use x509_cert::Certificate;

/// TPM_ALG_ identifiers (Part 2 §6.3).
mod alg {
    pub(super) const RSA: u16 = 0x0001;
    pub(super) const SHA256: u16 = 0x000B;
    pub(super) const NULL: u16 = 0x0010;
    pub(super) const RSASSA: u16 = 0x0014;
    pub(super) const RSAES: u16 = 0x0015;
    pub(super) const RSAPSS: u16 = 0x0016;
    pub(super) const OAEP: u16 = 0x0017;
    pub(super) const ECDSA: u16 = 0x0018;
    pub(super) const ECDAA: u16 = 0x001A;
    pub(super) const ECMQV: u16 = 0x001D;
    pub(super) const ECC: u16 = 0x0023;
}

/// TPMA_OBJECT bits (Part 2 §8.3).
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
const TPM_ECC_NIST_P256: u16 = 0x0003;
const TPM_ECC_NIST_P384: u16 = 0x0004;

/// A bounds-checked reader of TPM marshalled data (big-endian, `TPM2B` = u16 size + bytes).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("a TPM structure ends early".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], String> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after a TPM structure".into())
        }
    }
}

/// A key's TPM public area (`TPMT_PUBLIC`), RSA or ECC.
#[derive(Debug, Clone)]
pub struct TpmPublic {
    /// The marshalled `TPMT_PUBLIC`, as hashed for the name.
    bytes: Vec<u8>,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    key: TpmKey,
}

#[derive(Debug, Clone)]
enum TpmKey {
    Rsa { modulus: Vec<u8>, exponent: u32 },
    Ecc { curve: u16, x: Vec<u8>, y: Vec<u8> },
}

impl TpmPublic {
    /// Parses a marshalled `TPMT_PUBLIC` with SHA-256 as its name algorithm.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let kind = r.u16()?;
        if r.u16()? != alg::SHA256 {
            return Err("the key's name algorithm is not SHA-256".into());
        }
        let attributes = r.u32()?;
        let auth_policy = r.tpm2b()?.to_vec();
        // TPMT_SYM_DEF_OBJECT: algorithm, then key bits and mode unless null.
        if r.u16()? != alg::NULL {
            r.take(4)?;
        }
        let key = match kind {
            alg::RSA => {
                // TPMT_RSA_SCHEME: RSASSA, RSAPSS and OAEP carry a hash; RSAES nothing.
                match r.u16()? {
                    alg::NULL | alg::RSAES => {}
                    alg::RSASSA | alg::RSAPSS | alg::OAEP => {
                        r.u16()?;
                    }
                    _ => return Err("unknown RSA scheme in a key".into()),
                }
                let bits = r.u16()?;
                let exponent = r.u32()?;
                let modulus = r.tpm2b()?.to_vec();
                if modulus.len() * 8 != usize::from(bits) {
                    return Err("the RSA modulus does not have the key's size".into());
                }
                TpmKey::Rsa { modulus, exponent }
            }
            alg::ECC => {
                // TPMT_ECC_SCHEME: every scheme but null carries a hash, ECDAA a count too.
                let scheme = r.u16()?;
                match scheme {
                    alg::NULL => {}
                    alg::ECDSA..=alg::ECMQV => {
                        r.u16()?;
                        if scheme == alg::ECDAA {
                            r.u16()?;
                        }
                    }
                    _ => return Err("unknown ECC scheme in a key".into()),
                }
                let curve = r.u16()?;
                if r.u16()? != alg::NULL {
                    r.u16()?;
                }
                let x = r.tpm2b()?.to_vec();
                let y = r.tpm2b()?.to_vec();
                TpmKey::Ecc { curve, x, y }
            }
            _ => return Err("the key is neither RSA nor ECC".into()),
        };
        r.end()?;
        Ok(Self {
            bytes: bytes.to_vec(),
            attributes,
            auth_policy,
            key,
        })
    }

    /// The key's TPM name: `TPM_ALG_SHA256 ‖ SHA-256(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut name = alg::SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&self.bytes));
        name
    }

    pub fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }

    /// The key as a DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Result<Vec<u8>, String> {
        let der = match &self.key {
            TpmKey::Rsa { modulus, exponent } => {
                let e = if *exponent == 0 { 65_537 } else { *exponent };
                rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(modulus), rsa::BigUint::from(e))
                    .map_err(|e| format!("RSA key: {e}"))?
                    .to_public_key_der()
            }
            TpmKey::Ecc { curve, x, y } => {
                let size = match *curve {
                    TPM_ECC_NIST_P256 => 32,
                    TPM_ECC_NIST_P384 => 48,
                    _ => return Err("the key's curve is neither P-256 nor P-384".into()),
                };
                if x.len() > size || y.len() > size {
                    return Err("the key's point is too large for its curve".into());
                }
                let mut point = vec![0x04];
                point.extend(std::iter::repeat_n(0, size - x.len()));
                point.extend_from_slice(x);
                point.extend(std::iter::repeat_n(0, size - y.len()));
                point.extend_from_slice(y);
                if size == 32 {
                    p256::PublicKey::from_sec1_bytes(&point)
                        .map_err(|_| "the key's point is not on P-256")?
                        .to_public_key_der()
                } else {
                    p384::PublicKey::from_sec1_bytes(&point)
                        .map_err(|_| "the key's point is not on P-384")?
                        .to_public_key_der()
                }
            }
        };
        der.map(|d| d.into_vec()).map_err(|e| e.to_string())
    }

    /// Checks a `TPMT_SIGNATURE` by this key over `message` (RSASSA-PKCS1-v1.5 or ECDSA,
    /// both with SHA-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), String> {
        use ecdsa::signature::Verifier;
        let mut r = Reader(signature);
        let scheme = r.u16()?;
        if r.u16()? != alg::SHA256 {
            return Err("the signature's hash is not SHA-256".into());
        }
        let bad = |e: &dyn std::fmt::Display| format!("the signature does not verify: {e}");
        match (scheme, &self.key) {
            (alg::RSASSA, TpmKey::Rsa { .. }) => {
                let sig = r.tpm2b()?;
                r.end()?;
                let spki = self.spki_der()?;
                let key = <rsa::RsaPublicKey as spki::DecodePublicKey>::from_public_key_der(&spki)
                    .map_err(|e| bad(&e))?;
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
                let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|e| bad(&e))?;
                vk.verify(message, &sig).map_err(|e| bad(&e))
            }
            (alg::ECDSA, TpmKey::Ecc { curve, .. }) if *curve == TPM_ECC_NIST_P256 => {
                let (sr, ss) = (r.tpm2b()?, r.tpm2b()?);
                r.end()?;
                if sr.len() > 32 || ss.len() > 32 {
                    return Err("the signature's scalars are too large".into());
                }
                let pad = |v: &[u8]| {
                    let mut out = [0u8; 32];
                    out[32 - v.len()..].copy_from_slice(v);
                    out
                };
                let sig =
                    p256::ecdsa::Signature::from_scalars(pad(sr), pad(ss)).map_err(|e| bad(&e))?;
                let spki = self.spki_der()?;
                let vk = <p256::ecdsa::VerifyingKey as spki::DecodePublicKey>::from_public_key_der(
                    &spki,
                )
                .map_err(|e| bad(&e))?;
                vk.verify(message, &sig).map_err(|e| bad(&e))
            }
            _ => Err("the signature's scheme does not fit the attestation key".into()),
        }
    }
}

/// The digest of `TPM2_PolicySecret(authObject)` with an empty policyRef from a fresh
/// session (Part 3 §23.4): `H(H(0…0 ‖ TPM_CC_PolicySecret ‖ name) ‖ ref)`.
pub fn policy_secret_digest(auth_object_name: &[u8]) -> [u8; 32] {
    const TPM_CC_POLICY_SECRET: u32 = 0x0000_0151;
    let inner = Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(TPM_CC_POLICY_SECRET.to_be_bytes())
        .chain_update(auth_object_name)
        .finalize();
    Sha256::new().chain_update(inner).finalize().into()
}

/// TPMA_NV bits (Part 2 §13.4).
mod nv {
    pub(super) const AUTHWRITE: u32 = 1 << 2;
    pub(super) const POLICYWRITE: u32 = 1 << 3;
    pub(super) const TYPE_SHIFT: u32 = 4;
    pub(super) const TYPE_PIN_FAIL: u32 = 0x8;
    pub(super) const AUTHREAD: u32 = 1 << 18;
    pub(super) const POLICYREAD: u32 = 1 << 19;
    pub(super) const NO_DA: u32 = 1 << 25;
    pub(super) const WRITTEN: u32 = 1 << 29;
}

/// A PIN index as the key's policy names it: a `TPMS_NV_PUBLIC` whose name the key's
/// `authPolicy` is `PolicySecret` on, of type PIN-fail (the TPM counts failed
/// authorisations in the index and refuses all at its limit), read by its authValue only
/// (the PIN), never by a policy nor written by its authValue (which would reset its count),
/// and without DA (its count is its own). Returns the index's name.
pub fn check_pin_index(key: &TpmPublic, index_public: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader(index_public);
    let _handle = r.u32()?;
    if r.u16()? != alg::SHA256 {
        return Err("the PIN index's name algorithm is not SHA-256".into());
    }
    let attributes = r.u32()?;
    let _policy = r.tpm2b()?;
    let _size = r.u16()?;
    r.end()?;
    let kind = (attributes >> nv::TYPE_SHIFT) & 0xF;
    if kind != nv::TYPE_PIN_FAIL
        || attributes & (nv::AUTHREAD | nv::NO_DA | nv::WRITTEN)
            != nv::AUTHREAD | nv::NO_DA | nv::WRITTEN
        || attributes & (nv::AUTHWRITE | nv::POLICYWRITE | nv::POLICYREAD) != 0
    {
        return Err(
            "the key's PIN index is not a written PIN-fail index read by its PIN alone".into(),
        );
    }
    let mut name = alg::SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&Sha256::digest(index_public));
    if key.auth_policy != policy_secret_digest(&name) {
        return Err("the key's policy is not PolicySecret on that PIN index".into());
    }
    Ok(name)
}

/// What a `TPM2_Certify` attests (`TPMS_ATTEST` with `TPMS_CERTIFY_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    /// The caller's qualifying data: the issuer's nonce.
    pub extra_data: Vec<u8>,
    /// The TPM's firmware version, as the TPM states it.
    pub firmware_version: u64,
    /// The name of the certified key.
    pub name: Vec<u8>,
}

/// Parses a marshalled `TPMS_ATTEST` of a `TPM2_Certify`.
pub fn parse_certify(bytes: &[u8]) -> Result<Certified, String> {
    let mut r = Reader(bytes);
    if r.u32()? != TPM_GENERATED_VALUE {
        return Err("the attestation was not made by a TPM (magic)".into());
    }
    if r.u16()? != TPM_ST_ATTEST_CERTIFY {
        return Err("the attestation is not a TPM2_Certify".into());
    }
    let _qualified_signer = r.tpm2b()?;
    let extra_data = r.tpm2b()?.to_vec();
    // TPMS_CLOCK_INFO: clock, resetCount, restartCount, safe.
    r.take(8 + 4 + 4 + 1)?;
    let firmware = r.take(8)?;
    let firmware_version = u64::from_be_bytes(firmware.try_into().map_err(|_| "firmware")?);
    let name = r.tpm2b()?.to_vec();
    let _qualified_name = r.tpm2b()?;
    r.end()?;
    Ok(Certified {
        extra_data,
        firmware_version,
        name,
    })
}

/// An endorsement-key certificate chained to one of `roots` (directly: TPM vendors' EK
/// CAs are configured as they sign), valid at `now`; returns its RSA public key.
pub fn endorsement_key(
    cert: &Certificate,
    roots: &[Certificate],
    now: std::time::Duration,
) -> Result<rsa::RsaPublicKey, String> {
    use der::Encode;
    let root = roots
        .iter()
        .find(|r| {
            r.tbs_certificate.subject == cert.tbs_certificate.issuer
                && crate::x509::verify_signature(
                    &r.tbs_certificate.subject_public_key_info,
                    &cert.signature_algorithm,
                    &cert.tbs_certificate.to_der().unwrap_or_default(),
                    cert.signature.raw_bytes(),
                )
                .is_ok()
        })
        .ok_or("the endorsement key certificate does not chain to a trusted TPM manufacturer CA")?;
    check_ek_extensions(cert)?;
    for (c, what) in [(cert, "endorsement key"), (root, "TPM manufacturer CA")] {
        let v = &c.tbs_certificate.validity;
        if now < v.not_before.to_unix_duration() || now > v.not_after.to_unix_duration() {
            return Err(format!("the {what} certificate is not valid now"));
        }
    }
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    <rsa::RsaPublicKey as spki::DecodePublicKey>::from_public_key_der(&spki)
        .map_err(|_| "the endorsement key is not an RSA key (ECC EKs are not supported yet)".into())
}

/// What an EK certificate's extensions may say (TCG EK Credential Profile §3.2): not a CA;
/// if it has a key usage, keyEncipherment (the EK decrypts the credential's seed); if it
/// has an extended key usage, the TCG's EK certificate purpose.
fn check_ek_extensions(cert: &Certificate) -> Result<(), String> {
    use der::Decode;
    use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};
    const TCG_KP_EK_CERTIFICATE: const_oid::ObjectIdentifier =
        const_oid::ObjectIdentifier::new_unwrap("2.23.133.8.1");
    for ext in cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default()
    {
        let value = ext.extn_value.as_bytes();
        let bad = |what: &str| format!("the endorsement key certificate's {what}");
        if ext.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS {
            let bc = BasicConstraints::from_der(value).map_err(|_| bad("basic constraints"))?;
            if bc.ca {
                return Err(bad("basic constraints make it a CA"));
            }
        } else if ext.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE {
            let ku = KeyUsage::from_der(value).map_err(|_| bad("key usage"))?;
            if !ku.0.contains(KeyUsages::KeyEncipherment) {
                return Err(bad("key usage lacks keyEncipherment"));
            }
        } else if ext.extn_id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE {
            let eku = ExtendedKeyUsage::from_der(value).map_err(|_| bad("extended key usage"))?;
            if !eku.0.contains(&TCG_KP_EK_CERTIFICATE) {
                return Err(bad("extended key usage is not tcg-kp-EKCertificate"));
            }
        }
    }
    Ok(())
}

/// KDFa with HMAC-SHA-256 (Part 1 §11.4.10.2): `bits` of key from `key`, a label (its
/// terminating zero added here) and two contexts.
fn kdfa(key: &[u8], label: &[u8], context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = usize::try_from(bits / 8).unwrap_or(0);
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// A credential for the object named `name` (the AK), readable only by the TPM holding
/// the private part of `ek` (an RSA EK of the TCG default template: SHA-256, AES-128-CFB),
/// as `TPM2_MakeCredential` makes it: returns the `TPM2B_ID_OBJECT` and
/// `TPM2B_ENCRYPTED_SECRET` contents for `TPM2_ActivateCredential`.
pub fn make_credential(
    ek: &rsa::RsaPublicKey,
    name: &[u8],
    secret: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), String> {
    if secret.len() > 32 {
        return Err("a credential secret is at most a SHA-256 digest".into());
    }
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let encrypted_seed = ek
        .encrypt(
            &mut rand::rngs::OsRng,
            rsa::Oaep::new_with_label::<Sha256, _>("IDENTITY\0"),
            &seed,
        )
        .map_err(|e| format!("encrypting to the endorsement key: {e}"))?;
    let sym_key = kdfa(&seed, b"STORAGE", name, &[], 128);
    let mut identity = u16::try_from(secret.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    identity.extend_from_slice(secret);
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &[0u8; 16])
        .map_err(|e| e.to_string())?
        .encrypt(&mut identity);
    let hmac_key = kdfa(&seed, b"INTEGRITY", &[], &[], 256);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hmac_key).expect("HMAC takes any key");
    mac.update(&identity);
    mac.update(name);
    let outer = mac.finalize().into_bytes();
    let mut id_object = 32u16.to_be_bytes().to_vec();
    id_object.extend_from_slice(&outer);
    id_object.extend_from_slice(&identity);
    Ok((id_object, encrypted_seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_matches_the_reference_vector() {
        // The KDFa of SP 800-108 in counter mode with HMAC-SHA-256 as the TPM specifies
        // it: recomputed step by step for one block.
        let out = kdfa(b"key", b"STORAGE", b"u", b"v", 128);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"key").unwrap();
        mac.update(&1u32.to_be_bytes());
        mac.update(b"STORAGE\0uv");
        mac.update(&128u32.to_be_bytes());
        assert_eq!(out, mac.finalize().into_bytes()[..16]);
        assert_eq!(kdfa(b"key", b"INTEGRITY", &[], &[], 256).len(), 32);
    }

    #[test]
    fn hostile_structures_are_refused_not_panicked_on() {
        for bytes in [
            &[][..],
            &[0x00, 0x23],
            &[0xFF; 3],
            &[0x00, 0x01, 0x00, 0x0B, 0, 0, 0, 0, 0xFF, 0xFF],
        ] {
            assert!(TpmPublic::parse(bytes).is_err());
            assert!(parse_certify(bytes).is_err());
        }
    }
}
