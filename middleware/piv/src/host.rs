//! The host side of the card edge: PIV commands over a [`Transport`].
//!
//! [`PivClient`] handles command chaining for long data (ISO 7816-4 §5.1.1.1) and collects
//! long answers with GET RESPONSE (`61xx`), so callers see whole objects. The card's answer
//! is kept apart from our own failures: [`Error::Card`] carries the status word.
//!
//! A card in a reader is shared by every program on the machine. [`Transport::begin`] and
//! [`Transport::end`] bracket a sequence of commands that no other program may interleave
//! (PC/SC transactions): a PIN check and the signature it authorises, a command chain, an
//! answer and its GET RESPONSE.

use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::apdu::{Command, Response, StatusWord};
use crate::card::{Applet, KeyStore, PublicKey};
use crate::piv::{ins, Algorithm, KeyRef, PinPolicy, AID};
use crate::{mgmt, tlv};

/// Why a PIV operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The card refused with this status word.
    #[error("card answered {0}")]
    Card(StatusWord),
    /// The card (or reader) is gone.
    #[error("card removed")]
    Removed,
    /// Another program reset the card: the connection works again, but the card has lost
    /// its security status (PIN verified, selected application). Retry from the start.
    #[error("the card was reset by another program")]
    Reset,
    /// Another program holds the card (a PC/SC transaction) for longer than this one waits.
    /// The connection is then given up; a new one is made on the next use.
    #[error("the card is in use by another program")]
    Busy,
    /// This program's hold on the card outlasted its limit and was released (its commands
    /// since are refused until the hold's outermost `end`).
    #[error("the hold on the card lapsed")]
    Lapsed,
    /// The transport failed.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The card's answer is not what the protocol says.
    #[error("malformed answer from the card: {0}")]
    Malformed(&'static str),
    /// The caller passed something the protocol cannot carry.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

/// What [`Transport::begin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A new exclusive hold: another program may have used the card since this one last
    /// held it (selected another application, reset it, logged it out).
    Fresh,
    /// Nested in a hold this connection already has: nobody else has used the card since.
    Continued,
}

/// Moves APDUs to a card and back.
pub trait Transport {
    /// Sends one command APDU and returns the response APDU (data and status word).
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error>;

    /// Resets the card (a warm reset: every security status is cleared).
    fn reset(&mut self) -> Result<(), Error> {
        Err(Error::Transport(
            "this transport cannot reset the card".into(),
        ))
    }

    /// Begins exclusive use of the card (PC/SC `SCardBeginTransaction`), or nests in the
    /// hold this connection has; every `begin` is matched by an [`Transport::end`]. A
    /// transport that nobody else can reach (the applet in memory) is always
    /// [`Access::Continued`].
    fn begin(&mut self) -> Result<Access, Error> {
        Ok(Access::Continued)
    }

    /// Ends one level of [`Transport::begin`]; the hold is released at the outermost. An
    /// `end` with no hold (one that lapsed) does nothing.
    fn end(&mut self) {}

    /// Whether the card is reached over its contactless interface (ISO 14443), where
    /// SP 800-73-4 allows only the card-authentication key and free-read objects.
    fn contactless(&mut self) -> bool {
        false
    }

    /// Whether the connection can still be used; after [`Error::Busy`] it cannot, and the
    /// owner connects again.
    fn usable(&mut self) -> bool {
        true
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        (**self).transmit(apdu)
    }

    fn reset(&mut self) -> Result<(), Error> {
        (**self).reset()
    }

    fn begin(&mut self) -> Result<Access, Error> {
        (**self).begin()
    }

    fn end(&mut self) {
        (**self).end();
    }

    fn contactless(&mut self) -> bool {
        (**self).contactless()
    }

    fn usable(&mut self) -> bool {
        (**self).usable()
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        (**self).transmit(apdu)
    }

    fn reset(&mut self) -> Result<(), Error> {
        (**self).reset()
    }

    fn begin(&mut self) -> Result<Access, Error> {
        (**self).begin()
    }

    fn end(&mut self) {
        (**self).end();
    }

    fn contactless(&mut self) -> bool {
        (**self).contactless()
    }

    fn usable(&mut self) -> bool {
        (**self).usable()
    }
}

/// In-memory transport: the applet itself.
impl<K: KeyStore> Transport for Applet<K> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.process(apdu))
    }

    fn reset(&mut self) -> Result<(), Error> {
        Applet::reset(self);
        Ok(())
    }

    fn contactless(&mut self) -> bool {
        self.interface() == crate::card::Interface::Contactless
    }
}

/// Most GET RESPONSE rounds for one answer: a card that keeps answering `61xx` (hostile or
/// broken) must not hold the caller, and every other user of the card, forever.
pub const MAX_GET_RESPONSE: usize = 256;
/// Largest answer collected through GET RESPONSE: twice the largest data object a PIV
/// card holds (SP 800-73-4 Part 1 Appendix A; certificates are the largest).
pub const MAX_RESPONSE: usize = 2 * 65_536;

/// The PIN state a VERIFY without data reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    Verified,
    TriesLeft(u8),
    Blocked,
}

/// PIV commands over a transport.
#[derive(Debug)]
pub struct PivClient<T> {
    transport: T,
    /// Count of APDUs sent, for benchmarks.
    apdus: u64,
}

impl<T: Transport> PivClient<T> {
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            apdus: 0,
        }
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Resets the card through the transport.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.transport.reset()
    }

    pub fn into_transport(self) -> T {
        self.transport
    }

    /// APDUs exchanged so far.
    pub fn apdu_count(&self) -> u64 {
        self.apdus
    }

    /// Sends one raw APDU, with no chaining or GET RESPONSE handling.
    pub fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Response, Error> {
        self.apdus += 1;
        let raw = self.transport.transmit(apdu)?;
        Response::parse(&raw).map_err(|_| Error::Malformed("response without status word"))
    }

    /// Sends a command, chaining data longer than a short APDU carries and collecting
    /// `61xx` continuations. Returns the final response, whatever its status. The whole
    /// exchange is one exclusive hold of the card, so that no other program's command falls
    /// between two links of a chain or between an answer and its GET RESPONSE.
    pub fn send(&mut self, cmd: &Command) -> Result<Response, Error> {
        /// Ends the hold however `send_held` leaves, a panic included: an `end` owed and
        /// never sent would keep the card, or a lapsed hold, for ever.
        struct Held<'a, T: Transport>(&'a mut PivClient<T>);
        impl<T: Transport> Drop for Held<'_, T> {
            fn drop(&mut self) {
                self.0.transport.end();
            }
        }
        self.transport.begin()?;
        let held = Held(self);
        held.0.send_held(cmd)
    }

    fn send_held(&mut self, cmd: &Command) -> Result<Response, Error> {
        let mut resp = if cmd.data.len() > 255 && !cmd.extended {
            let chunks: Vec<&[u8]> = cmd.data.chunks(255).collect();
            let last = chunks.len() - 1;
            let mut resp = Response::status(StatusWord::SUCCESS);
            for (i, chunk) in chunks.into_iter().enumerate() {
                let mut link = Command::new(cmd.cla, cmd.ins, cmd.p1, cmd.p2).with_data(chunk);
                if i < last {
                    link.cla |= 0x10;
                } else {
                    link.le = cmd.le;
                }
                let raw = Zeroizing::new(link.to_bytes());
                link.data.zeroize();
                resp = self.transmit_raw(&raw)?;
                if i < last && !resp.sw.is_success() {
                    return Ok(resp);
                }
            }
            resp
        } else {
            // The encoded command may carry a PIN: wiped once sent.
            let raw = Zeroizing::new(cmd.to_bytes());
            self.transmit_raw(&raw)?
        };
        let mut data = std::mem::take(&mut resp.data);
        let mut rounds = 0;
        while resp.sw.sw1() == 0x61 {
            rounds += 1;
            if rounds > MAX_GET_RESPONSE {
                return Err(Error::Malformed("the card keeps answering 61xx"));
            }
            let le = match resp.sw.sw2() {
                0 => 256,
                n => usize::from(n),
            };
            let get = Command::new(0, ins::GET_RESPONSE, 0, 0).with_le(le);
            resp = self.transmit_raw(&get.to_bytes())?;
            if data.len() + resp.data.len() > MAX_RESPONSE {
                return Err(Error::Malformed(
                    "the card's answer is longer than any PIV object",
                ));
            }
            data.extend_from_slice(&resp.data);
        }
        resp.data = data;
        Ok(resp)
    }

    /// Sends a command and returns its data, or the card's refusal as [`Error::Card`].
    pub fn call(&mut self, cmd: &Command) -> Result<Vec<u8>, Error> {
        let resp = self.send(cmd)?;
        if resp.sw.is_success() {
            Ok(resp.data)
        } else {
            Err(Error::Card(resp.sw))
        }
    }

    /// SELECT the PIV application; returns the application property template.
    pub fn select(&mut self) -> Result<Vec<u8>, Error> {
        self.call(
            &Command::new(0, ins::SELECT, 0x04, 0x00)
                .with_data(AID)
                .with_le(256),
        )
    }

    /// GET DATA; returns the content of the `53` template (or the whole answer for the
    /// Discovery Object, which is not wrapped).
    pub fn get_data(&mut self, tag: u32) -> Result<Vec<u8>, Error> {
        let mut tag_bytes = Vec::new();
        tlv::push_tag(&mut tag_bytes, tag);
        let cmd = Command::new(0, ins::GET_DATA, 0x3F, 0xFF)
            .with_data(tlv::encode(0x5C, &tag_bytes))
            .with_le(256);
        let data = self.call(&cmd)?;
        match tlv::parse_all(&data) {
            Ok(t) if t.len() == 1 && t[0].tag == 0x53 => Ok(t[0].value.to_vec()),
            Ok(t) if t.len() == 1 && t[0].tag == tag => Ok(data),
            _ => Err(Error::Malformed("GET DATA answer is not one 53 template")),
        }
    }

    /// PUT DATA of a whole object (management key needed); empty content deletes it.
    pub fn put_data(&mut self, tag: u32, content: &[u8]) -> Result<(), Error> {
        let mut tag_bytes = Vec::new();
        tlv::push_tag(&mut tag_bytes, tag);
        let mut data = tlv::encode(0x5C, &tag_bytes);
        tlv::push(&mut data, 0x53, content);
        self.call(&Command::new(0, ins::PUT_DATA, 0x3F, 0xFF).with_data(data))
            .map(drop)
    }

    /// Sends a command whose data is secret (a PIN, a PUK) and wipes that data afterwards.
    fn call_secret(&mut self, mut cmd: Command) -> Result<Vec<u8>, Error> {
        let r = self.call(&cmd);
        cmd.data.zeroize();
        r
    }

    /// VERIFY the PIV PIN.
    pub fn verify_pin(&mut self, pin: &[u8]) -> Result<(), Error> {
        let pin = pad_pin(pin)?;
        self.call_secret(Command::new(0, ins::VERIFY, 0, KeyRef::PIN.0).with_data(pin.to_vec()))
            .map(drop)
    }

    /// VERIFY without data: the login state, using no try.
    pub fn pin_status(&mut self) -> Result<PinStatus, Error> {
        let resp = self.send(&Command::new(0, ins::VERIFY, 0, KeyRef::PIN.0))?;
        match resp.sw {
            StatusWord::SUCCESS => Ok(PinStatus::Verified),
            StatusWord::AUTH_METHOD_BLOCKED => Ok(PinStatus::Blocked),
            sw => sw
                .retries()
                .map(PinStatus::TriesLeft)
                .ok_or(Error::Card(sw)),
        }
    }

    /// CHANGE REFERENCE DATA of the PIN (`80`) or PUK (`81`).
    pub fn change_reference(&mut self, which: KeyRef, old: &[u8], new: &[u8]) -> Result<(), Error> {
        let mut data = pad_pin(old)?;
        data.extend_from_slice(&pad_pin(new)?);
        self.call_secret(
            Command::new(0, ins::CHANGE_REFERENCE_DATA, 0, which.0).with_data(data.to_vec()),
        )
        .map(drop)
    }

    /// RESET RETRY COUNTER: unblock the PIN with the PUK.
    pub fn unblock_pin(&mut self, puk: &[u8], new_pin: &[u8]) -> Result<(), Error> {
        let mut data = pad_pin(puk)?;
        data.extend_from_slice(&pad_pin(new_pin)?);
        self.call_secret(
            Command::new(0, ins::RESET_RETRY_COUNTER, 0, KeyRef::PIN.0).with_data(data.to_vec()),
        )
        .map(drop)
    }

    /// Mutual authentication with the management key (SP 800-73-4 Part 2 Appendix A.2).
    pub fn authenticate_management(&mut self, alg: Algorithm, key: &[u8]) -> Result<(), Error> {
        let block =
            mgmt::block_size(alg).ok_or(Error::InvalidArgument("not a symmetric algorithm"))?;
        let ga = |data: Vec<u8>| {
            Command::new(0, ins::GENERAL_AUTHENTICATE, alg.id(), KeyRef::MANAGEMENT.0)
                .with_data(tlv::encode(0x7C, &data))
                .with_le(256)
        };
        let answer = self.call(&ga(tlv::encode(0x80, &[])))?;
        let witness = dyn_field(&answer, 0x80)?;
        let plain = mgmt::crypt_block(alg, key, &witness, false)
            .ok_or(Error::InvalidArgument("management key size"))?;
        let mut challenge = vec![0u8; block];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
        let mut data = tlv::encode(0x80, &plain);
        tlv::push(&mut data, 0x81, &challenge);
        let answer = self.call(&ga(data))?;
        let response = dyn_field(&answer, 0x82)?;
        let expected = mgmt::crypt_block(alg, key, &challenge, true)
            .ok_or(Error::InvalidArgument("management key size"))?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            response.as_slice(),
            expected.as_slice(),
        )) {
            return Err(Error::Malformed("card did not prove the management key"));
        }
        Ok(())
    }

    /// GENERATE ASYMMETRIC KEY PAIR in `slot`.
    pub fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: Option<PinPolicy>,
    ) -> Result<PublicKey, Error> {
        let mut inner = tlv::encode(0x80, &[alg.id()]);
        if let Some(p) = pin_policy {
            tlv::push(&mut inner, 0xAA, &[p.to_byte()]);
        }
        let cmd = Command::new(0, ins::GENERATE_ASYMMETRIC_KEY_PAIR, 0, slot.0)
            .with_data(tlv::encode(0xAC, &inner))
            .with_le(256);
        let answer = self.call(&cmd)?;
        let template = tlv::find(&answer, 0x7F49)
            .ok()
            .flatten()
            .ok_or(Error::Malformed("no 7F49 template"))?;
        parse_public_key(alg, template)
    }

    /// GENERAL AUTHENTICATE with an asymmetric key: ECDSA over a digest, or the raw RSA
    /// private operation on a modulus-sized block.
    pub fn sign(&mut self, slot: KeyRef, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut inner = tlv::encode(0x82, &[]);
        tlv::push(&mut inner, 0x81, input);
        self.general_authenticate(slot, alg, inner)
    }

    /// GENERAL AUTHENTICATE for ECDH with the peer's uncompressed point.
    pub fn ecdh(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        peer_point: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut inner = tlv::encode(0x82, &[]);
        tlv::push(&mut inner, 0x85, peer_point);
        self.general_authenticate(slot, alg, inner)
    }

    fn general_authenticate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        inner: Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        let cmd = Command::new(0, ins::GENERAL_AUTHENTICATE, alg.id(), slot.0)
            .with_data(tlv::encode(0x7C, &inner))
            .with_le(256);
        let answer = self.call(&cmd)?;
        dyn_field(&answer, 0x82)
    }

    /// Yubico GET VERSION.
    pub fn version(&mut self) -> Result<[u8; 3], Error> {
        let v = self.call(&Command::new(0, ins::YK_GET_VERSION, 0, 0).with_le(256))?;
        v.try_into()
            .map_err(|_| Error::Malformed("version is not 3 bytes"))
    }

    /// Yubico GET SERIAL.
    pub fn serial(&mut self) -> Result<u32, Error> {
        let v = self.call(&Command::new(0, ins::YK_GET_SERIAL, 0, 0).with_le(256))?;
        let b: [u8; 4] = v
            .try_into()
            .map_err(|_| Error::Malformed("serial is not 4 bytes"))?;
        Ok(u32::from_be_bytes(b))
    }

    /// Yubico GET METADATA: the raw TLV answer.
    pub fn metadata(&mut self, slot: KeyRef) -> Result<Vec<u8>, Error> {
        self.call(&Command::new(0, ins::YK_GET_METADATA, 0, slot.0).with_le(256))
    }

    /// Yubico ATTEST: the attestation certificate (DER) for the key in `slot`.
    pub fn attest(&mut self, slot: KeyRef) -> Result<Vec<u8>, Error> {
        self.call(&Command::new(0, ins::YK_ATTEST, slot.0, 0).with_le(256))
    }

    /// Yubico SET MANAGEMENT KEY.
    pub fn set_management_key(&mut self, alg: Algorithm, key: &[u8]) -> Result<(), Error> {
        let len = u8::try_from(key.len()).map_err(|_| Error::InvalidArgument("key too long"))?;
        let mut data = vec![alg.id(), KeyRef::MANAGEMENT.0, len];
        data.extend_from_slice(key);
        self.call(&Command::new(0, ins::YK_SET_MANAGEMENT_KEY, 0xFF, 0xFF).with_data(data))
            .map(drop)
    }
}

/// Pads a PIN or PUK to the 8 bytes VERIFY expects (a PUK of 8 bytes, any values, is
/// sent as it is). Wiped when dropped.
pub fn pad_pin(pin: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    if pin.len() > 8 {
        return Err(Error::InvalidArgument("PIN longer than 8 bytes"));
    }
    let mut v = Zeroizing::new(pin.to_vec());
    v.resize(8, 0xFF);
    Ok(v)
}

/// A field of the dynamic authentication template (`7C`).
fn dyn_field(answer: &[u8], tag: u32) -> Result<Vec<u8>, Error> {
    let template = tlv::find(answer, 0x7C)
        .ok()
        .flatten()
        .ok_or(Error::Malformed("no 7C template"))?;
    tlv::find(template, tag)
        .ok()
        .flatten()
        .map(<[u8]>::to_vec)
        .ok_or(Error::Malformed("7C template lacks the expected field"))
}

/// Parses the value of a `7F49` template.
pub fn parse_public_key(alg: Algorithm, template: &[u8]) -> Result<PublicKey, Error> {
    let field = |tag| {
        tlv::find(template, tag)
            .ok()
            .flatten()
            .map(<[u8]>::to_vec)
            .ok_or(Error::Malformed("public key template incomplete"))
    };
    match alg {
        a if a.is_rsa() => Ok(PublicKey::Rsa {
            modulus: field(0x81)?,
            exponent: field(0x82)?,
        }),
        Algorithm::EccP256 | Algorithm::EccP384 => Ok(PublicKey::Ec {
            alg,
            point: field(0x86)?,
        }),
        _ => Err(Error::InvalidArgument("not an asymmetric algorithm")),
    }
}

#[cfg(feature = "pcsc")]
pub use self::pcsc_transport::{
    is_contactless_atr, PcscTransport, BEGIN_WAIT, CARD_WAIT, HOLD_LIMIT,
};

#[cfg(feature = "pcsc")]
mod pcsc_transport {
    //! A card in a PC/SC reader. The `pcsc` crate ties a transaction to a borrow of the
    //! card, so a hold that lasts across calls (a context-specific PIN check and the
    //! signature it authorises are two PKCS#11 calls) cannot live in a struct beside the
    //! card without `unsafe`. Each connection therefore has a worker thread that owns the
    //! card and holds the transaction on its own stack; the transport talks to it over
    //! channels, one request at a time.
    //!
    //! pcsc-lite makes a connection, a transaction, a status query and a transmission wait
    //! while another program holds the card in a transaction, without limit. The transport
    //! waits at most [`BEGIN_WAIT`] for any answer; then it gives the connection up
    //! ([`Error::Busy`]): it sends nothing more, and the worker, once pcsc-lite lets it go,
    //! ends what it holds, disconnects and exits on its own. Until that worker has gone, new
    //! connections to that reader are refused at once, so a card held for long costs one
    //! waiting thread, not one per call.
    //!
    //! The worker never lets a PIN check's freshness outlive a hold: if a VERIFY was sent
    //! during the hold, it sends GET DATA of the Discovery Object before the hold ends,
    //! which ends the freshness on a card that keeps it for the command right after the
    //! VERIFY (SP 800-73-4 Part 1 §3.2). A hold lasts at most [`HOLD_LIMIT`]; after that the
    //! worker releases the card and refuses the holder's commands until it ends the hold
    //! ([`Error::Lapsed`]): nothing is ever sent outside a transaction.

    use std::collections::HashMap;
    use std::ffi::CString;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use zeroize::Zeroizing;

    use super::{Access, Error, Transport};
    use crate::apdu::Command;
    use crate::piv::{ins, object};

    /// The longest a hold lasts, from its outermost `begin`, whatever this program keeps
    /// sending: a program that made a context-specific PIN check and never signs (or keeps
    /// the card busy) must not lock every other program out.
    pub const HOLD_LIMIT: Duration = Duration::from_secs(10);
    /// How long the transport waits for any answer while another program holds the card:
    /// longer than [`HOLD_LIMIT`], so a well-behaved program is waited for.
    pub const BEGIN_WAIT: Duration = Duration::from_secs(15);
    /// How long the transport waits for a card's answer inside this program's own hold,
    /// where no other program can delay it: only the card itself (an RSA generation on a
    /// slow card takes tens of seconds). A command given up on may still have run.
    pub const CARD_WAIT: Duration = Duration::from_secs(120);

    enum Request {
        Transmit(Zeroizing<Vec<u8>>),
        Begin,
        End,
        Reset,
        Atr,
    }

    enum Reply {
        /// The worker connected (with whether the card is contactless), or could not.
        Connected(Result<bool, Error>),
        Data(Result<Vec<u8>, Error>),
        Begun(Result<Access, Error>),
        Done(Result<(), Error>),
    }

    /// Shared by the transport and its worker. The worker answers only while holding it,
    /// after checking `abandoned`; the transport sets `abandoned` while holding it, after
    /// checking that no answer came. So an answer is either delivered or never sent.
    #[derive(Default)]
    struct Handshake {
        abandoned: bool,
    }

    fn lock(h: &Mutex<Handshake>) -> std::sync::MutexGuard<'_, Handshake> {
        h.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Per reader, whether a worker that a transport gave up on is still alive.
    static STUCK: Mutex<Option<HashMap<String, Arc<AtomicBool>>>> = Mutex::new(None);

    fn stuck(reader: &str) -> bool {
        let mut map = STUCK.lock().unwrap_or_else(|p| p.into_inner());
        let map = map.get_or_insert_with(HashMap::new);
        match map.get(reader) {
            Some(alive) if alive.load(Ordering::SeqCst) => true,
            Some(_) => {
                map.remove(reader);
                false
            }
            None => false,
        }
    }

    fn mark_stuck(reader: &str, alive: &Arc<AtomicBool>) {
        let mut map = STUCK.lock().unwrap_or_else(|p| p.into_inner());
        map.get_or_insert_with(HashMap::new)
            .insert(reader.to_owned(), Arc::clone(alive));
    }

    /// A card in a PC/SC reader (pcsc-lite on Linux), connected in shared mode.
    pub struct PcscTransport {
        /// `None` once dropped (the worker then disconnects and ends).
        requests: Option<Sender<Request>>,
        replies: Receiver<Reply>,
        handshake: Arc<Mutex<Handshake>>,
        /// The worker is alive (cleared by the worker as it exits).
        alive: Arc<AtomicBool>,
        /// Given up after a wait ran out: nothing more is sent.
        poisoned: bool,
        /// How deep this transport's holds are (begun and not yet ended).
        depth: usize,
        worker: Option<std::thread::JoinHandle<()>>,
        reader: String,
        contactless: bool,
    }

    impl Drop for PcscTransport {
        /// Waits for the worker to disconnect (leaving the card as it is): a process that
        /// exits with its handle still open is cleaned up by pcscd, which *resets* the card
        /// and so logs out every other program using it. A worker this transport gave up on
        /// is left to end by itself (it waits in pcsc-lite for the card).
        fn drop(&mut self) {
            drop(self.requests.take());
            if let Some(worker) = self.worker.take() {
                if !self.poisoned {
                    let _ = worker.join();
                }
            }
        }
    }

    impl std::fmt::Debug for PcscTransport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PcscTransport")
                .field("reader", &self.reader)
                .field("poisoned", &self.poisoned)
                .finish()
        }
    }

    fn map(e: pcsc::Error) -> Error {
        match e {
            pcsc::Error::RemovedCard
            | pcsc::Error::NoSmartcard
            | pcsc::Error::ReaderUnavailable
            | pcsc::Error::UnknownReader
            | pcsc::Error::NoService
            | pcsc::Error::ServiceStopped
            | pcsc::Error::InvalidHandle => Error::Removed,
            pcsc::Error::ResetCard => Error::Reset,
            other => Error::Transport(other.to_string()),
        }
    }

    /// PC/SC Part 3 §3.1.3.2.3: a contactless card's ATR is `3B 8n 80 01 …`.
    pub fn is_contactless_atr(atr: &[u8]) -> bool {
        matches!(atr, [0x3B, t0, 0x80, 0x01, ..] if t0 & 0xF0 == 0x80)
    }

    /// Whether a failure to list readers means there are none: pcscd absent or stopped, or
    /// no reader. Any other failure (a reader unplugged between listing and asking its
    /// state) is transient, and the caller keeps what it knew.
    fn no_readers(e: pcsc::Error) -> bool {
        matches!(
            e,
            pcsc::Error::NoService | pcsc::Error::ServiceStopped | pcsc::Error::NoReadersAvailable
        )
    }

    fn gone() -> Error {
        Error::Transport("the card thread has stopped".into())
    }

    fn out_of_step() -> Error {
        Error::Transport("card thread out of step".into())
    }

    impl PcscTransport {
        /// The names of the readers pcscd knows (none when pcscd is not running).
        pub fn readers() -> Result<Vec<String>, Error> {
            Ok(Self::readers_with_presence()?
                .into_iter()
                .map(|(n, _)| n)
                .collect())
        }

        /// The readers pcscd knows, each with whether a card is in it. Without pcscd, or
        /// without readers, the list is empty, not an error: a module that fails
        /// C_GetSlotList breaks every other module behind p11-kit-proxy in a browser. Other
        /// failures are errors, so that a transient one does not look like every card gone.
        pub fn readers_with_presence() -> Result<Vec<(String, bool)>, Error> {
            let ctx = match pcsc::Context::establish(pcsc::Scope::User) {
                Ok(c) => c,
                Err(e) if no_readers(e) => return Ok(Vec::new()),
                Err(e) => return Err(map(e)),
            };
            let names = match ctx.list_readers_owned() {
                Ok(n) => n,
                Err(e) if no_readers(e) => return Ok(Vec::new()),
                Err(e) => return Err(Error::Transport(e.to_string())),
            };
            let mut states: Vec<pcsc::ReaderState> = names
                .iter()
                .map(|n| pcsc::ReaderState::new(n.clone(), pcsc::State::UNAWARE))
                .collect();
            match ctx.get_status_change(Duration::ZERO, &mut states) {
                Ok(()) => {}
                Err(e) if no_readers(e) => return Ok(Vec::new()),
                Err(e) => return Err(Error::Transport(e.to_string())),
            }
            Ok(states
                .iter()
                .map(|s| {
                    (
                        s.name().to_string_lossy().into_owned(),
                        s.event_state().contains(pcsc::State::PRESENT),
                    )
                })
                .collect())
        }

        /// Waits until a reader or card comes or goes, or `timeout` passes (without pcscd:
        /// sleeps `timeout`). For C_WaitForSlotEvent: the caller compares the readers
        /// before and after.
        pub fn wait_for_change(timeout: Duration) {
            let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
                std::thread::sleep(timeout);
                return;
            };
            let names = ctx.list_readers_owned().unwrap_or_default();
            let mut states: Vec<pcsc::ReaderState> = names
                .into_iter()
                .map(|n| pcsc::ReaderState::new(n, pcsc::State::UNAWARE))
                .collect();
            // pcsc-lite's reader-list notification: changes when a reader is added or removed.
            states.push(pcsc::ReaderState::new(
                pcsc::PNP_NOTIFICATION(),
                pcsc::State::UNAWARE,
            ));
            if ctx.get_status_change(Duration::ZERO, &mut states).is_err() {
                std::thread::sleep(timeout);
                return;
            }
            for s in &mut states {
                s.sync_current_state();
            }
            // Timeout or a change: either way the caller looks again.
            if let Err(e) = ctx.get_status_change(timeout, &mut states) {
                if e != pcsc::Error::Timeout {
                    std::thread::sleep(timeout.min(Duration::from_millis(200)));
                }
            }
        }

        /// Connects (shared) to the card in the named reader, waiting at most
        /// [`BEGIN_WAIT`]; [`Error::Busy`] at once while a worker given up on for this
        /// reader still waits for the card.
        pub fn connect(reader: &str) -> Result<Self, Error> {
            if stuck(reader) {
                return Err(Error::Busy);
            }
            let name = CString::new(reader).map_err(|_| Error::InvalidArgument("reader name"))?;
            let (requests, inbox) = mpsc::channel();
            let (outbox, replies) = mpsc::channel();
            let handshake = Arc::new(Mutex::new(Handshake::default()));
            let alive = Arc::new(AtomicBool::new(true));
            let worker = Worker {
                inbox,
                outbox,
                handshake: Arc::clone(&handshake),
                alive: Arc::clone(&alive),
                verified_in_hold: false,
                lapsed: 0,
            };
            let thread = std::thread::Builder::new()
                .name("tessera-pcsc".into())
                .spawn(move || worker.start(&name))
                .map_err(|e| Error::Transport(format!("starting the card thread: {e}")))?;
            let mut transport = Self {
                requests: Some(requests),
                replies,
                handshake,
                alive,
                poisoned: false,
                depth: 0,
                worker: Some(thread),
                reader: reader.to_owned(),
                contactless: false,
            };
            match transport.wait_reply(BEGIN_WAIT)? {
                Reply::Connected(r) => transport.contactless = r?,
                _ => return Err(out_of_step()),
            }
            Ok(transport)
        }

        /// Waits up to `max` for workers given up on (for any reader) to end: a process
        /// that exits while one still has its card handle open makes pcscd reset the card
        /// for every program. Returns whether none is left.
        pub fn settle_abandoned(max: Duration) -> bool {
            let deadline = Instant::now() + max;
            loop {
                let left = {
                    let mut map = STUCK.lock().unwrap_or_else(|p| p.into_inner());
                    let map = map.get_or_insert_with(HashMap::new);
                    map.retain(|_, alive| alive.load(Ordering::SeqCst));
                    map.len()
                };
                if left == 0 {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// The card's ATR.
        pub fn atr(&mut self) -> Result<Vec<u8>, Error> {
            match self.ask(Request::Atr)? {
                Reply::Data(r) => r,
                _ => Err(out_of_step()),
            }
        }

        pub fn reader(&self) -> &str {
            &self.reader
        }

        /// The next answer, within `wait`; otherwise the connection is given up.
        fn wait_reply(&mut self, wait: Duration) -> Result<Reply, Error> {
            match self.replies.recv_timeout(wait) {
                Ok(r) => Ok(r),
                Err(RecvTimeoutError::Disconnected) => Err(gone()),
                Err(RecvTimeoutError::Timeout) => {
                    let mut h = lock(&self.handshake);
                    // The worker answers under this lock: an answer is here now or never.
                    if let Ok(r) = self.replies.try_recv() {
                        return Ok(r);
                    }
                    h.abandoned = true;
                    drop(h);
                    self.poisoned = true;
                    mark_stuck(&self.reader, &self.alive);
                    Err(Error::Busy)
                }
            }
        }

        fn ask(&mut self, request: Request) -> Result<Reply, Error> {
            if self.poisoned {
                return Err(Error::Busy);
            }
            // Inside this program's hold only the card can be slow; outside it, another
            // program's transaction can make pcsc-lite wait without limit.
            let wait = match request {
                Request::Transmit(_) | Request::End if self.depth > 0 => CARD_WAIT,
                _ => BEGIN_WAIT,
            };
            if matches!(request, Request::End) {
                self.depth = self.depth.saturating_sub(1);
            }
            let begin = matches!(request, Request::Begin);
            self.requests
                .as_ref()
                .ok_or_else(gone)?
                .send(request)
                .map_err(|_| gone())?;
            let reply = self.wait_reply(wait)?;
            if begin && matches!(reply, Reply::Begun(Ok(_))) {
                self.depth += 1;
            }
            Ok(reply)
        }
    }

    impl Transport for PcscTransport {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
            match self.ask(Request::Transmit(Zeroizing::new(apdu.to_vec())))? {
                Reply::Data(r) => r,
                _ => Err(out_of_step()),
            }
        }

        fn reset(&mut self) -> Result<(), Error> {
            match self.ask(Request::Reset)? {
                Reply::Done(r) => r,
                _ => Err(out_of_step()),
            }
        }

        fn begin(&mut self) -> Result<Access, Error> {
            match self.ask(Request::Begin)? {
                Reply::Begun(r) => r,
                _ => Err(out_of_step()),
            }
        }

        fn end(&mut self) {
            // The worker acknowledges, so that requests and replies stay paired. On a
            // connection given up, there is nothing to end here: the worker ends its
            // transaction itself.
            let _ = self.ask(Request::End);
        }

        fn contactless(&mut self) -> bool {
            self.contactless
        }

        fn usable(&mut self) -> bool {
            // A worker that ended (it panicked, or pcsc-lite failed it) serves nothing more.
            !self.poisoned && self.alive.load(Ordering::SeqCst)
        }
    }

    fn transmit(card: &pcsc::Card, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        let n = card.transmit(apdu, &mut buf).map_err(map)?.len();
        buf.truncate(n);
        Ok(buf)
    }

    fn atr(card: &pcsc::Card) -> Result<Vec<u8>, Error> {
        card.status2_owned()
            .map(|status| status.atr().to_vec())
            .map_err(map)
    }

    /// After another program reset the card: reconnect without resetting it again
    /// (`SCARD_LEAVE_CARD`), so that the handle works, and tell the caller.
    fn reconnect_after_reset(card: &mut pcsc::Card) -> Error {
        match card.reconnect(
            pcsc::ShareMode::Shared,
            pcsc::Protocols::ANY,
            pcsc::Disposition::LeaveCard,
        ) {
            Ok(()) => Error::Reset,
            Err(e) => map(e),
        }
    }

    fn disconnect(card: pcsc::Card) {
        if let Err((card, _)) = card.disconnect(pcsc::Disposition::LeaveCard) {
            // Dropping it would reset the card for everyone; pcscd cleans up the handle when
            // this process's connection closes.
            std::mem::forget(card);
        }
    }

    /// GET DATA of the Discovery Object: a harmless command that ends a PIN-always
    /// freshness without re-selecting (some cards lose their login on a re-SELECT).
    fn end_freshness() -> Vec<u8> {
        Command::new(0, ins::GET_DATA, 0x3F, 0xFF)
            .with_data(vec![0x5C, 0x01, object::DISCOVERY as u8])
            .with_le(256)
            .to_bytes()
    }

    enum Held {
        /// The outermost `End` came (already answered).
        Ended,
        /// The hold reached [`HOLD_LIMIT`] at this depth; the request that came after it,
        /// if any, is still to be answered (as one on a lapsed hold).
        Lapsed(usize, Option<Request>),
        /// A command found the card reset (pulled and put back, or another program); its
        /// answer is for the caller to send after reconnecting.
        CardReset,
        /// The transport is gone, or gave up: end everything.
        Closed,
    }

    /// Owns the card: serves requests, and holds a transaction between `Begin` and the
    /// matching `End`. Disconnects with `SCARD_LEAVE_CARD`: the `pcsc` crate's own drop
    /// resets the card, which would log out every other program using it.
    struct Worker {
        inbox: Receiver<Request>,
        outbox: Sender<Reply>,
        handshake: Arc<Mutex<Handshake>>,
        alive: Arc<AtomicBool>,
        /// A VERIFY was sent during the current hold: its freshness must not outlive it.
        verified_in_hold: bool,
        /// After a lapse: how many `End`s the transport still owes for the lapsed hold.
        lapsed: usize,
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            self.alive.store(false, Ordering::SeqCst);
        }
    }

    impl Worker {
        /// Answers, unless the transport gave up (then: false, and the worker ends).
        fn answer(&self, reply: Reply) -> bool {
            let h = lock(&self.handshake);
            !h.abandoned && self.outbox.send(reply).is_ok()
        }

        fn start(self, reader: &CString) {
            let connected = pcsc::Context::establish(pcsc::Scope::User)
                .and_then(|ctx| ctx.connect(reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY))
                .map_err(map);
            let card = match connected {
                Ok(card) => card,
                Err(e) => {
                    self.answer(Reply::Connected(Err(e)));
                    return;
                }
            };
            // The ATR from SCardStatus (every reader driver reports it there; vpcd does not
            // answer the ATR attribute); asked before answering, never under the lock.
            let contactless = card
                .status2_owned()
                .map(|status| is_contactless_atr(status.atr()))
                .unwrap_or(false);
            if self.answer(Reply::Connected(Ok(contactless))) {
                self.run(card);
            } else {
                disconnect(card);
            }
        }

        fn run(mut self, mut card: pcsc::Card) {
            let mut carried = None;
            loop {
                let request = match carried.take() {
                    Some(r) => r,
                    None => match self.inbox.recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    },
                };
                let reply = if self.lapsed > 0 {
                    // Nothing is sent outside a transaction: the holder's commands are
                    // refused until it ends the hold that lapsed.
                    match request {
                        Request::End => {
                            self.lapsed -= 1;
                            Reply::Done(Ok(()))
                        }
                        Request::Begin => Reply::Begun(Err(Error::Lapsed)),
                        Request::Transmit(_) => Reply::Data(Err(Error::Lapsed)),
                        Request::Reset => Reply::Done(Err(Error::Lapsed)),
                        Request::Atr => Reply::Data(atr(&card)),
                    }
                } else {
                    match request {
                        Request::Begin => match self.hold(&mut card) {
                            Some(Held::Ended) | None => continue,
                            Some(Held::Lapsed(depth, next)) => {
                                self.lapsed = depth;
                                carried = next;
                                continue;
                            }
                            Some(Held::Closed) => break,
                            Some(Held::CardReset) => {
                                Reply::Data(Err(reconnect_after_reset(&mut card)))
                            }
                        },
                        // Every command the module sends is inside a hold; one outside (a
                        // caller without `begin`) gets its own transaction.
                        Request::Transmit(apdu) => {
                            Reply::Data(self.transmit_alone(&mut card, &apdu))
                        }
                        // No hold to end (the caller is unbalanced): nothing to do.
                        Request::End => Reply::Done(Ok(())),
                        Request::Reset => Reply::Done(
                            card.reconnect(
                                pcsc::ShareMode::Shared,
                                pcsc::Protocols::ANY,
                                pcsc::Disposition::ResetCard,
                            )
                            .map_err(map),
                        ),
                        Request::Atr => Reply::Data(atr(&card)),
                    }
                };
                if !self.answer(reply) {
                    break;
                }
            }
            disconnect(card);
        }

        /// A command sent without a hold: in a transaction of its own, freshness ended.
        fn transmit_alone(&mut self, card: &mut pcsc::Card, apdu: &[u8]) -> Result<Vec<u8>, Error> {
            let r = match card.transaction2() {
                Ok(tx) => {
                    let r = self.transmit(&tx, apdu);
                    if !matches!(r, Err(Error::Reset)) {
                        self.consume_freshness(&tx);
                    }
                    let _ = tx.end(pcsc::Disposition::LeaveCard);
                    r
                }
                Err((_, e)) => Err(map(e)),
            };
            match r {
                Err(Error::Reset) => Err(reconnect_after_reset(card)),
                other => other,
            }
        }

        fn transmit(&mut self, card: &pcsc::Card, apdu: &[u8]) -> Result<Vec<u8>, Error> {
            if apdu.get(1) == Some(&ins::VERIFY) {
                self.verified_in_hold = true;
            }
            transmit(card, apdu)
        }

        /// Ends any PIN freshness the hold created, before the card goes to others.
        fn consume_freshness(&mut self, card: &pcsc::Card) {
            if std::mem::take(&mut self.verified_in_hold) {
                let _ = transmit(card, &end_freshness());
            }
        }

        /// Takes the card for a `Begin`, answers (unless the transport gave up) and serves
        /// the hold. `None`: nothing more to do for this request.
        fn hold(&mut self, card: &mut pcsc::Card) -> Option<Held> {
            self.verified_in_hold = false;
            let began = match card.transaction2() {
                Ok(mut tx) => {
                    let held = if self.answer(Reply::Begun(Ok(Access::Fresh))) {
                        self.held(&mut tx)
                    } else {
                        Held::Closed
                    };
                    if !matches!(held, Held::CardReset) {
                        self.consume_freshness(&tx);
                    }
                    // After a reset the transaction is gone with the old card state; ending it
                    // fails harmlessly.
                    let _ = tx.end(pcsc::Disposition::LeaveCard);
                    Ok(held)
                }
                Err((_, e)) => Err(map(e)),
            };
            match began {
                Ok(held) => Some(held),
                Err(e) => {
                    let e = match e {
                        Error::Reset => reconnect_after_reset(card),
                        other => other,
                    };
                    if self.answer(Reply::Begun(Err(e))) {
                        None
                    } else {
                        Some(Held::Closed)
                    }
                }
            }
        }

        /// Serves requests inside a transaction until the outermost `End`, or until
        /// [`HOLD_LIMIT`] after it began.
        fn held(&mut self, tx: &mut pcsc::Transaction<'_>) -> Held {
            let deadline = Instant::now() + HOLD_LIMIT;
            let mut depth = 1usize;
            // The card is in the middle of an exchange (a command chain, or an answer with
            // more to collect by GET RESPONSE): its next link is let through even past the
            // limit, or a slow card's answer would be lost half-read.
            let mut continuing = false;
            loop {
                let left = if continuing {
                    CARD_WAIT
                } else {
                    deadline.saturating_duration_since(Instant::now())
                };
                let request = match self.inbox.recv_timeout(left) {
                    Ok(r) if !continuing && Instant::now() >= deadline => {
                        return Held::Lapsed(depth, Some(r))
                    }
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => return Held::Lapsed(depth, None),
                    Err(RecvTimeoutError::Disconnected) => return Held::Closed,
                };
                continuing = false;
                let reply = match request {
                    Request::Transmit(apdu) => match self.transmit(tx, &apdu) {
                        Err(Error::Reset) => return Held::CardReset,
                        r => {
                            let chained = apdu.first().is_some_and(|cla| cla & 0x10 != 0);
                            let more =
                                matches!(&r, Ok(a) if a.len() >= 2 && a[a.len() - 2] == 0x61);
                            continuing = chained || more;
                            Reply::Data(r)
                        }
                    },
                    Request::Begin => {
                        depth += 1;
                        Reply::Begun(Ok(Access::Continued))
                    }
                    Request::End => {
                        depth -= 1;
                        if depth == 0 {
                            self.consume_freshness(tx);
                            if !self.answer(Reply::Done(Ok(()))) {
                                return Held::Closed;
                            }
                            return Held::Ended;
                        }
                        Reply::Done(Ok(()))
                    }
                    Request::Reset => Reply::Done(
                        tx.reconnect(
                            pcsc::ShareMode::Shared,
                            pcsc::Protocols::ANY,
                            pcsc::Disposition::ResetCard,
                        )
                        .map_err(map),
                    ),
                    Request::Atr => Reply::Data(atr(tx)),
                };
                if !self.answer(reply) {
                    return Held::Closed;
                }
            }
        }
    }
}
