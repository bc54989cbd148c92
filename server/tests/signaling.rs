//! The signaling WebSocket against the real server, on SQLite and on PostgreSQL: auth, join
//! rules, presence, mute, leave, reconnect within the grace period, malformed messages, and
//! the meeting logs it writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ws::{Client, ws_url};
use common::{Backend, Session, TestEnv, TestServer};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

on_both_databases!(
    authenticates_by_subprotocol_or_first_message,
    presence_mute_and_leave,
    reconnect_within_grace_shows_reconnecting_never_a_leave,
    join_follows_the_room_rules,
    malformed_messages_get_errors_and_the_connection_stays,
    meeting_logs_record_who_was_there,
    deleting_a_room_ends_its_meeting,
    whip_refuses_what_it_cannot_use,
    whep_asks_what_joining_asks,
    a_huge_frame_is_refused_from_its_header,
    a_client_that_stops_reading_is_disconnected,
);

async fn room(srv: &TestServer, host: &Session, body: Value) -> String {
    srv.room_id(host, body).await
}

async fn authenticates_by_subprotocol_or_first_message(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("ann").await;
    Client::connect(&srv, &a).await;

    // A bad token as subprotocol: refused before the upgrade.
    let mut req = ws_url(&srv).into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "convo.v1, bearer.nonsense".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }

    // Token as the first message. Before it, only ping works.
    let mut c = Client::connect_plain(&srv).await;
    c.expect_quiet().await;
    c.send(json!({"v": 1, "type": "join", "room_id": "abc-defg-hij"}))
        .await;
    c.expect_error("unauthenticated").await;
    c.send(json!({"v": 1, "type": "auth", "token": "nonsense"}))
        .await;
    c.expect_error("unauthenticated").await;
    c.send(json!({"v": 1, "type": "auth", "token": a.access}))
        .await;
    let ready = c.expect("ready").await;
    assert_eq!(ready["user_id"], a.user["id"]);
    c.send(json!({"v": 1, "type": "auth", "token": a.access}))
        .await;
    c.expect_error("already_authenticated").await;

    // A token in the URL is not a way in.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}?token={}", ws_url(&srv), a.access))
            .await
            .unwrap();
    ws.send(Message::Text(
        json!({"v": 1, "type": "join", "room_id": "abc-defg-hij"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut c = Client { ws };
    c.expect_error("unauthenticated").await;

    // Plain HTTP on the socket path.
    srv.send(srv.req(reqwest::Method::GET, "/api/ws", None))
        .await
        .expect_error(400, "invalid_body");
    srv.stop().await;
}

async fn presence_mute_and_leave(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b, c) = (
        srv.user("amy").await,
        srv.user("bos").await,
        srv.user("cyd").await,
    );
    let id = room(&srv, &a, json!({"name": "Standup", "privacy": "public"})).await;
    let (mut ca, mut cb, mut cc) = (
        Client::connect(&srv, &a).await,
        Client::connect(&srv, &b).await,
        Client::connect(&srv, &c).await,
    );

    let ja = ca.join(&id).await;
    assert_eq!(ja["room_id"], id.as_str());
    assert_eq!(ja["resumed"], false);
    assert!(ja["participants"].as_array().unwrap().is_empty());
    assert_eq!(
        ja["ice_servers"][0]["urls"][0],
        "stun:stun.example.com:3478"
    );
    assert_eq!(ja["grace_seconds"], 15);
    let pa = ja["participant_id"].as_str().unwrap().to_string();

    let jb = cb.join(&id).await;
    let others = jb["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["participant_id"], pa.as_str());
    assert_eq!(others[0]["user"]["username"], "amy");
    assert_eq!(others[0]["role"], "host");
    let pb = jb["participant_id"].as_str().unwrap().to_string();
    let seen = ca.expect("participant_joined").await;
    assert_eq!(seen["participant"]["participant_id"], pb.as_str());
    assert_eq!(seen["participant"]["user"]["username"], "bos");
    assert_eq!(seen["participant"]["role"], "member");

    cc.send(json!({"v": 1, "type": "join", "room_id": id, "audio_muted": true}))
        .await;
    let jc = cc.expect("joined").await;
    assert_eq!(jc["participants"].as_array().unwrap().len(), 2);
    let joined_c = ca.expect("participant_joined").await;
    assert_eq!(joined_c["participant"]["audio_muted"], true);
    cb.expect("participant_joined").await;

    // The REST view agrees.
    let r = srv.get(&format!("/api/rooms/{id}"), &a.access).await;
    assert_eq!(r.expect(200)["participant_count"], 3);

    // Mute reaches everyone, the sender included.
    cb.send(json!({"v": 1, "type": "mute", "kind": "video", "muted": true}))
        .await;
    for cl in [&mut ca, &mut cb, &mut cc] {
        let m = cl.expect("mute_changed").await;
        assert_eq!(m["participant_id"], pb.as_str());
        assert_eq!(m["kind"], "video");
        assert_eq!(m["muted"], true);
    }

    // Leave: others see it at once; the leaver is told; the socket can join again.
    cb.send(json!({"v": 1, "type": "leave"})).await;
    let left = cb.expect("left").await;
    assert_eq!(left["reason"], "left");
    for cl in [&mut ca, &mut cc] {
        let l = cl.expect("participant_left").await;
        assert_eq!(l["participant_id"], pb.as_str());
        assert_eq!(l["reason"], "left");
    }
    let r = srv.get(&format!("/api/rooms/{id}"), &a.access).await;
    assert_eq!(r.expect(200)["participant_count"], 2);
    cb.send(json!({"v": 1, "type": "mute", "kind": "audio", "muted": true}))
        .await;
    cb.expect_error("not_in_room").await;
    let again = cb.join(&id).await;
    assert_eq!(again["participants"].as_array().unwrap().len(), 2);
    ca.expect("participant_joined").await;
    cc.expect("participant_joined").await;

    // Leaving over REST takes the live participant out too.
    srv.post(
        &format!("/api/rooms/{id}/leave"),
        Some(&c.access),
        json!({}),
    )
    .await
    .expect(204);
    assert_eq!(cc.expect("left").await["reason"], "left");
    assert_eq!(ca.expect("participant_left").await["reason"], "left");
    ca.expect_quiet().await;
    srv.stop().await;
}

/// `c` hears that someone's connection dropped and they are getting it back (`on`), or that
/// they are back.
async fn expect_reconnecting(c: &mut Client, pid: &str, on: bool) {
    let v = c.expect("participant_reconnecting").await;
    assert_eq!(v["participant_id"], pid, "{v}");
    assert_eq!(v["reconnecting"], on, "{v}");
}

async fn reconnect_within_grace_shows_reconnecting_never_a_leave(backend: Backend) {
    let mut env = TestEnv::new(backend).await;
    env.grace_secs = 2;
    let srv = env.start().await;
    let (a, b) = (srv.user("ada").await, srv.user("bob").await);
    let id = room(&srv, &a, json!({"name": "Flaky", "privacy": "public"})).await;
    let mut ca = Client::connect(&srv, &a).await;
    ca.join(&id).await;
    let mut cb = Client::connect(&srv, &b).await;
    let pb = cb.join(&id).await["participant_id"]
        .as_str()
        .unwrap()
        .to_string();
    ca.expect("participant_joined").await;

    // B's connection drops without a leave (A sees B reconnecting), and comes back on a new
    // socket (A sees B back, and no leave).
    drop(cb);
    expect_reconnecting(&mut ca, &pb, true).await;
    let mut cb = Client::connect(&srv, &b).await;
    let j = cb.join(&id).await;
    assert_eq!(j["resumed"], true);
    assert_eq!(j["participant_id"], pb.as_str());
    expect_reconnecting(&mut ca, &pb, false).await;
    // Nothing else. (That the old connection's grace timer does nothing later is proven
    // with a simulated clock in `signal::room`'s unit tests.)
    ca.expect_quiet().await;

    // A second device replaces the first: the first is told, A sees nothing.
    let mut cb2 = Client::connect(&srv, &b).await;
    assert_eq!(cb2.join(&id).await["participant_id"], pb.as_str());
    assert_eq!(cb.expect("left").await["reason"], "replaced");
    ca.expect_quiet().await;

    // Dropped for good: B is reconnecting, then after the grace period A sees B leave as
    // disconnected.
    drop(cb2);
    expect_reconnecting(&mut ca, &pb, true).await;
    let l = ca.expect("participant_left").await;
    assert_eq!(l["participant_id"], pb.as_str());
    assert_eq!(l["reason"], "disconnected");
    let r = srv.get(&format!("/api/rooms/{id}"), &a.access).await;
    assert_eq!(r.expect(200)["participant_count"], 1);
    srv.stop().await;
}

async fn join_follows_the_room_rules(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b, c) = (
        srv.user("ali").await,
        srv.user("bea").await,
        srv.user("cal").await,
    );
    let private = room(&srv, &a, json!({"name": "Private", "privacy": "private"})).await;
    let guarded = room(
        &srv,
        &a,
        json!({"name": "Guarded", "privacy": "public", "password": "pa55"}),
    )
    .await;
    let small = room(
        &srv,
        &a,
        json!({"name": "Small", "privacy": "public", "max_participants": 2}),
    )
    .await;
    let mut cb = Client::connect(&srv, &b).await;

    for (msg, code) in [
        (
            json!({"v": 1, "type": "join", "room_id": private}),
            "room_not_found",
        ),
        (
            json!({"v": 1, "type": "join", "room_id": private, "password": "guess"}),
            "room_not_found",
        ),
        (
            json!({"v": 1, "type": "join", "room_id": "zzz-zzzz-zzz"}),
            "room_not_found",
        ),
        (
            json!({"v": 1, "type": "join", "room_id": "../etc"}),
            "room_not_found",
        ),
        (
            json!({"v": 1, "type": "join", "room_id": guarded}),
            "room_password_required",
        ),
        (
            json!({"v": 1, "type": "join", "room_id": guarded, "password": "nope"}),
            "invalid_room_password",
        ),
    ] {
        cb.send(msg).await;
        cb.expect_error(code).await;
    }
    cb.send(json!({"v": 1, "type": "join", "room_id": guarded, "password": "pa55"}))
        .await;
    cb.expect("joined").await;
    cb.send(json!({"v": 1, "type": "join", "room_id": small}))
        .await;
    cb.expect_error("already_in_room").await;
    cb.send(json!({"v": 1, "type": "leave"})).await;
    cb.expect("left").await;

    // Capacity and lock.
    let mut ca = Client::connect(&srv, &a).await;
    ca.join(&small).await;
    cb.join(&small).await;
    ca.expect("participant_joined").await;
    let mut cc = Client::connect(&srv, &c).await;
    cc.send(json!({"v": 1, "type": "join", "room_id": small}))
        .await;
    cc.expect_error("room_full").await;
    srv.patch(
        &format!("/api/rooms/{small}"),
        &a.access,
        json!({"locked": true, "max_participants": 10}),
    )
    .await
    .expect(200);
    cc.send(json!({"v": 1, "type": "join", "room_id": small}))
        .await;
    cc.expect_error("room_locked").await;
    // Someone already inside comes back through the lock (the others saw them reconnecting).
    drop(cb);
    let pb = ca.expect("participant_reconnecting").await["participant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut cb = Client::connect(&srv, &b).await;
    assert_eq!(cb.join(&small).await["resumed"], true);
    expect_reconnecting(&mut ca, &pb, false).await;
    ca.expect_quiet().await;
    srv.stop().await;
}

async fn malformed_messages_get_errors_and_the_connection_stays(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("eve").await;
    let id = room(&srv, &a, json!({"name": "Sturdy", "privacy": "public"})).await;
    let mut c = Client::connect(&srv, &a).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("garbage".into()), "malformed_json"),
        (Message::Text("[1,2,3]".into()), "invalid_message"),
        (
            Message::Text(r#"{"type":"ping"}"#.into()),
            "invalid_message",
        ),
        (
            Message::Text(r#"{"v":2,"type":"ping"}"#.into()),
            "unsupported_version",
        ),
        (
            Message::Text(r#"{"v":1,"type":"teleport"}"#.into()),
            "invalid_message",
        ),
        (
            Message::Text(r#"{"v":1,"type":"join"}"#.into()),
            "invalid_message",
        ),
        (
            Message::Text(r#"{"v":1,"type":"join","room_id":5}"#.into()),
            "invalid_message",
        ),
        (
            Message::Text(r#"{"v":1,"type":"mute","kind":"smell","muted":true}"#.into()),
            "invalid_message",
        ),
        (
            Message::Text(r#"{"v":1,"type":"leave","extra":true}"#.into()),
            "invalid_message",
        ),
        (Message::Binary(vec![1, 2, 3].into()), "invalid_message"),
        (
            Message::Text(r#"{"v":1,"type":"mute","kind":"audio","muted":true}"#.into()),
            "not_in_room",
        ),
        (
            Message::Text(r#"{"v":1,"type":"offer","target":"publish","sdp":"v=0"}"#.into()),
            "not_in_room",
        ),
    ];
    for (msg, code) in cases {
        c.send_raw(msg).await;
        c.expect_error(code).await;
    }
    c.expect_quiet().await;
    // And it still joins.
    c.join(&id).await;
    c.send(json!({"v": 1, "type": "candidate", "target": "publish", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}})).await;
    c.expect_error("no_connection").await;
    c.send(json!({"v": 1, "type": "offer", "target": "publish", "sdp": "this is not sdp"}))
        .await;
    c.expect_error("invalid_sdp").await;
    c.send(json!({"v": 1, "type": "offer", "target": "subscribe", "sdp": "v=0"}))
        .await;
    c.expect_error("wrong_transport").await;
    c.send(json!({"v": 1, "type": "answer", "target": "subscribe", "sdp": "v=0"}))
        .await;
    c.expect_error("no_offer").await;
    c.send(json!({"v": 1, "type": "candidate", "candidate": {"candidate": "x"}}))
        .await;
    c.expect_error("invalid_message").await;
    // An oversized frame closes only that connection; the server goes on.
    let big = format!(
        r#"{{"v":1,"type":"offer","sdp":"{}"}}"#,
        "x".repeat(200 * 1024)
    );
    let _ = c.ws.send(Message::Text(big.into())).await;
    let mut other = Client::connect(&srv, &a).await;
    other.expect_quiet().await;
    srv.stop().await;
}

async fn meeting_logs_record_who_was_there(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b, outsider) = (
        srv.user("hal").await,
        srv.user("ivy").await,
        srv.user("out").await,
    );
    let id = room(&srv, &a, json!({"name": "Logged", "privacy": "public"})).await;
    let mut ca = Client::connect(&srv, &a).await;
    let mut cb = Client::connect(&srv, &b).await;

    // Two meetings: A and B, then A alone.
    ca.join(&id).await;
    cb.join(&id).await;
    ca.expect("participant_joined").await;
    cb.send(json!({"v": 1, "type": "leave"})).await;
    cb.expect("left").await;
    ca.expect("participant_left").await;
    let during = srv
        .get(&format!("/api/rooms/{id}/sessions"), &a.access)
        .await;
    let s = &during.expect(200)["sessions"][0];
    assert!(s["ended_at"].is_null(), "still going: {s}");
    ca.send(json!({"v": 1, "type": "leave"})).await;
    ca.expect("left").await;
    ca.join(&id).await;
    ca.send(json!({"v": 1, "type": "leave"})).await;
    ca.expect("left").await;

    let r = srv
        .get(&format!("/api/rooms/{id}/sessions"), &a.access)
        .await;
    let sessions = r.expect(200)["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let (latest, first) = (&sessions[0], &sessions[1]);
    for s in [latest, first] {
        assert_eq!(s["room_id"], id.as_str());
        assert!(s["ended_at"].is_string(), "ended: {s}");
        assert!(s["duration_seconds"].is_u64());
        for a in s["attendance"].as_array().unwrap() {
            assert!(a["left_at"].is_string(), "{a}");
        }
    }
    let names: Vec<&str> = first["attendance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["user"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["hal", "ivy"]);
    assert_eq!(latest["attendance"].as_array().unwrap().len(), 1);

    // Members read them (B joined once, so is a member); others may not.
    srv.get(&format!("/api/rooms/{id}/sessions?limit=1"), &b.access)
        .await
        .expect(200);
    srv.get(&format!("/api/rooms/{id}/sessions"), &outsider.access)
        .await
        .expect_error(403, "forbidden");
    srv.get(&format!("/api/rooms/{id}/sessions?limit=0"), &a.access)
        .await
        .expect_error(400, "invalid_query");
    let private = room(&srv, &a, json!({"name": "Hidden", "privacy": "private"})).await;
    srv.get(&format!("/api/rooms/{private}/sessions"), &outsider.access)
        .await
        .expect_error(404, "room_not_found");
    srv.stop().await;
}

async fn deleting_a_room_ends_its_meeting(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b) = (srv.user("host").await, srv.user("guest").await);
    let id = room(&srv, &a, json!({"name": "Doomed", "privacy": "public"})).await;
    let mut ca = Client::connect(&srv, &a).await;
    let mut cb = Client::connect(&srv, &b).await;
    ca.join(&id).await;
    cb.join(&id).await;
    ca.expect("participant_joined").await;

    // Removing a member takes them out live.
    srv.delete(&format!("/api/rooms/{id}/members/{}", b.id()), &a.access)
        .await
        .expect(204);
    assert_eq!(cb.expect("left").await["reason"], "removed");
    assert_eq!(ca.expect("participant_left").await["reason"], "removed");
    cb.join(&id).await;
    ca.expect("participant_joined").await;

    srv.delete(&format!("/api/rooms/{id}"), &a.access)
        .await
        .expect(204);
    assert_eq!(ca.expect("left").await["reason"], "removed");
    assert_eq!(cb.expect("left").await["reason"], "removed");
    cb.send(json!({"v": 1, "type": "join", "room_id": id}))
        .await;
    cb.expect_error("room_not_found").await;
    srv.stop().await;
}

async fn whip_refuses_what_it_cannot_use(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b) = (srv.user("whipa").await, srv.user("whipb").await);
    let open = room(&srv, &a, json!({"name": "Open", "privacy": "public"})).await;
    let private = room(&srv, &a, json!({"name": "Mine", "privacy": "private"})).await;
    let whip = |room: &str, token: Option<&str>, ct: &str, body: &str| {
        srv.req(
            reqwest::Method::POST,
            &format!("/api/rooms/{room}/whip"),
            token,
        )
        .header("content-type", ct)
        .body(body.to_string())
    };
    srv.send(whip(&open, None, "application/sdp", "v=0\r\n"))
        .await
        .expect_error(401, "unauthenticated");
    srv.send(whip(&open, Some(&b.access), "application/json", "{}"))
        .await
        .expect_error(415, "unsupported_media_type");
    srv.send(whip(&open, Some(&b.access), "application/sdp", "hello"))
        .await
        .expect_error(400, "invalid_body");
    srv.send(whip(
        &open,
        Some(&b.access),
        "application/sdp",
        "v=0\r\nnot really sdp\r\n",
    ))
    .await
    .expect_error(400, "invalid_body");
    srv.send(whip(
        &private,
        Some(&b.access),
        "application/sdp",
        "v=0\r\n",
    ))
    .await
    .expect_error(404, "room_not_found");
    srv.send(srv.req(
        reqwest::Method::DELETE,
        &format!("/api/rooms/{open}/whip/00000000-0000-0000-0000-000000000000"),
        Some(&b.access),
    ))
    .await
    .expect_error(404, "not_found");
    // WHEP: nothing to watch in an empty room is a clear answer; a hidden room stays hidden.
    let whep = |room: &str| {
        srv.req(
            reqwest::Method::POST,
            &format!("/api/rooms/{room}/whep"),
            Some(&b.access),
        )
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
    };
    srv.send(whep(&open))
        .await
        .expect_error(409, "nothing_to_watch");
    srv.send(whep(&private))
        .await
        .expect_error(404, "room_not_found");
    srv.send(
        srv.req(
            reqwest::Method::POST,
            &format!("/api/rooms/{open}/whep?participant=nobody"),
            Some(&b.access),
        )
        .header("content-type", "application/sdp")
        .body("v=0\r\n"),
    )
    .await
    .expect_error(409, "nothing_to_watch");
    // A refused offer leaves nobody behind in the room.
    let r = srv.get(&format!("/api/rooms/{open}"), &a.access).await;
    assert_eq!(r.expect(200)["participant_count"], 0);
    srv.stop().await;
}

/// WHEP goes through the same door as joining: a password, a lock and a full room stop a viewer
/// as they stop a joiner (the waiting room: `tests/media.rs`).
async fn whep_asks_what_joining_asks(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (host, b, c) = (
        srv.user("doorman").await,
        srv.user("visitor").await,
        srv.user("other").await,
    );
    let whep = |room: &str, s: &Session| {
        srv.req(
            reqwest::Method::POST,
            &format!("/api/rooms/{room}/whep"),
            Some(&s.access),
        )
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
    };
    let guarded = room(
        &srv,
        &host,
        json!({"name": "Guarded", "privacy": "public", "password": "open sesame"}),
    )
    .await;
    srv.send(whep(&guarded, &b))
        .await
        .expect_error(403, "room_password_required");
    // Having joined once with the password, the visitor is a member and gets to the media.
    srv.post(
        &format!("/api/rooms/{guarded}/join"),
        Some(&b.access),
        json!({"password": "open sesame"}),
    )
    .await
    .expect(200);
    srv.send(whep(&guarded, &b))
        .await
        .expect_error(409, "nothing_to_watch");

    let locked = room(&srv, &host, json!({"name": "Locked", "privacy": "public"})).await;
    srv.patch(
        &format!("/api/rooms/{locked}"),
        &host.access,
        json!({"locked": true}),
    )
    .await
    .expect(200);
    srv.send(whep(&locked, &b))
        .await
        .expect_error(403, "room_locked");

    let small = room(
        &srv,
        &host,
        json!({"name": "Small", "privacy": "public", "max_participants": 2}),
    )
    .await;
    for s in [&host, &c] {
        srv.post(
            &format!("/api/rooms/{small}/join"),
            Some(&s.access),
            json!({}),
        )
        .await
        .expect(200);
    }
    srv.send(whep(&small, &b))
        .await
        .expect_error(409, "room_full");
    let r = srv.get(&format!("/api/rooms/{small}"), &host.access).await;
    assert_eq!(r.expect(200)["participant_count"], 2);
    srv.stop().await;
}

/// A frame larger than a message may be is refused as soon as its header says so: the server
/// does not wait for (and hold) megabytes of payload first.
async fn a_huge_frame_is_refused_from_its_header(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let a = srv.user("bulky").await;
    let mut c = Client::connect(&srv, &a).await;
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = c.ws.get_mut() else {
        panic!("a plain TCP connection");
    };
    // Only the header of a masked text frame that says it carries 10 MiB.
    let mut header = vec![0x81u8, 0x80 | 127];
    header.extend_from_slice(&(10u64 * 1024 * 1024).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    // The server hangs up (a close frame, or the end of the stream) without the payload.
    let mut buf = [0u8; 1024];
    let hung_up = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if buf[..n].first() == Some(&0x88) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        hung_up.is_ok(),
        "the server waited for the payload of a 10 MiB frame"
    );
    // Others are not affected.
    Client::connect(&srv, &a).await.expect_quiet().await;
    srv.stop().await;
}

/// A client that stops reading its socket is cut off (its place waits for the grace period, as
/// for any dropped connection) instead of the server queueing every message of the room for
/// it: its outbox holds 1 024 messages and a write that blocks 10 s ends the connection.
/// Before, the queue grew without end.
async fn a_client_that_stops_reading_is_disconnected(backend: Backend) {
    use futures_util::StreamExt;
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b) = (srv.user("talks").await, srv.user("deaf").await);
    let id = room(&srv, &a, json!({"name": "Flood", "privacy": "public"})).await;
    let (mut ca, mut cb) = (
        Client::connect(&srv, &a).await,
        Client::connect(&srv, &b).await,
    );
    ca.join(&id).await;
    let pb = cb.join(&id).await["participant_id"]
        .as_str()
        .unwrap()
        .to_string();
    ca.expect("participant_joined").await;
    // From now on b reads nothing; a keeps reading everything it is sent, and sends at the
    // pace it is answered (a ping after every 50 mutes, the next batch after its pong), so
    // that only b falls behind.
    let (mut tx, mut rx) = ca.ws.split();
    let (pongs_tx, mut pongs) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let cut = tokio::spawn(async move {
        while let Some(Ok(frame)) = rx.next().await {
            if let Message::Text(t) = frame {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "pong" {
                    let _ = pongs_tx.send(v["nonce"].as_u64().unwrap_or(0));
                }
                if v["type"] == "participant_reconnecting"
                    && v["participant_id"] == pb.as_str()
                    && v["reconnecting"] == true
                {
                    return true;
                }
            }
        }
        false
    });
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut muted = false;
    let mut batch = 0u64;
    while !cut.is_finished() {
        assert!(
            std::time::Instant::now() < end,
            "the client that reads nothing was not cut off within 120 s"
        );
        for _ in 0..50 {
            muted = !muted;
            let msg = json!({"v": 1, "type": "mute", "kind": "audio", "muted": muted});
            tx.send(Message::Text(msg.to_string().into()))
                .await
                .unwrap();
        }
        batch += 1;
        let ping = json!({"v": 1, "type": "ping", "nonce": batch});
        tx.send(Message::Text(ping.to_string().into()))
            .await
            .unwrap();
        // Its answer (or the cut, which ends the reader and the channel).
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(30), pongs.recv()).await {
                Ok(Some(n)) if n == batch => break,
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => panic!("no pong within 30 s"),
            }
        }
    }
    assert!(cut.await.unwrap(), "a's socket closed instead");
    drop(cb);
}
