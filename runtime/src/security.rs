//! The privileges a container keeps: its capability sets (the seccomp filter is in
//! [`crate::seccomp`]).
//!
//! Capabilities: Podman's default eleven, which is Docker's fourteen without
//! `AUDIT_WRITE`, `MKNOD` and `NET_RAW` (so no raw sockets and no `mknod` of device
//! nodes unless asked for). Bounding, effective and permitted sets hold them;
//! inheritable and ambient sets are empty, and `no_new_privs` is set, so no
//! set-uid binary or file capability can add any back.
//!
use caps::{CapSet, Capability, CapsHashSet};

use crate::spec::ContainerSpec;

/// The default capability set (Podman's).
pub const DEFAULT_CAPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_CHROOT,
];

/// A capability set's name as capabilities(7) writes it.
pub fn cap_set_name(set: CapSet) -> &'static str {
    match set {
        CapSet::Ambient => "ambient",
        CapSet::Bounding => "bounding",
        CapSet::Effective => "effective",
        CapSet::Inheritable => "inheritable",
        CapSet::Permitted => "permitted",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("switching to uid {uid}, gid {gid}: {source}")]
    Identity {
        uid: u32,
        gid: u32,
        source: nix::Error,
    },
    #[error("dropping capability {cap} from the bounding set: {source}")]
    Bounding {
        cap: Capability,
        source: caps::errors::CapsError,
    },
    #[error("setting the {} capability set: {source}", cap_set_name(*.set))]
    SetCaps {
        set: CapSet,
        source: caps::errors::CapsError,
    },
    #[error("clearing the ambient capability set: {0}")]
    Ambient(caps::errors::CapsError),
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("loading the seccomp filter: {0}")]
    Seccomp(std::io::Error),
}

/// The capabilities `spec` ends up with.
pub fn capabilities(spec: &ContainerSpec) -> CapsHashSet {
    let mut set: CapsHashSet = if spec.cap_drop_all {
        CapsHashSet::new()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    for c in &spec.cap_drop {
        set.remove(c);
    }
    set.extend(spec.cap_add.iter().copied());
    set
}

/// Shrinks the bounding set to `keep`. Must run before the switch to the
/// container's user, while `CAP_SETPCAP` is still held.
fn limit_bounding_set(keep: &CapsHashSet) -> Result<(), SecurityError> {
    for cap in caps::all() {
        if !keep.contains(&cap) {
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                // Capabilities newer than the running kernel are not in its set.
                Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(true) => {}
                Err(source) => return Err(SecurityError::Bounding { cap, source }),
            }
        }
    }
    Ok(())
}

/// Sets effective and permitted to `keep` (empty for a non-root user, whose switch
/// already cleared them), empties inheritable and ambient, and sets `no_new_privs`.
fn set_capabilities(keep: &CapsHashSet, is_root: bool) -> Result<(), SecurityError> {
    let effective = if is_root {
        keep.clone()
    } else {
        CapsHashSet::new()
    };
    caps::clear(None, CapSet::Inheritable).map_err(|source| SecurityError::SetCaps {
        set: CapSet::Inheritable,
        source,
    })?;
    caps::clear(None, CapSet::Ambient).map_err(SecurityError::Ambient)?;
    // Effective must stay within permitted: narrow effective first, then permitted.
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &effective)
            .map_err(|source| SecurityError::SetCaps { set, source })?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(SecurityError::NoNewPrivs)
}

/// Drops to `uid`/`gid` with supplementary `groups`, keeping only the capabilities in
/// `keep`: the bounding set first (it needs CAP_SETPCAP), then the ids, then the
/// remaining sets and `no_new_privs`. What the container's program and a command run
/// inside it later (a health check) both go through.
pub fn become_user(
    keep: &CapsHashSet,
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> Result<(), SecurityError> {
    use nix::unistd::{Gid, Uid};
    limit_bounding_set(keep)?;
    let id_err = |source| SecurityError::Identity { uid, gid, source };
    let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(id_err)?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    nix::unistd::setresgid(g, g, g).map_err(id_err)?;
    nix::unistd::setresuid(u, u, u).map_err(id_err)?;
    set_capabilities(keep, uid == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets_are_named_in_words() {
        assert_eq!(cap_set_name(CapSet::Inheritable), "inheritable");
        let e = SecurityError::SetCaps {
            set: CapSet::Effective,
            source: caps::errors::CapsError::from("denied"),
        };
        assert!(
            e.to_string()
                .starts_with("setting the effective capability set: "),
            "{e}"
        );
    }

    #[test]
    fn default_set_is_within_dockers() {
        let docker = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        for c in DEFAULT_CAPS {
            assert!(docker.contains(&c.to_string().as_str()), "{c}");
        }
        assert!(!DEFAULT_CAPS.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!DEFAULT_CAPS.contains(&Capability::CAP_MKNOD));
    }

    #[test]
    fn add_and_drop() {
        let mut spec = ContainerSpec::new("t", "i").unwrap();
        spec.cap_add = vec![Capability::CAP_NET_ADMIN];
        spec.cap_drop = vec![Capability::CAP_CHOWN];
        let set = capabilities(&spec);
        assert!(set.contains(&Capability::CAP_NET_ADMIN));
        assert!(!set.contains(&Capability::CAP_CHOWN));
        spec.cap_drop_all = true;
        assert_eq!(
            capabilities(&spec),
            [Capability::CAP_NET_ADMIN].into_iter().collect()
        );
    }
}
