//! The signaling WebSocket client: typed messages in and out.

use convo_shared::signal::{
    BEARER_SUBPROTOCOL_PREFIX, ClientMessage, Envelope, SUBPROTOCOL, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::ClientError;

/// A connected, authenticated signaling socket; [`Signaling::redial`] replaces the socket and
/// keeps what was handed out by [`Signaling::sender`].
#[derive(Debug)]
pub struct Signaling {
    pub user_id: String,
    /// Messages to send, whatever the socket (forwarded to the current one; dropped while
    /// there is none).
    tx: mpsc::UnboundedSender<ClientMessage>,
    current: Arc<Mutex<Option<mpsc::UnboundedSender<ClientMessage>>>>,
    rx: mpsc::UnboundedReceiver<ServerMessage>,
}

impl Signaling {
    /// Connects to `<base>/api/ws` with the access token as a subprotocol.
    pub async fn connect(base: &str, token: &str) -> Result<Signaling, ClientError> {
        let (tx, mut queued) = mpsc::unbounded_channel::<ClientMessage>();
        let current: Arc<Mutex<Option<mpsc::UnboundedSender<ClientMessage>>>> = Arc::default();
        let to = current.clone();
        tokio::spawn(async move {
            while let Some(msg) = queued.recv().await {
                let socket = to.lock().unwrap_or_else(PoisonError::into_inner).clone();
                if let Some(socket) = socket {
                    let _ = socket.send(msg);
                }
            }
        });
        let (_, rx) = mpsc::unbounded_channel();
        let mut sig = Signaling {
            user_id: String::new(),
            tx,
            current,
            rx,
        };
        sig.redial(base, token).await?;
        Ok(sig)
    }

    /// A new socket in place of the current one (which is closed).
    pub async fn redial(&mut self, base: &str, token: &str) -> Result<(), ClientError> {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let url = format!(
            "{}/api/ws",
            base.replacen("http://", "ws://", 1)
                .replacen("https://", "wss://", 1)
        );
        let mut req = url
            .into_client_request()
            .map_err(|e| ClientError::Signal(e.to_string()))?;
        let protocols = format!("{SUBPROTOCOL}, {BEARER_SUBPROTOCOL_PREFIX}{token}");
        req.headers_mut().insert(
            "sec-websocket-protocol",
            protocols
                .parse()
                .map_err(|_| ClientError::Signal("the token is not a valid header value".into()))?,
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| ClientError::Signal(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<ServerMessage>();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let text = serde_json::to_string(&Envelope::new(msg)).unwrap_or_default();
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        tokio::spawn(async move {
            loop {
                let frame = match stream.next().await {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "the signaling socket failed");
                        break;
                    }
                    None => {
                        tracing::debug!("the server closed the signaling socket");
                        break;
                    }
                };
                let Message::Text(text) = frame else { continue };
                match serde_json::from_str::<Envelope<ServerMessage>>(text.as_str()) {
                    Ok(env) => {
                        if in_tx.send(env.msg).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable signaling message"),
                }
            }
        });
        let user_id = match in_rx.recv().await {
            Some(ServerMessage::Ready { user_id }) => user_id,
            Some(other) => {
                return Err(ClientError::Signal(format!(
                    "expected ready, got {other:?}"
                )));
            }
            None => return Err(ClientError::Signal("the server closed the socket".into())),
        };
        self.user_id = user_id;
        self.rx = in_rx;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(out_tx);
        Ok(())
    }

    pub fn send(&self, msg: ClientMessage) {
        let _ = self.tx.send(msg);
    }

    /// A sender that can be moved into callbacks.
    pub fn sender(&self) -> mpsc::UnboundedSender<ClientMessage> {
        self.tx.clone()
    }

    /// The next message; `None` when the socket closed.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        self.rx.recv().await
    }
}
