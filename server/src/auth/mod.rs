//! Accounts and sessions: registration, sign-in with throttling, access and refresh tokens,
//! sign-out, and password recovery by mail.

pub mod password;
pub mod revoke;
pub mod throttle;
pub mod tokens;

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use convo_shared::ErrorCode;
use convo_shared::auth::{
    ForgotPasswordRequest, LoginRequest, LogoutRequest, MessageResponse, RefreshRequest,
    RegisterRequest, ResetPasswordRequest, TokenResponse,
};
use convo_shared::users::{Role, User};
use sqlx::Row;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::Json;
use crate::users::{UserRow, find_user_by_id};
use crate::validate;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(profile))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
}

/// The caller, proven by a valid access token of a live session.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: String,
    pub session_id: String,
    pub role: Role,
    /// When the access token it was proven by expires, unix seconds (a connection opened
    /// with it asks again then).
    pub token_expires_at: i64,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(state, &parts.headers).await
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks the bearer token: signature, expiry, and that its session is still live.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<AuthUser> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::unauthenticated("Sign in first: send `Authorization: Bearer <access token>`.")
    })?;
    authenticate_token(state, token).await
}

/// Checks an access token however it arrived (header, WebSocket subprotocol or message).
pub async fn authenticate_token(state: &AppState, token: &str) -> ApiResult<AuthUser> {
    let now = now_ms();
    let claims =
        tokens::decode_jwt(&state.config.jwt_secret, token, now / 1000).map_err(|e| match e {
            tokens::JwtError::Expired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::TokenExpired,
                "The access token has expired: refresh it.",
            ),
            _ => ApiError::unauthenticated("The access token is not valid."),
        })?;
    let row = sqlx::query(
        "SELECT u.role FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3",
    )
    .bind(&claims.sid)
    .bind(&claims.sub)
    .bind(now)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::unauthenticated("This session has ended: sign in again."))?;
    let role: String = row.try_get("role")?;
    Ok(AuthUser {
        token_expires_at: claims.exp,
        user_id: claims.sub,
        session_id: claims.sid,
        role: Role::parse(&role).unwrap_or(Role::User),
    })
}

/// Creates an account; shared by registration and the admin command. `admit` is asked once
/// the request is valid and before the password is hashed (the API's per-address limit).
pub async fn create_user(
    state_db: &crate::db::Db,
    req: RegisterRequest,
    role: Role,
    admit: impl FnOnce() -> ApiResult<()>,
) -> ApiResult<UserRow> {
    let username = validate::username(&req.username)?;
    let email = validate::email(&req.email)?;
    validate::password("password", &req.password)?;
    let display_name = match req.display_name.as_deref() {
        Some(d) => validate::display_name(d)?,
        None => username.clone(),
    };
    let exists: Option<String> =
        sqlx::query_scalar("SELECT id FROM users WHERE username_norm = $1 OR email_norm = $2")
            .bind(username.to_lowercase())
            .bind(email.to_lowercase())
            .fetch_optional(state_db)
            .await?;
    if exists.is_some() {
        return Err(user_exists());
    }
    admit()?;
    let hash = password::hash(req.password).await?;
    let now = now_ms();
    let user = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        username,
        email,
        display_name,
        password_hash: hash,
        role,
        avatar_type: None,
        avatar_version: 0,
        created_at: now,
    };
    let inserted = sqlx::query(
        "INSERT INTO users (id, username, username_norm, email, email_norm, display_name,
                            password_hash, role, avatar_version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9)",
    )
    .bind(&user.id)
    .bind(&user.username)
    .bind(user.username.to_lowercase())
    .bind(&user.email)
    .bind(user.email.to_lowercase())
    .bind(&user.display_name)
    .bind(&user.password_hash)
    .bind(user.role.as_str())
    .bind(now)
    .execute(state_db)
    .await;
    match inserted {
        Ok(_) => Ok(user),
        Err(e) if is_unique_violation(&e) => Err(user_exists()),
        Err(e) => Err(e.into()),
    }
}

fn user_exists() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::UserExists,
        "An account with this username or email already exists.",
    )
}

/// Register a new account.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = User, description = "Account created"),
        (status = 409, body = convo_shared::ErrorBody, description = "`user_exists`"),
        (status = 422, body = convo_shared::ErrorBody, description = "`validation_failed`, `invalid_body`"),
        (status = 429, body = convo_shared::ErrorBody, description = "`too_many_attempts`: this address created `CONVO_REGISTRATIONS_PER_HOUR` accounts in the last hour; Retry-After"),
        (status = 503, body = convo_shared::ErrorBody, description = "`unavailable`: too many passwords being checked at once, with Retry-After"),
    ))]
async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    let client = crate::extract::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    let admit = || {
        if state.config.registrations_per_hour == 0 {
            return Ok(());
        }
        lock(&state.registration_throttle)
            .attempt(&format!("ip:{client}"), Instant::now())
            .map_err(ApiError::too_many_attempts)
    };
    let user = create_user(&state.db, req, Role::User, admit).await?;
    tracing::info!(user_id = %user.id, "account registered");
    Ok((StatusCode::CREATED, Json(user.to_api())))
}

/// Starts a session: a new refresh-token family and an access token.
pub(crate) async fn issue_session(state: &AppState, user: &UserRow) -> ApiResult<TokenResponse> {
    let now = now_ms();
    let session_id = uuid::Uuid::new_v4().to_string();
    let refresh_ttl = i64::try_from(state.config.refresh_token_ttl.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at)
         VALUES ($1, $2, $3, $3, $4)",
    )
    .bind(&session_id)
    .bind(&user.id)
    .bind(now)
    .bind(now.saturating_add(refresh_ttl))
    .execute(&state.db)
    .await?;
    let refresh_token = tokens::random_token(32);
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
    )
    .bind(tokens::digest(&refresh_token))
    .bind(&session_id)
    .bind(now)
    .execute(&state.db)
    .await?;
    Ok(token_response(state, user, &session_id, refresh_token, now))
}

fn token_response(
    state: &AppState,
    user: &UserRow,
    session_id: &str,
    refresh_token: String,
    now_ms: i64,
) -> TokenResponse {
    let ttl = state.config.access_token_ttl.as_secs();
    let iat = now_ms / 1000;
    let claims = tokens::Claims {
        sub: user.id.clone(),
        sid: session_id.to_string(),
        iat,
        exp: iat.saturating_add(i64::try_from(ttl).unwrap_or(900)),
        iss: tokens::ISSUER.to_string(),
    };
    TokenResponse {
        access_token: tokens::encode_jwt(&state.config.jwt_secret, &claims),
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: ttl,
        user: user.to_api(),
    }
}

/// Throttle key of a sign-in: the account when it exists (whichever name it was reached by),
/// else the name tried, so unknown names are throttled just the same.
fn account_key(user: Option<&UserRow>, login: &str) -> String {
    match user {
        Some(u) => format!("acct:{}", u.id),
        None => format!("login:{}", login.trim().to_lowercase()),
    }
}

/// Counts a sign-in attempt for the account and the address before the password is verified
/// (both or neither): refused while either has too many recent failures, else recorded as a
/// failure at once, so that parallel guesses cannot all pass while the first is being hashed.
/// A success takes it back with [`attempt_succeeded`].
pub(crate) fn begin_attempt(state: &AppState, acct: &str, ip: &str) -> ApiResult<()> {
    let now = Instant::now();
    let mut accounts = lock(&state.login_throttle);
    let mut addresses = lock(&state.address_throttle);
    let a = accounts.check(acct, now);
    let b = addresses.check(ip, now);
    match (a, b) {
        (Ok(()), Ok(())) => {
            accounts.fail(acct, now);
            addresses.fail(ip, now);
            Ok(())
        }
        (Err(d), Ok(())) | (Ok(()), Err(d)) => Err(ApiError::too_many_attempts(d)),
        (Err(d1), Err(d2)) => Err(ApiError::too_many_attempts(d1.max(d2))),
    }
}

/// The attempt counted by [`begin_attempt`] succeeded: the account's failures are forgotten,
/// the address keeps its others.
pub(crate) fn attempt_succeeded(state: &AppState, acct: &str, ip: &str) {
    lock(&state.login_throttle).clear(acct);
    lock(&state.address_throttle).forgive(ip);
}

/// Locks a throttle; a poisoned lock still holds a valid map, so keep using it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sign in with a username or email and a password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, body = convo_shared::ErrorBody, description = "`invalid_credentials`"),
        (status = 429, body = convo_shared::ErrorBody, description = "`too_many_attempts`, with Retry-After"),
        (status = 503, body = convo_shared::ErrorBody, description = "`unavailable`: too many passwords being checked at once, with Retry-After"),
    ))]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidCredentials,
            "The username, email or password is wrong.",
        )
    };
    let login = req.login.trim();
    if login.is_empty() || login.len() > convo_shared::limits::EMAIL_MAX {
        return Err(invalid());
    }
    let user = crate::users::find_user_by_login(&state.db, login).await?;
    let acct = account_key(user.as_ref(), login);
    let client = crate::extract::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    let ip = format!("ip:{client}");
    begin_attempt(&state, &acct, &ip)?;
    let too_long = req.password.chars().count() > convo_shared::limits::PASSWORD_MAX;
    let (hash, user) = match user {
        Some(u) => (u.password_hash.clone(), Some(u)),
        None => (state.dummy_hash.clone(), None),
    };
    let ok = !too_long && password::verify(req.password, hash).await?;
    match user {
        Some(user) if ok => {
            attempt_succeeded(&state, &acct, &ip);
            tracing::info!(user_id = %user.id, "signed in");
            Ok(Json(issue_session(&state, &user).await?))
        }
        // The failure was counted before the check.
        _ => Err(invalid()),
    }
}

/// Exchange a refresh token for a new access token and a new refresh token. Each refresh token
/// works once; presenting a used one ends its whole session.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, body = convo_shared::ErrorBody, description = "`unauthenticated` or `refresh_token_reused`"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    validate::token("refresh_token", &req.refresh_token)?;
    let digest = tokens::digest(&req.refresh_token);
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    // Write first: marks the token used and, on SQLite, takes the write lock up front.
    let claimed = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(&digest)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let row = sqlx::query(
        "SELECT s.id, s.user_id, s.revoked_at, s.expires_at FROM refresh_tokens t
         JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
    )
    .bind(&digest)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::unauthenticated(
            "This refresh token is not valid: sign in again.",
        ));
    };
    let session_id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    if !claimed {
        // A used token came back: someone holds a copy. End the whole family.
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(&session_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::warn!(%session_id, "refresh token reused: session revoked");
        revoke::announce(&state, revoke::Revoked::Session(session_id));
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::RefreshTokenReused,
            "This refresh token was already used, so the session has been ended for safety. Sign in again.",
        ));
    }
    if revoked_at.is_some() || expires_at <= now {
        tx.commit().await?;
        return Err(ApiError::unauthenticated(
            "This session has ended: sign in again.",
        ));
    }
    let new_token = tokens::random_token(32);
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
    )
    .bind(tokens::digest(&new_token))
    .bind(&session_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let ttl = i64::try_from(state.config.refresh_token_ttl.as_millis()).unwrap_or(i64::MAX);
    sqlx::query("UPDATE sessions SET last_used_at = $1, expires_at = $2 WHERE id = $3")
        .bind(now)
        .bind(now.saturating_add(ttl))
        .bind(&session_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let user = find_user_by_id(&state.db, &user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("This account no longer exists."))?;
    Ok(Json(token_response(
        &state,
        &user,
        &session_id,
        new_token,
        now,
    )))
}

/// End a session: the one of `refresh_token`, or else the one of the bearer access token.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    request_body = LogoutRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, body = convo_shared::ErrorBody),
    ))]
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let now = now_ms();
    let body: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    let refresh_token = body.refresh_token;
    let session_id = match refresh_token {
        Some(token) => {
            validate::token("refresh_token", &token)?;
            sqlx::query_scalar::<_, String>(
                "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(tokens::digest(&token))
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("This refresh token is not valid."))?
        }
        None => authenticate(&state, &headers).await?.session_id,
    };
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(&session_id)
        .execute(&state.db)
        .await?;
    revoke::announce(&state, revoke::Revoked::Session(session_id));
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user's profile (the seed's name for `GET /api/users/me`).
#[utoipa::path(get, path = "/api/auth/profile", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = convo_shared::ErrorBody)))]
async fn profile(State(state): State<AppState>, me: AuthUser) -> ApiResult<Json<User>> {
    crate::users::me_inner(&state, &me).await
}

/// Ask for a password-reset mail. Always 202, whether or not the address has an account.
#[utoipa::path(post, path = "/api/auth/password/forgot", tag = "auth",
    request_body = ForgotPasswordRequest,
    responses((status = 202, body = MessageResponse), (status = 422, body = convo_shared::ErrorBody)))]
async fn forgot_password(
    State(state): State<AppState>,
    Json(req): Json<ForgotPasswordRequest>,
) -> ApiResult<(StatusCode, Json<MessageResponse>)> {
    let email = validate::email(&req.email)?;
    // The work happens after the answer, so the answer's timing tells nothing either.
    tokio::spawn(async move {
        if let Err(e) = send_reset_mail(&state, &email).await {
            tracing::warn!(error = %e, "password reset mail not sent");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageResponse {
            message: "If an account uses this address, a reset link is on its way.".into(),
        }),
    ))
}

#[derive(Debug, thiserror::Error)]
enum ResetMailError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
}

async fn send_reset_mail(state: &AppState, email: &str) -> Result<(), ResetMailError> {
    let Some(user) = crate::users::find_user_by_email(&state.db, email).await? else {
        return Ok(());
    };
    let key = format!("reset:{}", user.id);
    let now = Instant::now();
    if lock(&state.reset_mail_throttle).check(&key, now).is_err() {
        tracing::warn!(user_id = %user.id, "reset mails throttled");
        return Ok(());
    }
    lock(&state.reset_mail_throttle).fail(&key, now);
    let token = tokens::random_token(32);
    let now = now_ms();
    let ttl = i64::try_from(state.config.reset_token_ttl.as_millis()).unwrap_or(3_600_000);
    // A new link replaces any earlier one.
    sqlx::query("UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(&user.id)
        .execute(&state.db)
        .await?;
    sqlx::query(
        "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(tokens::digest(&token))
    .bind(&user.id)
    .bind(now)
    .bind(now.saturating_add(ttl))
    .execute(&state.db)
    .await?;
    let link = format!("{}/reset-password?token={token}", state.config.public_url);
    state
        .mailer
        .send_password_reset(
            &user.email,
            &link,
            &token,
            state.config.reset_token_ttl.as_secs() / 60,
        )
        .await?;
    tracing::info!(user_id = %user.id, "password reset mail sent");
    Ok(())
}

/// Set a new password with the token from the reset mail. Ends every session of the account.
#[utoipa::path(post, path = "/api/auth/password/reset", tag = "auth",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password changed"),
        (status = 400, body = convo_shared::ErrorBody, description = "`invalid_reset_token`"),
        (status = 422, body = convo_shared::ErrorBody),
        (status = 503, body = convo_shared::ErrorBody, description = "`unavailable`: too many passwords being checked at once, with Retry-After"),
    ))]
async fn reset_password(
    State(state): State<AppState>,
    Json(req): Json<ResetPasswordRequest>,
) -> ApiResult<StatusCode> {
    let bad_token = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidResetToken,
            "This reset link is invalid, used or expired. Ask for a new one.",
        )
    };
    if validate::token("token", &req.token).is_err() {
        return Err(bad_token());
    }
    validate::password("password", &req.password)?;
    let digest = tokens::digest(&req.token);
    let now = now_ms();
    let user_id: String = sqlx::query_scalar(
        "SELECT user_id FROM password_resets
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(&digest)
    .bind(now)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(bad_token)?;
    let hash = password::hash(req.password).await?;
    let mut tx = state.db.begin().await?;
    let claimed = sqlx::query(
        "UPDATE password_resets SET used_at = $1
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(&digest)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        return Err(bad_token());
    }
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(&hash)
        .bind(now)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    revoke::announce(
        &state,
        revoke::Revoked::User {
            user_id: user_id.clone(),
            except: None,
        },
    );
    // Whoever proved control of the mailbox may sign in again at once.
    lock(&state.login_throttle).clear(&format!("acct:{user_id}"));
    tracing::info!(%user_id, "password reset");
    Ok(StatusCode::NO_CONTENT)
}
