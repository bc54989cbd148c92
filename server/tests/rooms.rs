//! Rooms over HTTP against the real server, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{Backend, TestEnv};
use serde_json::{Value, json};

on_both_databases!(
    create_read_update_delete,
    private_rooms_are_invisible_to_others,
    join_rules,
    room_password_guesses_are_limited_per_person_and_per_room,
    listing_with_cursor_pagination,
    members_and_leaving,
);

fn id_of(room: &Value) -> String {
    room["id"].as_str().unwrap().to_string()
}

async fn create_read_update_delete(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("anna").await;
    let b = srv.user("ben").await;

    let r = srv
        .post(
            "/api/rooms",
            Some(&a.access),
            json!({"name": "  Weekly sync ", "privacy": "public"}),
        )
        .await;
    let room = r.expect(201).clone();
    let id = id_of(&room);
    // abc-defg-hij
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        vec![3, 4, 3],
        "{id}"
    );
    assert!(id.bytes().all(|c| c == b'-' || c.is_ascii_lowercase()));
    assert_eq!(r.headers["location"], format!("/api/rooms/{id}"));
    assert_eq!(room["name"], "Weekly sync");
    assert_eq!(room["host"]["username"], "anna");
    assert_eq!(room["my_role"], "host");
    assert_eq!(room["max_participants"], 100);
    assert_eq!(room["has_password"], false);
    assert_eq!(room["locked"], false);
    assert_eq!(
        room["join_url"],
        format!("https://meet.example.com/join/{id}")
    );
    assert!(room.get("password_hash").is_none());

    // Ids differ.
    let other = srv
        .create_room(&a, json!({"name": "Second", "privacy": "public"}))
        .await;
    assert_ne!(id_of(&other), id);

    let path = format!("/api/rooms/{id}");
    let seen = srv.get(&path, &b.access).await;
    assert_eq!(seen.expect(200)["name"], "Weekly sync");
    assert!(seen.body["my_role"].is_null());

    // Only the host changes and deletes; others get 403 on a public room.
    srv.patch(&path, &b.access, json!({"name": "Mine now"}))
        .await
        .expect_error(403, "forbidden");
    srv.delete(&path, &b.access)
        .await
        .expect_error(403, "forbidden");
    let up = srv
        .patch(
            &path,
            &a.access,
            json!({"name": "Renamed", "password": "s3cret", "locked": true, "max_participants": 5, "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    let up = up.expect(200);
    assert_eq!(up["name"], "Renamed");
    assert_eq!(up["has_password"], true);
    assert_eq!(up["locked"], true);
    assert_eq!(up["max_participants"], 5);
    assert_eq!(up["expires_at"], "2099-01-01T00:00:00Z");
    // Absent fields stay; null clears.
    let up = srv
        .patch(
            &path,
            &a.access,
            json!({"password": null, "expires_at": null}),
        )
        .await;
    let up = up.expect(200);
    assert_eq!(up["has_password"], false);
    assert!(up["expires_at"].is_null());
    assert_eq!(up["name"], "Renamed");
    assert_eq!(up["locked"], true);

    // Validation.
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"max_participants": 1}), "max_participants"),
        (json!({"max_participants": 100000}), "max_participants"),
        (json!({"password": "abc"}), "password"),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
    ] {
        let r = srv.patch(&path, &a.access, body.clone()).await;
        r.expect_error(422, "validation_failed");
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }
    srv.patch(&path, &a.access, json!({"privacy": "secret"}))
        .await
        .expect_error(422, "invalid_body");
    srv.post(
        "/api/rooms",
        Some(&a.access),
        json!({"name": "x", "privacy": "public", "host": "ben"}),
    )
    .await
    .expect_error(422, "invalid_body");
    srv.post("/api/rooms", Some(&a.access), json!({"privacy": "public"}))
        .await
        .expect_error(422, "invalid_body");
    srv.post(
        "/api/rooms",
        Some(&a.access),
        json!({"name": "x", "privacy": "public", "expires_at": "tomorrow"}),
    )
    .await
    .expect_error(422, "invalid_body");
    srv.post(
        "/api/rooms",
        None,
        json!({"name": "x", "privacy": "public"}),
    )
    .await
    .expect_error(401, "unauthenticated");

    srv.delete(&path, &a.access).await.expect(204);
    srv.get(&path, &a.access)
        .await
        .expect_error(404, "room_not_found");
    srv.delete(&path, &a.access)
        .await
        .expect_error(404, "room_not_found");
    srv.get("/api/rooms/zzz-zzzz-zzz", &a.access)
        .await
        .expect_error(404, "room_not_found");
    srv.get("/api/rooms/..%2F..%2Fetc", &a.access)
        .await
        .expect_error(404, "room_not_found");
    srv.stop().await;
}

async fn private_rooms_are_invisible_to_others(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("alice").await;
    let b = srv.user("bob").await;
    let plain = srv
        .create_room(&a, json!({"name": "A's private", "privacy": "private"}))
        .await;
    let guarded = srv
        .create_room(
            &a,
            json!({"name": "A's guarded", "privacy": "private", "password": "letmein"}),
        )
        .await;
    for room in [&plain, &guarded] {
        let path = format!("/api/rooms/{}", id_of(room));
        // Exactly the answer for an id that does not exist.
        let missing = srv.get("/api/rooms/qqq-qqqq-qqq", &b.access).await;
        let hidden = srv.get(&path, &b.access).await;
        hidden.expect_error(404, "room_not_found");
        assert_eq!(hidden.body, missing.body);
        srv.patch(&path, &b.access, json!({"name": "pwned"}))
            .await
            .expect_error(404, "room_not_found");
        srv.delete(&path, &b.access)
            .await
            .expect_error(404, "room_not_found");
        srv.post(&format!("{path}/join"), Some(&b.access), json!({}))
            .await
            .expect_error(404, "room_not_found");
        srv.post(
            &format!("{path}/join"),
            Some(&b.access),
            json!({"password": "guess"}),
        )
        .await
        .expect_error(404, "room_not_found");
        srv.post(&format!("{path}/leave"), Some(&b.access), json!({}))
            .await
            .expect_error(404, "room_not_found");
        srv.post(
            &format!("{path}/members"),
            Some(&b.access),
            json!({"username": "bob"}),
        )
        .await
        .expect_error(404, "room_not_found");
        // Nothing changed.
        let r = srv.get(&path, &a.access).await;
        assert_eq!(r.expect(200)["name"], room["name"]);
    }
    let list = srv.get("/api/rooms", &b.access).await;
    assert!(
        list.expect(200)["rooms"].as_array().unwrap().is_empty(),
        "{}",
        list.body
    );

    // With the password, Bob gets in, and the room becomes his to see.
    let path = format!("/api/rooms/{}", id_of(&guarded));
    let p = srv
        .post(
            &format!("{path}/join"),
            Some(&b.access),
            json!({"password": "letmein"}),
        )
        .await;
    assert_eq!(p.expect(200)["user"]["username"], "bob");
    assert_eq!(p.body["role"], "member");
    let r = srv.get(&path, &b.access).await;
    assert_eq!(r.expect(200)["my_role"], "member");
    assert_eq!(r.body["participant_count"], 1);
    // But as a member, not as a host.
    srv.patch(&path, &b.access, json!({"name": "pwned"}))
        .await
        .expect_error(403, "forbidden");
    srv.stop().await;
}

async fn join_rules(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let host = srv.user("hana").await;
    let u1 = srv.user("ugo").await;
    let u2 = srv.user("uma").await;
    let u3 = srv.user("uri").await;

    let room = srv
        .create_room(&host, json!({"name": "Guarded", "privacy": "public", "password": "pa55word", "max_participants": 3}))
        .await;
    let path = format!("/api/rooms/{}", id_of(&room));
    let join = format!("{path}/join");

    srv.post(&join, Some(&u1.access), json!({}))
        .await
        .expect_error(403, "room_password_required");
    srv.post(&join, Some(&u1.access), json!({"password": "wrong"}))
        .await
        .expect_error(403, "invalid_room_password");
    srv.post(
        &join,
        Some(&u1.access),
        json!({"password": "x".repeat(500)}),
    )
    .await
    .expect_error(403, "invalid_room_password");
    srv.post(&join, Some(&u1.access), json!({"password": 1234}))
        .await
        .expect_error(422, "invalid_body");
    srv.post(&join, None, json!({}))
        .await
        .expect_error(401, "unauthenticated");

    // The host needs no password; rejoining is idempotent.
    let h = srv
        .send(srv.req(reqwest::Method::POST, &join, Some(&host.access)))
        .await;
    assert_eq!(h.expect(200)["role"], "host");
    let h2 = srv.post(&join, Some(&host.access), json!({})).await;
    assert_eq!(h2.expect(200)["joined_at"], h.body["joined_at"]);
    srv.post(&join, Some(&u1.access), json!({"password": "pa55word"}))
        .await
        .expect(200);
    // Once a member, no password again.
    srv.post(&join, Some(&u1.access), json!({}))
        .await
        .expect(200);
    srv.post(&join, Some(&u2.access), json!({"password": "pa55word"}))
        .await
        .expect(200);

    // Capacity: 3 inside.
    srv.post(&join, Some(&u3.access), json!({"password": "pa55word"}))
        .await
        .expect_error(409, "room_full");
    let r = srv.get(&path, &host.access).await;
    let names: HashSet<String> = r.expect(200)["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user"]["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        HashSet::from(["hana".into(), "ugo".into(), "uma".into()])
    );
    assert_eq!(r.body["participant_count"], 3);

    // Someone leaves: a seat frees up.
    srv.post(&format!("{path}/leave"), Some(&u2.access), json!({}))
        .await
        .expect(204);
    // Lock: newcomers refused, the host still enters.
    srv.patch(&path, &host.access, json!({"locked": true}))
        .await
        .expect(200);
    srv.post(&join, Some(&u3.access), json!({"password": "pa55word"}))
        .await
        .expect_error(403, "room_locked");
    srv.post(&format!("{path}/leave"), Some(&host.access), json!({}))
        .await
        .expect(204);
    srv.post(&join, Some(&host.access), json!({}))
        .await
        .expect(200);
    srv.patch(&path, &host.access, json!({"locked": false}))
        .await
        .expect(200);
    srv.post(&join, Some(&u3.access), json!({"password": "pa55word"}))
        .await
        .expect(200);

    // Expiry.
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let short = srv
        .create_room(
            &host,
            json!({"name": "Brief", "privacy": "public", "expires_at": soon}),
        )
        .await;
    let short_join = format!("/api/rooms/{}/join", id_of(&short));
    // Wait on the clock the server compares with, not on a guess.
    let deadline =
        time::OffsetDateTime::parse(&soon, &time::format_description::well_known::Rfc3339).unwrap();
    while time::OffsetDateTime::now_utc() <= deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    srv.post(&short_join, Some(&u1.access), json!({}))
        .await
        .expect_error(410, "room_expired");
    srv.stop().await;
}

/// Room password guesses are counted before they are checked, per person (10 in the window,
/// however many are sent at once) and per room (50 from everyone: accounts are free to make).
async fn room_password_guesses_are_limited_per_person_and_per_room(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let host = srv.user("rhost").await;
    let room = srv
        .room_id(
            &host,
            json!({"name": "Vault", "privacy": "public", "password": "the right one"}),
        )
        .await;
    let join = format!("/api/rooms/{room}/join");
    let mut guessers = Vec::new();
    for i in 0..5 {
        guessers.push(srv.user(&format!("guesser{i}")).await);
    }
    // The first fires 15 guesses at once: ten are checked, five refused.
    let replies = futures_util::future::join_all((0..15).map(|_| {
        srv.post(
            &join,
            Some(&guessers[0].access),
            json!({"password": "guess"}),
        )
    }))
    .await;
    let wrong = replies.iter().filter(|r| r.status.as_u16() == 403).count();
    for r in &replies {
        if r.status.as_u16() == 403 {
            r.expect_error(403, "invalid_room_password");
        } else {
            r.expect_error(429, "too_many_attempts");
        }
    }
    assert_eq!(wrong, 10, "ten guesses per person");
    // Four more people guess ten times each: the room has taken 50 wrong passwords.
    for g in &guessers[1..] {
        for _ in 0..10 {
            srv.post(&join, Some(&g.access), json!({"password": "guess"}))
                .await
                .expect_error(403, "invalid_room_password");
        }
    }
    // A fresh account gets no guess at this room now; another room is not affected.
    let late = srv.user("lateguesser").await;
    srv.post(&join, Some(&late.access), json!({"password": "guess"}))
        .await
        .expect_error(429, "too_many_attempts");
    let other = srv
        .room_id(
            &host,
            json!({"name": "Other", "privacy": "public", "password": "other one"}),
        )
        .await;
    srv.post(
        &format!("/api/rooms/{other}/join"),
        Some(&late.access),
        json!({"password": "other one"}),
    )
    .await
    .expect(200);
    srv.stop().await;
}

async fn listing_with_cursor_pagination(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("amy").await;
    let b = srv.user("bea").await;
    let mut expected = HashSet::new();
    for i in 0..5 {
        expected.insert(id_of(
            &srv.create_room(
                &a,
                json!({"name": format!("A public {i}"), "privacy": "public"}),
            )
            .await,
        ));
    }
    expected.insert(id_of(
        &srv.create_room(&a, json!({"name": "A private", "privacy": "private"}))
            .await,
    ));
    let b_private = srv
        .create_room(&b, json!({"name": "B private", "privacy": "private"}))
        .await;
    let b_public = srv
        .create_room(&b, json!({"name": "B public", "privacy": "public"}))
        .await;
    expected.insert(id_of(&b_public));
    // A joined B's public room: still listed (it is public anyway); B's private room never is.
    srv.post(
        &format!("/api/rooms/{}/join", id_of(&b_public)),
        Some(&a.access),
        json!({}),
    )
    .await
    .expect(200);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/rooms?limit=3&cursor={c}"),
            None => "/api/rooms?limit=3".to_string(),
        };
        let page = srv.get(&path, &a.access).await;
        let body = page.expect(200);
        let rooms = body["rooms"].as_array().unwrap();
        assert!(rooms.len() <= 3);
        seen.extend(rooms.iter().map(id_of));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no room twice: {seen:?}");
    assert_eq!(unique, expected);
    assert!(!unique.contains(&id_of(&b_private)));

    // Newest first.
    let all = srv.get("/api/rooms?limit=100", &a.access).await;
    let times: Vec<time::OffsetDateTime> = all.expect(200)["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            time::OffsetDateTime::parse(
                r["created_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(times, sorted);

    for bad in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "cursor=zzz",
        "cursor=",
        "sort=name",
    ] {
        srv.get(&format!("/api/rooms?{bad}"), &a.access)
            .await
            .expect_error(400, "invalid_query");
    }
    srv.stop().await;
}

async fn members_and_leaving(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let host = srv.user("hal").await;
    let guest = srv.user("gus").await;
    let room = srv
        .create_room(&host, json!({"name": "Invite only", "privacy": "private"}))
        .await;
    let path = format!("/api/rooms/{}", id_of(&room));

    srv.post(
        &format!("{path}/members"),
        Some(&host.access),
        json!({"username": "nobody"}),
    )
    .await
    .expect_error(404, "not_found");
    let m = srv
        .post(
            &format!("{path}/members"),
            Some(&host.access),
            json!({"username": "GUS"}),
        )
        .await;
    assert_eq!(m.expect(201)["user"]["username"], "gus");
    assert_eq!(m.body["role"], "member");
    // The invited member sees it, lists it and joins without a password.
    srv.get(&path, &guest.access).await.expect(200);
    let list = srv.get("/api/rooms", &guest.access).await;
    assert_eq!(list.expect(200)["rooms"][0]["id"], room["id"]);
    srv.post(&format!("{path}/join"), Some(&guest.access), json!({}))
        .await
        .expect(200);
    // Members cannot invite.
    srv.post(
        &format!("{path}/members"),
        Some(&guest.access),
        json!({"username": "hal"}),
    )
    .await
    .expect_error(403, "forbidden");

    // Leave: out of the participant list, still a member.
    srv.post(&format!("{path}/leave"), Some(&guest.access), json!({}))
        .await
        .expect(204);
    srv.post(&format!("{path}/leave"), Some(&guest.access), json!({}))
        .await
        .expect(204);
    let r = srv.get(&path, &host.access).await;
    assert_eq!(r.expect(200)["participant_count"], 0);

    // Removing the member makes the room vanish for them; the host cannot be removed.
    let host_id = host.id().to_string();
    srv.delete(&format!("{path}/members/{host_id}"), &host.access)
        .await
        .expect_error(403, "forbidden");
    srv.delete(&format!("{path}/members/{}", guest.id()), &host.access)
        .await
        .expect(204);
    srv.get(&path, &guest.access)
        .await
        .expect_error(404, "room_not_found");
    srv.delete(&format!("{path}/members/{}", guest.id()), &host.access)
        .await
        .expect_error(404, "not_found");
    srv.stop().await;
}

/// Without a public URL, join links carry the address the server really listens on: a bind to
/// port 0 (what the desktop app's own server does) once gave `http://127.0.0.1:0/join/…`.
#[tokio::test]
async fn join_links_use_the_real_port_when_no_public_url_is_set() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let mut config = env.config();
    config.public_url_from_bind = true;
    let server = convo_server::Server::start(config)
        .await
        .expect("server starts");
    let port = server.addr.port();
    assert_ne!(port, 0);
    let srv = common::TestServer::new(server);
    let a = srv.user("anna").await;
    let room = srv
        .create_room(&a, json!({"name": "Links", "privacy": "public"}))
        .await;
    assert_eq!(
        room["join_url"],
        format!("http://127.0.0.1:{port}/join/{}", id_of(&room))
    );
}
