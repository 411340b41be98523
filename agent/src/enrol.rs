//! Enrolment of a virtual card with the issuer: keys generated in the TPM, proven to be
//! there by TPM attestation (the EK certificate, credential activation for a fresh
//! attestation key, `TPM2_Certify` of each key over the issuer's nonce), certified by the
//! registration authority as for any card, the certificates written to the card.
//!
//! A registration officer runs it (with their API token) for a carrier the RA has assigned
//! to the card's holder and a second officer has approved, as they personalise a physical
//! card; the issuer's checks are in `tessera-issuer-ra` (`registration/tpm.rs`).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_issuer_types::api::{
    Carrier, CarrierKey, CertificateInfo, ErrorBody, KeysRequest, TpmChallenge,
    TpmChallengeRequest, TpmKeyProof,
};
use tessera_issuer_types::ProfileName;
use tessera_piv::card::{KeyStore, Persist};
use tessera_piv::piv::{Algorithm, KeyRef, PinPolicy};
use zeroize::Zeroizing;

use crate::tpm::KeyBlob;
use crate::vsc::{DataDir, TpmKeyStore};
use crate::worker::TpmClient;

/// The issuer's API, as one officer or (for a renewal) as the card itself.
#[derive(Debug)]
pub struct Issuer {
    base: String,
    token: Option<Zeroizing<String>>,
    agent: ureq::Agent,
}

impl Issuer {
    /// `url` is the issuer's base URL; `ca_file` the CA of its TLS certificate (the
    /// deployment's `tls-ca.pem`) when it is served over HTTPS.
    pub fn new(url: &str, token_file: &Path, ca_file: Option<&Path>) -> Result<Self> {
        let token = Zeroizing::new(
            std::fs::read_to_string(token_file)
                .with_context(|| format!("reading the token file {}", token_file.display()))?
                .trim()
                .to_owned(),
        );
        if token.is_empty() {
            bail!("the token file {} is empty", token_file.display());
        }
        let mut issuer = Self::anonymous(url, ca_file)?;
        issuer.token = Some(token);
        Ok(issuer)
    }

    /// The issuer without an officer token: the card's own calls, which it signs.
    pub fn anonymous(url: &str, ca_file: Option<&Path>) -> Result<Self> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let cert = ureq::tls::Certificate::from_pem(&pem)
                .with_context(|| format!("{}", ca.display()))?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        Ok(Self {
            base: format!("{}/api/v1", url.trim_end_matches('/')),
            token: None,
            agent: config.build().into(),
        })
    }

    fn answer<T: DeserializeOwned>(
        r: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T> {
        let mut r = r.map_err(|e| anyhow!("the issuer could not be reached: {e}"))?;
        let status = r.status();
        let text = r.body_mut().read_to_string()?;
        if status.is_success() {
            return serde_json::from_str(&text).with_context(|| {
                format!("the issuer's answer is not what the agent expects: {text}")
            });
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => bail!("the issuer refused: {} ({})", e.error.message, e.error.code),
            Err(_) => bail!("HTTP {status}: {}", text.trim()),
        }
    }

    fn authorised<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {}", t.as_str())),
            None => r,
        }
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        Self::answer(
            self.authorised(self.agent.post(format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::answer(
            self.authorised(self.agent.get(format!("{}{path}", self.base)))
                .call(),
        )
    }
}

/// The evidence for one key, before it is sent.
#[derive(Debug, Clone)]
pub struct KeyEvidence {
    pub profile: ProfileName,
    pub public: Vec<u8>,
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
    /// The `TPMS_NV_PUBLIC` of the PIN index a PIN-bound key's policy names.
    pub pin_index: Option<Vec<u8>>,
}

/// A key to prove: its profile, its blob, and (for a PIN-bound key) its PIN index's
/// public area.
pub type KeyToProve = (ProfileName, KeyBlob, Option<Vec<u8>>);

/// Step 1 of the protocol, on the TPM: the EK certificate (PEM) and a fresh AK's public
/// area. The attestation stays open on the TPM thread until [`finish_attestation`].
pub fn start_attestation(tpm: &TpmClient) -> Result<(String, Vec<u8>)> {
    let ek = tpm
        .call(|t| t.ek_certificate())?
        .context("reading the endorsement key certificate (is the TPM provisioned with one?)")?;
    let ek_pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &ek)
        .map_err(|e| anyhow!("{e}"))?;
    let ak = tpm
        .call(|t| t.start_attestation())?
        .context("creating the attestation key")?;
    Ok((ek_pem, ak))
}

/// Step 2, on the TPM: the credential activated, each key certified over the nonce.
pub fn answer_challenge(
    tpm: &TpmClient,
    challenge: &TpmChallenge,
    keys: &[KeyToProve],
) -> Result<(Vec<u8>, Vec<KeyEvidence>)> {
    let credential = hex::decode(&challenge.credential).context("the credential is not hex")?;
    let encrypted = hex::decode(&challenge.encrypted_secret).context("the secret is not hex")?;
    let nonce = hex::decode(&challenge.nonce).context("the nonce is not hex")?;
    let secret = tpm
        .call(move |t| t.activate(&credential, &encrypted))?
        .context("activating the issuer's credential in the TPM")?;
    let mut evidence = Vec::new();
    for (profile, blob, pin_index) in keys {
        let (b, n) = (blob.clone(), nonce.clone());
        let (attest, signature) = tpm
            .call(move |t| t.certify(&b, &n))?
            .context("certifying a key with the attestation key")?;
        evidence.push(KeyEvidence {
            profile: *profile,
            public: blob.public.clone(),
            attest,
            signature,
            pin_index: pin_index.clone(),
        });
    }
    Ok((secret, evidence))
}

/// Flushes the attestation's keys from the TPM.
pub fn finish_attestation(tpm: &TpmClient) {
    let _ = tpm.call(|t| t.end_attestation());
}

/// The keys request for the evidence.
pub fn keys_request(challenge: &str, secret: &[u8], evidence: &[KeyEvidence]) -> KeysRequest {
    KeysRequest {
        keys: evidence
            .iter()
            .map(|e| CarrierKey {
                profile: e.profile,
                csr: None,
                attestation: None,
                tpm: Some(TpmKeyProof {
                    challenge: challenge.to_owned(),
                    secret: hex::encode(secret),
                    public: hex::encode(&e.public),
                    attest: hex::encode(&e.attest),
                    signature: hex::encode(&e.signature),
                    pin_index: e.pin_index.as_ref().map(hex::encode),
                }),
            })
            .collect(),
        puk: None,
    }
}

/// The whole enrolment of card `name` for `carrier`: new P-256 keys for `profiles` in the
/// TPM (each slot's PIV default PIN policy), proven and certified, the certificates written
/// to the card. Returns the carrier as the issuer left it (PERSONALISED, certificates on
/// hold until the officer activates it at hand-over).
pub fn enrol(
    data: &DataDir,
    tpm: &TpmClient,
    issuer: &Issuer,
    name: &str,
    carrier: &str,
    profiles: &[ProfileName],
) -> Result<Carrier> {
    let card = data.card(name)?;
    let (mut store, mut state, warnings) = TpmKeyStore::open(tpm, data.state_file(name), card)?;
    for w in warnings {
        eprintln!("tessera-agent: {w}");
    }
    let pin_index = store.meta().pin_index;
    let pin_index = tpm
        .call(move |t| t.index_public_bytes(pin_index))?
        .context("reading the card's PIN index")?;
    let mut keys = Vec::new();
    for profile in profiles {
        let slot = KeyRef(profile.piv_slot());
        let policy = slot.default_pin_policy();
        store
            .generate(slot, Algorithm::EccP256, policy, 1)
            .with_context(|| format!("generating the {profile} key in the TPM"))?;
        let blob = store.blob(slot).context("the key just generated")?;
        let index = (policy != PinPolicy::Never).then(|| pin_index.clone());
        keys.push((*profile, blob, index));
    }
    // The new keys are the card's from now on, certified or not (enrolling again makes
    // new ones).
    store
        .persist(&state, Persist::Change)
        .context("writing the card file")?;
    let result = (|| -> Result<Carrier> {
        let (ek_certificate, ak) = start_attestation(tpm)?;
        let challenge: TpmChallenge = issuer.post(
            &format!("/carriers/{carrier}/tpm-challenge"),
            &TpmChallengeRequest {
                ek_certificate,
                ak_public: hex::encode(ak),
            },
        )?;
        let (secret, evidence) = answer_challenge(tpm, &challenge, &keys)?;
        issuer.post(
            &format!("/carriers/{carrier}/keys"),
            &keys_request(&challenge.challenge, &secret, &evidence),
        )
    })();
    finish_attestation(tpm);
    let carrier = result?;
    // The certificates into the card's certificate objects, matched to slots by key.
    let new_keys: Vec<(KeyRef, Vec<u8>)> = profiles
        .iter()
        .map(|p| KeyRef(p.piv_slot()))
        .filter_map(|s| Some((s, store.info(s)?.public.to_spki_der().ok()?)))
        .collect();
    for serial in &carrier.certificates {
        let info: CertificateInfo = issuer.get(&format!("/certificates/{serial}"))?;
        let (_, der) = der::pem::decode_vec(info.pem.as_bytes())
            .map_err(|e| anyhow!("certificate {serial}: {e}"))?;
        let (_, tag) = crate::renew::slot_of(&der, &new_keys)
            .with_context(|| format!("certificate {serial}"))?;
        state.set_object(tag, tessera_piv::card::cert::object_content(&der));
    }
    let meta = store.meta_mut();
    meta.carrier = Some(carrier.id.clone());
    meta.unconfirmed.clear();
    store.clear_pending();
    store
        .persist(&state, Persist::Change)
        .context("writing the card file")?;
    Ok(carrier)
}
