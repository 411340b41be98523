//! The RA's unit-test bench: a [`MemorySigner`] CA, a fresh SQLite database, a clock the
//! test moves, and keys with real proofs of possession (PKCS#10 requests signed by P-256
//! keys), so every test runs in milliseconds without a token.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use der::{Decode, Encode};
use p256::ecdsa::signature::Signer as _;
use tessera_issuer_ca::signer::MemorySigner;
use tessera_issuer_ca::IssuingCa;
use tessera_issuer_store::Store;
use tessera_issuer_types::{Clock, ProfileName};

use crate::{PopPolicy, Ra};

/// A clock the test sets and moves.
#[derive(Debug)]
pub(crate) struct TestClock(AtomicU64);

impl TestClock {
    pub(crate) fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Duration {
        Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

pub(crate) struct Fixture {
    pub(crate) ra: Ra,
    pub(crate) store: Store,
    pub(crate) changes: Arc<AtomicUsize>,
    pub(crate) clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
}

pub(crate) fn fixture(bare_key_profiles: Vec<ProfileName>) -> Fixture {
    fixture_trusting(bare_key_profiles, Vec::new())
}

/// A fixture whose RA trusts `attestation_roots` (card manufacturers' CAs).
pub(crate) fn fixture_trusting(
    bare_key_profiles: Vec<ProfileName>,
    attestation_roots: Vec<x509_cert::Certificate>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tessera_issuer_store::Location::Sqlite(
        &dir.path().join("t.db"),
    ))
    .unwrap();
    let signer = MemorySigner::new();
    let clock = Arc::new(TestClock(AtomicU64::new(
        tessera_issuer_types::SystemClock.now().as_secs(),
    )));
    let (issuing, ocsp) =
        tessera_issuer_ca::authority::memory_certificates(&signer, clock.now()).unwrap();
    let ca = IssuingCa::new(
        Arc::new(signer),
        &issuing,
        &ocsp,
        tessera_issuer_ca::Urls {
            crl: "http://ca.example/crl".into(),
            ocsp: "http://ca.example/ocsp".into(),
            ca_issuers: "http://ca.example/ca.crt".into(),
            policy: const_oid::ObjectIdentifier::new_unwrap("1.2.752.999.1.3"),
        },
        vec!["example.org".into()],
    )
    .unwrap();
    let changes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&changes);
    let ra = Ra::new(
        Arc::new(ca),
        store.clone(),
        Arc::clone(&clock) as Arc<dyn Clock>,
        PopPolicy {
            attestation_roots,
            bare_key_profiles,
            tpm_roots: Vec::new(),
        },
        Arc::new(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        }),
    );
    Fixture {
        ra,
        store,
        changes,
        clock,
        _dir: dir,
    }
}

/// A PKCS#10 request (PEM) for a fresh P-256 key, signed by it.
pub(crate) fn csr() -> String {
    csr_for(&p256::ecdsa::SigningKey::random(
        &mut p256::elliptic_curve::rand_core::OsRng,
    ))
}

/// A PKCS#10 request (PEM) for `key`, signed by it.
pub(crate) fn csr_for(key: &p256::ecdsa::SigningKey) -> String {
    use x509_cert::request::{CertReq, CertReqInfo, Version};
    let spki_der = pkcs8::EncodePublicKey::to_public_key_der(key.verifying_key()).unwrap();
    let info = CertReqInfo {
        version: Version::V1,
        subject: "CN=card".parse().unwrap(),
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).unwrap(),
        attributes: Default::default(),
    };
    let signature: p256::ecdsa::DerSignature = key.sign(&info.to_der().unwrap());
    let req = CertReq {
        info,
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
            parameters: None,
        },
        signature: der::asn1::BitString::from_bytes(signature.as_bytes()).unwrap(),
    };
    der::pem::encode_string(
        "CERTIFICATE REQUEST",
        der::pem::LineEnding::LF,
        &req.to_der().unwrap(),
    )
    .unwrap()
}
