//! The schema as diesel sees it. Public for tests that tamper with rows; everything else
//! goes through the typed queries.

diesel::table! {
    authorities (role) {
        role -> Text,
        key_label -> Text,
        key_alg -> Text,
        certificate -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_tokens (token_hash) {
        token_hash -> Binary,
        name -> Text,
        role -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    certificates (serial) {
        serial -> Text,
        authority -> Text,
        profile -> Text,
        status -> Text,
        tbs -> Binary,
        certificate -> Nullable<Binary>,
        not_after -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revocation_reason -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    crls (authority, number) {
        authority -> Text,
        number -> BigInt,
        this_update -> BigInt,
        crl -> Binary,
    }
}

diesel::table! {
    audit_log (seq) {
        seq -> BigInt,
        at -> BigInt,
        actor -> Text,
        action -> Text,
        details -> Text,
        prev_hash -> Binary,
        hash -> Binary,
    }
}

diesel::table! {
    write_lock (id) {
        id -> Integer,
        n -> BigInt,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        at -> BigInt,
        kind -> Text,
        serial -> Nullable<Text>,
    }
}

diesel::table! {
    crl_numbers (authority, number) {
        authority -> Text,
        number -> BigInt,
        upto -> BigInt,
        reserved_at -> BigInt,
    }
}

diesel::table! {
    audit_checkpoints (records) {
        records -> BigInt,
        at -> BigInt,
        head -> Text,
        signed -> Text,
    }
}

diesel::table! {
    officers (id) {
        id -> Text,
        display_name -> Text,
        roles -> Text,
        person_id -> Nullable<Text>,
        created_at -> BigInt,
        disabled_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    officer_tokens (id) {
        id -> Text,
        token_hash -> Binary,
        officer_id -> Text,
        label -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    people (id) {
        id -> Text,
        employee_number -> Text,
        given_name -> Text,
        family_name -> Text,
        email -> Nullable<Text>,
        upn -> Nullable<Text>,
        identity_number -> Nullable<Text>,
        non_resident -> Nullable<Text>,
        protected_identity -> Bool,
        directory_sid -> Nullable<Text>,
        state -> Text,
        proofed_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        external_id -> Nullable<Text>,
        removed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    proofings (id) {
        id -> Text,
        person_id -> Text,
        document_type -> Text,
        document_number -> Text,
        issuing_country -> Text,
        document_expiry -> Text,
        officer_id -> Text,
        at -> BigInt,
        place -> Text,
    }
}

diesel::table! {
    carriers (id) {
        id -> Text,
        kind -> Text,
        serial_number -> Text,
        state -> Text,
        person_id -> Nullable<Text>,
        suspend_reason -> Nullable<Text>,
        deadline -> Nullable<BigInt>,
        revoke_reason -> Nullable<Text>,
        original_id -> Nullable<Text>,
        ends_at -> Nullable<BigInt>,
        terms_version -> Nullable<Text>,
        terms_accepted_at -> Nullable<BigInt>,
        receipt -> Nullable<Text>,
        approval_id -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    loss_codes (code_hash) {
        code_hash -> Binary,
        carrier_id -> Text,
    }
}

diesel::table! {
    carrier_certificates (serial) {
        serial -> Text,
        carrier_id -> Text,
        released_at -> Nullable<BigInt>,
        spki_sha256 -> Nullable<Text>,
        renewal_signed_by -> Nullable<Text>,
    }
}

diesel::table! {
    approvals (id) {
        id -> Text,
        kind -> Text,
        carrier_id -> Text,
        person_id -> Text,
        requested_by -> Text,
        requested_at -> BigInt,
        subject -> Text,
        state -> Text,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    bulk_revocations (id) {
        id -> Text,
        reason -> Text,
        carriers -> Text,
        carriers_sha256 -> Text,
        requested_by -> Text,
        requested_at -> BigInt,
        state -> Text,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    carrier_puks (carrier_id) {
        carrier_id -> Text,
        sealed -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    carrier_tpm (carrier_id) {
        carrier_id -> Text,
        ek_key_sha256 -> Text,
        pin_index_name -> Nullable<Text>,
        enrolled_at -> BigInt,
    }
}

diesel::table! {
    puk_releases (approval_id) {
        approval_id -> Text,
        carrier_id -> Text,
        person_id -> Text,
        certificate -> Text,
        code_sha256 -> Binary,
        approver_code_sha256 -> Nullable<Binary>,
        verification -> Text,
        released_at -> Nullable<BigInt>,
        rotated_at -> Nullable<BigInt>,
        closed_at -> Nullable<BigInt>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(carriers, carrier_certificates, certificates);

diesel::table! {
    portal_sessions (token_sha256) {
        token_sha256 -> Binary,
        officer_id -> Text,
        credential -> Text,
        created_at -> BigInt,
        last_seen -> BigInt,
        ended_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    portal_passkeys (id) {
        id -> Text,
        officer_id -> Text,
        certificate_serial -> Text,
        label -> Text,
        credential -> Text,
        created_at -> BigInt,
        last_used -> Nullable<BigInt>,
        removed_at -> Nullable<BigInt>,
    }
}
