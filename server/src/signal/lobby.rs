//! Waiting rooms: who is waiting to be let into which room. A knock lives while its
//! connection waits; the host's answer (or the connection's end) takes it out.

use std::collections::HashMap;
use std::sync::Mutex;

use convo_shared::users::UserSummary;
use tokio::sync::oneshot;

struct Knock {
    id: String,
    user: UserSummary,
    decide: oneshot::Sender<bool>,
}

#[derive(Default)]
pub struct Lobby(Mutex<HashMap<String, Vec<Knock>>>);

impl std::fmt::Debug for Lobby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lobby(..)")
    }
}

impl Lobby {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Knock>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `user` waits for `room`; the receiver hears the host's answer.
    pub fn knock(&self, room: &str, user: UserSummary) -> (String, oneshot::Receiver<bool>) {
        let id = uuid::Uuid::new_v4().to_string();
        let (decide, answer) = oneshot::channel();
        self.rooms()
            .entry(room.to_string())
            .or_default()
            .push(Knock {
                id: id.clone(),
                user,
                decide,
            });
        (id, answer)
    }

    /// Who waits for `room`, in the order they knocked.
    pub fn waiting(&self, room: &str) -> Vec<(String, UserSummary)> {
        self.rooms()
            .get(room)
            .map(|v| v.iter().map(|k| (k.id.clone(), k.user.clone())).collect())
            .unwrap_or_default()
    }

    /// Answers a knock; false when there is no such knock (answered already, or gone).
    pub fn answer(&self, room: &str, id: &str, admitted: bool) -> bool {
        match self.take(room, id) {
            Some(k) => k.decide.send(admitted).is_ok(),
            None => false,
        }
    }

    /// The knock's connection went away.
    pub fn withdraw(&self, room: &str, id: &str) -> bool {
        self.take(room, id).is_some()
    }

    fn take(&self, room: &str, id: &str) -> Option<Knock> {
        let mut rooms = self.rooms();
        let list = rooms.get_mut(room)?;
        let i = list.iter().position(|k| k.id == id)?;
        let k = list.remove(i);
        if list.is_empty() {
            rooms.remove(room);
        }
        Some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserSummary {
        UserSummary {
            id: format!("u-{name}"),
            username: name.into(),
            display_name: name.into(),
            avatar_url: None,
        }
    }

    #[test]
    fn knocks_are_answered_once_and_in_order() {
        let lobby = Lobby::default();
        let (a, mut ra) = lobby.knock("room", user("ann"));
        let (b, mut rb) = lobby.knock("room", user("ben"));
        let names: Vec<_> = lobby
            .waiting("room")
            .into_iter()
            .map(|(_, u)| u.username)
            .collect();
        assert_eq!(names, ["ann", "ben"]);
        assert!(lobby.answer("room", &a, true));
        assert!(!lobby.answer("room", &a, false), "answered already");
        assert_eq!(ra.try_recv(), Ok(true));
        assert!(!lobby.answer("other", &b, true), "another room's knock");
        assert!(lobby.withdraw("room", &b));
        assert!(rb.try_recv().is_err());
        assert!(lobby.waiting("room").is_empty());
    }
}
