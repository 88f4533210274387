//! Image names: `name[:tag]`, as people type them.
//!
//! A name is one or more `/`-separated components of lowercase letters,
//! digits and `._-` (a first component may carry a `:port`); a tag is
//! 1–128 of `[A-Za-z0-9_.-]` not starting with `.` or `-`. A missing tag
//! means `latest`. Refs live in `refs.json`, never in a path, but they are
//! still validated so that what scripts see is predictable.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image name {0:?}: expected name[:tag] with lowercase name components")]
pub struct ReferenceError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub name: String,
    pub tag: String,
}

/// Docker's grammar: alphanumeric runs joined by `.`, `_`, `__` or a run
/// of `-`; lowercase only.
fn name_component_ok(c: &str) -> bool {
    if c.is_empty() || c.len() > 128 {
        return false;
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn tag_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !t.starts_with(['.', '-'])
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = || ReferenceError(s.chars().take(80).collect());
        if s.len() > 255 {
            return Err(err());
        }
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        // The limit applies to the stored form, which always has a tag.
        if !tag_ok(tag) || name.len() + 1 + tag.len() > 255 {
            return Err(err());
        }
        for (i, comp) in name.split('/').enumerate() {
            let comp_ok = if i == 0 && name.contains('/') {
                // A registry host may have a port and uppercase is still
                // refused; keep it simple: host[:port].
                match comp.split_once(':') {
                    Some((h, p)) => {
                        name_component_ok(h)
                            && !p.is_empty()
                            && p.bytes().all(|b| b.is_ascii_digit())
                    }
                    None => name_component_ok(comp),
                }
            } else {
                name_component_ok(comp)
            };
            if !comp_ok {
                return Err(err());
            }
        }
        Ok(Reference {
            name: name.into(),
            tag: tag.into(),
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        for (s, want) in [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
            ),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
            ("a__b/c--d/e.f_g:1", "a__b/c--d/e.f_g:1"),
        ] {
            assert_eq!(Reference::parse(s).unwrap().to_string(), want, "{s}");
        }
    }

    #[test]
    fn bad() {
        for s in [
            "",
            ":",
            "a:",
            "../../etc",
            "a/../b",
            "A",
            "a b",
            "a\0b",
            "/a",
            "a/",
            "a:.x",
            "a:-x",
            "a//b",
            &"a".repeat(300),
        ] {
            assert!(Reference::parse(s).is_err(), "accepted {s:?}");
        }
    }
}
