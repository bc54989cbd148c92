//! WHIP (RFC 9725) publishing into a room and WHEP watching one, for any standard WebRTC
//! stack (browsers, OBS, GStreamer, aiortc). SDP offer in, `201 Created` with the SDP answer
//! and a `Location` out; `DELETE` on that location ends the session.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use convo_shared::ErrorCode;
use convo_shared::rooms::RoomRole;
use serde::Deserialize;
use tokio::sync::oneshot;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::sfu::ViewError;
use crate::signal::room::{Command, Joiner};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whip))
        .routes(routes!(whip_end))
        .routes(routes!(whep))
        .routes(routes!(whep_end))
}

fn require_sdp(headers: &HeaderMap, body: &str) -> ApiResult<()> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.to_ascii_lowercase().starts_with("application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "Send the SDP offer with `Content-Type: application/sdp`.",
        ));
    }
    if !body.trim_start().starts_with("v=0") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            "The body is not an SDP offer.",
        ));
    }
    Ok(())
}

fn invalid_sdp(e: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidBody,
        format!("The SDP offer could not be used: {e}"),
    )
}

fn created(location: String, sdp: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
        ],
        sdp,
    )
        .into_response()
}

/// Publish into a room with WHIP. The publisher appears as a participant (the caller) and
/// everyone receives its audio and video.
#[utoipa::path(post, path = "/api/rooms/{id}/whip", tag = "signaling",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session", content_type = "application/sdp", body = String),
        (status = 400, body = convo_shared::ErrorBody),
        (status = 401, body = convo_shared::ErrorBody, description = "`unauthenticated`, `token_expired`, `session_ended` (signed out meanwhile)"),
        (status = 404, body = convo_shared::ErrorBody),
        (status = 415, body = convo_shared::ErrorBody),
    ))]
async fn whip(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: String,
) -> ApiResult<Response> {
    require_sdp(&headers, &body)?;
    let participant = crate::rooms::admit(&state, &id, &me, None, false).await?;
    let (reply, rx) = oneshot::channel();
    state.rooms.send(
        &state,
        &participant.room_id,
        Command::WhipPublish {
            joiner: Joiner {
                conn: crate::signal::next_conn(),
                user: participant.user,
                role: participant.role,
                joined_at: participant.joined_at,
                audio_muted: false,
                video_muted: false,
                viewer: false,
                session_id: me.session_id.clone(),
            },
            sdp: body,
            reply,
        },
    );
    let (pid, answer) = rx
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(invalid_sdp)?;
    still_signed_in(&state, &participant.room_id, &me).await?;
    Ok(created(
        format!("/api/rooms/{}/whip/{pid}", participant.room_id),
        answer,
    ))
}

/// A session that ended while its WHIP or WHEP place was being made (after the token was
/// checked, before the room had the place, so the announcement missed it) takes it out.
async fn still_signed_in(state: &AppState, room_id: &str, me: &AuthUser) -> ApiResult<()> {
    if crate::auth::revoke::session_live(state, &me.user_id, &me.session_id).await? {
        return Ok(());
    }
    state.rooms.notify(
        room_id,
        Command::SessionsEnded(crate::auth::revoke::Revoked::Session(me.session_id.clone())),
    );
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::SessionEnded,
        "This session has ended: sign in again.",
    ))
}

/// End a WHIP session: the publisher leaves the room.
#[utoipa::path(delete, path = "/api/rooms/{id}/whip/{session}", tag = "signaling",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("session" = String, Path, description = "From `Location`")),
    responses((status = 200, description = "Ended"), (status = 404, body = convo_shared::ErrorBody)))]
async fn whip_end(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path((id, session)): axum::extract::Path<(String, String)>,
) -> ApiResult<StatusCode> {
    end(&state, &id, session, &me).await
}

/// Ends a session: its owner leaves, or a host or an admin removes it.
async fn end(state: &AppState, room_id: &str, id: String, me: &AuthUser) -> ApiResult<StatusCode> {
    let manager = me.is_admin()
        || crate::rooms::visible_role(state, room_id, me).await? == Some(RoomRole::Host);
    let (reply, rx) = oneshot::channel();
    state.rooms.notify(
        room_id,
        Command::EndResource {
            id,
            user_id: me.user_id.clone(),
            manager,
            reply,
        },
    );
    match rx.await {
        Ok(true) => Ok(StatusCode::OK),
        _ => Err(ApiError::not_found("No such session.")),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct WhepQuery {
    /// Watch this participant; without it, whoever is speaking.
    participant: Option<String>,
    /// The width the video is drawn at (device pixels), with `height`: the SFU then sends the
    /// simulcast layer that fills it, as it does for the app's tiles. Without them, the best
    /// layer the viewer's downlink carries.
    width: Option<u32>,
    /// The height the video is drawn at, with `width`.
    height: Option<u32>,
}

/// The size a WHEP viewer draws at: both of `width` and `height` or neither, each 1 to
/// [`crate::sfu::MAX_PIXELS_SIDE`].
fn view_size(q: &WhepQuery) -> Result<Option<crate::forward::ViewSize>, ApiError> {
    let side = 1..=crate::sfu::MAX_PIXELS_SIDE;
    match (q.width, q.height) {
        (None, None) => Ok(None),
        (Some(width), Some(height)) if side.contains(&width) && side.contains(&height) => {
            Ok(Some(crate::forward::ViewSize { width, height }))
        }
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "width",
            format!(
                "width and height are 1 to {} pixels.",
                crate::sfu::MAX_PIXELS_SIDE
            ),
        )),
        _ => Err(ApiError::invalid(
            "width",
            "width and height come together, or neither.",
        )),
    }
}

/// Watch a room with WHEP: the audio and camera of one participant, or of the active speaker
/// (switching as the speaker changes). Admitted exactly as joining is (the same checks: privacy,
/// password, waiting room, lock, expiry, capacity — a viewer takes a seat), and listed to
/// everyone in the meeting as a participant with `viewer: true`, whom a host can remove. A
/// newcomer to a room with a waiting room or a password joins once from the app (and is let
/// in, or gives the password) before watching.
#[utoipa::path(post, path = "/api/rooms/{id}/whep", tag = "signaling",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), WhepQuery),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (receive-only audio and video)"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session", content_type = "application/sdp", body = String),
        (status = 400, body = convo_shared::ErrorBody),
        (status = 401, body = convo_shared::ErrorBody, description = "`unauthenticated`, `token_expired`, `session_ended` (signed out meanwhile)"),
        (status = 403, body = convo_shared::ErrorBody, description = "`waiting_room`, `room_password_required`, `room_locked`"),
        (status = 404, body = convo_shared::ErrorBody, description = "`room_not_found` (also: a private room)"),
        (status = 409, body = convo_shared::ErrorBody, description = "`nothing_to_watch`: nobody publishes yet; `room_full`"),
        (status = 410, body = convo_shared::ErrorBody, description = "`room_expired`"),
        (status = 415, body = convo_shared::ErrorBody),
        (status = 422, body = convo_shared::ErrorBody, description = "`validation_failed`: `width` without `height` (or the other way round), or a side out of range"),
        (status = 429, body = convo_shared::ErrorBody, description = "`too_many_attempts` (room password guesses); `too_many_viewers`: 4 viewers of this room open already"),
    ))]
async fn whep(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<WhepQuery>,
    headers: HeaderMap,
    body: String,
) -> ApiResult<Response> {
    require_sdp(&headers, &body)?;
    let view = view_size(&q)?;
    // The same door as joining: whoever may not join may not watch.
    let participant = crate::rooms::admit(&state, &id, &me, None, false).await?;
    let (reply, rx) = oneshot::channel();
    state.rooms.send(
        &state,
        &participant.room_id,
        Command::WhepView {
            joiner: Joiner {
                conn: crate::signal::next_conn(),
                user: participant.user,
                role: participant.role,
                joined_at: participant.joined_at,
                audio_muted: true,
                video_muted: true,
                viewer: true,
                session_id: me.session_id.clone(),
            },
            pinned: q.participant,
            view,
            sdp: body,
            reply,
        },
    );
    let (viewer_id, answer) = rx
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| match e {
            ViewError::NothingToWatch(m) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::NothingToWatch, m)
            }
            ViewError::TooManyViewers(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyViewers, m)
            }
            ViewError::Refused(m) => invalid_sdp(m),
        })?;
    still_signed_in(&state, &participant.room_id, &me).await?;
    Ok(created(format!("/api/rooms/{id}/whep/{viewer_id}"), answer))
}

/// End a WHEP session.
#[utoipa::path(delete, path = "/api/rooms/{id}/whep/{session}", tag = "signaling",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("session" = String, Path, description = "From `Location`")),
    responses(
        (status = 200, description = "Ended (by its owner), or removed (by a host or an admin)"),
        (status = 401, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
    ))]
async fn whep_end(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path((id, session)): axum::extract::Path<(String, String)>,
) -> ApiResult<StatusCode> {
    end(&state, &id, session, &me).await
}
