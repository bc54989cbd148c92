//! The application: shared state, the router with its layers, and starting and stopping.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::oneshot;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::throttle::Throttle;
use crate::config::Config;
use crate::db::{self, Db, DbError};
use crate::extract::{self, Json};
use crate::mail::{MailError, Mailer};

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Wrong passwords one room takes from everyone together within the sign-in window.
pub const ROOM_GUESSES_PER_WINDOW: u32 = 50;

pub struct Inner {
    pub db: Db,
    pub config: Config,
    pub mailer: Mailer,
    /// Failed sign-ins per account, per client address, failed room passwords per user and
    /// room, and reset mails per account. Each is a small state machine behind its own lock,
    /// held only for a map lookup.
    pub login_throttle: Mutex<Throttle>,
    pub address_throttle: Mutex<Throttle>,
    pub room_password_throttle: Mutex<Throttle>,
    /// Failed room passwords per room, whoever tried: new accounts cost an attacker nothing,
    /// so the per-user limit alone does not bound the guesses at one room.
    pub room_guess_throttle: Mutex<Throttle>,
    pub reset_mail_throttle: Mutex<Throttle>,
    /// Accounts created per client address in an hour (`CONVO_REGISTRATIONS_PER_HOUR`).
    pub registration_throttle: Mutex<Throttle>,
    /// Chat messages per person (`CHAT_BURST` per `CHAT_WINDOW_SECS`).
    pub chat_throttle: Mutex<Throttle>,
    /// Verified against when a login names no account, so both cases cost the same.
    pub dummy_hash: String,
    /// Who waits in which waiting room.
    pub lobby: crate::signal::lobby::Lobby,
    /// Rooms in session, each owned by its actor.
    pub rooms: crate::signal::room::Rooms,
    /// Ended sessions, told to the connections opened with them.
    pub revocations: crate::auth::revoke::Revocations,
    /// The media plane shared by all rooms.
    pub sfu: Arc<crate::sfu::Sfu>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(db: Db, config: Config, mailer: Mailer, sfu: crate::sfu::Sfu) -> Self {
        let window = config.login_window;
        let max = config.login_max_failures;
        AppState(Arc::new(Inner {
            db,
            mailer,
            login_throttle: Mutex::new(Throttle::new(max, window)),
            address_throttle: Mutex::new(Throttle::new(max.saturating_mul(4), window)),
            room_password_throttle: Mutex::new(Throttle::new(10, window)),
            room_guess_throttle: Mutex::new(Throttle::new(ROOM_GUESSES_PER_WINDOW, window)),
            reset_mail_throttle: Mutex::new(Throttle::new(3, Duration::from_secs(3600))),
            registration_throttle: Mutex::new(Throttle::new(
                config.registrations_per_hour,
                Duration::from_secs(3600),
            )),
            chat_throttle: Mutex::new(Throttle::new(
                convo_shared::limits::CHAT_BURST,
                Duration::from_secs(convo_shared::limits::CHAT_WINDOW_SECS),
            )),
            dummy_hash: crate::auth::password::dummy_hash(),
            rooms: Default::default(),
            revocations: Default::default(),
            lobby: Default::default(),
            sfu: Arc::new(sfu),
            config,
        }))
    }
}

/// Bodies larger than this are refused with 413 (avatar uploads have their own limit).
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ConvoConnect API",
        description = "The companion server of ConvoConnect: accounts, rooms and meetings."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "users", description = "The signed-in user"),
        (name = "rooms", description = "Rooms and their participants"),
        (name = "chat", description = "Messages in a room's meetings"),
        (name = "meetings", description = "Scheduled meetings"),
        (name = "signaling", description = "The real-time WebSocket"),
        (name = "health", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API's routes and their OpenAPI document, built from the same handler list.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health_routes())
        .merge(crate::auth::routes())
        .merge(crate::users::routes())
        .merge(crate::rooms::routes())
        .merge(crate::meetings::routes())
        .merge(crate::chat::routes())
        .merge(crate::schedule::routes())
        .merge(crate::signal::routes())
        .merge(crate::whip::routes())
        .split_for_parts()
}

fn health_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(readyz))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up")))]
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"),
              (status = 503, description = "Database unreachable", body = convo_shared::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if db::ping(&state.db).await {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            convo_shared::ErrorCode::Unavailable,
            "The database is not reachable.",
        )
        .into_response()
    }
}

/// The complete service: routes, OpenAPI document, and the layers around them.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = Arc::new(doc);
    let cors = cors_layer(&state.config.cors_origins);
    api.route(
        "/api/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .fallback(extract::not_found)
    .with_state(state)
    .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
    .layer(CatchPanicLayer::custom(extract::panic_response))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(30),
    ))
    // Outside the timeout and the routing, so their plain answers get the envelope too.
    .layer(axum::middleware::map_response(extract::json_errors))
    .layer(cors)
    // Logs method, path and status; never headers or bodies, which carry tokens and passwords.
    .layer(TraceLayer::new_for_http())
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER, HeaderName::from_static("location")])
        .max_age(Duration::from_secs(600))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("cannot set up media: {0}")]
    Media(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Join links' base when no public URL was given: the address listened on, with its real
/// port; an unspecified address (`0.0.0.0`) is reached here as `localhost` (others need
/// `CONVO_PUBLIC_URL`).
fn public_url_for(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Connects the database, applies migrations and starts listening on `config.bind`
    /// (port 0 picks a free one; see `addr`).
    pub async fn start(mut config: Config) -> Result<Server, StartError> {
        let pool = db::connect(&config.database_url).await?;
        crate::meetings::recover(&pool)
            .await
            .map_err(DbError::Sql)?;
        let mailer = Mailer::new(config.smtp_url.as_deref(), &config.smtp_from)?;
        let sfu =
            crate::sfu::Sfu::new(&config.sfu).map_err(|e| StartError::Media(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        if config.public_url_from_bind {
            config.public_url = public_url_for(addr);
        }
        let state = AppState::new(pool, config, mailer, sfu);
        let app = router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
        });
        tracing::info!(%addr, "listening");
        Ok(Server {
            addr,
            state,
            shutdown: Some(tx),
            task,
        })
    }

    /// Stops accepting, lets requests in flight finish, and closes the database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.state.db.close().await;
    }

    /// Runs until the task ends (e.g. the listener fails).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
    }

    pub fn shutdown_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}
