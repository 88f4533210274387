//! What the container's first process runs as: argv, environment, user and working
//! directory, merged from the image config and the spec the way Docker merges them.
//! Pure functions over bytes already read, so every rule is unit-tested.

use berth_imagefs::oci::RunConfig;

use crate::spec::ContainerSpec;

/// `PATH` when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    #[error("user {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
    #[error("image {what} {value:?} contains a NUL byte")]
    Nul { what: &'static str, value: String },
    #[error("image working directory {0:?} is not an absolute path")]
    RelativeWorkdir(String),
}

/// The process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    /// The user spelled as asked (`name[:group]` or `uid[:gid]`), resolved later.
    pub user: String,
}

/// Entrypoint + Cmd: an entrypoint given in the spec also discards the image's Cmd.
pub fn argv(spec: &ContainerSpec, image: &RunConfig) -> Result<Vec<String>, ProcessError> {
    let (entry, cmd) = match &spec.entrypoint {
        Some(e) => (e.clone(), spec.command.clone().unwrap_or_default()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            spec.command
                .clone()
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
    };
    let argv: Vec<String> = entry.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(ProcessError::NoCommand);
    }
    if let Some(a) = argv.iter().find(|a| a.contains('\0')) {
        return Err(ProcessError::Nul {
            what: "argument",
            value: a.clone(),
        });
    }
    Ok(argv)
}

/// Image Env, then `HOSTNAME`, then the spec's variables; later wins, order kept.
pub fn environment(spec: &ContainerSpec, image: &RunConfig) -> Result<Vec<String>, ProcessError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image.env.iter().flatten() {
        if kv.contains('\0') {
            return Err(ProcessError::Nul {
                what: "environment entry",
                value: kv.clone(),
            });
        }
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => set(k, v),
            _ => {} // Docker drops entries without '='
        }
    }
    set("HOSTNAME", spec.hostname());
    for (k, v) in &spec.env {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

pub fn resolve(spec: &ContainerSpec, image: &RunConfig) -> Result<Process, ProcessError> {
    let workdir = match (&spec.workdir, &image.working_dir) {
        (Some(w), _) => w.clone(),
        (None, Some(w)) if !w.is_empty() => {
            if !w.starts_with('/') || w.contains('\0') {
                return Err(ProcessError::RelativeWorkdir(w.clone()));
            }
            w.clone()
        }
        _ => "/".into(),
    };
    let user = spec
        .user
        .clone()
        .or_else(|| image.user.clone().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "0".into());
    Ok(Process {
        argv: argv(spec, image)?,
        env: environment(spec, image)?,
        workdir,
        user,
    })
}

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `user` (`name|uid[:group|gid]`) against the image's `/etc/passwd` and
/// `/etc/group` contents (empty when the image has none). Numeric ids need no entry,
/// as in Docker.
pub fn identity(user: &str, passwd: &str, group: &str) -> Result<Identity, ProcessError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let entry = entries
        .iter()
        .find(|f| f.first() == Some(&u) || (u.parse::<u32>().is_ok() && f.get(2) == Some(&u)));
    let (uid, mut gid, name, home) = match (u.parse::<u32>(), entry) {
        (Ok(uid), e) => (
            uid,
            e.and_then(|f| f.get(3)?.parse().ok()).unwrap_or(0),
            e.and_then(|f| f.first().copied()),
            e.and_then(|f| f.get(5).map(|h| h.to_string()))
                .unwrap_or_else(|| "/".into()),
        ),
        (Err(_), Some(f)) => (
            f.get(2)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ProcessError::UnknownUser(u.into()))?,
            f.get(3).and_then(|v| v.parse().ok()).unwrap_or(0),
            f.first().copied(),
            f.get(5)
                .map(|h| h.to_string())
                .unwrap_or_else(|| "/".into()),
        ),
        (Err(_), None) => return Err(ProcessError::UnknownUser(u.into())),
    };
    let groups_table: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups_table
                .iter()
                .find(|f| f.first() == Some(&g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| ProcessError::UnknownGroup(g.into()))?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in &groups_table {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Some(id) = f.get(2).and_then(|v| v.parse().ok()) {
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> RunConfig {
        let v = |x: Option<&[&str]>| x.map(|a| a.iter().map(|s| s.to_string()).collect());
        RunConfig {
            entrypoint: v(entry),
            cmd: v(cmd),
            env: Some(vec!["PATH=/bin".into(), "A=1".into(), "junk".into()]),
            ..RunConfig::default()
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec::new("web", "busybox").unwrap()
    }

    #[test]
    fn docker_argv_rules() {
        let img = image(Some(&["/entry"]), Some(&["a", "b"]));
        assert_eq!(argv(&spec(), &img).unwrap(), ["/entry", "a", "b"]);
        let mut s = spec();
        s.command = Some(vec!["x".into()]);
        assert_eq!(argv(&s, &img).unwrap(), ["/entry", "x"]);
        s.entrypoint = Some(vec!["/other".into()]);
        s.command = None;
        assert_eq!(argv(&s, &img).unwrap(), ["/other"]);
        assert_eq!(
            argv(&spec(), &image(None, None)),
            Err(ProcessError::NoCommand)
        );
    }

    #[test]
    fn env_merge() {
        let mut s = spec();
        s.env = vec![("A".into(), "2".into()), ("B".into(), "3".into())];
        let env = environment(&s, &image(None, None)).unwrap();
        assert_eq!(env, ["PATH=/bin", "A=2", "HOSTNAME=web", "B=3"]);
        let bare = environment(&spec(), &RunConfig::default()).unwrap();
        assert_eq!(bare[0], format!("PATH={DEFAULT_PATH}"));
    }

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\nbad\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nmedia:x:44:www,other\n";

    #[test]
    fn users() {
        let id = identity("www", PASSWD, GROUP).unwrap();
        assert_eq!(
            (id.uid, id.gid, id.groups, id.home.as_str()),
            (33, 33, vec![33, 44], "/var/www")
        );
        let id = identity("1000:1000", "", "").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 1000, vec![1000]));
        let id = identity("33:media", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (33, 44));
        assert_eq!(
            identity("nobody", PASSWD, GROUP),
            Err(ProcessError::UnknownUser("nobody".into()))
        );
        assert_eq!(
            identity("www:nogroup", PASSWD, GROUP),
            Err(ProcessError::UnknownGroup("nogroup".into()))
        );
        assert_eq!(identity("0", "", "").unwrap().home, "/");
    }
}
