//! Method and path to [`Route`]: every endpoint berth serves, with its path parameters.
//!
//! As dockerd, every route answers both unversioned (`/containers/json`) and under a
//! version prefix (`/v1.44/containers/json`); the prefix's version is returned beside the
//! route, and one outside [`MIN_API_VERSION`]..=[`API_VERSION`] is refused the way dockerd
//! refuses it. Image names contain `/` (`docker.io/library/busybox:latest`), so image
//! routes match their fixed suffix and take everything before it as the name.

use std::fmt;

/// The newest API version berth speaks.
pub const API_VERSION: ApiVersion = ApiVersion(1, 47);
/// The oldest API version berth accepts (dockerd's own minimum).
pub const MIN_API_VERSION: ApiVersion = ApiVersion(1, 24);

/// `major.minor`, ordered as numbers (1.9 < 1.24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.split_once('.')?;
        let num = |t: &str| {
            (!t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        };
        Some(ApiVersion(num(major)?, num(minor)?))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// An HTTP method berth routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn parse(m: &str) -> Option<Method> {
        Some(match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }
}

/// One endpoint and its path parameters (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Version,
    Info,
    Events,
    ContainerList,
    ContainerCreate,
    ContainerPrune,
    ContainerInspect(String),
    ContainerTop(String),
    ContainerLogs(String),
    ContainerStats(String),
    ContainerResize(String),
    ContainerStart(String),
    ContainerStop(String),
    ContainerRestart(String),
    ContainerKill(String),
    ContainerRename(String),
    ContainerPause(String),
    ContainerUnpause(String),
    ContainerAttach(String),
    ContainerWait(String),
    ContainerRemove(String),
    ExecCreate(String),
    ExecStart(String),
    ExecResize(String),
    ExecInspect(String),
    ImageList,
    ImageCreate,
    ImageLoad,
    ImagePrune,
    ImageSaveMany,
    ImageInspect(String),
    ImageTag(String),
    ImageRemove(String),
    ImageSave(String),
    NetworkList,
    NetworkInspect(String),
    VolumeList,
    VolumeCreate,
    VolumePrune,
    VolumeInspect(String),
    VolumeRemove(String),
}

/// Why a request has no route. Rendered as dockerd renders each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// 404 `page not found`, as dockerd's router answers.
    #[error("page not found")]
    NotFound,
    /// 405: the path exists, the method does not.
    #[error("method {method} not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// 400: a `/vX.Y` prefix berth does not speak.
    #[error("client version {0} is too new. Maximum supported API version is {API_VERSION}")]
    VersionTooNew(ApiVersion),
    #[error("client version {0} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version")]
    VersionTooOld(ApiVersion),
    /// 400: a path parameter that does not decode.
    #[error("invalid path parameter {0:?}")]
    BadParameter(String),
}

impl RouteError {
    /// The HTTP status dockerd gives it.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NotFound => 404,
            RouteError::MethodNotAllowed { .. } => 405,
            RouteError::VersionTooNew(_)
            | RouteError::VersionTooOld(_)
            | RouteError::BadParameter(_) => 400,
        }
    }
}

/// Routes `method` and `path` (without the query string).
pub fn route(method: &str, path: &str) -> Result<(Option<ApiVersion>, Route), RouteError> {
    let (version, rest) = split_version(path)?;
    let method = Method::parse(method).ok_or_else(|| RouteError::MethodNotAllowed {
        method: method.to_owned(),
        path: path.to_owned(),
    })?;
    let not_allowed = || RouteError::MethodNotAllowed {
        method: format!("{method:?}").to_uppercase(),
        path: path.to_owned(),
    };
    let found = match_path(method, rest)?.ok_or_else(not_allowed)?;
    Ok((version, found))
}

/// Splits off a `/v1.NN` prefix and checks it.
fn split_version(path: &str) -> Result<(Option<ApiVersion>, &str), RouteError> {
    let Some(after) = path.strip_prefix("/v") else {
        return Ok((None, path));
    };
    let (candidate, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let Some(version) = ApiVersion::parse(candidate) else {
        // `/volumes`, say: not a version prefix at all.
        return Ok((None, path));
    };
    if version > API_VERSION {
        return Err(RouteError::VersionTooNew(version));
    }
    if version < MIN_API_VERSION {
        return Err(RouteError::VersionTooOld(version));
    }
    Ok((Some(version), rest))
}

/// Percent-decodes one path parameter; it must be non-empty UTF-8 without NUL.
fn param(raw: &str) -> Result<String, RouteError> {
    let bytes: Vec<u8> =
        percent_decode(raw.as_bytes()).ok_or_else(|| RouteError::BadParameter(raw.to_owned()))?;
    match String::from_utf8(bytes) {
        Ok(s) if !s.is_empty() && !s.contains('\0') => Ok(s),
        _ => Err(RouteError::BadParameter(raw.to_owned())),
    }
}

fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// `Ok(None)`: the path exists but not for this method.
fn match_path(m: Method, path: &str) -> Result<Option<Route>, RouteError> {
    use Method::*;
    use Route::*;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["_ping"] => (m == Get || m == Head).then_some(Ping),
        ["version"] => (m == Get).then_some(Version),
        ["info"] => (m == Get).then_some(Info),
        ["events"] => (m == Get).then_some(Events),
        ["containers", "json"] => (m == Get).then_some(ContainerList),
        ["containers", "create"] => (m == Post).then_some(ContainerCreate),
        ["containers", "prune"] => (m == Post).then_some(ContainerPrune),
        ["containers", id] => (m == Delete)
            .then(|| param(id).map(ContainerRemove))
            .transpose()?,
        ["containers", id, action] => {
            let id = param(id)?;
            match (m, *action) {
                (Get, "json") => Some(ContainerInspect(id)),
                (Get, "top") => Some(ContainerTop(id)),
                (Get, "logs") => Some(ContainerLogs(id)),
                (Get, "stats") => Some(ContainerStats(id)),
                (Post, "resize") => Some(ContainerResize(id)),
                (Post, "start") => Some(ContainerStart(id)),
                (Post, "stop") => Some(ContainerStop(id)),
                (Post, "restart") => Some(ContainerRestart(id)),
                (Post, "kill") => Some(ContainerKill(id)),
                (Post, "rename") => Some(ContainerRename(id)),
                (Post, "pause") => Some(ContainerPause(id)),
                (Post, "unpause") => Some(ContainerUnpause(id)),
                (Post, "attach") => Some(ContainerAttach(id)),
                (Post, "wait") => Some(ContainerWait(id)),
                (Post, "exec") => Some(ExecCreate(id)),
                (
                    _,
                    "json" | "top" | "logs" | "stats" | "resize" | "start" | "stop" | "restart"
                    | "kill" | "rename" | "pause" | "unpause" | "attach" | "wait" | "exec",
                ) => None,
                _ => return Err(RouteError::NotFound),
            }
        }
        ["exec", id, action] => {
            let id = param(id)?;
            match (m, *action) {
                (Post, "start") => Some(ExecStart(id)),
                (Post, "resize") => Some(ExecResize(id)),
                (Get, "json") => Some(ExecInspect(id)),
                (_, "start" | "resize" | "json") => None,
                _ => return Err(RouteError::NotFound),
            }
        }
        ["images", "json"] => (m == Get).then_some(ImageList),
        ["images", "create"] => (m == Post).then_some(ImageCreate),
        ["images", "load"] => (m == Post).then_some(ImageLoad),
        ["images", "prune"] => (m == Post).then_some(ImagePrune),
        ["images", "get"] => (m == Get).then_some(ImageSaveMany),
        ["images", ..] => return image_route(m, path),
        ["networks"] => (m == Get).then_some(NetworkList),
        ["networks", id] => (m == Get)
            .then(|| param(id).map(NetworkInspect))
            .transpose()?,
        ["volumes"] => (m == Get).then_some(VolumeList),
        ["volumes", "create"] => (m == Post).then_some(VolumeCreate),
        ["volumes", "prune"] => (m == Post).then_some(VolumePrune),
        ["volumes", name] => {
            let name = param(name)?;
            match m {
                Get => Some(VolumeInspect(name)),
                Delete => Some(VolumeRemove(name)),
                _ => None,
            }
        }
        _ => return Err(RouteError::NotFound),
    };
    Ok(route)
}

/// `/images/{name}/json|tag|get` and `DELETE /images/{name}`, where the name may hold `/`.
fn image_route(m: Method, path: &str) -> Result<Option<Route>, RouteError> {
    use Method::*;
    let rest = path
        .trim_start_matches('/')
        .strip_prefix("images/")
        .ok_or(RouteError::NotFound)?;
    for (suffix, method, make) in [
        ("/json", Get, Route::ImageInspect as fn(String) -> Route),
        ("/tag", Post, Route::ImageTag),
        ("/get", Get, Route::ImageSave),
    ] {
        if let Some(name) = rest.strip_suffix(suffix) {
            return (m == method).then(|| param(name).map(make)).transpose();
        }
    }
    match m {
        Delete => Ok(Some(Route::ImageRemove(param(rest)?))),
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_and_unversioned_paths_route_alike() {
        assert_eq!(route("GET", "/_ping").unwrap(), (None, Route::Ping));
        assert_eq!(route("HEAD", "/_ping").unwrap(), (None, Route::Ping));
        assert_eq!(
            route("GET", "/v1.44/containers/json").unwrap(),
            (Some(ApiVersion(1, 44)), Route::ContainerList)
        );
        assert_eq!(
            route("POST", "/v1.24/containers/abc/start").unwrap().1,
            Route::ContainerStart("abc".into())
        );
        assert_eq!(
            route("DELETE", "/v1.41/containers/web").unwrap().1,
            Route::ContainerRemove("web".into())
        );
        // `/volumes` is not a version prefix.
        assert_eq!(route("GET", "/volumes").unwrap(), (None, Route::VolumeList));
        assert_eq!(
            route("GET", "/v1.44/volumes/data").unwrap().1,
            Route::VolumeInspect("data".into())
        );
    }

    #[test]
    fn versions_outside_the_range_are_refused_as_dockerd_does() {
        let err = route("GET", "/v1.99/version").unwrap_err();
        assert_eq!(err, RouteError::VersionTooNew(ApiVersion(1, 99)));
        assert_eq!(err.status(), 400);
        assert_eq!(
            err.to_string(),
            "client version 1.99 is too new. Maximum supported API version is 1.47"
        );
        assert_eq!(
            route("GET", "/v1.12/version").unwrap_err(),
            RouteError::VersionTooOld(ApiVersion(1, 12))
        );
        // 1.9 is older than 1.24, compared as numbers.
        assert!(ApiVersion(1, 9) < ApiVersion(1, 24));
    }

    #[test]
    fn image_names_keep_their_slashes_and_colons() {
        assert_eq!(
            route("GET", "/v1.44/images/docker.io/library/busybox:latest/json")
                .unwrap()
                .1,
            Route::ImageInspect("docker.io/library/busybox:latest".into())
        );
        assert_eq!(
            route("POST", "/images/busybox/tag").unwrap().1,
            Route::ImageTag("busybox".into())
        );
        assert_eq!(
            route("DELETE", "/images/registry.example%3A5000/app")
                .unwrap()
                .1,
            Route::ImageRemove("registry.example:5000/app".into())
        );
        assert_eq!(
            route("GET", "/images/busybox/get").unwrap().1,
            Route::ImageSave("busybox".into())
        );
        assert_eq!(route("GET", "/images/get").unwrap().1, Route::ImageSaveMany);
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(route("GET", "/nope").unwrap_err(), RouteError::NotFound);
        assert_eq!(
            route("GET", "/containers/x/nope").unwrap_err(),
            RouteError::NotFound
        );
        let err = route("GET", "/containers/x/start").unwrap_err();
        assert_eq!(err.status(), 405);
        assert_eq!(route("PATCH", "/_ping").unwrap_err().status(), 405);
        assert!(matches!(
            route("GET", "/containers/%zz/json").unwrap_err(),
            RouteError::BadParameter(_)
        ));
        assert!(matches!(
            route("GET", "/containers/a%00b/json").unwrap_err(),
            RouteError::BadParameter(_)
        ));
    }
}
