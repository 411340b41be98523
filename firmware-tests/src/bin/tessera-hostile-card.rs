//! `tessera-hostile-card`: a card that answers against the rules, served to pcscd through
//! vpcd (listening), to show that a host program (our PKCS#11 module) fails within a bound
//! instead of hanging or growing without limit. Test tooling.

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tessera_carrier::vpcd;
use tessera_piv::card::Interface;

/// A hostile PIV card for vpcd.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on for vpcd (reader.conf `DEVICENAME 127.0.0.1:PORT`).
    #[arg(long, value_name = "HOST:PORT")]
    vpcd: String,
    /// How the card misbehaves.
    #[arg(long, value_enum)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Every command is answered `61 00` ("more data"), with no data, forever.
    Endless61,
    /// Every command is answered with 256 bytes and `61 00`, forever.
    Endless61Data,
    /// Every command is answered with as much data as vpcd carries (65 533 bytes) and
    /// `61 00`.
    HugeAnswers,
    /// Selects like a PIV card; every object is a `53` template whose length claims far
    /// more than follows.
    OversizedLengths,
    /// Selects like a PIV card; objects are truncated and nested TLV that does not parse.
    MalformedTlv,
}

struct Hostile {
    mode: Mode,
    n: usize,
}

const OK: [u8; 2] = [0x90, 0x00];
const MORE: [u8; 2] = [0x61, 0x00];

impl vpcd::Card for Hostile {
    fn reset(&mut self) {}

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.n += 1;
        let ins = apdu.get(1).copied().unwrap_or(0);
        let answer = |data: &[u8], sw: [u8; 2]| {
            let mut v = data.to_vec();
            v.extend_from_slice(&sw);
            v
        };
        // A PIV application property template, for the modes that must get past SELECT.
        let apt = [
            0x61, 0x11, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4F, 0x05,
            0xA0, 0x00, 0x00, 0x03, 0x08,
        ];
        match (self.mode, ins) {
            (Mode::Endless61, _) => MORE.to_vec(),
            (Mode::Endless61Data, _) => answer(&[0xAB; 256], MORE),
            (Mode::HugeAnswers, _) => answer(&vec![0xCD; 65_533], MORE),
            (Mode::OversizedLengths | Mode::MalformedTlv, 0xA4) => answer(&apt, OK),
            (Mode::OversizedLengths, 0xCB) => {
                answer(&[0x53, 0x84, 0x7F, 0xFF, 0xFF, 0xFF, 0x70, 0x82, 0xFF], OK)
            }
            (Mode::MalformedTlv, 0xCB) => match self.n % 3 {
                0 => answer(&[0x53, 0x05, 0x70, 0x83, 0x01], OK),
                1 => answer(&[0x53, 0x02, 0x34, 0x10], OK),
                _ => answer(&[0x5F, 0xFF, 0xFF, 0xFF, 0xFF], OK),
            },
            (Mode::OversizedLengths | Mode::MalformedTlv, 0xF7) => {
                answer(&[0x01, 0x01, 0x11, 0x02, 0x82, 0xFF, 0xFF], OK)
            }
            (Mode::OversizedLengths | Mode::MalformedTlv, 0x20) => vec![0x63, 0xC3],
            (Mode::OversizedLengths | Mode::MalformedTlv, _) => vec![0x6D, 0x00],
        }
    }

    fn interface(&self) -> Interface {
        Interface::Contact
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut card = Hostile {
        mode: args.mode,
        n: 0,
    };
    vpcd::run(vpcd::Mode::Listen, args.vpcd.as_str(), &mut card, |event| {
        eprintln!("tessera-hostile-card: {event}");
    })
    .with_context(|| format!("serving vpcd at {}", args.vpcd))
}
