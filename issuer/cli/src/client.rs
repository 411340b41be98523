//! The HTTP client: the officer's token on every call, JSON both ways, and the issuer's
//! stable error codes turned into messages and exit codes scripts can rely on.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_issuer_types::api::ErrorBody;
use tessera_issuer_types::ErrorCode;
use zeroize::Zeroizing;

/// Why a command failed; each kind has its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line or a file it names (exit 2, as clap's own usage errors).
    Usage(String),
    /// The issuer answered with an error code.
    Refused { code: ErrorCode, message: String },
    /// The input is not acceptable (exit 3): a file's rows or columns.
    Invalid(String),
    /// Reconciliation found differences (exit 6).
    Differences(usize),
    /// An exported audit chain does not hold (exit 6).
    ChainBroken(String),
    /// The issuer could not be reached, or answered what no issuer answers (exit 7).
    Server(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m) | Self::Server(m) | Self::Invalid(m) | Self::ChainBroken(m) => {
                f.write_str(m)
            }
            Self::Refused { code, message } => write!(f, "{message} ({code})"),
            Self::Differences(n) => write!(f, "{n} differences"),
        }
    }
}

impl Failure {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Invalid(_) => 3,
            Self::Refused { code, .. } => match code {
                ErrorCode::MalformedJson
                | ErrorCode::PayloadTooLarge
                | ErrorCode::UnknownProfile
                | ErrorCode::BadPublicKey
                | ErrorCode::BadProof
                | ErrorCode::BadSubject
                | ErrorCode::ValidityTooLong
                | ErrorCode::BadSerial
                | ErrorCode::BadReason
                | ErrorCode::InvalidField
                | ErrorCode::LintFailed => 3,
                ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::FourEyesRequired => 4,
                ErrorCode::NotFound => 5,
                ErrorCode::AlreadyRevoked
                | ErrorCode::NotOnHold
                | ErrorCode::AlreadyExists
                | ErrorCode::InvalidTransition => 6,
                ErrorCode::Unavailable | ErrorCode::Internal => 7,
            },
            Self::Differences(_) | Self::ChainBroken(_) => 6,
            Self::Server(_) => 7,
        }
    }
}

/// A client of one issuer, as one officer.
pub(crate) struct Client {
    base: String,
    token: Zeroizing<String>,
    agent: ureq::Agent,
}

impl Client {
    /// The token comes from `token_file`, else `$TESSERA_TOKEN`.
    pub(crate) fn new(
        url: &str,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<Self, Failure> {
        let token = match token_file {
            Some(f) => Zeroizing::new(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        Failure::Usage(format!("reading the token file {}: {e}", f.display()))
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => Zeroizing::new(std::env::var("TESSERA_TOKEN").unwrap_or_default()),
        };
        if token.is_empty() {
            return Err(Failure::Usage(
                "no token: set $TESSERA_TOKEN or give --token-file".into(),
            ));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| Failure::Usage(format!("reading {}: {e}", ca.display())))?;
            let cert = ureq::tls::Certificate::from_pem(&pem)
                .map_err(|e| Failure::Usage(format!("{}: {e}", ca.display())))?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        Ok(Self {
            base: format!("{}/api/v1", url.trim_end_matches('/')),
            token,
            agent: config.build().into(),
        })
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token.as_str())
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", self.auth())
            .call();
        answer(r)
    }

    pub(crate) fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Failure> {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", self.auth())
            .send_json(body);
        answer(r)
    }

    pub(crate) fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Failure> {
        let req = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header("Authorization", self.auth());
        let r = match body {
            Some(b) => req.force_send_body().send_json(b),
            None => req.call(),
        };
        answer(r)
    }
}

fn answer<T: DeserializeOwned>(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<T, Failure> {
    let mut r = r.map_err(|e| Failure::Server(format!("the issuer could not be reached: {e}")))?;
    let status = r.status();
    let text = r
        .body_mut()
        .read_to_string()
        .map_err(|e| Failure::Server(format!("reading the issuer's answer: {e}")))?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| {
            Failure::Server(format!(
                "the issuer's answer is not what this CLI expects: {e}"
            ))
        });
    }
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => Err(Failure::Refused {
            code: e.error.code,
            message: e.error.message,
        }),
        Err(_) => Err(Failure::Server(format!("HTTP {status}: {}", text.trim()))),
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
