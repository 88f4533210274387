//! `/events`: what happened to containers (reported by PID 1) and images (done here), in
//! Docker's event shape, live and replayed.
//!
//! The bus keeps the last [`RECENT`] events so that `since` can replay them; a client
//! that reads too slowly to keep up with [`LIVE_BUFFER`] events loses the oldest, as
//! dockerd's do, rather than growing the server's memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use berth_proto::api::ApiEvent;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::query::Filters;

/// Events kept for `since`.
pub const RECENT: usize = 1024;
/// Events buffered per live subscriber.
const LIVE_BUFFER: usize = 1024;

/// One event, as Docker's JSON has it (with the pre-1.22 `status`/`id`/`from` too, which
/// old clients still read).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// An image event (`load`, `tag`, `untag`, `delete`) of the API server's own.
    pub fn image(action: &str, id: &str, name: &str, time_nano: i64) -> Event {
        Event {
            status: action.to_owned(),
            id: id.to_owned(),
            from: String::new(),
            kind: "image".to_owned(),
            action: action.to_owned(),
            actor: Actor {
                id: id.to_owned(),
                attributes: BTreeMap::from([("name".to_owned(), name.to_owned())]),
            },
            scope: "local".to_owned(),
            time: time_nano / 1_000_000_000,
            time_nano,
        }
    }

    /// A container event as PID 1 reported it.
    pub fn from_pid1(e: &ApiEvent) -> Event {
        match e {
            ApiEvent::Container {
                id,
                name,
                image,
                action,
                time_nano,
                exit_code,
            } => {
                let mut attributes = BTreeMap::from([
                    ("name".to_owned(), name.clone()),
                    ("image".to_owned(), image.clone()),
                ]);
                if let Some(code) = exit_code {
                    attributes.insert("exitCode".to_owned(), code.to_string());
                }
                Event {
                    status: action.clone(),
                    id: id.clone(),
                    from: image.clone(),
                    kind: "container".to_owned(),
                    action: action.clone(),
                    actor: Actor {
                        id: id.clone(),
                        attributes,
                    },
                    scope: "local".to_owned(),
                    time: time_nano / 1_000_000_000,
                    time_nano: *time_nano,
                }
            }
        }
    }

    /// Whether the event passes `/events` filters: `type`, `event`, `container`,
    /// `image`, `label` (each key's values are alternatives; all keys must pass).
    pub fn matches(&self, f: &Filters) -> bool {
        let attr = |k: &str| {
            self.actor
                .attributes
                .get(k)
                .map(String::as_str)
                .unwrap_or("")
        };
        f.any("type", |t| t == self.kind)
            && f.any("event", |a| {
                a == self.action || self.action.starts_with(&format!("{a}:"))
            })
            && f.any("container", |c| {
                self.kind == "container" && (self.actor.id.starts_with(c) || attr("name") == c)
            })
            && f.any("image", |i| {
                crate::handlers::same_image(attr("image"), i)
                    || crate::handlers::same_image(attr("name"), i)
                    || self.actor.id.starts_with(i)
            })
            && f.labels_match(&self.actor.attributes)
    }
}

/// The filters `/events` takes.
pub const EVENT_FILTERS: &[&str] = &["type", "event", "container", "image", "label"];

/// Where events are published and subscribed to.
pub struct EventBus {
    live: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            live: broadcast::channel(LIVE_BUFFER).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

impl EventBus {
    pub fn publish(&self, event: Event) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.live.send(event);
    }

    /// The kept events at or after `since_nano`, and a live subscription from now on.
    /// Subscribing under the same lock as the copy means no event falls between them.
    pub fn subscribe(&self, since_nano: Option<i64>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        match self.recent.lock() {
            Ok(recent) => {
                let past = since_nano
                    .map(|s| {
                        recent
                            .iter()
                            .filter(|e| e.time_nano >= s)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (past, self.live.subscribe())
            }
            Err(_) => (Vec::new(), self.live.subscribe()),
        }
    }
}

/// `since`/`until` as Docker takes them: unix seconds, with an optional `.nanoseconds`
/// part, or an RFC 3339 time. In nanoseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Some(secs) = crate::time::parse_rfc3339(s) {
        return secs.checked_mul(1_000_000_000);
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_dockers() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("soon"), None);
        assert_eq!(parse_time("1.1234567891"), None);
    }

    #[test]
    fn replay_and_filters() {
        let bus = EventBus::default();
        bus.publish(Event::image("load", "sha256:a", "demo:1", 10));
        bus.publish(Event::from_pid1(&ApiEvent::Container {
            id: "c".repeat(64),
            name: "web".into(),
            image: "busybox".into(),
            action: "die".into(),
            time_nano: 20,
            exit_code: Some(3),
        }));
        let (past, _live) = bus.subscribe(Some(15));
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].actor.attributes["exitCode"], "3");
        let only_images = Filters::from_json(r#"{"type":["image"]}"#).unwrap();
        let by_name = Filters::from_json(r#"{"container":["web"],"event":["die"]}"#).unwrap();
        let (all, _) = bus.subscribe(Some(0));
        assert_eq!(all.iter().filter(|e| e.matches(&only_images)).count(), 1);
        assert_eq!(all.iter().filter(|e| e.matches(&by_name)).count(), 1);
        let json = serde_json::to_value(&all[1]).unwrap();
        assert_eq!(json["Type"], "container");
        assert_eq!(json["status"], "die");
        assert_eq!(json["Actor"]["Attributes"]["name"], "web");
        for _ in 0..RECENT + 5 {
            bus.publish(Event::image("tag", "sha256:a", "demo:2", 30));
        }
        assert_eq!(bus.subscribe(Some(0)).0.len(), RECENT);
    }
}
