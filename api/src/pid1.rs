//! [`Pid1`]: the backend on a berth host, PID 1 over the API channel.
//!
//! Requests go out with fresh ids; one reader task takes every message PID 1 sends and
//! hands each response to the request waiting for its id, and each event to the
//! subscribers of [`Pid1::events`]. A request PID 1 does not answer within
//! [`ANSWER_TIMEOUT`] fails with 503 rather than holding its client forever. If the
//! channel breaks (PID 1 closed it, or sent something that is not a message of the API
//! protocol), the reader ends the process: PID 1 restarts the API server, and a clean
//! start is simpler to trust than a repaired one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::api::{ApiEvent, ApiRequest, ApiResponse};
use berth_proto::{Channel, ChannelError, IdGen, Message, Received, RequestId};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{broadcast, oneshot};

use crate::backend::{Answer, Backend, BackendError};

/// How long a request may wait for PID 1's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered for a slow `/events` client before it misses some.
const EVENT_BUFFER: usize = 1024;

type Waiting = Arc<Mutex<HashMap<RequestId, oneshot::Sender<ApiResponse>>>>;

/// PID 1, as the API server's backend.
pub struct Pid1 {
    channel: Arc<AsyncFd<Channel>>,
    ids: Mutex<IdGen>,
    waiting: Waiting,
    events: broadcast::Sender<ApiEvent>,
}

impl Pid1 {
    /// Wraps the API channel and starts its reader on the current tokio runtime.
    /// `on_broken` runs once if the channel breaks (the helper exits there).
    pub fn start(
        channel: Channel,
        on_broken: impl FnOnce(&ChannelError) + Send + 'static,
    ) -> Result<Arc<Pid1>, ChannelError> {
        channel.set_nonblocking()?;
        let channel = Arc::new(crate::sys::register(channel).map_err(ChannelError::Io)?);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let pid1 = Arc::new(Pid1 {
            channel: channel.clone(),
            ids: Mutex::new(IdGen::default()),
            waiting: Arc::default(),
            events: events.clone(),
        });
        let waiting = pid1.waiting.clone();
        tokio::spawn(async move {
            let e = read_loop(&channel, &waiting, &events).await;
            log::error!("API channel to PID 1: {e}");
            on_broken(&e);
        });
        Ok(pid1)
    }

    /// Container events as PID 1 reports them, for `/events` and waits.
    pub fn events(&self) -> broadcast::Receiver<ApiEvent> {
        self.events.subscribe()
    }

    async fn ask(&self, request: ApiRequest) -> Result<ApiResponse, BackendError> {
        let request_kind = request.clone();
        let id = match self.ids.lock() {
            Ok(mut ids) => ids.next_id(),
            Err(_) => return Err(BackendError::Unavailable("request ids poisoned".into())),
        };
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id, tx);
        }
        let message: Message<ApiRequest, ApiResponse, ApiEvent> =
            Message::Request { id, body: request };
        let sent = self.send(&message).await;
        if let Err(e) = sent {
            self.forget(id);
            return Err(BackendError::Unavailable(e.to_string()));
        }
        match tokio::time::timeout(answer_deadline(&request_kind), rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(BackendError::Unavailable("the channel closed".into())),
            Err(_) => {
                self.forget(id);
                Err(BackendError::Unavailable(format!(
                    "no answer within {} s",
                    answer_deadline(&request_kind).as_secs()
                )))
            }
        }
    }

    fn forget(&self, id: RequestId) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&id);
        }
    }

    /// Sends, waiting for room while PID 1's queue is full.
    async fn send(
        &self,
        message: &Message<ApiRequest, ApiResponse, ApiEvent>,
    ) -> Result<(), ChannelError> {
        loop {
            let mut guard = self
                .channel
                .ready(Interest::WRITABLE)
                .await
                .map_err(ChannelError::Io)?;
            match self.channel.get_ref().send(message, &[]) {
                Err(ChannelError::Full) => guard.clear_ready(),
                other => return other,
            }
        }
    }
}

/// How long PID 1 may take to answer: a stop waits for the container's exit, which its
/// stop timeout bounds, plus the kill's own wait.
fn answer_deadline(request: &ApiRequest) -> Duration {
    match request {
        ApiRequest::StopContainer { timeout_secs, .. }
        | ApiRequest::RestartContainer { timeout_secs, .. } => {
            ANSWER_TIMEOUT + Duration::from_secs(u64::from(timeout_secs.unwrap_or(600)))
        }
        ApiRequest::StartContainer { .. } => ANSWER_TIMEOUT * 4,
        _ => ANSWER_TIMEOUT,
    }
}

impl Backend for Pid1 {
    fn call(&self, request: ApiRequest) -> Answer<'_> {
        Box::pin(self.ask(request))
    }
}

/// Reads until the channel breaks; returns why.
async fn read_loop(
    channel: &AsyncFd<Channel>,
    waiting: &Waiting,
    events: &broadcast::Sender<ApiEvent>,
) -> ChannelError {
    loop {
        let mut guard = match channel.readable().await {
            Ok(g) => g,
            Err(e) => return ChannelError::Io(e),
        };
        loop {
            match channel
                .get_ref()
                .recv::<ApiRequest, ApiResponse, ApiEvent>()
            {
                Ok(Received::Message(Message::Response { id, body }, _fds)) => {
                    let waiter = waiting.lock().ok().and_then(|mut w| w.remove(&id));
                    match waiter {
                        Some(tx) => {
                            let _ = tx.send(body);
                        }
                        None => log::debug!("PID 1 answered request {id}, which no longer waits"),
                    }
                }
                Ok(Received::Message(Message::Event(event), _)) => {
                    let _ = events.send(event);
                }
                Ok(Received::Message(Message::Request { id, .. }, _)) => {
                    return ChannelError::Io(std::io::Error::other(format!(
                        "PID 1 sent a request ({id}); the API channel has none that way"
                    )))
                }
                Ok(Received::Nothing) => {
                    guard.clear_ready();
                    break;
                }
                Ok(Received::Closed) => return ChannelError::Closed,
                Err(e) => return e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type FromPid1 = Message<ApiRequest, ApiResponse, ApiEvent>;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn answers_reach_their_requests_out_of_order() {
        let (ours, theirs) = Channel::pair().unwrap();
        // PID 1's side: take two requests, answer the second first.
        let pid1_side = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for _ in 0..2 {
                match theirs.recv::<ApiRequest, ApiResponse, ApiEvent>().unwrap() {
                    Received::Message(Message::Request { id, body }, _) => asked.push((id, body)),
                    other => panic!("{other:?}"),
                }
            }
            for (id, body) in asked.into_iter().rev() {
                let answer = match body {
                    ApiRequest::ListContainers => ApiResponse::Containers(Vec::new()),
                    _ => ApiResponse::Failed(berth_proto::api::Failure {
                        kind: berth_proto::api::FailureKind::NotFound,
                        message: "No such container: x".into(),
                    }),
                };
                let m: FromPid1 = Message::Response { id, body: answer };
                theirs.send(&m, &[]).unwrap();
            }
            theirs
        });
        rt().block_on(async {
            let pid1 = Pid1::start(ours, |_| {}).unwrap();
            let (a, b) = tokio::join!(
                pid1.call(ApiRequest::ListContainers),
                pid1.call(ApiRequest::InspectContainer {
                    reference: "x".into()
                })
            );
            assert_eq!(a.unwrap(), ApiResponse::Containers(Vec::new()));
            assert!(matches!(b.unwrap(), ApiResponse::Failed(_)));
        });
        drop(pid1_side.join().unwrap());
    }

    #[test]
    fn a_broken_channel_is_reported_once() {
        let (ours, theirs) = Channel::pair().unwrap();
        theirs.send_bytes(b"not json", &[]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        rt().block_on(async {
            let _pid1 = Pid1::start(ours, move |e| tx.send(e.to_string()).unwrap()).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let why = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert!(why.contains("malformed"), "{why}");
        drop(theirs);
    }

    #[test]
    fn events_reach_subscribers() {
        let (ours, theirs) = Channel::pair().unwrap();
        rt().block_on(async {
            let pid1 = Pid1::start(ours, |_| {}).unwrap();
            let mut events = pid1.events();
            let m: FromPid1 = Message::Event(ApiEvent::Container {
                id: "a".repeat(64),
                name: "web".into(),
                image: "busybox".into(),
                action: "start".into(),
                time_nano: 1,
                exit_code: None,
            });
            theirs.send(&m, &[]).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(2), events.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(got, ApiEvent::Container { ref action, .. } if action == "start"));
        });
    }
}
