//! The checks of the conformance catalogue. Each starts from a selected PIV application with
//! the PIN status reset, and leaves the card usable with the configured PIN, PUK and
//! management key.

use der::{Decode, Encode};
use ecdsa::signature::hazmat::PrehashVerifier;
use rsa::BigUint;
use sha2::Digest;
use tessera_piv::apdu::{Command, StatusWord as Sw};
use tessera_piv::card::PublicKey;
use tessera_piv::host::Error as HostError;
use tessera_piv::piv::{object, Algorithm, KeyRef, AID, AID_PREFIX};
use tessera_piv::tlv;

use super::{Check, Iface, Session, Verdict};

/// A check body: `Ok(None)` passes, `Ok(Some(reason))` is not applicable, `Err` fails.
type Body = Result<Option<String>, String>;

fn verdict(r: Body) -> Verdict {
    match r {
        Ok(None) => Verdict::Pass,
        Ok(Some(why)) => Verdict::NotApplicable(why),
        Err(why) => Verdict::Fail(why),
    }
}

macro_rules! check {
    ($id:literal, $clause:literal, $title:literal, $iface:ident, $destructive:literal, $f:ident) => {
        Check {
            id: $id,
            clause: $clause,
            title: $title,
            interface: Iface::$iface,
            destructive: $destructive,
            run: |s| verdict($f(s)),
        }
    };
}

/// The catalogue, in the order it runs.
pub static CATALOGUE: &[Check] = &[
    check!(
        "select.apt",
        "SP 800-73-4 Pt2 §3.1.1",
        "SELECT answers the application property template",
        Both,
        false,
        select_apt
    ),
    check!(
        "select.full-aid",
        "SP 800-73-4 Pt2 §3.1.1",
        "SELECT with the full AID (with version)",
        Both,
        false,
        select_full_aid
    ),
    check!(
        "select.unknown",
        "SP 800-73-4 Pt2 §3.1.1",
        "SELECT of another AID is 6A82",
        Both,
        false,
        select_unknown
    ),
    check!(
        "select.keeps-status",
        "SP 800-73-4 Pt2 §3.1.1",
        "re-SELECT of PIV keeps the security status",
        Contact,
        false,
        select_keeps_status
    ),
    check!(
        "data.discovery",
        "SP 800-73-4 Pt1 §3.3.2",
        "Discovery Object names the PIV AID and PIN policy",
        Both,
        false,
        data_discovery
    ),
    check!(
        "data.chuid",
        "SP 800-73-4 Pt1 §3.1.2",
        "CHUID carries a 16-byte GUID, expiry and EDC",
        Both,
        false,
        data_chuid
    ),
    check!(
        "data.ccc",
        "SP 800-73-4 Pt1 §3.1.1",
        "CCC readable when present",
        Contact,
        false,
        data_ccc
    ),
    check!(
        "data.absent",
        "SP 800-73-4 Pt2 §3.1.2",
        "GET DATA of an undefined object is 6A82",
        Both,
        false,
        data_absent
    ),
    check!(
        "data.bad-tag-list",
        "SP 800-73-4 Pt2 §3.1.2",
        "GET DATA without a 5C tag list is 6A80",
        Both,
        false,
        data_bad_tag_list
    ),
    check!(
        "data.bad-p1p2",
        "SP 800-73-4 Pt2 §3.1.2",
        "GET DATA with P1-P2 other than 3FFF is refused",
        Both,
        false,
        data_bad_p1p2
    ),
    check!(
        "verify.status-query",
        "SP 800-73-4 Pt2 §3.2.1",
        "VERIFY without data reports tries left (63Cx)",
        Contact,
        false,
        verify_status_query
    ),
    check!(
        "verify.correct",
        "SP 800-73-4 Pt2 §3.2.1",
        "VERIFY with the PIN succeeds and the status says so",
        Contact,
        false,
        verify_correct
    ),
    check!(
        "verify.reset",
        "SP 800-73-4 Pt2 §3.2.1",
        "VERIFY P1=FF resets the PIN status",
        Contact,
        false,
        verify_reset
    ),
    check!(
        "verify.wrong",
        "SP 800-73-4 Pt2 §3.2.1",
        "a wrong PIN is 63Cx with one try fewer; the right PIN restores",
        Contact,
        false,
        verify_wrong
    ),
    check!(
        "verify.format",
        "SP 800-73-4 Pt2 §2.4.3",
        "a badly padded PIN is 6A80 and uses no try",
        Contact,
        false,
        verify_format
    ),
    check!(
        "verify.block",
        "SP 800-73-4 Pt2 §3.2.1, §3.2.3",
        "exhausted tries block the PIN (6983); the PUK unblocks",
        Contact,
        true,
        verify_block
    ),
    check!(
        "change.pin",
        "SP 800-73-4 Pt2 §3.2.2",
        "CHANGE REFERENCE DATA changes the PIN",
        Contact,
        false,
        change_pin
    ),
    check!(
        "change.puk",
        "SP 800-73-4 Pt2 §3.2.2",
        "CHANGE REFERENCE DATA changes the PUK",
        Contact,
        true,
        change_puk
    ),
    check!(
        "reset-retry.wrong-puk",
        "SP 800-73-4 Pt2 §3.2.3",
        "RESET RETRY COUNTER with a wrong PUK is 63Cx",
        Contact,
        true,
        reset_retry_wrong_puk
    ),
    check!(
        "mgmt.mutual",
        "SP 800-73-4 Pt2 App. A.2",
        "management key mutual authentication",
        Contact,
        false,
        mgmt_mutual
    ),
    check!(
        "mgmt.wrong-key",
        "SP 800-73-4 Pt2 App. A.2",
        "a wrong management key is refused",
        Contact,
        false,
        mgmt_wrong_key
    ),
    check!(
        "mgmt.challenge",
        "SP 800-73-4 Pt2 §3.2.4",
        "9B challenge request (OpenSC's random source)",
        Contact,
        false,
        mgmt_challenge
    ),
    check!(
        "generate.needs-mgmt",
        "SP 800-73-4 Pt2 §3.3.2",
        "GENERATE without the management key is 6982",
        Contact,
        false,
        generate_needs_mgmt
    ),
    check!(
        "sign.p256",
        "SP 800-73-4 Pt2 §3.2.4, SP 800-78-4",
        "9A P-256: PIN needed, signature verifies",
        Contact,
        true,
        sign_p256
    ),
    check!(
        "sign.short-digest",
        "SP 800-73-4 Pt2 §3.2.4, FIPS 186-5 §6.4",
        "ECDSA over a digest shorter than the curve (SHA-1 with P-256)",
        Contact,
        true,
        sign_short_digest
    ),
    check!(
        "sign.p384",
        "SP 800-78-4 Table 6-2",
        "P-384 signature verifies",
        Contact,
        true,
        sign_p384
    ),
    check!(
        "sign.rsa2048",
        "SP 800-73-4 Pt2 §3.2.4, ISO 7816-4 §5.1.1.1",
        "RSA-2048 raw operation through command chaining",
        Contact,
        true,
        sign_rsa2048
    ),
    check!(
        "sign.pin-always",
        "SP 800-73-4 Pt1 §3.2 (9C)",
        "9C needs the PIN before every signature",
        Contact,
        true,
        sign_pin_always
    ),
    check!(
        "sign.pin-always-immediately",
        "SP 800-73-4 Pt1 §3.2 (9C)",
        "9C refuses a PIN verified before another command",
        Contact,
        true,
        sign_pin_always_immediately
    ),
    check!(
        "sign.card-auth",
        "SP 800-73-4 Pt1 §3.2 (9E)",
        "9E signs without the PIN",
        Contact,
        true,
        sign_card_auth
    ),
    check!(
        "sign.wrong-alg",
        "SP 800-73-4 Pt2 §3.2.4",
        "GENERAL AUTHENTICATE with the wrong algorithm is refused",
        Contact,
        true,
        sign_wrong_alg
    ),
    check!(
        "ecdh.9d",
        "SP 800-73-4 Pt2 §3.2.4 (key establishment)",
        "ECDH on 9D agrees with the host",
        Contact,
        true,
        ecdh_9d
    ),
    check!(
        "data.put-needs-mgmt",
        "SP 800-73-4 Pt2 §3.3.1",
        "PUT DATA without the management key is 6982",
        Contact,
        false,
        put_needs_mgmt
    ),
    check!(
        "data.long-object",
        "SP 800-73-4 Pt2 §3.3.1, ISO 7816-4 §5.1.3",
        "a 2 kB object written by chaining reads back through 61xx",
        Contact,
        true,
        data_long_object
    ),
    check!(
        "yk.version",
        "Yubico PIV ext. GET VERSION",
        "GET VERSION answers 3 bytes",
        Both,
        false,
        yk_version
    ),
    check!(
        "yk.serial",
        "Yubico PIV ext. GET SERIAL",
        "GET SERIAL answers 4 bytes",
        Both,
        false,
        yk_serial
    ),
    check!(
        "yk.metadata",
        "Yubico PIV ext. GET METADATA",
        "metadata of PIN, PUK and management key",
        Contact,
        false,
        yk_metadata
    ),
    check!(
        "yk.attest",
        "Yubico PIV ext. ATTEST",
        "attestation of a generated key chains to 5FFF01",
        Contact,
        true,
        yk_attest
    ),
    check!(
        "yk.set-mgmt-key",
        "Yubico PIV ext. SET MANAGEMENT KEY",
        "an AES-256 management key can be set and used",
        Contact,
        true,
        yk_set_mgmt_key
    ),
    check!(
        "yk.set-pin-retries",
        "Yubico PIV ext. SET PIN RETRIES",
        "retry counters can be set (PIN and PUK return to defaults)",
        Contact,
        true,
        yk_set_pin_retries
    ),
    check!(
        "yk.reset-refused",
        "Yubico PIV ext. RESET",
        "RESET is refused while the PIN or PUK is not blocked",
        Contact,
        false,
        yk_reset_refused
    ),
    check!(
        "yk.reset",
        "Yubico PIV ext. RESET",
        "RESET after blocking PIN and PUK restores factory defaults",
        Contact,
        true,
        yk_reset
    ),
    check!(
        "iso.wrong-length",
        "ISO 7816-4 §5.1",
        "an APDU whose Lc disagrees with its length is 6700",
        Both,
        false,
        iso_wrong_length
    ),
    check!(
        "iso.short",
        "ISO 7816-4 §5.1",
        "a 3-byte APDU is refused",
        Both,
        false,
        iso_short
    ),
    check!(
        "iso.unknown-ins",
        "ISO 7816-4 §5.6",
        "an unknown INS is 6D00",
        Both,
        false,
        iso_unknown_ins
    ),
    check!(
        "iso.unknown-cla",
        "ISO 7816-4 §5.6",
        "an unknown CLA is 6E00",
        Both,
        false,
        iso_unknown_cla
    ),
    check!(
        "iso.secure-messaging",
        "ISO 7816-4 §5.6, SP 800-73-4 Pt2 §3",
        "secure messaging CLA is refused (6882)",
        Both,
        false,
        iso_secure_messaging
    ),
    check!(
        "iso.bad-tlv",
        "SP 800-73-4 Pt2 §3.2.4",
        "GENERAL AUTHENTICATE with broken TLV is 6A80",
        Both,
        false,
        iso_bad_tlv
    ),
    check!(
        "iso.bad-key-ref",
        "SP 800-73-4 Pt2 §3.2.4",
        "GENERAL AUTHENTICATE with an unknown key reference is refused",
        Both,
        false,
        iso_bad_key_ref
    ),
    check!(
        "iso.chain-interrupted",
        "ISO 7816-4 §5.1.1.1",
        "an interrupted command chain is refused and forgotten",
        Both,
        false,
        iso_chain_interrupted
    ),
    check!(
        "iso.get-response-unexpected",
        "ISO 7816-4 §7.6.1",
        "GET RESPONSE with nothing pending is refused",
        Both,
        false,
        iso_get_response_unexpected
    ),
    check!(
        "cl.uid",
        "PC/SC Pt3 §3.2.2.1.3",
        "reader pseudo-APDU FF CA returns a UID",
        Contactless,
        false,
        cl_uid
    ),
    check!(
        "cl.card-auth",
        "SP 800-73-4 Pt1 §3.5, §3.2 (9E)",
        "9E signs over contactless without the PIN",
        Contactless,
        false,
        cl_card_auth
    ),
    check!(
        "cl.pin-refused",
        "SP 800-73-4 Pt1 §3.5",
        "VERIFY is refused over contactless",
        Contactless,
        false,
        cl_pin_refused
    ),
    check!(
        "cl.auth-key-refused",
        "SP 800-73-4 Pt1 §3.5",
        "9A is refused over contactless",
        Contactless,
        false,
        cl_auth_key_refused
    ),
    check!(
        "cl.object-refused",
        "SP 800-73-4 Pt1 §3.5, Table 3",
        "objects without contactless access are refused",
        Contactless,
        false,
        cl_object_refused
    ),
    check!(
        "issued.management-key",
        "SP 800-73-4 Pt2 §3.2.4; Yubico",
        "the factory management key no longer opens an issued card",
        Contact,
        false,
        issued_management_key
    ),
    check!(
        "issued.pin",
        "SP 800-73-4 Pt2 §2.4.3; Yubico",
        "the factory PIN is no longer set on an issued card",
        Contact,
        false,
        issued_pin
    ),
    check!(
        "issued.puk",
        "SP 800-73-4 Pt2 §2.4.3; Yubico",
        "the factory PUK is no longer set on an issued card",
        Contact,
        false,
        issued_puk
    ),
];

// --- helpers ---------------------------------------------------------------------------

fn get_data_cmd(tag: u32) -> Command {
    let mut t = Vec::new();
    tlv::push_tag(&mut t, tag);
    Command::new(0, 0xCB, 0x3F, 0xFF)
        .with_data(tlv::encode(0x5C, &t))
        .with_le(256)
}

fn ga_sign(slot: KeyRef, alg: Algorithm, input: &[u8]) -> Command {
    let mut inner = tlv::encode(0x82, &[]);
    tlv::push(&mut inner, 0x81, input);
    Command::new(0, 0x87, alg.id(), slot.0)
        .with_data(tlv::encode(0x7C, &inner))
        .with_le(256)
}

fn pin_tries(s: &mut Session<'_>) -> Result<u8, String> {
    let resp = s.send(&Command::new(0, 0x20, 0, 0x80))?;
    resp.sw
        .retries()
        .ok_or_else(|| format!("VERIFY status query: expected 63Cx, got {}", resp.sw))
}

fn generate(s: &mut Session<'_>, slot: KeyRef, alg: Algorithm) -> Result<PublicKey, String> {
    s.authenticate()?;
    s.client
        .generate(slot, alg, None)
        .map_err(|e| format!("GENERATE {alg:?} in {slot}: {e}"))
}

fn sign(
    s: &mut Session<'_>,
    slot: KeyRef,
    alg: Algorithm,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    s.client
        .sign(slot, alg, input)
        .map_err(|e| format!("GENERAL AUTHENTICATE with {slot}: {e}"))
}

fn verify_ecdsa(public: &PublicKey, digest: &[u8], sig: &[u8]) -> Result<(), String> {
    let PublicKey::Ec { alg, point } = public else {
        return Err("expected an EC key".into());
    };
    let bad = |e: ecdsa::Error| format!("signature does not verify: {e}");
    match alg {
        Algorithm::EccP256 => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad)?;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(bad)?;
            vk.verify_prehash(digest, &sig).map_err(bad)
        }
        Algorithm::EccP384 => {
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad)?;
            let sig = p384::ecdsa::Signature::from_der(sig).map_err(bad)?;
            vk.verify_prehash(digest, &sig).map_err(bad)
        }
        _ => Err("unexpected curve".into()),
    }
}

fn card_sw(e: HostError) -> Result<Sw, String> {
    match e {
        HostError::Card(sw) => Ok(sw),
        other => Err(other.to_string()),
    }
}

fn expect_sw_in(got: Sw, allowed: &[Sw], what: &str) -> Result<(), String> {
    if allowed.contains(&got) {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected one of {allowed:?}, card answered {got}"
        ))
    }
}

/// After a malformed command the card must still answer SELECT.
fn still_usable(s: &mut Session<'_>) -> Result<(), String> {
    s.client
        .select()
        .map(drop)
        .map_err(|e| format!("card unusable afterwards: {e}"))
}

// --- selection and data objects ----------------------------------------------------------

fn select_apt(s: &mut Session<'_>) -> Body {
    let apt = s.client.select().map_err(|e| e.to_string())?;
    let inner = tlv::find(&apt, 0x61)
        .map_err(|e| e.to_string())?
        .ok_or("no 61 template")?;
    let pix = tlv::find(inner, 0x4F)
        .map_err(|e| e.to_string())?
        .ok_or("no 4F (AID) in the template")?;
    if !AID[AID_PREFIX.len()..].starts_with(&pix[..pix.len().min(4)]) {
        return Err(format!("4F is {pix:02X?}, not the PIV PIX"));
    }
    let authority = tlv::find(inner, 0x79)
        .map_err(|e| e.to_string())?
        .ok_or("no 79 (coexistent tag allocation authority)")?;
    match tlv::find(authority, 0x4F) {
        Ok(Some(a)) if a == AID_PREFIX => Ok(None),
        _ => Err("79 does not carry the NIST RID A0 00 00 03 08".into()),
    }
}

fn select_full_aid(s: &mut Session<'_>) -> Body {
    s.expect(
        &Command::new(0, 0xA4, 4, 0).with_data(AID).with_le(256),
        Sw::SUCCESS,
        "SELECT full AID",
    )?;
    Ok(None)
}

fn select_unknown(s: &mut Session<'_>) -> Body {
    s.expect(
        &Command::new(0, 0xA4, 4, 0)
            .with_data(vec![0xA0, 0, 0, 0, 0x99, 0x99])
            .with_le(256),
        Sw::NOT_FOUND,
        "SELECT unknown AID",
    )?;
    still_usable(s)?;
    Ok(None)
}

fn select_keeps_status(s: &mut Session<'_>) -> Body {
    s.verify_pin()?;
    s.client.select().map_err(|e| e.to_string())?;
    s.expect(
        &Command::new(0, 0x20, 0, 0x80),
        Sw::SUCCESS,
        "VERIFY status after re-SELECT",
    )?;
    Ok(None)
}

fn data_discovery(s: &mut Session<'_>) -> Body {
    let d = s.expect(&get_data_cmd(object::DISCOVERY), Sw::SUCCESS, "GET DATA 7E")?;
    let inner = tlv::find(&d, 0x7E)
        .map_err(|e| e.to_string())?
        .ok_or("answer is not a 7E template")?;
    let aid = tlv::find(inner, 0x4F)
        .map_err(|e| e.to_string())?
        .ok_or("no 4F")?;
    if !aid.starts_with(&AID_PREFIX) {
        return Err("4F is not the PIV AID".into());
    }
    match tlv::find(inner, 0x5F2F) {
        Ok(Some(p)) if p.len() == 2 && p[0] & 0x40 != 0 => Ok(None),
        _ => Err("5F2F PIN usage policy missing or without the PIV PIN".into()),
    }
}

fn data_chuid(s: &mut Session<'_>) -> Body {
    let c = s
        .client
        .get_data(object::CHUID)
        .map_err(|e| format!("GET DATA CHUID: {e}"))?;
    let items = tlv::parse_all(&c).map_err(|e| format!("CHUID is not TLV: {e}"))?;
    let get = |tag| items.iter().find(|t| t.tag == tag).map(|t| t.value);
    match get(0x34) {
        Some(g) if g.len() == 16 => {}
        _ => return Err("no 16-byte GUID (34)".into()),
    }
    if get(0x35).map(<[u8]>::len) != Some(8) {
        return Err("no YYYYMMDD expiration date (35)".into());
    }
    if get(0xFE).is_none() || get(0x3E).is_none() {
        return Err("no issuer signature (3E) or error detection code (FE)".into());
    }
    Ok(None)
}

fn data_ccc(s: &mut Session<'_>) -> Body {
    match s.client.get_data(object::CCC) {
        Ok(c) => {
            tlv::parse_all(&c).map_err(|e| format!("CCC is not TLV: {e}"))?;
            Ok(None)
        }
        Err(HostError::Card(Sw::NOT_FOUND)) => Ok(Some(
            "the card has no CCC, which SP 800-73-4 makes optional".into(),
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn data_absent(s: &mut Session<'_>) -> Body {
    let resp = s.send(&get_data_cmd(0x5FC1FF))?;
    // Over contactless an object without contactless access may be refused before it is
    // looked up.
    let allowed: &[Sw] = if s.config.contactless {
        &[Sw::NOT_FOUND, Sw::SECURITY_STATUS_NOT_SATISFIED]
    } else {
        &[Sw::NOT_FOUND]
    };
    expect_sw_in(resp.sw, allowed, "GET DATA 5FC1FF")?;
    Ok(None)
}

fn data_bad_tag_list(s: &mut Session<'_>) -> Body {
    let cmd = Command::new(0, 0xCB, 0x3F, 0xFF)
        .with_data(vec![0x5D, 0x03, 0x5F, 0xC1, 0x02])
        .with_le(256);
    s.expect(&cmd, Sw::INCORRECT_DATA, "GET DATA with tag 5D")?;
    Ok(None)
}

fn data_bad_p1p2(s: &mut Session<'_>) -> Body {
    let mut cmd = get_data_cmd(object::CHUID);
    cmd.p1 = 0x00;
    let resp = s.send(&cmd)?;
    expect_sw_in(
        resp.sw,
        &[Sw::INCORRECT_P1P2, Sw::WRONG_P1P2],
        "GET DATA P1-P2 00FF",
    )?;
    Ok(None)
}

// --- PIN and PUK -----------------------------------------------------------------------

fn verify_status_query(s: &mut Session<'_>) -> Body {
    let tries = pin_tries(s)?;
    if tries == 0 {
        return Err("status query reports 0 tries on an unblocked card".into());
    }
    Ok(None)
}

fn verify_correct(s: &mut Session<'_>) -> Body {
    s.verify_pin()?;
    s.expect(
        &Command::new(0, 0x20, 0, 0x80),
        Sw::SUCCESS,
        "VERIFY status after VERIFY",
    )?;
    Ok(None)
}

fn verify_reset(s: &mut Session<'_>) -> Body {
    s.verify_pin()?;
    s.expect(
        &Command::new(0, 0x20, 0xFF, 0x80),
        Sw::SUCCESS,
        "VERIFY P1=FF",
    )?;
    pin_tries(s)?;
    Ok(None)
}

fn wrong_pin(s: &Session<'_>) -> Vec<u8> {
    // Same length as the real PIN, different digits.
    let mut w: Vec<u8> = s
        .config
        .pin
        .iter()
        .map(|b| if *b == b'9' { b'8' } else { b'9' })
        .collect();
    w.resize(8, 0xFF);
    w
}

fn verify_wrong(s: &mut Session<'_>) -> Body {
    let before = pin_tries(s)?;
    if before < 2 {
        return Ok(Some(format!(
            "only {before} PIN tries left; not spending one"
        )));
    }
    let w = wrong_pin(s);
    s.expect(
        &Command::new(0, 0x20, 0, 0x80).with_data(w),
        Sw::tries_left(before - 1),
        "VERIFY with a wrong PIN",
    )?;
    s.verify_pin()?;
    s.client
        .transmit_raw(&[0, 0x20, 0xFF, 0x80])
        .map_err(|e| e.to_string())?;
    let after = pin_tries(s)?;
    if after != before {
        return Err(format!(
            "tries not restored by the right PIN: {after} of {before}"
        ));
    }
    Ok(None)
}

fn verify_format(s: &mut Session<'_>) -> Body {
    let before = pin_tries(s)?;
    for bad in [
        vec![0x31, 0x32, 0x33, 0x34, 0x35, 0xFF, 0xFF, 0xFF],
        vec![0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0xFF, 0x37],
        vec![0x31, 0x32, 0x33, 0x34, 0x35, 0x36],
    ] {
        s.expect(
            &Command::new(0, 0x20, 0, 0x80).with_data(bad.clone()),
            Sw::INCORRECT_DATA,
            &format!("VERIFY {bad:02X?}"),
        )?;
    }
    if pin_tries(s)? != before {
        return Err("a malformed PIN used a try".into());
    }
    Ok(None)
}

fn verify_block(s: &mut Session<'_>) -> Body {
    let w = wrong_pin(s);
    let mut tries = pin_tries(s)?;
    while tries > 0 {
        tries -= 1;
        s.expect(
            &Command::new(0, 0x20, 0, 0x80).with_data(w.clone()),
            Sw::tries_left(tries),
            "VERIFY with a wrong PIN",
        )?;
    }
    let pin = tessera_piv::host::pad_pin(&s.config.pin).map_err(|e| e.to_string())?;
    s.expect(
        &Command::new(0, 0x20, 0, 0x80).with_data(pin.to_vec()),
        Sw::AUTH_METHOD_BLOCKED,
        "VERIFY with the right PIN once blocked",
    )?;
    s.expect(
        &Command::new(0, 0x20, 0, 0x80),
        Sw::AUTH_METHOD_BLOCKED,
        "VERIFY status when blocked",
    )?;
    let (puk, pin) = (s.config.puk.clone(), s.config.pin.clone());
    s.client
        .unblock_pin(&puk, &pin)
        .map_err(|e| format!("RESET RETRY COUNTER: {e}"))?;
    s.verify_pin()?;
    Ok(None)
}

fn change_pin(s: &mut Session<'_>) -> Body {
    let pin = s.config.pin.clone();
    let other = b"86420975".to_vec();
    s.client
        .change_reference(KeyRef::PIN, &pin, &other)
        .map_err(|e| format!("CHANGE REFERENCE DATA (PIN): {e}"))?;
    s.client
        .transmit_raw(&[0, 0x20, 0xFF, 0x80])
        .map_err(|e| e.to_string())?;
    s.client
        .verify_pin(&other)
        .map_err(|e| format!("VERIFY with the new PIN: {e}"))?;
    s.client
        .change_reference(KeyRef::PIN, &other, &pin)
        .map_err(|e| format!("changing the PIN back: {e}"))?;
    s.verify_pin()?;
    Ok(None)
}

fn change_puk(s: &mut Session<'_>) -> Body {
    let puk = s.config.puk.clone();
    let other = b"97531864".to_vec();
    s.client
        .change_reference(KeyRef::PUK, &puk, &other)
        .map_err(|e| format!("CHANGE REFERENCE DATA (PUK): {e}"))?;
    s.client
        .change_reference(KeyRef::PUK, &other, &puk)
        .map_err(|e| format!("changing the PUK back: {e}"))?;
    Ok(None)
}

fn reset_retry_wrong_puk(s: &mut Session<'_>) -> Body {
    let mut data = tessera_piv::host::pad_pin(b"00000000").map_err(|e| e.to_string())?;
    data.extend_from_slice(&tessera_piv::host::pad_pin(&s.config.pin).map_err(|e| e.to_string())?);
    let resp = s.send(&Command::new(0, 0x2C, 0, 0x80).with_data(data.to_vec()))?;
    let Some(left) = resp.sw.retries() else {
        return Err(format!(
            "wrong PUK: expected 63Cx, card answered {}",
            resp.sw
        ));
    };
    if left == 0 {
        return Err("the PUK is now blocked".into());
    }
    // The right PUK restores its counter.
    let (puk, pin) = (s.config.puk.clone(), s.config.pin.clone());
    s.client
        .unblock_pin(&puk, &pin)
        .map_err(|e| format!("RESET RETRY COUNTER with the right PUK: {e}"))?;
    Ok(None)
}

// --- management key and keys -----------------------------------------------------------

fn mgmt_mutual(s: &mut Session<'_>) -> Body {
    s.authenticate()?;
    Ok(None)
}

fn mgmt_wrong_key(s: &mut Session<'_>) -> Body {
    let alg = s.config.management_alg;
    let mut key = s.config.management_key.clone();
    if let Some(b) = key.first_mut() {
        *b ^= 0x55;
    }
    match s.client.authenticate_management(alg, &key) {
        Ok(()) => Err("a wrong management key was accepted".into()),
        Err(HostError::Card(sw)) => {
            expect_sw_in(
                sw,
                &[Sw::SECURITY_STATUS_NOT_SATISFIED, Sw::INCORRECT_DATA],
                "wrong key",
            )?;
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn mgmt_challenge(s: &mut Session<'_>) -> Body {
    let alg = s.config.management_alg;
    let cmd = Command::new(0, 0x87, alg.id(), 0x9B)
        .with_data(vec![0x7C, 0x02, 0x81, 0x00])
        .with_le(256);
    let a = s.expect(&cmd, Sw::SUCCESS, "9B challenge request")?;
    let b = s.expect(&cmd, Sw::SUCCESS, "9B challenge request")?;
    let c = tlv::find(&a, 0x7C)
        .ok()
        .flatten()
        .and_then(|t| tlv::find(t, 0x81).ok().flatten())
        .ok_or("answer has no 7C/81 challenge")?;
    if c.len() != tessera_piv::mgmt::block_size(alg).unwrap_or(0) {
        return Err(format!("challenge of {} bytes", c.len()));
    }
    if a == b {
        return Err("two challenges are equal".into());
    }
    Ok(None)
}

fn generate_needs_mgmt(s: &mut Session<'_>) -> Body {
    let cmd = Command::new(0, 0x47, 0, 0x9A)
        .with_data(tlv::encode(0xAC, &tlv::encode(0x80, &[0x11])))
        .with_le(256);
    s.expect(
        &cmd,
        Sw::SECURITY_STATUS_NOT_SATISFIED,
        "GENERATE without authentication",
    )?;
    Ok(None)
}

fn sign_p256(s: &mut Session<'_>) -> Body {
    let public = generate(s, KeyRef::AUTHENTICATION, Algorithm::EccP256)?;
    let digest = sha2::Sha256::digest(b"conformance");
    s.expect(
        &ga_sign(KeyRef::AUTHENTICATION, Algorithm::EccP256, &digest),
        Sw::SECURITY_STATUS_NOT_SATISFIED,
        "9A signature without the PIN",
    )?;
    s.verify_pin()?;
    let sig = sign(s, KeyRef::AUTHENTICATION, Algorithm::EccP256, &digest)?;
    verify_ecdsa(&public, &digest, &sig)?;
    // PIN "once": a second signature needs no new VERIFY.
    let sig = sign(s, KeyRef::AUTHENTICATION, Algorithm::EccP256, &digest)?;
    verify_ecdsa(&public, &digest, &sig)?;
    Ok(None)
}

fn sign_short_digest(s: &mut Session<'_>) -> Body {
    let public = generate(s, KeyRef::AUTHENTICATION, Algorithm::EccP256)?;
    s.verify_pin()?;
    let sha1 = [0x5Au8; 20];
    let sig = sign(s, KeyRef::AUTHENTICATION, Algorithm::EccP256, &sha1)?;
    // bits2int of a shorter input is the same integer: verify over the left-padded digest.
    let mut padded = vec![0u8; 12];
    padded.extend_from_slice(&sha1);
    verify_ecdsa(&public, &padded, &sig)?;
    Ok(None)
}

fn sign_p384(s: &mut Session<'_>) -> Body {
    let public = generate(s, KeyRef(0x82), Algorithm::EccP384)?;
    s.verify_pin()?;
    let digest = sha2::Sha384::digest(b"conformance");
    let sig = sign(s, KeyRef(0x82), Algorithm::EccP384, &digest)?;
    verify_ecdsa(&public, &digest, &sig)?;
    Ok(None)
}

fn sign_rsa2048(s: &mut Session<'_>) -> Body {
    let public = generate(s, KeyRef::KEY_MANAGEMENT, Algorithm::Rsa2048)?;
    let PublicKey::Rsa { modulus, exponent } = public else {
        return Err("GENERATE RSA returned no modulus".into());
    };
    if modulus.len() != 256 {
        return Err(format!("modulus of {} bytes", modulus.len()));
    }
    s.verify_pin()?;
    // A PKCS#1 v1.5 type 1 block, as a host would send for a signature.
    let mut block = vec![0x00, 0x01];
    block.resize(256 - 33, 0xFF);
    block.push(0x00);
    block.extend_from_slice(&[0xAB; 32]);
    let out = sign(s, KeyRef::KEY_MANAGEMENT, Algorithm::Rsa2048, &block)?;
    let n = BigUint::from_bytes_be(&modulus);
    let back = BigUint::from_bytes_be(&out).modpow(&BigUint::from_bytes_be(&exponent), &n);
    if back != BigUint::from_bytes_be(&block) {
        return Err("s^e mod n is not the input".into());
    }
    Ok(None)
}

fn sign_pin_always(s: &mut Session<'_>) -> Body {
    let public = generate(s, KeyRef::SIGNATURE, Algorithm::EccP256)?;
    let digest = sha2::Sha256::digest(b"sign me");
    s.verify_pin()?;
    let sig = sign(s, KeyRef::SIGNATURE, Algorithm::EccP256, &digest)?;
    verify_ecdsa(&public, &digest, &sig)?;
    s.expect(
        &ga_sign(KeyRef::SIGNATURE, Algorithm::EccP256, &digest),
        Sw::SECURITY_STATUS_NOT_SATISFIED,
        "a second 9C signature without a new VERIFY",
    )?;
    s.verify_pin()?;
    sign(s, KeyRef::SIGNATURE, Algorithm::EccP256, &digest)?;
    Ok(None)
}

fn sign_pin_always_immediately(s: &mut Session<'_>) -> Body {
    generate(s, KeyRef::SIGNATURE, Algorithm::EccP256)?;
    let digest = sha2::Sha256::digest(b"not immediately");
    s.verify_pin()?;
    // Another command between the VERIFY and the signature.
    s.expect(&get_data_cmd(object::CHUID), Sw::SUCCESS, "GET DATA CHUID")?;
    s.expect(
        &ga_sign(KeyRef::SIGNATURE, Algorithm::EccP256, &digest),
        Sw::SECURITY_STATUS_NOT_SATISFIED,
        "9C signature when the VERIFY was not the command before",
    )?;
    // A 9A signature in between uses the freshness up as well.
    generate(s, KeyRef::AUTHENTICATION, Algorithm::EccP256)?;
    s.verify_pin()?;
    sign(s, KeyRef::AUTHENTICATION, Algorithm::EccP256, &digest)?;
    s.expect(
        &ga_sign(KeyRef::SIGNATURE, Algorithm::EccP256, &digest),
        Sw::SECURITY_STATUS_NOT_SATISFIED,
        "9C signature after a 9A signature",
    )?;
    Ok(None)
}

fn sign_card_auth(s: &mut Session<'_>) -> Body {
    let digest = sha2::Sha256::digest(b"tap");
    let public = generate(s, KeyRef::CARD_AUTHENTICATION, Algorithm::EccP256)?;
    // No VERIFY: 9E needs none.
    s.fresh()?;
    let sig = sign(s, KeyRef::CARD_AUTHENTICATION, Algorithm::EccP256, &digest)?;
    verify_ecdsa(&public, &digest, &sig)?;
    Ok(None)
}

fn sign_wrong_alg(s: &mut Session<'_>) -> Body {
    generate(s, KeyRef::AUTHENTICATION, Algorithm::EccP256)?;
    s.verify_pin()?;
    let resp = s.send(&ga_sign(
        KeyRef::AUTHENTICATION,
        Algorithm::EccP384,
        &[0x11; 48],
    ))?;
    expect_sw_in(
        resp.sw,
        &[Sw::INCORRECT_P1P2, Sw::INCORRECT_DATA],
        "P-384 request on a P-256 key",
    )?;
    Ok(None)
}

fn ecdh_9d(s: &mut Session<'_>) -> Body {
    let public = generate(s, KeyRef::KEY_MANAGEMENT, Algorithm::EccP256)?;
    let PublicKey::Ec { point, .. } = public else {
        return Err("GENERATE returned no point".into());
    };
    s.verify_pin()?;
    let host = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let host_point = host.public_key().to_sec1_bytes();
    let card_secret = s
        .client
        .ecdh(KeyRef::KEY_MANAGEMENT, Algorithm::EccP256, &host_point)
        .map_err(|e| format!("ECDH: {e}"))?;
    let card_pub = p256::PublicKey::from_sec1_bytes(&point).map_err(|e| e.to_string())?;
    let expected = p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_pub.as_affine());
    if expected.raw_secret_bytes().as_slice() != card_secret.as_slice() {
        return Err("shared secrets differ".into());
    }
    Ok(None)
}

fn put_needs_mgmt(s: &mut Session<'_>) -> Body {
    let mut data = tlv::encode(0x5C, &[0x5F, 0xC1, 0x0D]);
    tlv::push(&mut data, 0x53, &[1, 2, 3]);
    s.expect(
        &Command::new(0, 0xDB, 0x3F, 0xFF).with_data(data),
        Sw::SECURITY_STATUS_NOT_SATISFIED,
        "PUT DATA without authentication",
    )?;
    Ok(None)
}

fn data_long_object(s: &mut Session<'_>) -> Body {
    let tag = 0x5FC10D; // retired key-management certificate 1 (slot 82)
    let content: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.authenticate()?;
    s.client
        .put_data(tag, &content)
        .map_err(|e| format!("PUT DATA of 2000 bytes: {e}"))?;
    let back = s
        .client
        .get_data(tag)
        .map_err(|e| format!("GET DATA: {e}"))?;
    if back != content {
        return Err("object read back differs".into());
    }
    s.authenticate()?;
    s.client
        .put_data(tag, &[])
        .map_err(|e| format!("deleting: {e}"))?;
    match s.client.get_data(tag) {
        Err(HostError::Card(Sw::NOT_FOUND)) => Ok(None),
        other => Err(format!("deleted object still readable: {other:?}")),
    }
}

// --- Yubico extensions -----------------------------------------------------------------

fn not_yubico(e: HostError) -> Body {
    match card_sw(e)? {
        Sw::INS_NOT_SUPPORTED => Ok(Some(
            "the card does not implement this Yubico extension".into(),
        )),
        sw => Err(format!("card answered {sw}")),
    }
}

fn yk_version(s: &mut Session<'_>) -> Body {
    match s.client.version() {
        Ok(_) => Ok(None),
        Err(e) => not_yubico(e),
    }
}

fn yk_serial(s: &mut Session<'_>) -> Body {
    match s.client.serial() {
        Ok(_) => Ok(None),
        Err(e) => not_yubico(e),
    }
}

fn yk_metadata(s: &mut Session<'_>) -> Body {
    for slot in [KeyRef::PIN, KeyRef::PUK] {
        let m = match s.client.metadata(slot) {
            Ok(m) => m,
            Err(e) => return not_yubico(e),
        };
        match tlv::find(&m, 0x06) {
            Ok(Some([total, left])) if total >= left => {}
            _ => return Err(format!("metadata of {slot} lacks a sane 06 retry field")),
        }
    }
    let m = s
        .client
        .metadata(KeyRef::MANAGEMENT)
        .map_err(|e| e.to_string())?;
    match tlv::find(&m, 0x01) {
        Ok(Some([alg])) if *alg == s.config.management_alg.id() => Ok(None),
        _ => Err("metadata of 9B does not name the configured algorithm".into()),
    }
}

fn yk_attest(s: &mut Session<'_>) -> Body {
    let public = generate(s, KeyRef::AUTHENTICATION, Algorithm::EccP256)?;
    let att = match s.client.attest(KeyRef::AUTHENTICATION) {
        Ok(a) => a,
        Err(e) => return not_yubico(e),
    };
    let cert = x509_cert::Certificate::from_der(&att)
        .map_err(|e| format!("attestation is not a certificate: {e}"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    if spki != public.to_spki_der().map_err(|e| e.to_string())? {
        return Err("attestation certifies another key".into());
    }
    let f9 = s
        .client
        .get_data(object::YK_ATTESTATION_CERT)
        .map_err(|e| format!("reading 5FFF01: {e}"))?;
    let f9 = tlv::find(&f9, 0x70).ok().flatten().unwrap_or(&f9);
    let issuer = x509_cert::Certificate::from_der(f9).map_err(|e| format!("5FFF01: {e}"))?;
    if issuer.tbs_certificate.subject != cert.tbs_certificate.issuer {
        return Err("attestation issuer is not the subject of 5FFF01".into());
    }
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let digest = sha2::Sha256::digest(&tbs);
    let sig = cert.signature.raw_bytes();
    verify_ecdsa(
        &PublicKey::Ec {
            alg: Algorithm::EccP256,
            point: key.to_vec(),
        },
        &digest,
        sig,
    )
    .map_err(|e| format!("attestation signature by the 5FFF01 key: {e}"))?;
    Ok(None)
}

fn yk_set_mgmt_key(s: &mut Session<'_>) -> Body {
    s.authenticate()?;
    let aes = [0x42u8; 32];
    if let Err(e) = s.client.set_management_key(Algorithm::Aes256, &aes) {
        return not_yubico(e);
    }
    let used = s.client.authenticate_management(Algorithm::Aes256, &aes);
    // Put the configured key back whatever happened.
    let restore = s.config.management_key.clone();
    let alg = s.config.management_alg;
    s.client
        .set_management_key(alg, &restore)
        .map_err(|e| format!("restoring the management key: {e}"))?;
    used.map_err(|e| format!("authenticating with the new AES-256 key: {e}"))?;
    s.authenticate()?;
    Ok(None)
}

fn yk_set_pin_retries(s: &mut Session<'_>) -> Body {
    s.authenticate()?;
    s.verify_pin()?;
    if let Err(e) = s.client.call(&Command::new(0, 0xFA, 5, 4)) {
        return not_yubico(e);
    }
    let m = s.client.metadata(KeyRef::PIN).map_err(|e| e.to_string())?;
    let ok = matches!(tlv::find(&m, 0x06), Ok(Some([5, 5])));
    // Back to 3/3; PIN and PUK are factory defaults again.
    s.authenticate()?;
    s.client
        .verify_pin(tessera_piv::card::DEFAULT_PIN)
        .map_err(|e| format!("VERIFY with the default PIN after SET PIN RETRIES: {e}"))?;
    s.client
        .call(&Command::new(0, 0xFA, 3, 3))
        .map_err(|e| format!("restoring 3/3 retries: {e}"))?;
    restore_pin_puk(s)?;
    if !ok {
        return Err("metadata does not show 5 of 5 PIN tries".into());
    }
    Ok(None)
}

/// After a Yubico command that restored the default PIN and PUK, sets the configured ones.
fn restore_pin_puk(s: &mut Session<'_>) -> Result<(), String> {
    let (pin, puk) = (s.config.pin.clone(), s.config.puk.clone());
    if pin != tessera_piv::card::DEFAULT_PIN {
        s.client
            .change_reference(KeyRef::PIN, tessera_piv::card::DEFAULT_PIN, &pin)
            .map_err(|e| format!("restoring the PIN: {e}"))?;
    }
    if puk != tessera_piv::card::DEFAULT_PUK {
        s.client
            .change_reference(KeyRef::PUK, tessera_piv::card::DEFAULT_PUK, &puk)
            .map_err(|e| format!("restoring the PUK: {e}"))?;
    }
    Ok(())
}

fn yk_reset_refused(s: &mut Session<'_>) -> Body {
    match s.client.call(&Command::new(0, 0xFB, 0, 0)) {
        Ok(_) => Err("RESET succeeded while the PIN was not blocked".into()),
        Err(e) => match card_sw(e)? {
            Sw::CONDITIONS_NOT_SATISFIED => Ok(None),
            Sw::INS_NOT_SUPPORTED => Ok(Some("the card does not implement Yubico RESET".into())),
            sw => Err(format!("expected 6985, card answered {sw}")),
        },
    }
}

fn yk_reset(s: &mut Session<'_>) -> Body {
    let guid_before = s.client.get_data(object::CHUID).ok();
    let w = wrong_pin(s);
    while pin_tries(s).unwrap_or(0) > 0 {
        s.send(&Command::new(0, 0x20, 0, 0x80).with_data(w.clone()))?;
    }
    let mut data = w.clone();
    data.extend_from_slice(&w);
    for _ in 0..16 {
        let resp = s.send(&Command::new(0, 0x2C, 0, 0x80).with_data(data.clone()))?;
        if resp.sw == Sw::AUTH_METHOD_BLOCKED {
            break;
        }
    }
    match s.client.call(&Command::new(0, 0xFB, 0, 0)) {
        Ok(_) => {}
        Err(e) => return not_yubico(e),
    }
    s.client.select().map_err(|e| e.to_string())?;
    s.client
        .verify_pin(tessera_piv::card::DEFAULT_PIN)
        .map_err(|e| format!("default PIN after RESET: {e}"))?;
    s.client
        .authenticate_management(Algorithm::Tdes, &tessera_piv::card::DEFAULT_MANAGEMENT_KEY)
        .map_err(|e| format!("default management key after RESET: {e}"))?;
    if s.client.metadata(KeyRef::AUTHENTICATION).is_ok() {
        return Err("a key survived RESET".into());
    }
    // Put the configured secrets back for the checks that follow.
    restore_pin_puk(s)?;
    if s.config.management_key != tessera_piv::card::DEFAULT_MANAGEMENT_KEY {
        let (alg, key) = (s.config.management_alg, s.config.management_key.clone());
        s.client
            .set_management_key(alg, &key)
            .map_err(|e| format!("restoring the management key: {e}"))?;
    }
    if guid_before.is_some() && s.client.get_data(object::CHUID).ok() == guid_before {
        return Err("CHUID unchanged by RESET: the reset card keeps its old identity".into());
    }
    Ok(None)
}

// --- malformed commands ----------------------------------------------------------------

fn raw_expect(s: &mut Session<'_>, apdu: &[u8], allowed: &[Sw], what: &str) -> Body {
    match s.raw(apdu) {
        Ok(resp) => expect_sw_in(resp.sw, allowed, what)?,
        // Some readers refuse to send malformed APDUs at all.
        Err(HostError::Transport(e)) => {
            return Ok(Some(format!("the reader refused to send it: {e}")));
        }
        Err(e) => return Err(e.to_string()),
    }
    still_usable(s)?;
    Ok(None)
}

fn iso_wrong_length(s: &mut Session<'_>) -> Body {
    raw_expect(
        s,
        &[0, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F],
        &[Sw::WRONG_LENGTH],
        "Lc 5 with 3 bytes",
    )
}

fn iso_short(s: &mut Session<'_>) -> Body {
    raw_expect(
        s,
        &[0, 0xCB, 0x3F],
        &[Sw::WRONG_LENGTH, Sw::NO_PRECISE_DIAGNOSIS],
        "3-byte APDU",
    )
}

fn iso_unknown_ins(s: &mut Session<'_>) -> Body {
    raw_expect(s, &[0, 0x02, 0, 0], &[Sw::INS_NOT_SUPPORTED], "INS 02")
}

fn iso_unknown_cla(s: &mut Session<'_>) -> Body {
    raw_expect(
        s,
        &[0x80, 0xCB, 0x3F, 0xFF, 0x00],
        &[Sw::CLA_NOT_SUPPORTED],
        "CLA 80",
    )
}

fn iso_secure_messaging(s: &mut Session<'_>) -> Body {
    raw_expect(
        s,
        &[0x0C, 0xCB, 0x3F, 0xFF, 0x00],
        &[Sw::SECURE_MESSAGING_NOT_SUPPORTED, Sw::CLA_NOT_SUPPORTED],
        "CLA 0C",
    )
}

fn iso_bad_tlv(s: &mut Session<'_>) -> Body {
    raw_expect(
        s,
        &[
            0, 0x87, 0x11, 0x9E, 0x06, 0x7C, 0x08, 0x82, 0x00, 0x81, 0x10, 0x00,
        ],
        &[Sw::INCORRECT_DATA],
        "7C claiming 8 bytes with 4",
    )
}

fn iso_bad_key_ref(s: &mut Session<'_>) -> Body {
    raw_expect(
        s,
        &[
            0, 0x87, 0x11, 0x42, 0x06, 0x7C, 0x04, 0x82, 0x00, 0x81, 0x00, 0x00,
        ],
        &[Sw::REFERENCE_NOT_FOUND, Sw::INCORRECT_P1P2],
        "key reference 42",
    )
}

fn iso_chain_interrupted(s: &mut Session<'_>) -> Body {
    let link = [0x10, 0xDB, 0x3F, 0xFF, 0x03, 0x5C, 0x03, 0x5F];
    match s.raw(&link) {
        Ok(resp) if resp.sw.is_success() => {}
        Ok(resp) if resp.sw == Sw::SECURITY_STATUS_NOT_SATISFIED || resp.sw.sw1() == 0x68 => {
            return Ok(Some(format!(
                "the card checks access before buffering a chain ({})",
                resp.sw
            )));
        }
        Ok(resp) => return Err(format!("first chain link answered {}", resp.sw)),
        Err(e) => return Err(e.to_string()),
    }
    raw_expect(
        s,
        &[
            0, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00,
        ],
        &[Sw::LAST_COMMAND_EXPECTED, Sw::CONDITIONS_NOT_SATISFIED],
        "another command inside a chain",
    )?;
    // The chain is forgotten: a normal GET DATA works again.
    s.expect(
        &get_data_cmd(object::CHUID),
        Sw::SUCCESS,
        "GET DATA after the broken chain",
    )?;
    Ok(None)
}

fn iso_get_response_unexpected(s: &mut Session<'_>) -> Body {
    raw_expect(
        s,
        &[0, 0xC0, 0, 0, 0],
        &[
            Sw::CONDITIONS_NOT_SATISFIED,
            Sw::NO_PRECISE_DIAGNOSIS,
            Sw::COMMAND_NOT_ALLOWED,
        ],
        "GET RESPONSE with nothing pending",
    )
}

// --- contactless -------------------------------------------------------------------------

fn cl_uid(s: &mut Session<'_>) -> Body {
    let resp = s.raw(&[0xFF, 0xCA, 0, 0, 0]).map_err(|e| e.to_string())?;
    if !resp.sw.is_success() || !matches!(resp.data.len(), 4 | 7 | 10) {
        return Err(format!("FF CA: {} with {} bytes", resp.sw, resp.data.len()));
    }
    Ok(None)
}

fn cl_card_auth(s: &mut Session<'_>) -> Body {
    // Keys cannot be generated over contactless: use the key the card has.
    let digest = sha2::Sha256::digest(b"tap");
    match s
        .client
        .sign(KeyRef::CARD_AUTHENTICATION, Algorithm::EccP256, &digest)
    {
        Ok(_) => Ok(None),
        Err(HostError::Card(Sw::REFERENCE_NOT_FOUND)) => Ok(Some(
            "the card has no P-256 key in 9E; generate one over the contact interface first".into(),
        )),
        Err(e) => Err(format!("9E signature over contactless: {e}")),
    }
}

fn cl_pin_refused(s: &mut Session<'_>) -> Body {
    let pin = tessera_piv::host::pad_pin(&s.config.pin).map_err(|e| e.to_string())?;
    s.expect(
        &Command::new(0, 0x20, 0, 0x80).with_data(pin.to_vec()),
        Sw::SECURITY_STATUS_NOT_SATISFIED,
        "VERIFY over contactless",
    )?;
    Ok(None)
}

fn cl_auth_key_refused(s: &mut Session<'_>) -> Body {
    let resp = s.send(&ga_sign(
        KeyRef::AUTHENTICATION,
        Algorithm::EccP256,
        &[0x11; 32],
    ))?;
    expect_sw_in(
        resp.sw,
        &[Sw::SECURITY_STATUS_NOT_SATISFIED],
        "9A over contactless",
    )?;
    Ok(None)
}

fn cl_object_refused(s: &mut Session<'_>) -> Body {
    for tag in [
        object::CCC,
        object::CERT_AUTHENTICATION,
        object::PRINTED_INFORMATION,
    ] {
        let resp = s.send(&get_data_cmd(tag))?;
        expect_sw_in(
            resp.sw,
            &[Sw::SECURITY_STATUS_NOT_SATISFIED],
            &format!("GET DATA {tag:X}"),
        )?;
    }
    s.expect(
        &get_data_cmd(object::CHUID),
        Sw::SUCCESS,
        "CHUID over contactless",
    )?;
    Ok(None)
}

/// A factory secret still on the card: a failure on an issued card, reported (not applicable)
/// on a blank one, where it is what the manufacturer ships.
fn factory_secret(s: &Session<'_>, still_set: bool, what: &str) -> Body {
    match (still_set, s.config.issued) {
        (false, _) => Ok(None),
        (true, true) => Err(format!("{what} is still the factory default")),
        (true, false) => Ok(Some(format!(
            "blank card: {what} is still the factory default (as shipped; --issued makes this \
             a failure)"
        ))),
    }
}

/// Yubico GET METADATA's "default value" flag (tag `05`) of a PIN, PUK or the management
/// key; `None` when the card has no GET METADATA.
fn metadata_default(s: &mut Session<'_>, key: KeyRef) -> Result<Option<bool>, String> {
    let resp = s.send(&Command::new(0, 0xF7, 0, key.0).with_le(256))?;
    if !resp.sw.is_success() {
        return Ok(None);
    }
    match tlv::find(&resp.data, 0x05) {
        Ok(Some([flag])) => Ok(Some(*flag != 0)),
        _ => Err("GET METADATA answers without a default-value flag (05)".into()),
    }
}

fn issued_management_key(s: &mut Session<'_>) -> Body {
    let still_set = match metadata_default(s, KeyRef::MANAGEMENT)? {
        Some(flag) => flag,
        // No metadata: try the factory key (a failed management-key authentication uses
        // no try).
        None => s
            .client
            .authenticate_management(Algorithm::Tdes, &tessera_piv::card::DEFAULT_MANAGEMENT_KEY)
            .is_ok(),
    };
    factory_secret(s, still_set, "the management key (9B)")
}

fn issued_pin(s: &mut Session<'_>) -> Body {
    match metadata_default(s, KeyRef::PIN)? {
        Some(flag) => factory_secret(s, flag, "the PIN"),
        // Trying 123456 would use one of the cardholder's tries.
        None => Ok(Some(
            "the card has no GET METADATA, and trying the factory PIN would use a try".into(),
        )),
    }
}

fn issued_puk(s: &mut Session<'_>) -> Body {
    match metadata_default(s, KeyRef::PUK)? {
        Some(flag) => factory_secret(s, flag, "the PUK"),
        None => Ok(Some(
            "the card has no GET METADATA, and trying the factory PUK would use a try".into(),
        )),
    }
}
