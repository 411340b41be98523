//! A PKCS#11 test suite for PIV tokens, written against the `cryptoki` crate so that it runs
//! unchanged against any module: Tessera's `libtessera_pkcs11.so` and OpenSC's
//! `opensc-pkcs11.so` on the same card. It expects a card with a P-256 key and certificate
//! in 9A and RSA-2048 keys and certificates in 9C and 9D (as the tests personalise it).

use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::Decode;
use ecdsa::signature::hazmat::PrehashVerifier;
use rsa::signature::Verifier;
use sha2::Digest;

/// One check's result.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    /// Whether the check is for a feature PKCS#11 leaves optional (see [`OPTIONAL`]).
    pub optional: bool,
    pub result: Result<(), String>,
}

/// Checks of features PKCS#11 v3.0 makes optional, reported apart from the required ones:
/// a module that lacks them still passes the suite.
/// - `wrong-pin-counts`: §5.5 says a token *may* set `CKF_USER_PIN_COUNT_LOW` and friends.
/// - `so-init-pin`: a PIV card has no security officer in PKCS#11's sense; offering the PUK
///   as the SO for `C_InitPIN` is a module's choice.
pub const OPTIONAL: &[&str] = &["wrong-pin-counts", "so-init-pin"];

/// What the suite needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub module: String,
    pub pin: String,
    pub puk: String,
}

type Check = fn(&Ctx) -> Result<(), String>;

/// The checks, in order.
pub const CHECKS: &[(&str, Check)] = &[
    ("info", info),
    ("token-present", token_present),
    ("mechanisms", mechanisms),
    ("public-objects-before-login", public_objects_before_login),
    ("ids-link-objects", ids_link_objects),
    ("wrong-pin-counts", wrong_pin_counts),
    ("private-key-attributes", private_key_attributes),
    ("ecdsa-raw", ecdsa_raw),
    ("ecdsa-sha256", ecdsa_sha256),
    ("ecdsa-multipart", ecdsa_multipart),
    ("rsa-pkcs-sha256", rsa_pkcs_sha256),
    ("rsa-pss-sha256", rsa_pss_sha256),
    (
        "always-authenticate-needs-context-login",
        always_authenticate,
    ),
    ("rsa-decrypt-9d", rsa_decrypt),
    ("set-pin-and-back", set_pin_and_back),
    ("so-init-pin", so_init_pin),
    ("random", random),
    ("eight-threads-sign", eight_threads),
    ("logout-hides-private-objects", logout_hides_private),
];

/// The loaded module and the slot of the card.
pub struct Ctx {
    pub p11: Arc<Pkcs11>,
    pub slot: Slot,
    pub pin: String,
    pub puk: String,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Loads the module and runs every check.
pub fn run(config: &Config) -> Result<Vec<Outcome>, String> {
    let p11 = Pkcs11::new(&config.module).map_err(|e| format!("loading {}: {e}", config.module))?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    let slot = *p11
        .get_slots_with_token()
        .map_err(|e| format!("C_GetSlotList: {e}"))?
        .first()
        .ok_or("no slot with a token")?;
    let ctx = Ctx {
        p11: Arc::new(p11),
        slot,
        pin: config.pin.clone(),
        puk: config.puk.clone(),
    };
    Ok(CHECKS
        .iter()
        .map(|(name, check)| Outcome {
            name,
            optional: OPTIONAL.contains(name),
            result: check(&ctx),
        })
        .collect())
}

pub(crate) fn e(what: &str) -> impl Fn(CkError) -> String + '_ {
    move |err| format!("{what}: {err}")
}

pub(crate) fn rv(err: &CkError) -> Option<RvError> {
    match err {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

impl Ctx {
    pub(crate) fn session(&self) -> Result<Session, String> {
        self.p11
            .open_ro_session(self.slot)
            .map_err(e("C_OpenSession"))
    }

    pub(crate) fn login(&self, s: &Session) -> Result<(), String> {
        match s.login(UserType::User, Some(&AuthPin::from(self.pin.clone()))) {
            Ok(()) => Ok(()),
            Err(err) if rv(&err) == Some(RvError::UserAlreadyLoggedIn) => Ok(()),
            Err(err) => Err(format!("C_Login: {err}")),
        }
    }

    pub(crate) fn find(
        &self,
        s: &Session,
        class: ObjectClass,
        id: u8,
    ) -> Result<Vec<ObjectHandle>, String> {
        s.find_objects(&[Attribute::Class(class), Attribute::Id(vec![id])])
            .map_err(e("C_FindObjects"))
    }

    pub(crate) fn one(
        &self,
        s: &Session,
        class: ObjectClass,
        id: u8,
    ) -> Result<ObjectHandle, String> {
        match self.find(s, class, id)?.as_slice() {
            [h] => Ok(*h),
            other => Err(format!(
                "{} objects of class {class} with ID {id:02x}",
                other.len()
            )),
        }
    }

    pub(crate) fn cert_spki(&self, s: &Session, id: u8) -> Result<Vec<u8>, String> {
        let cert = self.one(s, ObjectClass::CERTIFICATE, id)?;
        let attrs = s
            .get_attributes(cert, &[AttributeType::Value])
            .map_err(e("C_GetAttributeValue"))?;
        let Some(Attribute::Value(der)) = attrs.first() else {
            return Err("certificate without CKA_VALUE".into());
        };
        let cert =
            x509_cert::Certificate::from_der(der).map_err(|e| format!("certificate: {e}"))?;
        der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)
            .map_err(|e| e.to_string())
    }
}

fn info(ctx: &Ctx) -> Result<(), String> {
    let info = ctx.p11.get_library_info().map_err(e("C_GetInfo"))?;
    if info.cryptoki_version().major() < 2 {
        return Err("cryptoki version below 2".into());
    }
    Ok(())
}

fn token_present(ctx: &Ctx) -> Result<(), String> {
    let t = ctx
        .p11
        .get_token_info(ctx.slot)
        .map_err(e("C_GetTokenInfo"))?;
    if !t.login_required() || !t.user_pin_initialized() {
        return Err("token does not require login with an initialised PIN".into());
    }
    if t.serial_number().trim().is_empty() {
        return Err("empty token serial".into());
    }
    Ok(())
}

fn mechanisms(ctx: &Ctx) -> Result<(), String> {
    let list = ctx
        .p11
        .get_mechanism_list(ctx.slot)
        .map_err(e("C_GetMechanismList"))?;
    for m in [MechanismType::ECDSA, MechanismType::RSA_PKCS] {
        if !list.contains(&m) {
            return Err(format!("{m} missing"));
        }
        let info = ctx
            .p11
            .get_mechanism_info(ctx.slot, m)
            .map_err(e("C_GetMechanismInfo"))?;
        if !info.sign() {
            return Err(format!("{m} cannot sign"));
        }
    }
    Ok(())
}

fn public_objects_before_login(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    for id in [1, 2] {
        ctx.one(&s, ObjectClass::CERTIFICATE, id)?;
        ctx.one(&s, ObjectClass::PUBLIC_KEY, id)?;
    }
    if !ctx.find(&s, ObjectClass::PRIVATE_KEY, 1)?.is_empty() {
        return Err("a private key is visible before login".into());
    }
    Ok(())
}

fn ids_link_objects(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    for id in [1u8, 2] {
        let spki = ctx.cert_spki(&s, id)?;
        let public = ctx.one(&s, ObjectClass::PUBLIC_KEY, id)?;
        let private = ctx.one(&s, ObjectClass::PRIVATE_KEY, id)?;
        let key_type = |h| {
            s.get_attributes(h, &[AttributeType::KeyType])
                .map_err(e("C_GetAttributeValue"))
                .map(|a| format!("{a:?}"))
        };
        if key_type(public)? != key_type(private)? {
            return Err(format!("key types of ID {id:02x} differ"));
        }
        // The certificate's key is the public key object's key.
        let ec = s
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(e("C_GetAttributeValue"))?;
        if let Some(Attribute::EcPoint(point)) = ec.first() {
            let point = der::asn1::OctetString::from_der(point)
                .map_err(|e| format!("CKA_EC_POINT: {e}"))?;
            let info = spki::SubjectPublicKeyInfoRef::from_der(&spki).map_err(|e| e.to_string())?;
            if info.subject_public_key.raw_bytes() != point.as_bytes() {
                return Err("EC point differs from the certificate's".into());
            }
        }
    }
    Ok(())
}

fn wrong_pin_counts(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    let _ = s.logout();
    match s.login(UserType::User, Some(&AuthPin::from("999999".to_owned()))) {
        Err(err) if rv(&err) == Some(RvError::PinIncorrect) => {}
        other => return Err(format!("wrong PIN: {other:?}")),
    }
    let t = ctx
        .p11
        .get_token_info(ctx.slot)
        .map_err(e("C_GetTokenInfo"))?;
    if !t.user_pin_count_low() {
        return Err("CKF_USER_PIN_COUNT_LOW not set after a wrong PIN".into());
    }
    ctx.login(&s)?;
    let t = ctx
        .p11
        .get_token_info(ctx.slot)
        .map_err(e("C_GetTokenInfo"))?;
    if t.user_pin_count_low() {
        return Err("CKF_USER_PIN_COUNT_LOW still set after the right PIN".into());
    }
    Ok(())
}

fn private_key_attributes(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let k = ctx.one(&s, ObjectClass::PRIVATE_KEY, 1)?;
    let attrs = s
        .get_attributes(
            k,
            &[
                AttributeType::Sign,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .map_err(e("C_GetAttributeValue"))?;
    for a in attrs {
        let ok = match a {
            Attribute::Sign(v) => v,
            Attribute::Sensitive(v) => v,
            Attribute::Extractable(v) => !v,
            _ => true,
        };
        if !ok {
            return Err(format!("unexpected {a:?}"));
        }
    }
    // The private value never leaves the card.
    let value = s
        .get_attributes(k, &[AttributeType::Value])
        .map_err(e("C_GetAttributeValue"))?;
    if value
        .iter()
        .any(|a| matches!(a, Attribute::Value(v) if !v.is_empty()))
    {
        return Err("CKA_VALUE of a private key was returned".into());
    }
    Ok(())
}

pub(crate) fn verify_p256(spki: &[u8], digest: &[u8], sig: &[u8]) -> Result<(), String> {
    use p256::pkcs8::DecodePublicKey;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).map_err(|e| e.to_string())?;
    let sig =
        p256::ecdsa::Signature::from_slice(sig).map_err(|e| format!("signature format: {e}"))?;
    vk.verify_prehash(digest, &sig)
        .map_err(|e| format!("signature does not verify: {e}"))
}

fn ecdsa_raw(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let k = ctx.one(&s, ObjectClass::PRIVATE_KEY, 1)?;
    let digest = sha2::Sha256::digest(b"raw ECDSA");
    let sig = s.sign(&Mechanism::Ecdsa, k, &digest).map_err(e("C_Sign"))?;
    verify_p256(&ctx.cert_spki(&s, 1)?, &digest, &sig)
}

fn ecdsa_sha256(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let k = ctx.one(&s, ObjectClass::PRIVATE_KEY, 1)?;
    let sig = s
        .sign(&Mechanism::EcdsaSha256, k, b"hashed by the module")
        .map_err(e("C_Sign"))?;
    verify_p256(
        &ctx.cert_spki(&s, 1)?,
        &sha2::Sha256::digest(b"hashed by the module"),
        &sig,
    )
}

fn ecdsa_multipart(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let k = ctx.one(&s, ObjectClass::PRIVATE_KEY, 1)?;
    s.sign_init(&Mechanism::EcdsaSha256, k)
        .map_err(e("C_SignInit"))?;
    s.sign_update(b"in ").map_err(e("C_SignUpdate"))?;
    s.sign_update(b"parts").map_err(e("C_SignUpdate"))?;
    let sig = s.sign_final().map_err(e("C_SignFinal"))?;
    verify_p256(
        &ctx.cert_spki(&s, 1)?,
        &sha2::Sha256::digest(b"in parts"),
        &sig,
    )
}

pub(crate) fn rsa_key(spki: &[u8]) -> Result<rsa::RsaPublicKey, String> {
    use rsa::pkcs8::DecodePublicKey;
    rsa::RsaPublicKey::from_public_key_der(spki).map_err(|e| e.to_string())
}

/// Signs with the 9C key, which needs a context-specific login for every signature.
fn sign_9c(ctx: &Ctx, s: &Session, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>, String> {
    let k = ctx.one(s, ObjectClass::PRIVATE_KEY, 2)?;
    s.sign_init(mech, k).map_err(e("C_SignInit"))?;
    s.login(
        UserType::ContextSpecific,
        Some(&AuthPin::from(ctx.pin.clone())),
    )
    .map_err(e("C_Login(CKU_CONTEXT_SPECIFIC)"))?;
    s.sign_final_with(data)
}

trait SignOnce {
    fn sign_final_with(&self, data: &[u8]) -> Result<Vec<u8>, String>;
}

impl SignOnce for Session {
    fn sign_final_with(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        self.sign_update(data).map_err(e("C_SignUpdate"))?;
        self.sign_final().map_err(e("C_SignFinal"))
    }
}

fn rsa_pkcs_sha256(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let sig = sign_9c(ctx, &s, &Mechanism::Sha256RsaPkcs, b"PKCS#1 v1.5")?;
    let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(rsa_key(&ctx.cert_spki(&s, 2)?)?);
    let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).map_err(|e| e.to_string())?;
    vk.verify(b"PKCS#1 v1.5", &sig)
        .map_err(|e| format!("does not verify: {e}"))
}

fn rsa_pss_sha256(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let params = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };
    let sig = sign_9c(ctx, &s, &Mechanism::Sha256RsaPkcsPss(params), b"PSS")?;
    let vk = rsa::pss::VerifyingKey::<sha2::Sha256>::new(rsa_key(&ctx.cert_spki(&s, 2)?)?);
    let sig = rsa::pss::Signature::try_from(sig.as_slice()).map_err(|e| e.to_string())?;
    vk.verify(b"PSS", &sig)
        .map_err(|e| format!("does not verify: {e}"))
}

fn always_authenticate(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let k = ctx.one(&s, ObjectClass::PRIVATE_KEY, 2)?;
    let attrs = s
        .get_attributes(k, &[AttributeType::AlwaysAuthenticate])
        .map_err(e("C_GetAttributeValue"))?;
    if !matches!(attrs.first(), Some(Attribute::AlwaysAuthenticate(true))) {
        return Err(format!(
            "9C private key: {attrs:?}, expected CKA_ALWAYS_AUTHENTICATE"
        ));
    }
    // One signature with its context login works; a second without one does not.
    sign_9c(ctx, &s, &Mechanism::Sha256RsaPkcs, b"first")?;
    match s.sign(&Mechanism::Sha256RsaPkcs, k, b"second") {
        Ok(_) => Err("signed with 9C without a context-specific login".into()),
        Err(_) => Ok(()),
    }
}

fn rsa_decrypt(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    let public = rsa_key(&ctx.cert_spki(&s, 3)?)?;
    let ciphertext = public
        .encrypt(&mut rand::rngs::OsRng, rsa::Pkcs1v15Encrypt, b"session key")
        .map_err(|e| e.to_string())?;
    let k = ctx.one(&s, ObjectClass::PRIVATE_KEY, 3)?;
    let plain = s
        .decrypt(&Mechanism::RsaPkcs, k, &ciphertext)
        .map_err(e("C_Decrypt"))?;
    if plain != b"session key" {
        return Err("decrypted text differs".into());
    }
    Ok(())
}

fn set_pin_and_back(ctx: &Ctx) -> Result<(), String> {
    let s = ctx
        .p11
        .open_rw_session(ctx.slot)
        .map_err(e("C_OpenSession(RW)"))?;
    ctx.login(&s)?;
    let (old, new) = (
        AuthPin::from(ctx.pin.clone()),
        AuthPin::from("24682468".to_owned()),
    );
    s.set_pin(&old, &new).map_err(e("C_SetPIN"))?;
    let _ = s.logout();
    let changed = s
        .login(UserType::User, Some(&new))
        .map_err(e("C_Login with the new PIN"));
    let back = s.set_pin(&new, &old).map_err(e("C_SetPIN back"));
    changed?;
    back?;
    Ok(())
}

fn so_init_pin(ctx: &Ctx) -> Result<(), String> {
    let s = ctx
        .p11
        .open_rw_session(ctx.slot)
        .map_err(e("C_OpenSession(RW)"))?;
    let _ = s.logout();
    s.login(UserType::So, Some(&AuthPin::from(ctx.puk.clone())))
        .map_err(e("C_Login(CKU_SO) with the PUK"))?;
    s.init_pin(&AuthPin::from(ctx.pin.clone()))
        .map_err(e("C_InitPIN"))?;
    s.logout().map_err(e("C_Logout"))?;
    ctx.login(&s)
}

fn random(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    let a = s.generate_random_vec(32).map_err(e("C_GenerateRandom"))?;
    let b = s.generate_random_vec(32).map_err(e("C_GenerateRandom"))?;
    if a.len() != 32 || a == b {
        return Err("random bytes repeat".into());
    }
    Ok(())
}

fn eight_threads(ctx: &Ctx) -> Result<(), String> {
    let spki = {
        let s = ctx.session()?;
        ctx.login(&s)?;
        ctx.cert_spki(&s, 1)?
    };
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let p11 = Arc::clone(&ctx.p11);
            let (slot, pin, spki) = (ctx.slot, ctx.pin.clone(), spki.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let s = p11.open_ro_session(slot).map_err(e("C_OpenSession"))?;
                match s.login(UserType::User, Some(&AuthPin::from(pin))) {
                    Ok(()) => {}
                    Err(err) if rv(&err) == Some(RvError::UserAlreadyLoggedIn) => {}
                    Err(err) => return Err(format!("C_Login: {err}")),
                }
                let k = *s
                    .find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::Id(vec![1]),
                    ])
                    .map_err(e("C_FindObjects"))?
                    .first()
                    .ok_or("no key")?;
                for j in 0..5u8 {
                    let digest = sha2::Sha256::digest([i, j]);
                    let sig = s.sign(&Mechanism::Ecdsa, k, &digest).map_err(e("C_Sign"))?;
                    verify_p256(&spki, &digest, &sig)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "a signing thread panicked".to_owned())??;
    }
    Ok(())
}

fn logout_hides_private(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.session()?;
    ctx.login(&s)?;
    ctx.one(&s, ObjectClass::PRIVATE_KEY, 1)?;
    s.logout().map_err(e("C_Logout"))?;
    if !ctx.find(&s, ObjectClass::PRIVATE_KEY, 1)?.is_empty() {
        return Err("private key visible after logout".into());
    }
    Ok(())
}

/// The card-removal exercise (see `tessera-pkcs11-suite --removal`): a removed card gives
/// `CKR_DEVICE_REMOVED` or `CKR_TOKEN_NOT_PRESENT`, never a crash, and a re-inserted card
/// works again.
pub fn removal(module: &str, pin: &str) -> Result<(), String> {
    use std::io::BufRead;
    let p11 = Pkcs11::new(module).map_err(|e| format!("loading {module}: {e}"))?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(e("C_Initialize"))?;
    let sign_once = |p11: &Pkcs11| -> Result<Result<(), CkError>, String> {
        let slot = match p11.get_slots_with_token() {
            Ok(s) if !s.is_empty() => s[0],
            Ok(_) => {
                return Ok(Err(CkError::Pkcs11(
                    RvError::TokenNotPresent,
                    cryptoki::context::Function::GetSlotList,
                )))
            }
            Err(err) => return Ok(Err(err)),
        };
        let s = match p11.open_ro_session(slot) {
            Ok(s) => s,
            Err(err) => return Ok(Err(err)),
        };
        if let Err(err) = s.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
            if rv(&err) != Some(RvError::UserAlreadyLoggedIn) {
                return Ok(Err(err));
            }
        }
        let keys = match s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ]) {
            Ok(k) => k,
            Err(err) => return Ok(Err(err)),
        };
        let k = *keys.first().ok_or("no 9A key")?;
        Ok(s.sign(&Mechanism::Ecdsa, k, &[0x42; 32]).map(drop))
    };
    // A logged-in session kept open across the removal.
    let slot = p11.get_slots_with_token().map_err(e("C_GetSlotList"))?[0];
    let held = p11.open_ro_session(slot).map_err(e("C_OpenSession"))?;
    held.login(UserType::User, Some(&AuthPin::from(pin.to_owned())))
        .map_err(e("C_Login"))?;
    let key = *held
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .map_err(e("C_FindObjects"))?
        .first()
        .ok_or("no 9A key")?;
    held.sign(&Mechanism::Ecdsa, key, &[0x42; 32])
        .map_err(e("first signature"))?;
    println!("READY");
    let mut lines = std::io::stdin().lock().lines();
    lines.next();
    match held.sign(&Mechanism::Ecdsa, key, &[0x42; 32]) {
        Ok(_) => println!("REMOVED-SIGN: CKR_OK"),
        Err(err) => println!(
            "REMOVED-SIGN: {}",
            rv(&err)
                .map(|r| format!("{r:?}"))
                .unwrap_or(err.to_string())
        ),
    }
    match p11.get_slots_with_token() {
        Ok(s) => println!("REMOVED-SLOTS-WITH-TOKEN: {}", s.len()),
        Err(err) => println!("REMOVED-SLOTS-WITH-TOKEN: {err}"),
    }
    println!("WAITING");
    lines.next();
    match sign_once(&p11)? {
        Ok(()) => println!("REINSERTED-SIGN: CKR_OK"),
        Err(err) => println!("REINSERTED-SIGN: {err}"),
    }
    Ok(())
}
