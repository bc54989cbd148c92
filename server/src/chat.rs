//! Chat: messages sent in a room, kept with it. Sent over signaling (`chat`) by whoever is in
//! the meeting, or with `POST /api/rooms/{id}/messages` by the room's host and members;
//! delivered live to everyone in the meeting (`chat_message`); read back a page at a time with
//! `GET /api/rooms/{id}/messages` by the host, members and admins.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use convo_shared::ErrorCode;
use convo_shared::chat::{ChatHistory, ChatMessage, SendChatRequest, clean_text};
use convo_shared::limits::CHAT_MAX_CHARS;
use serde::Deserialize;
use sqlx::Row;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{AuthUser, lock};
use crate::db::{from_us, now_us};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::users::summary_from_row;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history, send))
}

/// Checks, keeps and returns a message from `me` in `room_id`: the text trimmed and 1 to
/// [`CHAT_MAX_CHARS`] characters, at most `CHAT_BURST` messages per person per window. Who
/// may send is the caller's business (in the meeting, or a host or member).
pub async fn post(
    state: &AppState,
    room_id: &str,
    me: &AuthUser,
    text: &str,
) -> ApiResult<ChatMessage> {
    let Some(text) = clean_text(text) else {
        return Err(ApiError::invalid(
            "text",
            format!("A message is 1 to {CHAT_MAX_CHARS} characters."),
        ));
    };
    let key = format!("chat:{}", me.user_id);
    {
        let mut throttle = lock(&state.chat_throttle);
        if let Err(wait) = throttle.check(&key, Instant::now()) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyAttempts,
                format!(
                    "You are sending messages too fast; wait {} s.",
                    wait.max(Duration::from_secs(1)).as_secs()
                ),
            ));
        }
        // Every message counts against the window, not only failures.
        throttle.fail(&key, Instant::now());
    }
    let id = uuid::Uuid::new_v4().to_string();
    let sent = now_us();
    sqlx::query(
        "INSERT INTO chat_messages (id, room_id, user_id, body, sent_us) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(room_id)
    .bind(&me.user_id)
    .bind(text)
    .bind(sent)
    .execute(&state.db)
    .await?;
    Ok(ChatMessage {
        id,
        room_id: room_id.to_string(),
        user: crate::users::summary_of(state, &me.user_id).await?,
        text: text.to_string(),
        sent_at: from_us(sent),
    })
}

/// The host, members and admins; 404 for rooms the caller cannot see.
async fn check_member(state: &AppState, room_id: &str, me: &AuthUser) -> ApiResult<()> {
    crate::rooms::require_member(
        state,
        room_id,
        me,
        "Only the room's host and members (everyone who has joined it) can read and send its chat.",
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Messages before this one (a message id from an earlier page).
    before: Option<String>,
    /// Number of messages, 1 to 100 (default 20).
    limit: Option<u32>,
}

/// The room's chat, a page at a time: the newest `limit` messages (or those before `before`),
/// oldest first. Host, members and admins.
#[utoipa::path(get, path = "/api/rooms/{id}/messages", tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), HistoryQuery),
    responses(
        (status = 200, body = ChatHistory),
        (status = 400, body = convo_shared::ErrorBody),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
    ))]
async fn history(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<ChatHistory>> {
    let limit = crate::validate::page_limit(q.limit)?;
    check_member(&state, &id, &me).await?;
    // The cursor: the (time, id) of the message named by `before`, in this room.
    let cursor = match &q.before {
        None => None,
        Some(before) => {
            let row =
                sqlx::query("SELECT sent_us FROM chat_messages WHERE id = $1 AND room_id = $2")
                    .bind(before)
                    .bind(&id)
                    .fetch_optional(&state.db)
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::InvalidQuery,
                            "`before` is not a message of this room.",
                        )
                    })?;
            Some((row.try_get::<i64, _>("sent_us")?, before.clone()))
        }
    };
    let (t, cid) = cursor.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(
        "SELECT c.id, c.body, c.sent_us, c.user_id, u.username, u.display_name, u.avatar_type,
                u.avatar_version
         FROM chat_messages c JOIN users u ON u.id = c.user_id
         WHERE c.room_id = $1 AND (c.sent_us < $2 OR (c.sent_us = $2 AND c.id < $3))
         ORDER BY c.sent_us DESC, c.id DESC LIMIT $4",
    )
    .bind(&id)
    .bind(t)
    .bind(&cid)
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.db)
    .await?;
    let more = rows.len() > limit as usize;
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows.iter().take(limit as usize) {
        messages.push(ChatMessage {
            id: row.try_get("id")?,
            room_id: id.clone(),
            user: summary_from_row(row)?,
            text: row.try_get("body")?,
            sent_at: from_us(row.try_get("sent_us")?),
        });
    }
    messages.reverse();
    let before = more
        .then(|| messages.first().map(|m| m.id.clone()))
        .flatten();
    Ok(Json(ChatHistory { messages, before }))
}

/// Sends a message to the room's chat: kept, and delivered to everyone in the meeting now.
/// Host and members (anyone who has joined the room).
#[utoipa::path(post, path = "/api/rooms/{id}/messages", tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    request_body = SendChatRequest,
    responses(
        (status = 201, body = ChatMessage),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
        (status = 422, body = convo_shared::ErrorBody),
        (status = 429, body = convo_shared::ErrorBody),
    ))]
async fn send(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    Json(req): Json<SendChatRequest>,
) -> ApiResult<(StatusCode, Json<ChatMessage>)> {
    check_member(&state, &id, &me).await?;
    let message = post(&state, &id, &me, &req.text).await?;
    state.rooms.notify(
        &id,
        crate::signal::room::Command::Chat {
            message: message.clone(),
        },
    );
    Ok((StatusCode::CREATED, Json(message)))
}
