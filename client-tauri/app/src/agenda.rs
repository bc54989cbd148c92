//! Upcoming meetings while signed in: polled from the server, a reminder notification shortly
//! before each starts, and the tray's "Join next meeting" pointing at the soonest.
//!
//! `CONVO_REMIND_MINUTES` (default 5) is how long before the start the reminder comes;
//! `CONVO_AGENDA_POLL_SECS` (default 30) how often the list is fetched.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use convo_shared::schedule::ScheduledMeeting;
use tauri::{Emitter, Manager};
use time::OffsetDateTime;

use crate::AppState;

/// The tray item's text with nothing scheduled.
pub const NO_MEETING: &str = "Join next meeting (none scheduled)";

/// A meeting this soon (or running) keeps the app in the tray when the window closes.
const SOON: time::Duration = time::Duration::minutes(60);

#[derive(Default)]
pub struct Agenda {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    meetings: Vec<ScheduledMeeting>,
    reminded: HashSet<String>,
    tray_item: Option<tauri::menu::MenuItem<tauri::Wry>>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn ends_at(m: &ScheduledMeeting) -> OffsetDateTime {
    m.starts_at + time::Duration::minutes(i64::from(m.duration_minutes))
}

/// "in 5 min", "in 2 h 10 min", "in 3 days", "now" (minutes rounded up: 90 s is "in 2 min").
pub fn relative(until: time::Duration) -> String {
    let minutes = (until.whole_seconds() + 59).div_euclid(60);
    if minutes <= 0 {
        "now".into()
    } else if minutes < 60 {
        format!("in {minutes} min")
    } else if minutes < 24 * 60 {
        match minutes % 60 {
            0 => format!("in {} h", minutes / 60),
            m => format!("in {} h {m} min", minutes / 60),
        }
    } else {
        let days = minutes / (24 * 60);
        format!("in {days} day{}", if days == 1 { "" } else { "s" })
    }
}

/// What a reminder says.
pub fn reminder_text(m: &ScheduledMeeting, now: OffsetDateTime) -> String {
    if m.starts_at <= now {
        format!("“{}” has started in {}", m.title, m.room_name)
    } else {
        format!(
            "“{}” starts {} in {}",
            m.title,
            relative(m.starts_at - now),
            m.room_name
        )
    }
}

/// The meetings to remind of now: starting within `before` or running, not reminded yet.
pub fn due<'a>(
    meetings: &'a [ScheduledMeeting],
    reminded: &HashSet<String>,
    now: OffsetDateTime,
    before: time::Duration,
) -> Vec<&'a ScheduledMeeting> {
    meetings
        .iter()
        .filter(|m| m.starts_at - now <= before && ends_at(m) > now && !reminded.contains(&m.id))
        .collect()
}

impl Agenda {
    pub fn set_tray_item(&self, item: tauri::menu::MenuItem<tauri::Wry>) {
        lock(&self.inner).tray_item = Some(item);
    }

    /// The room of the soonest meeting not over yet.
    pub fn next_room(&self) -> Option<String> {
        let now = OffsetDateTime::now_utc();
        lock(&self.inner)
            .meetings
            .iter()
            .find(|m| ends_at(m) > now)
            .map(|m| m.room_id.clone())
    }

    /// Whether a meeting runs now or starts within the hour.
    pub fn meeting_soon(&self) -> bool {
        let now = OffsetDateTime::now_utc();
        lock(&self.inner)
            .meetings
            .iter()
            .any(|m| ends_at(m) > now && m.starts_at - now <= SOON)
    }
}

/// The tray's "Join next meeting" item for the soonest meeting, or disabled with none.
fn show_next(
    item: Option<tauri::menu::MenuItem<tauri::Wry>>,
    next: Option<&ScheduledMeeting>,
    now: OffsetDateTime,
) {
    let Some(item) = item else { return };
    let text = match next {
        Some(m) => format!(
            "Join next meeting: {} ({})",
            m.title,
            relative(m.starts_at - now)
        ),
        None => NO_MEETING.to_string(),
    };
    let _ = item.set_text(text);
    let _ = item.set_enabled(next.is_some());
}

/// Fetches the meetings, reminds of those due, updates the tray and tells the ui.
pub async fn refresh(app: &tauri::AppHandle) {
    use tauri_plugin_notification::NotificationExt;
    let state = app.state::<AppState>();
    let Ok((api, token)) = state.session.authed().await else {
        // Signed out: nothing to remind of.
        let item = {
            let mut inner = lock(&state.agenda.inner);
            inner.meetings.clear();
            inner.tray_item.clone()
        };
        show_next(item, None, OffsetDateTime::now_utc());
        return;
    };
    let list = match api.upcoming_meetings(&token).await {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!(error = %e, "no agenda");
            return;
        }
    };
    let now = OffsetDateTime::now_utc();
    let before = time::Duration::minutes(env_number("CONVO_REMIND_MINUTES", 5) as i64);
    let (reminders, item) = {
        let mut inner = lock(&state.agenda.inner);
        let due: Vec<(String, String)> = due(&list.meetings, &inner.reminded, now, before)
            .into_iter()
            .map(|m| (m.id.clone(), reminder_text(m, now)))
            .collect();
        for (id, _) in &due {
            inner.reminded.insert(id.clone());
        }
        inner.meetings = list.meetings.clone();
        let texts: Vec<String> = due.into_iter().map(|(_, text)| text).collect();
        (texts, inner.tray_item.clone())
    };
    // Outside the lock: a menu item's setters wait for the main thread, which may itself be
    // waiting for the lock (closing the window asks `meeting_soon`).
    show_next(item, list.meetings.iter().find(|m| ends_at(m) > now), now);
    for text in reminders {
        if let Err(e) = app
            .notification()
            .builder()
            .title("ConvoConnect")
            .body(crate::notification_text(&text))
            .show()
        {
            tracing::debug!(error = %e, "reminder not shown");
        }
    }
    let _ = app.emit("agenda", &list);
}

/// Polls for as long as the app runs.
pub async fn run(app: tauri::AppHandle) {
    let every = Duration::from_secs(env_number("CONVO_AGENDA_POLL_SECS", 30));
    loop {
        refresh(&app).await;
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convo_shared::users::UserSummary;

    fn meeting(
        id: &str,
        starts_in_min: i64,
        minutes: u32,
        now: OffsetDateTime,
    ) -> ScheduledMeeting {
        ScheduledMeeting {
            id: id.into(),
            room_id: "abc-defg-hij".into(),
            room_name: "Board".into(),
            title: format!("M{id}"),
            starts_at: now + time::Duration::minutes(starts_in_min),
            duration_minutes: minutes,
            organizer: UserSummary {
                id: "u".into(),
                username: "u".into(),
                display_name: "U".into(),
                avatar_url: None,
            },
            invitees: Vec::new(),
            join_url: String::new(),
        }
    }

    #[test]
    fn reminders_come_once_shortly_before_and_while_running() {
        let now = OffsetDateTime::now_utc();
        let ms = [
            meeting("soon", 3, 30, now),
            meeting("later", 45, 30, now),
            meeting("running", -10, 30, now),
        ];
        let mut reminded = HashSet::new();
        let before = time::Duration::minutes(5);
        let due_now: Vec<_> = due(&ms, &reminded, now, before)
            .iter()
            .map(|m| m.id.clone())
            .collect();
        assert_eq!(due_now, ["soon", "running"]);
        reminded.extend(due_now);
        assert!(due(&ms, &reminded, now, before).is_empty(), "once each");
        // 41 minutes on, the later one is due.
        let then = now + time::Duration::minutes(41);
        let due_then: Vec<_> = due(&ms, &reminded, then, before)
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(due_then, ["later"]);
        assert_eq!(
            reminder_text(&ms[0], now),
            "“Msoon” starts in 3 min in Board"
        );
        assert_eq!(
            reminder_text(&ms[2], now),
            "“Mrunning” has started in Board"
        );
    }

    #[test]
    fn times_read_naturally() {
        let m = time::Duration::minutes;
        assert_eq!(relative(m(0)), "now");
        assert_eq!(relative(m(-3)), "now");
        assert_eq!(relative(m(7)), "in 7 min");
        assert_eq!(relative(time::Duration::seconds(90)), "in 2 min");
        assert_eq!(relative(m(120)), "in 2 h");
        assert_eq!(relative(m(135)), "in 2 h 15 min");
        assert_eq!(relative(m(60 * 24)), "in 1 day");
        assert_eq!(relative(m(60 * 24 * 3 + 5)), "in 3 days");
    }
}
