//! PKCS#11 objects of a PIV token: for each key slot with a certificate, the certificate,
//! its public key and the private key, linked by `CKA_ID` (PKCS#11 §4.4–4.9).

use cryptoki_sys as sys;
use der::{Decode, Encode};
use tessera_piv::piv::KeyRef;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::Certificate;

use crate::{Error, Result};

/// One attribute's value, or the fact that it is sensitive and never leaves the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Value(Vec<u8>),
    Sensitive,
}

/// The kind of key behind an object, as signing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// An EC key; `field_len` is the byte size of the curve order (32 for P-256).
    Ec {
        alg: tessera_piv::piv::Algorithm,
        field_len: usize,
    },
    /// An RSA key with a modulus of `modulus_len` bytes; `alg` is what GENERAL
    /// AUTHENTICATE names it by.
    Rsa {
        alg: tessera_piv::piv::Algorithm,
        modulus_len: usize,
    },
    /// A secret held by the module for the session (an ECDH result).
    Secret,
}

/// What a private key may do, from the certificate's key usage (RFC 5280 §4.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub sign: bool,
    pub decrypt: bool,
    pub derive: bool,
}

/// What the card says about a key (Yubico GET METADATA): its algorithm and PIN policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMeta {
    pub alg: tessera_piv::piv::Algorithm,
    pub pin_policy: tessera_piv::piv::PinPolicy,
}

/// One object.
#[derive(Debug, Clone)]
pub struct Object {
    pub class: sys::CK_OBJECT_CLASS,
    pub key_ref: KeyRef,
    /// Private objects are visible only to a logged-in user (PKCS#11 §4.4).
    pub private: bool,
    pub kind: KeyKind,
    pub usage: Usage,
    /// Whether each use needs a fresh PIN (PIV 9C, `CKA_ALWAYS_AUTHENTICATE`).
    pub always_authenticate: bool,
    attrs: Vec<(sys::CK_ATTRIBUTE_TYPE, Attr)>,
}

impl Object {
    /// The value of an attribute, `None` if the object has no such attribute.
    pub fn attr(&self, t: sys::CK_ATTRIBUTE_TYPE) -> Option<&Attr> {
        self.attrs.iter().find(|(k, _)| *k == t).map(|(_, v)| v)
    }

    /// Whether the object matches a search template (PKCS#11 §5.7 C_FindObjectsInit):
    /// every template attribute exists with exactly that value.
    pub fn matches(&self, template: &[(sys::CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
        template
            .iter()
            .all(|(t, v)| matches!(self.attr(*t), Some(Attr::Value(x)) if x == v))
    }
}

impl Object {
    /// A session secret-key object from an ECDH derivation (PKCS#11 §2.3.9, CKD_NULL: the
    /// key value is the shared secret's x coordinate, cut to `CKA_VALUE_LEN` if given). The
    /// caller's template supplies the rest; the value is sensitive unless the template
    /// asks for an extractable, non-sensitive key.
    pub fn derived_secret(
        secret: &[u8],
        template: &[(sys::CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<Self> {
        let get = |t| {
            template
                .iter()
                .find(|(k, _)| *k == t)
                .map(|(_, v)| v.as_slice())
        };
        let flag = |t, default: bool| match get(t) {
            Some([b]) => Ok(*b != 0),
            Some(_) => Err(Error::AttributeValueInvalid),
            None => Ok(default),
        };
        if flag(sys::CKA_TOKEN, false)? {
            return Err(Error::TokenWriteProtected);
        }
        if let Some(class) = get(sys::CKA_CLASS) {
            if class != ulong(sys::CKO_SECRET_KEY).as_slice() {
                return Err(Error::TemplateInconsistent);
            }
        }
        let value_len = match get(sys::CKA_VALUE_LEN) {
            Some(v) => {
                let bytes: [u8; std::mem::size_of::<sys::CK_ULONG>()] =
                    v.try_into().map_err(|_| Error::AttributeValueInvalid)?;
                let n = sys::CK_ULONG::from_ne_bytes(bytes) as usize;
                if n == 0 || n > secret.len() {
                    return Err(Error::TemplateInconsistent);
                }
                n
            }
            None => secret.len(),
        };
        let sensitive = flag(sys::CKA_SENSITIVE, true)?;
        let extractable = flag(sys::CKA_EXTRACTABLE, false)?;
        let value = secret[..value_len].to_vec();
        let key_type = get(sys::CKA_KEY_TYPE)
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| ulong(sys::CKK_GENERIC_SECRET));
        let mut attrs: Vec<(sys::CK_ATTRIBUTE_TYPE, Attr)> = vec![
            (sys::CKA_CLASS, Attr::Value(ulong(sys::CKO_SECRET_KEY))),
            (sys::CKA_KEY_TYPE, Attr::Value(key_type)),
            (sys::CKA_TOKEN, Attr::Value(bool(false))),
            (
                sys::CKA_PRIVATE,
                Attr::Value(bool(flag(sys::CKA_PRIVATE, false)?)),
            ),
            (sys::CKA_SENSITIVE, Attr::Value(bool(sensitive))),
            (sys::CKA_EXTRACTABLE, Attr::Value(bool(extractable))),
            (sys::CKA_ALWAYS_SENSITIVE, Attr::Value(bool(sensitive))),
            (sys::CKA_NEVER_EXTRACTABLE, Attr::Value(bool(!extractable))),
            (sys::CKA_LOCAL, Attr::Value(bool(false))),
            (
                sys::CKA_VALUE_LEN,
                Attr::Value(ulong(value_len as sys::CK_ULONG)),
            ),
            (
                sys::CKA_VALUE,
                if sensitive || !extractable {
                    Attr::Sensitive
                } else {
                    Attr::Value(value)
                },
            ),
        ];
        // Other template attributes (label, ID, usage flags) are kept as given.
        for (t, v) in template {
            if !attrs.iter().any(|(k, _)| k == t) {
                attrs.push((*t, Attr::Value(v.clone())));
            }
        }
        Ok(Self {
            class: sys::CKO_SECRET_KEY,
            key_ref: KeyRef(0),
            private: flag(sys::CKA_PRIVATE, false)?,
            kind: KeyKind::Secret,
            usage: Usage {
                sign: false,
                decrypt: false,
                derive: false,
            },
            always_authenticate: false,
            attrs,
        })
    }
}

/// Encodes a `CK_ULONG` attribute.
pub fn ulong(v: sys::CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Encodes a `CK_BBOOL` attribute.
pub fn bool(b: bool) -> Vec<u8> {
    vec![if b { sys::CK_TRUE } else { sys::CK_FALSE }]
}

/// The `CKA_ID` of a key slot, as OpenSC numbers them (01 9A, 02 9C, 03 9D, 04 9E, then
/// the retired slots 82–95 as 05–18) so that configurations written for OpenSC work.
pub fn key_id(key_ref: KeyRef) -> Vec<u8> {
    let id = match key_ref.0 {
        0x9A => 1,
        0x9C => 2,
        0x9D => 3,
        0x9E => 4,
        r @ 0x82..=0x95 => r - 0x82 + 5,
        other => other,
    };
    vec![id]
}

fn slot_names(key_ref: KeyRef) -> (String, String) {
    match key_ref.0 {
        0x9A => (
            "Certificate for PIV Authentication".into(),
            "PIV AUTH key".into(),
        ),
        0x9C => (
            "Certificate for Digital Signature".into(),
            "SIGN key".into(),
        ),
        0x9D => (
            "Certificate for Key Management".into(),
            "KEY MAN key".into(),
        ),
        0x9E => (
            "Certificate for Card Authentication".into(),
            "CARD AUTH key".into(),
        ),
        r => (
            format!("Retired Certificate for Key Management {}", r - 0x81),
            format!("RETIRED KEY MAN key {}", r - 0x81),
        ),
    }
}

/// The certificate, public-key and private-key objects of one key slot. `meta`, where the
/// card has it, decides the key's algorithm and PIN policy; without it the slot's default
/// policy (SP 800-73-4 Part 1 Table 4b: 9C PIN always, 9E none, others once) and the
/// certificate's key size stand in.
pub fn objects_for_certificate(
    key_ref: KeyRef,
    cert_der: &[u8],
    meta: Option<KeyMeta>,
) -> Result<Vec<Object>> {
    let cert = Certificate::from_der(cert_der).map_err(|e| {
        Error::DeviceError(format!("certificate in slot {key_ref} unreadable: {e}"))
    })?;
    let tbs = &cert.tbs_certificate;
    let der = |e: der::Error| Error::General(e.to_string());
    let subject = tbs.subject.to_der().map_err(der)?;
    let issuer = tbs.issuer.to_der().map_err(der)?;
    let serial = tbs.serial_number.to_der().map_err(der)?;
    let spki = &tbs.subject_public_key_info;
    let spki_der = spki.to_der().map_err(der)?;
    let id = key_id(key_ref);
    let (cert_label, key_label) = slot_names(key_ref);

    // Key type attributes shared by the public and private key objects.
    let mut key_attrs: Vec<(sys::CK_ATTRIBUTE_TYPE, Attr)> = Vec::new();
    let kind = if spki.algorithm.oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
            .ok_or_else(|| Error::DeviceError("EC key without named curve".into()))?;
        let (alg, field_len) = if curve == const_oid::db::rfc5912::SECP_256_R_1 {
            (tessera_piv::piv::Algorithm::EccP256, 32)
        } else if curve == const_oid::db::rfc5912::SECP_384_R_1 {
            (tessera_piv::piv::Algorithm::EccP384, 48)
        } else {
            return Err(Error::DeviceError(format!("unsupported curve {curve}")));
        };
        let point = spki.subject_public_key.raw_bytes();
        key_attrs.push((sys::CKA_KEY_TYPE, Attr::Value(ulong(sys::CKK_EC))));
        key_attrs.push((
            sys::CKA_EC_PARAMS,
            Attr::Value(curve.to_der().map_err(der)?),
        ));
        key_attrs.push((
            sys::CKA_EC_POINT,
            Attr::Value(
                der::asn1::OctetString::new(point)
                    .map_err(der)?
                    .to_der()
                    .map_err(der)?,
            ),
        ));
        KeyKind::Ec { alg, field_len }
    } else if spki.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
        let rsa = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes())
            .map_err(|e| Error::DeviceError(format!("RSA key unreadable: {e}")))?;
        let modulus = rsa.modulus.as_bytes().to_vec();
        let modulus_len = modulus.len();
        key_attrs.push((sys::CKA_KEY_TYPE, Attr::Value(ulong(sys::CKK_RSA))));
        key_attrs.push((sys::CKA_MODULUS, Attr::Value(modulus)));
        key_attrs.push((
            sys::CKA_PUBLIC_EXPONENT,
            Attr::Value(rsa.public_exponent.as_bytes().to_vec()),
        ));
        key_attrs.push((
            sys::CKA_MODULUS_BITS,
            Attr::Value(ulong((modulus_len * 8) as _)),
        ));
        let alg = match meta {
            Some(m) if m.alg.is_rsa() => m.alg,
            _ => tessera_piv::piv::Algorithm::rsa_of_modulus_len(modulus_len)
                .ok_or_else(|| Error::DeviceError(format!("RSA modulus of {modulus_len} bytes")))?,
        };
        KeyKind::Rsa { alg, modulus_len }
    } else {
        return Err(Error::DeviceError(format!(
            "unsupported key algorithm {}",
            spki.algorithm.oid
        )));
    };

    let usage = usage_from(&cert, key_ref, &kind);
    let pin_policy = meta.map_or(key_ref.default_pin_policy(), |m| m.pin_policy);
    let always_authenticate = pin_policy == tessera_piv::piv::PinPolicy::Always;
    // A key the card uses without a PIN (9E, the card-authentication key, SP 800-73-4:
    // usable over contactless for physical access) is visible without a login.
    let needs_login = pin_policy != tessera_piv::piv::PinPolicy::Never;
    let common = |class: sys::CK_OBJECT_CLASS, label: &str, private: bool| {
        vec![
            (sys::CKA_CLASS, Attr::Value(ulong(class))),
            (sys::CKA_TOKEN, Attr::Value(bool(true))),
            (sys::CKA_PRIVATE, Attr::Value(bool(private))),
            (sys::CKA_MODIFIABLE, Attr::Value(bool(false))),
            (sys::CKA_COPYABLE, Attr::Value(bool(false))),
            (sys::CKA_DESTROYABLE, Attr::Value(bool(false))),
            (sys::CKA_LABEL, Attr::Value(label.as_bytes().to_vec())),
            (sys::CKA_ID, Attr::Value(id.clone())),
        ]
    };

    let mut cert_obj = common(sys::CKO_CERTIFICATE, &cert_label, false);
    cert_obj.extend([
        (
            sys::CKA_CERTIFICATE_TYPE,
            Attr::Value(ulong(sys::CKC_X_509)),
        ),
        (sys::CKA_TRUSTED, Attr::Value(bool(false))),
        (sys::CKA_CERTIFICATE_CATEGORY, Attr::Value(ulong(0))),
        (sys::CKA_SUBJECT, Attr::Value(subject.clone())),
        (sys::CKA_ISSUER, Attr::Value(issuer)),
        (sys::CKA_SERIAL_NUMBER, Attr::Value(serial)),
        (sys::CKA_VALUE, Attr::Value(cert_der.to_vec())),
        (sys::CKA_PUBLIC_KEY_INFO, Attr::Value(spki_der.clone())),
    ]);

    let is_rsa = matches!(kind, KeyKind::Rsa { .. });
    let mut pub_obj = common(sys::CKO_PUBLIC_KEY, &key_label, false);
    pub_obj.extend(key_attrs.iter().cloned());
    pub_obj.extend([
        (sys::CKA_SUBJECT, Attr::Value(subject.clone())),
        (sys::CKA_PUBLIC_KEY_INFO, Attr::Value(spki_der.clone())),
        (sys::CKA_VERIFY, Attr::Value(bool(usage.sign))),
        (sys::CKA_ENCRYPT, Attr::Value(bool(usage.decrypt && is_rsa))),
        (sys::CKA_WRAP, Attr::Value(bool(usage.decrypt && is_rsa))),
        (sys::CKA_DERIVE, Attr::Value(bool(false))),
        (sys::CKA_LOCAL, Attr::Value(bool(true))),
    ]);

    let mut priv_obj = common(sys::CKO_PRIVATE_KEY, &key_label, needs_login);
    priv_obj.extend(key_attrs);
    priv_obj.extend([
        (sys::CKA_SUBJECT, Attr::Value(subject)),
        (sys::CKA_PUBLIC_KEY_INFO, Attr::Value(spki_der)),
        (sys::CKA_SIGN, Attr::Value(bool(usage.sign))),
        (sys::CKA_SIGN_RECOVER, Attr::Value(bool(false))),
        (sys::CKA_DECRYPT, Attr::Value(bool(usage.decrypt && is_rsa))),
        (sys::CKA_UNWRAP, Attr::Value(bool(usage.decrypt && is_rsa))),
        (sys::CKA_DERIVE, Attr::Value(bool(usage.derive && !is_rsa))),
        (sys::CKA_SENSITIVE, Attr::Value(bool(true))),
        (sys::CKA_ALWAYS_SENSITIVE, Attr::Value(bool(true))),
        (sys::CKA_EXTRACTABLE, Attr::Value(bool(false))),
        (sys::CKA_NEVER_EXTRACTABLE, Attr::Value(bool(true))),
        (
            sys::CKA_ALWAYS_AUTHENTICATE,
            Attr::Value(bool(always_authenticate)),
        ),
        (sys::CKA_LOCAL, Attr::Value(bool(true))),
        (sys::CKA_VALUE, Attr::Sensitive),
        (sys::CKA_PRIVATE_EXPONENT, Attr::Sensitive),
    ]);

    let make = |class, private, attrs| Object {
        class,
        key_ref,
        private,
        kind: kind.clone(),
        usage,
        always_authenticate,
        attrs,
    };
    Ok(vec![
        make(sys::CKO_CERTIFICATE, false, cert_obj),
        make(sys::CKO_PUBLIC_KEY, false, pub_obj),
        make(sys::CKO_PRIVATE_KEY, needs_login, priv_obj),
    ])
}

/// RSAPublicKey (RFC 8017 §A.1.1).
#[derive(der::Sequence)]
struct RsaPublicKey {
    modulus: der::asn1::Uint,
    public_exponent: der::asn1::Uint,
}

fn usage_from(cert: &Certificate, key_ref: KeyRef, kind: &KeyKind) -> Usage {
    let ku = cert
        .tbs_certificate
        .get::<KeyUsage>()
        .ok()
        .flatten()
        .map(|(_, ku)| ku);
    match ku {
        Some(ku) => Usage {
            sign: ku.0.contains(KeyUsages::DigitalSignature)
                || ku.0.contains(KeyUsages::NonRepudiation),
            decrypt: ku.0.contains(KeyUsages::KeyEncipherment)
                || ku.0.contains(KeyUsages::DataEncipherment),
            derive: ku.0.contains(KeyUsages::KeyAgreement),
        },
        // No key usage extension: what the PIV slot is for (SP 800-73-4 Part 1 §3.2).
        None => {
            let km = key_ref == KeyRef::KEY_MANAGEMENT || (0x82..=0x95).contains(&key_ref.0);
            Usage {
                sign: !km || matches!(kind, KeyKind::Rsa { .. }),
                decrypt: km,
                derive: km,
            }
        }
    }
}

/// The subject common name of a certificate, for the token label (as OpenSC labels PIV
/// tokens with the cardholder's name).
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let cert = Certificate::from_der(cert_der).ok()?;
    cert.tbs_certificate.subject.0.iter().find_map(|rdn| {
        rdn.0.iter().find_map(|atv| {
            if atv.oid != const_oid::db::rfc4519::CN {
                return None;
            }
            atv.value
                .decode_as::<der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    atv.value
                        .decode_as::<der::asn1::PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_owned())
                })
                .ok()
        })
    })
}
