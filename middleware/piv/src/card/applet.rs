//! The PIV card application (SP 800-73-4 Part 2 §3) with the Yubico extensions, as a state
//! machine: `process` takes a command APDU and returns the response APDU. It never panics
//! on any input; every malformed command gets a status word and leaves the card usable.

use std::str::FromStr;

use der::Decode;
use rand::RngCore;
use sha2::Digest;
use subtle::ConstantTimeEq;
use x509_cert::name::Name;
use zeroize::Zeroizing;

use super::cert::{self, CertTemplate};
use super::keystore::{Checked, KeyError, KeyStore, Origin, Persist, Reference};
use super::state::{
    pad8, CardState, RetryCounted, DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, DEFAULT_PUK,
    DEFAULT_RETRIES,
};
use crate::apdu::{Command, Response, StatusWord as Sw};
use crate::mgmt;
use crate::piv::{ins, object, Algorithm, KeyRef, PinPolicy, AID, AID_PREFIX, PIX};
use crate::tlv;

/// Which interface the card is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Contact,
    /// ISO 14443: only what SP 800-73-4 Part 1 §3.5 allows without a virtual contact
    /// interface (the card-authentication key and the free-read objects).
    Contactless,
}

/// Largest data object the card accepts (a certificate with room to spare).
const MAX_OBJECT: usize = 4096;
/// Total room for data objects.
const MAX_OBJECT_STORAGE: usize = 64 * 1024;
/// Largest chained command the card buffers.
const MAX_CHAIN: usize = 8 * 1024;

/// A pending step of the 9B management-key protocol (SP 800-73-4 Part 2 Appendix A.1/A.2).
#[derive(Debug)]
enum MgmtChallenge {
    /// We sent an encrypted witness; the host must return it decrypted.
    Witness(Zeroizing<Vec<u8>>),
    /// We sent a plain challenge; the host must return it encrypted.
    Challenge(Zeroizing<Vec<u8>>),
}

/// Security status and buffers that last until the card is reset (or the application is
/// deselected).
#[derive(Debug, Default)]
struct Session {
    pin_verified: bool,
    /// The previous command was a successful VERIFY: the next one may use a PIN-always key.
    pin_fresh: bool,
    /// `pin_fresh` as it stood when the current command arrived (SP 800-73-4 Part 1 §3.2:
    /// the PIN must be verified immediately before each use of the signature key).
    pin_fresh_now: bool,
    management_authenticated: bool,
    mgmt: Option<MgmtChallenge>,
    /// Command chaining: header of the chain and data so far.
    chain: Option<([u8; 3], Vec<u8>)>,
    /// Response bytes not yet fetched with GET RESPONSE.
    pending: Vec<u8>,
}

/// The PIV card application over a key store.
#[derive(Debug)]
pub struct Applet<K> {
    state: CardState,
    /// The state as the carrier last made it durable: a failed write rolls `state` back to
    /// it, so that memory never claims what the carrier's storage does not hold.
    saved: CardState,
    keys: K,
    interface: Interface,
    session: Session,
    selected: bool,
    /// The current command changed the state; it is persisted before the answer.
    dirty: bool,
}

type Result<T> = std::result::Result<T, Sw>;

impl<K: KeyStore> Applet<K> {
    /// An applet over saved state; the PIV application is selected by default.
    pub fn new(state: CardState, keys: K, interface: Interface) -> Self {
        let mut applet = Self {
            saved: state.clone(),
            state,
            keys,
            interface,
            session: Session::default(),
            selected: true,
            dirty: false,
        };
        applet.mirror_references();
        applet.saved.clone_from(&applet.state);
        applet
    }

    /// When the key store holds the PIN and PUK ([`super::References`]), the state keeps
    /// no value of them and mirrors the holder's counters: a state file restored from an
    /// older copy gets no tries back. A holder that cannot be read leaves the mirror as it
    /// was; the next check then fails as the holder does.
    fn mirror_references(&mut self) {
        let Some(holder) = self.keys.references() else {
            return;
        };
        let pin = holder.counter(Reference::Pin);
        let puk = holder.counter(Reference::Puk);
        for (counter, read) in [(&mut self.state.pin, pin), (&mut self.state.puk, puk)] {
            counter.value = Zeroizing::new(Vec::new());
            if let Ok((left, total)) = read {
                counter.left = left;
                counter.total = total;
            }
        }
    }

    /// Ends the PIN's security status, here and in a key store that holds the PIN.
    fn end_pin_session(&mut self) {
        self.session.pin_verified = false;
        self.session.pin_fresh = false;
        if let Some(holder) = self.keys.references() {
            holder.forget_pin();
        }
    }

    pub fn state(&self) -> &CardState {
        &self.state
    }

    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// The state as last made durable and the key store, ending the PIN's security
    /// status (the carrier's own tools, such as a renewal writing new certificates, change
    /// them outside the card's commands).
    pub fn into_parts(mut self) -> (CardState, K) {
        self.end_pin_session();
        (self.saved, self.keys)
    }

    pub fn interface(&self) -> Interface {
        self.interface
    }

    /// Power cycle or warm reset: security status and buffers are cleared.
    pub fn reset(&mut self) {
        self.end_pin_session();
        self.session = Session::default();
        self.selected = true;
    }

    /// Processes one command APDU and returns the response APDU bytes.
    pub fn process(&mut self, raw: &[u8]) -> Vec<u8> {
        let resp = match Command::parse(raw) {
            Ok(cmd) => self.process_command(cmd),
            Err(_) => Response::status(Sw::WRONG_LENGTH),
        };
        resp.to_bytes()
    }

    fn process_command(&mut self, cmd: Command) -> Response {
        // ISO 7816-4 §5.1.3: GET RESPONSE continues the previous answer; anything else
        // discards what was left of it.
        if cmd.ins == ins::GET_RESPONSE && cmd.cla & 0xF0 == 0 {
            return self.get_response(&cmd);
        }
        self.session.pending.clear();
        if cmd.ins != ins::GENERAL_AUTHENTICATE {
            self.session.mgmt = None;
        }
        // Freshness lasts exactly one command (links of a chain are one command); a VERIFY
        // status query leaves it, as it changes nothing.
        if !cmd.is_chained() {
            let status_query = cmd.ins == ins::VERIFY && cmd.data.is_empty() && cmd.p1 == 0;
            let fresh = std::mem::take(&mut self.session.pin_fresh);
            self.session.pin_fresh_now = fresh;
            if status_query {
                self.session.pin_fresh = fresh;
            }
        }
        let short = !cmd.extended;
        let le = cmd.le;
        let result = self.dispatch(cmd);
        // The card saves its state before it answers a command that changed it; a card
        // that cannot write its storage must not answer as if it had.
        if std::mem::take(&mut self.dirty) {
            if let Err(sw) = self.persist(Persist::Change) {
                return Response::status(sw);
            }
        }
        match result {
            Ok(Some(data)) => self.respond(data, short, le),
            Ok(None) => Response::ok(Vec::new()),
            Err(sw) => Response::status(sw),
        }
    }

    /// Has the carrier make the state durable. On failure the state returns to what was
    /// last saved, the PIN is no longer verified, and the command answers `6581`.
    fn persist(&mut self, why: Persist) -> Result<()> {
        match self.keys.persist(&self.state, why) {
            Ok(()) => {
                self.saved.clone_from(&self.state);
                Ok(())
            }
            Err(_) => {
                self.state.clone_from(&self.saved);
                self.keys.rollback();
                self.end_pin_session();
                Err(Sw::MEMORY_FAILURE)
            }
        }
    }

    fn counter(&mut self, which: Reference) -> &mut RetryCounted {
        match which {
            Reference::Pin => &mut self.state.pin,
            Reference::Puk => &mut self.state.puk,
        }
    }

    /// Checks a PIN or PUK (SP 800-73-4 Part 2 §3.2.1): the try is counted and made
    /// durable *before* the comparison, so that cutting the power during it cannot give the
    /// try back; after the constant-time comparison the counter is settled (back to its
    /// total, or left counted) and written again. Every try writes the same way, right or
    /// wrong, so that the carrier's writes do not tell a right guess from a wrong one.
    fn check_reference(&mut self, which: Reference, offered: &[u8]) -> Result<()> {
        if self.counter(which).is_blocked() {
            return Err(Sw::AUTH_METHOD_BLOCKED);
        }
        self.counter(which).left -= 1;
        self.persist(Persist::Try)?;
        let right = match self.keys.references().map(|h| h.check(which, offered)) {
            None => {
                let counter = self.counter(which);
                bool::from(counter.value.as_slice().ct_eq(offered))
            }
            Some(Ok(Checked::Right)) => true,
            Some(Ok(Checked::Wrong { left })) => {
                self.counter(which).left = left;
                false
            }
            // The holder could not count or compare: its counters stay the truth (the
            // mirror is read back from it), and the card answers as for any storage
            // failure.
            Some(Err(_)) => {
                self.end_pin_session();
                self.mirror_references();
                return Err(Sw::MEMORY_FAILURE);
            }
        };
        if right {
            let counter = self.counter(which);
            counter.left = counter.total;
        }
        self.persist(Persist::Settle)?;
        if right {
            Ok(())
        } else {
            Err(Sw::tries_left(self.counter(which).left))
        }
    }

    /// Sends `data`, keeping what does not fit the expected length for GET RESPONSE.
    fn respond(&mut self, mut data: Vec<u8>, short: bool, le: Option<usize>) -> Response {
        let max = if short {
            le.unwrap_or(256).min(256)
        } else {
            le.unwrap_or(65536)
        };
        if data.len() <= max {
            return Response::ok(data);
        }
        let rest = data.split_off(max);
        let sw = Sw::more_data(rest.len());
        self.session.pending = rest;
        Response::new(data, sw)
    }

    fn get_response(&mut self, cmd: &Command) -> Response {
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Response::status(Sw::INCORRECT_P1P2);
        }
        if self.session.pending.is_empty() {
            return Response::status(Sw::CONDITIONS_NOT_SATISFIED);
        }
        let data = std::mem::take(&mut self.session.pending);
        self.respond(data, !cmd.extended, cmd.le)
    }

    fn dispatch(&mut self, cmd: Command) -> Result<Option<Vec<u8>>> {
        // Reader pseudo-APDUs (PC/SC Part 3 §3.2.2.1.3), answered for contactless readers.
        if cmd.cla == 0xFF {
            return self.pseudo_apdu(&cmd).map(Some);
        }
        if cmd.cla & 0x0C != 0 {
            return Err(Sw::SECURE_MESSAGING_NOT_SUPPORTED);
        }
        if cmd.cla & !0x10 != 0 {
            return Err(Sw::CLA_NOT_SUPPORTED);
        }
        let cmd = match self.chain(cmd)? {
            Some(cmd) => cmd,
            None => return Ok(None),
        };
        if cmd.ins == ins::SELECT {
            return self.select(&cmd).map(Some);
        }
        if !self.selected {
            return Err(Sw::INS_NOT_SUPPORTED);
        }
        if self.interface == Interface::Contactless
            && is_known(cmd.ins)
            && !contactless_allowed(cmd.ins)
        {
            return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        match cmd.ins {
            ins::GET_DATA => self.get_data(&cmd).map(Some),
            ins::PUT_DATA => self.put_data(&cmd).map(|()| None),
            ins::VERIFY => self.verify(&cmd).map(|()| None),
            ins::CHANGE_REFERENCE_DATA => self.change_reference(&cmd).map(|()| None),
            ins::RESET_RETRY_COUNTER => self.reset_retry_counter(&cmd).map(|()| None),
            ins::GENERAL_AUTHENTICATE => self.general_authenticate(&cmd),
            ins::GENERATE_ASYMMETRIC_KEY_PAIR => self.generate(&cmd).map(Some),
            ins::YK_GET_VERSION => Ok(Some(self.state.version.to_vec())),
            ins::YK_GET_SERIAL => Ok(Some(self.state.serial.to_be_bytes().to_vec())),
            ins::YK_GET_METADATA => self.metadata(&cmd).map(Some),
            ins::YK_SET_PIN_RETRIES => self.set_pin_retries(&cmd).map(|()| None),
            ins::YK_RESET => self.factory_reset(&cmd).map(|()| None),
            ins::YK_SET_MANAGEMENT_KEY => self.set_management_key(&cmd).map(|()| None),
            ins::YK_ATTEST => self.attest(&cmd).map(Some),
            _ => Err(Sw::INS_NOT_SUPPORTED),
        }
    }

    /// ISO 7816-4 §5.1.1.1 command chaining: links are buffered until the last one.
    fn chain(&mut self, mut cmd: Command) -> Result<Option<Command>> {
        let header = [cmd.ins, cmd.p1, cmd.p2];
        if let Some((h, _)) = &self.session.chain {
            if *h != header {
                self.session.chain = None;
                return Err(Sw::LAST_COMMAND_EXPECTED);
            }
        }
        if cmd.is_chained() {
            let (_, buf) = self
                .session
                .chain
                .get_or_insert_with(|| (header, Vec::new()));
            if buf.len() + cmd.data.len() > MAX_CHAIN {
                self.session.chain = None;
                return Err(Sw::WRONG_LENGTH);
            }
            buf.extend_from_slice(&cmd.data);
            return Ok(None);
        }
        if let Some((_, mut buf)) = self.session.chain.take() {
            buf.extend_from_slice(&cmd.data);
            cmd.data = buf;
        }
        cmd.cla &= !0x10;
        Ok(Some(cmd))
    }

    fn pseudo_apdu(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        if self.interface != Interface::Contactless {
            return Err(Sw::CLA_NOT_SUPPORTED);
        }
        match (cmd.ins, cmd.p1, cmd.p2) {
            // GET DATA: UID. A fixed 7-byte UID derived from the serial; it is public and
            // replayable, so nothing may authenticate on it.
            (0xCA, 0x00, 0x00) => {
                let mut uid = vec![0x04, 0x54, 0x53];
                uid.extend_from_slice(&self.state.serial.to_be_bytes());
                Ok(uid)
            }
            // GET DATA: historical bytes of the ATS.
            (0xCA, 0x01, 0x00) => Ok(HISTORICAL_BYTES.to_vec()),
            (0xCA, _, _) => Err(Sw::INCORRECT_P1P2),
            _ => Err(Sw::INS_NOT_SUPPORTED),
        }
    }

    /// SELECT (SP 800-73-4 Part 2 §3.1.1): the PIV AID, also truncated, answers the
    /// application property template; any other AID deselects PIV.
    fn select(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        if cmd.p1 != 0x04 || cmd.p2 & !0x0C != 0 {
            return Err(Sw::INCORRECT_P1P2);
        }
        let aid = cmd.data.as_slice();
        if aid.len() < AID_PREFIX.len() || aid.len() > AID.len() || !AID.starts_with(aid) {
            // ISO 7816-4 §7.1.1: an unsuccessful SELECT leaves the current selection (and
            // so the PIV security status) as it was.
            return Err(Sw::NOT_FOUND);
        }
        if !self.selected {
            self.end_pin_session();
            self.session = Session::default();
            self.selected = true;
        }
        Ok(application_property_template())
    }

    fn get_data(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(Sw::INCORRECT_P1P2);
        }
        let tag = object_tag(&cmd.data)?;
        if self.interface == Interface::Contactless && !object::contactless_readable(tag) {
            return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if tag == object::DISCOVERY {
            return Ok(discovery_object());
        }
        if object::read_needs_pin(tag) && !self.session.pin_verified {
            return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let content = self.state.object(tag).ok_or(Sw::NOT_FOUND)?;
        Ok(tlv::encode(0x53, content))
    }

    fn put_data(&mut self, cmd: &Command) -> Result<()> {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(Sw::INCORRECT_P1P2);
        }
        self.require_management()?;
        let mut reader = tlv::TlvReader::new(&cmd.data);
        let tag_tlv = reader.read().ok().flatten().ok_or(Sw::INCORRECT_DATA)?;
        if tag_tlv.tag != 0x5C {
            return Err(Sw::INCORRECT_DATA);
        }
        let tag = tag_number(tag_tlv.value)?;
        let content = match reader.read() {
            Ok(Some(t)) if t.tag == 0x53 => t.value,
            _ => return Err(Sw::INCORRECT_DATA),
        };
        if !matches!(reader.read(), Ok(None)) {
            return Err(Sw::INCORRECT_DATA);
        }
        if !object::is_writable(tag) {
            return Err(Sw::INCORRECT_DATA);
        }
        if content.is_empty() {
            self.state.objects.remove(&tag);
        } else {
            if content.len() > MAX_OBJECT {
                return Err(Sw::NOT_ENOUGH_MEMORY);
            }
            let used: usize = self
                .state
                .objects
                .iter()
                .filter(|(t, _)| **t != tag)
                .map(|(_, v)| v.len())
                .sum();
            if used + content.len() > MAX_OBJECT_STORAGE {
                return Err(Sw::NOT_ENOUGH_MEMORY);
            }
            self.state.objects.insert(tag, content.to_vec());
        }
        self.dirty = true;
        Ok(())
    }

    /// VERIFY (SP 800-73-4 Part 2 §3.2.1).
    fn verify(&mut self, cmd: &Command) -> Result<()> {
        if cmd.p2 != KeyRef::PIN.0 {
            return Err(Sw::REFERENCE_NOT_FOUND);
        }
        match cmd.p1 {
            0x00 => {}
            // P1 = FF: reset the security status of the PIN.
            0xFF if cmd.data.is_empty() => {
                self.end_pin_session();
                return Ok(());
            }
            _ => return Err(Sw::INCORRECT_P1P2),
        }
        if cmd.data.is_empty() {
            // The status query: no try is used.
            return if self.session.pin_verified {
                Ok(())
            } else if self.state.pin.is_blocked() {
                Err(Sw::AUTH_METHOD_BLOCKED)
            } else {
                Err(Sw::tries_left(self.state.pin.left))
            };
        }
        check_pin_format(&cmd.data)?;
        self.end_pin_session();
        self.check_reference(Reference::Pin, &cmd.data)?;
        self.session.pin_verified = true;
        self.session.pin_fresh = true;
        Ok(())
    }

    /// CHANGE REFERENCE DATA (SP 800-73-4 Part 2 §3.2.2) for the PIN (80) and PUK (81).
    fn change_reference(&mut self, cmd: &Command) -> Result<()> {
        if cmd.p1 != 0 {
            return Err(Sw::INCORRECT_P1P2);
        }
        let is_pin = match KeyRef(cmd.p2) {
            KeyRef::PIN => true,
            KeyRef::PUK => false,
            _ => return Err(Sw::REFERENCE_NOT_FOUND),
        };
        if cmd.data.len() != 16 {
            return Err(Sw::INCORRECT_DATA);
        }
        let (old, new) = cmd.data.split_at(8);
        let which = if is_pin {
            check_pin_format(old)?;
            check_pin_format(new)?;
            self.end_pin_session();
            Reference::Pin
        } else {
            Reference::Puk
        };
        self.check_reference(which, old)?;
        self.set_reference(which, new)?;
        if is_pin {
            self.session.pin_verified = true;
        }
        self.dirty = true;
        Ok(())
    }

    /// RESET RETRY COUNTER (SP 800-73-4 Part 2 §3.2.3): the PUK sets a new PIN.
    fn reset_retry_counter(&mut self, cmd: &Command) -> Result<()> {
        if cmd.p1 != 0 || cmd.p2 != KeyRef::PIN.0 {
            return Err(Sw::INCORRECT_P1P2);
        }
        if cmd.data.len() != 16 {
            return Err(Sw::INCORRECT_DATA);
        }
        // SP 800-73-4 Part 2 §2.4.3: the PUK is 8 bytes of any value; the new PIN has the
        // PIN's format.
        let (puk, new_pin) = cmd.data.split_at(8);
        check_pin_format(new_pin)?;
        self.check_reference(Reference::Puk, puk)?;
        self.end_pin_session();
        let set = self.set_reference(Reference::Pin, new_pin);
        // The new PIN is not verified by its setting (SP 800-73-4 Part 2 §3.2.3).
        self.end_pin_session();
        set
    }

    /// Gives the PIN or PUK a new value and all its tries, in the state or in the key
    /// store that holds it. A holder that fails changes nothing the applet keeps.
    ///
    /// With a holder, the holder's change is the change: the state only mirrors it, so it
    /// is written at once and a failed write does not make the command fail (the card
    /// would answer 6581 for a PIN that did change, and its holder would go on offering
    /// the old one, using up tries).
    fn set_reference(&mut self, which: Reference, value: &[u8]) -> Result<()> {
        let total = self.counter(which).total;
        let held = self.keys.references().is_some();
        if let Some(holder) = self.keys.references() {
            if holder.set(which, value, total).is_err() {
                // Nothing of this command is kept: the state returns to what was saved.
                self.state.clone_from(&self.saved);
                self.keys.rollback();
                self.dirty = false;
                self.end_pin_session();
                self.mirror_references();
                return Err(Sw::MEMORY_FAILURE);
            }
        }
        let default = match which {
            Reference::Pin => DEFAULT_PIN,
            Reference::Puk => DEFAULT_PUK,
        };
        let kept_here = self.keys.references().is_none();
        let counter = self.counter(which);
        counter.is_default = value == pad8(default).as_slice();
        counter.value = Zeroizing::new(if kept_here {
            value.to_vec()
        } else {
            Vec::new()
        });
        counter.left = total;
        if held {
            if self.keys.persist(&self.state, Persist::Change).is_ok() {
                self.saved.clone_from(&self.state);
            }
        } else {
            self.dirty = true;
        }
        Ok(())
    }

    /// After SET PIN RETRIES has put the factory PIN and PUK in the state: the same in a
    /// key store that holds them.
    fn reset_held_references(&mut self) -> Result<()> {
        if self.keys.references().is_none() {
            return Ok(());
        }
        for (which, default) in [(Reference::Pin, DEFAULT_PIN), (Reference::Puk, DEFAULT_PUK)] {
            self.set_reference(which, &pad8(default))?;
        }
        Ok(())
    }

    fn require_management(&self) -> Result<()> {
        if self.session.management_authenticated {
            Ok(())
        } else {
            Err(Sw::SECURITY_STATUS_NOT_SATISFIED)
        }
    }

    /// GENERAL AUTHENTICATE (SP 800-73-4 Part 2 §3.2.4).
    fn general_authenticate(&mut self, cmd: &Command) -> Result<Option<Vec<u8>>> {
        let template = match tlv::parse_all(&cmd.data) {
            Ok(t) if t.len() == 1 && t[0].tag == 0x7C => t[0].value,
            _ => return Err(Sw::INCORRECT_DATA),
        };
        let items = tlv::parse_all(template).map_err(|_| Sw::INCORRECT_DATA)?;
        let get = |tag| items.iter().find(|t| t.tag == tag).map(|t| t.value);
        let (witness, challenge, response, exponent) = (get(0x80), get(0x81), get(0x82), get(0x85));
        let key = KeyRef(cmd.p2);
        if key == KeyRef::MANAGEMENT {
            if self.interface == Interface::Contactless {
                return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
            }
            return self.management_auth(cmd.p1, witness, challenge, response);
        }
        if !key.is_asymmetric_slot() {
            return Err(Sw::REFERENCE_NOT_FOUND);
        }
        if self.interface == Interface::Contactless && key != KeyRef::CARD_AUTHENTICATION {
            return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let info = self.keys.info(key).ok_or(Sw::REFERENCE_NOT_FOUND)?.clone();
        if Algorithm::from_id(cmd.p1) != Some(info.alg) {
            return Err(Sw::INCORRECT_P1P2);
        }
        match info.pin_policy {
            PinPolicy::Never => {}
            PinPolicy::Once if self.session.pin_verified => {}
            PinPolicy::Always if self.session.pin_verified && self.session.pin_fresh_now => {}
            _ => return Err(Sw::SECURITY_STATUS_NOT_SATISFIED),
        }
        self.session.pin_fresh_now = false;
        let out = match (response, challenge, exponent) {
            (Some([]), Some(input), None) if !input.is_empty() => {
                let input = match info.alg {
                    Algorithm::EccP256 => fit_digest(input, 32),
                    Algorithm::EccP384 => fit_digest(input, 48),
                    _ => input.to_vec(),
                };
                self.keys.sign(key, &input).map_err(key_error)?
            }
            (Some([]), None, Some(point)) => self.keys.ecdh(key, point).map_err(key_error)?,
            _ => return Err(Sw::INCORRECT_DATA),
        };
        let mut inner = Vec::new();
        tlv::push(&mut inner, 0x82, &out);
        Ok(Some(tlv::encode(0x7C, &inner)))
    }

    /// The 9B management-key protocols: mutual authentication (witness then challenge),
    /// external authentication (challenge then response) and OpenSC's bare challenge
    /// request used as a random source (SP 800-73-4 Part 2 Appendix A).
    fn management_auth(
        &mut self,
        alg_id: u8,
        witness: Option<&[u8]>,
        challenge: Option<&[u8]>,
        response: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let alg = self.state.management.alg;
        // P1 = 00 is accepted for "the key's own algorithm", as OpenSC's random request uses.
        if alg_id != 0 && Algorithm::from_id(alg_id) != Some(alg) {
            return Err(Sw::INCORRECT_P1P2);
        }
        let block = mgmt::block_size(alg).ok_or(Sw::NO_PRECISE_DIAGNOSIS)?;
        let pending = self.session.mgmt.take();
        // Only the outcome of a proof changes the authentication state: a bare challenge
        // request (OpenSC's random source) or a witness request leaves it as it was.
        match (witness, challenge, response) {
            // Step 1 of mutual authentication: send an encrypted witness.
            (Some([]), None, None) => {
                let mut w = Zeroizing::new(vec![0u8; block]);
                rand::rngs::OsRng.fill_bytes(&mut w);
                let enc = self.mgmt_encrypt(&w)?;
                self.session.mgmt = Some(MgmtChallenge::Witness(w));
                Ok(Some(tlv::encode(0x7C, &tlv::encode(0x80, &enc))))
            }
            // Step 2: the host proves it decrypted the witness and challenges us.
            (Some(w), Some(c), None) => {
                let Some(MgmtChallenge::Witness(expected)) = pending else {
                    return Err(Sw::CONDITIONS_NOT_SATISFIED);
                };
                if c.len() != block || w.len() != block {
                    return Err(Sw::INCORRECT_DATA);
                }
                if !bool::from(w.ct_eq(expected.as_slice())) {
                    self.session.management_authenticated = false;
                    return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
                }
                let enc = self.mgmt_encrypt(c)?;
                self.session.management_authenticated = true;
                Ok(Some(tlv::encode(0x7C, &tlv::encode(0x82, &enc))))
            }
            // External authentication, step 1 (also OpenSC's random request).
            (None, Some([]), None) => {
                let mut c = Zeroizing::new(vec![0u8; block]);
                rand::rngs::OsRng.fill_bytes(&mut c);
                let out = tlv::encode(0x7C, &tlv::encode(0x81, &c));
                self.session.mgmt = Some(MgmtChallenge::Challenge(c));
                Ok(Some(out))
            }
            // External authentication, step 2.
            (None, None, Some(r)) => {
                let Some(MgmtChallenge::Challenge(c)) = pending else {
                    return Err(Sw::CONDITIONS_NOT_SATISFIED);
                };
                let expected = self.mgmt_encrypt(&c)?;
                if !bool::from(r.ct_eq(expected.as_slice())) {
                    self.session.management_authenticated = false;
                    return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
                }
                self.session.management_authenticated = true;
                Ok(None)
            }
            _ => Err(Sw::INCORRECT_DATA),
        }
    }

    /// Encrypts one block with the management key.
    fn mgmt_encrypt(&self, block: &[u8]) -> Result<Vec<u8>> {
        let m = &self.state.management;
        mgmt::crypt_block(m.alg, &m.key, block, true).ok_or(Sw::INCORRECT_DATA)
    }

    /// GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 Part 2 §3.3.2) with Yubico's PIN and
    /// touch policy tags.
    fn generate(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        if cmd.p1 != 0 {
            return Err(Sw::INCORRECT_P1P2);
        }
        let slot = KeyRef(cmd.p2);
        if !slot.is_asymmetric_slot() {
            return Err(Sw::INCORRECT_P1P2);
        }
        self.require_management()?;
        let template = match tlv::parse_all(&cmd.data) {
            Ok(t) if t.len() == 1 && t[0].tag == 0xAC => t[0].value,
            _ => return Err(Sw::INCORRECT_DATA),
        };
        let items = tlv::parse_all(template).map_err(|_| Sw::INCORRECT_DATA)?;
        let mut alg = None;
        let mut pin_policy = slot.default_pin_policy();
        let mut touch = 1;
        for t in items {
            match (t.tag, t.value) {
                (0x80, [id]) => alg = Algorithm::from_id(*id),
                (0xAA, [0]) => {}
                (0xAA, [p]) => pin_policy = PinPolicy::from_byte(*p).ok_or(Sw::INCORRECT_DATA)?,
                (0xAB, [0]) => {}
                (0xAB, [1]) => touch = 1,
                // The reference card has no button to touch.
                (0xAB, [_]) => return Err(Sw::INCORRECT_DATA),
                _ => return Err(Sw::INCORRECT_DATA),
            }
        }
        let alg = match alg {
            Some(a @ (Algorithm::EccP256 | Algorithm::EccP384 | Algorithm::Rsa2048)) => a,
            _ => return Err(Sw::INCORRECT_DATA),
        };
        let info = self
            .keys
            .generate(slot, alg, pin_policy, touch)
            .map_err(key_error)?;
        self.dirty = true;
        Ok(tlv::encode(0x7F49, &info.public.piv_template_value()))
    }

    /// Yubico GET METADATA.
    fn metadata(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        if cmd.p1 != 0 {
            return Err(Sw::INCORRECT_P1P2);
        }
        let mut out = Vec::new();
        match KeyRef(cmd.p2) {
            r @ (KeyRef::PIN | KeyRef::PUK) => {
                let c = if r == KeyRef::PIN {
                    &self.state.pin
                } else {
                    &self.state.puk
                };
                tlv::push(&mut out, 0x01, &[0xFF]);
                tlv::push(&mut out, 0x05, &[u8::from(c.is_default)]);
                tlv::push(&mut out, 0x06, &[c.total, c.left]);
            }
            KeyRef::MANAGEMENT => {
                let m = &self.state.management;
                tlv::push(&mut out, 0x01, &[m.alg.id()]);
                tlv::push(&mut out, 0x02, &[PinPolicy::Never.to_byte(), 1]);
                tlv::push(&mut out, 0x05, &[u8::from(m.is_default)]);
            }
            slot => {
                let info = self.keys.info(slot).ok_or(Sw::NOT_FOUND)?;
                tlv::push(&mut out, 0x01, &[info.alg.id()]);
                tlv::push(
                    &mut out,
                    0x02,
                    &[info.pin_policy.to_byte(), info.touch_policy],
                );
                let origin = match info.origin {
                    Origin::Generated => 1,
                    Origin::Imported => 2,
                };
                tlv::push(&mut out, 0x03, &[origin]);
                tlv::push(&mut out, 0x04, &info.public.piv_template_value());
            }
        }
        Ok(out)
    }

    /// Yubico SET PIN RETRIES: needs the management key and the PIN; PIN and PUK go back
    /// to their defaults.
    fn set_pin_retries(&mut self, cmd: &Command) -> Result<()> {
        self.require_management()?;
        if !self.session.pin_verified {
            return Err(Sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if !(1..=15).contains(&cmd.p1) || !(1..=15).contains(&cmd.p2) {
            return Err(Sw::INCORRECT_P1P2);
        }
        self.state.set_retries(cmd.p1, cmd.p2);
        self.end_pin_session();
        self.dirty = true;
        let set = self.reset_held_references();
        self.end_pin_session();
        set
    }

    /// Yubico RESET: allowed only when both PIN and PUK are blocked.
    fn factory_reset(&mut self, cmd: &Command) -> Result<()> {
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Err(Sw::INCORRECT_P1P2);
        }
        // Both blocked, as their holder counts them: a mirror that a failed check left
        // low must not open the reset.
        let blocked = match self.keys.references() {
            Some(holder) => matches!(
                (
                    holder.counter(Reference::Pin),
                    holder.counter(Reference::Puk)
                ),
                (Ok((0, _)), Ok((0, _)))
            ),
            None => self.state.pin.is_blocked() && self.state.puk.is_blocked(),
        };
        if !blocked {
            return Err(Sw::CONDITIONS_NOT_SATISFIED);
        }
        for slot in (0x82..=0x95).chain([0x9A, 0x9C, 0x9D, 0x9E]) {
            self.keys.delete(KeyRef(slot));
        }
        self.state.reset(&mut rand::rngs::OsRng);
        self.end_pin_session();
        self.session = Session::default();
        if self.keys.references().is_some() {
            // The keys' deletion is durable before the factory PIN opens anything: a cut
            // (or a full disk) after the holder's reset must not leave the old keys beside
            // a PIN everybody knows.
            self.persist(Persist::Change)?;
            let reset = self
                .keys
                .references()
                .map(|h| h.reset(&pad8(DEFAULT_PIN), &pad8(DEFAULT_PUK), DEFAULT_RETRIES));
            self.mirror_references();
            if let Some(Err(_)) = reset {
                return Err(Sw::MEMORY_FAILURE);
            }
        }
        self.dirty = true;
        Ok(())
    }

    /// Yubico SET MANAGEMENT KEY: `alg 9B len key`.
    fn set_management_key(&mut self, cmd: &Command) -> Result<()> {
        if cmd.p1 != 0xFF || !matches!(cmd.p2, 0xFF | 0xFE) {
            return Err(Sw::INCORRECT_P1P2);
        }
        self.require_management()?;
        let [alg, 0x9B, len, key @ ..] = cmd.data.as_slice() else {
            return Err(Sw::INCORRECT_DATA);
        };
        let alg = Algorithm::from_id(*alg).ok_or(Sw::INCORRECT_DATA)?;
        if alg.symmetric_key_len() != Some(usize::from(*len)) || key.len() != usize::from(*len) {
            return Err(Sw::INCORRECT_DATA);
        }
        self.state.management.alg = alg;
        self.state.management.key = Zeroizing::new(key.to_vec());
        self.state.management.is_default =
            alg == Algorithm::Tdes && key == DEFAULT_MANAGEMENT_KEY.as_slice();
        self.dirty = true;
        Ok(())
    }

    /// Yubico ATTEST: a certificate for a key generated on the card, signed by the
    /// attestation key (`F9`) and issued under the attestation certificate (`5FFF01`).
    fn attest(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        if cmd.p2 != 0 {
            return Err(Sw::INCORRECT_P1P2);
        }
        let slot = KeyRef(cmd.p1);
        if !slot.is_asymmetric_slot() {
            return Err(Sw::INCORRECT_P1P2);
        }
        let info = self.keys.info(slot).ok_or(Sw::REFERENCE_NOT_FOUND)?.clone();
        if info.origin != Origin::Generated {
            // Only keys generated on the card can be attested.
            return Err(Sw::INCORRECT_DATA);
        }
        let attestation_cert = self
            .state
            .object(object::YK_ATTESTATION_CERT)
            .ok_or(Sw::REFERENCE_NOT_FOUND)?;
        let der = tlv::find(attestation_cert, 0x70)
            .ok()
            .flatten()
            .unwrap_or(attestation_cert);
        let issuer_cert =
            x509_cert::Certificate::from_der(der).map_err(|_| Sw::NO_PRECISE_DIAGNOSIS)?;
        let f9 = self
            .keys
            .info(KeyRef::ATTESTATION)
            .ok_or(Sw::REFERENCE_NOT_FOUND)?;
        let digest_len = match f9.alg {
            Algorithm::EccP256 => 32,
            Algorithm::EccP384 => 48,
            // The reference card's attestation key is an EC key; an RSA one would need
            // PKCS#1 padding here.
            _ => return Err(Sw::CONDITIONS_NOT_SATISFIED),
        };
        let spki = info.public.to_spki_der().map_err(key_error)?;
        let subject = Name::from_str(&format!("CN=Tessera PIV Attestation {slot}"))
            .map_err(|_| Sw::NO_PRECISE_DIAGNOSIS)?;
        let mut serial = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut serial);
        serial[0] &= 0x7F;
        serial[0] |= 0x01;
        // Yubico's attestation extensions (1.3.6.1.4.1.41482.3.x): firmware version,
        // serial number, PIN/touch policy and form factor.
        let ext = |arc: &str, value: &[u8]| {
            let oid = const_oid::ObjectIdentifier::new(&format!("1.3.6.1.4.1.41482.3.{arc}"))
                .map_err(|_| Sw::NO_PRECISE_DIAGNOSIS)?;
            cert::extension(oid, false, value).map_err(|_| Sw::NO_PRECISE_DIAGNOSIS)
        };
        let serial_der =
            der::Encode::to_der(&self.state.serial).map_err(|_| Sw::NO_PRECISE_DIAGNOSIS)?;
        let extensions = vec![
            ext("3", &self.state.version)?,
            ext("7", &serial_der)?,
            ext("8", &[info.pin_policy.to_byte(), info.touch_policy])?,
            // Form factor (Yubico: low bits the shape, 0x80 FIPS, 0x40 CSPN): 0x00,
            // unspecified. The reference card is neither a USB key nor FIPS-validated, and a
            // verifier must not be told it is.
            ext("9", &[FORM_FACTOR_UNSPECIFIED])?,
        ];
        let template = CertTemplate {
            serial: &serial,
            issuer: issuer_cert.tbs_certificate.subject.clone(),
            subject,
            validity: issuer_cert.tbs_certificate.validity,
            spki_der: &spki,
            extensions,
        };
        let keys = &mut self.keys;
        cert::build(template, cert::ecdsa_with_sha256(), |tbs| {
            let digest = sha2::Sha256::digest(tbs);
            let digest = fit_digest(&digest, digest_len);
            keys.sign(KeyRef::ATTESTATION, &digest)
                .map_err(|e| e.to_string())
        })
        .map_err(|_| Sw::NO_PRECISE_DIAGNOSIS)
    }
}

/// The attestation's form-factor byte (Yubico extension 1.3.6.1.4.1.41482.3.9): no shape
/// claimed, and neither the FIPS (`80`) nor the CSPN (`40`) flag.
const FORM_FACTOR_UNSPECIFIED: u8 = 0x00;

/// Historical bytes of the reference card's ATR and ATS. A first byte other than `00`,
/// `10` or `80` marks them proprietary (ISO 7816-4 §8.1.1), which is all hosts need.
pub const HISTORICAL_BYTES: &[u8] = b"TesseraPIV";

fn is_known(ins: u8) -> bool {
    matches!(
        ins,
        ins::GET_DATA
            | ins::PUT_DATA
            | ins::VERIFY
            | ins::CHANGE_REFERENCE_DATA
            | ins::RESET_RETRY_COUNTER
            | ins::GENERAL_AUTHENTICATE
            | ins::GENERATE_ASYMMETRIC_KEY_PAIR
            | ins::YK_GET_VERSION
            | ins::YK_GET_SERIAL
            | ins::YK_GET_METADATA
            | ins::YK_SET_PIN_RETRIES
            | ins::YK_RESET
            | ins::YK_SET_MANAGEMENT_KEY
            | ins::YK_ATTEST
    )
}

fn contactless_allowed(ins: u8) -> bool {
    matches!(
        ins,
        ins::SELECT
            | ins::GET_DATA
            | ins::GENERAL_AUTHENTICATE
            | ins::GET_RESPONSE
            | ins::YK_GET_VERSION
            | ins::YK_GET_SERIAL
    )
}

/// The application property template returned by SELECT (SP 800-73-4 Part 2 Table 3).
fn application_property_template() -> Vec<u8> {
    let mut inner = Vec::new();
    tlv::push(&mut inner, 0x4F, &PIX);
    tlv::push(&mut inner, 0x79, &tlv::encode(0x4F, &AID_PREFIX));
    tlv::push(&mut inner, 0x50, b"Tessera PIV");
    let mut algs = Vec::new();
    for a in [
        Algorithm::Tdes,
        Algorithm::Aes128,
        Algorithm::Aes192,
        Algorithm::Aes256,
        Algorithm::Rsa2048,
        Algorithm::EccP256,
        Algorithm::EccP384,
    ] {
        tlv::push(&mut algs, 0x80, &[a.id()]);
    }
    tlv::push(&mut algs, 0x06, &[]);
    tlv::push(&mut inner, 0xAC, &algs);
    tlv::encode(0x61, &inner)
}

/// The Discovery Object (SP 800-73-4 Part 1 §3.3.2): the PIV AID and a PIN usage policy of
/// "PIV card application PIN only" (`40 00`).
fn discovery_object() -> Vec<u8> {
    let mut inner = Vec::new();
    tlv::push(&mut inner, 0x4F, &AID);
    tlv::push(&mut inner, 0x5F2F, &[0x40, 0x00]);
    tlv::encode(0x7E, &inner)
}

/// The object tag of a GET DATA command: `5C` with one to three tag bytes.
fn object_tag(data: &[u8]) -> Result<u32> {
    match tlv::parse_all(data) {
        Ok(t) if t.len() == 1 && t[0].tag == 0x5C => tag_number(t[0].value),
        _ => Err(Sw::INCORRECT_DATA),
    }
}

fn tag_number(bytes: &[u8]) -> Result<u32> {
    if bytes.is_empty() || bytes.len() > 3 {
        return Err(Sw::INCORRECT_DATA);
    }
    Ok(bytes.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)))
}

/// PIN and PUK travel as 8 bytes: 6–8 characters padded with `FF` (SP 800-73-4 Part 2
/// §2.4.3). Anything else is refused without using a try.
fn check_pin_format(value: &[u8]) -> Result<()> {
    if value.len() != 8 {
        return Err(Sw::INCORRECT_DATA);
    }
    let len = value.iter().position(|b| *b == 0xFF).unwrap_or(8);
    if len < 6 || value[len..].iter().any(|b| *b != 0xFF) {
        return Err(Sw::INCORRECT_DATA);
    }
    Ok(())
}

/// Fits a digest to the curve size as ECDSA's bits2int does (FIPS 186-5 §6.4.1): longer
/// inputs keep their leftmost bytes, shorter ones are the same integer left-padded with
/// zeros (pam_p11 signs 20-byte SHA-1 digests with P-256 keys).
fn fit_digest(input: &[u8], size: usize) -> Vec<u8> {
    if input.len() >= size {
        input[..size].to_vec()
    } else {
        let mut out = vec![0u8; size - input.len()];
        out.extend_from_slice(input);
        out
    }
}

fn key_error(e: KeyError) -> Sw {
    match e {
        KeyError::NoKey(_) => Sw::REFERENCE_NOT_FOUND,
        KeyError::UnsupportedAlgorithm(_) | KeyError::InvalidInput(_) => Sw::INCORRECT_DATA,
        KeyError::Corrupt(_) | KeyError::Backend(_) => Sw::NO_PRECISE_DIAGNOSIS,
    }
}
