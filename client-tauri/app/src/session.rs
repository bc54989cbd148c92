//! The signed-in session: tokens in memory, the refresh token in the OS keyring (Secret
//! Service on Linux, Keychain on macOS, Credential Manager on Windows) — never in a file or in
//! the webview's storage — so that a restart signs in again without a password.

use std::time::{Duration, Instant};

use convo_client::api::Api;
use convo_shared::auth::TokenResponse;
use convo_shared::users::User;
use tokio::sync::Mutex;

use crate::{UiError, UiResult};

const KEYRING_SERVICE: &str = "org.convoconnect.desktop";

#[derive(Debug)]
struct Tokens {
    access: String,
    refresh: String,
    expires_at: Instant,
    user: User,
}

#[derive(Debug)]
struct Inner {
    server: String,
    tokens: Option<Tokens>,
}

#[derive(Debug)]
pub struct Session(Mutex<Inner>);

/// Runs a keyring call off the async runtime (the backends block, some on D-Bus).
async fn keyring<T: Send + 'static>(
    server: &str,
    f: impl FnOnce(&keyring::Entry) -> keyring::Result<T> + Send + 'static,
) -> keyring::Result<T> {
    let server = server.to_string();
    tokio::task::spawn_blocking(move || {
        let entry = keyring::Entry::new(KEYRING_SERVICE, &server)?;
        f(&entry)
    })
    .await
    .unwrap_or_else(|e| Err(keyring::Error::PlatformFailure(Box::new(e))))
}

/// Whether the OS keyring can be used (else the session lasts until the app quits).
pub async fn keyring_available() -> bool {
    matches!(
        keyring("keyring-probe", |e| e.get_password()).await,
        Ok(_) | Err(keyring::Error::NoEntry)
    )
}

fn signed_out() -> UiError {
    UiError::new("signed_out", "You are signed out. Please sign in again.")
}

impl Session {
    pub fn new(server: String) -> Self {
        Session(Mutex::new(Inner {
            server,
            tokens: None,
        }))
    }

    pub async fn server(&self) -> String {
        self.0.lock().await.server.clone()
    }

    pub async fn set_server(&self, server: String) {
        let mut inner = self.0.lock().await;
        if inner.server != server {
            inner.server = server;
            inner.tokens = None;
        }
    }

    async fn keep(&self, inner: &mut Inner, t: TokenResponse) -> User {
        if let Err(e) = {
            let refresh = t.refresh_token.clone();
            keyring(&inner.server, move |e| e.set_password(&refresh)).await
        } {
            tracing::warn!(error = %e, "the session is not remembered: no keyring");
        }
        let user = t.user.clone();
        inner.tokens = Some(Tokens {
            access: t.access_token,
            refresh: t.refresh_token,
            expires_at: Instant::now() + Duration::from_secs(t.expires_in),
            user: t.user,
        });
        user
    }

    pub async fn sign_in(&self, login: &str, password: &str) -> UiResult<User> {
        let mut inner = self.0.lock().await;
        let api = Api::new(&inner.server);
        let t = api.login(login, password).await?;
        Ok(self.keep(&mut inner, t).await)
    }

    /// The user, signed in again from the keyring if needed; `None` when there is no usable
    /// session (nothing stored, or the server refused it: then it is forgotten).
    pub async fn restore(&self) -> UiResult<Option<User>> {
        let mut inner = self.0.lock().await;
        if let Some(t) = &inner.tokens {
            return Ok(Some(t.user.clone()));
        }
        let Ok(refresh) = keyring(&inner.server, |e| e.get_password()).await else {
            return Ok(None);
        };
        let api = Api::new(&inner.server);
        match api.refresh(&refresh).await {
            Ok(t) => Ok(Some(self.keep(&mut inner, t).await)),
            Err(convo_client::ClientError::Api { .. }) => {
                let _ = keyring(&inner.server, |e| e.delete_credential()).await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn sign_out(&self) {
        let mut inner = self.0.lock().await;
        if let Some(t) = inner.tokens.take() {
            let _ = Api::new(&inner.server).logout(&t.refresh).await;
        }
        let _ = keyring(&inner.server, |e| e.delete_credential()).await;
    }

    /// The signed-in user's id, if someone is signed in.
    pub async fn user_id(&self) -> Option<String> {
        self.0
            .lock()
            .await
            .tokens
            .as_ref()
            .map(|t| t.user.id.clone())
    }

    /// A client and a fresh access token (refreshed a minute before it expires).
    pub async fn authed(&self) -> UiResult<(Api, String)> {
        let mut inner = self.0.lock().await;
        let api = Api::new(&inner.server);
        let Some(t) = &inner.tokens else {
            return Err(signed_out());
        };
        if t.expires_at > Instant::now() + Duration::from_secs(60) {
            return Ok((api, t.access.clone()));
        }
        let refresh = t.refresh.clone();
        match api.refresh(&refresh).await {
            Ok(t) => {
                self.keep(&mut inner, t).await;
                let access = inner
                    .tokens
                    .as_ref()
                    .map(|t| t.access.clone())
                    .ok_or_else(signed_out)?;
                Ok((api, access))
            }
            Err(convo_client::ClientError::Api { .. }) => {
                inner.tokens = None;
                Err(signed_out())
            }
            Err(e) => Err(e.into()),
        }
    }
}
