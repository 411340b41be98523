//! `tessera`: the registration authority's admin CLI. A client of the issuer's HTTP API
//! (`/api/v1`), with the issuer's vocabulary crate and nothing else of the issuer: what it
//! can do is exactly what the API lets the officer behind the token do.
#![forbid(unsafe_code)]

mod audit;
mod client;
mod import;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tessera_issuer_types::api::*;
use tessera_issuer_types::lifecycle::{
    CarrierKind, CarrierRevokeReason, HolderVerification, OfficerRole, SuspendReason,
};
use tessera_issuer_types::ProfileName;

use client::{Client, Failure};

const AFTER_HELP: &str = "\
The token is read from $TESSERA_TOKEN, or from the file --token-file (or
$TESSERA_TOKEN_FILE) names; it is never taken on the command line, where other users
could read it.

Exit codes: 0 done; 2 usage; 3 the request was refused as invalid (a field, malformed
input); 4 not authenticated or not allowed (role, four-eyes); 5 not found; 6 conflict
(the record is in another state, or exists already); 7 the issuer could not be reached
or failed.";

/// The registration authority's admin CLI: officers, people and identity proofing,
/// carriers and their life cycle, four-eyes approvals and temporary cards.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, after_help = AFTER_HELP)]
struct Cli {
    /// The issuer's URL.
    #[arg(
        long,
        env = "TESSERA_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// A file holding the officer's token (instead of $TESSERA_TOKEN).
    #[arg(long, env = "TESSERA_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that the issuer's HTTPS certificate chains to.
    #[arg(long, env = "TESSERA_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the issuer's answer as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Officers, their roles and tokens (administrators).
    #[command(subcommand)]
    Officer(OfficerCmd),
    /// People from HR: register, show, list, end employment.
    #[command(subcommand)]
    Person(PersonCmd),
    /// Record an in-person identity check (LoA3 K5.10).
    Proof(ProofArgs),
    /// Carriers (cards, TPM virtual cards) through their life cycle.
    #[command(subcommand)]
    Carrier(CarrierCmd),
    /// Temporary cards for holders who forgot theirs.
    #[command(subcommand)]
    Temporary(TemporaryCmd),
    /// Substitute cards: pool cards bound to a substitute for at most 90 days.
    #[command(subcommand)]
    Substitute(SubstituteCmd),
    /// Four-eyes approvals: list, approve, refuse.
    #[command(subcommand)]
    Approve(ApproveCmd),
    /// Import people from an HR export: CSV, UTF-8, a header row with the columns
    /// employee_number, given_name, family_name (required), email, upn, identity_number,
    /// birth_date, nationality, protected_identity, directory_sid. The whole file is checked first and
    /// imported only if every row is right; the report names each bad row by its line.
    /// Importing the same file again changes nothing.
    Import {
        file: PathBuf,
        /// Check and report only.
        #[arg(long)]
        dry_run: bool,
        /// Rows per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The audit trail (auditors and administrators): read a page, or export all of it with
    /// its hash chain checked.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Differences between carrier states and certificate statuses (none: exit 0).
    Reconcile,
    /// PIN unblock: ask, for the holder, to release their card's escrowed PUK. A second
    /// officer approves (`approve yes`); the PUK then goes only to the card's own channel
    /// (the holder's agent, with the release code printed here and the card itself) —
    /// never to an officer.
    Unblock {
        /// The carrier (an ACTIVE card with an escrowed PUK and a card-authentication key).
        carrier: String,
        /// How the holder was verified: in_person, video_call or second_factor.
        #[arg(long, value_parser = parse::<HolderVerification>)]
        verification: HolderVerification,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Records after sequence number AFTER, at most LIMIT.
    List {
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Every record after AFTER into FILE (JSON lines), each record's hash and the chain
    /// checked as it is written; prints how many and the head hash to compare with a
    /// signed checkpoint (`tessera-issuer audit checkpoint`). Exit 6 if the chain does not
    /// hold.
    Export {
        file: PathBuf,
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Debug, Subcommand)]
enum OfficerCmd {
    /// Create an officer (the bootstrap token creates only the first administrator).
    Add {
        /// A short handle: letters, digits, '.', '-', '_'.
        id: String,
        #[arg(long)]
        name: String,
        /// A role; repeat for several.
        #[arg(long = "role", required = true, value_parser = parse::<OfficerRole>)]
        roles: Vec<OfficerRole>,
        /// The officer's own person record: they will never act on it.
        #[arg(long)]
        person: Option<String>,
    },
    /// List officers.
    List,
    /// Make a token for an officer; printed once, stored by the issuer only as a hash.
    Token {
        id: String,
        #[arg(long, default_value = "cli")]
        label: String,
        /// Days until it expires (default 30).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Revoke one of an officer's tokens (by the token's id).
    RevokeToken { id: String, token_id: String },
    /// An officer's tokens: ids, labels, expiry (never the tokens).
    Tokens { id: String },
    /// Disable an officer: every token of theirs revoked at once.
    Disable { id: String },
}

#[derive(Debug, Subcommand)]
enum PersonCmd {
    /// Register a person from HR.
    Add(PersonArgs),
    /// Show a person and their carriers.
    Show { id: String },
    /// List people in employee-number order.
    List {
        /// Start after this employee number.
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Employment ended: every carrier revoked.
    End { id: String },
}

#[derive(Debug, Args)]
struct PersonArgs {
    #[arg(long)]
    employee_number: String,
    #[arg(long)]
    given_name: String,
    #[arg(long)]
    family_name: String,
    #[arg(long)]
    email: Option<String>,
    /// Windows logon name (user@domain), put in the authentication certificate.
    #[arg(long)]
    upn: Option<String>,
    /// Personnummer or samordningsnummer, 12 digits (YYYYMMDD-NNNC). Without it (or
    /// --birth-date/--nationality), the registration officer records the document's at
    /// proofing.
    #[arg(long)]
    identity_number: Option<String>,
    /// For a person without a Swedish number: birth date (YYYY-MM-DD) ...
    #[arg(long, requires = "nationality", conflicts_with = "identity_number")]
    birth_date: Option<String>,
    /// ... and nationality (ISO 3166-1 alpha-2).
    #[arg(long, requires = "birth_date")]
    nationality: Option<String>,
    /// A protected identity: only registration officers and administrators see it.
    #[arg(long)]
    protected: bool,
    /// The person's Active Directory SID (S-1-5-21-…), put in the authentication
    /// certificate for Windows strong certificate mapping.
    #[arg(long)]
    sid: Option<String>,
}

#[derive(Debug, Args)]
struct ProofArgs {
    /// The person's id.
    person: String,
    /// passport, national_id_card, drivers_licence or service_id_card.
    #[arg(long)]
    document_type: String,
    #[arg(long)]
    document_number: String,
    /// ISO 3166-1 alpha-2.
    #[arg(long)]
    issuing_country: String,
    /// YYYY-MM-DD.
    #[arg(long)]
    document_expiry: String,
    /// Where the check took place.
    #[arg(long)]
    place: String,
    /// The personal identity or coordination number the document shows (12 digits), read
    /// at every check: recorded when HR sent none, else it must match the register's.
    /// A non-resident's document: --birth-date and --nationality instead.
    #[arg(long, conflicts_with_all = ["birth_date", "nationality"], required_unless_present = "birth_date")]
    identity_number: Option<String>,
    /// A non-resident's birth date on the document (YYYY-MM-DD), with --nationality.
    #[arg(long, requires = "nationality")]
    birth_date: Option<String>,
    /// A non-resident's nationality (ISO 3166-1 alpha-2), with --birth-date.
    #[arg(long, requires = "birth_date")]
    nationality: Option<String>,
}

#[derive(Debug, Subcommand)]
enum CarrierCmd {
    /// Register a blank carrier in stock.
    Add {
        #[arg(long, value_parser = parse::<CarrierKind>, default_value = "smart_card")]
        kind: CarrierKind,
        /// The card's serial number.
        serial_number: String,
    },
    /// Show a carrier and its certificates.
    Show { id: String },
    /// Bind a carrier to a proofed person; asks a second officer to approve.
    Assign {
        id: String,
        #[arg(long)]
        person: String,
        /// The terms version the applicant accepted (K5.6).
        #[arg(long)]
        terms: String,
    },
    /// Certify the carrier's keys: each a CSR or a PIV attestation, on hold until activation.
    Keys {
        id: String,
        /// PROFILE=FILE: a PKCS#10 request (PEM) for that profile's key; repeatable.
        #[arg(long = "csr", value_parser = profile_file)]
        csrs: Vec<(ProfileName, PathBuf)>,
        /// PROFILE=CERT,INTERMEDIATE: a PIV attestation (PEM files); repeatable.
        #[arg(long = "attestation", value_parser = profile_attestation)]
        attestations: Vec<(ProfileName, PathBuf, PathBuf)>,
        /// A file holding the PUK the personalisation set on the card: escrowed, sealed by
        /// the issuer's token, for PIN unblock. Never printed.
        #[arg(long, value_name = "FILE")]
        puk_file: Option<PathBuf>,
        /// Write the certificates made (PEM) to DIR/<profile>.pem, for the card.
        #[arg(long, value_name = "DIR")]
        certificates_out: Option<PathBuf>,
    },
    /// Hand-over in person against a signed receipt: certificates good.
    Activate {
        id: String,
        /// The receipt's reference.
        #[arg(long)]
        receipt: String,
    },
    /// Suspend with a reason and a deadline (then revoked, if not resumed).
    Suspend {
        id: String,
        #[arg(long, value_parser = parse::<SuspendReason>)]
        reason: SuspendReason,
        #[arg(long)]
        days: u32,
    },
    /// Re-activate a suspended carrier after re-verification.
    Resume {
        id: String,
        /// in_person or pin.
        #[arg(long, default_value = "in_person")]
        verification: String,
    },
    /// Revoke a carrier and its certificates.
    Revoke {
        id: String,
        #[arg(long, value_parser = parse::<CarrierRevokeReason>)]
        reason: CarrierRevokeReason,
    },
    /// Ask for many carriers to be revoked at once (a lost batch, a closed office); a
    /// second officer approves with `approve bulk-yes`.
    RevokeMany {
        /// Carrier ids (up to 10 000).
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long, value_parser = parse::<CarrierRevokeReason>)]
        reason: CarrierRevokeReason,
    },
    /// A revoked or expired carrier handed back: destroyed, or (pool cards) wiped and
    /// restocked.
    Retire {
        id: String,
        /// The card was wiped and goes back to stock.
        #[arg(long)]
        restock: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TemporaryCmd {
    /// Ask for a temporary card (the holder has an active card); a second officer approves.
    Request {
        /// The person's id.
        person: String,
        /// A temporary card in stock.
        #[arg(long)]
        carrier: String,
        /// The card left at home (needed when the holder has several active cards).
        #[arg(long)]
        original: Option<String>,
        /// Days from the approval (default 1, at most 14).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Lengthen a temporary card's period.
    Extend {
        id: String,
        #[arg(long)]
        days: u32,
    },
    /// A temporary card handed back.
    Return {
        id: String,
        /// The original card was found (no_longer_needed) or is lost (lost).
        #[arg(long, value_parser = ["no_longer_needed", "lost"])]
        outcome: String,
    },
}

#[derive(Debug, Subcommand)]
enum SubstituteCmd {
    /// Bind a substitute card in stock to a proofed person; a second officer approves.
    Request {
        /// The person's id.
        person: String,
        /// A substitute card in stock.
        #[arg(long)]
        carrier: String,
        /// Days (at most 90).
        #[arg(long)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum ApproveCmd {
    /// Pending approvals (issuance, temporary and substitute cards, bulk revocations).
    List,
    /// Approve (as a second officer: not the requester, not the subject).
    Yes { id: String },
    /// Refuse: the carrier goes back to stock.
    No { id: String },
    /// Approve a bulk revocation: every carrier still revocable is revoked.
    BulkYes { id: String },
    /// Refuse a bulk revocation: nothing is revoked.
    BulkNo { id: String },
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

fn profile_file(s: &str) -> Result<(ProfileName, PathBuf), String> {
    let (p, f) = s.split_once('=').ok_or("PROFILE=FILE")?;
    Ok((parse(p)?, PathBuf::from(f)))
}

fn profile_attestation(s: &str) -> Result<(ProfileName, PathBuf, PathBuf), String> {
    let (p, files) = s.split_once('=').ok_or("PROFILE=CERT,INTERMEDIATE")?;
    let (c, i) = files.split_once(',').ok_or("PROFILE=CERT,INTERMEDIATE")?;
    Ok((parse(p)?, PathBuf::from(c), PathBuf::from(i)))
}

fn read(path: &PathBuf) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("reading {}: {e}", path.display())))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tessera: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let c = Client::new(&cli.url, cli.token_file.as_deref(), cli.ca_file.as_deref())?;
    let out = Output { json: cli.json };
    match &cli.command {
        Command::Officer(cmd) => officer(&c, &out, cmd),
        Command::Person(cmd) => person(&c, &out, cmd),
        Command::Proof(a) => {
            let p: Person = c.post(
                &format!("/people/{}/proofing", a.person),
                &NewProofing {
                    document_type: a.document_type.clone(),
                    document_number: a.document_number.clone(),
                    issuing_country: a.issuing_country.clone(),
                    document_expiry: a.document_expiry.clone(),
                    place: a.place.clone(),
                    identity_number: a.identity_number.clone(),
                    non_resident: match (&a.birth_date, &a.nationality) {
                        (Some(b), Some(n)) => Some(NonResident {
                            birth_date: b.clone(),
                            nationality: n.clone(),
                        }),
                        _ => None,
                    },
                },
            )?;
            out.person(&p)
        }
        Command::Carrier(cmd) => carrier(&c, &out, cmd),
        Command::Temporary(cmd) => temporary(&c, &out, cmd),
        Command::Substitute(SubstituteCmd::Request {
            person,
            carrier,
            days,
        }) => {
            let a: Approval = c.post(
                &format!("/people/{person}/substitute-card"),
                &SubstituteRequest {
                    carrier_id: carrier.clone(),
                    days: *days,
                },
            )?;
            out.approvals(&[a])
        }
        Command::Approve(cmd) => approve(&c, &out, cmd),
        Command::Unblock {
            carrier,
            verification,
        } => {
            let r: UnblockRequested = c.post(
                &format!("/carriers/{carrier}/unblock"),
                &UnblockRequest {
                    verification: *verification,
                },
            )?;
            if out.json {
                return out.print_json(&r);
            }
            out.approvals(std::slice::from_ref(&r.approval))?;
            println!(
                "release code for the holder's agent (shown once): {}",
                r.release_code
            );
            Ok(())
        }
        Command::Import {
            file,
            dry_run,
            batch,
        } => {
            let o = import::run(&c, file, *dry_run, *batch)?;
            if out.json {
                out.print_json(&o)?;
            } else {
                for e in &o.errors {
                    eprintln!("line {} ({}): {}", e.line, e.employee_number, e.message);
                }
                let verb = if o.applied {
                    "imported"
                } else {
                    "would import"
                };
                println!(
                    "{} rows: {verb} {} new, {} updated, {} unchanged; {} bad rows",
                    o.rows,
                    o.created,
                    o.updated,
                    o.unchanged,
                    o.errors.len()
                );
            }
            if o.errors.is_empty() {
                Ok(())
            } else if o.partial {
                Err(Failure::Invalid(format!(
                    "{} bad rows found while importing (the register changed meanwhile); the rows before them were imported: fix them and import the file again",
                    o.errors.len()
                )))
            } else {
                Err(Failure::Invalid(format!(
                    "{} bad rows: nothing was imported; fix them and import again",
                    o.errors.len()
                )))
            }
        }
        Command::Audit(AuditCmd::List { after, limit }) => {
            let records = audit::page(&c, *after, *limit)?;
            if out.json {
                return out.print_json(&records);
            }
            for r in &records {
                println!(
                    "{:>8} {} {:<24} {:<32} {}",
                    r.seq, r.at, r.actor, r.action, r.details
                );
            }
            Ok(())
        }
        Command::Audit(AuditCmd::Export { file, after }) => {
            let e = audit::export(&c, file, *after)?;
            if out.json {
                return out.print_json(&e);
            }
            println!(
                "{} records written to {}; every hash and link checks; head (record {}): {} (compare it with a signed checkpoint)",
                e.records,
                file.display(),
                e.last_seq,
                e.head
            );
            Ok(())
        }
        Command::Reconcile => {
            let d: Vec<Difference> = c.get("/reconciliation")?;
            if out.json {
                return out.print_json(&d);
            }
            for x in &d {
                println!(
                    "carrier {} is {} but certificate {} is {}",
                    x.carrier_id, x.carrier_state, x.serial, x.certificate_status
                );
            }
            if d.is_empty() {
                println!("carrier states and certificate statuses agree");
                Ok(())
            } else {
                Err(Failure::Differences(d.len()))
            }
        }
    }
}

fn officer(c: &Client, out: &Output, cmd: &OfficerCmd) -> Result<(), Failure> {
    match cmd {
        OfficerCmd::Add {
            id,
            name,
            roles,
            person,
        } => {
            let o: Officer = c.post(
                "/officers",
                &NewOfficer {
                    id: id.clone(),
                    display_name: name.clone(),
                    roles: roles.clone(),
                    person_id: person.clone(),
                },
            )?;
            if let (false, Some(t)) = (out.json, &o.first_token) {
                // The new officer's first token alone on stdout (for `> anna.token`), once.
                eprintln!("officer {} created ({})", o.id, o.display_name);
                eprintln!(
                    "{id}'s first token (id {}, expires at {} Unix time), shown once:",
                    t.id, t.expires_at
                );
                println!("{}", t.token);
                return Ok(());
            }
            if out.json {
                return out.print_json(&o);
            }
            out.officers(&[o])
        }
        OfficerCmd::List => out.officers(&c.get::<Vec<Officer>>("/officers")?),
        OfficerCmd::Token { id, label, days } => {
            let t: TokenIssued = c.post(
                &format!("/officers/{id}/tokens"),
                &NewToken {
                    label: label.clone(),
                    valid_days: *days,
                },
            )?;
            if out.json {
                return out.print_json(&t);
            }
            // The token alone on stdout (for `> file`); what it is on stderr.
            eprintln!(
                "token {} for {id}, expires at {} (Unix time); shown once:",
                t.id, t.expires_at
            );
            println!("{}", t.token);
            Ok(())
        }
        OfficerCmd::Tokens { id } => {
            let list: Vec<TokenInfo> = c.get(&format!("/officers/{id}/tokens"))?;
            if out.json {
                return out.print_json(&list);
            }
            for t in &list {
                let state = match t.revoked_at {
                    Some(at) => format!("revoked at {at}"),
                    None => format!("expires at {}", t.expires_at),
                };
                println!("{}  {}  {state}", t.id, t.label);
            }
            Ok(())
        }
        OfficerCmd::Disable { id } => {
            let o: Officer = c.delete(&format!("/officers/{id}"), None::<&()>)?;
            if out.json {
                return out.print_json(&o);
            }
            println!(
                "officer {} disabled; every token of theirs is revoked",
                o.id
            );
            Ok(())
        }
        OfficerCmd::RevokeToken { id, token_id } => {
            let v: serde_json::Value =
                c.delete(&format!("/officers/{id}/tokens/{token_id}"), None::<&()>)?;
            out.done(&v, &format!("token {token_id} of {id} revoked"))
        }
    }
}

fn person(c: &Client, out: &Output, cmd: &PersonCmd) -> Result<(), Failure> {
    match cmd {
        PersonCmd::Add(a) => {
            let p: Person = c.post(
                "/people",
                &NewPerson {
                    employee_number: a.employee_number.clone(),
                    given_name: a.given_name.clone(),
                    family_name: a.family_name.clone(),
                    email: a.email.clone(),
                    upn: a.upn.clone(),
                    identity_number: a.identity_number.clone(),
                    non_resident: a.birth_date.as_ref().map(|b| NonResident {
                        birth_date: b.clone(),
                        nationality: a.nationality.clone().unwrap_or_default(),
                    }),
                    protected_identity: a.protected,
                    directory_sid: a.sid.clone(),
                },
            )?;
            out.person(&p)
        }
        PersonCmd::Show { id } => {
            let p: Person = c.get(&format!("/people/{id}"))?;
            let carriers: Vec<Carrier> = c.get(&format!("/people/{id}/carriers"))?;
            if out.json {
                return out.print_json(&serde_json::json!({ "person": p, "carriers": carriers }));
            }
            out.person(&p)?;
            for k in &carriers {
                out.carrier(k)?;
            }
            Ok(())
        }
        PersonCmd::List { after, limit } => {
            let people: Vec<Person> = c.get(&format!(
                "/people?after={}&limit={limit}",
                client::query_escape(after)
            ))?;
            if out.json {
                return out.print_json(&people);
            }
            for p in &people {
                println!(
                    "{}  {}  {} {}  {}",
                    p.employee_number, p.id, p.given_name, p.family_name, p.state
                );
            }
            Ok(())
        }
        PersonCmd::End { id } => {
            let p: Person = c.post(&format!("/people/{id}/employment-end"), &())?;
            out.person(&p)
        }
    }
}

fn carrier(c: &Client, out: &Output, cmd: &CarrierCmd) -> Result<(), Failure> {
    let k: Carrier = match cmd {
        CarrierCmd::Add {
            kind,
            serial_number,
        } => c.post(
            "/carriers",
            &NewCarrier {
                kind: *kind,
                serial_number: serial_number.clone(),
            },
        )?,
        CarrierCmd::Show { id } => c.get(&format!("/carriers/{id}"))?,
        CarrierCmd::Assign { id, person, terms } => {
            let a: Approval = c.post(
                &format!("/carriers/{id}/assignment"),
                &AssignRequest {
                    person_id: person.clone(),
                    terms_version: terms.clone(),
                },
            )?;
            return out.approvals(&[a]);
        }
        CarrierCmd::Keys {
            id,
            csrs,
            attestations,
            puk_file,
            certificates_out,
        } => {
            let mut keys = Vec::new();
            for (profile, file) in csrs {
                keys.push(CarrierKey {
                    profile: *profile,
                    csr: Some(read(file)?),
                    attestation: None,
                    tpm: None,
                });
            }
            for (profile, cert, intermediate) in attestations {
                keys.push(CarrierKey {
                    profile: *profile,
                    csr: None,
                    attestation: Some(Attestation {
                        certificate: read(cert)?,
                        intermediate: read(intermediate)?,
                    }),
                    tpm: None,
                });
            }
            if keys.is_empty() {
                return Err(Failure::Usage(
                    "give at least one --csr PROFILE=FILE or --attestation PROFILE=CERT,INTERMEDIATE"
                        .into(),
                ));
            }
            let puk = puk_file
                .as_ref()
                .map(|f| read(f).map(|s| s.trim().to_owned()))
                .transpose()?;
            let carrier: Carrier =
                c.post(&format!("/carriers/{id}/keys"), &KeysRequest { keys, puk })?;
            if let Some(dir) = certificates_out {
                for serial in &carrier.certificates {
                    let cert: CertificateInfo = c.get(&format!("/certificates/{serial}"))?;
                    // A profile name, never a path from the answer.
                    let profile: ProfileName = cert.profile.parse().map_err(|_| {
                        Failure::Server(format!("certificate {serial} has no known profile"))
                    })?;
                    let path = dir.join(format!("{}.pem", profile.as_str()));
                    std::fs::write(&path, &cert.pem)
                        .map_err(|e| Failure::Usage(format!("writing {}: {e}", path.display())))?;
                    eprintln!(
                        "certificate {serial} ({}) written to {}",
                        cert.profile,
                        path.display()
                    );
                }
            }
            carrier
        }
        CarrierCmd::Activate { id, receipt } => c.post(
            &format!("/carriers/{id}/activation"),
            &ActivateRequest {
                receipt: receipt.clone(),
            },
        )?,
        CarrierCmd::Suspend { id, reason, days } => c.post(
            &format!("/carriers/{id}/suspension"),
            &SuspendRequest {
                reason: *reason,
                days: *days,
            },
        )?,
        CarrierCmd::Resume { id, verification } => c.delete(
            &format!("/carriers/{id}/suspension"),
            Some(&ResumeRequest {
                verification: verification.clone(),
            }),
        )?,
        CarrierCmd::Revoke { id, reason } => c.post(
            &format!("/carriers/{id}/revocation"),
            &RevokeCarrierRequest { reason: *reason },
        )?,
        CarrierCmd::RevokeMany { ids, reason } => {
            let b: BulkRevocation = c.post(
                "/bulk-revocations",
                &BulkRevocationRequest {
                    carrier_ids: ids.clone(),
                    reason: *reason,
                },
            )?;
            return out.bulks(&[b]);
        }
        CarrierCmd::Retire { id, restock } => c.post(
            &format!("/carriers/{id}/retirement"),
            &RetireRequest { restock: *restock },
        )?,
    };
    out.carrier(&k)
}

fn temporary(c: &Client, out: &Output, cmd: &TemporaryCmd) -> Result<(), Failure> {
    match cmd {
        TemporaryCmd::Request {
            person,
            carrier,
            original,
            days,
        } => {
            let a: Approval = c.post(
                &format!("/people/{person}/temporary-card"),
                &TemporaryRequest {
                    carrier_id: carrier.clone(),
                    original_id: original.clone(),
                    days: *days,
                },
            )?;
            out.approvals(&[a])
        }
        TemporaryCmd::Extend { id, days } => {
            let k: Carrier = c.post(
                &format!("/carriers/{id}/extension"),
                &ExtendRequest { days: *days },
            )?;
            out.carrier(&k)
        }
        TemporaryCmd::Return { id, outcome } => {
            let outcome = if outcome == "lost" {
                ReturnOutcome::Lost
            } else {
                ReturnOutcome::NoLongerNeeded
            };
            let k: Carrier = c.post(
                &format!("/carriers/{id}/return"),
                &ReturnRequest { outcome },
            )?;
            out.carrier(&k)
        }
    }
}

fn approve(c: &Client, out: &Output, cmd: &ApproveCmd) -> Result<(), Failure> {
    let a: Approval = match cmd {
        ApproveCmd::List => {
            let list = c.get::<Vec<Approval>>("/approvals")?;
            let bulks = c.get::<Vec<BulkRevocation>>("/bulk-revocations")?;
            if out.json {
                return out.print_json(
                    &serde_json::json!({ "approvals": list, "bulk_revocations": bulks }),
                );
            }
            out.approvals(&list)?;
            return out.bulks(&bulks);
        }
        ApproveCmd::BulkYes { id } => {
            let b: BulkRevocation = c.post(&format!("/bulk-revocations/{id}/approval"), &())?;
            return out.bulks(&[b]);
        }
        ApproveCmd::BulkNo { id } => {
            let b: BulkRevocation = c.post(&format!("/bulk-revocations/{id}/refusal"), &())?;
            return out.bulks(&[b]);
        }
        ApproveCmd::Yes { id } => c.post(&format!("/approvals/{id}/approval"), &())?,
        ApproveCmd::No { id } => c.post(&format!("/approvals/{id}/refusal"), &())?,
    };
    out.approvals(&[a])
}

/// Prints answers as text, or as JSON with `--json`.
struct Output {
    json: bool,
}

impl Output {
    fn print_json<T: serde::Serialize>(&self, v: &T) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(v).map_err(|e| Failure::Server(e.to_string()))?;
        println!("{text}");
        Ok(())
    }

    fn done(&self, v: &serde_json::Value, text: &str) -> Result<(), Failure> {
        if self.json {
            return self.print_json(v);
        }
        println!("{text}");
        Ok(())
    }

    fn person(&self, p: &Person) -> Result<(), Failure> {
        if self.json {
            return self.print_json(p);
        }
        println!("person {}", p.id);
        println!("  employee number  {}", p.employee_number);
        println!("  name             {} {}", p.given_name, p.family_name);
        if let Some(n) = &p.identity_number {
            println!("  identity number  {n}");
        }
        if let Some(nr) = &p.non_resident {
            println!(
                "  non-resident     born {}, {}",
                nr.birth_date, nr.nationality
            );
        }
        if p.protected_identity {
            println!("  protected identity");
        }
        if let Some(sid) = &p.directory_sid {
            println!("  directory SID    {sid}");
        }
        println!("  state            {}", p.state);
        Ok(())
    }

    fn carrier(&self, k: &Carrier) -> Result<(), Failure> {
        if self.json {
            return self.print_json(k);
        }
        println!("carrier {} ({} {})", k.id, k.kind, k.serial_number);
        let mut state = k.state.to_string();
        if let Some(r) = k.suspend_reason {
            state.push_str(&format!(" ({r})"));
        }
        if let Some(r) = k.revoke_reason {
            state.push_str(&format!(" ({r})"));
        }
        println!("  state         {state}");
        if let Some(p) = &k.person_id {
            println!("  person        {p}");
        }
        if let Some(d) = k.deadline {
            println!("  deadline      {d} (Unix time)");
        }
        if let Some(o) = &k.original_id {
            println!("  original      {o}");
        }
        for s in &k.certificates {
            println!("  certificate   {s}");
        }
        if let Some(code) = &k.loss_report_code {
            println!("  loss-report code (print it on the holder's receipt; shown once): {code}");
        }
        Ok(())
    }

    fn approvals(&self, list: &[Approval]) -> Result<(), Failure> {
        if self.json {
            return self.print_json(&list);
        }
        for a in list {
            println!(
                "approval {}: {} of carrier {} for person {}, asked by {}: {}{}",
                a.id,
                a.kind,
                a.carrier_id,
                a.person_id,
                a.requested_by,
                a.state,
                a.decided_by
                    .as_ref()
                    .map(|d| format!(" by {d}"))
                    .unwrap_or_default()
            );
            if let Some(n) = &a.note {
                println!("  note     {n}");
            }
            if let Some(code) = &a.release_code {
                println!("  release code for the holder's agent (shown once): {code}");
            }
            // What the approver approves: the names the certificates will carry.
            println!("  subject  {}", a.subject.common_name);
            for (what, v) in [
                ("upn", &a.subject.upn),
                ("email", &a.subject.email),
                ("sid", &a.subject.sid),
            ] {
                if let Some(v) = v {
                    println!("  {what:8} {v}");
                }
            }
        }
        Ok(())
    }

    fn bulks(&self, list: &[BulkRevocation]) -> Result<(), Failure> {
        if self.json {
            return self.print_json(&list);
        }
        for b in list {
            println!(
                "bulk revocation {}: {} carriers, {}, asked by {}: {}{}",
                b.id,
                b.carrier_ids.len(),
                b.reason,
                b.requested_by,
                b.state,
                b.revoked
                    .map(|n| format!(" ({n} revoked)"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    fn officers(&self, list: &[Officer]) -> Result<(), Failure> {
        if self.json {
            return self.print_json(&list);
        }
        for o in list {
            let roles: Vec<&str> = o.roles.iter().map(|r| r.as_str()).collect();
            println!("{}  {}  {}", o.id, o.display_name, roles.join(","));
        }
        Ok(())
    }
}
