//! `tessera-piv-conformance`: runs the PIV conformance catalogue against a card in a PC/SC
//! reader and prints a per-clause report.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tessera_firmware_tests::conformance::{self, Config};
use tessera_piv::host::PcscTransport;
use tessera_piv::piv::Algorithm;

/// PIV card conformance suite (NIST SP 800-73-4 and the Yubico PIV extensions).
///
/// Runs a catalogue of checks against the card in a PC/SC reader and prints one line per
/// check: PASS, FAIL with what the card answered, or N/A with the reason. Exits 1 if any
/// check fails. Without --destructive the suite leaves keys, objects and counters as they
/// were; with it, it generates keys, writes objects, blocks and unblocks the PIN and resets
/// the card (Yubico RESET) — only for test cards.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The reader holding the card (see --list-readers); a unique substring is enough.
    #[arg(long, required_unless_present = "list_readers")]
    reader: Option<String>,
    /// List the PC/SC readers and exit.
    #[arg(long)]
    list_readers: bool,
    /// The card's PIN.
    #[arg(long, default_value = "123456")]
    pin: String,
    /// The card's PUK.
    #[arg(long, default_value = "12345678")]
    puk: String,
    /// The management key, hex (default: the factory 3DES key 010203…08 ×3).
    #[arg(long, value_name = "HEX")]
    management_key: Option<String>,
    /// The management key's algorithm.
    #[arg(long, value_enum, default_value_t = MgmtAlg::Tdes)]
    management_alg: MgmtAlg,
    /// Also run checks that change the card (keys, objects, counters, reset).
    #[arg(long)]
    destructive: bool,
    /// The card is reached over its contactless interface.
    #[arg(long)]
    contactless: bool,
    /// The card has been issued to a person: fail if the factory PIN, PUK or management
    /// key is still set (on a blank card they are only reported).
    #[arg(long)]
    issued: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MgmtAlg {
    Tdes,
    Aes128,
    Aes192,
    Aes256,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let readers = PcscTransport::readers().context("listing PC/SC readers (is pcscd running?)")?;
    if args.list_readers {
        for r in &readers {
            println!("{r}");
        }
        return Ok(());
    }
    let wanted = args.reader.as_deref().unwrap_or_default();
    let matching: Vec<&String> = readers.iter().filter(|r| r.contains(wanted)).collect();
    let reader = match matching.as_slice() {
        [one] => one.as_str(),
        [] => bail!("no reader matches {wanted:?}; readers: {readers:?}"),
        many => bail!("{} readers match {wanted:?}: {many:?}", many.len()),
    };
    let management_alg = match args.management_alg {
        MgmtAlg::Tdes => Algorithm::Tdes,
        MgmtAlg::Aes128 => Algorithm::Aes128,
        MgmtAlg::Aes192 => Algorithm::Aes192,
        MgmtAlg::Aes256 => Algorithm::Aes256,
    };
    let management_key = match &args.management_key {
        Some(h) => hex::decode(h).context("--management-key is not hex")?,
        None => tessera_piv::card::DEFAULT_MANAGEMENT_KEY.to_vec(),
    };
    let config = Config {
        pin: args.pin.into_bytes(),
        puk: args.puk.into_bytes(),
        management_alg,
        management_key,
        destructive: args.destructive,
        contactless: args.contactless,
        issued: args.issued,
    };
    let mut transport =
        PcscTransport::connect(reader).with_context(|| format!("connecting to {reader}"))?;
    println!("PIV conformance of the card in \"{reader}\"");
    let outcomes = conformance::run(&mut transport, &config);
    print!("{}", conformance::report(&outcomes));
    if !conformance::all_passed(&outcomes) {
        std::process::exit(1);
    }
    Ok(())
}
