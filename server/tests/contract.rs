//! The API contract: error envelopes for every kind of bad input, health probes, the OpenAPI
//! document against the real routes, and the command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

on_both_databases!(
    health_and_readiness,
    malformed_requests_get_json_errors,
    no_input_makes_the_server_fail,
    openapi_document_matches_the_routes,
);

async fn health_and_readiness(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let h = srv.send(srv.req(Method::GET, "/healthz", None)).await;
    assert_eq!(h.expect(200)["status"], "ok");
    let r = srv.send(srv.req(Method::GET, "/readyz", None)).await;
    assert_eq!(r.expect(200)["status"], "ready");
    // With the database gone, readiness says so (and liveness does not care).
    srv.server.state.db.close().await;
    srv.send(srv.req(Method::GET, "/readyz", None))
        .await
        .expect_error(503, "unavailable");
    srv.send(srv.req(Method::GET, "/healthz", None))
        .await
        .expect(200);
    srv.stop().await;
}

async fn malformed_requests_get_json_errors(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let s = srv.user("olga").await;
    let raw = |method: Method, path: &str, ct: Option<&str>, body: Vec<u8>| {
        let mut r = srv.req(method, path, Some(&s.access)).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let json_ct = Some("application/json");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            raw(
                Method::POST,
                "/api/auth/register",
                json_ct,
                b"{\"username\": ".to_vec(),
            ),
            400,
            "malformed_json",
        ),
        (
            raw(Method::POST, "/api/auth/register", json_ct, b"".to_vec()),
            400,
            "malformed_json",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/register",
                json_ct,
                b"[1,2]".to_vec(),
            ),
            422,
            "invalid_body",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/register",
                json_ct,
                br#"{"username":1,"email":"a@b.co","password":"12345678"}"#.to_vec(),
            ),
            422,
            "invalid_body",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/register",
                json_ct,
                br#"{"email":"a@b.co","password":"12345678"}"#.to_vec(),
            ),
            422,
            "invalid_body",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/register",
                json_ct,
                br#"{"username":"zed","email":"a@b.co","password":"12345678","role":"admin"}"#
                    .to_vec(),
            ),
            422,
            "invalid_body",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/register",
                None,
                br#"{"username":"zed"}"#.to_vec(),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/register",
                Some("text/plain"),
                br#"{"username":"zed"}"#.to_vec(),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/login",
                json_ct,
                vec![b' '; 70 * 1024],
            ),
            413,
            "payload_too_large",
        ),
        (
            raw(
                Method::POST,
                "/api/rooms",
                json_ct,
                format!(
                    r#"{{"name":"{}","privacy":"public"}}"#,
                    "x".repeat(100 * 1024)
                )
                .into_bytes(),
            ),
            413,
            "payload_too_large",
        ),
        (
            raw(
                Method::POST,
                "/api/auth/login",
                json_ct,
                vec![0xff, 0xfe, 0x00],
            ),
            400,
            "malformed_json",
        ),
        (
            raw(Method::GET, "/api/no/such/thing", None, vec![]),
            404,
            "not_found",
        ),
        (raw(Method::GET, "/", None, vec![]), 404, "not_found"),
        (
            raw(Method::PUT, "/api/rooms", json_ct, b"{}".to_vec()),
            405,
            "method_not_allowed",
        ),
        (
            raw(Method::DELETE, "/api/auth/login", None, vec![]),
            405,
            "method_not_allowed",
        ),
        (
            raw(Method::GET, "/api/auth/register", None, vec![]),
            405,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let r = srv.send(req).await;
        r.expect_error(status, code);
        if status == 405 {
            assert!(r.headers.contains_key("allow"), "405 carries Allow");
        }
    }
    // Deeply nested JSON is refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = srv
        .send(raw(Method::POST, "/api/rooms", json_ct, deep.into_bytes()))
        .await;
    assert!(r.status.is_client_error());
    r.code();
    // The server is still fine.
    srv.get("/api/users/me", &s.access).await.expect(200);
    srv.stop().await;
}

/// Sends a spread of wrong bodies and ids to every endpoint; every answer must be a JSON error
/// envelope or a success, never a 500.
async fn no_input_makes_the_server_fail(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let s = srv.user("petra").await;
    let room = srv
        .create_room(&s, json!({"name": "Target", "privacy": "public"}))
        .await;
    let rid = room["id"].as_str().unwrap().to_string();
    let bodies: Vec<Value> = vec![
        Value::Null,
        json!([]),
        json!("string"),
        json!(12345),
        json!({}),
        json!({"name": null, "privacy": null, "password": null}),
        json!({"name": "\u{0000}\u{202e}", "privacy": "public"}),
        json!({"name": "ok", "privacy": "public", "max_participants": -1}),
        json!({"name": "ok", "privacy": "public", "max_participants": 1e30}),
        json!({"login": "x".repeat(5000), "password": "y".repeat(5000)}),
        json!({"username": "💥💥💥", "email": "💥@💥.💥", "password": "💥".repeat(200)}),
        json!({"email": "a@b.co", "token": "t".repeat(600), "password": "12345678"}),
        json!({"refresh_token": 5}),
        json!({"current_password": [], "new_password": {}}),
        json!({"expires_at": "9999-99-99T99:99:99Z", "locked": "yes"}),
    ];
    let paths: Vec<(Method, String)> = vec![
        (Method::POST, "/api/auth/register".into()),
        (Method::POST, "/api/auth/login".into()),
        (Method::POST, "/api/auth/refresh".into()),
        (Method::POST, "/api/auth/logout".into()),
        (Method::POST, "/api/auth/password/forgot".into()),
        (Method::POST, "/api/auth/password/reset".into()),
        (Method::PATCH, "/api/users/me".into()),
        (Method::POST, "/api/users/me/password".into()),
        (Method::POST, "/api/rooms".into()),
        (Method::PATCH, format!("/api/rooms/{rid}")),
        (Method::POST, format!("/api/rooms/{rid}/join")),
        (Method::POST, format!("/api/rooms/{rid}/members")),
        (Method::POST, format!("/api/rooms/{rid}/messages")),
        (Method::PATCH, "/api/rooms/%00%ff".into()),
        (Method::POST, "/api/rooms/aaa-aaaa-aaa/join".into()),
        (
            Method::DELETE,
            "/api/rooms/aaa-aaaa-aaa/members/%E2%80%AE".into(),
        ),
    ];
    for (method, path) in &paths {
        for body in &bodies {
            // Signing out is a legitimate answer to some of these; keep this session alive.
            let token = (path != "/api/auth/logout").then_some(s.access.as_str());
            let r = srv
                .send(srv.req(method.clone(), path, token).json(body))
                .await;
            if !r.status.is_success() {
                r.code();
            }
        }
    }
    // Still sound afterwards: the account and the room are as they were.
    let me = srv.get("/api/users/me", &s.access).await;
    assert_eq!(me.expect(200)["username"], "petra");
    let r = srv.get(&format!("/api/rooms/{rid}"), &s.access).await;
    assert_eq!(r.expect(200)["name"], "Target");
    srv.stop().await;
}

async fn openapi_document_matches_the_routes(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let doc = srv
        .send(srv.req(Method::GET, "/api/openapi.json", None))
        .await;
    let doc = doc.expect(200).clone();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();

    // Every endpoint of the foundation is documented.
    let expected = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("post", "/api/auth/register"),
        ("post", "/api/auth/login"),
        ("post", "/api/auth/refresh"),
        ("post", "/api/auth/logout"),
        ("get", "/api/auth/profile"),
        ("post", "/api/auth/password/forgot"),
        ("post", "/api/auth/password/reset"),
        ("get", "/api/users/me"),
        ("patch", "/api/users/me"),
        ("post", "/api/users/me/password"),
        ("get", "/api/users/{id}/avatar"),
        ("post", "/api/rooms"),
        ("get", "/api/rooms"),
        ("get", "/api/rooms/{id}"),
        ("patch", "/api/rooms/{id}"),
        ("delete", "/api/rooms/{id}"),
        ("post", "/api/rooms/{id}/join"),
        ("post", "/api/rooms/{id}/leave"),
        ("post", "/api/rooms/{id}/members"),
        ("delete", "/api/rooms/{id}/members/{user_id}"),
        ("get", "/api/rooms/{id}/sessions"),
        ("get", "/api/rooms/{id}/messages"),
        ("post", "/api/rooms/{id}/messages"),
        ("post", "/api/meetings"),
        ("get", "/api/meetings"),
        ("get", "/api/meetings/{id}"),
        ("delete", "/api/meetings/{id}"),
        ("get", "/api/ws"),
        ("post", "/api/rooms/{id}/whip"),
        ("delete", "/api/rooms/{id}/whip/{session}"),
        ("post", "/api/rooms/{id}/whep"),
        ("delete", "/api/rooms/{id}/whep/{session}"),
    ];
    for (method, path) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // And every documented operation is really routed: it never answers as an unknown path
    // or a wrong method.
    let mut count = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "aaa-aaaa-aaa")
                .replace("{user_id}", "00000000-0000-0000-0000-000000000000")
                .replace("{session}", "00000000-0000-0000-0000-000000000000");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = srv.send(srv.req(m, &concrete, None)).await;
            assert_ne!(r.status.as_u16(), 405, "{method} {path}");
            if r.status.as_u16() == 404 {
                assert_ne!(
                    r.code(),
                    "not_found",
                    "{method} {path} is documented but not routed"
                );
            }
            count += 1;
        }
    }
    assert_eq!(
        count,
        expected.len(),
        "the document has operations this test does not know"
    );
    // Schemas of the wire types are there, and protected operations say so.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "User",
        "Room",
        "TokenResponse",
        "ErrorBody",
        "CreateRoomRequest",
    ] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(paths["/api/rooms"]["post"]["security"].is_array());
    srv.stop().await;
}

#[test]
fn help_documents_every_setting() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_convo-server"))
        .arg("--help")
        .env(
            "CONVO_JWT_SECRET",
            "a-secret-that-must-never-be-printed-0123",
        )
        .env("DATABASE_URL", "postgres://u:hunter2@db/x")
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "CONVO_BIND",
        "CONVO_DATA_DIR",
        "DATABASE_URL",
        "CONVO_PUBLIC_URL",
        "CONVO_SMTP_URL",
        "CONVO_JWT_SECRET",
        "CONVO_CORS_ORIGINS",
        "CONVO_TRUSTED_PROXIES",
        "CONVO_REGISTRATIONS_PER_HOUR",
        "admin",
    ] {
        assert!(help.contains(name), "--help lacks {name}:\n{help}");
    }
    assert!(!help.contains("a-secret-that-must-never-be-printed"));
    assert!(!help.contains("hunter2"));
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, says) in [
        ("CONVO_JWT_SECRET", "short", "at least 32"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("CONVO_PUBLIC_URL", "ftp://x", "CONVO_PUBLIC_URL"),
        ("CONVO_BIND", "not-an-address", "invalid"),
        ("CONVO_TRUSTED_PROXIES", "10.0.0.0/33", "--trusted-proxies"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_convo-server"))
            .env("CONVO_DATA_DIR", dir.path())
            .env(var, value)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{var}={value} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{var}: {err}");
    }
}
