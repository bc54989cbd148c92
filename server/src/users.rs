//! The signed-in user: profile, display name, avatar, password change.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use convo_shared::ErrorCode;
use convo_shared::auth::ChangePasswordRequest;
use convo_shared::limits::AVATAR_MAX_BYTES;
use convo_shared::users::{Role, UpdateProfileRequest, User, UserSummary};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{AuthUser, lock, password};
use crate::db::{Db, from_ms, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, payload_too_large};
use crate::validate;

/// Profile forms up to this size are read to their end even when refused (an avatar too
/// large, an unknown field), so that a client still sending its upload gets the JSON answer
/// rather than a connection reset mid-request; larger bodies are cut off.
const PROFILE_BODY_MAX: usize = 4 * AVATAR_MAX_BYTES;

/// A text field of the profile form, at most.
const FORM_TEXT_MAX: usize = 64 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    let (schemas, paths, me_routes) = routes!(me, update_me);
    // The profile route takes avatar uploads, so it gets a larger body limit than the rest.
    let me_routes = me_routes.layer(DefaultBodyLimit::max(PROFILE_BODY_MAX));
    OpenApiRouter::new()
        .routes((schemas, paths, me_routes))
        .routes(routes!(change_password))
        .routes(routes!(avatar))
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
    pub avatar_type: Option<String>,
    pub avatar_version: i64,
    pub created_at: i64,
}

const USER_COLUMNS: &str = "id, username, email, display_name, password_hash, role, avatar_type, avatar_version, created_at";

impl UserRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let role: String = row.try_get("role")?;
        Ok(UserRow {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            email: row.try_get("email")?,
            display_name: row.try_get("display_name")?,
            password_hash: row.try_get("password_hash")?,
            role: Role::parse(&role).unwrap_or(Role::User),
            avatar_type: row.try_get("avatar_type")?,
            avatar_version: row.try_get("avatar_version")?,
            created_at: row.try_get("created_at")?,
        })
    }

    pub fn to_api(&self) -> User {
        User {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            role: self.role,
            avatar_url: avatar_url(&self.id, self.avatar_type.as_deref(), self.avatar_version),
            created_at: from_ms(self.created_at),
        }
    }
}

pub fn avatar_url(user_id: &str, avatar_type: Option<&str>, version: i64) -> Option<String> {
    avatar_type.map(|_| format!("/api/users/{user_id}/avatar?v={version}"))
}

/// Reads a [`UserSummary`] from a row with columns `user_id, username, display_name,
/// avatar_type, avatar_version`.
/// One user as others see them.
pub async fn summary_of(state: &AppState, user_id: &str) -> ApiResult<UserSummary> {
    let row = sqlx::query(
        "SELECT id AS user_id, username, display_name, avatar_type, avatar_version FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_one(&state.db)
    .await?;
    Ok(summary_from_row(&row)?)
}

pub fn summary_from_row(row: &AnyRow) -> Result<UserSummary, sqlx::Error> {
    let id: String = row.try_get("user_id")?;
    let avatar_type: Option<String> = row.try_get("avatar_type")?;
    let version: i64 = row.try_get("avatar_version")?;
    Ok(UserSummary {
        avatar_url: avatar_url(&id, avatar_type.as_deref(), version),
        id,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
    })
}

async fn find_one(db: &Db, filter: &str, value: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {filter}");
    sqlx::query(&sql)
        .bind(value)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(UserRow::from_row)
        .transpose()
}

pub async fn find_user_by_id(db: &Db, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    find_one(db, "id = $1", id).await
}

pub async fn find_user_by_email(db: &Db, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    find_one(db, "email_norm = $1", &email.trim().to_lowercase()).await
}

pub async fn find_user_by_username(db: &Db, name: &str) -> Result<Option<UserRow>, sqlx::Error> {
    find_one(db, "username_norm = $1", &name.trim().to_lowercase()).await
}

/// A login is a username or an email address.
pub async fn find_user_by_login(db: &Db, login: &str) -> Result<Option<UserRow>, sqlx::Error> {
    find_one(
        db,
        "username_norm = $1 OR email_norm = $1",
        &login.trim().to_lowercase(),
    )
    .await
}

pub(crate) async fn me_inner(state: &AppState, me: &AuthUser) -> ApiResult<Json<User>> {
    let user = find_user_by_id(&state.db, &me.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("This account no longer exists."))?;
    Ok(Json(user.to_api()))
}

/// The signed-in user's account.
#[utoipa::path(get, path = "/api/users/me", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = convo_shared::ErrorBody)))]
async fn me(State(state): State<AppState>, me: AuthUser) -> ApiResult<Json<User>> {
    me_inner(&state, &me).await
}

/// The multipart form of a profile update (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ProfileForm {
    display_name: Option<String>,
    /// PNG, JPEG, WebP or GIF, at most 2 MiB.
    #[schema(value_type = Option<String>, format = Binary)]
    avatar: Option<Vec<u8>>,
}

/// Change the display name and/or the avatar. JSON changes the display name (or removes the
/// avatar); `multipart/form-data` with fields `display_name` and `avatar` (an image file) also
/// uploads an avatar.
#[utoipa::path(patch, path = "/api/users/me", tag = "users",
    security(("bearer" = [])),
    request_body(content(
        (UpdateProfileRequest = "application/json"),
        (ProfileForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, body = User),
        (status = 413, body = convo_shared::ErrorBody, description = "`payload_too_large`"),
        (status = 415, body = convo_shared::ErrorBody, description = "`unsupported_image`, `unsupported_media_type`"),
        (status = 422, body = convo_shared::ErrorBody),
    ))]
async fn update_me(
    State(state): State<AppState>,
    me: AuthUser,
    req: Request,
) -> ApiResult<Json<User>> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut display_name = None;
    let mut avatar: Option<(Vec<u8>, &'static str)> = None;
    let mut remove_avatar = false;
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &state).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                e.body_text(),
            )
        })?;
        // Every field is read to its end, kept only up to its limit: the first refusal is
        // answered once the whole form has arrived.
        let mut refused: Option<ApiError> = None;
        while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
            let name = field.name().map(str::to_string);
            let limit = if name.as_deref() == Some("avatar") {
                AVATAR_MAX_BYTES
            } else {
                FORM_TEXT_MAX
            };
            let (mut bytes, mut over) = (Vec::new(), false);
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                over |= bytes.len() + chunk.len() > limit;
                if !over {
                    bytes.extend_from_slice(&chunk);
                }
            }
            if refused.is_some() {
                continue;
            }
            refused = match name.as_deref() {
                Some("avatar") if over => Some(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "An avatar image is at most {} MiB.",
                        AVATAR_MAX_BYTES / (1024 * 1024)
                    ),
                )),
                Some("avatar") => match sniff_image(&bytes) {
                    Some(kind) => {
                        avatar = Some((bytes, kind));
                        None
                    }
                    None => Some(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        ErrorCode::UnsupportedImage,
                        "The avatar must be a PNG, JPEG, WebP or GIF image.",
                    )),
                },
                Some("display_name") if over => Some(payload_too_large()),
                Some("display_name") => match String::from_utf8(bytes) {
                    Ok(text) => {
                        display_name = Some(text);
                        None
                    }
                    Err(_) => Some(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidBody,
                        "The display name is not UTF-8 text.",
                    )),
                },
                other => Some(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::InvalidBody,
                    format!(
                        "Unknown form field {:?}; expected `display_name` or `avatar`.",
                        other.unwrap_or_default()
                    ),
                )),
            };
        }
        if let Some(e) = refused {
            return Err(e);
        }
    } else {
        let Json(body) = Json::<UpdateProfileRequest>::from_request(req, &state).await?;
        display_name = body.display_name;
        remove_avatar = body.remove_avatar;
    }

    let display_name = display_name
        .as_deref()
        .map(validate::display_name)
        .transpose()?;
    let now = now_ms();
    if let Some(name) = &display_name {
        sqlx::query("UPDATE users SET display_name = $1, updated_at = $2 WHERE id = $3")
            .bind(name)
            .bind(now)
            .bind(&me.user_id)
            .execute(&state.db)
            .await?;
    }
    let dir = state.config.avatars_dir();
    let path = dir.join(&me.user_id);
    if let Some((bytes, kind)) = avatar {
        tokio::fs::create_dir_all(&dir).await?;
        // Write beside, then rename: a reader never sees half a file.
        let tmp = dir.join(format!("{}.{}.tmp", me.user_id, uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        sqlx::query(
            "UPDATE users SET avatar_type = $1, avatar_version = avatar_version + 1,
             updated_at = $2 WHERE id = $3",
        )
        .bind(kind)
        .bind(now)
        .bind(&me.user_id)
        .execute(&state.db)
        .await?;
    } else if remove_avatar {
        sqlx::query(
            "UPDATE users SET avatar_type = NULL, avatar_version = avatar_version + 1,
             updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(&me.user_id)
        .execute(&state.db)
        .await?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    me_inner(&state, &me).await
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        payload_too_large()
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            format!("The form could not be read: {}", e.body_text()),
        )
    }
}

/// The image type by its first bytes, whatever the client claims.
fn sniff_image(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

/// Change the password. Needs the current one; ends every other session of the account.
#[utoipa::path(post, path = "/api/users/me/password", tag = "users",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 401, body = convo_shared::ErrorBody, description = "`invalid_credentials`: current password wrong"),
        (status = 422, body = convo_shared::ErrorBody),
        (status = 429, body = convo_shared::ErrorBody),
        (status = 503, body = convo_shared::ErrorBody, description = "`unavailable`: too many passwords being checked at once, with Retry-After"),
    ))]
async fn change_password(
    State(state): State<AppState>,
    me: AuthUser,
    Json(req): Json<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    validate::password("new_password", &req.new_password)?;
    let user = find_user_by_id(&state.db, &me.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("This account no longer exists."))?;
    let key = format!("pw:{}", user.id);
    // Counted before the check, so that parallel guesses cannot all pass it.
    if let Err(wait) = lock(&state.login_throttle).attempt(&key, Instant::now()) {
        return Err(ApiError::too_many_attempts(wait));
    }
    if !password::verify(req.current_password, user.password_hash.clone()).await? {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidCredentials,
            "The current password is wrong.",
        ));
    }
    lock(&state.login_throttle).clear(&key);
    let hash = password::hash(req.new_password).await?;
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(&hash)
        .bind(now)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE sessions SET revoked_at = $1
         WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&user.id)
    .bind(&me.session_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    crate::auth::revoke::announce(
        &state,
        crate::auth::revoke::Revoked::User {
            user_id: user.id.clone(),
            except: Some(me.session_id.clone()),
        },
    );
    tracing::info!(user_id = %user.id, "password changed; other sessions ended");
    Ok(StatusCode::NO_CONTENT)
}

/// A user's avatar image.
#[utoipa::path(get, path = "/api/users/{id}/avatar", tag = "users",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The image", content_type = "image/*"),
        (status = 404, body = convo_shared::ErrorBody),
    ))]
async fn avatar(
    State(state): State<AppState>,
    _me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found("This user has no avatar.");
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(not_found());
    }
    let user = find_user_by_id(&state.db, &id)
        .await?
        .ok_or_else(not_found)?;
    let kind = user.avatar_type.ok_or_else(not_found)?;
    let bytes = match tokio::fs::read(state.config.avatars_dir().join(&user.id)).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=86400".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        Body::from(bytes),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::sniff_image;

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"GIF89a"), Some("image/gif"));
        assert_eq!(sniff_image(b"<svg xmlns="), None);
        assert_eq!(sniff_image(b""), None);
    }
}
