//! `tessera-pkcs11-suite`: runs the cryptoki-based PKCS#11 suite against a module.

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use tessera_firmware_tests::consumers;
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
    /// Instead of the suite, run one long-lived consumer of the card (for the shared-card
    /// tests and the benchmark) and print its tally as `RESULT ok=… bad=… errors=[…]`.
    #[arg(long, value_enum)]
    consumer: Option<Consumer>,
    /// How long a `hold` consumer runs, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Pause between a `hold` consumer's signatures, or between a `context-sign`
    /// consumer's context-specific login and its signature, in milliseconds.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// For `busy-card`: call once more after the second line on stdin (the card is free).
    #[arg(long)]
    recover: bool,
    /// How many signatures a `sign-many` or `context-sign` consumer makes, or how many slot
    /// events `watch-events` waits for.
    #[arg(long, default_value_t = 100)]
    count: u64,
}

/// The consumers `--consumer` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Consumer {
    /// Log in once, sign with 9A every --interval-ms for --seconds, one session throughout.
    Hold,
    /// Log in once, sign with 9A --count times as fast as possible.
    SignMany,
    /// --count signatures with 9C, each with its own context-specific login, pausing
    /// --interval-ms between the login and the signature.
    ContextSign,
    /// Walk every token (info, session, objects); report the outcome, time and peak memory.
    Probe,
    /// Report C_WaitForSlotEvent's events (--count of them).
    WatchEvents,
    /// --count rounds of: a session, C_Login (user), the session closed.
    LoginLoop,
    /// --count rounds of: C_SignInit with 9C, the context-specific login, the session
    /// closed without signing.
    AbandonContext,
    /// A context-specific login with 9C, never used; then C_GetTokenInfo every
    /// --interval-ms for --seconds.
    HoldAndPoll,
    /// Loads the token, then (after a line on stdin) calls while another program holds
    /// the card; with --recover, calls again after a second line; then C_Finalize.
    BusyCard,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(consumer) = args.consumer {
        let (module, pin) = (args.module.as_str(), args.pin.as_str());
        let interval = Duration::from_millis(args.interval_ms);
        let tally = match consumer {
            Consumer::Hold => {
                consumers::hold_login(module, pin, Duration::from_secs(args.seconds), interval)
            }
            Consumer::SignMany => consumers::sign_many(module, pin, args.count),
            Consumer::ContextSign => consumers::context_sign(module, pin, args.count, interval),
            Consumer::LoginLoop => consumers::login_loop(module, pin, args.count),
            Consumer::AbandonContext => consumers::abandon_context(module, pin, args.count),
            Consumer::HoldAndPoll => {
                consumers::hold_and_poll(module, pin, Duration::from_secs(args.seconds), interval)
            }
            Consumer::BusyCard => {
                return consumers::busy_card(module, args.recover).map_err(anyhow::Error::msg);
            }
            Consumer::Probe => {
                println!("{}", consumers::probe(module));
                return Ok(());
            }
            Consumer::WatchEvents => {
                let count = usize::try_from(args.count).unwrap_or(usize::MAX);
                return consumers::watch_events(module, count).map_err(anyhow::Error::msg);
            }
        }
        .map_err(anyhow::Error::msg)?;
        println!("RESULT {}", tally.line());
        return Ok(());
    }
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
