//! The module's state: slots (one per PC/SC reader), tokens, sessions and the operations in
//! progress, behind one lock (the module is `CKF_OS_LOCKING_OK`-safe: every call takes the
//! lock, so any number of application threads may call it).
//!
//! The card is shared with other programs (ssh-agent, the browser, the login manager,
//! OpenSC's tools). Each call that talks to the card holds it exclusively for its commands
//! ([`Token::exclusive`]); a context-specific login holds it on until the signature it
//! authorises. A card reset by another program is reconnected, PIV is selected again and
//! the login the reset cleared is dropped, but the sessions stay. The module never logs the
//! card out behind an application's back: closing sessions ends only this application's
//! login; `C_Logout` alone sends the card's logout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cryptoki_sys as sys;
use tessera_piv::host::Transport;
use tessera_piv::piv::KeyRef;
use zeroize::Zeroizing;

use crate::mechanism::{self, SignScheme, MECHANISMS};
use crate::object::{Attr, KeyKind};
use crate::token::{Card, PinState, Token};
use crate::{Error, Result};

/// Where readers and cards come from: PC/SC in the shipped module, an in-memory card in
/// unit tests.
pub trait Backend: Send {
    /// Reader names with whether a card is present in each (none without the service).
    fn readers(&mut self) -> Result<Vec<(String, bool)>>;
    /// Connects to the card in a reader.
    fn connect(&mut self, reader: &str) -> Result<Box<dyn Transport + Send>>;
    /// A function that waits until readers or cards may have changed, or the duration
    /// passes; called without the module's lock (C_WaitForSlotEvent).
    fn waiter(&self) -> fn(Duration);
    /// At C_Finalize, after the connections are dropped: gives connections that were
    /// given up up to `max` to end, so that the process does not exit with a card handle
    /// open (pcscd resets the card of a client that exits so). Nothing by default.
    fn settle(&mut self, max: Duration) {
        let _ = max;
    }
}

/// How long C_Finalize waits for connections given up on (see [`Backend::settle`]).
const FINALIZE_SETTLE: Duration = Duration::from_secs(3);

/// What a finalized module keeps while its backend settles: nothing.
struct NoBackend;

impl Backend for NoBackend {
    fn readers(&mut self) -> Result<Vec<(String, bool)>> {
        Ok(Vec::new())
    }

    fn connect(&mut self, _reader: &str) -> Result<Box<dyn Transport + Send>> {
        Err(Error::TokenNotPresent)
    }

    fn waiter(&self) -> fn(Duration) {
        std::thread::sleep
    }
}

/// The PC/SC backend.
#[derive(Debug, Default)]
pub struct PcscBackend;

impl Backend for PcscBackend {
    fn readers(&mut self) -> Result<Vec<(String, bool)>> {
        tessera_piv::host::PcscTransport::readers_with_presence().map_err(Into::into)
    }

    fn connect(&mut self, reader: &str) -> Result<Box<dyn Transport + Send>> {
        Ok(Box::new(tessera_piv::host::PcscTransport::connect(reader)?))
    }

    fn waiter(&self) -> fn(Duration) {
        tessera_piv::host::PcscTransport::wait_for_change
    }

    fn settle(&mut self, max: Duration) {
        tessera_piv::host::PcscTransport::settle_abandoned(max);
    }
}

/// Slot information for C_GetSlotInfo.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub description: String,
    pub token_present: bool,
}

/// Token information for C_GetTokenInfo.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub label: String,
    pub serial: String,
    pub flags: sys::CK_FLAGS,
    pub sessions: u64,
    pub rw_sessions: u64,
}

/// What a C_Decrypt call yields.
#[derive(Debug)]
pub enum DecryptStep {
    /// The plaintext; the operation is over.
    Done(Zeroizing<Vec<u8>>),
    /// The plaintext needs this many bytes; the operation stays active.
    Needs(usize),
}

/// One attribute as C_GetAttributeValue reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrResult {
    Value(Vec<u8>),
    Sensitive,
    Invalid,
}

#[derive(Debug)]
struct Slot {
    id: sys::CK_SLOT_ID,
    reader: String,
    present: bool,
    /// Presence as C_WaitForSlotEvent last reported it (or found it at C_Initialize).
    reported: bool,
    token: Option<Token>,
    /// The session whose context-specific login holds the card until its operation.
    hold: Option<sys::CK_SESSION_HANDLE>,
    /// This process verified the PIN on the card (for [`LOGOUT_ON_FINALIZE`]).
    verified_here: bool,
    /// Who is logged in to the token (PKCS#11 §6.7: login is per application and token).
    login: Option<sys::CK_USER_TYPE>,
    /// The PUK given at an SO login. PIV cannot check a PUK on its own (SP 800-73-4 has no
    /// VERIFY of key reference 81), so it is held, zeroized on logout, until C_InitPIN
    /// uses it in RESET RETRY COUNTER.
    puk: Option<Zeroizing<Vec<u8>>>,
}

#[derive(Debug)]
enum Operation {
    Sign {
        key: sys::CK_OBJECT_HANDLE,
        scheme: SignScheme,
        data: Vec<u8>,
        /// A context-specific login happened for this operation (9C).
        context_login: bool,
    },
    Decrypt {
        key: sys::CK_OBJECT_HANDLE,
        /// The plaintext once the card has decrypted, kept for a retry with a larger buffer
        /// (PKCS#11 §5.2).
        plain: Option<Zeroizing<Vec<u8>>>,
    },
}

#[derive(Debug)]
struct Session {
    slot: sys::CK_SLOT_ID,
    flags: sys::CK_FLAGS,
    find: Option<Vec<sys::CK_OBJECT_HANDLE>>,
    op: Option<Operation>,
}

/// The whole module state.
pub struct Module {
    backend: Box<dyn Backend>,
    slots: Vec<Slot>,
    sessions: BTreeMap<sys::CK_SESSION_HANDLE, Session>,
    /// Session objects (ECDH results): handle → (owning session, object). PKCS#11 §4.4:
    /// visible to the application's sessions on the token, destroyed with their session.
    session_objects:
        BTreeMap<sys::CK_OBJECT_HANDLE, (sys::CK_SESSION_HANDLE, crate::object::Object)>,
    next_session: sys::CK_SESSION_HANDLE,
    next_object: sys::CK_OBJECT_HANDLE,
    /// The process that initialized the module: after fork() a child must initialize
    /// again (PKCS#11 §6.7.7).
    pid: u32,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("slots", &self.slots)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

static MODULE: Mutex<Option<Module>> = Mutex::new(None);

/// Changes at every C_Initialize and C_Finalize, so that a C_WaitForSlotEvent that waits
/// without the lock notices the module it waits for is gone (PKCS#11 §5.5).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// With this environment variable set to `1`, C_Finalize logs the card out (VERIFY
/// `P1=FF`) if this process verified its PIN. Off by default: the card's PIN status is
/// shared by every program using the card (ssh-agent, the browser), and OpenSC leaves it
/// too; a site that prefers that no verification outlives the program that made it turns
/// it on, and its users then log in again in the other programs.
pub const LOGOUT_ON_FINALIZE: &str = "TESSERA_PKCS11_LOGOUT_ON_FINALIZE";

/// How long C_WaitForSlotEvent waits between looks at the module.
const EVENT_POLL: Duration = Duration::from_millis(500);

fn lock() -> MutexGuard<'static, Option<Module>> {
    // A panic while holding the lock is caught at the FFI boundary; the state it left is
    // still the best there is, so a poisoned lock is taken over rather than refused.
    MODULE.lock().unwrap_or_else(|p| p.into_inner())
}

/// C_Initialize with a backend.
pub fn initialize(backend: Box<dyn Backend>) -> Result<()> {
    let mut m = lock();
    if let Some(existing) = m.take() {
        if existing.pid == std::process::id() {
            *m = Some(existing);
            return Err(Error::AlreadyInitialized);
        }
        // Inherited through fork(): the parent's card handles and pcscd connection are not
        // ours (and their worker threads did not survive the fork). Dropping them would
        // talk to pcscd over the parent's socket, so they are leaked instead.
        std::mem::forget(existing);
    }
    GENERATION.fetch_add(1, Ordering::SeqCst);
    let mut module = Module {
        backend,
        slots: Vec::new(),
        sessions: BTreeMap::new(),
        session_objects: BTreeMap::new(),
        next_session: 0,
        next_object: 0,
        pid: std::process::id(),
    };
    // The readers as they are now, so that C_WaitForSlotEvent reports changes, not the
    // cards already there. Without pcscd there are none yet; that is not an error.
    if module.refresh().is_ok() {
        for slot in &mut module.slots {
            slot.reported = slot.present;
        }
    }
    *m = Some(module);
    Ok(())
}

/// C_Finalize.
pub fn finalize() -> Result<()> {
    let mut m = lock();
    match m.as_mut() {
        Some(existing) if existing.pid == std::process::id() => {
            if std::env::var(LOGOUT_ON_FINALIZE).as_deref() == Ok("1") {
                existing.logout_where_verified();
            }
            if let Some(mut module) = m.take() {
                let mut backend = std::mem::replace(&mut module.backend, Box::new(NoBackend));
                drop(module);
                backend.settle(FINALIZE_SETTLE);
            }
            GENERATION.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        _ => Err(Error::NotInitialized),
    }
}

/// Runs `f` on the initialized module.
pub fn with<T>(f: impl FnOnce(&mut Module) -> Result<T>) -> Result<T> {
    let mut m = lock();
    match m.as_mut() {
        Some(module) if module.pid == std::process::id() => f(module),
        _ => Err(Error::NotInitialized),
    }
}

/// C_WaitForSlotEvent: the next slot whose token came or went since it was last reported.
/// With `block`, waits for one without holding the module's lock (other threads go on
/// using the module) and returns `NotInitialized` if C_Finalize is called meanwhile;
/// without, answers `NoEvent` at once when there is none.
pub fn wait_for_slot_event(block: bool) -> Result<sys::CK_SLOT_ID> {
    let generation = GENERATION.load(Ordering::SeqCst);
    loop {
        let wait = with(|m| {
            m.refresh()?;
            if let Some(slot) = m.slots.iter_mut().find(|s| s.present != s.reported) {
                slot.reported = slot.present;
                return Ok(Err(slot.id));
            }
            Ok(Ok(m.backend.waiter()))
        })?;
        let wait = match wait {
            Err(slot) => return Ok(slot),
            Ok(_) if !block => return Err(Error::NoEvent),
            Ok(w) => w,
        };
        wait(EVENT_POLL);
        if GENERATION.load(Ordering::SeqCst) != generation {
            return Err(Error::NotInitialized);
        }
    }
}

impl Module {
    /// Logs out every card whose PIN this process verified (best effort).
    fn logout_where_verified(&mut self) {
        let ids: Vec<_> = self
            .slots
            .iter()
            .filter(|s| s.verified_here && s.token.is_some())
            .map(|s| s.id)
            .collect();
        for id in ids {
            let _ = self.on_card(id, Token::logout);
        }
    }

    /// Refreshes the reader list: new readers get new slot IDs, a removed card drops its
    /// token and the sessions on it.
    fn refresh(&mut self) -> Result<()> {
        // A transient failure to list (a reader unplugged between listing and asking its
        // state) keeps what the module knew, instead of dropping every token and session.
        let Ok(readers) = self.backend.readers() else {
            return Ok(());
        };
        for slot in &mut self.slots {
            slot.present = false;
        }
        for (name, present) in readers {
            match self.slots.iter_mut().find(|s| s.reader == name) {
                Some(slot) => slot.present = present,
                None => {
                    let id = self.slots.len() as sys::CK_SLOT_ID;
                    self.slots.push(Slot {
                        id,
                        reader: name,
                        present,
                        reported: false,
                        token: None,
                        hold: None,
                        verified_here: false,
                        login: None,
                        puk: None,
                    });
                }
            }
        }
        let gone: Vec<_> = self
            .slots
            .iter()
            .filter(|s| !s.present && s.token.is_some())
            .map(|s| s.id)
            .collect();
        for id in gone {
            self.drop_token(id);
        }
        Ok(())
    }

    fn drop_token(&mut self, slot_id: sys::CK_SLOT_ID) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.id == slot_id) {
            // Dropping the connection ends any hold and leaves the card as it is.
            slot.token = None;
            slot.hold = None;
            slot.login = None;
            slot.puk = None;
            slot.verified_here = false;
        }
        self.sessions.retain(|_, s| s.slot != slot_id);
        let sessions = &self.sessions;
        self.session_objects
            .retain(|_, (owner, _)| sessions.contains_key(owner));
    }

    fn slot_mut(&mut self, id: sys::CK_SLOT_ID) -> Result<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or(Error::SlotIdInvalid)
    }

    /// The token in a slot, loading it on first use.
    fn token(&mut self, id: sys::CK_SLOT_ID) -> Result<&mut Token> {
        let needs_load = {
            let slot = self.slot_mut(id)?;
            if !slot.present {
                return Err(Error::TokenNotPresent);
            }
            slot.token.is_none()
        };
        if !needs_load {
            // A connection given up after a long wait for the card sends nothing more:
            // connect again, keeping the objects and this application's login (the card
            // keeps its PIN state across connections; a resync catches it otherwise).
            let usable = self
                .slot_mut(id)?
                .token
                .as_mut()
                .is_some_and(|t| t.card.transport().usable());
            if !usable {
                self.reconnect(id)?;
            }
        }
        if needs_load {
            let reader = self.slot_mut(id)?.reader.clone();
            let mut attempt = 0;
            let token = loop {
                let transport = self.backend.connect(&reader)?;
                match Token::load(Card::new(transport), &mut self.next_object) {
                    // Reset by another program while we read it, or a hold that lapsed
                    // on a slow card: read it again.
                    Err(Error::CardReset | Error::HoldLapsed) if attempt == 0 => attempt += 1,
                    other => break other?,
                }
            };
            self.slot_mut(id)?.token = Some(token);
        }
        self.slot_mut(id)?
            .token
            .as_mut()
            .ok_or(Error::TokenNotPresent)
    }

    /// Replaces a connection that was given up (another program held the card too long).
    /// The card may have been swapped, or reset, meanwhile: it is read again, and only if
    /// it is the same card (GUID and certificates) do the objects, sessions and login stay;
    /// the login only if the card still says the PIN is verified. Another card is a removal.
    fn reconnect(&mut self, id: sys::CK_SLOT_ID) -> Result<()> {
        let reader = self.slot_mut(id)?.reader.clone();
        let transport = self.backend.connect(&reader)?;
        let mut scratch = self.next_object;
        let fresh = Token::load(Card::new(transport), &mut scratch);
        self.release_hold(id, None);
        let fresh = match fresh {
            Ok(t) => t,
            Err(e) => {
                self.drop_token(id);
                return Err(e);
            }
        };
        let same = self
            .slot_mut(id)?
            .token
            .as_ref()
            .is_some_and(|old| old.same_card(&fresh));
        if !same {
            self.drop_token(id);
            return Err(Error::DeviceRemoved);
        }
        if let Some(token) = self.slot_mut(id)?.token.as_mut() {
            token.card = fresh.card;
        }
        let verified = self.on_card(id, Token::pin_verified).unwrap_or(false);
        let slot = self.slot_mut(id)?;
        if !verified && slot.login == Some(sys::CKU_USER) {
            slot.login = None;
        }
        for s in self.sessions.values_mut().filter(|s| s.slot == id) {
            if let Some(Operation::Sign { context_login, .. }) = &mut s.op {
                *context_login = false;
            }
        }
        Ok(())
    }

    /// Runs a card operation on a slot's token, holding the card exclusively for it. A
    /// removed card drops the token and its sessions and reports `CKR_DEVICE_REMOVED`. A
    /// card another program reset is selected again and the operation retried once, with
    /// the login the reset cleared dropped (the sessions stay).
    fn on_card<T>(
        &mut self,
        id: sys::CK_SLOT_ID,
        f: impl FnMut(&mut Token) -> Result<T>,
    ) -> Result<T> {
        self.on_card_keep(id, false, f)
    }

    /// [`Self::on_card`]; with `keep`, a successful operation leaves the card held for the
    /// one that follows (see [`Token::exclusive`]).
    fn on_card_keep<T>(
        &mut self,
        id: sys::CK_SLOT_ID,
        keep: bool,
        mut f: impl FnMut(&mut Token) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            let r = self.token(id).and_then(|t| t.exclusive(keep, &mut f));
            match r {
                Err(Error::DeviceRemoved) => {
                    self.drop_token(id);
                    return r;
                }
                Err(Error::CardReset) if attempt == 0 => {
                    attempt += 1;
                    self.after_reset(id);
                }
                // The kept hold lapsed: end it (the transport refuses everything until
                // then), which also ends the holder's context login, and try again.
                Err(Error::HoldLapsed) if attempt == 0 => {
                    attempt += 1;
                    self.release_hold(id, None);
                }
                other => return other,
            }
        }
    }

    /// Another program reset the card: the PIN it verified for us is gone, and so is any
    /// hold (the transport has reconnected, leaving the card as it is).
    fn after_reset(&mut self, id: sys::CK_SLOT_ID) {
        if let Ok(slot) = self.slot_mut(id) {
            if slot.login == Some(sys::CKU_USER) {
                slot.login = None;
            }
            slot.hold = None;
            slot.verified_here = false;
        }
        for s in self.sessions.values_mut().filter(|s| s.slot == id) {
            if let Some(Operation::Sign { context_login, .. }) = &mut s.op {
                *context_login = false;
            }
        }
    }

    /// Ends the card hold of a context-specific login, if `session` has it (or, with `None`,
    /// whichever session has it).
    fn release_hold(&mut self, id: sys::CK_SLOT_ID, session: Option<sys::CK_SESSION_HANDLE>) {
        let Ok(slot) = self.slot_mut(id) else { return };
        let held_by = slot.hold;
        if held_by.is_none() || (session.is_some() && held_by != session) {
            return;
        }
        slot.hold = None;
        if let Some(token) = slot.token.as_mut() {
            token.release();
        }
        // The holder's context login ends with the hold: the worker ended the freshness
        // before letting go, and another session's context login must not be taken for it.
        if let Some(holder) = held_by.and_then(|h| self.sessions.get_mut(&h)) {
            if let Some(Operation::Sign { context_login, .. }) = &mut holder.op {
                *context_login = false;
            }
        }
    }

    /// The card refused an operation for want of a PIN (6982): if it says its PIN is not
    /// verified, another program logged it out (or a wrong PIN cleared it), and this
    /// application's login is over too.
    fn resync_login(&mut self, id: sys::CK_SLOT_ID) {
        let verified = self.on_card(id, Token::pin_verified).unwrap_or(false);
        if !verified {
            if let Ok(slot) = self.slot_mut(id) {
                slot.verified_here = false;
                if slot.login == Some(sys::CKU_USER) {
                    slot.login = None;
                }
            }
        }
    }

    /// C_GetSlotList.
    pub fn slot_list(&mut self, token_present: bool) -> Result<Vec<sys::CK_SLOT_ID>> {
        self.refresh()?;
        Ok(self
            .slots
            .iter()
            .filter(|s| !token_present || s.present)
            .map(|s| s.id)
            .collect())
    }

    /// C_GetSlotInfo.
    pub fn slot_info(&mut self, id: sys::CK_SLOT_ID) -> Result<SlotInfo> {
        self.refresh()?;
        let slot = self.slot_mut(id)?;
        Ok(SlotInfo {
            description: slot.reader.clone(),
            token_present: slot.present,
        })
    }

    /// C_GetTokenInfo. Over a contactless reader the card answers no PIN commands: no
    /// counter flags then, and the token is write-protected (no PIN can be changed).
    pub fn token_info(&mut self, id: sys::CK_SLOT_ID) -> Result<TokenInfo> {
        let pin = self.on_card(id, Token::pin_state)?;
        let (sessions, rw_sessions) = self.session_counts(id);
        let token = self.token(id)?;
        let mut flags = sys::CKF_USER_PIN_INITIALIZED | sys::CKF_TOKEN_INITIALIZED;
        // Over contactless nothing can need a login, since no PIN can be given: the 9E key
        // signs without one, and applications must not ask the user for a PIN. Nor does the
        // card give challenges there (its random source, 9B, is contact-only).
        flags |= if token.contactless {
            sys::CKF_WRITE_PROTECTED
        } else {
            sys::CKF_LOGIN_REQUIRED | sys::CKF_RNG
        };
        flags |= match pin {
            PinState::Ok | PinState::Verified | PinState::Unknown => 0,
            PinState::CountLow => sys::CKF_USER_PIN_COUNT_LOW,
            PinState::FinalTry => sys::CKF_USER_PIN_COUNT_LOW | sys::CKF_USER_PIN_FINAL_TRY,
            PinState::Locked => sys::CKF_USER_PIN_LOCKED,
        };
        Ok(TokenInfo {
            label: token.label.clone(),
            serial: token.serial.clone(),
            flags,
            sessions,
            rw_sessions,
        })
    }

    fn session_counts(&self, id: sys::CK_SLOT_ID) -> (u64, u64) {
        let on: Vec<_> = self.sessions.values().filter(|s| s.slot == id).collect();
        let rw = on
            .iter()
            .filter(|s| s.flags & sys::CKF_RW_SESSION != 0)
            .count();
        (on.len() as u64, rw as u64)
    }

    /// C_GetMechanismList.
    pub fn mechanisms(&mut self, id: sys::CK_SLOT_ID) -> Result<Vec<sys::CK_MECHANISM_TYPE>> {
        self.slot_mut(id)?;
        Ok(MECHANISMS.iter().map(|m| m.0).collect())
    }

    /// C_GetMechanismInfo: (min key size, max key size, flags).
    pub fn mechanism_info(
        &mut self,
        id: sys::CK_SLOT_ID,
        mech: sys::CK_MECHANISM_TYPE,
    ) -> Result<(u64, u64, sys::CK_FLAGS)> {
        self.slot_mut(id)?;
        MECHANISMS
            .iter()
            .find(|m| m.0 == mech)
            .map(|m| (m.1, m.2, m.3))
            .ok_or(Error::MechanismInvalid)
    }

    /// C_OpenSession.
    pub fn open_session(
        &mut self,
        id: sys::CK_SLOT_ID,
        flags: sys::CK_FLAGS,
    ) -> Result<sys::CK_SESSION_HANDLE> {
        if flags & sys::CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        self.refresh()?;
        // PKCS#11 §5.6: no read-write session on a write-protected token (a card reached
        // contactless, where no PIN or PUK can be changed).
        if self.token(id)?.contactless && flags & sys::CKF_RW_SESSION != 0 {
            return Err(Error::TokenWriteProtected);
        }
        self.next_session += 1;
        let handle = self.next_session;
        self.sessions.insert(
            handle,
            Session {
                slot: id,
                flags,
                find: None,
                op: None,
            },
        );
        Ok(handle)
    }

    /// C_CloseSession. Closing the last session of a token ends this application's login
    /// (PKCS#11 §5.6), not the card's: other programs using the card stay logged in.
    pub fn close_session(&mut self, h: sys::CK_SESSION_HANDLE) -> Result<()> {
        let s = self
            .sessions
            .remove(&h)
            .ok_or(Error::SessionHandleInvalid)?;
        self.session_objects.retain(|_, (owner, _)| *owner != h);
        self.release_hold(s.slot, Some(h));
        if !self.sessions.values().any(|o| o.slot == s.slot) {
            self.forget_login(s.slot);
        }
        Ok(())
    }

    /// C_CloseAllSessions.
    pub fn close_all_sessions(&mut self, id: sys::CK_SLOT_ID) -> Result<()> {
        self.slot_mut(id)?;
        self.sessions.retain(|_, s| s.slot != id);
        let sessions = &self.sessions;
        self.session_objects
            .retain(|_, (owner, _)| sessions.contains_key(owner));
        self.release_hold(id, None);
        self.forget_login(id);
        Ok(())
    }

    /// Ends this application's login on a token (and forgets the PUK).
    fn forget_login(&mut self, id: sys::CK_SLOT_ID) -> Option<sys::CK_USER_TYPE> {
        self.slot_mut(id).ok().and_then(|s| {
            s.puk = None;
            s.login.take()
        })
    }

    fn session(&mut self, h: sys::CK_SESSION_HANDLE) -> Result<&mut Session> {
        self.sessions.get_mut(&h).ok_or(Error::SessionHandleInvalid)
    }

    /// C_GetSessionInfo: (slot, state, flags).
    pub fn session_info(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
    ) -> Result<(sys::CK_SLOT_ID, sys::CK_STATE, sys::CK_FLAGS)> {
        let (slot, flags) = {
            let s = self.session(h)?;
            (s.slot, s.flags)
        };
        let login = self.slot_mut(slot)?.login;
        let rw = flags & sys::CKF_RW_SESSION != 0;
        let state = match (login, rw) {
            (Some(sys::CKU_SO), _) => sys::CKS_RW_SO_FUNCTIONS,
            (Some(_), true) => sys::CKS_RW_USER_FUNCTIONS,
            (Some(_), false) => sys::CKS_RO_USER_FUNCTIONS,
            (None, true) => sys::CKS_RW_PUBLIC_SESSION,
            (None, false) => sys::CKS_RO_PUBLIC_SESSION,
        };
        Ok((slot, state, flags))
    }

    /// C_Login.
    pub fn login(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        user: sys::CK_USER_TYPE,
        pin: &[u8],
    ) -> Result<()> {
        let slot = self.session(h)?.slot;
        match user {
            sys::CKU_USER => {
                match self.slot_mut(slot)?.login {
                    // Our record says logged in; the card may have been logged out by
                    // another program (or a wrong PIN) since. Then log in again.
                    Some(sys::CKU_USER) => {
                        if self.on_card(slot, Token::pin_verified)? {
                            return Err(Error::UserAlreadyLoggedIn);
                        }
                        self.slot_mut(slot)?.login = None;
                    }
                    Some(_) => return Err(Error::UserAnotherAlreadyLoggedIn),
                    None => {}
                }
                // Noted before the VERIFY: if its answer is lost (the connection given up
                // while it ran), the card may hold this process's PIN all the same.
                self.slot_mut(slot)?.verified_here = true;
                self.on_card(slot, |t| t.verify(pin))?;
                self.slot_mut(slot)?.login = Some(sys::CKU_USER);
                Ok(())
            }
            sys::CKU_CONTEXT_SPECIFIC => {
                let s = self.session(h)?;
                match &mut s.op {
                    Some(Operation::Sign { context_login, .. }) => {
                        *context_login = false;
                    }
                    Some(Operation::Decrypt { .. }) => {}
                    None => return Err(Error::OperationNotInitialized),
                }
                // The PIN check and the operation it authorises are one exclusive hold of
                // the card: nobody else's command can fall between them and use the PIN-
                // always freshness (SP 800-73-4 Part 1 §3.2).
                self.release_hold(slot, None);
                self.slot_mut(slot)?.verified_here = true;
                self.on_card_keep(slot, true, |t| t.verify(pin))?;
                self.slot_mut(slot)?.hold = Some(h);
                if let Some(Operation::Sign { context_login, .. }) = &mut self.session(h)?.op {
                    *context_login = true;
                }
                Ok(())
            }
            // The PUK plays the security officer: it can only set a new PIN (C_InitPIN)
            // or be changed (C_SetPIN), and needs a read-write session (PKCS#11 §5.6).
            sys::CKU_SO => {
                if self.session(h)?.flags & sys::CKF_RW_SESSION == 0 {
                    return Err(Error::SessionReadOnlyExists);
                }
                match self.slot_mut(slot)?.login {
                    Some(sys::CKU_SO) => return Err(Error::UserAlreadyLoggedIn),
                    Some(_) => return Err(Error::UserAnotherAlreadyLoggedIn),
                    None => {}
                }
                if pin.len() < 6 || pin.len() > 8 {
                    return Err(Error::PinLenRange);
                }
                let slot = self.slot_mut(slot)?;
                slot.puk = Some(Zeroizing::new(pin.to_vec()));
                slot.login = Some(sys::CKU_SO);
                Ok(())
            }
            _ => Err(Error::UserTypeInvalid),
        }
    }

    /// C_InitPIN: in an SO session, RESET RETRY COUNTER with the PUK sets a new PIN and
    /// unblocks it (SP 800-73-4 Part 2 §3.2.3).
    pub fn init_pin(&mut self, h: sys::CK_SESSION_HANDLE, new_pin: &[u8]) -> Result<()> {
        let slot = self.session(h)?.slot;
        let s = self.slot_mut(slot)?;
        let puk = match (&s.login, &s.puk) {
            (Some(sys::CKU_SO), Some(puk)) => puk.clone(),
            _ => return Err(Error::UserNotLoggedIn),
        };
        if !(6..=8).contains(&new_pin.len()) {
            return Err(Error::PinLenRange);
        }
        self.on_card(slot, |t| t.unblock(&puk, new_pin))
    }

    /// C_SetPIN: the PIN (public or user session) or, in an SO session, the PUK, with
    /// CHANGE REFERENCE DATA (SP 800-73-4 Part 2 §3.2.2).
    pub fn set_pin(&mut self, h: sys::CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        let s = self.session(h)?;
        if s.flags & sys::CKF_RW_SESSION == 0 {
            return Err(Error::SessionReadOnly);
        }
        let slot = s.slot;
        let which = if self.slot_mut(slot)?.login == Some(sys::CKU_SO) {
            KeyRef::PUK
        } else {
            KeyRef::PIN
        };
        for p in [old, new] {
            if !(6..=8).contains(&p.len()) {
                return Err(Error::PinLenRange);
            }
        }
        self.on_card(slot, |t| t.change_reference(which, old, new))?;
        if which == KeyRef::PUK {
            self.slot_mut(slot)?.puk = Some(Zeroizing::new(new.to_vec()));
        }
        Ok(())
    }

    /// C_Logout: the application asks for it, so the card's PIN status is reset too
    /// (SP 800-73-4 Part 2 §3.2.1, VERIFY with P1 = FF).
    pub fn logout(&mut self, h: sys::CK_SESSION_HANDLE) -> Result<()> {
        let slot = self.session(h)?.slot;
        if self.slot_mut(slot)?.login.is_none() {
            return Err(Error::UserNotLoggedIn);
        }
        self.release_hold(slot, None);
        if self.forget_login(slot) == Some(sys::CKU_USER) {
            // Best effort: the card may already be gone.
            if self.on_card(slot, Token::logout).is_ok() {
                self.slot_mut(slot)?.verified_here = false;
            }
        }
        Ok(())
    }

    /// Whether the user is logged in: private objects are the user's only (PKCS#11 §4.4);
    /// the security officer (the unchecked PUK) does not see them.
    fn logged_in(&mut self, slot: sys::CK_SLOT_ID) -> bool {
        self.slot_mut(slot)
            .map(|s| s.login == Some(sys::CKU_USER))
            .unwrap_or(false)
    }

    /// C_FindObjectsInit.
    pub fn find_init(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        template: &[(sys::CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<()> {
        let slot = self.session(h)?.slot;
        if self.session(h)?.find.is_some() {
            return Err(Error::OperationActive);
        }
        let logged_in = self.logged_in(slot);
        let on_slot = self.session_handles(slot);
        let mut found: Vec<_> = self
            .session_objects
            .iter()
            .filter(|(_, (owner, o))| {
                on_slot.contains(owner) && (logged_in || !o.private) && o.matches(template)
            })
            .map(|(h, _)| *h)
            .collect();
        let token = self.token(slot)?;
        found.extend(
            token
                .objects
                .iter()
                .filter(|(_, o)| (logged_in || !o.private) && o.matches(template))
                .map(|(h, _)| *h),
        );
        self.session(h)?.find = Some(found);
        Ok(())
    }

    /// C_FindObjects.
    pub fn find(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        max: usize,
    ) -> Result<Vec<sys::CK_OBJECT_HANDLE>> {
        let s = self.session(h)?;
        let list = s.find.as_mut().ok_or(Error::OperationNotInitialized)?;
        let n = max.min(list.len());
        Ok(list.drain(..n).collect())
    }

    /// C_FindObjectsFinal.
    pub fn find_final(&mut self, h: sys::CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        s.find.take().ok_or(Error::OperationNotInitialized)?;
        Ok(())
    }

    fn session_handles(&self, slot: sys::CK_SLOT_ID) -> Vec<sys::CK_SESSION_HANDLE> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.slot == slot)
            .map(|(h, _)| *h)
            .collect()
    }

    fn object(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        obj: sys::CK_OBJECT_HANDLE,
    ) -> Result<crate::object::Object> {
        let slot = self.session(h)?.slot;
        let logged_in = self.logged_in(slot);
        if let Some((owner, o)) = self.session_objects.get(&obj) {
            let same_slot = self.sessions.get(owner).is_some_and(|s| s.slot == slot);
            return match (same_slot, logged_in || !o.private) {
                (true, true) => Ok(o.clone()),
                _ => Err(Error::ObjectHandleInvalid),
            };
        }
        let token = self.token(slot)?;
        match token.object(obj) {
            Some(o) if logged_in || !o.private => Ok(o.clone()),
            _ => Err(Error::ObjectHandleInvalid),
        }
    }

    /// C_GetAttributeValue, one attribute at a time.
    pub fn attributes(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        obj: sys::CK_OBJECT_HANDLE,
        types: &[sys::CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<AttrResult>> {
        let o = self.object(h, obj)?;
        Ok(types
            .iter()
            .map(|t| match o.attr(*t) {
                Some(Attr::Value(v)) => AttrResult::Value(v.clone()),
                Some(Attr::Sensitive) => AttrResult::Sensitive,
                None => AttrResult::Invalid,
            })
            .collect())
    }

    /// C_SignInit.
    pub fn sign_init(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        scheme: SignScheme,
        key: sys::CK_OBJECT_HANDLE,
    ) -> Result<()> {
        if self.session(h)?.op.is_some() {
            return Err(Error::OperationActive);
        }
        let o = self.object(h, key)?;
        if o.class != sys::CKO_PRIVATE_KEY {
            return Err(Error::KeyTypeInconsistent);
        }
        if !o.usage.sign {
            return Err(Error::KeyFunctionNotPermitted);
        }
        if scheme.is_ecdsa() != matches!(o.kind, KeyKind::Ec { .. }) {
            return Err(Error::KeyTypeInconsistent);
        }
        if let (
            SignScheme::RsaPss {
                params_hash,
                salt_len,
                ..
            },
            KeyKind::Rsa { modulus_len, .. },
        ) = (&scheme, &o.kind)
        {
            // RFC 8017 §9.1.1 step 3: emLen ≥ hLen + sLen + 2 (emLen is the modulus size for
            // the byte-aligned moduli PIV uses).
            let needed = params_hash
                .output_len()
                .checked_add(*salt_len)
                .and_then(|n| n.checked_add(2));
            if needed.is_none_or(|n| n > *modulus_len) {
                return Err(Error::MechanismParamInvalid);
            }
        }
        self.session(h)?.op = Some(Operation::Sign {
            key,
            scheme,
            data: Vec::new(),
            context_login: false,
        });
        Ok(())
    }

    /// The length of the signature the current operation will produce.
    pub fn signature_len(&mut self, h: sys::CK_SESSION_HANDLE) -> Result<usize> {
        let key = match &self.session(h)?.op {
            Some(Operation::Sign { key, .. }) => *key,
            _ => return Err(Error::OperationNotInitialized),
        };
        match self.object(h, key)?.kind {
            KeyKind::Ec { field_len, .. } => Ok(2 * field_len),
            KeyKind::Rsa { modulus_len, .. } => Ok(modulus_len),
            KeyKind::Secret => Err(Error::KeyTypeInconsistent),
        }
    }

    /// C_SignUpdate. Mechanisms that hash take any amount of data; the others (raw ECDSA,
    /// RSA PKCS#1) are buffered, and their size is checked when the signature is made, as
    /// OpenSC's module does.
    pub fn sign_update(&mut self, h: sys::CK_SESSION_HANDLE, part: &[u8]) -> Result<()> {
        /// More than any digest or DigestInfo a raw mechanism can sign.
        const RAW_LIMIT: usize = 512;
        let slot = self.session(h)?.slot;
        let op = &mut self.session(h)?.op;
        match op {
            Some(Operation::Sign { scheme, data, .. }) => {
                if !scheme.hashes() && data.len() + part.len() > RAW_LIMIT {
                    *op = None;
                    // The operation is over: so is the card hold of its context login.
                    self.release_hold(slot, Some(h));
                    return Err(Error::DataLenRange);
                }
                data.extend_from_slice(part);
                Ok(())
            }
            _ => Err(Error::OperationNotInitialized),
        }
    }

    /// C_Sign (with `data`) or C_SignFinal (`None`: the data came through C_SignUpdate).
    /// Ends the operation whatever happens, except a caller's buffer query, and with it the
    /// card hold of a context-specific login.
    pub fn sign(&mut self, h: sys::CK_SESSION_HANDLE, data: Option<&[u8]>) -> Result<Vec<u8>> {
        let slot = self.session(h)?.slot;
        let Some(Operation::Sign {
            key,
            scheme,
            data: buffered,
            context_login,
        }) = self.session(h)?.op.take()
        else {
            return Err(Error::OperationNotInitialized);
        };
        let r = self.sign_on_card(h, slot, key, &scheme, buffered, context_login, data);
        self.release_hold(slot, Some(h));
        if matches!(r, Err(Error::UserNotLoggedIn)) {
            self.resync_login(slot);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_on_card(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        slot: sys::CK_SLOT_ID,
        key: sys::CK_OBJECT_HANDLE,
        scheme: &SignScheme,
        buffered: Vec<u8>,
        context_login: bool,
        data: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let o = self.object(h, key)?;
        if o.always_authenticate && !context_login {
            return Err(Error::UserNotLoggedIn);
        }
        let message = match data {
            Some(d) => d.to_vec(),
            None => buffered,
        };
        let (alg, input, field_len) = match o.kind {
            KeyKind::Ec { alg, field_len } => (alg, scheme.card_input(&message, 0)?, field_len),
            KeyKind::Rsa { alg, modulus_len } => {
                (alg, scheme.card_input(&message, modulus_len)?, 0)
            }
            KeyKind::Secret => return Err(Error::KeyTypeInconsistent),
        };
        let key_ref = o.key_ref;
        let out = self.on_card(slot, |t| card_sign(t, key_ref, alg, &input))?;
        if field_len > 0 {
            mechanism::ecdsa_der_to_raw(&out, field_len)
        } else {
            Ok(out)
        }
    }

    /// C_DeriveKey with CKM_ECDH1_DERIVE (CKD_NULL): ECDH on the card with the key's slot
    /// (SP 800-73-4 Part 2 §3.2.4, tag `85`), the result a session secret-key object.
    pub fn derive(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        key: sys::CK_OBJECT_HANDLE,
        peer: &[u8],
        template: &[(sys::CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<sys::CK_OBJECT_HANDLE> {
        let slot = self.session(h)?.slot;
        let o = self.object(h, key)?;
        let KeyKind::Ec { alg, field_len } = o.kind else {
            return Err(Error::KeyTypeInconsistent);
        };
        if o.class != sys::CKO_PRIVATE_KEY {
            return Err(Error::KeyTypeInconsistent);
        }
        if !o.usage.derive {
            return Err(Error::KeyFunctionNotPermitted);
        }
        // The peer's point raw (04 || x || y), or wrapped in a DER OCTET STRING as some
        // applications send it (PKCS#11 §2.3.9 leaves both in use).
        let point_len = 1 + 2 * field_len;
        let point = match peer {
            [0x04, ..] if peer.len() == point_len => peer,
            [0x04, len, rest @ ..] if usize::from(*len) == point_len && rest.len() == point_len => {
                rest
            }
            _ => return Err(Error::MechanismParamInvalid),
        };
        let key_ref = o.key_ref;
        let point = point.to_vec();
        let derived = self.on_card(slot, |t| {
            t.card.ecdh(key_ref, alg, &point).map_err(|e| match e {
                tessera_piv::host::Error::Card(
                    tessera_piv::apdu::StatusWord::SECURITY_STATUS_NOT_SATISFIED,
                ) => Error::UserNotLoggedIn,
                tessera_piv::host::Error::Card(_) => Error::MechanismParamInvalid,
                other => other.into(),
            })
        });
        if matches!(derived, Err(Error::UserNotLoggedIn)) {
            self.resync_login(slot);
        }
        let secret = Zeroizing::new(derived?);
        let object = crate::object::Object::derived_secret(&secret, template)?;
        self.next_object += 1;
        let handle = self.next_object;
        self.session_objects.insert(handle, (h, object));
        Ok(handle)
    }

    /// C_DestroyObject: session objects only; the token is read-only.
    pub fn destroy(&mut self, h: sys::CK_SESSION_HANDLE, obj: sys::CK_OBJECT_HANDLE) -> Result<()> {
        self.object(h, obj)?;
        match self.session_objects.remove(&obj) {
            Some(_) => Ok(()),
            None => Err(Error::ActionProhibited),
        }
    }

    /// C_DecryptInit (CKM_RSA_PKCS with an RSA key-management key).
    pub fn decrypt_init(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        mech: sys::CK_MECHANISM_TYPE,
        key: sys::CK_OBJECT_HANDLE,
    ) -> Result<()> {
        if self.session(h)?.op.is_some() {
            return Err(Error::OperationActive);
        }
        if mech != sys::CKM_RSA_PKCS {
            return Err(Error::MechanismInvalid);
        }
        let o = self.object(h, key)?;
        if o.class != sys::CKO_PRIVATE_KEY || !matches!(o.kind, KeyKind::Rsa { .. }) {
            return Err(Error::KeyTypeInconsistent);
        }
        if !o.usage.decrypt {
            return Err(Error::KeyFunctionNotPermitted);
        }
        self.session(h)?.op = Some(Operation::Decrypt { key, plain: None });
        Ok(())
    }

    /// C_Decrypt. `capacity` is the caller's buffer size (`None`: a length query). The
    /// operation stays active, with the plaintext kept, until a buffer large enough takes
    /// it (PKCS#11 §5.2).
    pub fn decrypt(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        ciphertext: &[u8],
        capacity: Option<usize>,
    ) -> Result<DecryptStep> {
        let slot = self.session(h)?.slot;
        let (key, plain) = match &self.session(h)?.op {
            Some(Operation::Decrypt { key, plain }) => (*key, plain.clone()),
            _ => return Err(Error::OperationNotInitialized),
        };
        let plain = match plain {
            Some(p) => p,
            None => {
                let computed = self.decrypt_on_card(h, slot, key, ciphertext);
                self.release_hold(slot, Some(h));
                let computed = match computed {
                    Ok(p) => p,
                    Err(e) => {
                        if e == Error::UserNotLoggedIn {
                            self.resync_login(slot);
                        }
                        self.session(h)?.op = None;
                        return Err(e);
                    }
                };
                if let Some(Operation::Decrypt { plain, .. }) = &mut self.session(h)?.op {
                    *plain = Some(computed.clone());
                }
                computed
            }
        };
        match capacity {
            Some(n) if n >= plain.len() => {
                self.session(h)?.op = None;
                Ok(DecryptStep::Done(plain))
            }
            _ => Ok(DecryptStep::Needs(plain.len())),
        }
    }

    fn decrypt_on_card(
        &mut self,
        h: sys::CK_SESSION_HANDLE,
        slot: sys::CK_SLOT_ID,
        key: sys::CK_OBJECT_HANDLE,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let o = self.object(h, key)?;
        let KeyKind::Rsa { alg, modulus_len } = o.kind else {
            return Err(Error::KeyTypeInconsistent);
        };
        if ciphertext.len() != modulus_len {
            return Err(Error::EncryptedDataInvalid);
        }
        let key_ref = o.key_ref;
        let em = Zeroizing::new(self.on_card(slot, |t| card_sign(t, key_ref, alg, ciphertext))?);
        mechanism::pkcs1_type2_unpad(&em).map(Zeroizing::new)
    }

    /// C_GenerateRandom: the card's 9B challenges (as OpenSC does), so the randomness is
    /// the card's.
    pub fn random(&mut self, h: sys::CK_SESSION_HANDLE, len: usize) -> Result<Vec<u8>> {
        // Each card challenge gives 8–16 bytes while the module lock is held: keep one call
        // bounded.
        const MAX_RANDOM: usize = 4096;
        if len > MAX_RANDOM {
            return Err(Error::ArgumentsBad("at most 4096 random bytes per call"));
        }
        let slot = self.session(h)?.slot;
        self.on_card(slot, |t| {
            let mut out = Vec::with_capacity(len);
            let cmd = tessera_piv::apdu::Command::new(0, 0x87, 0x00, 0x9B)
                .with_data(vec![0x7C, 0x02, 0x81, 0x00])
                .with_le(256);
            while out.len() < len {
                let answer = t.card.call(&cmd).map_err(|_| Error::RandomNoRng)?;
                let challenge = tessera_piv::tlv::find(&answer, 0x7C)
                    .ok()
                    .flatten()
                    .and_then(|c| tessera_piv::tlv::find(c, 0x81).ok().flatten())
                    .ok_or(Error::RandomNoRng)?;
                if challenge.is_empty() {
                    return Err(Error::RandomNoRng);
                }
                out.extend_from_slice(challenge);
            }
            out.truncate(len);
            Ok(out)
        })
    }
}

/// GENERAL AUTHENTICATE with the key, mapping the card's refusals.
fn card_sign(
    t: &mut Token,
    key_ref: KeyRef,
    alg: tessera_piv::piv::Algorithm,
    input: &[u8],
) -> Result<Vec<u8>> {
    use tessera_piv::apdu::StatusWord as Sw;
    use tessera_piv::host::Error as H;
    t.card.sign(key_ref, alg, input).map_err(|e| match e {
        H::Card(Sw::SECURITY_STATUS_NOT_SATISFIED) => Error::UserNotLoggedIn,
        H::Card(Sw::INCORRECT_DATA) => Error::DataLenRange,
        other => other.into(),
    })
}
