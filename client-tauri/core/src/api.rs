//! The companion server's REST API.

use convo_shared::ErrorBody;
use convo_shared::auth::{
    ForgotPasswordRequest, LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest,
    TokenResponse,
};
use convo_shared::rooms::{CreateRoomRequest, Room, RoomList};
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
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(req, token).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> Result<T, ClientError> {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req, Some(token)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        mut req: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            // Bodies of 202/204 carry nothing the caller needs.
            return serde_json::from_value(serde_json::Value::Null)
                .or_else(|_| serde_json::from_str("{}"))
                .map_err(|e| ClientError::Signal(e.to_string()));
        }
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

    /// Trades a refresh token for new tokens (the old refresh token is used up).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, ClientError> {
        self.post(
            "/api/auth/refresh",
            None,
            &RefreshRequest {
                refresh_token: refresh_token.into(),
            },
        )
        .await
    }

    pub async fn logout(&self, refresh_token: &str) -> Result<serde_json::Value, ClientError> {
        self.post(
            "/api/auth/logout",
            None,
            &LogoutRequest {
                refresh_token: Some(refresh_token.into()),
            },
        )
        .await
    }

    pub async fn forgot_password(&self, email: &str) -> Result<serde_json::Value, ClientError> {
        self.post(
            "/api/auth/password/forgot",
            None,
            &ForgotPasswordRequest {
                email: email.into(),
            },
        )
        .await
    }

    /// Rooms I host or joined, and open public rooms (first page).
    pub async fn rooms(&self, token: &str) -> Result<RoomList, ClientError> {
        self.get("/api/rooms", token).await
    }

    pub async fn room(&self, token: &str, id: &str) -> Result<Room, ClientError> {
        self.get(&format!("/api/rooms/{id}"), token).await
    }

    pub async fn create_room(
        &self,
        token: &str,
        req: &CreateRoomRequest,
    ) -> Result<Room, ClientError> {
        self.post("/api/rooms", Some(token), req).await
    }

    /// My meetings that are not over yet, soonest first.
    pub async fn upcoming_meetings(
        &self,
        token: &str,
    ) -> Result<convo_shared::schedule::ScheduledMeetingList, ClientError> {
        self.get("/api/meetings", token).await
    }

    /// Schedules a meeting in a room I host.
    pub async fn schedule_meeting(
        &self,
        token: &str,
        req: &convo_shared::schedule::ScheduleMeetingRequest,
    ) -> Result<convo_shared::schedule::ScheduledMeeting, ClientError> {
        self.post("/api/meetings", Some(token), req).await
    }

    /// The room's latest chat messages, oldest first (`room_id` is checked by the server).
    pub async fn chat_history(
        &self,
        token: &str,
        room_id: &str,
    ) -> Result<convo_shared::chat::ChatHistory, ClientError> {
        self.get(&format!("/api/rooms/{room_id}/messages?limit=100"), token)
            .await
    }

    /// Sends a chat message to the room (kept, and delivered to everyone in the meeting).
    pub async fn send_chat(
        &self,
        token: &str,
        room_id: &str,
        text: &str,
    ) -> Result<convo_shared::chat::ChatMessage, ClientError> {
        let req = convo_shared::chat::SendChatRequest {
            text: text.to_string(),
        };
        self.post(&format!("/api/rooms/{room_id}/messages"), Some(token), &req)
            .await
    }

    /// As the room's host: takes someone out of the room — out of the meeting (their call and
    /// every WHEP viewer they watch with) and off its members, so a waiting room or a
    /// password applies to them again.
    pub async fn remove_member(
        &self,
        token: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<(), ClientError> {
        let req = self.http.delete(format!(
            "{}/api/rooms/{room_id}/members/{user_id}",
            self.base
        ));
        self.send::<serde_json::Value>(req, Some(token))
            .await
            .map(|_| ())
    }
}
