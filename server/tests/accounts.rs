//! Accounts and sessions, over HTTP against the real server, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, PASSWORD, SECRET, SmtpSink, TestEnv, reset_token, unquote};
use reqwest::Method;
use serde_json::json;

on_both_databases!(
    register_and_sign_in,
    registration_rules,
    login_is_throttled,
    parallel_guesses_cannot_race_the_throttle,
    behind_a_trusted_proxy_each_client_has_its_own_limit,
    registrations_are_limited_per_address,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_and_expired_tokens_are_refused,
    password_change_ends_other_sessions,
    password_recovery_by_mail,
    profile_and_avatar,
    data_and_sessions_survive_a_restart,
    admin_cli_creates_an_admin,
);

async fn register_and_sign_in(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let user = srv
        .post(
            "/api/auth/register",
            None,
            json!({"username": "Alice", "email": "Alice@Example.com", "password": PASSWORD, "display_name": "Alice A."}),
        )
        .await
        .expect(201)
        .clone();
    assert_eq!(user["username"], "Alice");
    assert_eq!(user["display_name"], "Alice A.");
    assert_eq!(
        user["role"], "user",
        "the first account is not silently an admin"
    );
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());

    // By username or email, case-insensitively.
    let by_name = srv.session("alice", PASSWORD).await;
    let by_mail = srv.session("ALICE@example.com", PASSWORD).await;
    assert_eq!(by_name.id(), by_mail.id());
    let login = srv.login("alice", PASSWORD).await;
    let body = login.expect(200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);

    // Same answer for a wrong password and an unknown account.
    let wrong = srv.login("alice", "not the password").await;
    wrong.expect_error(401, "invalid_credentials");
    let nobody = srv.login("nobody", "not the password").await;
    nobody.expect_error(401, "invalid_credentials");
    assert_eq!(wrong.body, nobody.body);

    // Protected routes.
    for path in ["/api/auth/profile", "/api/users/me"] {
        let me = srv.get(path, &by_name.access).await;
        assert_eq!(me.expect(200)["id"], user["id"]);
        assert_eq!(me.body["email"], "Alice@Example.com");
        srv.call(Method::GET, path, None, None)
            .await
            .expect_error(401, "unauthenticated");
        srv.get(path, "garbage")
            .await
            .expect_error(401, "unauthenticated");
        let r = srv
            .send(
                srv.req(Method::GET, path, None)
                    .header("authorization", "Basic YTpi"),
            )
            .await;
        r.expect_error(401, "unauthenticated");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    srv.stop().await;
}

async fn registration_rules(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    srv.register("bob").await;
    let dup = |u: &str, e: &str| json!({"username": u, "email": e, "password": PASSWORD});
    srv.post("/api/auth/register", None, dup("BOB", "other@example.com"))
        .await
        .expect_error(409, "user_exists");
    srv.post("/api/auth/register", None, dup("bobby", "Bob@Example.COM"))
        .await
        .expect_error(409, "user_exists");

    let cases = [
        (
            json!({"username": "carol", "email": "c@example.com", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "carol", "email": "c@example.com", "password": "x".repeat(129)}),
            "password",
        ),
        (
            json!({"username": "carol", "email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"username": "ca", "email": "c@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "c".repeat(33), "email": "c@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "ca rol", "email": "c@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "carol", "email": "c@example.com", "password": PASSWORD, "display_name": "d".repeat(65)}),
            "display_name",
        ),
        (
            json!({"username": "carol", "email": "c@example.com", "password": PASSWORD, "display_name": "  "}),
            "display_name",
        ),
    ];
    for (body, field) in cases {
        let r = srv.post("/api/auth/register", None, body.clone()).await;
        r.expect_error(422, "validation_failed");
        assert_eq!(r.body["error"]["field"], field, "{body}");
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Exactly at the limits is fine.
    srv.post(
        "/api/auth/register",
        None,
        json!({"username": "c".repeat(32), "email": "c@example.com", "password": "p".repeat(128)}),
    )
    .await
    .expect(201);
    // Nothing half-made: the rejected "carol" does not exist.
    srv.login("carol", PASSWORD)
        .await
        .expect_error(401, "invalid_credentials");
    srv.stop().await;
}

async fn login_is_throttled(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    srv.register("dave").await;
    for _ in 0..5 {
        srv.login("dave", "wrong password!")
            .await
            .expect_error(401, "invalid_credentials");
    }
    let r = srv.login("dave", "wrong password!").await;
    r.expect_error(429, "too_many_attempts");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    // Even the right password waits: the account is locked for the window.
    srv.login("DAVE@example.com", PASSWORD)
        .await
        .expect_error(429, "too_many_attempts");
    // Unknown accounts are throttled the same way (no enumeration by throttling).
    for _ in 0..5 {
        srv.login("ghost", "wrong password!")
            .await
            .expect_error(401, "invalid_credentials");
    }
    srv.login("ghost", "wrong password!")
        .await
        .expect_error(429, "too_many_attempts");
    // Another account from the same address still signs in.
    srv.user("erin").await;
    srv.stop().await;
}

/// Guesses sent all at once: each is counted before its password is hashed, so no more pass
/// the throttle than one at a time would (before, all twelve passed the check together and
/// were verified: twelve guesses where five are allowed).
async fn parallel_guesses_cannot_race_the_throttle(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    srv.register("frank").await;
    let replies =
        futures_util::future::join_all((0..12).map(|_| srv.login("frank", "wrong password!")))
            .await;
    let mut wrong = 0;
    let mut refused = 0;
    for r in &replies {
        match r.status.as_u16() {
            401 => {
                r.expect_error(401, "invalid_credentials");
                wrong += 1;
            }
            _ => {
                r.expect_error(429, "too_many_attempts");
                refused += 1;
            }
        }
    }
    assert_eq!(
        (wrong, refused),
        (5, 7),
        "five guesses checked, the rest refused"
    );
    // The account is locked for the window, the right password included.
    srv.login("frank", PASSWORD)
        .await
        .expect_error(429, "too_many_attempts");
    // A right password from the same address takes back its own attempt only: the address's
    // limit (20) still counts frank's five.
    srv.user("gina").await;
    srv.stop().await;
}

async fn login_from(
    srv: &common::TestServer,
    xff: &str,
    login: &str,
    password: &str,
) -> common::Reply {
    srv.send(
        srv.req(Method::POST, "/api/auth/login", None)
            .header("x-forwarded-for", xff)
            .json(&json!({"login": login, "password": password})),
    )
    .await
}

/// Behind a reverse proxy every request comes from the proxy's address: without
/// `CONVO_TRUSTED_PROXIES` 20 bad sign-ins from anyone block everyone's; with it, the address
/// the proxy names in X-Forwarded-For counts, and a client cannot name one of its choosing
/// when it is not the proxy.
async fn behind_a_trusted_proxy_each_client_has_its_own_limit(backend: Backend) {
    // Not trusted: the header is ignored, the peer address (127.0.0.1) counts for all.
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    srv.register("victim").await;
    for i in 0..20 {
        login_from(
            &srv,
            "203.0.113.66",
            &format!("nobody{}", i % 4),
            "wrong password!",
        )
        .await
        .expect_error(401, "invalid_credentials");
    }
    login_from(&srv, "198.51.100.9", "victim", PASSWORD)
        .await
        .expect_error(429, "too_many_attempts");
    srv.stop().await;

    // Trusted: the attacker's address is blocked, the victim's is not.
    let mut env = TestEnv::new(backend).await;
    env.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let srv = env.start().await;
    srv.register("victim").await;
    for i in 0..20 {
        login_from(
            &srv,
            "203.0.113.66",
            &format!("nobody{}", i % 4),
            "wrong password!",
        )
        .await
        .expect_error(401, "invalid_credentials");
    }
    login_from(&srv, "203.0.113.66", "nobody9", "wrong password!")
        .await
        .expect_error(429, "too_many_attempts");
    // An address the attacker writes left of its own is not believed.
    login_from(
        &srv,
        "198.51.100.9, 203.0.113.66",
        "nobody9",
        "wrong password!",
    )
    .await
    .expect_error(429, "too_many_attempts");
    login_from(&srv, "198.51.100.9", "victim", PASSWORD)
        .await
        .expect(200);
    srv.stop().await;
}

/// Each account costs a 19 MiB hash and is free to an attacker: one address creates at most
/// `CONVO_REGISTRATIONS_PER_HOUR` in an hour. Refused bodies and taken names do not count.
async fn registrations_are_limited_per_address(backend: Backend) {
    let mut env = TestEnv::new(backend).await;
    env.registrations_per_hour = 3;
    let srv = env.start().await;
    let body = |name: &str| json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD});
    srv.post(
        "/api/auth/register",
        None,
        json!({"username": "x", "email": "bad", "password": "short"}),
    )
    .await
    .expect_error(422, "validation_failed");
    for name in ["reg1", "reg2", "reg3"] {
        srv.post("/api/auth/register", None, body(name))
            .await
            .expect(201);
    }
    srv.post("/api/auth/register", None, body("reg1"))
        .await
        .expect_error(409, "user_exists");
    let r = srv.post("/api/auth/register", None, body("reg4")).await;
    r.expect_error(429, "too_many_attempts");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 3600, "{retry}");
    // Nothing half-made, and the accounts made still sign in.
    srv.login("reg4", PASSWORD)
        .await
        .expect_error(401, "invalid_credentials");
    srv.session("reg3", PASSWORD).await;
    srv.stop().await;
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let s = srv.user("frank").await;
    let r1 = srv
        .post(
            "/api/auth/refresh",
            None,
            json!({"refresh_token": s.refresh}),
        )
        .await;
    let b1 = r1.expect(200).clone();
    let refresh2 = b1["refresh_token"].as_str().unwrap().to_string();
    let access2 = b1["access_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, s.refresh);
    assert_eq!(b1["user"]["username"], "frank");
    srv.get("/api/users/me", &access2).await.expect(200);

    // The first token again: reuse. The whole family ends, including the newest tokens.
    srv.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": s.refresh}),
    )
    .await
    .expect_error(401, "refresh_token_reused");
    srv.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": refresh2}),
    )
    .await
    .expect_error(401, "unauthenticated");
    srv.get("/api/users/me", &access2)
        .await
        .expect_error(401, "unauthenticated");
    srv.get("/api/users/me", &s.access)
        .await
        .expect_error(401, "unauthenticated");

    // Other sessions of the same user are untouched.
    let other = srv.session("frank", PASSWORD).await;
    srv.get("/api/users/me", &other.access).await.expect(200);

    // Nonsense tokens.
    srv.post("/api/auth/refresh", None, json!({"refresh_token": "nope"}))
        .await
        .expect_error(401, "unauthenticated");
    srv.post("/api/auth/refresh", None, json!({"refresh_token": ""}))
        .await
        .expect_error(422, "validation_failed");
    srv.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": "x".repeat(10_000)}),
    )
    .await
    .expect_error(422, "validation_failed");
    srv.stop().await;
}

async fn logout_and_expired_tokens_are_refused(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("grace").await;
    let b = srv.session("grace", PASSWORD).await;

    // Logout by refresh token ends that session only.
    srv.post(
        "/api/auth/logout",
        None,
        json!({"refresh_token": a.refresh}),
    )
    .await
    .expect(204);
    srv.get("/api/users/me", &a.access)
        .await
        .expect_error(401, "unauthenticated");
    srv.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": a.refresh}),
    )
    .await
    .expect_error(401, "unauthenticated");
    srv.get("/api/users/me", &b.access).await.expect(200);

    // Logout by bearer token, no body.
    srv.send(srv.req(Method::POST, "/api/auth/logout", Some(&b.access)))
        .await
        .expect(204);
    srv.get("/api/users/me", &b.access)
        .await
        .expect_error(401, "unauthenticated");
    srv.send(srv.req(Method::POST, "/api/auth/logout", None))
        .await
        .expect_error(401, "unauthenticated");

    // An expired token of a live session, and a token signed with another key.
    let c = srv.session("grace", PASSWORD).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = convo_server::auth::tokens::Claims {
        sub: c.id().to_string(),
        sid: c.session_id(),
        iat: now - 1000,
        exp: now - 10,
        iss: convo_server::auth::tokens::ISSUER.into(),
    };
    let expired = convo_server::auth::tokens::encode_jwt(SECRET.as_bytes(), &claims);
    srv.get("/api/users/me", &expired)
        .await
        .expect_error(401, "token_expired");
    claims.exp = now + 600;
    let fresh = convo_server::auth::tokens::encode_jwt(SECRET.as_bytes(), &claims);
    srv.get("/api/users/me", &fresh).await.expect(200);
    let forged =
        convo_server::auth::tokens::encode_jwt(b"some-other-secret-of-forty-characters!!", &claims);
    srv.get("/api/users/me", &forged)
        .await
        .expect_error(401, "unauthenticated");
    srv.stop().await;
}

async fn password_change_ends_other_sessions(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let here = srv.user("heidi").await;
    let elsewhere = srv.session("heidi", PASSWORD).await;
    let path = "/api/users/me/password";
    srv.post(
        path,
        Some(&here.access),
        json!({"current_password": "wrong password", "new_password": "a new password"}),
    )
    .await
    .expect_error(401, "invalid_credentials");
    srv.post(
        path,
        Some(&here.access),
        json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await
    .expect_error(422, "validation_failed");
    srv.post(
        path,
        None,
        json!({"current_password": PASSWORD, "new_password": "a new password"}),
    )
    .await
    .expect_error(401, "unauthenticated");
    srv.post(
        path,
        Some(&here.access),
        json!({"current_password": PASSWORD, "new_password": "a new password"}),
    )
    .await
    .expect(204);
    srv.get("/api/users/me", &here.access).await.expect(200);
    srv.get("/api/users/me", &elsewhere.access)
        .await
        .expect_error(401, "unauthenticated");
    srv.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": elsewhere.refresh}),
    )
    .await
    .expect_error(401, "unauthenticated");
    srv.login("heidi", PASSWORD)
        .await
        .expect_error(401, "invalid_credentials");
    srv.session("heidi", "a new password").await;
    srv.stop().await;
}
async fn password_recovery_by_mail(backend: Backend) {
    let mut sink = SmtpSink::start().await;
    let mut env = TestEnv::new(backend).await;
    env.smtp_url = Some(sink.url.clone());
    let srv = env.start().await;
    let old = srv.user("ivan").await;

    // Unknown address: same answer, and no mail (the next mail is Ivan's).
    let unknown = srv
        .post(
            "/api/auth/password/forgot",
            None,
            json!({"email": "nobody@example.com"}),
        )
        .await;
    unknown.expect(202);
    let known = srv
        .post(
            "/api/auth/password/forgot",
            None,
            json!({"email": "IVAN@example.com"}),
        )
        .await;
    known.expect(202);
    assert_eq!(unknown.body, known.body);
    srv.post("/api/auth/password/forgot", None, json!({"email": "bad"}))
        .await
        .expect_error(422, "validation_failed");

    let mail = sink.next().await;
    assert_eq!(mail.to, vec!["ivan@example.com".to_string()]);
    assert!(
        mail.data
            .contains("Subject: Reset your ConvoConnect password"),
        "{}",
        mail.data
    );
    assert!(unquote(&mail.data).contains("https://meet.example.com/reset-password?token="));
    let token = reset_token(&mail.data);
    assert_eq!(token.len(), 43);
    assert!(
        unquote(&mail.data).contains(&format!("\r\n{token}\r\n")),
        "the code on its own line"
    );

    let reset = "/api/auth/password/reset";
    srv.post(reset, None, json!({"token": token, "password": "short"}))
        .await
        .expect_error(422, "validation_failed");
    srv.post(
        reset,
        None,
        json!({"token": "forged-token", "password": "brand new password"}),
    )
    .await
    .expect_error(400, "invalid_reset_token");
    srv.post(
        reset,
        None,
        json!({"token": token, "password": "brand new password"}),
    )
    .await
    .expect(204);
    // Single use.
    srv.post(
        reset,
        None,
        json!({"token": token, "password": "another new password"}),
    )
    .await
    .expect_error(400, "invalid_reset_token");
    // Old sessions ended, old password gone, new one works.
    srv.get("/api/users/me", &old.access)
        .await
        .expect_error(401, "unauthenticated");
    srv.login("ivan", PASSWORD)
        .await
        .expect_error(401, "invalid_credentials");
    srv.session("ivan", "brand new password").await;

    // A newer link replaces an older one.
    srv.post(
        "/api/auth/password/forgot",
        None,
        json!({"email": "ivan@example.com"}),
    )
    .await
    .expect(202);
    let first = reset_token(&sink.next().await.data);
    srv.post(
        "/api/auth/password/forgot",
        None,
        json!({"email": "ivan@example.com"}),
    )
    .await
    .expect(202);
    let second = reset_token(&sink.next().await.data);
    srv.post(
        reset,
        None,
        json!({"token": first, "password": "third new password"}),
    )
    .await
    .expect_error(400, "invalid_reset_token");
    srv.post(
        reset,
        None,
        json!({"token": second, "password": "third new password"}),
    )
    .await
    .expect(204);

    // An expired link is refused: age one in the database instead of waiting an hour. (Ivan
    // has had the three mails an hour allows, so this is Jane's.)
    srv.user("jane").await;
    srv.post(
        "/api/auth/password/forgot",
        None,
        json!({"email": "jane@example.com"}),
    )
    .await
    .expect(202);
    let stale = reset_token(&sink.next().await.data);
    sqlx::query("UPDATE password_resets SET expires_at = created_at - 1 WHERE used_at IS NULL")
        .execute(&srv.server.state.db)
        .await
        .unwrap();
    srv.post(
        reset,
        None,
        json!({"token": stale, "password": "fourth new password"}),
    )
    .await
    .expect_error(400, "invalid_reset_token");
    srv.session("jane", PASSWORD).await;
    srv.stop().await;
}

fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&[0u8; 64]);
    v
}

async fn profile_and_avatar(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let s = srv.user("judy").await;
    let other = srv.user("ken").await;
    let me = srv
        .patch(
            "/api/users/me",
            &s.access,
            json!({"display_name": "Judy J."}),
        )
        .await;
    assert_eq!(me.expect(200)["display_name"], "Judy J.");
    srv.patch(
        "/api/users/me",
        &s.access,
        json!({"display_name": "x".repeat(65)}),
    )
    .await
    .expect_error(422, "validation_failed");
    srv.patch("/api/users/me", &s.access, json!({"role": "admin"}))
        .await
        .expect_error(422, "invalid_body");
    assert_eq!(
        srv.get("/api/users/me", &s.access).await.body["role"],
        "user"
    );

    // Avatar upload as multipart.
    let form = reqwest::multipart::Form::new()
        .text("display_name", "Judy")
        .part(
            "avatar",
            reqwest::multipart::Part::bytes(png())
                .file_name("me.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let r = srv
        .send(
            srv.req(Method::PATCH, "/api/users/me", Some(&s.access))
                .multipart(form),
        )
        .await;
    let url = r.expect(200)["avatar_url"].as_str().unwrap().to_string();
    assert_eq!(r.body["display_name"], "Judy");
    let img = srv
        .send(srv.req(Method::GET, &url, Some(&other.access)))
        .await;
    img.expect(200);
    assert_eq!(img.bytes, png());
    assert_eq!(img.headers["content-type"], "image/png");
    srv.send(srv.req(Method::GET, &url, None))
        .await
        .expect_error(401, "unauthenticated");

    // Not an image, whatever it claims.
    let form = reqwest::multipart::Form::new().part(
        "avatar",
        reqwest::multipart::Part::bytes(b"<svg onload=alert(1)>".to_vec())
            .file_name("x.png")
            .mime_str("image/png")
            .unwrap(),
    );
    srv.send(
        srv.req(Method::PATCH, "/api/users/me", Some(&s.access))
            .multipart(form),
    )
    .await
    .expect_error(415, "unsupported_image");
    // Too big.
    let mut big = png();
    big.resize(3 * 1024 * 1024, 0);
    let form = reqwest::multipart::Form::new().part(
        "avatar",
        reqwest::multipart::Part::bytes(big)
            .file_name("big.png")
            .mime_str("image/png")
            .unwrap(),
    );
    srv.send(
        srv.req(Method::PATCH, "/api/users/me", Some(&s.access))
            .multipart(form),
    )
    .await
    .expect_error(413, "payload_too_large");
    // Unknown field.
    let form = reqwest::multipart::Form::new().text("role", "admin");
    srv.send(
        srv.req(Method::PATCH, "/api/users/me", Some(&s.access))
            .multipart(form),
    )
    .await
    .expect_error(422, "invalid_body");
    // The failed uploads left the good avatar in place.
    let img = srv.send(srv.req(Method::GET, &url, Some(&s.access))).await;
    assert_eq!(img.bytes, png());

    // Removal.
    let r = srv
        .patch("/api/users/me", &s.access, json!({"remove_avatar": true}))
        .await;
    assert!(r.expect(200)["avatar_url"].is_null());
    let path = url.split('?').next().unwrap();
    srv.send(srv.req(Method::GET, path, Some(&s.access)))
        .await
        .expect_error(404, "not_found");
    srv.send(srv.req(Method::GET, "/api/users/not-a-user/avatar", Some(&s.access)))
        .await
        .expect_error(404, "not_found");
    srv.stop().await;
}

async fn data_and_sessions_survive_a_restart(backend: Backend) {
    let mut env = TestEnv::new(backend).await;
    // Let the server generate and keep its signing secret, as it does by default.
    env.jwt_secret = None;
    let srv = env.start().await;
    let s = srv.user("leo").await;
    let room = srv
        .create_room(
            &s,
            json!({"name": "Persistent", "privacy": "private", "password": "open sesame"}),
        )
        .await;
    let id = room["id"].as_str().unwrap().to_string();
    srv.stop().await;
    assert!(env.data_path().join("jwt_secret").exists());

    let srv = env.start().await;
    // The access token from before the restart still works; so does the refresh token.
    srv.get("/api/users/me", &s.access).await.expect(200);
    srv.post(
        "/api/auth/refresh",
        None,
        json!({"refresh_token": s.refresh}),
    )
    .await
    .expect(200);
    let again = srv.session("leo", PASSWORD).await;
    let r = srv.get(&format!("/api/rooms/{id}"), &again.access).await;
    assert_eq!(r.expect(200)["name"], "Persistent");
    assert_eq!(r.body["has_password"], true);
    srv.register("leo2").await;
    srv.stop().await;
}

async fn admin_cli_creates_an_admin(backend: Backend) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let env = TestEnv::new(backend).await;
    let admin = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_convo-server"))
            .args(args)
            .env("CONVO_DATA_DIR", env.data_path())
            .env("DATABASE_URL", &env.database_url)
            .env("CONVO_JWT_SECRET", SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run convo-server");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().expect("output")
    };
    let out = admin(
        &[
            "admin",
            "create",
            "--username",
            "root",
            "--email",
            "root@example.com",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created admin root"));
    // Rules apply to admins too.
    let out = admin(
        &[
            "admin",
            "create",
            "--username",
            "root2",
            "--email",
            "root2@example.com",
        ],
        "short\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
    let out = admin(
        &[
            "admin",
            "create",
            "--username",
            "root",
            "--email",
            "x@example.com",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(!out.status.success());

    let srv = env.start().await;
    let root = srv.session("root", PASSWORD).await;
    assert_eq!(root.user["role"], "admin");
    let user = srv.user("mallory").await;
    let room = srv
        .create_room(&user, json!({"name": "Mallory's", "privacy": "private"}))
        .await;
    let path = format!("/api/rooms/{}", room["id"].as_str().unwrap());
    // An admin sees, changes and deletes any room.
    srv.get(&path, &root.access).await.expect(200);
    srv.patch(&path, &root.access, json!({"locked": true}))
        .await
        .expect(200);
    srv.delete(&path, &root.access).await.expect(204);
    srv.get(&path, &user.access)
        .await
        .expect_error(404, "room_not_found");

    // set-role demotes; the change applies to live tokens at once.
    let out = admin(
        &["admin", "set-role", "--username", "root", "--role", "user"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        srv.get("/api/users/me", &root.access).await.body["role"],
        "user"
    );
    srv.stop().await;
}
