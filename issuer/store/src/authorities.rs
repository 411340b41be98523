//! The CA's own keys and certificates (root, issuing CA, OCSP responder) and the API's
//! bearer tokens (stored as SHA-256 only).

use diesel::prelude::*;

use crate::schema::{api_tokens, authorities};
use crate::{StoreError, Tx};

/// Which of the CA's own certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityRole {
    Root,
    Issuing,
    Ocsp,
    /// The audit checkpoint signer.
    Audit,
    /// The CA of the issuer's own HTTPS certificates (self-signed, apart from the
    /// workforce PKI).
    TlsCa,
    /// The issuer's HTTPS server certificate (its key is a file, not in the token).
    TlsServer,
}

impl AuthorityRole {
    fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Issuing => "issuing",
            Self::Ocsp => "ocsp",
            Self::Audit => "audit",
            Self::TlsCa => "tls-ca",
            Self::TlsServer => "tls-server",
        }
    }
}

/// One of the CA's certificates with its key's label and algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityRow {
    pub key_label: String,
    pub key_alg: String,
    pub certificate: Vec<u8>,
}

impl Tx<'_> {
    pub fn insert_authority(
        &mut self,
        role: AuthorityRole,
        row: &AuthorityRow,
        at: i64,
    ) -> Result<(), StoreError> {
        diesel::insert_into(authorities::table)
            .values((
                authorities::role.eq(role.as_str()),
                authorities::key_label.eq(&row.key_label),
                authorities::key_alg.eq(&row.key_alg),
                authorities::certificate.eq(&row.certificate),
                authorities::created_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// Replaces an authority's certificate (a renewal: same key, new certificate).
    pub fn replace_authority_certificate(
        &mut self,
        role: AuthorityRole,
        certificate: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        let n = diesel::update(authorities::table.filter(authorities::role.eq(role.as_str())))
            .set((
                authorities::certificate.eq(certificate),
                authorities::created_at.eq(at),
            ))
            .execute(self.conn)?;
        if n != 1 {
            return Err(StoreError::Corrupt(format!(
                "no {} authority",
                role.as_str()
            )));
        }
        Ok(())
    }

    pub fn authority(&mut self, role: AuthorityRole) -> Result<Option<AuthorityRow>, StoreError> {
        let row: Option<(String, String, Vec<u8>)> = authorities::table
            .filter(authorities::role.eq(role.as_str()))
            .select((
                authorities::key_label,
                authorities::key_alg,
                authorities::certificate,
            ))
            .first(self.conn)
            .optional()?;
        Ok(row.map(|(key_label, key_alg, certificate)| AuthorityRow {
            key_label,
            key_alg,
            certificate,
        }))
    }

    /// How many authorities exist (none: the database holds no deployment yet).
    pub fn authority_count(&mut self) -> Result<i64, StoreError> {
        Ok(authorities::table.count().get_result(self.conn)?)
    }

    /// Stores an API token by its SHA-256.
    pub fn insert_api_token(
        &mut self,
        token_sha256: &[u8],
        name: &str,
        role: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::token_hash.eq(token_sha256),
                api_tokens::name.eq(name),
                api_tokens::role.eq(role),
                api_tokens::created_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// The name and role behind a token's SHA-256. The lookup is the database's index on a
    /// digest, which tells nothing useful about the token itself.
    pub fn api_token(
        &mut self,
        token_sha256: &[u8],
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(api_tokens::table
            .filter(api_tokens::token_hash.eq(token_sha256))
            .select((api_tokens::name, api_tokens::role))
            .first(self.conn)
            .optional()?)
    }
}
