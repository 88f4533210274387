//! The envelope every message travels in, and request ids.
//!
//! A request and its response share a [`RequestId`]; the side that sends requests draws
//! ids from an [`IdGen`], so that one answer can never be taken for another's. Events
//! (a container exited, netd got a lease) carry no id: nobody asked for them.
//!
//! On the wire (JSON):
//!
//! ```json
//! {"request": {"id": 7, "body": {...}}}
//! {"response": {"id": 7, "body": {...}}}
//! {"event": {...}}
//! ```

use serde::{Deserialize, Serialize};

/// Pairs a response with its request. Unique per sender for the life of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Hands out request ids in order, starting at 1.
#[derive(Debug, Default)]
pub struct IdGen {
    last: u64,
}

impl IdGen {
    /// The next id. Wraps after 2^64 requests, which no channel lives to see.
    pub fn next_id(&mut self) -> RequestId {
        self.last = self.last.wrapping_add(1);
        RequestId(self.last)
    }
}

/// One message: `Req` and `Resp` are the channel's request and response types, `Ev` its
/// events. Each side of a channel names the types it expects; a message of another
/// shape fails to parse and is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Message<Req, Resp, Ev> {
    /// A question that expects exactly one [`Message::Response`] with the same id.
    Request { id: RequestId, body: Req },
    /// The answer to the request with `id`.
    Response { id: RequestId, body: Resp },
    /// Something the sender reports without being asked.
    Event(Ev),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_ordered() {
        let mut ids = IdGen::default();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_eq!(a, RequestId(1));
        assert!(b > a);
        assert_eq!(b.to_string(), "#2");
    }

    #[test]
    fn wire_shape() {
        type M = Message<String, u32, bool>;
        let req: M = Message::Request {
            id: RequestId(7),
            body: "ps".into(),
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"request":{"id":7,"body":"ps"}}"#
        );
        let ev: M = Message::Event(true);
        assert_eq!(serde_json::to_string(&ev).unwrap(), r#"{"event":true}"#);
        let back: M = serde_json::from_str(r#"{"response":{"id":7,"body":3}}"#).unwrap();
        assert_eq!(
            back,
            Message::Response {
                id: RequestId(7),
                body: 3
            }
        );
        // A field the envelope does not have is refused, not ignored.
        assert!(serde_json::from_str::<M>(r#"{"response":{"id":7,"body":3,"x":1}}"#).is_err());
        // So is a body of the wrong type.
        assert!(serde_json::from_str::<M>(r#"{"response":{"id":7,"body":"3"}}"#).is_err());
    }
}
