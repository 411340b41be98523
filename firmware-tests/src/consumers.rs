//! Long-lived consumers of one card, as a desktop runs them at once (ssh-agent holding a
//! login, a browser signing, a login manager probing): each runs in its own process, loads a
//! PKCS#11 module through `cryptoki` and reports what it saw as one line of `key=value`
//! pairs. The shared-card tests and the benchmark start several against the same card
//! (`tessera-pkcs11-suite --consumer …`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rsa::signature::Verifier;
use sha2::Digest;

use crate::pkcs11_suite::{e, rsa_key, rv, verify_p256, Ctx};

/// What a consumer counted.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    /// Signatures the card made that do not verify.
    pub bad: u64,
    /// Failed calls by PKCS#11 return value.
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Tally {
    fn error(&mut self, err: &cryptoki::error::Error) {
        let name = rv(err).map_or_else(|| err.to_string(), |r| format!("{r:?}"));
        *self.errors.entry(name).or_default() += 1;
    }

    /// `ok=N bad=N errors=[..] per_second=N`.
    pub fn line(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let per_second = self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "ok={} bad={} errors=[{}] per_second={per_second:.1}",
            self.ok,
            self.bad,
            errors.join(",")
        )
    }
}

fn open(module: &str) -> Result<Ctx, String> {
    let p11 = Pkcs11::new(module).map_err(|e| format!("loading {module}: {e}"))?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(e("C_Initialize"))?;
    let slot = *p11
        .get_slots_with_token()
        .map_err(e("C_GetSlotList"))?
        .first()
        .ok_or("no slot with a token")?;
    Ok(Ctx {
        p11: Arc::new(p11),
        slot,
        pin: String::new(),
        puk: String::new(),
    })
}

/// Logs in once and signs with the 9A key (ECDSA P-256) every `interval` for `duration`,
/// in one session kept open throughout, verifying every signature: what ssh-agent does.
/// A lost login, a removed device or a bad signature shows in the tally.
pub fn hold_login(
    module: &str,
    pin: &str,
    duration: Duration,
    interval: Duration,
) -> Result<Tally, String> {
    let ctx = open(module)?;
    let s = ctx.session()?;
    s.login(UserType::User, Some(&AuthPin::from(pin.to_owned())))
        .map_err(e("C_Login"))?;
    let key = ctx.one(&s, ObjectClass::PRIVATE_KEY, 1)?;
    let spki = ctx.cert_spki(&s, 1)?;
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        n += 1;
        let digest = sha2::Sha256::digest(n.to_be_bytes());
        match s.sign(&Mechanism::Ecdsa, key, &digest) {
            Ok(sig) => match verify_p256(&spki, &digest, &sig) {
                Ok(()) => tally.ok += 1,
                Err(_) => tally.bad += 1,
            },
            Err(err) => tally.error(&err),
        }
        std::thread::sleep(interval);
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

/// Signs `count` times with the 9A key as fast as it can (one login, one session), each
/// signature verified: the load of the two-process benchmark.
pub fn sign_many(module: &str, pin: &str, count: u64) -> Result<Tally, String> {
    let ctx = open(module)?;
    let s = ctx.session()?;
    login(&s, pin)?;
    let key = ctx.one(&s, ObjectClass::PRIVATE_KEY, 1)?;
    let spki = ctx.cert_spki(&s, 1)?;
    let mut tally = Tally::default();
    let start = Instant::now();
    for n in 0..count {
        let digest = sha2::Sha256::digest(n.to_be_bytes());
        match s.sign(&Mechanism::Ecdsa, key, &digest) {
            Ok(sig) => match verify_p256(&spki, &digest, &sig) {
                Ok(()) => tally.ok += 1,
                Err(_) => tally.bad += 1,
            },
            Err(err) => tally.error(&err),
        }
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

fn login(s: &Session, pin: &str) -> Result<(), String> {
    match s.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
        Ok(()) => Ok(()),
        Err(err) if rv(&err) == Some(cryptoki::error::RvError::UserAlreadyLoggedIn) => Ok(()),
        Err(err) => Err(format!("C_Login: {err}")),
    }
}

/// `rounds` signatures with the 9C key (PIN always): C_SignInit, the context-specific
/// login, a pause of `pause` (a slow application: the window another program would use),
/// then C_Sign, verified.
pub fn context_sign(
    module: &str,
    pin: &str,
    rounds: u64,
    pause: Duration,
) -> Result<Tally, String> {
    let ctx = open(module)?;
    let s = ctx.session()?;
    login(&s, pin)?;
    let key = ctx.one(&s, ObjectClass::PRIVATE_KEY, 2)?;
    let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(rsa_key(&ctx.cert_spki(&s, 2)?)?);
    let mut tally = Tally::default();
    let start = Instant::now();
    for n in 0..rounds {
        let message = n.to_be_bytes();
        let signed = s
            .sign_init(&Mechanism::Sha256RsaPkcs, key)
            .and_then(|()| {
                s.login(
                    UserType::ContextSpecific,
                    Some(&AuthPin::from(pin.to_owned())),
                )
            })
            .and_then(|()| {
                std::thread::sleep(pause);
                s.sign_update(&message)
            })
            .and_then(|()| s.sign_final());
        match signed {
            Ok(sig) => {
                let ok = rsa::pkcs1v15::Signature::try_from(sig.as_slice())
                    .map(|sig| vk.verify(&message, &sig).is_ok())
                    .unwrap_or(false);
                if ok {
                    tally.ok += 1;
                } else {
                    tally.bad += 1;
                }
            }
            Err(err) => tally.error(&err),
        }
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

/// `rounds` times: a new session, `C_Login(CKU_USER)`, the session closed — what a program
/// that logs in and goes does. Each VERIFY makes the PIN fresh on the card; none of that
/// freshness may be left for another program's 9C signature.
pub fn login_loop(module: &str, pin: &str, rounds: u64) -> Result<Tally, String> {
    let ctx = open(module)?;
    let mut tally = Tally::default();
    let start = Instant::now();
    for _ in 0..rounds {
        let s = ctx.session()?;
        match s.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
            Ok(()) => tally.ok += 1,
            Err(err) => tally.error(&err),
        }
        drop(s);
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

/// `rounds` times: `C_SignInit` with 9C, the context-specific login, and the session closed
/// without signing. The hold on the card ends with the session; the freshness must too.
pub fn abandon_context(module: &str, pin: &str, rounds: u64) -> Result<Tally, String> {
    let ctx = open(module)?;
    let mut tally = Tally::default();
    let start = Instant::now();
    for _ in 0..rounds {
        let s = ctx.session()?;
        login(&s, pin)?;
        let key = ctx.one(&s, ObjectClass::PRIVATE_KEY, 2)?;
        let r = s.sign_init(&Mechanism::Sha256RsaPkcs, key).and_then(|()| {
            s.login(
                UserType::ContextSpecific,
                Some(&AuthPin::from(pin.to_owned())),
            )
        });
        match r {
            Ok(()) => tally.ok += 1,
            Err(err) => tally.error(&err),
        }
        drop(s);
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

/// A context-specific login with 9C that is never used, then `C_GetTokenInfo` every
/// `interval` for `duration`: a program that keeps the card busy. The card must still go
/// to other programs after the hold limit.
pub fn hold_and_poll(
    module: &str,
    pin: &str,
    duration: Duration,
    interval: Duration,
) -> Result<Tally, String> {
    let ctx = open(module)?;
    let s = ctx.session()?;
    login(&s, pin)?;
    let key = ctx.one(&s, ObjectClass::PRIVATE_KEY, 2)?;
    s.sign_init(&Mechanism::Sha256RsaPkcs, key)
        .map_err(e("C_SignInit"))?;
    s.login(
        UserType::ContextSpecific,
        Some(&AuthPin::from(pin.to_owned())),
    )
    .map_err(e("C_Login(CKU_CONTEXT_SPECIFIC)"))?;
    println!("HOLDING");
    let mut tally = Tally::default();
    let start = Instant::now();
    while start.elapsed() < duration {
        match ctx.p11.get_token_info(ctx.slot) {
            Ok(_) => tally.ok += 1,
            Err(err) => tally.error(&err),
        }
        std::thread::sleep(interval);
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

/// A program whose card another program holds: loads the token (prints `LOADED`), waits
/// for a line on stdin (the holder has the card by then), makes two C_GetTokenInfo calls
/// and prints `BUSY first=<rv>:<ms> second=<rv>:<ms>`. With `recover`, waits for another
/// line (the holder has gone) and prints `AFTER <ok|rv>`. Then C_Finalize, timed
/// (`FINALIZED <ms>`): a module that waits for a card another program holds must answer
/// within its bound, and neither hang nor fall out of step with its card thread.
pub fn busy_card(module: &str, recover: bool) -> Result<(), String> {
    use std::io::BufRead;
    let ctx = open(module)?;
    let s = ctx.session()?;
    s.find_objects(&[]).map_err(e("C_FindObjects"))?;
    println!("LOADED");
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    let _ = stdin.read_line(&mut line);
    let call = || {
        let start = Instant::now();
        let r = ctx.p11.get_token_info(ctx.slot);
        let outcome = match r {
            Ok(_) => "ok".to_owned(),
            Err(err) => rv(&err).map_or_else(|| err.to_string(), |r| format!("{r:?}")),
        };
        format!("{outcome}:{}", start.elapsed().as_millis())
    };
    let first = call();
    let second = call();
    println!("BUSY first={first} second={second}");
    if recover {
        line.clear();
        let _ = stdin.read_line(&mut line);
        let after = call();
        println!("AFTER {}", after.split(':').next().unwrap_or_default());
    }
    drop(s);
    let start = Instant::now();
    let ctx = Arc::try_unwrap(ctx.p11).map_err(|_| "the module is still shared")?;
    ctx.finalize().map_err(e("C_Finalize"))?;
    println!("FINALIZED {}", start.elapsed().as_millis());
    Ok(())
}

/// Loads the module and walks every slot with a token: token information, a session, the
/// object list. Reports the first failure (or `ok`), the time taken and the process's peak
/// memory: a hostile card must make the module fail within a bound, not hang or grow.
pub fn probe(module: &str) -> String {
    let start = Instant::now();
    let outcome = (|| -> Result<usize, String> {
        let p11 = Pkcs11::new(module).map_err(|e| format!("loading {module}: {e}"))?;
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(e("C_Initialize"))?;
        let mut objects = 0;
        for slot in p11.get_slots_with_token().map_err(e("C_GetSlotList"))? {
            p11.get_token_info(slot).map_err(e("C_GetTokenInfo"))?;
            let s = p11.open_ro_session(slot).map_err(e("C_OpenSession"))?;
            objects += s.find_objects(&[]).map_err(e("C_FindObjects"))?.len();
        }
        Ok(objects)
    })();
    let outcome = match outcome {
        Ok(n) => format!("ok objects={n}"),
        Err(why) => format!("error {why}"),
    };
    format!(
        "probe: {outcome}; seconds={:.1} peak_rss_kb={}",
        start.elapsed().as_secs_f64(),
        peak_rss_kb()
    )
}

/// VmHWM of this process, in kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits for slot events through C_WaitForSlotEvent and prints each (`EVENT slot=N
/// present=yes|no`) until `count` have come; first checks that a non-blocking call with
/// nothing pending answers `CKR_NO_EVENT` (`NO-EVENT`).
pub fn watch_events(module: &str, count: usize) -> Result<(), String> {
    let p11 = Pkcs11::new(module).map_err(|e| format!("loading {module}: {e}"))?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(e("C_Initialize"))?;
    match p11
        .get_slot_event()
        .map_err(e("C_WaitForSlotEvent (no block)"))?
    {
        None => println!("NO-EVENT"),
        Some(slot) => println!("PENDING slot={}", slot.id()),
    }
    println!("WAITING");
    for _ in 0..count {
        let slot = p11.wait_for_slot_event().map_err(e("C_WaitForSlotEvent"))?;
        let present = p11
            .get_slot_info(slot)
            .map(|i| i.token_present())
            .unwrap_or(false);
        println!(
            "EVENT slot={} present={}",
            slot.id(),
            if present { "yes" } else { "no" }
        );
    }
    Ok(())
}
