//! Enrolment of a TPM virtual card: proof that each key lives in the TPM whose endorsement
//! key a trusted manufacturer certified (`tessera_issuer_ca::tpm` has the protocol).
//!
//! 1. `tpm_challenge`: the agent shows the EK certificate and a fresh attestation key
//!    (AK); the issuer makes a credential for the AK's name encrypted to the EK, and a
//!    nonce, and seals what it needs to check the answer (AK, nonce, secret, deadline) with
//!    the token's escrow key into an opaque challenge — nothing is stored;
//! 2. `register_keys` with a `TpmKeyProof` per key: the sealed challenge opens only for
//!    this carrier, within 10 minutes; the secret the TPM recovered must be the issuer's
//!    (so the AK is in the EK's TPM); the AK's signature over `TPM2_Certify` must verify,
//!    over the issuer's nonce and the key's name; the key must be fixedTPM, fixedParent,
//!    generated in the TPM, unrestricted and signing, and — but for the
//!    card-authentication key — usable only through a policy (the agent's PIN).

use base64ct::Encoding;
use subtle::ConstantTimeEq;
use tessera_issuer_ca::tpm::{self as proof, attr, TpmPublic};
use tessera_issuer_types::api::{TpmChallenge, TpmChallengeRequest, TpmKeyProof};
use tessera_issuer_types::lifecycle::{ApprovalState, CarrierKind, CarrierState, OfficerRole};
use tessera_issuer_types::ProfileName;

use super::{get_carrier, invalid};
use crate::{now_secs, Actor, Ra, RaError};

/// How long a challenge can be answered.
const CHALLENGE_SECONDS: i64 = 600;

/// What the sealed challenge holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    ek_sha256: String,
    /// SHA-256 of the EK's SubjectPublicKeyInfo: the TPM, whatever certificate it has.
    ek_key_sha256: String,
    ak_public: String,
    nonce: String,
    secret: String,
    expires_at: i64,
}

/// What a challenge is for: an officer's enrolment or the holder's renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Enrolment,
    Renewal,
}

/// Binds a challenge to its purpose, the carrier and its assignment's approval: no
/// challenge made for one assignment answers for a later one, and a renewal's challenge
/// never answers an enrolment's (nor the other way round).
fn aad(purpose: Purpose, carrier_id: &str, approval_id: &str) -> Vec<u8> {
    let label = match purpose {
        Purpose::Enrolment => "tessera tpm-challenge v1",
        Purpose::Renewal => "tessera tpm-renewal-challenge v1",
    };
    format!("{label}\n{carrier_id}\n{approval_id}").into_bytes()
}

/// A key proven to live in a trusted TPM.
pub(super) struct ProvenKey {
    /// Its SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// What the proof rested on, for the audit trail.
    pub evidence: String,
    /// SHA-256 of the TPM's endorsement key (its SubjectPublicKeyInfo): the TPM.
    pub ek_key_sha256: String,
    /// The name of the PIN index the key's policy is bound to (none for a PIN-less key).
    pub pin_index_name: Option<Vec<u8>>,
}

fn bad(e: impl std::fmt::Display) -> RaError {
    RaError::BadProof(e.to_string())
}

fn unhex(field: &str, text: &str) -> Result<Vec<u8>, RaError> {
    hex::decode(text).map_err(|_| invalid(field, "not hex"))
}

impl Ra {
    /// Step 1 of a TPM virtual card's enrolment (see the module comment).
    pub fn tpm_challenge(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &TpmChallengeRequest,
    ) -> Result<TpmChallenge, RaError> {
        self.require(actor, "carrier.keys", &[OfficerRole::RegistrationOfficer])?;
        let carrier = self.store.read(|tx| get_carrier(tx, carrier_id))?;
        if carrier.kind != CarrierKind::TpmVirtualCard {
            return Err(invalid(
                "carrier",
                format!(
                    "a {} card proves its keys otherwise than by a TPM",
                    carrier.kind
                ),
            ));
        }
        let approved = match &carrier.approval_id {
            Some(a) => self
                .store
                .read(|tx| tx.approval(a))?
                .filter(|a| a.state == ApprovalState::Approved),
            None => None,
        };
        let Some(approval) = approved.filter(|_| carrier.state == CarrierState::Assigned) else {
            return Err(RaError::InvalidTransition {
                what: format!("carrier {carrier_id}"),
                current: if carrier.state == CarrierState::Assigned {
                    "assigned, its approval pending".to_owned()
                } else {
                    carrier.state.to_string()
                },
                verb: "personalise",
            });
        };
        self.make_challenge(Purpose::Enrolment, carrier_id, &approval.id, req)
    }

    /// The challenge itself (see the module comment), sealed for `purpose`.
    pub(super) fn make_challenge(
        &self,
        purpose: Purpose,
        carrier_id: &str,
        approval_id: &str,
        req: &TpmChallengeRequest,
    ) -> Result<TpmChallenge, RaError> {
        let (label, der) = der::pem::decode_vec(req.ek_certificate.as_bytes())
            .map_err(|_| invalid("ek_certificate", "not PEM"))?;
        if label != "CERTIFICATE" {
            return Err(invalid("ek_certificate", "not a PEM certificate"));
        }
        let cert = <x509_cert::Certificate as der::Decode>::from_der(&der)
            .map_err(|e| invalid("ek_certificate", e))?;
        let ek =
            proof::endorsement_key(&cert, &self.pop.tpm_roots, self.clock.now()).map_err(bad)?;
        let ak_bytes = unhex("ak_public", &req.ak_public)?;
        let ak = TpmPublic::parse(&ak_bytes).map_err(|e| invalid("ak_public", e))?;
        let wanted = attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::RESTRICTED
            | attr::SIGN;
        if !ak.has(wanted) || ak.has(attr::DECRYPT) {
            return Err(bad(
                "the attestation key is not a TPM-bound, TPM-made, restricted signing key",
            ));
        }
        // The credential is activated in the ADMIN role. With adminWithPolicy clear that
        // role needs the key's authValue, which a public area loaded on its own
        // (TPM2_LoadExternal of a software key's public part, fixedTPM claimed) does not
        // have; with it set, a policy anyone can satisfy would let a genuine TPM activate
        // the credential for a key it does not hold.
        if ak.has(attr::ADMIN_WITH_POLICY) {
            return Err(bad(
                "the attestation key's admin role is a policy (adminWithPolicy must be clear)",
            ));
        }
        let secret: [u8; 32] = rand::random();
        let nonce: [u8; 32] = rand::random();
        let (credential, encrypted_secret) =
            proof::make_credential(&ek, &ak.name(), &secret).map_err(bad)?;
        let sealed = Sealed {
            ek_sha256: crate::spki_sha256(&der),
            ek_key_sha256: crate::spki_sha256(
                &der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)
                    .map_err(|e| invalid("ek_certificate", e))?,
            ),
            ak_public: req.ak_public.to_ascii_lowercase(),
            nonce: hex::encode(nonce),
            secret: hex::encode(secret),
            expires_at: now_secs(self.clock.as_ref()) + CHALLENGE_SECONDS,
        };
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(&sealed).map_err(|e| RaError::BadRequest(e.to_string()))?,
        );
        let challenge = self
            .ca
            .seal_secret(&aad(purpose, carrier_id, approval_id), &json)?;
        Ok(TpmChallenge {
            challenge: base64ct::Base64::encode_string(&challenge),
            credential: hex::encode(credential),
            encrypted_secret: hex::encode(encrypted_secret),
            nonce: hex::encode(nonce),
        })
    }

    /// Step 2 for one key: the key once every check holds, with the evidence to keep.
    pub(super) fn tpm_key(
        &self,
        purpose: Purpose,
        carrier_id: &str,
        approval_id: &str,
        profile: ProfileName,
        p: &TpmKeyProof,
    ) -> Result<ProvenKey, RaError> {
        let sealed = base64ct::Base64::decode_vec(&p.challenge)
            .map_err(|_| invalid("tpm.challenge", "not base64"))?;
        let opened = self
            .ca
            .open_secret(&aad(purpose, carrier_id, approval_id), &sealed)
            .map_err(|_| bad("the TPM challenge is not one this issuer made for this carrier"))?;
        let state: Sealed = serde_json::from_slice(&opened)
            .map_err(|_| bad("the TPM challenge is not one this issuer made"))?;
        if now_secs(self.clock.as_ref()) > state.expires_at {
            return Err(bad("the TPM challenge has expired: ask for a new one"));
        }
        let expected = unhex("secret", &state.secret)?;
        let given = unhex("tpm.secret", &p.secret)?;
        if !bool::from(expected.ct_eq(&given)) {
            return Err(bad(
                "the credential was not activated by the TPM of the endorsement key (wrong secret)",
            ));
        }
        let ak = TpmPublic::parse(&unhex("ak_public", &state.ak_public)?).map_err(bad)?;
        let attest = unhex("tpm.attest", &p.attest)?;
        ak.verify(&attest, &unhex("tpm.signature", &p.signature)?)
            .map_err(|e| bad(format!("the TPM2_Certify signature: {e}")))?;
        let certified = proof::parse_certify(&attest).map_err(bad)?;
        if certified.extra_data != unhex("nonce", &state.nonce)? {
            return Err(bad("the TPM2_Certify is not over this challenge's nonce"));
        }
        let key = TpmPublic::parse(&unhex("tpm.public", &p.public)?)
            .map_err(|e| invalid("tpm.public", e))?;
        if certified.name != key.name() {
            return Err(bad("the TPM2_Certify certifies another key"));
        }
        let wanted =
            attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::SIGN;
        if !key.has(wanted) || key.has(attr::RESTRICTED) {
            return Err(bad(
                "the key is not one the TPM made and keeps (fixedTPM, fixedParent, sensitiveDataOrigin, unrestricted signing)",
            ));
        }
        // The PIN. A key the TPM uses by its (empty) authValue is used without the PIN;
        // only the card-authentication key may be (SP 800-73-4 §3.1.1). Any other key must
        // be usable only through PolicySecret on a PIN-fail index (the index's public area
        // given, its name checked against the key's policy): not through a policy its
        // holder can always satisfy.
        let pin_index_name = if key.has(attr::USER_WITH_AUTH) {
            if profile != ProfileName::CardAuthentication {
                return Err(bad(
                    "the key is used without the PIN (userWithAuth): not an LoA3 authenticator",
                ));
            }
            None
        } else {
            let index = p.pin_index.as_deref().ok_or_else(|| {
                invalid("tpm.pin_index", "required for a key used through a policy")
            })?;
            Some(proof::check_pin_index(&key, &unhex("tpm.pin_index", index)?).map_err(bad)?)
        };
        let evidence = format!(
            "tpm: ek certificate sha256 {}, ak {}, key {}, firmware {:016x}",
            state.ek_sha256,
            hex::encode(ak.name()),
            hex::encode(key.name()),
            certified.firmware_version
        );
        Ok(ProvenKey {
            spki: key.spki_der().map_err(bad)?,
            evidence,
            ek_key_sha256: state.ek_key_sha256,
            pin_index_name,
        })
    }
}
