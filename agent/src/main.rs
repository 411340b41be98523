//! `tessera-agent`: TPM 2.0 virtual smart cards on a workstation, each a PIV card in its
//! own pcscd reader slot.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tessera_agent::enrol::Issuer;
use tessera_agent::serve;
use tessera_agent::vsc::{CardFile, DataDir};
use tessera_agent::worker::TpmClient;
use tessera_issuer_types::ProfileName;
use tessera_piv::piv::KeyRef;
use zeroize::Zeroizing;

/// The Tessera workstation agent: TPM virtual smart cards.
///
/// Each virtual card is the Tessera PIV applet with its keys in this machine's TPM, its PIN
/// and PUK in TPM PIN indices that count their own tries, served to pcscd through the
/// vsmartcard vpcd driver on a loopback port. OpenSC, yubico-piv-tool, browsers, ssh and
/// PAM see an ordinary PIV card. The agent's files are useless on another TPM, and on this
/// one without the PIN to whoever cannot use the TPM's owner hierarchy (set an owner
/// password: see --owner-auth-file).
#[derive(Debug, Parser)]
#[command(name = "tessera-agent", version, about, long_about)]
struct Args {
    /// Where the agent keeps its cards (created private to the agent's user).
    #[arg(
        long,
        global = true,
        env = "TESSERA_AGENT_DATA",
        default_value = "/var/lib/tessera-agent",
        value_name = "DIR"
    )]
    data_dir: PathBuf,

    /// How to reach the TPM (a tpm2-tss TCTI): `device:/dev/tpmrm0` (the kernel's resource
    /// manager), `tabrmd`, or `swtpm:host=127.0.0.1,port=2321` for a software TPM.
    #[arg(
        long,
        global = true,
        env = "TESSERA_AGENT_TCTI",
        default_value = "device:/dev/tpmrm0",
        value_name = "TCTI"
    )]
    tcti: String,

    /// A file holding the TPM owner hierarchy's password, if one is set (recommended on
    /// shared workstations: without it, anyone who may use the TPM's owner hierarchy can
    /// replace a card's PIN index). The file's content is used as is, without a trailing
    /// newline.
    #[arg(
        long,
        global = true,
        env = "TESSERA_AGENT_OWNER_AUTH_FILE",
        value_name = "FILE"
    )]
    owner_auth_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, list, inspect and delete virtual cards.
    #[command(subcommand)]
    Vsc(Vsc),
    /// Serve every card to pcscd: each listens on its loopback port for vpcd.
    Serve,
    /// Print the pcscd reader configuration (for /etc/reader.conf.d/) that gives each card
    /// its reader slot, making the vpcd driver copies it names.
    ReaderConf {
        /// Where the copies of the vpcd driver go (one per reader entry after the first;
        /// vpcd's slots are process-wide, so entries cannot share a driver file).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/usr/local/lib/tessera-agent/pcsc"
        )]
        driver_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Vsc {
    /// Create a virtual card: factory PIN 123456, PUK 12345678 and management key, to be
    /// personalised as any PIV card is; an attestation key in slot F9.
    Create {
        /// The card's name (1 to 32 letters, digits, '-' or '_'); usually the user's login.
        name: String,
        /// The loopback port of the card's reader slot, below 1024 (default: the next free
        /// one from 921).
        #[arg(long)]
        port: Option<u16>,
    },
    /// List the cards: name, port, serial and keys.
    List,
    /// Show one card: PIN and PUK tries left (read from the TPM), keys and their policies.
    Status { name: String },
    /// Enrol a card with the issuer (a registration officer, for a carrier assigned to the
    /// card's holder and approved): new P-256 keys in the TPM, proven to be there by TPM
    /// attestation (EK certificate, credential activation, TPM2_Certify), certified, and
    /// the certificates written to the card. Stop the agent first.
    Enrol {
        name: String,
        /// The issuer's base URL (https://…, or http:// on loopback).
        #[arg(long, env = "TESSERA_URL")]
        issuer: String,
        /// The carrier (the RA's record of this card) the keys are for.
        #[arg(long)]
        carrier: String,
        /// The officer's API token, in a file.
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// The CA of the issuer's TLS certificate (the deployment's tls-ca.pem).
        #[arg(long, value_name = "FILE")]
        issuer_ca: Option<PathBuf>,
        /// The keys to make: authentication (9A), signature (9C), encryption (9D),
        /// card-authentication (9E).
        #[arg(long = "profile", value_name = "PROFILE", default_values = ["authentication", "card-authentication"])]
        profiles: Vec<ProfileName>,
    },
    /// Renew a card's certificates before they expire, with only its holder's PIN (no
    /// officer): new keys in the TPM, proven to the issuer as at enrolment and signed for by
    /// the card's authentication key; the new certificates replace the old on the card and
    /// the old ones are revoked as superseded. Run again, it finishes a renewal cut short.
    /// The issuer allows it within the last 30 days of the authentication certificate. An
    /// old decryption key (9D) moves to a retired slot (82-95) with its certificate, so
    /// that what was encrypted to it stays readable. Stop the agent first.
    Renew {
        name: String,
        /// The issuer's base URL (https://…, or http:// on loopback).
        #[arg(long, env = "TESSERA_URL")]
        issuer: String,
        /// The CA of the issuer's TLS certificate (the deployment's tls-ca.pem).
        #[arg(long, value_name = "FILE")]
        issuer_ca: Option<PathBuf>,
        /// Read the holder's PIN from this file instead of asking on the terminal.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// Make new keys even if an attempt cut short left some (when the issuer says it
        /// can no longer use them), and stop retrying a confirmation the issuer refuses.
        #[arg(long)]
        new_keys: bool,
    },
    /// Delete a card: its PIN indices leave the TPM, so no copy of its keys can ever be used
    /// again, and its file is removed. Stop the agent first.
    Delete {
        name: String,
        /// Confirm: the card's keys are destroyed.
        #[arg(long)]
        yes: bool,
    },
}

fn owner_auth(args: &Args) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(path) = &args.owner_auth_file else {
        return Ok(None);
    };
    let bytes =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    Ok(Some(Zeroizing::new(trimmed.to_vec())))
}

fn tpm(args: &Args) -> Result<TpmClient> {
    TpmClient::spawn(&args.tcti, owner_auth(args)?)
        .with_context(|| format!("reaching the TPM through {:?}", args.tcti))
}

fn main() -> Result<()> {
    let args = Args::parse();
    // tpm2-tss logs every TPM error to stderr, also the expected ones (a wrong PIN, a
    // free NV index); the agent reports what matters itself.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    let data = DataDir::open(&args.data_dir)?;
    match &args.command {
        Cmd::Vsc(Vsc::Create { name, port }) => {
            let _lock = data.lock()?;
            let tpm = tpm(&args)?;
            // The manufacturing date of the attestation certificate: the one place the
            // agent reads the clock.
            #[allow(clippy::disallowed_methods)]
            let now = SystemTime::now();
            let card = data.create(&tpm, name, *port, now)?;
            println!(
                "created virtual card {:?}: serial {}, reader slot on 127.0.0.1:{}",
                card.meta.name, card.card.serial, card.meta.port
            );
            println!(
                "PIN 123456, PUK 12345678 and the management key are the factory values: \
                 personalise the card before use. pcscd sees the slot once its reader \
                 configuration (`tessera-agent reader-conf`) is in place and it has restarted."
            );
        }
        Cmd::Vsc(Vsc::List) => {
            let cards = data.cards()?;
            if cards.is_empty() {
                println!("no virtual cards in {}", data.root().display());
            }
            for c in &cards {
                println!(
                    "{:<32} port {:<5} serial {:<8} keys {}",
                    c.meta.name,
                    c.meta.port,
                    c.card.serial,
                    slots(c)
                );
            }
        }
        Cmd::Vsc(Vsc::Status { name }) => {
            let card = data.card(name)?;
            let tpm = tpm(&args)?;
            let (pin, puk) = (card.meta.pin_index, card.meta.puk_index);
            let (pin, puk) = tpm.call(move |t| -> tessera_agent::tpm::Result<_> {
                Ok((t.pin_counter(pin)?, t.pin_counter(puk)?))
            })??;
            let mut out = std::io::stdout().lock();
            writeln!(out, "card        {}", card.meta.name)?;
            writeln!(out, "serial      {}", card.card.serial)?;
            writeln!(out, "reader slot 127.0.0.1:{}", card.meta.port)?;
            writeln!(
                out,
                "PIN         {} of {} tries left{}",
                pin.left(),
                pin.limit,
                if card.card.pin().is_default() {
                    " (factory value)"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "PUK         {} of {} tries left{}",
                puk.left(),
                puk.limit,
                if card.card.puk().is_default() {
                    " (factory value)"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "TPM indices PIN {:#010x}, PUK {:#010x}",
                card.meta.pin_index, card.meta.puk_index
            )?;
            for (slot, key) in &card.keys {
                writeln!(
                    out,
                    "key {}      {:?}, PIN policy {:?}",
                    slot, key.info.alg, key.info.pin_policy
                )?;
            }
            if let Some(carrier) = &card.meta.carrier {
                writeln!(out, "carrier     {carrier}")?;
            }
            if !card.pending.is_empty() {
                writeln!(
                    out,
                    "renewal     new keys made, not yet certified (run `vsc renew` again)"
                )?;
            }
            if !card.meta.unconfirmed.is_empty() {
                writeln!(
                    out,
                    "renewal     certificates {} not yet confirmed (run `vsc renew` again)",
                    card.meta.unconfirmed.join(", ")
                )?;
            }
        }
        Cmd::Vsc(Vsc::Enrol {
            name,
            issuer,
            carrier,
            token_file,
            issuer_ca,
            profiles,
        }) => {
            let _lock = data.lock()?;
            let issuer = Issuer::new(issuer, token_file, issuer_ca.as_deref())?;
            let tpm = tpm(&args)?;
            let carrier =
                tessera_agent::enrol::enrol(&data, &tpm, &issuer, name, carrier, profiles)?;
            println!(
                "enrolled card {name:?} as carrier {}: {} certificates, the carrier is {} (activate it at hand-over)",
                carrier.id,
                carrier.certificates.len(),
                carrier.state
            );
        }
        Cmd::Vsc(Vsc::Renew {
            name,
            issuer,
            issuer_ca,
            pin_file,
            new_keys,
        }) => {
            let _lock = data.lock()?;
            // The card must exist before the holder is asked anything.
            data.card(name)?;
            let pin = match pin_file {
                Some(path) => {
                    let bytes = Zeroizing::new(
                        std::fs::read(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    );
                    Zeroizing::new(bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec())
                }
                None => Zeroizing::new(
                    rpassword::prompt_password(format!("PIN of card {name}: "))
                        .context("reading the PIN from the terminal (or give --pin-file)")?
                        .into_bytes(),
                ),
            };
            let issuer = Issuer::anonymous(issuer, issuer_ca.as_deref())?;
            let tpm = tpm(&args)?;
            let renewal = tessera_agent::renew::renew(&data, &tpm, &issuer, name, &pin, *new_keys)?;
            if renewal.serials.is_empty() {
                println!(
                    "card {name:?}: the renewal it already carries is confirmed; the old certificates are revoked"
                );
            } else {
                println!(
                    "renewed card {name:?} (carrier {}): new certificates {}; the old ones are revoked as superseded",
                    renewal.carrier.id,
                    renewal.serials.join(", ")
                );
            }
        }
        Cmd::Vsc(Vsc::Delete { name, yes }) => {
            if !yes {
                bail!("deleting card {name:?} destroys its keys for good: add --yes to confirm");
            }
            let _lock = data.lock()?;
            let tpm = tpm(&args)?;
            data.delete(&tpm, name)?;
            println!("deleted virtual card {name:?}");
        }
        Cmd::ReaderConf { driver_dir } => {
            let cards = data.cards()?;
            serve::driver_copies(&cards, driver_dir)?;
            print!("{}", serve::reader_conf(&cards, driver_dir));
        }
        Cmd::Serve => {
            let lock = data.lock()?;
            let tpm = tpm(&args)?;
            serve::run(&data, &tpm, lock)?;
        }
    }
    Ok(())
}

fn slots(card: &CardFile) -> String {
    let slots: Vec<String> = card
        .keys
        .keys()
        .filter(|k| **k != KeyRef::ATTESTATION)
        .map(|k| k.to_string())
        .collect();
    if slots.is_empty() {
        "none".to_owned()
    } else {
        slots.join(",")
    }
}
