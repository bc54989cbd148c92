//! Waiting rooms against the real server, on SQLite and on PostgreSQL: newcomers wait until a
//! host lets them in or turns them away; a host who arrives later hears of who waits; someone
//! who gives up is withdrawn; only hosts answer; members go straight in; REST joins are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ws::Client;
use common::{Backend, TestEnv};
use serde_json::json;

on_both_databases!(newcomers_wait_for_the_host);

async fn newcomers_wait_for_the_host(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (host, ann, ben, cat) = (
        srv.user("hank").await,
        srv.user("ann").await,
        srv.user("ben").await,
        srv.user("cat").await,
    );
    let room = srv
        .create_room(
            &host,
            json!({"name": "Clinic", "privacy": "public", "waiting_room": true}),
        )
        .await;
    assert_eq!(room["waiting_room"], true);
    let room = room["id"].as_str().unwrap().to_string();

    // Ann knocks before the host is there: she waits.
    let mut ca = Client::connect(&srv, &ann).await;
    ca.send(json!({"v": 1, "type": "join", "room_id": room}))
        .await;
    assert_eq!(ca.expect("waiting").await["room_id"], room.as_str());
    // Joining again while waiting is refused; the REST join is refused outright.
    ca.send(json!({"v": 1, "type": "join", "room_id": room}))
        .await;
    ca.expect_error("already_waiting").await;
    srv.post(
        &format!("/api/rooms/{room}/join"),
        Some(&ben.access),
        json!({}),
    )
    .await
    .expect_error(403, "waiting_room");

    // The host arrives and hears of Ann.
    let mut ch = Client::connect(&srv, &host).await;
    ch.join(&room).await;
    let knock = ch.expect("knocking").await;
    assert_eq!(knock["user"]["username"], "ann");
    let ann_request = knock["request_id"].as_str().unwrap().to_string();

    // Ben knocks while the host is there.
    let mut cb = Client::connect(&srv, &ben).await;
    cb.send(json!({"v": 1, "type": "join", "room_id": room}))
        .await;
    cb.expect("waiting").await;
    let knock = ch.expect("knocking").await;
    assert_eq!(knock["user"]["username"], "ben");
    let ben_request = knock["request_id"].as_str().unwrap().to_string();

    // Ann is let in: admitted, then joined; the host sees the answer and Ann arrive.
    ch.send(json!({"v": 1, "type": "admit", "request_id": ann_request}))
        .await;
    assert_eq!(ca.expect("admitted").await["room_id"], room.as_str());
    let joined = ca.expect("joined").await;
    assert_eq!(joined["participants"].as_array().unwrap().len(), 1);
    let resolved = ch.expect("knock_resolved").await;
    assert_eq!(resolved["request_id"], ann_request.as_str());
    assert_eq!(resolved["admitted"], true);
    assert_eq!(
        ch.expect("participant_joined").await["participant"]["user"]["username"],
        "ann"
    );
    // Only hosts answer; an answered request cannot be answered again.
    ca.send(json!({"v": 1, "type": "admit", "request_id": ben_request}))
        .await;
    ca.expect_error("forbidden").await;
    ch.send(json!({"v": 1, "type": "deny", "request_id": ann_request}))
        .await;
    ch.expect_error("no_such_request").await;

    // Ben is turned away; the connection stays and can go elsewhere.
    ch.send(json!({"v": 1, "type": "deny", "request_id": ben_request}))
        .await;
    cb.expect_error("admission_denied").await;
    assert_eq!(ch.expect("knock_resolved").await["admitted"], false);
    cb.expect_quiet().await;

    // Cat knocks and gives up: the host is told.
    let mut cc = Client::connect(&srv, &cat).await;
    cc.send(json!({"v": 1, "type": "join", "room_id": room}))
        .await;
    cc.expect("waiting").await;
    let cat_request = ch.expect("knocking").await["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(cc);
    let gone = ch.expect("knock_resolved").await;
    assert_eq!(gone["request_id"], cat_request.as_str());
    assert_eq!(gone["admitted"], false);

    // Ann is a member now: next time she goes straight in.
    ca.send(json!({"v": 1, "type": "leave"})).await;
    ca.expect("left").await;
    ch.expect("participant_left").await;
    ca.join(&room).await;
    ch.expect("participant_joined").await;

    // The host turns the waiting room off: newcomers go straight in.
    srv.patch(
        &format!("/api/rooms/{room}"),
        &host.access,
        json!({"waiting_room": false}),
    )
    .await
    .expect(200);
    let mut cb = Client::connect(&srv, &ben).await;
    cb.join(&room).await;
    srv.stop().await;
}
