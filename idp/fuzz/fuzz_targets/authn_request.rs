//! The AuthnRequest path of untrusted input: HTTP-POST (the bytes as the XML, or as the
//! form's base64) and HTTP-Redirect (the bytes as the raw query string), then the claimed
//! issuer, the signature step (no keys: only unsigned requests pass) and the reader. No
//! input may panic or crash the C underneath.
#![no_main]

use base64ct::Encoding;
use libfuzzer_sys::fuzz_target;
use tessera_saml::request::{AuthnRequest, Incoming};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let incoming = match mode % 3 {
        0 => Incoming::from_post(&base64ct::Base64::encode_string(rest), None),
        1 => Incoming::from_redirect(&text),
        _ => Incoming::from_post(&text, Some("relay".into())),
    };
    if let Ok(incoming) = incoming {
        let _ = incoming.claimed_issuer();
        let _ = incoming.is_signed();
        if let Ok(verified) = incoming.verify(&[], false) {
            let _ = AuthnRequest::parse(&verified);
        }
    }
});
