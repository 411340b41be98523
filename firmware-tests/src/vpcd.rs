//! The vpcd wire protocol (vsmartcard's virtual PCD driver for pcscd): both directions send
//! a 2-byte big-endian length and then the payload. A 1-byte message from vpcd is a control
//! code (0 power off, 1 power on, 2 reset, 4 get ATR; only 4 is answered); anything longer
//! is a command APDU, answered with the response APDU.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use tessera_piv::card::{Interface, HISTORICAL_BYTES};

/// What the card does with a message from vpcd.
pub trait Card {
    /// Power on, power off or reset: the card forgets its security status.
    fn reset(&mut self);
    /// Answers a command APDU.
    fn process(&mut self, apdu: &[u8]) -> Vec<u8>;
    /// Which interface the card presents (decides its ATR).
    fn interface(&self) -> Interface;
}

/// The ATR the card presents: T=1 with proprietary historical bytes over the contact
/// interface; over contactless the PC/SC Part 3 §3.1.3.2.3 form `3B 8n 80 01 <hist> TCK`,
/// which marks a contactless card to OpenSC and libnfc.
pub fn atr(interface: Interface) -> Vec<u8> {
    let n = HISTORICAL_BYTES.len() as u8;
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

/// Serves one vpcd connection until vpcd closes it.
pub fn serve(stream: &mut TcpStream, card: &mut impl Card) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        // vpcd writes the length and the APDU in two sends without TCP_NODELAY: Nagle holds
        // the APDU until we acknowledge the length, and delayed ACK would make that wait
        // 40 ms per APDU. Acknowledge at once. (Linux resets quick-ACK mode by itself, so
        // it is set before every read.)
        socket2::SockRef::from(&*stream).set_tcp_quickack(true)?;
        let mut len = [0u8; 2];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = usize::from(u16::from_be_bytes(len));
        let mut msg = vec![0u8; len];
        stream.read_exact(&mut msg)?;
        let reply = match msg.as_slice() {
            [0] | [1] | [2] => {
                card.reset();
                continue;
            }
            [4] => atr(card.interface()),
            [_] => continue,
            apdu => card.process(apdu),
        };
        let n = u16::try_from(reply.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "reply too long"))?;
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        stream.write_all(&out)?;
        stream.flush()?;
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
}
