//! The PIV conformance suite: a catalogue of checks keyed to SP 800-73-4 clauses and to the
//! Yubico extensions, run over any [`Transport`] (a PC/SC reader, or the applet in memory),
//! with a per-clause report: pass, fail, or not applicable with the reason.
//!
//! Checks that would overwrite keys or objects, block the PIN or reset the card only run
//! with [`Config::destructive`]; the reference card runs them all in CI.

mod checks;

use std::fmt::Write as _;

use tessera_piv::apdu::{Command, Response, StatusWord};

use tessera_piv::host::{Error as HostError, PivClient, Transport};
use tessera_piv::piv::Algorithm;

pub use checks::CATALOGUE;

/// What the suite may assume about the card under test.
#[derive(Debug, Clone)]
pub struct Config {
    pub pin: Vec<u8>,
    pub puk: Vec<u8>,
    pub management_alg: Algorithm,
    pub management_key: Vec<u8>,
    /// Allow checks that generate keys, write objects, block the PIN/PUK or reset the card.
    pub destructive: bool,
    /// The card is reached over its contactless interface.
    pub contactless: bool,
    /// The card has been issued to a person: the factory PIN, PUK and management key must
    /// be gone. On a blank card (the default) their presence is reported, not failed.
    pub issued: bool,
}

impl Default for Config {
    /// The factory defaults of PIV tokens (PIN 123456, PUK 12345678, 3DES key 0102…08).
    fn default() -> Self {
        Self {
            pin: b"123456".to_vec(),
            puk: b"12345678".to_vec(),
            management_alg: Algorithm::Tdes,
            management_key: tessera_piv::card::DEFAULT_MANAGEMENT_KEY.to_vec(),
            destructive: false,
            contactless: false,
            issued: false,
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    NotApplicable(String),
}

/// One entry of the catalogue.
#[derive(Debug)]
pub struct Check {
    /// Stable identifier, e.g. `verify.block`.
    pub id: &'static str,
    /// The clause it checks, e.g. `SP 800-73-4 Pt 2 §3.2.1`.
    pub clause: &'static str,
    pub title: &'static str,
    /// Which interface the check is for.
    pub interface: Iface,
    pub destructive: bool,
    pub run: fn(&mut Session<'_>) -> Verdict,
}

/// The interface a check applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iface {
    Contact,
    Contactless,
    Both,
}

/// A check's outcome in the report.
#[derive(Debug)]
pub struct Outcome {
    pub check: &'static Check,
    pub verdict: Verdict,
}

/// What a check works with.
pub struct Session<'a> {
    pub client: PivClient<&'a mut dyn Transport>,
    pub config: &'a Config,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session<'_> {
    /// Sends a command (with chaining and GET RESPONSE handled).
    pub fn send(&mut self, cmd: &Command) -> Result<Response, String> {
        self.client.send(cmd).map_err(|e| format!("transport: {e}"))
    }

    /// Sends raw bytes, no chaining or GET RESPONSE.
    pub fn raw(&mut self, apdu: &[u8]) -> Result<Response, HostError> {
        self.client.transmit_raw(apdu)
    }

    /// Sends a command and checks its status word.
    pub fn expect(&mut self, cmd: &Command, sw: StatusWord, what: &str) -> Result<Vec<u8>, String> {
        let resp = self.send(cmd)?;
        if resp.sw == sw {
            Ok(resp.data)
        } else {
            Err(format!("{what}: expected {sw}, card answered {}", resp.sw))
        }
    }

    /// Resets the card and selects the PIV application: the start of every check, so that
    /// no security status (PIN, management key) carries over from the previous one.
    pub fn fresh(&mut self) -> Result<(), String> {
        self.client
            .reset()
            .map_err(|e| format!("resetting the card: {e}"))?;
        self.client
            .select()
            .map_err(|e| format!("SELECT PIV: {e}"))?;
        Ok(())
    }

    pub fn verify_pin(&mut self) -> Result<(), String> {
        let pin = self.config.pin.clone();
        self.client
            .verify_pin(&pin)
            .map_err(|e| format!("VERIFY with the configured PIN: {e}"))
    }

    pub fn authenticate(&mut self) -> Result<(), String> {
        let (alg, key) = (
            self.config.management_alg,
            self.config.management_key.clone(),
        );
        self.client
            .authenticate_management(alg, &key)
            .map_err(|e| format!("management-key authentication: {e}"))
    }
}

/// Runs the catalogue; checks for the other interface, and destructive checks without
/// permission, are reported not applicable.
pub fn run(transport: &mut dyn Transport, config: &Config) -> Vec<Outcome> {
    let mut session = Session {
        client: PivClient::new(transport),
        config,
    };
    CATALOGUE
        .iter()
        .map(|check| {
            let verdict = if check.interface == Iface::Contact && config.contactless {
                Verdict::NotApplicable("contact interface only; the card is contactless".into())
            } else if check.interface == Iface::Contactless && !config.contactless {
                Verdict::NotApplicable(
                    "contactless interface only; the card is in contact mode".into(),
                )
            } else if check.destructive && !config.destructive {
                Verdict::NotApplicable(
                    "changes keys, objects or counters on the card; run with --destructive".into(),
                )
            } else {
                match session.fresh() {
                    // Each check holds the card for itself (a PC/SC transaction): its VERIFY
                    // and the signature after it are the card's commands in a row, as the
                    // PIN-always checks need, and no other program's command falls between.
                    Ok(()) => match session.client.transport().begin() {
                        Ok(_) => {
                            let verdict = (check.run)(&mut session);
                            session.client.transport().end();
                            verdict
                        }
                        Err(e) => Verdict::Fail(format!("the card is not available: {e}")),
                    },
                    Err(e) => Verdict::Fail(format!("card not usable before the check: {e}")),
                }
            };
            Outcome { check, verdict }
        })
        .collect()
}

/// A plain-text report, one line per check, and a closing summary line.
pub fn report(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let (mut pass, mut fail, mut na) = (0, 0, 0);
    for o in outcomes {
        let (word, note) = match &o.verdict {
            Verdict::Pass => {
                pass += 1;
                ("PASS", String::new())
            }
            Verdict::Fail(why) => {
                fail += 1;
                ("FAIL", format!(" — {why}"))
            }
            Verdict::NotApplicable(why) => {
                na += 1;
                ("N/A ", format!(" — {why}"))
            }
        };
        let _ = writeln!(
            out,
            "{word}  {:<26} {:<28} {}{note}",
            o.check.id, o.check.clause, o.check.title
        );
    }
    let _ = writeln!(
        out,
        "conformance: {pass} pass, {fail} fail, {na} not applicable"
    );
    out
}

/// Whether no check failed.
pub fn all_passed(outcomes: &[Outcome]) -> bool {
    outcomes
        .iter()
        .all(|o| !matches!(o.verdict, Verdict::Fail(_)))
}

/// The not-applicable outcomes that are not of the justified kinds (the other interface
/// only, or a factory secret reported on a blank card), as `id: why`: what a card under
/// test must explain if this is not empty.
pub fn unjustified_not_applicable(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|o| match &o.verdict {
            Verdict::NotApplicable(why)
                if !(why.starts_with("contactless interface only")
                    || (o.check.id.starts_with("issued.") && why.starts_with("blank card"))) =>
            {
                Some(format!("{}: {why}", o.check.id))
            }
            _ => None,
        })
        .collect()
}
