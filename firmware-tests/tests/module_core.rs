//! The PKCS#11 module's safe core over the applet in memory: what the module decides from
//! the card (algorithm and PIN policy from GET METADATA), slot events, a login another
//! program ended, a contactless card. Fast, and with no pcscd: the same behaviours are shown
//! through pcscd in `shared_card.rs`.
//!
//! The module is one per process, so the checks run in one test, in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tessera_firmware_tests::manufacture::blank_card;
use tessera_piv::apdu::Command;
use tessera_piv::card::{Applet, Interface, SoftKeyStore, DEFAULT_MANAGEMENT_KEY};
use tessera_piv::host::{Error as HostError, PivClient, Transport};
use tessera_piv::piv::{Algorithm, KeyRef, PinPolicy};
use tessera_piv::tlv;
use tessera_pkcs11_core::mechanism::SignScheme;
use tessera_pkcs11_core::module::{self, AttrResult, Backend};
use tessera_pkcs11_core::sys;
use tessera_pkcs11_core::Error;

type SharedCard = Arc<Mutex<Applet<SoftKeyStore>>>;

/// A connection to the shared in-memory card, as a PC/SC handle is to a card in a reader;
/// `usable` false is a connection given up after another program held the card too long.
struct Connection(SharedCard, Arc<AtomicBool>);

impl Transport for Connection {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, HostError> {
        if !self.1.load(Ordering::SeqCst) {
            return Err(HostError::Busy);
        }
        Ok(self.0.lock().expect("card").process(apdu))
    }

    fn contactless(&mut self) -> bool {
        self.0.lock().expect("card").interface() == Interface::Contactless
    }

    fn usable(&mut self) -> bool {
        self.1.load(Ordering::SeqCst)
    }
}

/// The usability switch of the backend's latest connection.
type Latest = Arc<Mutex<Option<Arc<AtomicBool>>>>;

/// Gives up the module's current connection, as the transport does after a long wait.
fn give_up(latest: &Latest) {
    if let Some(usable) = latest.lock().expect("latest").as_ref() {
        usable.store(false, Ordering::SeqCst);
    }
}

/// One reader holding the shared card while `present`; listing fails once when
/// `fail_listing` is set (a reader unplugged between listing and asking its state).
struct Memory {
    card: SharedCard,
    present: Arc<AtomicBool>,
    fail_listing: Arc<AtomicBool>,
    latest: Latest,
}

impl Backend for Memory {
    fn readers(&mut self) -> tessera_pkcs11_core::Result<Vec<(String, bool)>> {
        if self.fail_listing.swap(false, Ordering::SeqCst) {
            return Err(Error::DeviceError(
                "SCardGetStatusChange: unknown reader".into(),
            ));
        }
        Ok(vec![(
            "Memory reader".to_owned(),
            self.present.load(Ordering::SeqCst),
        )])
    }

    fn connect(&mut self, _: &str) -> tessera_pkcs11_core::Result<Box<dyn Transport + Send>> {
        if !self.present.load(Ordering::SeqCst) {
            return Err(Error::TokenNotPresent);
        }
        let usable = Arc::new(AtomicBool::new(true));
        *self.latest.lock().expect("latest") = Some(Arc::clone(&usable));
        Ok(Box::new(Connection(Arc::clone(&self.card), usable)))
    }

    fn waiter(&self) -> fn(Duration) {
        std::thread::sleep
    }
}

/// A card with P-256 keys in 9A (PIN once), 9D with the PIN policy *always* (the slot's
/// default is once, so only GET METADATA can tell the module) and 9E (no PIN); each with a
/// certificate (the card's own attestation of the key, which carries the key's
/// SubjectPublicKeyInfo).
fn personalised(interface: Interface) -> Applet<SoftKeyStore> {
    let new = blank_card(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000))
        .expect("blank card");
    let mut c = PivClient::new(Applet::new(new.card, new.keys, Interface::Contact));
    c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
        .expect("management key");
    for (slot, policy) in [
        (KeyRef::AUTHENTICATION, None),
        (KeyRef::KEY_MANAGEMENT, Some(PinPolicy::Always)),
        (KeyRef::CARD_AUTHENTICATION, None),
    ] {
        c.generate(slot, Algorithm::EccP256, policy)
            .expect("generate");
        let cert = c.attest(slot).expect("attest");
        let mut content = tlv::encode(0x70, &cert);
        tlv::push(&mut content, 0x71, &[0]);
        let tag = slot.certificate_object().expect("certificate object");
        c.put_data(tag, &content).expect("PUT DATA");
    }
    let applet = c.into_transport();
    // The same card, presented over the interface asked for.
    let state = applet.state().clone();
    let keys: SoftKeyStore =
        serde_json::from_value(serde_json::to_value(applet.keys()).expect("keys")).expect("keys");
    Applet::new(state, keys, interface)
}

struct Started {
    card: SharedCard,
    present: Arc<AtomicBool>,
    fail_listing: Arc<AtomicBool>,
    latest: Latest,
}

fn start(interface: Interface) -> Started {
    let card = Arc::new(Mutex::new(personalised(interface)));
    let present = Arc::new(AtomicBool::new(true));
    let fail_listing = Arc::new(AtomicBool::new(false));
    let latest = Latest::default();
    module::initialize(Box::new(Memory {
        card: Arc::clone(&card),
        present: Arc::clone(&present),
        fail_listing: Arc::clone(&fail_listing),
        latest: Arc::clone(&latest),
    }))
    .expect("C_Initialize");
    Started {
        card,
        present,
        fail_listing,
        latest,
    }
}

fn private_key(h: sys::CK_SESSION_HANDLE, id: u8) -> Option<sys::CK_OBJECT_HANDLE> {
    let class = (sys::CKO_PRIVATE_KEY as sys::CK_ULONG)
        .to_ne_bytes()
        .to_vec();
    module::with(|m| {
        m.find_init(
            h,
            &[(sys::CKA_CLASS, class.clone()), (sys::CKA_ID, vec![id])],
        )?;
        let found = m.find(h, 10)?;
        m.find_final(h)?;
        Ok(found.first().copied())
    })
    .expect("find")
}

fn sign(
    h: sys::CK_SESSION_HANDLE,
    key: sys::CK_OBJECT_HANDLE,
) -> tessera_pkcs11_core::Result<Vec<u8>> {
    module::with(|m| {
        m.sign_init(h, SignScheme::Ecdsa(None), key)?;
        m.sign(h, Some(&[0x5A; 32]))
    })
}

#[test]
fn the_module_follows_the_card() {
    let Started {
        card,
        present,
        fail_listing,
        latest,
    } = start(Interface::Contact);
    let slot = 0;

    // ECDH is offered, as C_DeriveKey implements it.
    let mechs = module::with(|m| m.mechanisms(slot)).expect("mechanisms");
    assert!(mechs.contains(&sys::CKM_ECDH1_DERIVE), "{mechs:?}");

    let h = module::with(|m| m.open_session(slot, sys::CKF_SERIAL_SESSION)).expect("session");
    // 9E needs no PIN: its private key is visible before login; 9A's is not.
    assert!(
        private_key(h, 4).is_some(),
        "9E private key hidden before login"
    );
    assert!(
        private_key(h, 1).is_none(),
        "9A private key visible before login"
    );
    // 9E signs without a login.
    let key_9e = private_key(h, 4).expect("9E");
    assert_eq!(sign(h, key_9e).expect("9E signature").len(), 64);

    module::with(|m| m.login(h, sys::CKU_USER, b"123456")).expect("C_Login");
    // The PIN policy comes from GET METADATA (9D: always), not from the slot (9D: once).
    let always = |id| {
        let key = private_key(h, id).expect("private key");
        module::with(|m| m.attributes(h, key, &[sys::CKA_ALWAYS_AUTHENTICATE])).expect("attributes")
    };
    assert_eq!(always(3), [AttrResult::Value(vec![1])]);
    assert_eq!(always(1), [AttrResult::Value(vec![0])]);

    // Another program logs the card out (VERIFY P1=FF). Our next use of the PIN (9A, PIN
    // once) is refused by the card, and the module sees that our login is over: C_Login
    // works again instead of answering "already logged in".
    let key_9a = private_key(h, 1).expect("9A");
    sign(h, key_9a).expect("9A signature while logged in");
    let logout = Command::new(0, 0x20, 0xFF, 0x80).to_bytes();
    card.lock().expect("card").process(&logout);
    assert_eq!(sign(h, key_9a), Err(Error::UserNotLoggedIn));
    module::with(|m| m.login(h, sys::CKU_USER, b"123456"))
        .expect("C_Login after another program logged the card out");
    sign(h, key_9a).expect("9A signature after logging in again");
    // Without a failed operation first, C_Login asks the card too.
    card.lock().expect("card").process(&logout);
    module::with(|m| m.login(h, sys::CKU_USER, b"123456"))
        .expect("C_Login when the card was logged out behind our back");
    // And while the card is still verified, a second login is refused as PKCS#11 says.
    assert_eq!(
        module::with(|m| m.login(h, sys::CKU_USER, b"123456")),
        Err(Error::UserAlreadyLoggedIn)
    );

    // A transient failure to list the readers is not every card gone: the token, the
    // session and its login stay.
    fail_listing.store(true, Ordering::SeqCst);
    assert_eq!(module::with(|m| m.slot_list(true)).expect("slots"), [slot]);
    sign(h, key_9a).expect("9A signature after a failed listing");

    // A connection given up (another program held the card too long) is replaced on the
    // next call: the same card keeps the session, its objects and the login the card
    // still has.
    give_up(&latest);
    sign(h, key_9a).expect("9A signature on a new connection to the same card");
    // Given up again, and meanwhile the card was swapped: the new card is not taken for
    // the old one (its objects, label and login); the token and its sessions are gone.
    give_up(&latest);
    *card.lock().expect("card") = personalised(Interface::Contact);
    assert_eq!(sign(h, key_9a), Err(Error::DeviceRemoved));
    assert_eq!(
        module::with(|m| m.session_info(h)),
        Err(Error::SessionHandleInvalid)
    );
    let h = module::with(|m| m.open_session(slot, sys::CKF_SERIAL_SESSION)).expect("session");
    assert!(
        private_key(h, 1).is_none(),
        "the swapped card's 9A key visible without its PIN"
    );

    // Slot events: none pending, then the card leaves and comes back.
    assert_eq!(module::wait_for_slot_event(false), Err(Error::NoEvent));
    present.store(false, Ordering::SeqCst);
    assert_eq!(module::wait_for_slot_event(false), Ok(slot));
    assert_eq!(module::wait_for_slot_event(false), Err(Error::NoEvent));
    let waiter = std::thread::spawn(|| module::wait_for_slot_event(true));
    std::thread::sleep(Duration::from_millis(700));
    // The waiter does not hold the module's lock.
    module::with(|m| m.slot_list(false)).expect("C_GetSlotList while a thread waits");
    present.store(true, Ordering::SeqCst);
    assert_eq!(waiter.join().expect("waiter"), Ok(slot));
    // C_Finalize ends a blocked wait.
    let waiter = std::thread::spawn(|| module::wait_for_slot_event(true));
    std::thread::sleep(Duration::from_millis(200));
    module::finalize().expect("C_Finalize");
    assert_eq!(waiter.join().expect("waiter"), Err(Error::NotInitialized));

    // The same card over contactless: no PIN there, so no login required, write-protected,
    // no read-write session; 9E still signs.
    let _contactless = start(Interface::Contactless);
    let info = module::with(|m| m.token_info(slot)).expect("C_GetTokenInfo contactless");
    assert_eq!(info.flags & sys::CKF_LOGIN_REQUIRED, 0);
    // The card gives no challenges over contactless: no RNG offered.
    assert_eq!(info.flags & sys::CKF_RNG, 0);
    assert_ne!(info.flags & sys::CKF_WRITE_PROTECTED, 0);
    assert_eq!(
        module::with(|m| m.open_session(slot, sys::CKF_SERIAL_SESSION | sys::CKF_RW_SESSION)),
        Err(Error::TokenWriteProtected)
    );
    let h = module::with(|m| m.open_session(slot, sys::CKF_SERIAL_SESSION)).expect("session");
    assert_eq!(
        module::with(|m| m.login(h, sys::CKU_USER, b"123456")),
        Err(Error::FunctionFailed(
            "no PIN over the contactless interface"
        ))
    );
    let key_9e = private_key(h, 4).expect("9E over contactless");
    assert!(sign(h, key_9e).is_ok());
    assert!(private_key(h, 1).is_none());
    module::finalize().expect("C_Finalize");
}
