//! Test keys for the IdP's tests (the `testing` feature): a software key and its
//! self-signed certificate made by openssl, and the XML-DSig signature values such a key
//! makes. Never for production: the IdP signs with keys in a token.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test tooling: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Command;

use crate::{sign_root, SignatureAlg};

/// A software key and its self-signed certificate, made by openssl (test keys only: the IdP
/// signs with keys in a token).
#[derive(Debug)]
pub struct Key {
    pub dir: tempfile::TempDir,
    pub alg: SignatureAlg,
    pub pkcs8: Vec<u8>,
    /// The certificate, DER.
    pub cert: Vec<u8>,
}

impl Key {
    pub fn new(alg: SignatureAlg) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_spec = match alg {
            SignatureAlg::RsaSha256 => vec!["-newkey", "rsa:2048"],
            SignatureAlg::EcdsaP256Sha256 => {
                vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
            }
        };
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        run(
            "openssl",
            &[
                &[
                    "req",
                    "-x509",
                    "-nodes",
                    "-subj",
                    "/CN=test signer",
                    "-days",
                    "2",
                ][..],
                &key_spec,
                &["-keyout", &p("key.pem"), "-out", &p("cert.pem")],
            ]
            .concat(),
        );
        run(
            "openssl",
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &p("key.pem"),
                "-outform",
                "DER",
                "-out",
                &p("key.der"),
            ],
        );
        run(
            "openssl",
            &[
                "x509",
                "-in",
                &p("cert.pem"),
                "-outform",
                "DER",
                "-out",
                &p("cert.der"),
            ],
        );
        Self {
            alg,
            pkcs8: std::fs::read(dir.path().join("key.der")).unwrap(),
            cert: std::fs::read(dir.path().join("cert.der")).unwrap(),
            dir,
        }
    }

    pub fn cert_pem(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The signature value XML-DSig wants over `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        use pkcs8::DecodePrivateKey;
        match self.alg {
            SignatureAlg::RsaSha256 => {
                use rsa::signature::{SignatureEncoding, Signer};
                let key = rsa::RsaPrivateKey::from_pkcs8_der(&self.pkcs8).unwrap();
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
                Ok(signer.sign(bytes).to_vec())
            }
            SignatureAlg::EcdsaP256Sha256 => {
                use p256::ecdsa::signature::Signer;
                let key = p256::ecdsa::SigningKey::from_pkcs8_der(&self.pkcs8).unwrap();
                let sig: p256::ecdsa::Signature = key.sign(bytes);
                Ok(sig.to_bytes().to_vec())
            }
        }
    }

    pub fn sign_doc(&self, xml: &str) -> String {
        String::from_utf8(
            sign_root(xml.as_bytes(), self.alg, &self.cert, |b| self.sign(b)).unwrap(),
        )
        .unwrap()
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
