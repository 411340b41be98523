//! A CRL encoder that streams its entries (RFC 5280 §5.1). The CRL publisher pushes the
//! entries; only [`crate::issuing::IssuingCa::sign_crl`] finishes and signs it.
//!
//! `x509-cert` encodes a CRL from a complete `TbsCertList`, which holds every revoked entry
//! as a struct with its own allocations: for a million entries that is several hundred
//! megabytes before a byte is written. No crate we know of encodes a CRL incrementally, so
//! this one is written by hand, on top of `der`: each entry is encoded (by `x509-cert`)
//! straight into the buffer the finished CRL will occupy, behind room left for the headers
//! whose lengths are only known at the end. Peak memory is about the size of the CRL.

use der::{Encode, Header, Length, Tag, TagNumber};
use spki::AlgorithmIdentifierOwned;
use x509_cert::certificate::Version;
use x509_cert::crl::RevokedCert;
use x509_cert::ext::Extensions;
use x509_cert::name::Name;
use x509_cert::time::Time;

/// One CRL entry: serial, revocation time (Unix seconds) and reason, which RFC 5280
/// §5.3.1 says to omit rather than give as "unspecified".
pub fn entry(
    serial: &tessera_issuer_types::Serial,
    at: i64,
    reason: tessera_issuer_types::RevocationReason,
) -> der::Result<RevokedCert> {
    use tessera_issuer_types::RevocationReason as R;
    use x509_cert::ext::pkix::CrlReason;
    let code = match reason {
        R::Unspecified => None,
        R::KeyCompromise => Some(CrlReason::KeyCompromise),
        R::CaCompromise => Some(CrlReason::CaCompromise),
        R::AffiliationChanged => Some(CrlReason::AffiliationChanged),
        R::Superseded => Some(CrlReason::Superseded),
        R::CessationOfOperation => Some(CrlReason::CessationOfOperation),
        R::CertificateHold => Some(CrlReason::CertificateHold),
        R::PrivilegeWithdrawn => Some(CrlReason::PrivilegeWithdrawn),
    };
    let at = std::time::Duration::from_secs(u64::try_from(at).unwrap_or(0));
    Ok(RevokedCert {
        serial_number: x509_cert::serial_number::SerialNumber::new(&serial.to_bytes())?,
        revocation_date: crate::x509::time(at).map_err(|_| der::ErrorKind::DateTime)?,
        crl_entry_extensions: code
            .map(|c| {
                crate::x509::ext(const_oid::db::rfc5280::ID_CE_CRL_REASONS, false, &c)
                    .map(|e| vec![e])
                    .map_err(|_| der::Error::from(der::ErrorKind::Failed))
            })
            .transpose()?,
    })
}

/// The longest DER header: one tag byte and a length of up to five bytes.
const MAX_HEADER: usize = 6;

/// The fields of a CRL that come before its entries.
#[derive(Debug)]
pub struct CrlHeader<'a> {
    pub signature: &'a AlgorithmIdentifierOwned,
    pub issuer: &'a Name,
    pub this_update: Time,
    pub next_update: Option<Time>,
}

/// Builds one CRL: [`CrlBuilder::push`] each entry, then [`CrlBuilder::finish`].
#[derive(Debug)]
pub struct CrlBuilder {
    /// The CRL under construction; `buf[..start]` is room for the headers.
    buf: Vec<u8>,
    /// The TBS fields before the entries: version, signature, issuer, thisUpdate, nextUpdate.
    prefix: Vec<u8>,
    start: usize,
    entries: usize,
}

impl CrlBuilder {
    /// Starts a CRL; `expected_entries` sizes the buffer (a typical entry is ~40 bytes).
    pub fn new(header: &CrlHeader<'_>, expected_entries: usize) -> der::Result<Self> {
        let mut prefix = Vec::new();
        Version::V2.encode_to_vec(&mut prefix)?;
        header.signature.encode_to_vec(&mut prefix)?;
        header.issuer.encode_to_vec(&mut prefix)?;
        header.this_update.encode_to_vec(&mut prefix)?;
        if let Some(next) = &header.next_update {
            next.encode_to_vec(&mut prefix)?;
        }
        // Outer SEQUENCE, TBS SEQUENCE, the prefix, the revokedCertificates SEQUENCE.
        let start = 3 * MAX_HEADER + prefix.len();
        let mut buf = Vec::with_capacity(start + expected_entries.saturating_mul(48) + 1024);
        buf.resize(start, 0);
        Ok(Self {
            buf,
            prefix,
            start,
            entries: 0,
        })
    }

    /// Appends one revoked certificate.
    pub fn push(&mut self, entry: &RevokedCert) -> der::Result<()> {
        entry.encode_to_vec(&mut self.buf)?;
        self.entries += 1;
        Ok(())
    }

    /// How many entries have been pushed.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry has been pushed.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Adds the CRL extensions, has `sign` sign the TBSCertList (it returns the signature
    /// algorithm and the signature value) and returns the DER CertificateList.
    pub(crate) fn finish<E: From<der::Error>>(
        mut self,
        extensions: &Extensions,
        sign: impl FnOnce(&[u8]) -> Result<(AlgorithmIdentifierOwned, Vec<u8>), E>,
    ) -> Result<Vec<u8>, E> {
        let entries_len = self.buf.len() - self.start;
        // crlExtensions [0] EXPLICIT Extensions, after the entries.
        if !extensions.is_empty() {
            let inner = extensions.encoded_len()?;
            let tag = Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            };
            Header::new(tag, inner)?.encode_to_vec(&mut self.buf)?;
            extensions.encode_to_vec(&mut self.buf)?;
        }
        let tbs_end = self.buf.len();

        // revokedCertificates is absent, not empty, when there are no entries (§5.1.2.6).
        let mut at = self.start;
        if self.entries > 0 {
            at = self.put_header(at, Tag::Sequence, entries_len)?;
        }
        at -= self.prefix.len();
        self.buf[at..at + self.prefix.len()].copy_from_slice(&self.prefix);
        let tbs_start = self.put_header(at, Tag::Sequence, tbs_end - at)?;

        let (algorithm, signature) = sign(&self.buf[tbs_start..tbs_end])?;
        algorithm.encode_to_vec(&mut self.buf)?;
        der::asn1::BitString::from_bytes(&signature)?.encode_to_vec(&mut self.buf)?;
        let total = self.buf.len() - tbs_start;
        let outer = self.put_header(tbs_start, Tag::Sequence, total)?;
        self.buf.drain(..outer);
        Ok(self.buf)
    }

    /// Writes a header for `len` content bytes so that it ends at `end`; returns its start.
    fn put_header(&mut self, end: usize, tag: Tag, len: usize) -> der::Result<usize> {
        let header = Header::new(tag, Length::try_from(len)?)?;
        let size = usize::try_from(header.encoded_len()?)?;
        let begin = end - size;
        header.encode_to_slice(&mut self.buf[begin..end])?;
        Ok(begin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use std::time::Duration;
    use x509_cert::crl::{CertificateList, TbsCertList};
    use x509_cert::ext::pkix::{CrlNumber, CrlReason};
    use x509_cert::serial_number::SerialNumber;

    fn alg() -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        }
    }

    fn entry(i: u32) -> RevokedCert {
        let mut serial = vec![0x40];
        serial.extend_from_slice(&i.to_be_bytes());
        let reason = crate::x509::ext(
            const_oid::db::rfc5280::ID_CE_CRL_REASONS,
            false,
            &CrlReason::KeyCompromise,
        )
        .unwrap();
        RevokedCert {
            serial_number: SerialNumber::new(&serial).unwrap(),
            revocation_date: crate::x509::time(Duration::from_secs(1_700_000_000 + u64::from(i)))
                .unwrap(),
            crl_entry_extensions: (i % 2 == 0).then(|| vec![reason]),
        }
    }

    /// The streamed encoding is byte for byte what x509-cert encodes from the whole struct,
    /// for no entries, one, and enough that every header needs a longer length.
    #[test]
    fn streams_the_same_der_as_x509_cert() {
        let issuer: Name = "CN=Test CA,O=Tessera".parse().unwrap();
        let this_update = crate::x509::time(Duration::from_secs(1_800_000_000)).unwrap();
        let next_update = Some(crate::x509::time(Duration::from_secs(1_800_086_400)).unwrap());
        let number = der::asn1::Uint::new(&[7]).unwrap();
        let exts = vec![crate::x509::ext(
            const_oid::db::rfc5280::ID_CE_CRL_NUMBER,
            false,
            &CrlNumber(number),
        )
        .unwrap()];
        for n in [0u32, 1, 3, 2000] {
            let signature = alg();
            let header = CrlHeader {
                signature: &signature,
                issuer: &issuer,
                this_update,
                next_update,
            };
            let mut builder = CrlBuilder::new(&header, n as usize).unwrap();
            for i in 0..n {
                builder.push(&entry(i)).unwrap();
            }
            let mut signed = Vec::new();
            let streamed = builder
                .finish(&exts, |tbs| -> Result<_, der::Error> {
                    signed = tbs.to_vec();
                    Ok((alg(), vec![0xAB; 71]))
                })
                .unwrap();

            let tbs = TbsCertList {
                version: Version::V2,
                signature: alg(),
                issuer: issuer.clone(),
                this_update,
                next_update,
                revoked_certificates: (n > 0).then(|| (0..n).map(entry).collect()),
                crl_extensions: Some(exts.clone()),
            };
            assert_eq!(signed, tbs.to_der().unwrap(), "{n} entries: TBS differs");
            let whole = CertificateList {
                tbs_cert_list: tbs,
                signature_algorithm: alg(),
                signature: der::asn1::BitString::from_bytes(&[0xAB; 71]).unwrap(),
            };
            assert_eq!(
                streamed,
                whole.to_der().unwrap(),
                "{n} entries: CRL differs"
            );
            CertificateList::from_der(&streamed).unwrap();
        }
    }
}
