//! A signaling WebSocket client for tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Session, TestServer};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    pub ws: Ws,
}

pub fn ws_url(srv: &TestServer) -> String {
    format!("ws://{}/api/ws", srv.addr())
}

impl Client {
    /// Connects with the token as a subprotocol and waits for `ready`.
    pub async fn connect(srv: &TestServer, s: &Session) -> Client {
        let mut req = ws_url(srv).into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("convo.v1, bearer.{}", s.access).parse().unwrap(),
        );
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        assert_eq!(resp.headers()["sec-websocket-protocol"], "convo.v1");
        let mut c = Client { ws };
        let ready = c.expect("ready").await;
        assert_eq!(ready["user_id"], s.user["id"]);
        c
    }

    pub async fn connect_plain(srv: &TestServer) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url(srv))
            .await
            .expect("connect");
        Client { ws }
    }

    pub async fn send(&mut self, msg: Value) {
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next message; fails the test after 10 s of silence.
    pub async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a message within 10 s")
                .expect("socket open")
                .expect("frame");
            match frame {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("json");
                    assert_eq!(v["v"], 1, "{v}");
                    return v;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn expect(&mut self, kind: &str) -> Value {
        let v = self.next().await;
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    pub async fn expect_error(&mut self, code: &str) {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    /// Proves nothing else is queued: a ping's pong is the very next message.
    pub async fn expect_quiet(&mut self) {
        self.send(json!({"v": 1, "type": "ping", "nonce": 42}))
            .await;
        let v = self.next().await;
        assert_eq!(v, json!({"v": 1, "type": "pong", "nonce": 42}));
    }

    /// The next message of `kind`, skipping the others before it (offers, tracks, presence).
    pub async fn skip_to(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// The server closes the socket (a close frame, or the end of the stream) within 10 s,
    /// with no message before.
    pub async fn expect_closed(&mut self) {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("the socket closes within 10 s")
            {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected the socket to close, got {other:?}"),
            }
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"v": 1, "type": "join", "room_id": room}))
            .await;
        self.expect("joined").await
    }
}
