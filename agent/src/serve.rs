//! Serving the cards to pcscd: vpcd's reader driver connects to each card's loopback port
//! (reversed mode, `DEVICENAME 127.0.0.1:PORT`: nothing listens beyond loopback). A vpcd
//! reader configuration entry opens two slots, on its port and the next, so the agent
//! gives ports in pairs and serves a card with no application on a pair's unused port.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tessera_carrier::vpcd;
use tessera_piv::card::{Applet, Interface};

use crate::vsc::{CardFile, DataDir, TpmKeyStore, FIRST_PORT};
use crate::worker::TpmClient;

/// Debian's vpcd reader driver.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// The first port of the vpcd reader entry (two slots) that `port` belongs to.
pub fn pair_base(port: u16) -> u16 {
    let offset = (i32::from(port) - i32::from(FIRST_PORT)).rem_euclid(2);
    port - u16::try_from(offset).unwrap_or(0)
}

/// The reader entries the cards need, by first port, with the cards in each slot.
fn pairs(cards: &[CardFile]) -> BTreeMap<u16, [Option<&CardFile>; 2]> {
    let mut out: BTreeMap<u16, [Option<&CardFile>; 2]> = BTreeMap::new();
    for c in cards {
        let base = pair_base(c.meta.port);
        let slot = usize::from(c.meta.port - base);
        out.entry(base).or_default()[slot] = Some(c);
    }
    out
}

/// The pcscd reader configuration giving every card its slot. vpcd keeps its slots in
/// process-wide statics and pcscd loads a driver file once, so two reader entries on the
/// same driver file share (and fight over) the same two slots: every entry after the first
/// names its own copy of the driver, made by [`driver_copies`] in `driver_dir`.
pub fn reader_conf(cards: &[CardFile], driver_dir: &Path) -> String {
    let mut out = String::from(
        "# Tessera TPM virtual cards (tessera-agent reader-conf). vpcd connects to the agent\n\
         # on loopback; each entry is two reader slots, on its port and the next.\n",
    );
    for (n, (base, slots)) in pairs(cards).into_iter().enumerate() {
        let names: Vec<String> = slots
            .iter()
            .enumerate()
            .map(|(i, c)| match c {
                Some(c) => format!("slot {i}: {}", c.meta.name),
                None => format!("slot {i}: no card"),
            })
            .collect();
        let driver = driver_path(driver_dir, n);
        out.push_str(&format!(
            "\n# {}\nFRIENDLYNAME \"Tessera VSC {base}\"\nDEVICENAME 127.0.0.1:{base}\nLIBPATH {}\nCHANNELID {base}\n",
            names.join(", "),
            driver.display()
        ));
    }
    out
}

/// The driver file of the `n`th reader entry: Debian's own for the first, a copy after.
fn driver_path(driver_dir: &Path, n: usize) -> PathBuf {
    if n == 0 {
        PathBuf::from(VPCD_DRIVER)
    } else {
        driver_dir.join(format!("libifdvpcd-{n}.so"))
    }
}

/// Makes the driver copies [`reader_conf`] names (readable by pcscd, which runs as root).
pub fn driver_copies(cards: &[CardFile], driver_dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries = pairs(cards).len();
    if entries <= 1 {
        return Ok(());
    }
    std::fs::create_dir_all(driver_dir)
        .with_context(|| format!("creating {}", driver_dir.display()))?;
    std::fs::set_permissions(driver_dir, std::fs::Permissions::from_mode(0o755))?;
    for n in 1..entries {
        let to = driver_path(driver_dir, n);
        std::fs::copy(VPCD_DRIVER, &to)
            .with_context(|| format!("copying {VPCD_DRIVER} to {}", to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// One card as vpcd sees it.
struct VirtualCard {
    applet: Applet<TpmKeyStore>,
}

impl vpcd::Card for VirtualCard {
    fn reset(&mut self) {
        self.applet.reset();
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        // The applet writes the card file (and the TPM its counters) before it answers.
        self.applet.process(apdu)
    }

    fn interface(&self) -> Interface {
        self.applet.interface()
    }
}

/// What the agent serves in a reader slot that has no virtual card: a card with no
/// application. In reversed mode vpcd (Debian 12, with pcscd 1.9.9) needs a live card on
/// every slot port of its reader entry: with nothing listening pcscd aborts, and a listener
/// that answers "no card" (an empty ATR) leaves pcscd's reader threads hanging, so no
/// reader of the entry ever shows a card (both seen in the interop test). Programs see an
/// unrecognised card there; every SELECT is "not found".
struct NoApplication;

impl vpcd::Card for NoApplication {
    fn reset(&mut self) {}

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        match apdu {
            // SELECT: no such application (ISO 7816-4 6A82).
            [_, 0xA4, ..] => vec![0x6A, 0x82],
            // Anything else: instruction not supported (6D00).
            _ => vec![0x6D, 0x00],
        }
    }

    fn interface(&self) -> Interface {
        Interface::Contact
    }
}

/// Serves every card until a listener fails; `lock` keeps other agents (and `vsc create`
/// or `delete`) off the data directory meanwhile.
pub fn run(data: &DataDir, tpm: &TpmClient, lock: File) -> Result<()> {
    let cards = data.cards()?;
    if cards.is_empty() {
        anyhow::bail!(
            "no virtual cards in {} (create one with `tessera-agent vsc create NAME`)",
            data.root().display()
        );
    }
    let (failed_tx, failed_rx) = std::sync::mpsc::channel::<anyhow::Error>();
    for (base, slots) in pairs(&cards) {
        for (i, slot) in slots.iter().enumerate() {
            let port = base + u16::try_from(i).unwrap_or(0);
            let failed = failed_tx.clone();
            match slot {
                Some(card) => {
                    let name = card.meta.name.clone();
                    let (store, state, warnings) =
                        TpmKeyStore::open(tpm, data.state_file(&name), (*card).clone())
                            .with_context(|| format!("opening card {name}"))?;
                    for w in warnings {
                        eprintln!("tessera-agent: {w}");
                    }
                    let mut vc = VirtualCard {
                        applet: Applet::new(state, store, Interface::Contact),
                    };
                    std::thread::Builder::new()
                        .name(format!("card {name}"))
                        .spawn(move || {
                            let addr = ("127.0.0.1", port);
                            let result = vpcd::run(vpcd::Mode::Listen, addr, &mut vc, |event| {
                                eprintln!("tessera-agent: card {name}: {event}");
                            });
                            let e = match result {
                                Ok(()) => anyhow::anyhow!("card {name}: listener ended"),
                                Err(e) => anyhow::Error::new(e)
                                    .context(format!("card {name} on 127.0.0.1:{port}")),
                            };
                            let _ = failed.send(e);
                        })
                        .context("starting a card thread")?;
                }
                None => {
                    std::thread::Builder::new()
                        .name(format!("empty slot {port}"))
                        .spawn(move || {
                            let result = vpcd::run(
                                vpcd::Mode::Listen,
                                ("127.0.0.1", port),
                                &mut NoApplication,
                                |event| eprintln!("tessera-agent: empty slot: {event}"),
                            );
                            let e = match result {
                                Ok(()) => anyhow::anyhow!("empty slot {port}: listener ended"),
                                Err(e) => anyhow::Error::new(e)
                                    .context(format!("empty slot on 127.0.0.1:{port}")),
                            };
                            let _ = failed.send(e);
                        })
                        .context("starting an empty-slot thread")?;
                }
            }
        }
    }
    drop(failed_tx);
    let first = failed_rx
        .recv()
        .unwrap_or_else(|_| anyhow::anyhow!("every card thread ended"));
    drop(lock);
    Err(first)
}
