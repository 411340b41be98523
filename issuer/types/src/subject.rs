//! Who a certificate is for, as an issuance request names them.

/// The subject of an end-entity certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub common_name: String,
    /// The Windows logon name (`user@domain`), in the authentication profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The card's UUID, in the card-authentication profile (`urn:uuid:` SAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_uuid: Option<String>,
    /// The holder's Active Directory SID (`S-1-5-21-…`), in the authentication profile's
    /// SID extension (1.3.6.1.4.1.311.25.2) for Windows strong certificate mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}
