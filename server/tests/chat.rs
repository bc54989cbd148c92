//! Chat against the real server, on SQLite and on PostgreSQL: messages sent over signaling and
//! over REST reach everyone in the meeting and are kept; history pages back in order; only
//! the host and members read or write; bad texts, floods and bad queries get clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ws::Client;
use common::{Backend, TestEnv};
use convo_shared::limits::{CHAT_BURST, CHAT_MAX_CHARS};
use reqwest::Method;
use serde_json::json;

on_both_databases!(
    chat_reaches_the_meeting_and_is_kept,
    chat_refuses_what_it_should
);

async fn chat_reaches_the_meeting_and_is_kept(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b, c) = (
        srv.user("amy").await,
        srv.user("bos").await,
        srv.user("cyd").await,
    );
    let room = srv
        .room_id(&a, json!({"name": "Standup", "privacy": "public"}))
        .await;
    let (mut ca, mut cb) = (
        Client::connect(&srv, &a).await,
        Client::connect(&srv, &b).await,
    );
    ca.join(&room).await;
    cb.join(&room).await;
    ca.expect("participant_joined").await;

    // Over signaling: everyone in the meeting gets it, the sender too, trimmed.
    ca.send(json!({"v": 1, "type": "chat", "text": "  Hello 👋\n"}))
        .await;
    let to_a = ca.expect("chat_message").await;
    let to_b = cb.expect("chat_message").await;
    assert_eq!(to_a, to_b);
    let m = &to_a["message"];
    assert_eq!(m["text"], "Hello 👋");
    assert_eq!(m["room_id"], room.as_str());
    assert_eq!(m["user"]["username"], "amy");
    assert!(m["user"].get("email").is_none(), "no emails in chat: {m}");

    // Over REST, by a member: delivered live as well.
    let sent = srv
        .post(
            &format!("/api/rooms/{room}/messages"),
            Some(&b.access),
            json!({"text": "From REST"}),
        )
        .await;
    let sent = sent.expect(201).clone();
    assert_eq!(ca.expect("chat_message").await["message"], sent);
    assert_eq!(cb.expect("chat_message").await["message"], sent);

    // Kept, in order, a page at a time.
    for i in 0..3 {
        cb.send(json!({"v": 1, "type": "chat", "text": format!("n{i}")}))
            .await;
        cb.expect("chat_message").await;
        ca.expect("chat_message").await;
    }
    let all = srv
        .get(&format!("/api/rooms/{room}/messages"), &a.access)
        .await;
    let texts: Vec<&str> = all.expect(200)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Hello 👋", "From REST", "n0", "n1", "n2"]);
    assert!(all.body["before"].is_null());
    let page = srv
        .get(&format!("/api/rooms/{room}/messages?limit=2"), &b.access)
        .await;
    let page = page.expect(200).clone();
    assert_eq!(page["messages"][0]["text"], "n1");
    assert_eq!(page["messages"][1]["text"], "n2");
    let before = page["before"].as_str().expect("an older page");
    let older = srv
        .get(
            &format!("/api/rooms/{room}/messages?limit=2&before={before}"),
            &b.access,
        )
        .await;
    let older = older.expect(200).clone();
    assert_eq!(older["messages"][0]["text"], "From REST");
    assert_eq!(older["messages"][1]["text"], "n0");

    // Someone who never joined: not a member of this public room.
    srv.get(&format!("/api/rooms/{room}/messages"), &c.access)
        .await
        .expect_error(403, "forbidden");
    srv.post(
        &format!("/api/rooms/{room}/messages"),
        Some(&c.access),
        json!({"text": "let me in"}),
    )
    .await
    .expect_error(403, "forbidden");
    // A private room does not exist for them; nobody reads without signing in.
    let private = srv
        .room_id(&a, json!({"name": "Board", "privacy": "private"}))
        .await;
    srv.get(&format!("/api/rooms/{private}/messages"), &c.access)
        .await
        .expect_error(404, "room_not_found");
    let anon = srv
        .send(srv.req(Method::GET, &format!("/api/rooms/{room}/messages"), None))
        .await;
    anon.expect_error(401, "unauthenticated");
    // Deleting the room takes its chat with it.
    srv.delete(&format!("/api/rooms/{room}"), &a.access)
        .await
        .expect(204);
    srv.get(&format!("/api/rooms/{room}/messages"), &a.access)
        .await
        .expect_error(404, "room_not_found");
    srv.stop().await;
}

async fn chat_refuses_what_it_should(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("amy").await;
    let room = srv
        .room_id(&a, json!({"name": "Standup", "privacy": "public"}))
        .await;
    let mut ca = Client::connect(&srv, &a).await;
    // Not in a room yet.
    ca.send(json!({"v": 1, "type": "chat", "text": "hi"})).await;
    ca.expect_error("not_in_room").await;
    ca.join(&room).await;
    // Empty and too long: refused, nothing kept, the connection stays.
    for text in ["", "  \n ", &"x".repeat(CHAT_MAX_CHARS + 1)] {
        ca.send(json!({"v": 1, "type": "chat", "text": text})).await;
        ca.expect_error("validation_failed").await;
    }
    ca.send(json!({"v": 1, "type": "chat"})).await;
    ca.expect_error("invalid_message").await;
    let longest = "é".repeat(CHAT_MAX_CHARS);
    ca.send(json!({"v": 1, "type": "chat", "text": longest}))
        .await;
    assert_eq!(
        ca.expect("chat_message").await["message"]["text"],
        longest.as_str()
    );
    // A flood: the burst passes, the next is refused with a wait.
    for i in 1..CHAT_BURST {
        ca.send(json!({"v": 1, "type": "chat", "text": format!("m{i}")}))
            .await;
        ca.expect("chat_message").await;
    }
    ca.send(json!({"v": 1, "type": "chat", "text": "one too many"}))
        .await;
    ca.expect_error("too_many_attempts").await;
    srv.post(
        &format!("/api/rooms/{room}/messages"),
        Some(&a.access),
        json!({"text": "also too many"}),
    )
    .await
    .expect_error(429, "too_many_attempts");
    ca.expect_quiet().await;
    let kept = srv
        .get(&format!("/api/rooms/{room}/messages?limit=100"), &a.access)
        .await;
    assert_eq!(
        kept.expect(200)["messages"].as_array().unwrap().len(),
        CHAT_BURST as usize
    );

    // Bad bodies and queries.
    srv.post(
        &format!("/api/rooms/{room}/messages"),
        Some(&a.access),
        json!({"text": "hi", "html": "<b>"}),
    )
    .await
    .expect_error(422, "invalid_body");
    for q in ["limit=0", "limit=101", "before=nope", "colour=red"] {
        srv.get(&format!("/api/rooms/{room}/messages?{q}"), &a.access)
            .await
            .expect_error(400, "invalid_query");
    }
    srv.stop().await;
}
