//! Repository checks, like rust-analyzer's `tidy`: the layer rules of docs/ARCHITECTURE.md
//! as dependencies Cargo resolves (checked on `cargo metadata`, and shown to catch a
//! forbidden edge on a fixture), a `//!` header on every source file, and the OpenAPI
//! document against what the code serves (routes, error codes, request fields).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Each workspace package's normal (non-dev, non-build) dependencies, by package name.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph(metadata: &serde_json::Value) -> Graph {
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// The rules; returns every violation.
fn violations(g: &Graph) -> Vec<String> {
    const RUNTIME: [&str; 7] = [
        "tessera-issuer-types",
        "tessera-issuer-store",
        "tessera-issuer-ca",
        "tessera-issuer-status",
        "tessera-issuer-ra",
        "tessera-issuer-web",
        "tessera-issuer-portal",
    ];
    // (crate, what it must never depend on, why)
    let forbidden: &[(&str, &[&str], &str)] = &[
        (
            "tessera-issuer-portal",
            &[
                "tessera-issuer-store",
                "tessera-issuer-ca",
                "tessera-issuer-status",
                "diesel",
                "cryptoki",
            ],
            "the portal is a client of the RA exactly as the API is",
        ),
        (
            "tessera-issuer-web",
            &[
                "tessera-issuer-store",
                "tessera-issuer-ca",
                "diesel",
                "cryptoki",
            ],
            "the HTTP edge goes through the RA and the status layer",
        ),
        (
            "tessera-issuer-types",
            &[
                "diesel",
                "cryptoki",
                "axum",
                "tokio",
                "hyper",
                "tessera-issuer-store",
                "tessera-issuer-ca",
            ],
            "the vocabulary the IdP, agent and admin CLI share stays serde-only",
        ),
        (
            "tessera-issuer-ca",
            &[
                "diesel",
                "axum",
                "tessera-issuer-store",
                "tessera-issuer-status",
                "tessera-issuer-ra",
                "tessera-issuer-web",
            ],
            "the signing context knows neither the database nor the callers",
        ),
        (
            "tessera-issuer-store",
            &[
                "cryptoki",
                "axum",
                "tessera-issuer-ca",
                "tessera-issuer-status",
                "tessera-issuer-ra",
                "tessera-issuer-web",
            ],
            "the database layer signs nothing and serves nothing",
        ),
        (
            "tessera-issuer-status",
            &["axum", "tessera-issuer-ra", "tessera-issuer-web"],
            "status is fed by the outbox, not by the RA or handlers",
        ),
        (
            "tessera-issuer-ra",
            &["axum", "tessera-issuer-web", "tessera-issuer-status"],
            "the RA is called by the edge, never the other way",
        ),
    ];
    let mut found = Vec::new();
    for (krate, banned, why) in forbidden {
        for b in *banned {
            if g.get(*krate).is_some_and(|deps| deps.contains(*b)) {
                found.push(format!("{krate} depends on {b}: {why}"));
            }
        }
    }
    for krate in RUNTIME {
        if g.get(krate)
            .is_some_and(|d| d.contains("tessera-issuer-setup"))
        {
            found.push(format!(
                "{krate} depends on tessera-issuer-setup: runtime code never imports setup code"
            ));
        }
    }
    // Only the stores use diesel: the issuer's, and the IdP's (its own database).
    for (krate, deps) in g {
        if deps.contains("diesel")
            && !["tessera-issuer-store", "tessera-idp-store"].contains(&krate.as_str())
        {
            found.push(format!(
                "{krate} depends on diesel: only tessera-issuer-store and tessera-idp-store may"
            ));
        }
    }
    // The token signs whatever it is handed: only the CA, the set-up and the binary that
    // open it for the CA, and the IdP (its signer) may hold it.
    const HSM_USERS: [&str; 4] = [
        "tessera-issuer-ca",
        "tessera-issuer-setup",
        "tessera-issuer",
        "tessera-idp",
    ];
    for (krate, deps) in g {
        if deps.contains("tessera-hsm") && !HSM_USERS.contains(&krate.as_str()) {
            found.push(format!(
                "{krate} depends on tessera-hsm: only the CA (and who opens the token for it) and the IdP's signer may"
            ));
        }
    }
    // Outside the issuer, only its vocabulary.
    for (krate, deps) in g {
        if krate.starts_with("tessera-issuer") {
            continue;
        }
        for d in deps {
            if d.starts_with("tessera-issuer") && d != "tessera-issuer-types" {
                found.push(format!(
                    "{krate} depends on {d}: outside the issuer only tessera-issuer-types may be used"
                ));
            }
        }
    }
    found
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_crate_graph_keeps_the_layers() {
    let g = graph(&metadata());
    assert!(g.contains_key("tessera-issuer-web"), "{:?}", g.keys());
    let found = violations(&g);
    assert!(found.is_empty(), "{found:#?}");
}

/// The check itself catches a forbidden edge: the real graph with web → store added, and a
/// middleware crate reaching into the issuer.
#[test]
fn the_graph_check_catches_a_forbidden_dependency() {
    let mut g = graph(&metadata());
    g.get_mut("tessera-issuer-web")
        .unwrap()
        .insert("tessera-issuer-store".into());
    g.get_mut("tessera-pkcs11-core")
        .unwrap()
        .insert("tessera-issuer-ca".into());
    g.get_mut("tessera-issuer-status")
        .unwrap()
        .insert("tessera-issuer-setup".into());
    g.get_mut("tessera-issuer-ra")
        .unwrap()
        .insert("tessera-hsm".into());
    let found = violations(&g);
    for expected in [
        "tessera-issuer-ra depends on tessera-hsm",
        "tessera-issuer-web depends on tessera-issuer-store",
        "tessera-pkcs11-core depends on tessera-issuer-ca",
        "tessera-issuer-status depends on tessera-issuer-setup",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(expected)),
            "{expected} not caught: {found:#?}"
        );
    }
}

#[test]
fn every_source_file_opens_with_a_module_header() {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in String::from_utf8_lossy(&out.stdout).lines() {
        let path = workspace_root().join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // listed but deleted in the working tree
        };
        checked += 1;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(file.to_owned());
        }
    }
    assert!(checked > 50, "only {checked} files");
    assert!(missing.is_empty(), "no `//!` header: {missing:#?}");
}

/// The OpenAPI document: its operations are the router's (`ROUTES`, and each one answered
/// by a running server with something other than 404/405), its error codes are
/// `ErrorCode::ALL`, its request schemas have the fields the types have, and the server
/// serves exactly the committed document.
#[test]
fn the_openapi_document_is_what_the_code_serves() {
    let doc: serde_json::Value = serde_json::from_str(tessera_issuer_web::OPENAPI).unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = tessera_issuer_web::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, routed);

    let codes: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let ours: BTreeSet<String> = tessera_issuer_types::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(codes, ours);

    let fields = |schema: &str| -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let keys = |v: serde_json::Value| -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let subject = tessera_issuer_types::Subject {
        common_name: "x".into(),
        upn: Some("x@example.org".into()),
        email: Some("x@example.org".into()),
        card_uuid: Some("8f5c1f3a-1b2c-4d5e-8f90-1234567890ab".into()),
        sid: Some("S-1-5-21-1-2-3-1001".into()),
    };
    let request = tessera_issuer_types::api::IssueRequest {
        profile: tessera_issuer_types::ProfileName::Authentication,
        subject: subject.clone(),
        csr: Some(String::new()),
        attestation: Some(tessera_issuer_types::api::Attestation {
            certificate: String::new(),
            intermediate: String::new(),
        }),
        public_key: Some(String::new()),
        validity_days: Some(1),
    };
    assert_eq!(
        fields("IssueRequest"),
        keys(serde_json::to_value(&request).unwrap())
    );
    assert_eq!(
        fields("Subject"),
        keys(serde_json::to_value(&subject).unwrap())
    );
    assert_eq!(
        fields("Attestation"),
        keys(serde_json::to_value(request.attestation.as_ref().unwrap()).unwrap())
    );

    // The registration authority's bodies, every field set.
    {
        use tessera_issuer_types::api::*;
        use tessera_issuer_types::lifecycle::*;
        let non_resident = NonResident {
            birth_date: "1990-01-01".into(),
            nationality: "NO".into(),
        };
        let key = CarrierKey {
            profile: tessera_issuer_types::ProfileName::Authentication,
            csr: Some(String::new()),
            attestation: request.attestation.clone(),
            tpm: Some(tessera_issuer_types::api::TpmKeyProof {
                challenge: "c".into(),
                secret: "00".into(),
                public: "00".into(),
                attest: "00".into(),
                signature: "00".into(),
                pin_index: Some("00".into()),
            }),
        };
        let checks: Vec<(&str, serde_json::Value)> = vec![
            (
                "NewOfficer",
                serde_json::to_value(NewOfficer {
                    id: "a".into(),
                    display_name: "A".into(),
                    roles: vec![OfficerRole::Auditor],
                    person_id: Some("p".into()),
                })
                .unwrap(),
            ),
            (
                "NewToken",
                serde_json::to_value(NewToken {
                    label: "l".into(),
                    valid_days: Some(1),
                })
                .unwrap(),
            ),
            ("NonResident", serde_json::to_value(&non_resident).unwrap()),
            (
                "NewPerson",
                serde_json::to_value(NewPerson {
                    employee_number: "1".into(),
                    given_name: "g".into(),
                    family_name: "f".into(),
                    email: Some("e".into()),
                    upn: Some("u".into()),
                    identity_number: Some("n".into()),
                    non_resident: Some(non_resident.clone()),
                    protected_identity: true,
                    directory_sid: Some("S-1-5-21-1-2-3-1001".into()),
                })
                .unwrap(),
            ),
            (
                "ImportRequest",
                serde_json::to_value(ImportRequest {
                    people: Vec::new(),
                    dry_run: true,
                })
                .unwrap(),
            ),
            (
                "NewProofing",
                serde_json::to_value(NewProofing {
                    document_type: "passport".into(),
                    document_number: "1".into(),
                    issuing_country: "SE".into(),
                    document_expiry: "2030-01-01".into(),
                    place: "p".into(),
                    identity_number: Some("1".into()),
                    non_resident: Some(non_resident.clone()),
                })
                .unwrap(),
            ),
            (
                "NewCarrier",
                serde_json::to_value(NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: "1".into(),
                })
                .unwrap(),
            ),
            (
                "AssignRequest",
                serde_json::to_value(AssignRequest {
                    person_id: "p".into(),
                    terms_version: "1".into(),
                })
                .unwrap(),
            ),
            (
                "TemporaryRequest",
                serde_json::to_value(TemporaryRequest {
                    carrier_id: "c".into(),
                    original_id: Some("o".into()),
                    days: Some(1),
                })
                .unwrap(),
            ),
            ("CarrierKey", serde_json::to_value(&key).unwrap()),
            (
                "TpmKeyProof",
                serde_json::to_value(key.tpm.as_ref().unwrap()).unwrap(),
            ),
            (
                "TpmChallengeRequest",
                serde_json::to_value(tessera_issuer_types::api::TpmChallengeRequest {
                    ek_certificate: "e".into(),
                    ak_public: "00".into(),
                })
                .unwrap(),
            ),
            (
                "TpmChallenge",
                serde_json::to_value(tessera_issuer_types::api::TpmChallenge {
                    challenge: "c".into(),
                    credential: "00".into(),
                    encrypted_secret: "00".into(),
                    nonce: "00".into(),
                })
                .unwrap(),
            ),
            (
                "KeysRequest",
                serde_json::to_value(KeysRequest {
                    keys: vec![key],
                    puk: Some("12345678".into()),
                })
                .unwrap(),
            ),
            (
                "UnblockRequest",
                serde_json::to_value(UnblockRequest {
                    verification: HolderVerification::InPerson,
                })
                .unwrap(),
            ),
            (
                "PukReleaseRequest",
                serde_json::to_value(PukReleaseRequest {
                    approval_id: "a".into(),
                    release_code: "c".into(),
                    approval_code: "c".into(),
                    algorithm: "ecdsa-with-SHA256".into(),
                    signature: "s".into(),
                })
                .unwrap(),
            ),
            (
                "PukRotation",
                serde_json::to_value(PukRotation {
                    approval_id: "a".into(),
                    release_code: "c".into(),
                    approval_code: "c".into(),
                    new_puk: "87654321".into(),
                    algorithm: "ecdsa-with-SHA256".into(),
                    signature: "s".into(),
                })
                .unwrap(),
            ),
            (
                "ActivateRequest",
                serde_json::to_value(ActivateRequest {
                    receipt: "r".into(),
                })
                .unwrap(),
            ),
            (
                "SuspendRequest",
                serde_json::to_value(SuspendRequest {
                    reason: SuspendReason::OnLeave,
                    days: 1,
                })
                .unwrap(),
            ),
            (
                "ResumeRequest",
                serde_json::to_value(ResumeRequest {
                    verification: "pin".into(),
                })
                .unwrap(),
            ),
            (
                "RevokeCarrierRequest",
                serde_json::to_value(RevokeCarrierRequest {
                    reason: CarrierRevokeReason::Lost,
                })
                .unwrap(),
            ),
            (
                "SubstituteRequest",
                serde_json::to_value(SubstituteRequest {
                    carrier_id: "c".into(),
                    days: 1,
                })
                .unwrap(),
            ),
            (
                "RetireRequest",
                serde_json::to_value(RetireRequest { restock: true }).unwrap(),
            ),
            (
                "LossReport",
                serde_json::to_value(LossReport { code: "c".into() }).unwrap(),
            ),
            (
                "BulkRevocationRequest",
                serde_json::to_value(BulkRevocationRequest {
                    carrier_ids: vec!["c".into()],
                    reason: CarrierRevokeReason::Lost,
                })
                .unwrap(),
            ),
            (
                "ExtendRequest",
                serde_json::to_value(ExtendRequest { days: 1 }).unwrap(),
            ),
            (
                "ReturnRequest",
                serde_json::to_value(ReturnRequest {
                    outcome: ReturnOutcome::Lost,
                })
                .unwrap(),
            ),
        ];
        for (schema, value) in checks {
            assert_eq!(fields(schema), keys(value), "{schema}");
        }
    }

    // A running server answers every documented operation, and serves this document.
    if !common::require(&["curl"], &["/usr/lib/softhsm/libsofthsm2.so"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let issuer = env!("CARGO_BIN_EXE_tessera-issuer");
    assert!(Command::new(issuer)
        .args(["init", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success());
    let (server, base) = common::serve(&data, &[]);
    let status = |method: &str, path: &str| -> u16 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                &method.to_uppercase(),
            ])
            .arg(format!("{base}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    };
    for (method, path) in &routed {
        let concrete = path
            .replace("{serial}", "00ff")
            .replace("{id}", "x")
            .replace("{token}", "x")
            .replace("{request}", "MAMGAQ%3D%3D");
        let code = status(method, &concrete);
        assert!(
            code != 404 && code != 405 && code != 0,
            "{method} {path}: {code}"
        );
    }
    let served = Command::new("curl")
        .args(["-s", &format!("{base}/api/v1/openapi.json")])
        .output()
        .unwrap()
        .stdout;
    drop(server);
    assert_eq!(
        String::from_utf8_lossy(&served),
        tessera_issuer_web::OPENAPI
    );
}
