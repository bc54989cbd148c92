//! Scheduled meetings (`/api/meetings`): the host of a room schedules a meeting in it with a
//! title, a start, a duration and invitees; invitees become members of the room. Listed for
//! the organiser, the room's host and the invitees until the meeting is over.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use convo_shared::limits::ROOM_NAME_MAX;
use convo_shared::rooms::RoomRole;
use convo_shared::schedule::{
    DURATION_MAX, DURATION_MIN, INVITEES_MAX, ScheduleMeetingRequest, ScheduledMeeting,
    ScheduledMeetingList,
};
use sqlx::Row;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::{from_ms, now_ms, to_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::users::summary_from_row;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(schedule, upcoming))
        .routes(routes!(get_meeting, cancel))
}

/// How far back a start may be (a meeting scheduled "now" while typing), and ahead.
const PAST_GRACE_MS: i64 = 5 * 60 * 1000;
const AHEAD_MAX_MS: i64 = 366 * 24 * 3600 * 1000;

const MEETING_COLUMNS: &str = "m.id, m.room_id, r.name AS room_name, m.title, m.starts_at,
    m.duration_minutes, m.created_by AS user_id, r.host_id, u.username, u.display_name,
    u.avatar_type, u.avatar_version";
const MEETING_FROM: &str = "FROM scheduled_meetings m JOIN rooms r ON r.id = m.room_id
    JOIN users u ON u.id = m.created_by";

/// Meetings from rows of `MEETING_COLUMNS`, with their invitees.
async fn meetings(
    state: &AppState,
    rows: &[sqlx::any::AnyRow],
) -> ApiResult<Vec<ScheduledMeeting>> {
    let mut out = Vec::with_capacity(rows.len());
    let mut index = HashMap::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        let room_id: String = row.try_get("room_id")?;
        let minutes: i64 = row.try_get("duration_minutes")?;
        index.insert(id.clone(), out.len());
        out.push(ScheduledMeeting {
            id,
            join_url: format!("{}/join/{room_id}", state.config.public_url),
            room_id,
            room_name: row.try_get("room_name")?,
            title: row.try_get("title")?,
            starts_at: from_ms(row.try_get("starts_at")?),
            duration_minutes: u32::try_from(minutes).unwrap_or(DURATION_MAX),
            organizer: summary_from_row(row)?,
            invitees: Vec::new(),
        });
    }
    if !out.is_empty() {
        let placeholders: Vec<String> = (1..=out.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT i.meeting_id, i.user_id, u.username, u.display_name, u.avatar_type,
                    u.avatar_version
             FROM meeting_invitees i JOIN users u ON u.id = i.user_id
             WHERE i.meeting_id IN ({}) ORDER BY u.username",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for m in &out {
            query = query.bind(m.id.clone());
        }
        for row in query.fetch_all(&state.db).await? {
            let mid: String = row.try_get("meeting_id")?;
            if let Some(&i) = index.get(&mid) {
                out[i].invitees.push(summary_from_row(&row)?);
            }
        }
    }
    Ok(out)
}

/// Schedules a meeting in a room the caller hosts; invitees (usernames) become its members.
#[utoipa::path(post, path = "/api/meetings", tag = "meetings",
    security(("bearer" = [])),
    request_body = ScheduleMeetingRequest,
    responses(
        (status = 201, body = ScheduledMeeting),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
        (status = 422, body = convo_shared::ErrorBody),
    ))]
async fn schedule(
    State(state): State<AppState>,
    me: AuthUser,
    Json(req): Json<ScheduleMeetingRequest>,
) -> ApiResult<(StatusCode, Json<ScheduledMeeting>)> {
    let title = req.title.trim().to_string();
    if title.is_empty() || title.chars().count() > ROOM_NAME_MAX {
        return Err(ApiError::invalid(
            "title",
            format!("A title is 1 to {ROOM_NAME_MAX} characters."),
        ));
    }
    if !(DURATION_MIN..=DURATION_MAX).contains(&req.duration_minutes) {
        return Err(ApiError::invalid(
            "duration_minutes",
            format!("A meeting lasts {DURATION_MIN} to {DURATION_MAX} minutes."),
        ));
    }
    let starts = to_ms(req.starts_at);
    let now = now_ms();
    if starts < now - PAST_GRACE_MS || starts > now + AHEAD_MAX_MS {
        return Err(ApiError::invalid(
            "starts_at",
            "A meeting starts between now and a year from now.",
        ));
    }
    if req.invitees.len() > INVITEES_MAX {
        return Err(ApiError::invalid(
            "invitees",
            format!("At most {INVITEES_MAX} people can be invited."),
        ));
    }
    let room_id = crate::rooms::hosted_room(&state, &req.room_id, &me).await?;
    let mut invitees = Vec::new();
    for name in &req.invitees {
        let user = crate::users::find_user_by_username(&state.db, name)
            .await?
            .ok_or_else(|| ApiError::invalid("invitees", format!("No user is called “{name}”.")))?;
        if user.id != me.user_id && !invitees.contains(&user.id) {
            invitees.push(user.id);
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO scheduled_meetings (id, room_id, title, starts_at, duration_minutes,
                                         created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&room_id)
    .bind(&title)
    .bind(starts)
    .bind(i64::from(req.duration_minutes))
    .bind(&me.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for user in &invitees {
        sqlx::query("INSERT INTO meeting_invitees (meeting_id, user_id) VALUES ($1, $2)")
            .bind(&id)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(&room_id)
        .bind(user)
        .bind(RoomRole::Member.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let meeting = find(&state, &id).await?.ok_or_else(ApiError::internal)?;
    tracing::info!(meeting_id = %id, %room_id, "meeting scheduled");
    Ok((StatusCode::CREATED, Json(meeting)))
}

async fn find(state: &AppState, id: &str) -> ApiResult<Option<ScheduledMeeting>> {
    let sql = format!("SELECT {MEETING_COLUMNS} {MEETING_FROM} WHERE m.id = $1");
    let rows = sqlx::query(&sql).bind(id).fetch_all(&state.db).await?;
    Ok(meetings(state, &rows).await?.into_iter().next())
}

/// Whether `me` organises the meeting, hosts its room, is invited, or is an admin.
fn concerns(m: &ScheduledMeeting, host_id: &str, me: &AuthUser) -> bool {
    me.is_admin()
        || m.organizer.id == me.user_id
        || host_id == me.user_id
        || m.invitees.iter().any(|u| u.id == me.user_id)
}

async fn host_of(state: &AppState, room_id: &str) -> ApiResult<String> {
    Ok(
        sqlx::query_scalar("SELECT host_id FROM rooms WHERE id = $1")
            .bind(room_id)
            .fetch_one(&state.db)
            .await?,
    )
}

fn meeting_not_found() -> ApiError {
    ApiError::not_found("There is no such meeting, or you are not invited to it.")
}

/// My meetings that are not over yet, soonest first: those I organise, in rooms I host, or
/// that I am invited to.
#[utoipa::path(get, path = "/api/meetings", tag = "meetings",
    security(("bearer" = [])),
    responses((status = 200, body = ScheduledMeetingList)))]
async fn upcoming(
    State(state): State<AppState>,
    me: AuthUser,
) -> ApiResult<Json<ScheduledMeetingList>> {
    let now = now_ms();
    let sql = format!(
        "SELECT {MEETING_COLUMNS} {MEETING_FROM}
         WHERE m.starts_at + m.duration_minutes * 60000 > $1
           AND (m.created_by = $2 OR r.host_id = $2 OR EXISTS
                (SELECT 1 FROM meeting_invitees i WHERE i.meeting_id = m.id AND i.user_id = $2))
         ORDER BY m.starts_at, m.id LIMIT 100"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(&me.user_id)
        .fetch_all(&state.db)
        .await?;
    Ok(Json(ScheduledMeetingList {
        meetings: meetings(&state, &rows).await?,
    }))
}

/// One meeting (organiser, the room's host, invitees, admins; 404 for anyone else).
#[utoipa::path(get, path = "/api/meetings/{id}", tag = "meetings",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Meeting id")),
    responses((status = 200, body = ScheduledMeeting), (status = 404, body = convo_shared::ErrorBody)))]
async fn get_meeting(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<ScheduledMeeting>> {
    let m = find(&state, &id).await?.ok_or_else(meeting_not_found)?;
    if !concerns(&m, &host_of(&state, &m.room_id).await?, &me) {
        return Err(meeting_not_found());
    }
    Ok(Json(m))
}

/// Cancels a meeting (its organiser, the room's host, admins).
#[utoipa::path(delete, path = "/api/meetings/{id}", tag = "meetings",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Meeting id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    let m = find(&state, &id).await?.ok_or_else(meeting_not_found)?;
    let host = host_of(&state, &m.room_id).await?;
    if !concerns(&m, &host, &me) {
        return Err(meeting_not_found());
    }
    if !(me.is_admin() || m.organizer.id == me.user_id || host == me.user_id) {
        return Err(ApiError::forbidden(
            "Only the organiser or the room's host can cancel a meeting.",
        ));
    }
    sqlx::query("DELETE FROM scheduled_meetings WHERE id = $1")
        .bind(&id)
        .execute(&state.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
