//! The tables, as the migrations make them (written by hand: `diesel print-schema` needs a
//! live database of each backend, and these are few).

diesel::table! {
    write_lock (id) {
        id -> Integer,
        n -> BigInt,
    }
}

diesel::table! {
    seen_requests (relying_party, request_id) {
        relying_party -> Text,
        request_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    pending (id) {
        id -> Text,
        browser_hash -> Text,
        relying_party -> Text,
        request -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        cookie_hash -> Nullable<Text>,
        person_id -> Text,
        serial -> Text,
        loa -> Text,
        holder -> Text,
        address -> Text,
        authn_instant -> BigInt,
        expires_at -> BigInt,
        ended_at -> Nullable<BigInt>,
        end_reason -> Nullable<Text>,
    }
}

diesel::table! {
    session_uses (session_id, relying_party) {
        session_id -> Text,
        relying_party -> Text,
        session_index -> Text,
        at -> BigInt,
    }
}

diesel::table! {
    tickets (id) {
        id -> Text,
        session_id -> Text,
        pending_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    consents (person_id, relying_party) {
        person_id -> Text,
        relying_party -> Text,
        attributes -> Text,
        given_at -> BigInt,
    }
}

diesel::table! {
    ended_serials (serial) {
        serial -> Text,
        seq -> BigInt,
    }
}

diesel::table! {
    feed_cursor (id) {
        id -> Integer,
        seq -> BigInt,
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
    logout_notices (session_id, relying_party) {
        session_id -> Text,
        relying_party -> Text,
        person_id -> Text,
        session_index -> Text,
        reason -> Text,
        created_at -> BigInt,
        attempts -> Integer,
        next_at -> BigInt,
        done_at -> Nullable<BigInt>,
        outcome -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(sessions, session_uses, tickets, pending);
