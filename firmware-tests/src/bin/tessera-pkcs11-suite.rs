//! `tessera-pkcs11-suite`: runs the cryptoki-based PKCS#11 suite against a module.

use anyhow::Result;
use clap::Parser;
use tessera_firmware_tests::pkcs11_suite::{self, Config};

/// PKCS#11 suite for PIV tokens.
///
/// Loads a PKCS#11 module (Tessera's libtessera_pkcs11.so, OpenSC's opensc-pkcs11.so, …),
/// takes the first slot with a token and runs the checks: token and mechanism information,
/// object visibility and linking, PIN counting, ECDSA and RSA (PKCS#1 v1.5, PSS)
/// signatures verified in software, context-specific login for 9C, randomness, signing
/// from eight threads, logout. The card needs a P-256 key with certificate in 9A and an
/// RSA-2048 keys with certificates in 9C and 9D. Exits 1 if a required check fails;
/// checks of features PKCS#11 leaves optional (PIN counter flags, PUK as security officer)
/// are reported as N/A when the module lacks them.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The PKCS#11 module to load.
    #[arg(long)]
    module: String,
    /// The card's PIN.
    #[arg(long, default_value = "123456")]
    pin: String,
    /// The card's PUK (the security officer's PIN for C_InitPIN).
    #[arg(long, default_value = "12345678")]
    puk: String,
    /// Instead of the suite, the card-removal exercise: sign once, print READY, wait for a
    /// line on standard input (remove the card meanwhile), sign again and print what the
    /// module answered; then wait for another line (re-insert the card) and sign once more
    /// in a new session.
    #[arg(long)]
    removal: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.removal {
        return pkcs11_suite::removal(&args.module, &args.pin).map_err(anyhow::Error::msg);
    }
    let outcomes = pkcs11_suite::run(&Config {
        module: args.module.clone(),
        pin: args.pin,
        puk: args.puk,
    })
    .map_err(anyhow::Error::msg)?;
    let (mut failed, mut optional_missing) = (0, Vec::new());
    for o in &outcomes {
        match (&o.result, o.optional) {
            (Ok(()), false) => println!("PASS  {}", o.name),
            (Ok(()), true) => println!("PASS  {} (optional feature)", o.name),
            (Err(why), false) => {
                failed += 1;
                println!("FAIL  {} — {why}", o.name);
            }
            (Err(why), true) => {
                optional_missing.push(o.name);
                println!("N/A   {} — optional feature not offered: {why}", o.name);
            }
        }
    }
    let required = outcomes.iter().filter(|o| !o.optional).count();
    println!(
        "pkcs11 suite on {}: {} pass, {failed} fail; optional features offered: {} of {}",
        args.module,
        required - failed,
        pkcs11_suite::OPTIONAL.len() - optional_missing.len(),
        pkcs11_suite::OPTIONAL.len()
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
