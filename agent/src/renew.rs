//! A virtual card renews its certificates before they expire, with only its holder's PIN
//! (the issuer's side is `tessera-issuer-ra`'s `registration/renewal.rs`):
//!
//! 1. new keys for the card's certified slots are made in the TPM beside the old ones
//!    (pending: the card keeps working with the old keys until the end) and written with
//!    the card file;
//! 2. the applet checks the holder's PIN, as for any use of the card; the new keys are
//!    proven in the TPM as at enrolment, and the card's authentication key (9A) signs the
//!    request;
//! 3. the issuer's certificates go into the card's objects and the new keys replace the
//!    old ones, in one write of the card file;
//! 4. the new authentication key signs the confirmation, and the issuer revokes the old
//!    certificates as superseded.
//!
//! Cut short anywhere, running it again finishes it: before 3 the same pending keys are
//! proven again (the issuer answers the certificates it made for them); after 3 only the
//! confirmation is sent.

use anyhow::{anyhow, bail, Context, Result};
use base64ct::Encoding;
use sha2::Digest;
use tessera_issuer_types::api::{
    renewal_confirmation_message, renewal_message, Carrier, RenewalConfirmation, RenewalRequest,
    Renewed, TpmChallenge, TpmChallengeRequest,
};
use tessera_issuer_types::ProfileName;
use tessera_piv::card::{Applet, CardState, Interface, KeyStore, Persist};
use tessera_piv::host::{pad_pin, PivClient};
use tessera_piv::piv::{object, Algorithm, KeyRef};

use crate::enrol::{self, Issuer, KeyToProve};
use crate::vsc::{DataDir, TpmKeyStore};
use crate::worker::TpmClient;

/// What a renewal did.
#[derive(Debug)]
pub struct Renewal {
    pub carrier: Carrier,
    /// The new certificates' serials (empty when only a confirmation was left to send).
    pub serials: Vec<String>,
}

/// The slot the certificate `der` belongs to, among `slots` (slot and its key's
/// SubjectPublicKeyInfo, DER), with the certificate object's tag.
pub fn slot_of(der: &[u8], slots: &[(KeyRef, Vec<u8>)]) -> Result<(KeyRef, u32)> {
    let cert = <x509_cert::Certificate as der::Decode>::from_der(der)?;
    let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)?;
    let slot = slots
        .iter()
        .find(|(_, k)| *k == spki)
        .map(|(s, _)| *s)
        .context("a certificate for none of the card's new keys")?;
    let tag = slot
        .certificate_object()
        .context("a slot without a certificate object")?;
    Ok((slot, tag))
}

/// Signs `message` with the card's authentication key after the holder's PIN, through the
/// applet as any program would: the PIN's tries are the card's.
pub fn card_signature(
    store: TpmKeyStore,
    state: CardState,
    pin: &[u8],
    message: &[u8],
) -> Result<(TpmKeyStore, CardState, &'static str, Vec<u8>)> {
    let slot = KeyRef(ProfileName::Authentication.piv_slot());
    let alg = store
        .info(slot)
        .map(|i| i.alg)
        .context("the card has no authentication key")?;
    let mut client = PivClient::new(Applet::new(state, store, Interface::Contact));
    let signed = (|| -> Result<(&'static str, Vec<u8>)> {
        client
            .verify_pin(&pad_pin(pin).map_err(|e| anyhow!("{e}"))?)
            .map_err(|e| anyhow!("the card refused the PIN: {e}"))?;
        let (name, input) = match alg {
            Algorithm::EccP256 => ("ecdsa-with-SHA256", sha2::Sha256::digest(message).to_vec()),
            Algorithm::EccP384 => ("ecdsa-with-SHA384", sha2::Sha384::digest(message).to_vec()),
            Algorithm::Rsa2048 => ("sha256WithRSAEncryption", pkcs1_sha256(message, 256)),
            other => bail!("the authentication key's algorithm {other:?} cannot sign a renewal"),
        };
        let signature = client
            .sign(slot, alg, &input)
            .map_err(|e| anyhow!("the card's authentication key did not sign: {e}"))?;
        Ok((name, signature))
    })();
    let (state, store) = client.into_transport().into_parts();
    let (name, signature) = signed?;
    Ok((store, state, name, signature))
}

/// The holder's PIN, checked by the applet as any program's VERIFY is.
fn card_check_pin(
    store: TpmKeyStore,
    state: CardState,
    pin: &[u8],
) -> Result<(TpmKeyStore, CardState)> {
    let mut client = PivClient::new(Applet::new(state, store, Interface::Contact));
    let checked = pad_pin(pin).map_err(|e| anyhow!("{e}")).and_then(|p| {
        client
            .verify_pin(&p)
            .map_err(|e| anyhow!("the card refused the PIN: {e}"))
    });
    let (state, store) = client.into_transport().into_parts();
    checked?;
    Ok((store, state))
}

/// EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a `size`-byte modulus (RFC 8017
/// §9.2): the block the card's raw RSA operation signs. Written here because the PIV card
/// takes the padded block and no crate exposes the encoding alone.
fn pkcs1_sha256(message: &[u8], size: usize) -> Vec<u8> {
    const PREFIX: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let t: Vec<u8> = PREFIX
        .iter()
        .copied()
        .chain(sha2::Sha256::digest(message))
        .collect();
    let mut block = vec![0x00, 0x01];
    block.resize(size - t.len() - 1, 0xFF);
    block.push(0x00);
    block.extend(t);
    block
}

/// The retired key-management slots (SP 800-73-4 Part 1 §3.3.2): where a renewed card keeps
/// its earlier decryption keys, so that what was encrypted to them stays readable.
const RETIRED: std::ops::RangeInclusive<u8> = 0x82..=0x95;

/// The first retired slot with neither key nor certificate.
fn free_retired_slot(store: &TpmKeyStore, state: &CardState) -> Option<KeyRef> {
    RETIRED.map(KeyRef).find(|s| {
        store.info(*s).is_none()
            && s.certificate_object()
                .is_none_or(|tag| state.object(tag).is_none())
    })
}

/// The key history object (SP 800-73-4 Part 1 §3.3.2): how many retired keys have their
/// certificate on the card.
fn key_history(store: &TpmKeyStore, state: &CardState) -> Vec<u8> {
    let on_card = RETIRED
        .map(KeyRef)
        .filter(|s| {
            store.info(*s).is_some()
                && s.certificate_object()
                    .is_some_and(|tag| state.object(tag).is_some())
        })
        .count();
    vec![
        0xC1,
        0x01,
        u8::try_from(on_card).unwrap_or(20),
        0xC2,
        0x01,
        0x00,
        0xFE,
        0x00,
    ]
}

/// Renews card `name`'s certificates (see the module comment), `pin` being its holder's.
/// `new_keys` drops the new keys an earlier attempt left (when the issuer says it cannot
/// use them any more), or a confirmation the issuer keeps refusing, and renews anew.
pub fn renew(
    data: &DataDir,
    tpm: &TpmClient,
    issuer: &Issuer,
    name: &str,
    pin: &[u8],
    new_keys: bool,
) -> Result<Renewal> {
    let card = data.card(name)?;
    let (mut store, state, warnings) = TpmKeyStore::open(tpm, data.state_file(name), card)?;
    for w in warnings {
        eprintln!("tessera-agent: {w}");
    }
    let carrier = store.meta().carrier.clone().with_context(|| {
        format!("card {name} was not enrolled with the issuer by this agent: an officer enrols it")
    })?;
    if !store.meta().unconfirmed.is_empty() && new_keys {
        // The card carries the new certificates already; the issuer would not take their
        // confirmation (say a renewal ran twice). Renewing again supersedes the rest.
        eprintln!(
            "tessera-agent: card {name}: not confirming {} again; renewing anew",
            store.meta().unconfirmed.join(", ")
        );
        store.meta_mut().unconfirmed.clear();
        store
            .persist(&state, Persist::Change)
            .context("writing the card file")?;
    }
    if !store.meta().unconfirmed.is_empty() {
        let carrier = confirm(store, state, issuer, &carrier, pin)?;
        return Ok(Renewal {
            carrier,
            serials: Vec::new(),
        });
    }
    // The slots the issuer certified: a key and a certificate object.
    let mut profiles = Vec::new();
    for profile in ProfileName::ALL {
        let slot = KeyRef(profile.piv_slot());
        let certified = slot
            .certificate_object()
            .is_some_and(|tag| state.object(tag).is_some());
        if let (Some(info), true) = (store.info(slot), certified) {
            profiles.push((profile, slot, info.alg, info.pin_policy));
        }
    }
    if !profiles.iter().any(|p| p.0 == ProfileName::Authentication) {
        bail!("card {name} has no certified authentication key to renew with");
    }
    let encryption = KeyRef(ProfileName::Encryption.piv_slot());
    if profiles.iter().any(|p| p.1 == encryption) && free_retired_slot(&store, &state).is_none() {
        bail!(
            "card {name} keeps 20 earlier decryption keys already (retired slots 82-95): an officer issues it anew"
        );
    }
    // The PIN first: a wrong one ends here, counted by the card, before anything is made.
    let (mut store, mut state) = card_check_pin(store, state, pin)?;
    if new_keys {
        store.clear_pending();
    }
    // New keys, unless an attempt cut short left them for exactly these slots.
    let have: Vec<KeyRef> = store.pending().map(|(s, _, _)| s).collect();
    let fresh = have != profiles.iter().map(|p| p.1).collect::<Vec<_>>();
    if fresh {
        store.clear_pending();
        for (profile, slot, alg, policy) in &profiles {
            store
                .generate_pending(*slot, *alg, *policy)
                .with_context(|| format!("generating the new {profile} key in the TPM"))?;
        }
        store
            .persist(&state, Persist::Change)
            .context("writing the card file")?;
    }
    let pin_index = store.meta().pin_index;
    let pin_index = tpm
        .call(move |t| t.index_public_bytes(pin_index))?
        .context("reading the card's PIN index")?;
    let mut keys: Vec<KeyToProve> = Vec::new();
    let mut new_spki = Vec::new();
    for (slot, info, blob) in store.pending() {
        let profile = profiles
            .iter()
            .find(|p| p.1 == slot)
            .map(|p| p.0)
            .context("a new key for a slot the card has no certificate for")?;
        let index =
            (info.pin_policy != tessera_piv::piv::PinPolicy::Never).then(|| pin_index.clone());
        let spki = info
            .public
            .to_spki_der()
            .map_err(|e| anyhow!("a new key's public key: {e:?}"))?;
        new_spki.push((slot, spki));
        keys.push((profile, blob, index));
    }
    let attested = (|| -> Result<RenewalRequest> {
        let (ek_certificate, ak) = enrol::start_attestation(tpm)?;
        let challenge: TpmChallenge = issuer.post(
            &format!("/carriers/{carrier}/renewal-challenge"),
            &TpmChallengeRequest {
                ek_certificate,
                ak_public: hex::encode(ak),
            },
        )?;
        let (secret, evidence) = enrol::answer_challenge(tpm, &challenge, &keys)?;
        let keys = enrol::keys_request(&challenge.challenge, &secret, &evidence).keys;
        Ok(RenewalRequest {
            keys,
            algorithm: String::new(),
            signature: String::new(),
        })
    })();
    if attested.is_err() && fresh {
        // Refused before anything was certified (not due, say): the card as it was.
        store.clear_pending();
        let _ = store.persist(&state, Persist::Change);
    }
    enrol::finish_attestation(tpm);
    let mut request = attested?;
    let (store, signed_state, algorithm, signature) =
        card_signature(store, state, pin, &renewal_message(&carrier, &request.keys))?;
    let mut store = store;
    state = signed_state;
    request.algorithm = algorithm.to_owned();
    request.signature = base64ct::Base64::encode_string(&signature);
    let renewed: Renewed = issuer.post(&format!("/carriers/{carrier}/renewal"), &request)?;
    if renewed.certificates.len() != new_spki.len() {
        bail!(
            "the issuer answered {} certificates for {} new keys",
            renewed.certificates.len(),
            new_spki.len()
        );
    }
    // The old decryption key and its certificate move to a retired slot first: what was
    // encrypted to them stays readable.
    if new_spki.iter().any(|(s, _)| *s == encryption) {
        let (Some(retired), Some(from)) = (
            free_retired_slot(&store, &state),
            encryption.certificate_object(),
        ) else {
            bail!("no retired slot is free for the old decryption key");
        };
        let to = retired
            .certificate_object()
            .context("a retired slot without a certificate object")?;
        store.retire(encryption, retired);
        if let Some(old) = state.object(from).map(<[u8]>::to_vec) {
            state.set_object(to, old);
        }
        state.set_object(object::KEY_HISTORY, key_history(&store, &state));
    }
    // The certificates into the objects and the new keys into the slots, in one write.
    for c in &renewed.certificates {
        let (_, der) = der::pem::decode_vec(c.pem.as_bytes())
            .map_err(|e| anyhow!("certificate {}: {e}", c.serial))?;
        let (_, tag) =
            slot_of(&der, &new_spki).with_context(|| format!("certificate {}", c.serial))?;
        state.set_object(tag, tessera_piv::card::cert::object_content(&der));
    }
    store.install_pending();
    let serials: Vec<String> = renewed
        .certificates
        .iter()
        .map(|c| c.serial.clone())
        .collect();
    store.meta_mut().unconfirmed.clone_from(&serials);
    store
        .persist(&state, Persist::Change)
        .context("writing the card file (run the renewal again to finish it)")?;
    let carrier = confirm(store, state, issuer, &carrier, pin)?;
    Ok(Renewal { carrier, serials })
}

/// Step 4: the new authentication key confirms; the card file forgets the renewal.
fn confirm(
    store: TpmKeyStore,
    state: CardState,
    issuer: &Issuer,
    carrier: &str,
    pin: &[u8],
) -> Result<Carrier> {
    let serials = store.meta().unconfirmed.clone();
    let (mut store, state, algorithm, signature) = card_signature(
        store,
        state,
        pin,
        &renewal_confirmation_message(carrier, &serials),
    )?;
    let answer: Carrier = issuer.post(
        &format!("/carriers/{carrier}/renewal-confirmation"),
        &RenewalConfirmation {
            serials,
            algorithm: algorithm.to_owned(),
            signature: base64ct::Base64::encode_string(&signature),
        },
    )?;
    store.meta_mut().unconfirmed.clear();
    store
        .persist(&state, Persist::Change)
        .context("writing the card file")?;
    Ok(answer)
}
