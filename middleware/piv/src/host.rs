//! The host side of the card edge: PIV commands over a [`Transport`].
//!
//! [`PivClient`] handles command chaining for long data (ISO 7816-4 §5.1.1.1) and collects
//! long answers with GET RESPONSE (`61xx`), so callers see whole objects. The card's answer
//! is kept apart from our own failures: [`Error::Card`] carries the status word.

use thiserror::Error;

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
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        (**self).transmit(apdu)
    }

    fn reset(&mut self) -> Result<(), Error> {
        (**self).reset()
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        (**self).transmit(apdu)
    }

    fn reset(&mut self) -> Result<(), Error> {
        (**self).reset()
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
}

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
    /// `61xx` continuations. Returns the final response, whatever its status.
    pub fn send(&mut self, cmd: &Command) -> Result<Response, Error> {
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
                resp = self.transmit_raw(&link.to_bytes())?;
                if i < last && !resp.sw.is_success() {
                    return Ok(resp);
                }
            }
            resp
        } else {
            self.transmit_raw(&cmd.to_bytes())?
        };
        let mut data = std::mem::take(&mut resp.data);
        while resp.sw.sw1() == 0x61 {
            let le = match resp.sw.sw2() {
                0 => 256,
                n => usize::from(n),
            };
            let get = Command::new(0, ins::GET_RESPONSE, 0, 0).with_le(le);
            resp = self.transmit_raw(&get.to_bytes())?;
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

    /// VERIFY the PIV PIN.
    pub fn verify_pin(&mut self, pin: &[u8]) -> Result<(), Error> {
        let pin = pad_pin(pin)?;
        self.call(&Command::new(0, ins::VERIFY, 0, KeyRef::PIN.0).with_data(pin))
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
        data.extend(pad_pin(new)?);
        self.call(&Command::new(0, ins::CHANGE_REFERENCE_DATA, 0, which.0).with_data(data))
            .map(drop)
    }

    /// RESET RETRY COUNTER: unblock the PIN with the PUK.
    pub fn unblock_pin(&mut self, puk: &[u8], new_pin: &[u8]) -> Result<(), Error> {
        let mut data = pad_pin(puk)?;
        data.extend(pad_pin(new_pin)?);
        self.call(&Command::new(0, ins::RESET_RETRY_COUNTER, 0, KeyRef::PIN.0).with_data(data))
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

/// Pads a PIN or PUK to the 8 bytes VERIFY expects.
pub fn pad_pin(pin: &[u8]) -> Result<Vec<u8>, Error> {
    if pin.len() > 8 {
        return Err(Error::InvalidArgument("PIN longer than 8 bytes"));
    }
    let mut v = pin.to_vec();
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
        Algorithm::Rsa1024 | Algorithm::Rsa2048 => Ok(PublicKey::Rsa {
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
pub use self::pcsc_transport::PcscTransport;

#[cfg(feature = "pcsc")]
mod pcsc_transport {
    use std::ffi::CString;

    use super::{Error, Transport};

    /// A card in a PC/SC reader (pcsc-lite on Linux).
    pub struct PcscTransport {
        card: pcsc::Card,
        reader: String,
    }

    impl std::fmt::Debug for PcscTransport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PcscTransport")
                .field("reader", &self.reader)
                .finish()
        }
    }

    fn map(e: pcsc::Error) -> Error {
        match e {
            pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard | pcsc::Error::ResetCard => {
                Error::Removed
            }
            other => Error::Transport(other.to_string()),
        }
    }

    impl PcscTransport {
        /// The names of the readers pcscd knows.
        pub fn readers() -> Result<Vec<String>, Error> {
            let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(map)?;
            let names = match ctx.list_readers_owned() {
                Ok(n) => n,
                Err(pcsc::Error::NoReadersAvailable) => return Ok(Vec::new()),
                Err(e) => return Err(map(e)),
            };
            Ok(names
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect())
        }

        /// The readers pcscd knows, each with whether a card is in it.
        pub fn readers_with_presence() -> Result<Vec<(String, bool)>, Error> {
            let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(map)?;
            let names = match ctx.list_readers_owned() {
                Ok(n) => n,
                Err(pcsc::Error::NoReadersAvailable) => return Ok(Vec::new()),
                Err(e) => return Err(map(e)),
            };
            let mut states: Vec<pcsc::ReaderState> = names
                .iter()
                .map(|n| pcsc::ReaderState::new(n.clone(), pcsc::State::UNAWARE))
                .collect();
            ctx.get_status_change(std::time::Duration::ZERO, &mut states)
                .map_err(map)?;
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

        /// Connects (shared) to the card in the named reader.
        pub fn connect(reader: &str) -> Result<Self, Error> {
            let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(map)?;
            let name = CString::new(reader).map_err(|_| Error::InvalidArgument("reader name"))?;
            let card = ctx
                .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
                .map_err(map)?;
            Ok(Self {
                card,
                reader: reader.to_owned(),
            })
        }

        /// The card's ATR.
        pub fn atr(&self) -> Result<Vec<u8>, Error> {
            self.card
                .get_attribute_owned(pcsc::Attribute::AtrString)
                .map_err(map)
        }

        pub fn reader(&self) -> &str {
            &self.reader
        }
    }

    impl Transport for PcscTransport {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
            let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
            let n = self.card.transmit(apdu, &mut buf).map_err(map)?.len();
            buf.truncate(n);
            Ok(buf)
        }

        fn reset(&mut self) -> Result<(), Error> {
            self.card
                .reconnect(
                    pcsc::ShareMode::Shared,
                    pcsc::Protocols::ANY,
                    pcsc::Disposition::ResetCard,
                )
                .map_err(map)
        }
    }
}
