//! The companion server's REST API.

use convo_shared::ErrorBody;
use convo_shared::auth::{LoginRequest, RegisterRequest, TokenResponse};
use convo_shared::rooms::{CreateRoomRequest, Room};
use convo_shared::users::User;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ClientError;

/// A client of one server, e.g. `http://127.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> Result<T, ClientError> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.json().await?);
        }
        let err: Option<ErrorBody> = resp.json().await.ok();
        Err(match err {
            Some(e) => ClientError::Api {
                status: status.as_u16(),
                code: e.error.code,
                message: e.error.message,
            },
            None => ClientError::Api {
                status: status.as_u16(),
                code: "unknown".into(),
                message: status.to_string(),
            },
        })
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<User, ClientError> {
        self.post("/api/auth/register", None, req).await
    }

    pub async fn login(&self, login: &str, password: &str) -> Result<TokenResponse, ClientError> {
        self.post(
            "/api/auth/login",
            None,
            &LoginRequest {
                login: login.into(),
                password: password.into(),
            },
        )
        .await
    }

    pub async fn create_room(
        &self,
        token: &str,
        req: &CreateRoomRequest,
    ) -> Result<Room, ClientError> {
        self.post("/api/rooms", Some(token), req).await
    }
}
