//! `tessera-card-sim`: the reference PIV card, reachable through a real pcscd via vpcd: the
//! shared applet over software keys in a state file, served by `tessera-carrier`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tessera_carrier::store::{Fault, StateFile};
use tessera_carrier::vpcd;
use tessera_firmware_tests::manufacture;
use tessera_firmware_tests::state::{self, manufacturer_ca_path, FileKeys, SavedCard};
use tessera_piv::card::{Applet, Interface, Persist};

/// The Tessera reference PIV card.
///
/// Serves a software PIV card (SP 800-73-4 with Yubico extensions) to pcscd through the
/// vsmartcard vpcd reader driver, so that OpenSC, yubico-piv-tool and every PC/SC program
/// see it as a card in a reader. The card's keys, objects and PIN counters live in the
/// state file; a missing state file is a new blank card (random serial and CHUID, PIN
/// 123456, PUK 12345678, default management key) whose attestation key is certified by a
/// simulated manufacturer CA, written beside the state file as
/// `<state>.manufacturer-ca.pem`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// vpcd's address. With `--mode connect` the card connects to it (reader.conf
    /// `DEVICENAME /dev/null:PORT`); with `--mode listen` the card listens there and vpcd
    /// connects (reader.conf `DEVICENAME 127.0.0.1:PORT`).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:35963")]
    vpcd: String,

    /// Who opens the connection.
    #[arg(long, value_enum, default_value_t = Mode::Connect)]
    mode: Mode,

    /// The card's state file; created as a blank card if missing.
    #[arg(long, value_name = "FILE")]
    state: PathBuf,

    /// Present the card over the contactless interface (contactless ATR; only the
    /// card-authentication key and free-read objects, as SP 800-73-4 allows).
    #[arg(long)]
    contactless: bool,

    /// Create the state file (and manufacturer CA certificate) and exit.
    #[arg(long)]
    init_only: bool,

    /// Append one line per APDU to FILE: header, data length, status word and answer
    /// length; and one line per write of the state file, with its size. Command and
    /// response data are never written (they carry PINs and keys).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,

    /// Test only: stop the process at this point, as a power cut would.
    #[arg(long, value_enum, hide = true)]
    fault: Option<FaultPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The card connects to vpcd, retrying until vpcd listens.
    Connect,
    /// The card listens; vpcd connects.
    Listen,
}

/// Where the tearing tests cut the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FaultPoint {
    /// Abort right after a PIN or PUK try is written, before it is compared.
    AfterPinTry,
}

/// The applet over its file-backed keys, with the APDU trace.
struct SimCard {
    applet: Applet<FileKeys>,
    trace: Option<std::fs::File>,
}

impl SimCard {
    fn trace(&mut self, apdu: &[u8], reply: &[u8]) {
        let Some(f) = self.trace.as_mut() else { return };
        let header = match apdu {
            [cla, ins, p1, p2, ..] => format!("{cla:02X} {ins:02X} {p1:02X} {p2:02X}"),
            _ => "malformed".to_owned(),
        };
        let sw = match reply {
            [.., a, b] => format!("{a:02X}{b:02X}"),
            _ => "----".to_owned(),
        };
        // Tracing is a diagnostic aid; a full disk must not stop the card.
        let _ = writeln!(
            f,
            "{header} len={} -> {sw} ({} bytes)",
            apdu.len(),
            reply.len().saturating_sub(2)
        );
    }
}

impl vpcd::Card for SimCard {
    fn reset(&mut self) {
        self.applet.reset();
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        // The applet saves its state (through FileKeys) before it answers, and answers
        // 6581 when it cannot.
        let reply = self.applet.process(apdu);
        self.trace(apdu, &reply);
        reply
    }

    fn interface(&self) -> Interface {
        self.applet.interface()
    }
}

fn load_or_create(path: &Path) -> Result<SavedCard> {
    if path.exists() {
        return state::load(path);
    }
    // The manufacturing date is the one place the card reads the clock: this binary is
    // the clock that `blank_card` takes as a parameter.
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    let new = manufacture::blank_card(now)?;
    let ca_path = manufacturer_ca_path(path);
    std::fs::write(&ca_path, &new.manufacturer_ca_pem)
        .with_context(|| format!("writing {}", ca_path.display()))?;
    SavedCard::save(&new.card, &new.keys, &StateFile::new(path))?;
    eprintln!(
        "tessera-card-sim: new blank card, serial {}, state {}, manufacturer CA {}",
        new.card.serial,
        path.display(),
        ca_path.display()
    );
    Ok(SavedCard {
        format: state::FORMAT,
        card: new.card,
        keys: new.keys,
    })
}

fn open_trace(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening trace file {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let saved = load_or_create(&args.state)?;
    if args.init_only {
        return Ok(());
    }
    let interface = if args.contactless {
        Interface::Contactless
    } else {
        Interface::Contact
    };
    let (trace, save_trace) = match &args.trace {
        Some(path) => (Some(open_trace(path)?), Some(open_trace(path)?)),
        None => (None, None),
    };
    let fault = args.fault.map(|f| match f {
        FaultPoint::AfterPinTry => Fault::AbortAfter(Persist::Try),
    });
    let file = StateFile::new(&args.state).with_fault(fault);
    let mut card = SimCard {
        applet: Applet::new(
            saved.card,
            FileKeys::new(saved.keys, file, save_trace),
            interface,
        ),
        trace,
    };
    let mode = match args.mode {
        Mode::Connect => vpcd::Mode::Connect,
        Mode::Listen => vpcd::Mode::Listen,
    };
    vpcd::run(mode, args.vpcd.as_str(), &mut card, |event| {
        eprintln!("tessera-card-sim: {event}");
    })
    .with_context(|| format!("serving vpcd at {}", args.vpcd))
}
