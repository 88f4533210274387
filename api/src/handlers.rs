//! The handlers: each a thin translation between Docker's HTTP shapes and one typed
//! request to the backend.

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};

use berth_proto::api::{
    ApiRequest, ApiResponse, ContainerState, ContainerView, Failure, FailureKind, SystemInfo,
};

use crate::events::{parse_time, Event, EVENT_FILTERS};
use crate::images::{ImageError, IMAGE_FILTERS};
use crate::query::Query;
use crate::route::{route, Route};
use crate::server::{error, full, json, Reply, Server};
use crate::wire;

/// Routes and answers one request.
pub async fn handle(server: &Server, req: Request<Incoming>) -> Reply {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let route = match route(&method, &path) {
        Ok((_, r)) => r,
        Err(e) => return error(status(e.status()), &e.to_string()),
    };
    let result = match route {
        Route::Ping => Ok(ping(&method)),
        Route::Version => version(server).await,
        Route::Info => info(server).await,
        Route::Events => events(server, &query).await,
        Route::ContainerList => container_list(server, &query).await,
        Route::ContainerInspect(id) => container_inspect(server, id).await,
        Route::ContainerLogs(id) => container_logs(server, id, &query).await,
        Route::ContainerStart(reference) => {
            no_content(server, ApiRequest::StartContainer { reference }).await
        }
        Route::ContainerStop(reference) => match stop_timeout(&query) {
            Ok(timeout_secs) => {
                no_content(server, ApiRequest::StopContainer { reference, timeout_secs }).await
            }
            Err(e) => Err(error(StatusCode::BAD_REQUEST, &e)),
        },
        Route::ContainerRestart(reference) => match stop_timeout(&query) {
            Ok(timeout_secs) => {
                no_content(server, ApiRequest::RestartContainer { reference, timeout_secs }).await
            }
            Err(e) => Err(error(StatusCode::BAD_REQUEST, &e)),
        },
        Route::ContainerWait(reference) => container_wait(server, reference, &query).await,
        Route::ContainerKill(reference) => {
            let signal = query.get("signal").filter(|s| !s.is_empty()).map(str::to_owned);
            no_content(server, ApiRequest::KillContainer { reference, signal }).await
        }
        Route::ContainerCreate => container_create(server, &query, req.into_body()).await,
        Route::ImageList => image_list(server, &query).await,
        Route::ImageInspect(name) => image_inspect(server, name).await,
        Route::ImageTag(name) => image_tag(server, name, &query).await,
        Route::ImageRemove(name) => image_remove(server, name, &query).await,
        Route::ImageLoad => image_load(server, &query, req.into_body()).await,
        Route::ImageSave(name) => image_save(server, vec![name]).await,
        Route::ImageSaveMany => {
            image_save(server, query.all("names").into_iter().map(str::to_owned).collect()).await
        }
        Route::ImageCreate => Err(error(
            StatusCode::NOT_IMPLEMENTED,
            "berth cannot pull images from a registry yet: load them with `docker load` (or bake them into the host with [[image]])",
        )),
        other => Err(error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("berth does not serve {method} {path} yet ({other:?})"),
        )),
    };
    result.unwrap_or_else(|e| e)
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `/_ping`: `OK`, with the headers clients negotiate the version from (added to every
/// response by the server).
fn ping(method: &str) -> Reply {
    let body = if method == "HEAD" { "" } else { "OK" };
    let mut r = Response::new(full(body.as_bytes()));
    let h = r.headers_mut();
    h.insert(
        "Content-Type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    r
}

/// The HTTP response for a failure PID 1 reported.
fn failed(f: &Failure) -> Reply {
    let code = match f.kind {
        FailureKind::Invalid => StatusCode::BAD_REQUEST,
        FailureKind::NotFound => StatusCode::NOT_FOUND,
        FailureKind::Conflict => StatusCode::CONFLICT,
        FailureKind::NotModified => StatusCode::NOT_MODIFIED,
        FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        FailureKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
    };
    if code == StatusCode::NOT_MODIFIED {
        // A 304 carries no body.
        let mut r = Response::new(full(""));
        *r.status_mut() = code;
        return r;
    }
    error(code, &f.message)
}

/// Asks the backend; a failure or no answer becomes the error response.
async fn ask(server: &Server, request: ApiRequest) -> Result<ApiResponse, Reply> {
    match server.backend().call(request).await {
        Ok(ApiResponse::Failed(f)) => Err(failed(&f)),
        Ok(answer) => Ok(answer),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

fn unexpected(asked: &str, got: &ApiResponse) -> Reply {
    log::error!("PID 1 answered {asked} with {got:?}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("PID 1 gave an answer of the wrong kind to {asked}"),
    )
}

async fn system_info(server: &Server) -> Result<SystemInfo, Reply> {
    match ask(server, ApiRequest::SystemInfo).await? {
        ApiResponse::SystemInfo(i) => Ok(i),
        other => Err(unexpected("system info", &other)),
    }
}

async fn containers(server: &Server) -> Result<Vec<ContainerView>, Reply> {
    match ask(server, ApiRequest::ListContainers).await? {
        ApiResponse::Containers(c) => Ok(c),
        other => Err(unexpected("list containers", &other)),
    }
}

async fn version(server: &Server) -> Result<Reply, Reply> {
    let info = system_info(server).await?;
    Ok(json(StatusCode::OK, &wire::Version::of(&info)))
}

async fn info(server: &Server) -> Result<Reply, Reply> {
    let mut info = system_info(server).await?;
    let images = server.images().clone();
    info.images = tokio::task::spawn_blocking(move || images.count())
        .await
        .unwrap_or(0);
    let all = containers(server).await?;
    let now = crate::time::format_rfc3339(std::time::SystemTime::now());
    Ok(json(StatusCode::OK, &wire::Info::of(&info, &all, now)))
}

/// The `filters` keys `/containers/json` takes.
const CONTAINER_FILTERS: &[&str] = &[
    "id", "name", "label", "status", "ancestor", "exited", "health",
];

/// `/containers/json`: `all`, `limit`, `filters`; newest first, as dockerd.
async fn container_list(server: &Server, query: &Query) -> Result<Reply, Reply> {
    let bad = |e: crate::query::QueryError| error(StatusCode::BAD_REQUEST, &e.to_string());
    let filters = query.filters(CONTAINER_FILTERS).map_err(bad)?;
    let limit = query.int("limit").map_err(bad)?;
    let all = query.bool("all") || limit.is_some_and(|n| n > 0) || filters.get("status").is_some();
    let mut list = containers(server).await?;
    list.retain(|c| {
        (all || matches!(
            c.state,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        )) && filters.any("id", |v| c.id.starts_with(v))
            && filters.any("name", |v| c.name.contains(v.trim_start_matches('/')))
            && filters.any("status", |v| v == c.state.as_str())
            && filters.any("ancestor", |v| same_image(v, &c.image))
            && filters.any("exited", |v| {
                c.state == ContainerState::Exited && v.parse::<i32>().ok() == c.exit_code
            })
            && filters.any("health", |v| c.health.as_deref().unwrap_or("none") == v)
            && filters.labels_match(&c.labels)
    });
    list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    if let Some(n) = limit.filter(|n| *n > 0) {
        list.truncate(n as usize);
    }
    let now = crate::time::now_unix();
    let rows: Vec<wire::ContainerSummary> = list
        .iter()
        .map(|c| wire::ContainerSummary::of(c, now))
        .collect();
    Ok(json(StatusCode::OK, &rows))
}

/// `/containers/{id}/json`: `docker inspect`.
async fn container_inspect(server: &Server, reference: String) -> Result<Reply, Reply> {
    match ask(server, ApiRequest::InspectContainer { reference }).await? {
        ApiResponse::Container(view) => {
            Ok(json(StatusCode::OK, &wire::ContainerInspect::of(&view)))
        }
        other => Err(unexpected("inspect container", &other)),
    }
}

async fn container_view(server: &Server, reference: String) -> Result<ContainerView, Reply> {
    match ask(server, ApiRequest::InspectContainer { reference }).await? {
        ApiResponse::Container(view) => Ok(*view),
        other => Err(unexpected("inspect container", &other)),
    }
}

/// `/containers/{id}/logs`: the log as `docker logs` shows it; with `follow`, what
/// comes next too, until the container stops (or `until`, or the client leaves).
async fn container_logs(server: &Server, reference: String, query: &Query) -> Result<Reply, Reply> {
    use crate::logs::{select, Follower, Selection};
    let bad = |m: String| error(StatusCode::BAD_REQUEST, &m);
    let view = container_view(server, reference).await?;
    let tail = match query.get("tail").filter(|t| !t.is_empty() && *t != "all") {
        None => None,
        Some(t) => Some(
            t.parse::<usize>()
                .map_err(|_| bad(format!("tail: {t:?} is not a number or \"all\"")))?,
        ),
    };
    let sel = Selection {
        stdout: query.bool("stdout"),
        stderr: query.bool("stderr"),
        since: event_time(query, "since").map_err(bad)?.filter(|s| *s > 0),
        until: event_time(query, "until").map_err(bad)?.filter(|u| *u > 0),
        tail,
        timestamps: query.bool("timestamps"),
        tty: view.details.tty,
    };
    if !sel.stdout && !sel.stderr {
        return Err(bad(
            "Bad parameters: you must choose at least one stream".to_owned()
        ));
    }
    let log = std::path::PathBuf::from(&view.details.log_path);
    let running = matches!(
        view.state,
        ContainerState::Running | ContainerState::Restarting
    );
    let follow = query.bool("follow") && running;
    // Subscribed before the files are read, so that a stop in between is not missed.
    let (_, mut live) = server.events().subscribe(None);
    let (past, follower) = {
        let log = log.clone();
        let sel = sel.clone();
        tokio::task::spawn_blocking(move || {
            let old = std::fs::read(log.with_extension("1")).unwrap_or_default();
            let now = std::fs::read(&log).unwrap_or_default();
            let follower = Follower::at_end(&log);
            (select(&[&old, &now], &sel), follower)
        })
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading the log: {e}"),
            )
        })?
    };
    let (tx, body) = crate::stream::async_channel();
    let id = view.id.clone();
    let tty = sel.tty;
    tokio::spawn(async move {
        for e in &past {
            if tx.send(Ok(sel.render(e))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut follower = follower;
        let mut stopped = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                e = live.recv() => {
                    if let Ok(e) = e {
                        stopped |= e.kind == "container"
                            && e.actor.id == id
                            && matches!(e.action.as_str(), "die" | "destroy");
                    }
                }
                _ = tx.closed() => return,
            }
            for e in follower.read_new().iter().filter(|e| sel.wants(e)) {
                if tx.send(Ok(sel.render(e))).await.is_err() {
                    return;
                }
            }
            if stopped || sel.until.is_some_and(|u| now_nano() > u) {
                return;
            }
        }
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed(body));
    let kind = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static(kind));
    Ok(r)
}

/// `/containers/{id}/wait?condition=not-running|next-exit`: `{"StatusCode": N}` once the
/// container is not running (at once if it is not) or has next exited. The status line
/// and headers go out first, as clients (`docker run`) wait for them before starting the
/// container. (`removed` waits for the container's removal, which comes with the
/// API's create and rm.)
async fn container_wait(server: &Server, reference: String, query: &Query) -> Result<Reply, Reply> {
    let condition = query
        .get("condition")
        .filter(|c| !c.is_empty())
        .unwrap_or("not-running");
    if !matches!(condition, "not-running" | "next-exit" | "removed") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("condition: {condition:?} is not not-running, next-exit or removed"),
        ));
    }
    // Subscribed before the state is read, so that an exit in between is not missed.
    let (_, mut live) = server.events().subscribe(None);
    let view = container_view(server, reference).await?;
    let running = matches!(
        view.state,
        ContainerState::Running | ContainerState::Restarting
    );
    let (tx, body) = crate::stream::async_channel();
    let status = |code: i64| {
        let mut text = serde_json::json!({ "StatusCode": code, "Error": null }).to_string();
        text.push('\n');
        Ok(bytes::Bytes::from(text))
    };
    if condition == "not-running" && !running {
        let _ = tx.try_send(status(i64::from(view.exit_code.unwrap_or(0))));
    } else {
        let id = view.id.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                tokio::select! {
                    e = live.recv() => match e {
                        Ok(e) if e.kind == "container" && e.actor.id == id && e.action == "die" => {
                            let code = e
                                .actor
                                .attributes
                                .get("exitCode")
                                .and_then(|c| c.parse().ok())
                                .unwrap_or(0);
                            let _ = tx.send(status(code)).await;
                            return;
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
    }
    let mut r = Response::new(http_body_util::BodyExt::boxed(body));
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `t` (or `timeout`, API 1.42+): seconds before a stop kills; -1 or absent: the
/// container's own.
fn stop_timeout(query: &Query) -> Result<Option<u32>, String> {
    let raw = query.int("t").and_then(|t| match t {
        Some(t) => Ok(Some(t)),
        None => query.int("timeout"),
    });
    match raw {
        Err(e) => Err(e.to_string()),
        Ok(None) | Ok(Some(-1)) => Ok(None),
        Ok(Some(t)) if (0..=86_400).contains(&t) => Ok(Some(t as u32)),
        Ok(Some(t)) => Err(format!("t: {t} is not between 0 and 86400 seconds")),
    }
}

/// A request whose success is `204 No Content` (start, stop, restart, kill).
async fn no_content(server: &Server, request: ApiRequest) -> Result<Reply, Reply> {
    match ask(server, request).await? {
        ApiResponse::Done => {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        other => Err(unexpected("a container request", &other)),
    }
}

/// `/containers/create?name=…`: 201 with the new id.
async fn container_create(server: &Server, query: &Query, body: Incoming) -> Result<Reply, Reply> {
    let bytes = server.body(body).await?;
    let spec = crate::create::translate(&bytes, server.policy())
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let name = query
        .get("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let request = ApiRequest::CreateContainer {
        name,
        spec: Box::new(spec),
    };
    match ask(server, request).await? {
        ApiResponse::Created { id, warnings } => Ok(json(
            StatusCode::CREATED,
            &wire::CreateResponse { id, warnings },
        )),
        other => Err(unexpected("create container", &other)),
    }
}

/// Runs blocking store work off the event loop; its error becomes Docker's response.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, Reply> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(status(e.status()), &e.to_string())),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("image store work failed: {e}"),
        )),
    }
}

async fn image_list(server: &Server, query: &Query) -> Result<Reply, Reply> {
    let filters = query
        .filters(IMAGE_FILTERS)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let images = server.images().clone();
    let rows = blocking(move || images.list(&filters)).await?;
    Ok(json(StatusCode::OK, &rows))
}

async fn image_inspect(server: &Server, name: String) -> Result<Reply, Reply> {
    let images = server.images().clone();
    let inspect = blocking(move || images.inspect(&name)).await?;
    Ok(json(StatusCode::OK, &inspect))
}

async fn image_tag(server: &Server, name: String, query: &Query) -> Result<Reply, Reply> {
    let repo = query
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "repo: a repository name is required",
            )
        })?
        .to_owned();
    let tag = query.get("tag").map(str::to_owned);
    let images = server.images().clone();
    let target = match &tag {
        Some(t) if !t.is_empty() => format!("{}:{t}", familiar_image(&repo)),
        _ => familiar_image(&repo).to_owned(),
    };
    let id = blocking(move || images.tag(&name, &repo, tag.as_deref())).await?;
    server
        .events()
        .publish(Event::image("tag", &id, &target, now_nano()));
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

async fn image_remove(server: &Server, name: String, query: &Query) -> Result<Reply, Reply> {
    let force = query.bool("force");
    let images = server.images().clone();
    let items = blocking(move || images.remove(&name, force)).await?;
    for item in &items {
        let (action, what) = match item {
            crate::images::DeleteItem::Untagged(n) => ("untag", n),
            crate::images::DeleteItem::Deleted(id) => ("delete", id),
        };
        server
            .events()
            .publish(Event::image(action, what, what, now_nano()));
    }
    Ok(json(StatusCode::OK, &items))
}

/// `POST /images/load`: the archive is streamed to a file in the store's staging
/// directory (never held in memory), imported, and removed.
async fn image_load(server: &Server, query: &Query, body: Incoming) -> Result<Reply, Reply> {
    let staging = server.images().staging_dir();
    let path = crate::upload::to_file(body, &staging, server.limits().max_upload_bytes)
        .await
        .map_err(|e| error(status(e.status()), &e.to_string()))?;
    let images = server.images().clone();
    let load_path = path.path().to_owned();
    let names = blocking(move || images.load(&load_path)).await;
    drop(path);
    let names = names?;
    for n in &names {
        server
            .events()
            .publish(Event::image("load", n, n, now_nano()));
    }
    // dockerd sends these lines with `quiet` too: only progress is quieted.
    let _ = query.bool("quiet");
    let mut text = String::new();
    for n in &names {
        let line = serde_json::json!({ "stream": format!("Loaded image: {n}\n") });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let mut r = Response::new(full(text));
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `GET /images/{name}/get` and `/images/get?names=…`: the archive, streamed as it is
/// written.
async fn image_save(server: &Server, names: Vec<String>) -> Result<Reply, Reply> {
    if names.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "names: name at least one image",
        ));
    }
    let images = server.images().clone();
    let plan = {
        let images = images.clone();
        blocking(move || images.plan_save(&names)).await?
    };
    let (writer, body) = crate::stream::channel();
    tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        match images.write_save(&plan, &mut writer) {
            Ok(()) => {
                let _ = std::io::Write::flush(&mut writer);
            }
            Err(e) => {
                log::warn!("docker save: {e}");
                writer.fail(e);
            }
        }
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed(body));
    r.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

/// `since` or `until`, in unix nanoseconds.
fn event_time(query: &Query, key: &str) -> Result<Option<i64>, String> {
    match query.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_time(v)
            .map(Some)
            .ok_or_else(|| format!("{key}: {v:?} is not a unix time or RFC 3339 time")),
    }
}

/// Now, in unix nanoseconds.
fn now_nano() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `/events?since=&until=&filters=`: kept events from `since`, then live ones until
/// `until` (or until the client leaves), one JSON object a line. The status line and
/// headers go out at once, before any event, as clients wait for them.
async fn events(server: &Server, query: &Query) -> Result<Reply, Reply> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, &m);
    let filters = query
        .filters(EVENT_FILTERS)
        .map_err(|e| bad(e.to_string()))?;
    let since = event_time(query, "since").map_err(bad)?;
    let until = event_time(query, "until").map_err(bad)?;
    let (past, mut live) = server.events().subscribe(since);
    let (tx, body) = crate::stream::async_channel();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        let line = |e: &Event| {
            let mut text = serde_json::to_vec(e).unwrap_or_default();
            text.push(b'\n');
            Ok(bytes::Bytes::from(text))
        };
        for e in past
            .iter()
            .filter(|e| e.matches(&filters) && until.is_none_or(|u| e.time_nano <= u))
        {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        loop {
            let remaining = match until {
                Some(u) => {
                    let left = u - now_nano();
                    if left <= 0 {
                        return;
                    }
                    std::time::Duration::from_nanos(left as u64)
                }
                None => std::time::Duration::from_secs(3600),
            };
            let next = tokio::select! {
                e = live.recv() => e,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(remaining) => continue,
            };
            match next {
                Ok(e) if e.matches(&filters) => {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed(body));
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    Ok(r)
}

/// Two image names that Docker takes for the same: `busybox`, `busybox:latest` and
/// `docker.io/library/busybox:latest`.
pub fn same_image(a: &str, b: &str) -> bool {
    normalize_image(a) == normalize_image(b)
}

/// Docker's normalization of an image name: the default registry and `library/`
/// namespace for single names, `:latest` when there is neither tag nor digest.
pub fn normalize_image(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{rest}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

/// The short form Docker shows: `docker.io/library/busybox:latest` is `busybox:latest`,
/// `docker.io/me/app:1` is `me/app:1`; other registries stay.
pub fn familiar_image(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_normalize_as_dockers() {
        for same in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            "library/busybox",
        ] {
            assert_eq!(
                normalize_image(same),
                "docker.io/library/busybox:latest",
                "{same}"
            );
        }
        assert_eq!(normalize_image("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize_image("registry.example:5000/app"),
            "registry.example:5000/app:latest"
        );
        assert_eq!(
            normalize_image("localhost/app@sha256:ab"),
            "localhost/app@sha256:ab"
        );
        assert!(!same_image("busybox:1", "busybox"));
        assert_eq!(
            familiar_image("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar_image("docker.io/me/app:1"), "me/app:1");
        assert_eq!(
            familiar_image("registry.example:5000/app"),
            "registry.example:5000/app"
        );
    }
}
