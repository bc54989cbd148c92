//! Video to the ui over a pushed channel: a WebSocket on loopback (`ws://127.0.0.1:<port>`,
//! a port and a secret chosen at each launch, handed to the webview by the `video_channel`
//! command), one connection per tile, as Cap's `frame_ws.rs` does. The app pushes each new
//! frame of the tile's track as one binary message — a [`HEADER`]-byte header, then the I420
//! planes as decoded (the webview turns them to RGB on the GPU, WebGL) — no polling, no
//! RGBA, no JSON.
//!
//! Flow control is credit: the ui sends `"next"` for each frame it is ready to draw (at most
//! [`MAX_CREDIT`] outstanding) and nothing while its tile is hidden or out of view, so a slow
//! or hidden tile is sent nothing and skips to the newest frame instead of queueing.
//!
//! URL: `ws://127.0.0.1:<port>/<percent-encoded track id>?s=<secret>`. Anything else — no or a
//! wrong secret, more than [`MAX_CONNECTIONS`] at once — is refused at the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::frames::{FrameStore, percent_decode};

pub use crate::frames::HEADER;

/// Frames the ui may have asked for and not yet been sent.
pub const MAX_CREDIT: u32 = 2;
/// Tiles open at once (a 5×5 grid, the self view and a screen, with room to spare).
pub const MAX_CONNECTIONS: usize = 64;
/// The largest message the ui sends (`"next"`).
const MAX_INCOMING: usize = 64;

/// Where the ui connects.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoChannel {
    pub port: u16,
    pub secret: String,
}

/// The running channel; stops when dropped.
#[derive(Debug)]
pub struct FrameServer {
    pub channel: VideoChannel,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FrameServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh secret: 32 random bytes, hex.
fn secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Listens on a free loopback port.
pub async fn start(store: FrameStore) -> std::io::Result<FrameServer> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let channel = VideoChannel {
        port: listener.local_addr()?.port(),
        secret: secret(),
    };
    let open = Arc::new(AtomicUsize::new(0));
    let secret = channel.secret.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (store, secret, open) = (store.clone(), secret.clone(), open.clone());
            tokio::spawn(async move {
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                if let Err(e) = serve(stream, &store, &secret).await {
                    tracing::debug!(error = %e, "video channel closed");
                }
                open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    });
    Ok(FrameServer { channel, task })
}

/// The track a request names, if its secret is right.
fn track_of(uri: &str, secret: &str) -> Option<String> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let given = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("s="))
        .unwrap_or_default();
    if !same(given.as_bytes(), secret.as_bytes()) {
        return None;
    }
    let track = percent_decode(path.trim_start_matches('/'));
    (!track.is_empty()).then_some(track)
}

async fn serve(stream: TcpStream, store: &FrameStore, secret: &str) -> anyhow::Result<()> {
    let mut track = None;
    // The handshake's callback type is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        match track_of(&req.uri().to_string(), secret) {
            Some(t) => {
                track = Some(t);
                Ok(resp)
            }
            None => {
                let mut e = ErrorResponse::new(Some("not allowed".into()));
                *e.status_mut() = StatusCode::FORBIDDEN;
                Err(e)
            }
        }
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await?;
    let track = track.unwrap_or_default();
    let (mut tx, mut rx) = ws.split();
    let mut changes = store.changes();
    let mut credit = 0u32;
    let mut last = 0u64;
    loop {
        // Something to send: the newest frame, once the ui can take one.
        if credit > 0
            && let Some(f) = store.newer(&track, last)
        {
            last = f.seq;
            credit -= 1;
            tx.send(Message::Binary(f.message())).await?;
            continue;
        }
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) if t.as_str() == "next" => {
                    credit = (credit + 1).min(MAX_CREDIT);
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
            changed = changes.changed(), if credit > 0 => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convo_client::media::{DecodedVideo, VideoSink};
    use tokio_tungstenite::connect_async;

    fn frame(y: u8) -> ([u8; 16], [u8; 4]) {
        ([y; 16], [128; 4])
    }

    fn put(sink: &mut crate::frames::StoreSink, y: u8) {
        let (luma, chroma) = frame(y);
        sink.frame(&DecodedVideo {
            width: 4,
            height: 4,
            y: &luma,
            u: &chroma,
            v: &chroma,
            strides: (4, 2, 2),
        });
    }

    fn header(b: &[u8]) -> (u32, u32, u64) {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(b[12..20].try_into().unwrap_or_default());
        (u32_at(4), u32_at(8), seq)
    }

    #[tokio::test]
    async fn frames_are_pushed_as_i420_only_when_asked_for_and_newest_first() {
        let store = FrameStore::default();
        let server = start(store.clone()).await.expect("listens");
        let VideoChannel { port, secret } = server.channel.clone();
        let mut sink = store.sink("p:video");
        put(&mut sink, 16);
        let url = format!("ws://127.0.0.1:{port}/p%3Avideo?s={secret}");
        let (mut ws, _) = connect_async(url.as_str()).await.expect("connects");
        // Nothing until asked.
        ws.send(Message::text("next")).await.expect("sent");
        let m = ws.next().await.expect("a frame").expect("a frame");
        let Message::Binary(b) = m else {
            panic!("not binary: {m:?}")
        };
        assert_eq!(&b[..4], b"CVF1");
        let (w, h, seq) = header(&b);
        assert_eq!((w, h), (4, 4));
        assert_eq!(b.len(), HEADER + 16 + 4 + 4);
        assert!(b[HEADER..HEADER + 16].iter().all(|&y| y == 16));
        // Three new frames while the ui draws: asked again, it gets the newest only.
        for y in [50, 60, 70] {
            put(&mut sink, y);
        }
        ws.send(Message::text("next")).await.expect("sent");
        let Message::Binary(b) = ws.next().await.expect("a frame").expect("a frame") else {
            panic!("not binary")
        };
        let (_, _, seq2) = header(&b);
        assert!(seq2 > seq + 2, "{seq} then {seq2}");
        assert_eq!(b[HEADER], 70);
        // Asked with no new frame: it comes when the frame does.
        ws.send(Message::text("next")).await.expect("sent");
        put(&mut sink, 90);
        let Message::Binary(b) = ws.next().await.expect("a frame").expect("a frame") else {
            panic!("not binary")
        };
        assert_eq!(b[HEADER], 90);
        // Not asked: not sent (a frame would arrive before this pong otherwise).
        put(&mut sink, 100);
        ws.send(Message::Ping(b"x".to_vec().into()))
            .await
            .expect("sent");
        let m = ws.next().await.expect("an answer").expect("an answer");
        assert!(matches!(m, Message::Pong(_)), "{m:?}");
    }

    #[tokio::test]
    async fn a_wrong_or_missing_secret_is_refused() {
        let store = FrameStore::default();
        let server = start(store).await.expect("listens");
        let port = server.channel.port;
        for url in [
            format!("ws://127.0.0.1:{port}/p%3Avideo"),
            format!("ws://127.0.0.1:{port}/p%3Avideo?s=00"),
            format!("ws://127.0.0.1:{port}/?s={}", server.channel.secret),
        ] {
            assert!(connect_async(url.as_str()).await.is_err(), "{url}");
        }
    }

    #[test]
    fn the_track_and_secret_are_read_from_the_url() {
        assert_eq!(
            track_of("/p%3Avideo?s=ab", "ab").as_deref(),
            Some("p:video")
        );
        assert_eq!(
            track_of("/p%3Avideo?x=1&s=ab", "ab").as_deref(),
            Some("p:video")
        );
        assert_eq!(track_of("/p%3Avideo?s=ac", "ab"), None);
        assert_eq!(track_of("/p%3Avideo?s=a", "ab"), None);
        assert_eq!(track_of("/p%3Avideo", "ab"), None);
    }
}
