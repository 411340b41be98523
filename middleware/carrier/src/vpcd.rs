//! The vpcd wire protocol (vsmartcard's virtual PCD driver for pcscd): both directions send
//! a 2-byte big-endian length and then the payload. A 1-byte message from vpcd is a control
//! code when it is one of vpcd's four (0 power off, 1 power on, 2 reset, 4 get ATR; only 4 is
//! answered); every other message, whatever its length, is a command APDU and gets a
//! response APDU. An APDU of one byte is malformed and is answered `6700` by the card, as
//! vsmartcard's own virtual card does: vpcd and pcscd wait for an answer, and a card that
//! stays silent hangs the reader for every program.
//!
//! vpcd frames a program's 1-byte APDUs `00`, `01` and `02` exactly like its power-off,
//! power-on and reset codes. `01` and `02` are told apart by what follows: vpcd follows a
//! real power-on or reset at once with GET ATR (vsmartcard `ifd-vpcd.c`, `IFDHPowerICC`),
//! while after an APDU it waits for the answer. So the card waits [`CONTROL_FOLLOW_UP`] for
//! GET ATR, and if nothing comes answers `6700` instead of resetting. `00` cannot be told
//! apart (a real power-off is followed by nothing): a program that sends the APDU `00`
//! leaves the reader waiting until pcscd restarts. That is a flaw of the vpcd protocol; a
//! local program can as well lock the reader with an exclusive connection.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use tessera_piv::card::{Interface, HISTORICAL_BYTES};

/// vpcd's control codes (vsmartcard `vpcd.h`).
mod control {
    pub(super) const POWER_OFF: u8 = 0;
    pub(super) const POWER_ON: u8 = 1;
    pub(super) const RESET: u8 = 2;
    pub(super) const GET_ATR: u8 = 4;
}

/// How long the card waits, after vpcd's power-on or reset code, for the GET ATR that
/// always follows it, before taking the message for a 1-byte APDU.
/// vpcd sends GET ATR within microseconds; three seconds leave room for a loaded machine.
pub const CONTROL_FOLLOW_UP: Duration = Duration::from_secs(3);

/// What the card does with a message from vpcd.
pub trait Card {
    /// Power on, power off or reset: the card forgets its security status.
    fn reset(&mut self);
    /// Answers a command APDU (any length, malformed ones included).
    fn process(&mut self, apdu: &[u8]) -> Vec<u8>;
    /// Which interface the card presents (decides its ATR).
    fn interface(&self) -> Interface;
}

/// The ATR the card presents: T=1 with proprietary historical bytes over the contact
/// interface; over contactless the PC/SC Part 3 §3.1.3.2.3 form `3B 8n 80 01 <hist> TCK`,
/// which marks a contactless card to OpenSC and libnfc.
pub fn atr(interface: Interface) -> Vec<u8> {
    let n = u8::try_from(HISTORICAL_BYTES.len()).unwrap_or(15) & 0x0F;
    let mut atr = match interface {
        // T0: TD1 present, n historical bytes; TD1: T=1.
        Interface::Contact => vec![0x3B, 0x80 | n, 0x01],
        // T0: TD1 present; TD1: TD2 present, T=0; TD2: T=1.
        Interface::Contactless => vec![0x3B, 0x80 | n, 0x80, 0x01],
    };
    atr.extend_from_slice(HISTORICAL_BYTES);
    // TCK: XOR of T0 up to the last historical byte (ISO 7816-3 §8.2.5).
    let tck = atr[1..].iter().fold(0u8, |a, b| a ^ b);
    atr.push(tck);
    atr
}

/// Reads one framed message; `None` when vpcd closed the connection.
fn read_message(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    // Some vpcd versions write the length and the APDU in two sends without TCP_NODELAY:
    // Nagle then holds the APDU until we acknowledge the length, and delayed ACK makes that
    // wait 40 ms per APDU. Acknowledge at once; harmless where vpcd sends both in one
    // write. (Linux leaves quick-ACK mode by itself, so it is set before every read.)
    socket2::SockRef::from(&*stream).set_tcp_quickack(true)?;
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg)?;
    Ok(Some(msg))
}

/// After a power-on or reset code: the next message if it comes within
/// [`CONTROL_FOLLOW_UP`] (GET ATR, for a real one), `Ok(None)` if none comes (the code was a
/// program's 1-byte APDU), an `UnexpectedEof` error if vpcd closed.
fn follow_up(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    stream.set_read_timeout(Some(CONTROL_FOLLOW_UP))?;
    let mut first = [0u8; 1];
    let peeked = loop {
        match stream.peek(&mut first) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    stream.set_read_timeout(None)?;
    let closed = || io::Error::new(io::ErrorKind::UnexpectedEof, "vpcd closed");
    match peeked {
        Ok(0) => Err(closed()),
        Ok(_) => read_message(stream)?.map(Some).ok_or_else(closed),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Serves one vpcd connection until vpcd closes it.
pub fn serve(stream: &mut TcpStream, card: &mut impl Card) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let msg = match pending.take() {
            Some(m) => m,
            None => match read_message(stream)? {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        let reply = match msg.as_slice() {
            [control::POWER_OFF] => {
                card.reset();
                continue;
            }
            [b @ (control::POWER_ON | control::RESET)] => match follow_up(stream) {
                Ok(Some(next)) => {
                    card.reset();
                    pending = Some(next);
                    continue;
                }
                // Nothing followed: a program's 1-byte APDU, waiting for its answer.
                Ok(None) => card.process(&[*b]),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            },
            [control::GET_ATR] => atr(card.interface()),
            apdu => card.process(apdu),
        };
        send(stream, &reply)?;
    }
}

/// Writes one framed message.
pub fn send(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let n = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too long"))?;
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(payload);
    stream.write_all(&out)?;
    stream.flush()
}

/// Who opens the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The card connects to vpcd (reader.conf `DEVICENAME /dev/null:PORT`), and connects
    /// again whenever the link drops (pcscd restarted).
    Connect,
    /// The card listens and vpcd connects (reader.conf `DEVICENAME 127.0.0.1:PORT`).
    Listen,
}

/// Puts `card` into pcscd for good: connects or listens at `addr` and serves every
/// connection in turn, resetting the card between them (to pcscd a new connection is a
/// card inserted). `on_event` hears what happens (listening, a link lost) for the log.
/// Returns only on an error that retrying cannot mend (the address cannot be bound).
pub fn run(
    mode: Mode,
    addr: impl ToSocketAddrs + Clone,
    card: &mut impl Card,
    mut on_event: impl FnMut(&str),
) -> io::Result<()> {
    match mode {
        Mode::Connect => loop {
            match TcpStream::connect(addr.clone()) {
                Ok(mut stream) => {
                    if let Err(e) = serve(&mut stream, card) {
                        on_event(&format!("connection to vpcd lost: {e}"));
                    }
                    card.reset();
                }
                // vpcd is not up yet (or pcscd restarted): try again shortly.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        },
        Mode::Listen => {
            let listener = TcpListener::bind(addr)?;
            on_event(&format!("listening for vpcd on {}", listener.local_addr()?));
            for stream in listener.incoming() {
                let mut stream = stream?;
                if let Err(e) = serve(&mut stream, card) {
                    on_event(&format!("vpcd connection ended: {e}"));
                }
                card.reset();
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atrs_have_valid_check_bytes_and_contactless_marker() {
        for i in [Interface::Contact, Interface::Contactless] {
            let a = atr(i);
            assert_eq!(a[1..].iter().fold(0u8, |x, y| x ^ y), 0);
        }
        assert_eq!(&atr(Interface::Contactless)[2..4], &[0x80, 0x01]);
        assert_ne!(&atr(Interface::Contact)[2..4], &[0x80, 0x01]);
    }

    /// A card that answers every APDU with its length and `9000`, and counts resets.
    struct Echo {
        resets: usize,
    }

    impl Card for Echo {
        fn reset(&mut self) {
            self.resets += 1;
        }
        fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
            if apdu.len() < 4 {
                return vec![0x67, 0x00];
            }
            vec![u8::try_from(apdu.len()).unwrap_or(0xFF), 0x90, 0x00]
        }
        fn interface(&self) -> Interface {
            Interface::Contact
        }
    }

    fn exchange(vpcd: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        send(vpcd, msg).unwrap();
        let mut len = [0u8; 2];
        vpcd.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        vpcd.read_exact(&mut reply).unwrap();
        reply
    }

    #[test]
    fn every_message_but_the_silent_control_codes_gets_an_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut card = Echo { resets: 0 };
            serve(&mut stream, &mut card).unwrap();
            card.resets
        });
        let mut vpcd = TcpStream::connect(addr).unwrap();
        vpcd.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Power on and reset, each followed by GET ATR as vpcd does, get no answer of their
        // own; the ATR proves the card did not read them as APDUs.
        send(&mut vpcd, &[control::POWER_ON]).unwrap();
        assert_eq!(
            exchange(&mut vpcd, &[control::GET_ATR]),
            atr(Interface::Contact)
        );
        send(&mut vpcd, &[control::RESET]).unwrap();
        assert_eq!(
            exchange(&mut vpcd, &[control::GET_ATR]),
            atr(Interface::Contact)
        );
        // 01 and 02 followed by nothing: a program's APDUs, answered without a reset.
        for b in [control::POWER_ON, control::RESET] {
            assert_eq!(exchange(&mut vpcd, &[b]), [0x67, 0x00], "APDU {b:02X}");
        }
        // One-byte messages that are not control codes are (malformed) APDUs: answered.
        for b in [3u8, 5, 0x80, 0xFF] {
            assert_eq!(exchange(&mut vpcd, &[b]), [0x67, 0x00], "message {b:02X}");
        }
        assert_eq!(exchange(&mut vpcd, &[]), [0x67, 0x00]);
        assert_eq!(exchange(&mut vpcd, &[0, 0xA4, 4, 0]), [4, 0x90, 0x00]);
        drop(vpcd);
        assert_eq!(server.join().unwrap(), 2);
    }
}
