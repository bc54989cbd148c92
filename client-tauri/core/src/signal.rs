//! The signaling WebSocket client: typed messages in and out.

use convo_shared::signal::{
    BEARER_SUBPROTOCOL_PREFIX, ClientMessage, Envelope, SUBPROTOCOL, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::ClientError;

/// A connected, authenticated signaling socket.
#[derive(Debug)]
pub struct Signaling {
    pub user_id: String,
    tx: mpsc::UnboundedSender<ClientMessage>,
    rx: mpsc::UnboundedReceiver<ServerMessage>,
}

impl Signaling {
    /// Connects to `<base>/api/ws` with the access token as a subprotocol.
    pub async fn connect(base: &str, token: &str) -> Result<Signaling, ClientError> {
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
            while let Some(Ok(frame)) = stream.next().await {
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
        Ok(Signaling {
            user_id,
            tx: out_tx,
            rx: in_rx,
        })
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
