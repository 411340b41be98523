//! The IdP's narrow layer over libxml2 and libxmlsec1 (Debian's 1.2.x, OpenSSL back end):
//! the only unsafe code in `idp/`, over a small C shim (`src/shim.c`, see its header for
//! why it is C) that the build compiles against the installed headers.
//!
//! - [`Document::parse`] reads XML we did not write: no DTD of any kind (refused), no
//!   entities, no network, libxml2's depth limits, a size cap, and every `ID` attribute
//!   registered with duplicates refused.
//! - [`Document::verify_root`] checks the one signature that PROFILES.md allows — a direct
//!   child of the root, one reference naming the root by its ID, exclusive c14n, enveloped,
//!   SHA-256, RSA-SHA256 or ECDSA-SHA256, the key only the certificate given (never one from
//!   the message) — and returns the bytes that were digested: callers read the message from
//!   those, so what they process is exactly what was signed (a comment inside a NameID, a
//!   second element with the same name elsewhere: not in those bytes).
//! - [`Document::canonical`] gives an unsigned message the same treatment (exclusive c14n
//!   without comments), so that signed and unsigned messages are read the same way.
//! - [`sign_root`] signs a document we wrote: xmlsec builds the signature and the canonical
//!   SignedInfo, the caller's key (in a PKCS#11 token) signs those bytes, and the result is
//!   verified with the real certificate before it is returned.
//!
//! A [`Document`] belongs to one thread at a time (`Send`, not `Sync`); the libraries are
//! initialised once per process.
#![allow(unsafe_code)]

#[cfg(feature = "testing")]
pub mod testing;

use std::ffi::{c_char, c_int, c_uchar, CStr};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// Why XML was refused or could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the XML document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("XML with a document type declaration (DTD) is refused")]
    Doctype,
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("duplicate ID: {0}")]
    DuplicateId(String),
    #[error("an element carries more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("the signature is not of the form accepted: {0}")]
    SignatureShape(String),
    #[error("the key or certificate could not be used: {0}")]
    BadKey(String),
    #[error("the signature does not verify: {0}")]
    SignatureInvalid(String),
    #[error("the signature covers another element than the message's root")]
    NotRoot,
    #[error("the document has no element to sign or no signature to complete: {0}")]
    NoElement(String),
    #[error("the signer failed: {0}")]
    Signer(String),
    #[error("libxmlsec1: {0}")]
    Internal(String),
}

#[repr(C)]
struct XmlDoc {
    _opaque: [u8; 0],
}

extern "C" {
    fn tx_init() -> c_int;
    fn tx_last_error() -> *const c_char;
    fn tx_free_buffer(p: *mut c_uchar);
    fn tx_parse(buf: *const c_uchar, len: usize, max: usize, out: *mut *mut XmlDoc) -> c_int;
    fn tx_free_doc(doc: *mut XmlDoc);
    fn tx_dump(doc: *mut XmlDoc, out: *mut *mut c_uchar, len: *mut usize) -> c_int;
    fn tx_canonical(doc: *mut XmlDoc, out: *mut *mut c_uchar, len: *mut usize) -> c_int;
    fn tx_verify_root(
        doc: *mut XmlDoc,
        cert: *const c_uchar,
        cert_len: usize,
        whole_document_uri: c_int,
        signed_out: *mut *mut c_uchar,
        signed_len: *mut usize,
    ) -> c_int;
    fn tx_presign(
        doc: *mut XmlDoc,
        ecdsa: c_int,
        dummy: *const c_uchar,
        dummy_len: usize,
        out: *mut *mut c_uchar,
        len: *mut usize,
    ) -> c_int;
    fn tx_encrypt_element(
        doc: *mut XmlDoc,
        ns: *const c_char,
        name: *const c_char,
        cert: *const c_uchar,
        cert_len: usize,
        cipher: c_int,
    ) -> c_int;
    fn tx_set_signature(
        doc: *mut XmlDoc,
        value: *const c_uchar,
        value_len: usize,
        cert: *const c_uchar,
        cert_len: usize,
    ) -> c_int;
}

/// Initialises libxml2 and libxmlsec1 once; every entry point calls it first.
fn init() -> Result<(), XmlError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: tx_init takes no arguments; OnceLock runs it once, before any other call.
        let rc = unsafe { tx_init() };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!("initialising libxmlsec1 failed: {}", last_error()))
        }
    })
    .clone()
    .map_err(XmlError::Internal)
}

/// The shim's note of the last failure on this thread: one line, at most 300 characters
/// (it may quote the attacker's input; pages escape it, logs get it as one field).
fn last_error() -> String {
    // SAFETY: tx_last_error returns a pointer to a NUL-terminated thread-local buffer that
    // lives as long as the thread; it is copied at once.
    unsafe { CStr::from_ptr(tx_last_error()) }
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect::<String>()
        .trim_end_matches([';', ' '])
        .to_owned()
}

/// Attributes (and namespace declarations) one element may carry. libxml2 checks
/// duplicates and its c14n sorts in time that grows with the square of their number, and
/// both run before any signature is checked: a 256 KiB element of attributes costs
/// seconds. SAML's elements carry a handful.
pub const MAX_ATTRIBUTES: usize = 64;

/// Whether some start tag in `xml` carries more than [`MAX_ATTRIBUTES`] attributes: one
/// pass over the bytes, before libxml2 sees them. Comments, processing instructions,
/// CDATA sections and declarations are skipped; a document this misreads is not well
/// formed, and libxml2 refuses it after.
fn too_many_attributes(xml: &[u8]) -> bool {
    let mut i = 0;
    while let Some(lt) = xml[i..].iter().position(|&b| b == b'<') {
        i += lt + 1;
        let rest = &xml[i..];
        let skip_to = |end: &[u8]| {
            rest.windows(end.len())
                .position(|w| w == end)
                .map_or(xml.len(), |p| i + p + end.len())
        };
        if rest.starts_with(b"!--") {
            i = skip_to(b"-->");
        } else if rest.starts_with(b"![CDATA[") {
            i = skip_to(b"]]>");
        } else if rest.starts_with(b"?") {
            i = skip_to(b"?>");
        } else if rest.starts_with(b"!") {
            i = skip_to(b">");
        } else {
            // A start or end tag: count `=` outside quoted values up to its `>`.
            let (mut count, mut quote) = (0, None);
            while i < xml.len() {
                let b = xml[i];
                i += 1;
                match (quote, b) {
                    (Some(q), b) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(b),
                    (None, b'=') => {
                        count += 1;
                        if count > MAX_ATTRIBUTES {
                            return true;
                        }
                    }
                    (None, b'>') => break,
                    (None, _) => {}
                }
            }
        }
    }
    false
}

fn error(rc: c_int) -> XmlError {
    let why = last_error();
    match rc {
        -2 => XmlError::TooLarge(0),
        -3 => XmlError::Doctype,
        -4 => XmlError::Malformed(why),
        -5 => XmlError::DuplicateId(why),
        -6 => XmlError::SignatureShape(why),
        -7 => XmlError::BadKey(why),
        -8 => XmlError::SignatureInvalid(why),
        -9 => XmlError::NotRoot,
        -11 => XmlError::NoElement(why),
        _ => XmlError::Internal(why),
    }
}

/// Takes a buffer the shim allocated (with libxml2's allocator) into a `Vec`.
///
/// # Safety
/// `p` must be a buffer of `len` bytes from the shim, or null; it is freed here.
unsafe fn take(p: *mut c_uchar, len: usize) -> Vec<u8> {
    if p.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees p points to len readable bytes from xmlMalloc.
    let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
    // SAFETY: p came from libxml2's allocator and is not used again.
    unsafe { tx_free_buffer(p) };
    v
}

/// A parsed XML document (libxml2's tree), with its IDs registered.
#[derive(Debug)]
pub struct Document {
    doc: NonNull<XmlDoc>,
}

// SAFETY: a libxml2 document may move between threads as long as one thread uses it at a
// time; `Document` is not `Sync` and every method takes it by reference from its owner.
unsafe impl Send for Document {}

impl Drop for Document {
    fn drop(&mut self) {
        // SAFETY: the document was made by tx_parse and is freed once, here.
        unsafe { tx_free_doc(self.doc.as_ptr()) }
    }
}

impl Document {
    /// Parses a document we did not write, at most `max` bytes: refused with a DTD, when
    /// not well formed, nested deeper than libxml2 allows (256), or with an ID twice.
    pub fn parse(xml: &[u8], max: usize) -> Result<Self, XmlError> {
        init()?;
        if xml.len() > max {
            return Err(XmlError::TooLarge(max));
        }
        if too_many_attributes(xml) {
            return Err(XmlError::TooManyAttributes);
        }
        let mut doc = std::ptr::null_mut();
        // SAFETY: xml is a live slice of xml.len() bytes; doc receives an owned pointer.
        let rc = unsafe { tx_parse(xml.as_ptr(), xml.len(), max, &mut doc) };
        if rc != 0 {
            return Err(match error(rc) {
                XmlError::TooLarge(_) => XmlError::TooLarge(max),
                e => e,
            });
        }
        NonNull::new(doc)
            .map(|doc| Self { doc })
            .ok_or_else(|| XmlError::Internal("no document".into()))
    }

    /// The document as bytes (UTF-8, with an XML declaration).
    pub fn to_bytes(&self) -> Result<Vec<u8>, XmlError> {
        let (mut out, mut len) = (std::ptr::null_mut(), 0);
        // SAFETY: the document is live; out/len receive a shim buffer taken below.
        let rc = unsafe { tx_dump(self.doc.as_ptr(), &mut out, &mut len) };
        if rc != 0 {
            return Err(error(rc));
        }
        // SAFETY: out/len came from tx_dump.
        Ok(unsafe { take(out, len) })
    }

    /// The document in exclusive canonical form without comments.
    pub fn canonical(&self) -> Result<Vec<u8>, XmlError> {
        let (mut out, mut len) = (std::ptr::null_mut(), 0);
        // SAFETY: the document is live; out/len receive a shim buffer taken below.
        let rc = unsafe { tx_canonical(self.doc.as_ptr(), &mut out, &mut len) };
        if rc != 0 {
            return Err(error(rc));
        }
        // SAFETY: out/len came from tx_canonical.
        Ok(unsafe { take(out, len) })
    }

    /// Verifies the root's enveloped signature with the certificate `cert` (DER) and
    /// returns the bytes its reference digested: the root in exclusive canonical form,
    /// without the signature. `whole_document_uri` also accepts `URI=""` (metadata
    /// aggregates are signed so); messages need `#` + the root's ID.
    pub fn verify_root(&self, cert: &[u8], whole_document_uri: bool) -> Result<Vec<u8>, XmlError> {
        check_key(cert)?;
        let (mut out, mut len) = (std::ptr::null_mut(), 0);
        // SAFETY: the document and cert are live; out/len receive a shim buffer.
        let rc = unsafe {
            tx_verify_root(
                self.doc.as_ptr(),
                cert.as_ptr(),
                cert.len(),
                c_int::from(whole_document_uri),
                &mut out,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(error(rc));
        }
        // SAFETY: out/len came from tx_verify_root.
        Ok(unsafe { take(out, len) })
    }

    /// Encrypts the one element `{ns}name` for the holder of `cert` (DER, RSA of 2048 bits
    /// or more): it is replaced by an `xenc:EncryptedData` with `cipher` content and the
    /// key in an `xenc:EncryptedKey`, RSA-OAEP with MGF1-SHA1 (what libxmlsec1 1.2 offers).
    pub fn encrypt_element(
        &mut self,
        ns: &str,
        name: &str,
        cert: &[u8],
        cipher: Cipher,
    ) -> Result<(), XmlError> {
        let ns = std::ffi::CString::new(ns).map_err(|_| XmlError::NoElement(ns.into()))?;
        let name = std::ffi::CString::new(name).map_err(|_| XmlError::NoElement(name.into()))?;
        let cipher = match cipher {
            Cipher::Aes256Gcm => 0,
            Cipher::Aes128Gcm => 1,
            Cipher::Aes256Cbc => 2,
        };
        // SAFETY: the document is live and owned mutably here; the strings and cert live
        // for the call.
        let rc = unsafe {
            tx_encrypt_element(
                self.doc.as_ptr(),
                ns.as_ptr(),
                name.as_ptr(),
                cert.as_ptr(),
                cert.len(),
                cipher,
            )
        };
        if rc != 0 {
            return Err(error(rc));
        }
        Ok(())
    }

    /// [`Document::verify_root`] with each of `certs` in turn (a relying party's metadata
    /// may list several signing keys during a rollover); the first that verifies wins.
    pub fn verify_root_any<'c>(
        &self,
        certs: impl IntoIterator<Item = &'c [u8]>,
        whole_document_uri: bool,
    ) -> Result<Vec<u8>, XmlError> {
        let mut last = XmlError::BadKey("no signing certificate is known for the signer".into());
        for cert in certs {
            match self.verify_root(cert, whole_document_uri) {
                Ok(signed) => return Ok(signed),
                // The shape does not depend on the key: no point trying the others.
                Err(e @ (XmlError::SignatureShape(_) | XmlError::NotRoot)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Refuses a certificate whose key is too weak to trust a signature by (PROFILES.md: RSA
/// of at least 2048 bits; EC on P-256, P-384 or P-521) or of another kind.
fn check_key(cert: &[u8]) -> Result<(), XmlError> {
    use der::{Decode, Encode};
    let weak = |why: &str| XmlError::BadKey(why.to_owned());
    let cert = x509_cert::Certificate::from_der(cert)
        .map_err(|e| weak(&format!("not a certificate: {e}")))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    match spki.algorithm.oid {
        const_oid::db::rfc5912::RSA_ENCRYPTION => {
            use rsa::pkcs8::DecodePublicKey;
            let der = spki.to_der().map_err(|e| weak(&e.to_string()))?;
            let key =
                rsa::RsaPublicKey::from_public_key_der(&der).map_err(|e| weak(&e.to_string()))?;
            if rsa::traits::PublicKeyParts::size(&key) < 256 {
                return Err(weak("an RSA key shorter than 2048 bits"));
            }
            Ok(())
        }
        const_oid::db::rfc5912::ID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
            match curve {
                Some(
                    const_oid::db::rfc5912::SECP_256_R_1
                    | const_oid::db::rfc5912::SECP_384_R_1
                    | const_oid::db::rfc5912::SECP_521_R_1,
                ) => Ok(()),
                _ => Err(weak(
                    "an EC key on a curve other than P-256, P-384 or P-521",
                )),
            }
        }
        _ => Err(weak("a key that is neither RSA nor EC")),
    }
}

/// The content encryption of an encrypted element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes256Gcm,
    Aes128Gcm,
    /// `http://www.w3.org/2001/04/xmlenc#aes256-cbc`: the algorithm every peer must read
    /// (the Swedish deployment profile §8).
    Aes256Cbc,
}

impl Cipher {
    pub const AES256_GCM: &'static str = "http://www.w3.org/2009/xmlenc11#aes256-gcm";
    pub const AES128_GCM: &'static str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";

    /// The cipher for a peer that lists `methods` (its metadata's EncryptionMethods): GCM
    /// only when it declares it (AES-256 first), else AES-256-CBC, which all must read.
    pub fn for_methods(methods: &[String]) -> Self {
        if methods.iter().any(|m| m == Self::AES256_GCM) {
            Self::Aes256Gcm
        } else if methods.iter().any(|m| m == Self::AES128_GCM) {
            Self::Aes128Gcm
        } else {
            Self::Aes256Cbc
        }
    }
}

/// The signature algorithm of the key that signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlg {
    /// `http://www.w3.org/2001/04/xmldsig-more#rsa-sha256`: the signer returns a PKCS#1
    /// v1.5 signature over SHA-256 of the bytes.
    RsaSha256,
    /// `http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256` with P-256: the signer returns
    /// r || s, 32 bytes each (XML-DSig's form, not DER).
    EcdsaP256Sha256,
}

/// A throwaway software key of the algorithm's type (PKCS#8 DER), made once per process:
/// xmlsec needs a key to build a signature, whose value is then replaced by the real one.
fn dummy_key(alg: SignatureAlg) -> Result<&'static [u8], XmlError> {
    static RSA: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    static EC: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    use pkcs8::EncodePrivateKey;
    let made = match alg {
        // Its signature is thrown away (only the digests and the canonical SignedInfo are
        // kept), so it need not be strong, only quick: 1024 bits signs several times
        // faster than the token's 2048, twice per Response.
        SignatureAlg::RsaSha256 => RSA.get_or_init(|| {
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024)
                .map_err(|e| e.to_string())
                .and_then(|k| k.to_pkcs8_der().map_err(|e| e.to_string()))
                .map(|d| d.as_bytes().to_vec())
        }),
        SignatureAlg::EcdsaP256Sha256 => EC.get_or_init(|| {
            p256::SecretKey::random(&mut rand::rngs::OsRng)
                .to_pkcs8_der()
                .map(|d| d.as_bytes().to_vec())
                .map_err(|e| e.to_string())
        }),
    };
    made.as_deref().map_err(|e| XmlError::Internal(e.clone()))
}

/// Signs the root of `xml` (a document we wrote; its root has an `ID`): an enveloped
/// signature after the root's `saml:Issuer` (else first), exclusive c14n, SHA-256, the
/// signing certificate `cert` (DER) in its KeyInfo. `sign` is handed the canonical
/// SignedInfo and returns the signature value (see [`SignatureAlg`]); the result is
/// verified with `cert` before it is returned, so a token that signs with another key, or
/// not at all, yields an error, never a document.
pub fn sign_root(
    xml: &[u8],
    alg: SignatureAlg,
    cert: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, XmlError> {
    let doc = Document::parse(xml, usize::MAX >> 1)?;
    let dummy = dummy_key(alg)?;
    let (mut out, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: the document and dummy key are live; out/len receive a shim buffer.
    let rc = unsafe {
        tx_presign(
            doc.doc.as_ptr(),
            c_int::from(alg == SignatureAlg::EcdsaP256Sha256),
            dummy.as_ptr(),
            dummy.len(),
            &mut out,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(error(rc));
    }
    // SAFETY: out/len came from tx_presign.
    let signed_info = unsafe { take(out, len) };
    let value = sign(&signed_info).map_err(XmlError::Signer)?;
    // SAFETY: the document, value and cert are live for the call.
    let rc = unsafe {
        tx_set_signature(
            doc.doc.as_ptr(),
            value.as_ptr(),
            value.len(),
            cert.as_ptr(),
            cert.len(),
        )
    };
    if rc != 0 {
        return Err(error(rc));
    }
    let bytes = doc.to_bytes()?;
    // What we hand out verifies with the certificate we name, read back as a peer would.
    Document::parse(&bytes, usize::MAX >> 1)?.verify_root(cert, false)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_counted_per_tag_outside_quotes_comments_and_cdata() {
        let tag = |n: usize| {
            let attrs: String = (0..n).map(|i| format!(" a{i}=\"x=y\"")).collect();
            format!("<r{attrs}/>")
        };
        assert!(!too_many_attributes(tag(MAX_ATTRIBUTES).as_bytes()));
        assert!(too_many_attributes(tag(MAX_ATTRIBUTES + 1).as_bytes()));
        let spread = format!("<r>{}</r>", tag(40).repeat(10));
        assert!(
            !too_many_attributes(spread.as_bytes()),
            "counted per element"
        );
        let text = format!("<r>{}</r>", "=".repeat(1000));
        assert!(!too_many_attributes(text.as_bytes()), "text is not counted");
        let hidden = format!(
            "<r><!-- {} --><![CDATA[<x {}>]]><?pi {}?></r>",
            "a=1 ".repeat(100),
            "a=1 ".repeat(100),
            "a=1 ".repeat(100)
        );
        assert!(!too_many_attributes(hidden.as_bytes()));
        let single = format!(
            "<r {}/>",
            (0..70)
                .map(|i| format!("a{i}='1'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(too_many_attributes(single.as_bytes()));
        assert!(matches!(
            Document::parse(single.as_bytes(), 1 << 20),
            Err(XmlError::TooManyAttributes)
        ));
        // Unterminated input does not loop or panic.
        for junk in [&b"<"[..], b"<!--", b"<r a='", b"<![CDATA[", b"<?x"] {
            let _ = too_many_attributes(junk);
        }
    }
}
