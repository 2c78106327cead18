//! The OpenAPI document: every route of the router is in it, nothing else is, and it is valid
//! OpenAPI 3.1 (checked by `openapi-spec-validator`, which the test command installs).

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use support::{KEY, TestApi};

/// Every (method, path) the API serves. Adding a route means adding it here, and the test
/// below fails until the document and the router agree.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/openapi.json"),
    ("get", "/v1/me"),
    ("post", "/v1/runs"),
    ("get", "/v1/runs"),
    ("get", "/v1/runs/{id}"),
    ("get", "/v1/runs/{id}/events"),
    ("post", "/v1/runs/{id}/cancel"),
    ("post", "/v1/runs/{id}/messages"),
    ("post", "/v1/runs/{id}/retry"),
    ("post", "/v1/runs/{id}/rollback"),
    ("get", "/v1/analytics"),
    ("get", "/v1/workflows"),
    ("get", "/v1/workflows/{id}"),
    ("put", "/v1/workflows/{id}"),
    ("delete", "/v1/workflows/{id}"),
    ("post", "/v1/workflows/validate"),
    ("get", "/v1/agent-workflows"),
    ("get", "/v1/sessions"),
    ("get", "/v1/sessions/{name}"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("get", "/v1/webhooks/{id}/deliveries"),
    ("get", "/v1/approvals"),
    ("post", "/v1/approvals/{id}/decision"),
    ("get", "/approvals/link/{token}"),
    ("post", "/approvals/link/{token}"),
    ("post", "/slack/interactions"),
    ("post", "/hooks/{trigger_id}"),
];

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch"];

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let api = TestApi::start().await;
    let served = api
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(served.status, 200);
    let doc = served.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc,
        serde_json::to_value(flowgate_api::openapi()).unwrap(),
        "the served document is the generated one"
    );

    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented(&doc), expected);

    // Every documented (method, path) is routed (never the 404/405 fallbacks), and every other
    // method on those paths is not: the router serves exactly what the document says.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "some-id")
            .replace("{name}", "some-name");
        for method in METHODS {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("x-api-key", KEY)
                .body(Body::empty())
                .unwrap();
            let answer = api.send(req).await;
            let code = answer.code().to_string();
            if item.get(*method).is_some() {
                assert!(
                    code != "route_not_found" && code != "method_not_allowed",
                    "{method} {path} is documented but not routed: {:?}",
                    answer.body
                );
                // Every operation documents its error answers with the one error shape.
                let op = &item[*method];
                assert!(
                    op["responses"]["200"].is_object()
                        || op["responses"]["201"].is_object()
                        || op["responses"]["202"].is_object()
                        || op["responses"]["204"].is_object(),
                    "{method} {path} documents no success answer"
                );
            } else {
                assert_eq!(
                    code, "method_not_allowed",
                    "{method} {path} is routed but not documented: {:?}",
                    answer.body
                );
            }
        }
    }
    let unknown = api
        .send(
            Request::get("/v1/nothing-here")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(unknown.code(), "route_not_found");
}

/// The Python interpreter of the test venv (`scripts/test` exports `FLOWGATE_PYTHON`).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with openapi-spec-validator: run the tests through scripts/test (it creates \
         .venv), or set FLOWGATE_PYTHON"
    );
    venv
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let doc = serde_json::to_string_pretty(flowgate_api::openapi()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &doc).unwrap();
    let out = Command::new(python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "invalid OpenAPI document:\n{text}");
    assert!(text.contains("OK"), "{text}");

    // A broken document is caught (the validator is really checking).
    let mut broken: Value = serde_json::from_str(&doc).unwrap();
    broken["paths"]["/v1/runs"]["post"]["responses"] = Value::String("nope".into());
    std::fs::write(&file, broken.to_string()).unwrap();
    let out = Command::new(python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the validator accepted a broken document"
    );
}

#[test]
fn every_referenced_schema_is_defined() {
    let doc = serde_json::to_value(flowgate_api::openapi()).unwrap();
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            schemas.contains_key(name),
            "{name} is referenced but not defined"
        );
    }
    for name in [
        "ErrorBody",
        "RunDetail",
        "StartRunRequest",
        "RunStatus",
        "StepStatus",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    assert_eq!(
        schemas["RunStatus"]["enum"].as_array().unwrap().len(),
        flowgate_shared::model::RunStatus::ALL.len()
    );
}
