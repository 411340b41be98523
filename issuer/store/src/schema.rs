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
