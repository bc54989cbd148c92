//! Rooms: create, read, list, change, delete, join and leave, and their membership.
//!
//! Visibility rule: a private room exists only for its members (and admins). Everyone else
//! gets the same 404 as for an id that was never issued, so ids cannot be probed.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use convo_shared::ErrorCode;
use convo_shared::limits::ROOM_DEFAULT_PARTICIPANTS;
use convo_shared::rooms::{
    AddMemberRequest, CreateRoomRequest, JoinRoomRequest, Member, Participant, Privacy, Room,
    RoomList, RoomRole, UpdateRoomRequest,
};
use convo_shared::users::UserSummary;
use rand::Rng;
use serde::Deserialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{AuthUser, lock, password};
use crate::db::{from_ms, now_ms, to_ms};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Query};
use crate::users::summary_from_row;
use crate::validate;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_room, list_rooms))
        .routes(routes!(get_room, update_room, delete_room))
        .routes(routes!(join_room))
        .routes(routes!(leave_room))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
}

/// Room ids look like `abc-defg-hij`: 10 letters from a CSPRNG, about 47 bits.
pub mod room_id {
    use super::*;

    const GROUPS: [usize; 3] = [3, 4, 3];

    pub fn generate() -> String {
        let mut rng = rand::rng();
        GROUPS
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("-")
    }

    pub fn is_valid(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() == GROUPS.len()
            && parts
                .iter()
                .zip(GROUPS)
                .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase()))
    }
}

/// A room as stored, with its host.
#[derive(Debug, Clone)]
struct RoomRow {
    id: String,
    name: String,
    host: UserSummary,
    privacy: Privacy,
    password_hash: Option<String>,
    locked: bool,
    waiting_room: bool,
    max_participants: i64,
    expires_at: Option<i64>,
    created_at: i64,
}

const ROOM_COLUMNS: &str = "r.id, r.name, r.host_id AS user_id, r.privacy, r.password_hash,
    r.locked, r.waiting_room, r.max_participants, r.expires_at, r.created_at,
    u.username, u.display_name, u.avatar_type, u.avatar_version";
const ROOM_FROM: &str = "FROM rooms r JOIN users u ON u.id = r.host_id";

impl RoomRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let privacy: String = row.try_get("privacy")?;
        let locked: i64 = row.try_get("locked")?;
        let waiting_room: i64 = row.try_get("waiting_room")?;
        Ok(RoomRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            host: summary_from_row(row)?,
            privacy: Privacy::parse(&privacy).unwrap_or(Privacy::Private),
            password_hash: row.try_get("password_hash")?,
            locked: locked != 0,
            waiting_room: waiting_room != 0,
            max_participants: row.try_get("max_participants")?,
            expires_at: row.try_get("expires_at")?,
            created_at: row.try_get("created_at")?,
        })
    }

    fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

async fn load_room(state: &AppState, id: &str) -> ApiResult<Option<RoomRow>> {
    if !room_id::is_valid(id) {
        return Ok(None);
    }
    let sql = format!("SELECT {ROOM_COLUMNS} {ROOM_FROM} WHERE r.id = $1");
    Ok(sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .as_ref()
        .map(RoomRow::from_row)
        .transpose()?)
}

async fn my_role(state: &AppState, room_id: &str, user_id: &str) -> ApiResult<Option<RoomRole>> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&state.db)
            .await?;
    Ok(role.as_deref().and_then(RoomRole::parse))
}

/// The room if the caller may see it, with the caller's role in it.
async fn visible_room(
    state: &AppState,
    id: &str,
    me: &AuthUser,
) -> ApiResult<(RoomRow, Option<RoomRole>)> {
    let room = load_room(state, id)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    let role = my_role(state, &room.id, &me.user_id).await?;
    if room.privacy == Privacy::Private && role.is_none() && !me.is_admin() {
        return Err(ApiError::room_not_found());
    }
    Ok((room, role))
}

/// The caller's role in a room they may see (404 when they may not).
pub(crate) async fn visible_role(
    state: &AppState,
    id: &str,
    me: &AuthUser,
) -> ApiResult<Option<RoomRole>> {
    Ok(visible_room(state, id, me).await?.1)
}

/// The room for a host-only change: 404 when invisible, 403 when visible but not the host's.
async fn managed_room(state: &AppState, id: &str, me: &AuthUser) -> ApiResult<RoomRow> {
    let (room, role) = visible_room(state, id, me).await?;
    if role != Some(RoomRole::Host) && !me.is_admin() {
        return Err(ApiError::forbidden(
            "Only the host of this room (or an admin) can do this.",
        ));
    }
    Ok(room)
}

/// The caller is the room's host, a member or an admin: 404 when they cannot see the room,
/// 403 (with `why`) when they only visit it.
pub(crate) async fn require_member(
    state: &AppState,
    id: &str,
    me: &AuthUser,
    why: &str,
) -> ApiResult<()> {
    let role = visible_role(state, id, me).await?;
    if role.is_none() && !me.is_admin() {
        return Err(ApiError::forbidden(why));
    }
    Ok(())
}

/// The id of a room the caller hosts (or may manage, as an admin): 404 when they cannot see
/// it, 403 when they do not host it.
pub(crate) async fn hosted_room(state: &AppState, id: &str, me: &AuthUser) -> ApiResult<String> {
    Ok(managed_room(state, id, me).await?.id)
}

async fn participants_of(
    state: &AppState,
    room_ids: &[&str],
) -> ApiResult<HashMap<String, Vec<Participant>>> {
    let mut out: HashMap<String, Vec<Participant>> = HashMap::new();
    if room_ids.is_empty() {
        return Ok(out);
    }
    let placeholders: Vec<String> = (1..=room_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT p.room_id, p.user_id, p.joined_at, u.username, u.display_name, u.avatar_type,
                u.avatar_version, r.host_id
         FROM room_participants p
         JOIN users u ON u.id = p.user_id
         JOIN rooms r ON r.id = p.room_id
         WHERE p.room_id IN ({}) ORDER BY p.joined_at, p.user_id",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for id in room_ids {
        q = q.bind(*id);
    }
    for row in q.fetch_all(&state.db).await? {
        let room_id: String = row.try_get("room_id")?;
        let host_id: String = row.try_get("host_id")?;
        let user = summary_from_row(&row)?;
        let joined_at: i64 = row.try_get("joined_at")?;
        out.entry(room_id.clone()).or_default().push(Participant {
            role: if user.id == host_id {
                RoomRole::Host
            } else {
                RoomRole::Member
            },
            room_id,
            user,
            joined_at: from_ms(joined_at),
        });
    }
    Ok(out)
}

fn to_api(
    state: &AppState,
    room: RoomRow,
    my_role: Option<RoomRole>,
    participants: Vec<Participant>,
) -> Room {
    Room {
        join_url: format!("{}/join/{}", state.config.public_url, room.id),
        id: room.id,
        name: room.name,
        privacy: room.privacy,
        host: room.host,
        has_password: room.password_hash.is_some(),
        locked: room.locked,
        waiting_room: room.waiting_room,
        max_participants: u32::try_from(room.max_participants).unwrap_or(u32::MAX),
        expires_at: room.expires_at.map(from_ms),
        created_at: from_ms(room.created_at),
        my_role,
        participant_count: u32::try_from(participants.len()).unwrap_or(u32::MAX),
        participants,
    }
}

async fn room_view(state: &AppState, room: RoomRow, role: Option<RoomRole>) -> ApiResult<Room> {
    let mut parts = participants_of(state, &[room.id.as_str()]).await?;
    let list = parts.remove(&room.id).unwrap_or_default();
    Ok(to_api(state, room, role, list))
}

fn check_expiry(t: time::OffsetDateTime) -> ApiResult<i64> {
    let ms = to_ms(t);
    if ms <= now_ms() {
        return Err(ApiError::invalid(
            "expires_at",
            "The expiry must be in the future.",
        ));
    }
    Ok(ms)
}

/// Create a room; the caller becomes its host.
#[utoipa::path(post, path = "/api/rooms", tag = "rooms",
    security(("bearer" = [])),
    request_body = CreateRoomRequest,
    responses(
        (status = 201, body = Room, headers(("Location" = String))),
        (status = 422, body = convo_shared::ErrorBody),
        (status = 503, body = convo_shared::ErrorBody, description = "`unavailable`: too many passwords being checked at once, with Retry-After"),
    ))]
async fn create_room(
    State(state): State<AppState>,
    me: AuthUser,
    Json(req): Json<CreateRoomRequest>,
) -> ApiResult<impl IntoResponse> {
    let name = validate::room_name(&req.name)?;
    let max =
        validate::max_participants(req.max_participants.unwrap_or(ROOM_DEFAULT_PARTICIPANTS))?;
    let expires_at = req.expires_at.map(check_expiry).transpose()?;
    let password_hash = match req.password {
        Some(p) => {
            validate::room_password(&p)?;
            Some(password::hash(p).await?)
        }
        None => None,
    };
    let now = now_ms();
    let mut id = room_id::generate();
    // A collision in 26^10 ids is rare; retry a few times rather than fail.
    for attempt in 0..5 {
        let mut tx = state.db.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO rooms (id, name, host_id, privacy, password_hash, locked,
                                max_participants, expires_at, created_at, updated_at, waiting_room)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $8, $9)",
        )
        .bind(&id)
        .bind(&name)
        .bind(&me.user_id)
        .bind(req.privacy.as_str())
        .bind(password_hash.clone())
        .bind(i64::from(max))
        .bind(expires_at)
        .bind(now)
        .bind(i64::from(req.waiting_room))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) && attempt < 4 => {
                id = room_id::generate();
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(&me.user_id)
        .bind(RoomRole::Host.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        break;
    }
    let room = load_room(&state, &id)
        .await?
        .ok_or_else(ApiError::internal)?;
    let view = room_view(&state, room, Some(RoomRole::Host)).await?;
    tracing::info!(room_id = %view.id, user_id = %me.user_id, "room created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/rooms/{}", view.id))],
        Json(view),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn encode_cursor(created_at: i64, id: &str) -> String {
    B64.encode(format!("{created_at}:{id}"))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(B64.decode(c).ok()?).ok()?;
    let (t, id) = raw.split_once(':')?;
    room_id::is_valid(id).then_some(())?;
    Some((t.parse().ok()?, id.to_string()))
}

/// Rooms I host or belong to, plus open public rooms; newest first.
#[utoipa::path(get, path = "/api/rooms", tag = "rooms",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = RoomList), (status = 400, body = convo_shared::ErrorBody)))]
async fn list_rooms(
    State(state): State<AppState>,
    me: AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<RoomList>> {
    let limit = validate::page_limit(q.limit)?;
    let (before_t, before_id) = match q.cursor.as_deref() {
        None => (i64::MAX, "~".to_string()),
        Some(c) => decode_cursor(c).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidQuery,
                "`cursor` is not one this server issued.",
            )
        })?,
    };
    let now = now_ms();
    // Each room with the caller's membership (null when only public).
    let sql = format!(
        "SELECT {ROOM_COLUMNS}, m.role AS my_role {ROOM_FROM}
         LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $1
         WHERE (m.role IS NOT NULL
                OR (r.privacy = 'public' AND (r.expires_at IS NULL OR r.expires_at > $2)))
           AND (r.created_at < $3 OR (r.created_at = $3 AND r.id < $4))
         ORDER BY r.created_at DESC, r.id DESC
         LIMIT $5"
    );
    let rows = sqlx::query(&sql)
        .bind(&me.user_id)
        .bind(now)
        .bind(before_t)
        .bind(&before_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&state.db)
        .await?;
    let mut rooms = Vec::with_capacity(rows.len());
    for row in &rows {
        let role: Option<String> = row.try_get("my_role")?;
        rooms.push((
            RoomRow::from_row(row)?,
            role.as_deref().and_then(RoomRole::parse),
        ));
    }
    let more = rooms.len() > limit as usize;
    rooms.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            rooms
                .last()
                .map(|(r, _)| encode_cursor(r.created_at, &r.id))
        })
        .flatten();
    let ids: Vec<&str> = rooms.iter().map(|(r, _)| r.id.as_str()).collect();
    let mut parts = participants_of(&state, &ids).await?;
    let rooms = rooms
        .into_iter()
        .map(|(r, role)| {
            let p = parts.remove(&r.id).unwrap_or_default();
            to_api(&state, r, role, p)
        })
        .collect();
    Ok(Json(RoomList { rooms, next_cursor }))
}

/// A room's details, settings and participants.
#[utoipa::path(get, path = "/api/rooms/{id}", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id, like abc-defg-hij")),
    responses((status = 200, body = Room), (status = 404, body = convo_shared::ErrorBody)))]
async fn get_room(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<Room>> {
    let (room, role) = visible_room(&state, &id, &me).await?;
    Ok(Json(room_view(&state, room, role).await?))
}

/// Change a room's settings (host or admin). `password: null` removes the password,
/// `expires_at: null` the expiry.
#[utoipa::path(patch, path = "/api/rooms/{id}", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    request_body = UpdateRoomRequest,
    responses(
        (status = 200, body = Room),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
        (status = 422, body = convo_shared::ErrorBody),
        (status = 503, body = convo_shared::ErrorBody, description = "`unavailable`: too many passwords being checked at once, with Retry-After"),
    ))]
async fn update_room(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    Json(req): Json<UpdateRoomRequest>,
) -> ApiResult<Json<Room>> {
    let room = managed_room(&state, &id, &me).await?;
    let name = req.name.as_deref().map(validate::room_name).transpose()?;
    let max = req
        .max_participants
        .map(validate::max_participants)
        .transpose()?;
    let expires_at = match req.expires_at {
        None => room.expires_at,
        Some(None) => None,
        Some(Some(t)) => Some(check_expiry(t)?),
    };
    let password_hash = match req.password {
        None => room.password_hash.clone(),
        Some(None) => None,
        Some(Some(p)) => {
            validate::room_password(&p)?;
            Some(password::hash(p).await?)
        }
    };
    sqlx::query(
        "UPDATE rooms SET name = $1, privacy = $2, password_hash = $3, locked = $4,
                          max_participants = $5, expires_at = $6, updated_at = $7,
                          waiting_room = $9
         WHERE id = $8",
    )
    .bind(name.unwrap_or_else(|| room.name.clone()))
    .bind(req.privacy.unwrap_or(room.privacy).as_str())
    .bind(password_hash)
    .bind(i64::from(req.locked.unwrap_or(room.locked)))
    .bind(max.map(i64::from).unwrap_or(room.max_participants))
    .bind(expires_at)
    .bind(now_ms())
    .bind(&room.id)
    .bind(i64::from(req.waiting_room.unwrap_or(room.waiting_room)))
    .execute(&state.db)
    .await?;
    let (room, role) = visible_room(&state, &id, &me).await?;
    Ok(Json(room_view(&state, room, role).await?))
}

/// Delete a room (host or admin).
#[utoipa::path(delete, path = "/api/rooms/{id}", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
    ))]
async fn delete_room(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    let room = managed_room(&state, &id, &me).await?;
    let mut tx = state.db.begin().await?;
    for sql in [
        "DELETE FROM meeting_attendance WHERE session_id IN
             (SELECT id FROM meeting_sessions WHERE room_id = $1)",
        "DELETE FROM meeting_sessions WHERE room_id = $1",
        "DELETE FROM room_participants WHERE room_id = $1",
        "DELETE FROM room_members WHERE room_id = $1",
        "DELETE FROM rooms WHERE id = $1",
    ] {
        sqlx::query(sql).bind(&room.id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    state
        .rooms
        .notify(&room.id, crate::signal::room::Command::Close);
    tracing::info!(room_id = %room.id, user_id = %me.user_id, "room deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Enter a room. Checks privacy, password, lock, expiry and capacity; answers with the
/// caller's participant record (the same one again if already inside).
#[utoipa::path(post, path = "/api/rooms/{id}/join", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    request_body = JoinRoomRequest,
    responses(
        (status = 200, body = Participant),
        (status = 403, body = convo_shared::ErrorBody, description = "`room_password_required`, `invalid_room_password`, `room_locked`"),
        (status = 404, body = convo_shared::ErrorBody, description = "`room_not_found` (also: private room, wrong password)"),
        (status = 409, body = convo_shared::ErrorBody, description = "`room_full`"),
        (status = 410, body = convo_shared::ErrorBody, description = "`room_expired`"),
        (status = 429, body = convo_shared::ErrorBody, description = "`too_many_attempts`"),
        (status = 503, body = convo_shared::ErrorBody, description = "`unavailable`: too many passwords being checked at once, with Retry-After"),
    ))]
async fn join_room(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Participant>> {
    let req: JoinRoomRequest = if body.iter().all(u8::is_ascii_whitespace) {
        JoinRoomRequest::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    Ok(Json(admit(&state, &id, &me, req.password, false).await?))
}

/// Lets the caller into a room if the rules allow (privacy, password, expiry, lock, capacity)
/// and records them as a participant; the same record again if already inside. Shared by
/// `POST /api/rooms/{id}/join` and the signaling `join`.
pub(crate) async fn admit(
    state: &AppState,
    id: &str,
    me: &AuthUser,
    password: Option<String>,
    let_in: bool,
) -> ApiResult<Participant> {
    // A leave of the same user still on its way (left, and joined again at once) may take the
    // seat away between taking it and reading it back: take it again.
    for _ in 0..3 {
        if let Some(p) = admit_once(state, id, me, password.clone(), let_in).await? {
            return Ok(p);
        }
    }
    tracing::error!(room_id = %id, user_id = %me.user_id, "a seat taken three times was gone each time");
    Err(ApiError::internal())
}

async fn admit_once(
    state: &AppState,
    id: &str,
    me: &AuthUser,
    password: Option<String>,
    let_in: bool,
) -> ApiResult<Option<Participant>> {
    let room = load_room(state, id)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    // Someone already inside (e.g. reconnecting) gets their record back, lock or not.
    let mut inside = participants_of(state, &[room.id.as_str()]).await?;
    if let Some(p) = inside
        .remove(&room.id)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.user.id == me.user_id)
    {
        return Ok(Some(p));
    }
    let role = my_role(state, &room.id, &me.user_id).await?;
    let privileged = role == Some(RoomRole::Host) || me.is_admin();
    let known = role.is_some() || me.is_admin();

    if !known {
        if let Some(hash) = &room.password_hash {
            check_room_password(state, &room, me, hash, password).await?;
        } else if room.privacy == Privacy::Private {
            return Err(ApiError::room_not_found());
        }
    }
    let now = now_ms();
    if room.is_expired(now) {
        return Err(ApiError::new(
            StatusCode::GONE,
            ErrorCode::RoomExpired,
            "This room has expired. Ask the host for a new link.",
        ));
    }
    if room.locked && !privileged {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::RoomLocked,
            "The host has locked this room; nobody new can join right now.",
        ));
    }
    // A waiting room: newcomers are let in by the host (over signaling), members go straight in.
    if room.waiting_room && !known && !let_in {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::WaitingRoom,
            "This room has a waiting room: join from the app and the host will let you in.",
        ));
    }

    let mut tx = state.db.begin().await?;
    // Touch the room first: takes its row lock (PostgreSQL) or the write lock (SQLite), so two
    // joins cannot both take the last seat.
    sqlx::query("UPDATE rooms SET updated_at = updated_at WHERE id = $1")
        .bind(&room.id)
        .execute(&mut *tx)
        .await?;
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT joined_at FROM room_participants WHERE room_id = $1 AND user_id = $2",
    )
    .bind(&room.id)
    .bind(&me.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    if existing.is_none() {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM room_participants WHERE room_id = $1")
                .bind(&room.id)
                .fetch_one(&mut *tx)
                .await?;
        if count >= room.max_participants {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::RoomFull,
                format!(
                    "This room is full ({} participants).",
                    room.max_participants
                ),
            ));
        }
        sqlx::query(
            "INSERT INTO room_participants (room_id, user_id, joined_at) VALUES ($1, $2, $3)
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(&room.id)
        .bind(&me.user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(&room.id)
        .bind(&me.user_id)
        .bind(RoomRole::Member.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let mut parts = participants_of(state, &[room.id.as_str()]).await?;
    Ok(parts
        .remove(&room.id)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.user.id == me.user_id))
}

async fn check_room_password(
    state: &AppState,
    room: &RoomRow,
    me: &AuthUser,
    hash: &str,
    given: Option<String>,
) -> ApiResult<()> {
    let private = room.privacy == Privacy::Private;
    let Some(given) = given.filter(|p| !p.is_empty()) else {
        return Err(if private {
            ApiError::room_not_found()
        } else {
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::RoomPasswordRequired,
                "This room needs a password.",
            )
        });
    };
    // Counted before the check (parallel guesses cannot all pass it), per person and per
    // room (accounts are free to make); a right password takes its attempt back.
    let key = format!("room:{}:{}", room.id, me.user_id);
    let room_key = format!("room:{}", room.id);
    {
        let now = Instant::now();
        let mut per_user = lock(&state.room_password_throttle);
        let mut per_room = lock(&state.room_guess_throttle);
        match (per_user.check(&key, now), per_room.check(&room_key, now)) {
            (Ok(()), Ok(())) => {
                per_user.fail(&key, now);
                per_room.fail(&room_key, now);
            }
            (Err(d), _) | (_, Err(d)) => return Err(ApiError::too_many_attempts(d)),
        }
    }
    let too_long = given.chars().count() > convo_shared::limits::ROOM_PASSWORD_MAX;
    if too_long || !password::verify(given, hash.to_string()).await? {
        return Err(if private {
            ApiError::room_not_found()
        } else {
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InvalidRoomPassword,
                "The room password is wrong.",
            )
        });
    }
    lock(&state.room_password_throttle).clear(&key);
    lock(&state.room_guess_throttle).forgive(&room_key);
    Ok(())
}

/// Leave a room. Leaving a room one is not in is not an error.
#[utoipa::path(post, path = "/api/rooms/{id}/leave", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses((status = 204, description = "Left"), (status = 404, body = convo_shared::ErrorBody)))]
async fn leave_room(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    let (room, _) = visible_room(&state, &id, &me).await?;
    sqlx::query("DELETE FROM room_participants WHERE room_id = $1 AND user_id = $2")
        .bind(&room.id)
        .bind(&me.user_id)
        .execute(&state.db)
        .await?;
    state.rooms.notify(
        &room.id,
        crate::signal::room::Command::RemoveUser {
            user_id: me.user_id.clone(),
            reason: convo_shared::signal::LeaveReason::Left,
        },
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Invite a user into a room by username (host or admin). Members see the room and join it
/// without its password.
#[utoipa::path(post, path = "/api/rooms/{id}/members", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    request_body = AddMemberRequest,
    responses(
        (status = 201, body = Member),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody, description = "`room_not_found` or `not_found` (no such user)"),
    ))]
async fn add_member(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    Json(req): Json<AddMemberRequest>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    let room = managed_room(&state, &id, &me).await?;
    let user = crate::users::find_user_by_username(&state.db, &req.username)
        .await?
        .ok_or_else(|| ApiError::not_found("No user has this username."))?;
    sqlx::query(
        "INSERT INTO room_members (room_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (room_id, user_id) DO NOTHING",
    )
    .bind(&room.id)
    .bind(&user.id)
    .bind(RoomRole::Member.as_str())
    .bind(now_ms())
    .execute(&state.db)
    .await?;
    let role = my_role(&state, &room.id, &user.id)
        .await?
        .unwrap_or(RoomRole::Member);
    Ok((
        StatusCode::CREATED,
        Json(Member {
            user: UserSummary {
                avatar_url: crate::users::avatar_url(
                    &user.id,
                    user.avatar_type.as_deref(),
                    user.avatar_version,
                ),
                id: user.id,
                username: user.username,
                display_name: user.display_name,
            },
            role,
        }),
    ))
}

/// Remove a member (host or admin; or a member removing themself). Also takes them out of the
/// room if they are inside. The host cannot be removed.
#[utoipa::path(delete, path = "/api/rooms/{id}/members/{user_id}", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("user_id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
    ))]
async fn remove_member(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path((id, user_id)): axum::extract::Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let room = if user_id == me.user_id {
        visible_room(&state, &id, &me).await?.0
    } else {
        managed_room(&state, &id, &me).await?
    };
    if user_id == room.host.id {
        return Err(ApiError::forbidden(
            "The host cannot be removed from their room.",
        ));
    }
    let mut tx = state.db.begin().await?;
    let removed = sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
        .bind(&room.id)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM room_participants WHERE room_id = $1 AND user_id = $2")
        .bind(&room.id)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.rooms.notify(
        &room.id,
        crate::signal::room::Command::RemoveUser {
            user_id: user_id.clone(),
            reason: convo_shared::signal::LeaveReason::Removed,
        },
    );
    if removed == 0 {
        return Err(ApiError::not_found(
            "This user is not a member of the room.",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_shape_and_vary() {
        let a = room_id::generate();
        assert!(room_id::is_valid(&a), "{a}");
        assert_eq!(a.len(), 12);
        assert_ne!(a, room_id::generate());
        for bad in [
            "",
            "abc-defg-hi",
            "ABC-defg-hij",
            "abc-defg-hij-",
            "abcdefghijkl",
            "abc-de1g-hij",
        ] {
            assert!(!room_id::is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(1234, "abc-defg-hij");
        assert_eq!(decode_cursor(&c), Some((1234, "abc-defg-hij".into())));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&B64.encode("x:abc-defg-hij")), None);
        assert_eq!(decode_cursor(&B64.encode("1:../../etc")), None);
    }
}
