//! Scheduled meetings against the real server, on SQLite and on PostgreSQL: the host
//! schedules, invitees become members and see it, outsiders do not; bad input is refused
//! clearly; cancelling takes it off everyone's list; meetings that are over drop off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestEnv};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

on_both_databases!(meetings_are_scheduled_listed_and_cancelled);

fn at(minutes_from_now: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::minutes(minutes_from_now))
        .format(&Rfc3339)
        .unwrap()
}

fn titles(list: &Value) -> Vec<String> {
    list["meetings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap().to_string())
        .collect()
}

async fn meetings_are_scheduled_listed_and_cancelled(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (host, ann, bob) = (
        srv.user("hana").await,
        srv.user("ann").await,
        srv.user("bob").await,
    );
    let room = srv
        .room_id(&host, json!({"name": "Board", "privacy": "private"}))
        .await;

    // The host schedules two meetings; Ann is invited to the later one.
    let later = srv
        .post(
            "/api/meetings",
            Some(&host.access),
            json!({"room_id": room, "title": "  Quarterly review ", "starts_at": at(120),
                   "duration_minutes": 60, "invitees": ["ann", "hana"]}),
        )
        .await;
    let later = later.expect(201).clone();
    assert_eq!(later["title"], "Quarterly review");
    assert_eq!(later["room_name"], "Board");
    assert_eq!(later["organizer"]["username"], "hana");
    let invited: Vec<&str> = later["invitees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(invited, ["ann"], "the organiser is not their own invitee");
    assert!(later["join_url"].as_str().unwrap().ends_with(&room));
    srv.post(
        "/api/meetings",
        Some(&host.access),
        json!({"room_id": room, "title": "Standup", "starts_at": at(10), "duration_minutes": 15}),
    )
    .await
    .expect(201);

    // Soonest first for the host; Ann sees hers and, as a member now, the private room.
    let mine = srv.get("/api/meetings", &host.access).await;
    assert_eq!(titles(mine.expect(200)), ["Standup", "Quarterly review"]);
    let anns = srv.get("/api/meetings", &ann.access).await;
    assert_eq!(titles(anns.expect(200)), ["Quarterly review"]);
    srv.get(&format!("/api/rooms/{room}"), &ann.access)
        .await
        .expect(200);
    let id = later["id"].as_str().unwrap();
    assert_eq!(
        srv.get(&format!("/api/meetings/{id}"), &ann.access)
            .await
            .expect(200)["title"],
        "Quarterly review"
    );
    // Bob is not invited: nothing listed, the meeting does not exist for him.
    let bobs = srv.get("/api/meetings", &bob.access).await;
    assert!(titles(bobs.expect(200)).is_empty());
    srv.get(&format!("/api/meetings/{id}"), &bob.access)
        .await
        .expect_error(404, "not_found");
    srv.delete(&format!("/api/meetings/{id}"), &bob.access)
        .await
        .expect_error(404, "not_found");

    // Bad input.
    let bad = |body: Value| {
        let (srv, token) = (&srv, host.access.clone());
        async move { srv.post("/api/meetings", Some(&token), body).await }
    };
    for (body, field) in [
        (
            json!({"room_id": room, "title": " ", "starts_at": at(10), "duration_minutes": 30}),
            "title",
        ),
        (
            json!({"room_id": room, "title": "x", "starts_at": at(10), "duration_minutes": 4}),
            "duration_minutes",
        ),
        (
            json!({"room_id": room, "title": "x", "starts_at": at(10), "duration_minutes": 721}),
            "duration_minutes",
        ),
        (
            json!({"room_id": room, "title": "x", "starts_at": at(-60), "duration_minutes": 30}),
            "starts_at",
        ),
        (
            json!({"room_id": room, "title": "x", "starts_at": at(60 * 24 * 400), "duration_minutes": 30}),
            "starts_at",
        ),
        (
            json!({"room_id": room, "title": "x", "starts_at": at(10), "duration_minutes": 30, "invitees": ["nobody-here"]}),
            "invitees",
        ),
    ] {
        let r = bad(body).await;
        r.expect_error(422, "validation_failed");
        assert_eq!(r.body["error"]["field"], field, "{}", r.body);
    }
    bad(json!({"room_id": room, "title": "x", "starts_at": "tomorrow", "duration_minutes": 30}))
        .await
        .expect_error(422, "invalid_body");
    // Only the room's host schedules in it; a room Bob cannot see does not exist.
    srv.post(
        "/api/meetings",
        Some(&ann.access),
        json!({"room_id": room, "title": "x", "starts_at": at(10), "duration_minutes": 30}),
    )
    .await
    .expect_error(403, "forbidden");
    srv.post(
        "/api/meetings",
        Some(&bob.access),
        json!({"room_id": room, "title": "x", "starts_at": at(10), "duration_minutes": 30}),
    )
    .await
    .expect_error(404, "room_not_found");

    // Ann (invited) cannot cancel; the host can, and it is gone for both.
    srv.delete(&format!("/api/meetings/{id}"), &ann.access)
        .await
        .expect_error(403, "forbidden");
    srv.delete(&format!("/api/meetings/{id}"), &host.access)
        .await
        .expect(204);
    let anns = srv.get("/api/meetings", &ann.access).await;
    assert!(titles(anns.expect(200)).is_empty());
    assert_eq!(
        titles(srv.get("/api/meetings", &host.access).await.expect(200)),
        ["Standup"]
    );

    // A meeting that started 4 minutes ago and lasts 5 is listed; one that is over is not.
    srv.post(
        "/api/meetings",
        Some(&host.access),
        json!({"room_id": room, "title": "Running", "starts_at": at(-4), "duration_minutes": 5}),
    )
    .await
    .expect(201);
    assert_eq!(
        titles(srv.get("/api/meetings", &host.access).await.expect(200)),
        ["Running", "Standup"]
    );
    srv.stop().await;
}
