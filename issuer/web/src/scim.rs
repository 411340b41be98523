//! SCIM 2.0 (RFC 7643, RFC 7644) for HR provisioning: `/scim/v2/Users` over the RA's HR
//! feed ([`tessera_issuer_ra::registration::FeedRecord`]), with the discovery endpoints
//! (`ServiceProviderConfig`, `ResourceTypes`, `Schemas`). The caller is an HR
//! administrator's officer token (`Authorization: Bearer`).
//!
//! A User is a person as HR keeps them: `userName` is the employee number (the key, set at
//! creation, never changed), `name.givenName` and `name.familyName`, one work e-mail,
//! `externalId`, and `active` (false: the employment ended, every carrier revoked; true
//! again: re-hired, to be proofed again). DELETE ends the employment too and hides the
//! person from SCIM; the record stays for the audit trail. Identity numbers, proofing and
//! carriers are the registration officers' and are not in SCIM.
//!
//! The protocol's JSON is handled here by hand (no crate models SCIM's case-insensitive
//! attribute names, PATCH paths and the few filters provisioning clients send well enough
//! to map onto the register's indexed lookups): filters are `id`, `userName` or
//! `externalId` `eq` a string; anything else is `invalidFilter`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Map, Value};
use tessera_issuer_ra::registration::{FeedKey, FeedPage, FeedPerson, FeedRecord};
use tessera_issuer_ra::{Actor, Ra, RaError};
use tessera_issuer_types::ErrorCode;

use crate::error::{status_of, ApiError};
use crate::routes::{bearer, blocking, Shared};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const CONFIG: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// A page's size when the client asks for none.
const DEFAULT_COUNT: u64 = 100;

/// Marks requests that came over HTTPS (resource locations name the scheme).
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// The SCIM routes, as [`crate::ROUTES`] lists them.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/scim/v2/ResourceTypes", get(resource_types))
        .route("/scim/v2/ResourceTypes/{id}", get(resource_type))
        .route("/scim/v2/Schemas", get(schemas))
        .route("/scim/v2/Schemas/{id}", get(schema))
        .route("/scim/v2/Users", get(list_users).post(create_user))
        .route("/scim/v2/Users/.search", post(search_users))
        .route(
            "/scim/v2/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        // Users are the only resource type: searching everything is searching them.
        .route("/scim/v2/.search", post(search_users))
        .route("/scim/v2/{*rest}", axum::routing::any(no_such_endpoint))
}

// ---- errors ---------------------------------------------------------------------------

/// A SCIM error answer (RFC 7644 §3.12).
#[derive(Debug)]
pub(crate) struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    fn syntax(detail: impl Into<String>) -> Self {
        Self::bad("invalidSyntax", detail)
    }

    fn value(detail: impl Into<String>) -> Self {
        Self::bad("invalidValue", detail)
    }

    fn mutability(detail: impl Into<String>) -> Self {
        Self::bad("mutability", detail)
    }
}

impl From<ApiError> for ScimError {
    fn from(e: ApiError) -> Self {
        let scim_type = match e.code() {
            ErrorCode::InvalidField => Some("invalidValue"),
            ErrorCode::MalformedJson => Some("invalidSyntax"),
            ErrorCode::AlreadyExists => Some("uniqueness"),
            _ => None,
        };
        let status = status_of(e.code());
        Self::new(status, scim_type, e.message().to_owned())
    }
}

impl From<RaError> for ScimError {
    fn from(e: RaError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<tessera_issuer_ra::StoreError> for ScimError {
    fn from(e: tessera_issuer_ra::StoreError) -> Self {
        RaError::from(e).into()
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR],
            "status": self.status.as_str(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut r = scim_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    r
}

async fn no_such_endpoint() -> ScimError {
    ScimError::new(StatusCode::NOT_FOUND, None, "no such SCIM endpoint")
}

// ---- running a request -----------------------------------------------------------------

/// Authenticates and runs `f` off the async threads.
async fn run<T: Send + 'static>(
    app: Shared,
    headers: &HeaderMap,
    f: impl FnOnce(&Ra, &Actor) -> Result<T, ScimError> + Send + 'static,
) -> Result<T, ScimError> {
    let token = bearer(headers)?;
    let (tx, rx) = std::sync::mpsc::channel();
    blocking(move || {
        let out = app
            .ra
            .authenticate(&token)
            .map_err(ScimError::from)
            .and_then(|actor| f(&app.ra, &actor));
        let _ = tx.send(out);
        Ok(())
    })
    .await?;
    rx.recv()
        .map_err(|e| ApiError::internal(e).into())
        .and_then(|r| r)
}

/// The request's base URL for resource locations: the Host it was sent to.
fn base(headers: &HeaderMap, https: Option<Extension<Https>>) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if https.is_some() { "https" } else { "http" };
    format!("{scheme}://{host}/scim/v2")
}

/// Parses a SCIM request body (`application/scim+json` or `application/json`).
fn body_object(
    raw: Result<Bytes, BytesRejection>,
    schema: &str,
) -> Result<Map<String, Value>, ScimError> {
    let raw = crate::routes::body(raw)?;
    let value: Value = serde_json::from_slice(&raw)
        .map_err(|e| ScimError::syntax(format!("the body is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ScimError::syntax("the body is not a JSON object"));
    };
    let schemas = attr(&obj, "schemas")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::syntax("the body has no \"schemas\""))?;
    if !schemas
        .iter()
        .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(schema)))
    {
        return Err(ScimError::syntax(format!("\"schemas\" must name {schema}")));
    }
    Ok(obj)
}

/// An attribute of a JSON object by name, case-insensitively (RFC 7643 §2.1).
fn attr<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

// ---- Users -----------------------------------------------------------------------------

/// `attributes` and `excludedAttributes` (RFC 7644 §3.9), and the list parameters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    attributes: Option<String>,
    excluded_attributes: Option<String>,
    filter: Option<String>,
    start_index: Option<String>,
    count: Option<String>,
}

async fn get_user(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ScimError> {
    let base = base(&headers, https);
    bearer(&headers)?;
    let params = query(params)?;
    let p = run(app, &headers, move |ra, actor| {
        Ok(ra.feed_person(actor, &id)?)
    })
    .await?;
    let shown = project(user_json(&base, &p), &params)?;
    Ok(user_response(StatusCode::OK, &base, &p, &shown))
}

async fn list_users(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ScimError> {
    let base = base(&headers, https);
    // No token, no opinion on the query: 401 before any 400.
    bearer(&headers)?;
    let params = query(params)?;
    let start = number("startIndex", params.start_index.as_deref(), 1)?;
    let count = number("count", params.count.as_deref(), DEFAULT_COUNT)?;
    list(app, headers, base, params, start, count).await
}

async fn search_users(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let base = base(&headers, https);
    bearer(&headers)?;
    let obj = body_object(raw, SEARCH)?;
    let text = |name: &str| -> Result<Option<String>, ScimError> {
        match attr(&obj, name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ScimError::syntax(format!("{name} holds strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Some(v.join(","))),
            Some(_) => Err(ScimError::syntax(format!("{name} is not a string"))),
        }
    };
    let integer = |name: &str, default: u64| -> Result<u64, ScimError> {
        match attr(&obj, name) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .map(|n| u64::try_from(n).unwrap_or(0))
                .ok_or_else(|| ScimError::value(format!("{name} is not an integer"))),
        }
    };
    let params = Params {
        attributes: text("attributes")?,
        excluded_attributes: text("excludedAttributes")?,
        filter: text("filter")?,
        start_index: None,
        count: None,
    };
    let start = integer("startIndex", 1)?;
    let count = integer("count", DEFAULT_COUNT)?;
    list(app, headers, base, params, start, count).await
}

async fn list(
    app: Shared,
    headers: HeaderMap,
    base: String,
    params: Params,
    start: u64,
    count: u64,
) -> Result<Response, ScimError> {
    let key = params.filter.as_deref().map(filter).transpose()?;
    let page: FeedPage = run(app, &headers, move |ra, actor| {
        Ok(ra.feed_list(actor, key.as_ref(), start, count)?)
    })
    .await?;
    let resources = page
        .people
        .iter()
        .map(|p| project(user_json(&base, p), &params))
        .collect::<Result<Vec<_>, _>>()?;
    let body = json!({
        "schemas": [LIST],
        "totalResults": page.total,
        "startIndex": page.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    Ok(scim_json(StatusCode::OK, &body))
}

/// The query string, or a SCIM error saying what is wrong with it.
fn query(q: Result<Query<Params>, QueryRejection>) -> Result<Params, ScimError> {
    q.map(|Query(p)| p)
        .map_err(|e| ScimError::bad("invalidValue", e.body_text()))
}

/// A non-negative integer query parameter (negative counts as 0, as RFC 7644 §3.4.2.4
/// says for `count`; `startIndex` below 1 is 1).
fn number(name: &str, v: Option<&str>, default: u64) -> Result<u64, ScimError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|_| ScimError::value(format!("{name} is not an integer"))),
    }
}

/// The filters the register answers from an index: `id`, `userName` or `externalId`
/// `eq` a JSON string.
fn filter(f: &str) -> Result<FeedKey, ScimError> {
    let unsupported = || {
        ScimError::bad(
            "invalidFilter",
            "supported filters: id, userName or externalId eq \"value\"",
        )
    };
    let f = f.trim();
    let (name, rest) = f.split_once(char::is_whitespace).ok_or_else(unsupported)?;
    let rest = rest.trim_start();
    let (op, value) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(unsupported)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(unsupported());
    }
    let value: String = serde_json::from_str(value.trim()).map_err(|_| unsupported())?;
    let name = name
        .strip_prefix(USER)
        .and_then(|n| n.strip_prefix(':'))
        .unwrap_or(name);
    match name.to_ascii_lowercase().as_str() {
        "id" => Ok(FeedKey::Id(value)),
        "username" => Ok(FeedKey::EmployeeNumber(value)),
        "externalid" => Ok(FeedKey::ExternalId(value)),
        _ => Err(unsupported()),
    }
}

async fn create_user(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let base = base(&headers, https);
    bearer(&headers)?;
    let obj = body_object(raw, USER)?;
    let rec = record_from(&obj, None)?;
    let p = run(app, &headers, move |ra, actor| {
        Ok(ra.feed_create(actor, &rec)?)
    })
    .await?;
    let shown = user_json(&base, &p);
    Ok(user_response(StatusCode::CREATED, &base, &p, &shown))
}

async fn replace_user(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let base = base(&headers, https);
    bearer(&headers)?;
    let obj = body_object(raw, USER)?;
    let p = run(app, &headers, move |ra, actor| {
        ra.feed_update(actor, &id, |current| record_from(&obj, Some(&current)))
    })
    .await?;
    let shown = user_json(&base, &p);
    Ok(user_response(StatusCode::OK, &base, &p, &shown))
}

async fn patch_user(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let base = base(&headers, https);
    bearer(&headers)?;
    let obj = body_object(raw, PATCH_OP)?;
    let ops = attr(&obj, "Operations")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ScimError::syntax("a PatchOp needs \"Operations\""))?;
    if ops.is_empty() {
        return Err(ScimError::syntax("\"Operations\" is empty"));
    }
    let p = run(app, &headers, move |ra, actor| {
        ra.feed_update(actor, &id, |current| {
            let mut rec = current;
            for op in &ops {
                apply_op(&mut rec, op)?;
            }
            Ok(rec)
        })
    })
    .await?;
    let shown = user_json(&base, &p);
    Ok(user_response(StatusCode::OK, &base, &p, &shown))
}

async fn delete_user(
    State(app): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ScimError> {
    run(app, &headers, move |ra, actor| {
        Ok(ra.feed_remove(actor, &id)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_response(status: StatusCode, base: &str, p: &FeedPerson, shown: &Value) -> Response {
    let mut r = scim_json(status, shown);
    if let Ok(v) = HeaderValue::from_str(&format!("{base}/Users/{}", p.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A person as a SCIM User.
fn user_json(base: &str, p: &FeedPerson) -> Value {
    let rec = &p.record;
    let mut u = json!({
        "schemas": [USER],
        "id": p.id,
        "userName": rec.employee_number,
        "active": rec.active,
        "meta": {
            "resourceType": "User",
            "created": rfc3339(p.created_at),
            "lastModified": rfc3339(p.updated_at),
            "location": format!("{base}/Users/{}", p.id),
        },
    });
    if let Some(e) = &rec.external_id {
        u["externalId"] = json!(e);
    }
    if !p.withheld {
        u["name"] = json!({
            "givenName": rec.given_name,
            "familyName": rec.family_name,
        });
        u["displayName"] = json!(format!("{} {}", rec.given_name, rec.family_name));
        if let Some(e) = &rec.email {
            u["emails"] = json!([{ "value": e, "type": "work" }]);
        }
    }
    u
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Applies `attributes` or `excludedAttributes` to a User (top-level attributes and the
/// extension; `id` and `schemas` are always returned).
fn project(mut user: Value, params: &Params) -> Result<Value, ScimError> {
    let names = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| {
                let n = n
                    .strip_prefix(USER)
                    .and_then(|r| r.strip_prefix(':'))
                    .unwrap_or(n);
                // A sub-attribute keeps (or drops) its whole attribute.
                n.split('.').next().unwrap_or(n).to_ascii_lowercase()
            })
            .collect()
    };
    let always = ["id", "schemas"];
    let Value::Object(obj) = &mut user else {
        return Ok(user);
    };
    if let Some(a) = params.attributes.as_deref() {
        let keep = names(a);
        obj.retain(|k, _| {
            let k = k.to_ascii_lowercase();
            always.contains(&k.as_str()) || keep.contains(&k)
        });
    } else if let Some(x) = params.excluded_attributes.as_deref() {
        let drop = names(x);
        obj.retain(|k, _| {
            let k = k.to_ascii_lowercase();
            always.contains(&k.as_str()) || !drop.contains(&k)
        });
    }
    Ok(user)
}

// ---- reading a User ------------------------------------------------------------------

/// The record a POST or PUT body describes. On PUT (`current` given) `userName` must be
/// the registered one, and attributes the body leaves out are cleared, as replacing means
/// (RFC 7644 §3.5.1); read-only attributes are ignored.
fn record_from(
    obj: &Map<String, Value>,
    current: Option<&FeedRecord>,
) -> Result<FeedRecord, ScimError> {
    let user_name = attr(obj, "userName")
        .ok_or_else(|| ScimError::value("userName (the employee number) is required"))?;
    let user_name = string("userName", user_name)?;
    if let Some(c) = current {
        if user_name != c.employee_number {
            return Err(ScimError::mutability(
                "userName is the employee number: it never changes",
            ));
        }
    }
    let name = attr(obj, "name").ok_or_else(|| ScimError::value("name is required"))?;
    let (given_name, family_name) = names(name, None)?;
    let email = attr(obj, "emails").map(emails).transpose()?.flatten();
    let external_id = attr(obj, "externalId")
        .map(|v| string("externalId", v))
        .transpose()?;
    // Left out: as it is (a PUT that forgets `active` must not re-hire a leaver), or
    // employed for a new person.
    let active = attr(obj, "active")
        .map(boolean)
        .transpose()?
        .unwrap_or(current.is_none_or(|c| c.active));
    Ok(FeedRecord {
        employee_number: user_name,
        external_id,
        given_name,
        family_name,
        email,
        active,
    })
}

fn string(name: &str, v: &Value) -> Result<String, ScimError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| ScimError::value(format!("{name} is not a string")))
}

/// A boolean; "True"/"False" as strings too (what Microsoft Entra sends in PATCH).
fn boolean(v: &Value) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::value("active is not a boolean")),
    }
}

/// `name`'s given and family names; `merge` keeps what the value leaves out (PATCH add).
fn names(v: &Value, merge: Option<(&str, &str)>) -> Result<(String, String), ScimError> {
    let Value::Object(n) = v else {
        return Err(ScimError::value("name is not an object"));
    };
    let part = |key: &str, old: Option<&str>| -> Result<String, ScimError> {
        match (attr(n, key), old) {
            (Some(v), _) => string(&format!("name.{key}"), v),
            (None, Some(old)) => Ok(old.to_owned()),
            (None, None) => Err(ScimError::value(format!("name.{key} is required"))),
        }
    };
    Ok((
        part("givenName", merge.map(|m| m.0))?,
        part("familyName", merge.map(|m| m.1))?,
    ))
}

/// The one work address a person has: `emails` with at most one entry (or one marked
/// primary among several).
fn emails(v: &Value) -> Result<Option<String>, ScimError> {
    let Value::Array(list) = v else {
        return Err(ScimError::value("emails is not a list"));
    };
    let chosen: Vec<&Value> = if list.len() > 1 {
        list.iter()
            .filter(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
            .collect()
    } else {
        list.iter().collect()
    };
    match chosen.as_slice() {
        [] if list.is_empty() => Ok(None),
        [one] => {
            let Value::Object(e) = one else {
                return Err(ScimError::value("an e-mail is not an object"));
            };
            attr(e, "value")
                .map(|v| string("emails.value", v))
                .transpose()?
                .map(Some)
                .ok_or_else(|| ScimError::value("an e-mail needs a value"))
        }
        _ => Err(ScimError::value(
            "a person has one work e-mail address: send one, or mark one primary",
        )),
    }
}

// ---- PATCH -----------------------------------------------------------------------------

/// One PATCH operation (RFC 7644 §3.5.2) on the record.
fn apply_op(rec: &mut FeedRecord, op: &Value) -> Result<(), ScimError> {
    let Value::Object(op) = op else {
        return Err(ScimError::syntax("an operation is not an object"));
    };
    let kind = attr(op, "op")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| ScimError::syntax("an operation has no \"op\""))?;
    let value = attr(op, "value");
    let path = attr(op, "path").map(|p| string("path", p)).transpose()?;
    match (kind.as_str(), path) {
        ("add" | "replace", None) => {
            // No path: the value is an object of attributes to add or replace.
            let Some(Value::Object(attrs)) = value else {
                return Err(ScimError::value(
                    "an operation without a path takes an object of attributes",
                ));
            };
            for (name, v) in attrs {
                set(rec, &kind, &target(name)?, Some(v))?;
            }
            Ok(())
        }
        ("remove", None) => Err(ScimError::bad("noTarget", "remove needs a path")),
        ("add" | "replace" | "remove", Some(p)) => {
            if kind != "remove" && value.is_none() {
                return Err(ScimError::value(format!("{kind} needs a value")));
            }
            set(rec, &kind, &target(&p)?, value)
        }
        _ => Err(ScimError::syntax(format!(
            "op {kind:?} is not add, replace or remove"
        ))),
    }
}

/// What a PATCH path names on a User.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    UserName,
    ExternalId,
    Active,
    Name,
    GivenName,
    FamilyName,
    Emails,
    /// `emails.value`, `emails[type eq "work"].value`
    EmailValue,
    /// Read-only attributes: ignored, as RFC 7643 §7 has servers ignore them in PUT.
    ReadOnly(String),
    /// Attributes Tessera does not keep.
    Ignored(String),
}

fn target(path: &str) -> Result<Target, ScimError> {
    let p = path.trim();
    let p = match (p.get(..USER.len()), p.get(USER.len()..)) {
        (Some(head), Some(rest)) if head.eq_ignore_ascii_case(USER) => rest.trim_start_matches(':'),
        _ => p,
    };
    let lower = p.to_ascii_lowercase();
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    Ok(match compact.as_str() {
        "username" => Target::UserName,
        "externalid" => Target::ExternalId,
        "active" => Target::Active,
        "name" => Target::Name,
        "name.givenname" => Target::GivenName,
        "name.familyname" => Target::FamilyName,
        "emails" | "emails[typeeq\"work\"]" | "emails[primaryeqtrue]" => Target::Emails,
        "emails.value" | "emails[typeeq\"work\"].value" | "emails[primaryeqtrue].value" => {
            Target::EmailValue
        }
        "id" | "meta" | "displayname" | "name.formatted" | "groups" | "schemas" => {
            Target::ReadOnly(path.to_owned())
        }
        // What Tessera does not keep (title, phoneNumbers, addresses, the enterprise
        // extension, …): ignored, as in a POST or PUT, so that one of them in a PATCH
        // never holds back the rest of it (a leaver's `active: false` above all).
        _ => Target::Ignored(path.to_owned()),
    })
}

fn set(rec: &mut FeedRecord, op: &str, t: &Target, v: Option<&Value>) -> Result<(), ScimError> {
    let remove = op == "remove";
    let required =
        |what: &str| ScimError::mutability(format!("{what} is required: it cannot be removed"));
    match t {
        Target::ReadOnly(p) | Target::Ignored(p) => {
            tracing::debug!(path = %p, "SCIM PATCH: an attribute Tessera does not keep or lets no client write; ignored");
            Ok(())
        }
        Target::UserName => {
            let same = v.and_then(Value::as_str) == Some(rec.employee_number.as_str());
            if same && !remove {
                Ok(())
            } else {
                Err(ScimError::mutability(
                    "userName is the employee number: it never changes",
                ))
            }
        }
        Target::ExternalId => {
            rec.external_id = if remove {
                None
            } else {
                Some(string("externalId", v.unwrap_or(&Value::Null))?)
            };
            Ok(())
        }
        Target::Active => {
            if remove {
                return Err(required("active"));
            }
            rec.active = boolean(v.unwrap_or(&Value::Null))?;
            Ok(())
        }
        Target::Name => {
            if remove {
                return Err(required("name"));
            }
            // Sub-attributes left out stay as they are, for add and replace alike
            // (RFC 7644 §3.5.2.1, §3.5.2.3).
            let merge = Some((rec.given_name.as_str(), rec.family_name.as_str()));
            let (g, f) = names(v.unwrap_or(&Value::Null), merge)?;
            rec.given_name = g;
            rec.family_name = f;
            Ok(())
        }
        Target::GivenName | Target::FamilyName => {
            if remove {
                return Err(required("name"));
            }
            let s = string("name", v.unwrap_or(&Value::Null))?;
            if *t == Target::GivenName {
                rec.given_name = s;
            } else {
                rec.family_name = s;
            }
            Ok(())
        }
        Target::Emails => {
            if remove {
                rec.email = None;
                return Ok(());
            }
            let v = v.unwrap_or(&Value::Null);
            // A filtered path's value is one e-mail object, not a list.
            let list = if v.is_object() { json!([v]) } else { v.clone() };
            let new = emails(&list)?;
            if op == "add" && rec.email.is_some() && new.is_some() && new != rec.email {
                return Err(ScimError::value(
                    "a person has one work e-mail address: replace it instead of adding a second",
                ));
            }
            rec.email = new;
            Ok(())
        }
        Target::EmailValue => {
            rec.email = if remove {
                None
            } else {
                Some(string("emails.value", v.unwrap_or(&Value::Null))?)
            };
            Ok(())
        }
    }
}

// ---- discovery -------------------------------------------------------------------------

/// A discovery answer: the caller authenticated, then `document` for the request's base
/// URL (`None`: there is no `what`, 404).
async fn discovery(
    app: Shared,
    headers: &HeaderMap,
    https: Option<Extension<Https>>,
    what: &str,
    document: impl FnOnce(&str) -> Option<Value>,
) -> Result<Response, ScimError> {
    let base = base(headers, https);
    run(app, headers, |_, _| Ok(())).await?;
    document(&base)
        .map(|d| scim_json(StatusCode::OK, &d))
        .ok_or_else(|| ScimError::new(StatusCode::NOT_FOUND, None, format!("no {what}")))
}

async fn service_provider_config(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery(app, &headers, https, "service provider configuration", |base| {
        Some(json!({
            "schemas": [CONFIG],
            "patch": { "supported": true },
            "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
            "filter": { "supported": true, "maxResults": tessera_issuer_ra::registration::MAX_FEED_PAGE },
            "changePassword": { "supported": false },
            "sort": { "supported": false },
            "etag": { "supported": false },
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Officer token",
                "description": "An HR administrator's officer token (tessera officer token): Authorization: Bearer <token>",
                "primary": true,
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/ServiceProviderConfig"),
            },
        }))
    })
    .await
}

fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A person from HR",
        "schema": USER,
        "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") },
    })
}

async fn resource_types(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery(app, &headers, https, "resource types", |base| {
        Some(list_of(vec![user_resource_type(base)]))
    })
    .await
}

async fn resource_type(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ScimError> {
    discovery(
        app,
        &headers,
        https,
        &format!("resource type {id}"),
        |base| (id == "User").then(|| user_resource_type(base)),
    )
    .await
}

fn list_of(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// One attribute of a published schema.
fn attribute(name: &str, kind: &str, required: bool, mutability: &str, extra: Value) -> Value {
    let mut a = json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "required": required,
        "caseExact": false,
        "mutability": mutability,
        "returned": "default",
        "uniqueness": "none",
    });
    if let (Value::Object(a), Value::Object(extra)) = (&mut a, extra) {
        a.extend(extra);
    }
    a
}

fn user_schema(base: &str) -> Value {
    let s = |name, required, mutability, description: &str| {
        attribute(
            name,
            "string",
            required,
            mutability,
            json!({ "description": description }),
        )
    };
    json!({
        "schemas": [SCHEMA],
        "id": USER,
        "name": "User",
        "description": "A person from HR",
        "attributes": [
            attribute("userName", "string", true, "immutable", json!({
                "description": "The employee number: the person's key, set at creation",
                "uniqueness": "server",
                "caseExact": true,
            })),
            attribute("name", "complex", true, "readWrite", json!({
                "description": "The person's name",
                "subAttributes": [
                    s("givenName", true, "readWrite", "Given name"),
                    s("familyName", true, "readWrite", "Family name"),
                ],
            })),
            s("displayName", false, "readOnly", "Given and family name"),
            attribute("emails", "complex", false, "readWrite", json!({
                "description": "The person's one work e-mail address",
                "multiValued": true,
                "subAttributes": [
                    s("value", true, "readWrite", "The address"),
                    attribute("type", "string", false, "readWrite", json!({
                        "description": "Always work",
                        "canonicalValues": ["work"],
                    })),
                ],
            })),
            attribute("active", "boolean", true, "readWrite", json!({
                "description": "Employed; false ends the employment and revokes every carrier",
            })),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{USER}") },
    })
}

async fn schemas(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery(app, &headers, https, "schemas", |base| {
        Some(list_of(vec![user_schema(base)]))
    })
    .await
}

async fn schema(
    State(app): State<Shared>,
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ScimError> {
    discovery(app, &headers, https, &format!("schema {id}"), |base| {
        (id == USER).then(|| user_schema(base))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> FeedRecord {
        FeedRecord {
            employee_number: "E1".into(),
            external_id: None,
            given_name: "Anna".into(),
            family_name: "Berg".into(),
            email: Some("anna@example.se".into()),
            active: true,
        }
    }

    #[test]
    fn filters_are_the_indexed_ones() {
        assert_eq!(
            filter(r#"userName eq "E 1\"x""#).unwrap(),
            FeedKey::EmployeeNumber("E 1\"x".into())
        );
        assert_eq!(
            filter(r#"externalId EQ "a""#).unwrap(),
            FeedKey::ExternalId("a".into())
        );
        assert_eq!(
            filter(&format!("{USER}:userName eq \"a\"")).unwrap(),
            FeedKey::EmployeeNumber("a".into())
        );
        for bad in [
            "",
            "userName",
            r#"userName co "a""#,
            r#"name.givenName eq "a""#,
            r#"userName eq "a" and active eq true"#,
            r#"userName eq a"#,
        ] {
            let e = filter(bad).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{bad}");
        }
    }

    #[test]
    fn patches_as_entra_and_the_rfc_send_them() {
        let mut r = rec();
        // Entra: no path, capitalised op, "False" as a string.
        apply_op(
            &mut r,
            &json!({"op": "Replace", "value": {"active": "False"}}),
        )
        .unwrap();
        assert!(!r.active);
        apply_op(
            &mut r,
            &json!({"op": "replace", "path": "emails[type eq \"work\"].value", "value": "a@b.se"}),
        )
        .unwrap();
        assert_eq!(r.email.as_deref(), Some("a@b.se"));
        apply_op(
            &mut r,
            &json!({"op": "add", "path": "name", "value": {"givenName": "Ann"}}),
        )
        .unwrap();
        assert_eq!(
            (r.given_name.as_str(), r.family_name.as_str()),
            ("Ann", "Berg")
        );
        // Replacing name with one part keeps the other.
        apply_op(
            &mut r,
            &json!({"op": "replace", "path": "name", "value": {"givenName": "X"}}),
        )
        .unwrap();
        assert_eq!(
            (r.given_name.as_str(), r.family_name.as_str()),
            ("X", "Berg")
        );
        // What Tessera does not keep never holds back the rest (Entra's default mappings).
        let mut leaver = rec();
        for op in [
            json!({"op": "Replace", "path": "active", "value": "False"}),
            json!({"op": "Replace", "path": "displayName", "value": "x"}),
            json!({"op": "Add", "path": "title", "value": "x"}),
            json!({"op": "Replace", "value": {
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "x",
                "name.givenName": "Y",
            }}),
        ] {
            apply_op(&mut leaver, &op).unwrap();
        }
        assert!(!leaver.active);
        assert_eq!(leaver.given_name, "Y");
        // A path cut inside a character is no panic.
        let hostile = format!("{}é", &USER[..USER.len() - 1]);
        apply_op(
            &mut rec(),
            &json!({"op": "replace", "path": hostile, "value": 1}),
        )
        .unwrap();
        let mut value = Map::new();
        value.insert(hostile, json!(1));
        apply_op(&mut rec(), &json!({"op": "replace", "value": value})).unwrap();
        apply_op(&mut r, &json!({"op": "remove", "path": "emails"})).unwrap();
        assert_eq!(r.email, None);
        for (op, why) in [
            (json!({"op": "remove", "path": "active"}), "mutability"),
            (
                json!({"op": "replace", "path": "userName", "value": "E2"}),
                "mutability",
            ),
            (
                json!({"op": "move", "path": "active", "value": true}),
                "invalidSyntax",
            ),
            (json!({"op": "remove"}), "noTarget"),
            (
                json!({"op": "replace", "path": "active", "value": 3}),
                "invalidValue",
            ),
        ] {
            let e = apply_op(&mut rec(), &op).unwrap_err();
            assert_eq!(e.scim_type, Some(why), "{op}");
        }
    }

    #[test]
    fn a_put_replaces_and_keeps_the_key() {
        let body = json!({"schemas": [USER], "userName": "E1", "name": {"givenName": "A", "familyName": "B"}});
        let Value::Object(obj) = body else {
            unreachable!()
        };
        let r = record_from(&obj, Some(&rec())).unwrap();
        // Left out: cleared; but `active` left out stays (a PUT does not re-hire a leaver).
        assert_eq!(r.email, None);
        assert!(r.active);
        let ended = FeedRecord {
            active: false,
            ..rec()
        };
        assert!(!record_from(&obj, Some(&ended)).unwrap().active);
        assert!(emails(&json!([{"type": "work"}])).is_err());
        let body = json!({"schemas": [USER], "userName": "E2", "name": {"givenName": "A", "familyName": "B"}});
        let Value::Object(obj) = body else {
            unreachable!()
        };
        assert_eq!(
            record_from(&obj, Some(&rec())).unwrap_err().scim_type,
            Some("mutability")
        );
        let two = json!([{"value": "a@b.se"}, {"value": "c@d.se"}]);
        assert!(emails(&two).is_err());
        let primary = json!([{"value": "a@b.se"}, {"value": "c@d.se", "primary": true}]);
        assert_eq!(emails(&primary).unwrap().as_deref(), Some("c@d.se"));
    }
}
