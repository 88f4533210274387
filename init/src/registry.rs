//! The containers PID 1 holds, keyed by id: names, lookup and conflicts in one place.
//!
//! Every container, from `host.toml` or from the API, is an entry with a 64-hex id (as
//! Docker's, drawn from `/dev/urandom`) and a unique name. Clients name containers the
//! way the docker CLI lets them, and [`Registry::lookup`] resolves them in Docker's
//! order: a full id, then a name (with or without Docker's leading `/`), then a prefix of
//! exactly one id. The value `T` is whatever the supervisor keeps per container; the
//! registry neither knows nor cares.
//!
//! Entries keep their creation order (`docker ps` lists the newest first).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

/// A container id: 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ContainerId(String);

/// Length of the short id `docker ps` shows.
pub const SHORT_ID_LEN: usize = 12;

impl ContainerId {
    /// Parses a full id; anything but 64 lowercase hex characters is `None`.
    pub fn parse(s: &str) -> Option<ContainerId> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| ContainerId(s.to_owned()))
    }

    /// A new random id from 32 bytes of `/dev/urandom`. Where that cannot be read, the
    /// bytes come from std's randomly keyed hasher and the clock: unique, which is all an
    /// id needs, if not secret.
    pub fn random() -> ContainerId {
        let mut bytes = [0u8; 32];
        let from_kernel = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok();
        if !from_kernel {
            fallback_random(&mut bytes);
        }
        ContainerId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The 12-character form `docker ps` shows.
    pub fn short(&self) -> &str {
        self.0.get(..SHORT_ID_LEN).unwrap_or(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ContainerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContainerId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid container id {s:?}")))
    }
}

/// Lets the maps keyed by id be searched with what a client typed.
impl std::borrow::Borrow<str> for ContainerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fallback_random(bytes: &mut [u8; 32]) {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for chunk in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        for (b, x) in chunk.iter_mut().zip(h.finish().to_le_bytes()) {
            *b = x;
        }
    }
}

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A `[[container]]` of `host.toml`, created at boot.
    Config,
    /// Created by a client through the API.
    Api,
}

impl Origin {
    /// The label value `docker ps --filter label=…` shows for it (key [`ORIGIN_LABEL`]).
    pub fn label(self) -> &'static str {
        match self {
            Origin::Config => "host.toml",
            Origin::Api => "api",
        }
    }
}

/// The label under which a container's [`Origin`] is shown to clients.
pub const ORIGIN_LABEL: &str = "org.berth.origin";

/// Why a registry operation was refused. The messages are Docker's, which clients and
/// their users know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: ContainerId },
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName { name: String },
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple IDs found with provided prefix: {0}")]
    Ambiguous(String),
}

struct Entry<T> {
    name: String,
    /// Creation order.
    seq: u64,
    value: T,
}

/// The containers, by id, with a unique-name index.
pub struct Registry<T> {
    by_id: BTreeMap<ContainerId, Entry<T>>,
    by_name: BTreeMap<String, ContainerId>,
    next_seq: u64,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            by_id: BTreeMap::new(),
            by_name: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

/// Docker's container name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, one leading `/` allowed),
/// capped at 63 characters so that a name is also a valid hostname label. Returns the name
/// without its `/`.
pub fn validate_name(name: &str) -> Result<&str, RegistryError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    match berth_runtime::spec::validate_name(bare) {
        Ok(_) if bare.len() >= 2 => Ok(bare),
        _ => Err(RegistryError::InvalidName {
            name: name.to_owned(),
        }),
    }
}

impl<T> Registry<T> {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Adds `value` under `name` (validated), or under a generated name when `None`.
    pub fn insert(&mut self, name: Option<&str>, value: T) -> Result<ContainerId, RegistryError> {
        let mut id = ContainerId::random();
        while self.by_id.contains_key(&id) {
            id = ContainerId::random();
        }
        self.insert_with_id(id, name, value)
    }

    /// Adds `value` under a known `id`: a record read back from the state directory.
    pub fn insert_with_id(
        &mut self,
        id: ContainerId,
        name: Option<&str>,
        value: T,
    ) -> Result<ContainerId, RegistryError> {
        let name = match name {
            Some(n) => validate_name(n)?.to_owned(),
            None => self.generated_name(&id),
        };
        if let Some(holder) = self.by_name.get(&name) {
            return Err(RegistryError::NameInUse {
                name,
                id: holder.clone(),
            });
        }
        if self.by_id.contains_key(&id) {
            // Two records with one id: the second is refused like a taken name.
            return Err(RegistryError::NameInUse { name, id });
        }
        self.by_name.insert(name.clone(), id.clone());
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(id.clone(), Entry { name, seq, value });
        Ok(id)
    }

    /// A name for a container created without one: two words, as Docker's, and a number
    /// when those are taken.
    fn generated_name(&self, id: &ContainerId) -> String {
        const ADJECTIVES: [&str; 16] = [
            "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry",
            "nimble", "proud", "quiet", "steady", "swift", "tidy", "vivid",
        ];
        const NOUNS: [&str; 16] = [
            "anchor", "buoy", "cove", "dock", "ferry", "harbor", "jetty", "keel", "lantern",
            "mooring", "pier", "quay", "rudder", "skiff", "tide", "wharf",
        ];
        let bytes = id.as_str().as_bytes();
        let pick = |i: usize| {
            bytes
                .get(i)
                .and_then(|b| (*b as char).to_digit(16))
                .unwrap_or(0) as usize
        };
        let base = format!(
            "{}_{}",
            ADJECTIVES.get(pick(0)).unwrap_or(&"brave"),
            NOUNS.get(pick(1)).unwrap_or(&"anchor")
        );
        if !self.by_name.contains_key(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}{n}"))
            .find(|candidate| !self.by_name.contains_key(candidate))
            .unwrap_or(base)
    }

    /// Resolves what a client typed, in Docker's order: full id, name, unique id prefix.
    pub fn lookup(&self, reference: &str) -> Result<&ContainerId, RegistryError> {
        let not_found = || RegistryError::NotFound(reference.to_owned());
        if reference.is_empty() {
            return Err(not_found());
        }
        if let Some((id, _)) = self.by_id.get_key_value(reference) {
            return Ok(id);
        }
        let bare = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(id) = self.by_name.get(bare) {
            return Ok(id);
        }
        if !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let mut matches = self
            .by_id
            .range::<str, _>((
                std::ops::Bound::Included(reference),
                std::ops::Bound::Unbounded,
            ))
            .map(|(id, _)| id)
            .take_while(|id| id.as_str().starts_with(reference));
        match (matches.next(), matches.next()) {
            (Some(id), None) => Ok(id),
            (Some(_), Some(_)) => Err(RegistryError::Ambiguous(reference.to_owned())),
            (None, _) => Err(not_found()),
        }
    }

    pub fn get(&self, id: &ContainerId) -> Option<&T> {
        self.by_id.get(id).map(|e| &e.value)
    }

    pub fn get_mut(&mut self, id: &ContainerId) -> Option<&mut T> {
        self.by_id.get_mut(id).map(|e| &mut e.value)
    }

    /// The container's name, without Docker's leading `/`.
    pub fn name(&self, id: &ContainerId) -> Option<&str> {
        self.by_id.get(id).map(|e| e.name.as_str())
    }

    /// Gives container `id` the name `new`, which must be free (or already its own).
    pub fn rename(&mut self, id: &ContainerId, new: &str) -> Result<(), RegistryError> {
        let new = validate_name(new)?.to_owned();
        let Some(entry) = self.by_id.get_mut(id) else {
            return Err(RegistryError::NotFound(id.to_string()));
        };
        match self.by_name.get(&new) {
            Some(holder) if holder == id => return Ok(()),
            Some(holder) => {
                return Err(RegistryError::NameInUse {
                    name: new,
                    id: holder.clone(),
                })
            }
            None => {}
        }
        self.by_name.remove(&entry.name);
        self.by_name.insert(new.clone(), id.clone());
        entry.name = new;
        Ok(())
    }

    /// Removes container `id`; its name is free again.
    pub fn remove(&mut self, id: &ContainerId) -> Option<T> {
        let entry = self.by_id.remove(id)?;
        self.by_name.remove(&entry.name);
        Some(entry.value)
    }

    /// Every entry, oldest first: `(id, name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&ContainerId, &str, &T)> {
        let mut all: Vec<_> = self.by_id.iter().collect();
        all.sort_by_key(|(_, e)| e.seq);
        all.into_iter()
            .map(|(id, e)| (id, e.name.as_str(), &e.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &str) -> ContainerId {
        let mut s = prefix.to_owned();
        while s.len() < 64 {
            s.push('0');
        }
        ContainerId::parse(&s).unwrap()
    }

    #[test]
    fn random_ids_are_full_hex_and_distinct() {
        let a = ContainerId::random();
        let b = ContainerId::random();
        assert!(ContainerId::parse(a.as_str()).is_some(), "{a}");
        assert_ne!(a, b);
        assert_eq!(a.short().len(), 12);
        let mut bytes = [0u8; 32];
        fallback_random(&mut bytes);
        assert_ne!(bytes, [0u8; 32]);
    }

    #[test]
    fn ids_parse_strictly() {
        assert!(ContainerId::parse(&"a".repeat(64)).is_some());
        for bad in [
            "",
            "abc",
            &"A".repeat(64),
            &"g".repeat(64),
            &"a".repeat(65),
            "../x",
        ] {
            assert!(ContainerId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(serde_json::from_str::<ContainerId>("\"../../etc\"").is_err());
    }

    #[test]
    fn lookup_in_dockers_order() {
        let mut r = Registry::default();
        let web = r.insert_with_id(id("abc1"), Some("web"), 1).unwrap();
        let db = r.insert_with_id(id("abc2"), Some("/db"), 2).unwrap();
        // A container named like a prefix of another's id: the name wins over the prefix.
        let named_hex = r.insert_with_id(id("ff"), Some("abc1"), 3).unwrap();
        assert_eq!(r.lookup(web.as_str()), Ok(&web));
        assert_eq!(r.lookup("web"), Ok(&web));
        assert_eq!(r.lookup("/db"), Ok(&db));
        assert_eq!(r.lookup("abc1"), Ok(&named_hex));
        assert_eq!(r.lookup("abc2"), Ok(&db));
        assert_eq!(r.lookup("f"), Ok(&named_hex));
        assert_eq!(r.lookup("abc"), Err(RegistryError::Ambiguous("abc".into())));
        assert_eq!(
            r.lookup("nope"),
            Err(RegistryError::NotFound("nope".into()))
        );
        assert_eq!(r.lookup(""), Err(RegistryError::NotFound("".into())));
        assert_eq!(
            RegistryError::NotFound("nope".into()).to_string(),
            "No such container: nope"
        );
    }

    #[test]
    fn names_are_unique_and_valid() {
        let mut r = Registry::default();
        let web = r.insert(Some("web"), ()).unwrap();
        let err = r.insert(Some("/web"), ()).unwrap_err();
        assert_eq!(
            err,
            RegistryError::NameInUse {
                name: "web".into(),
                id: web.clone()
            }
        );
        assert!(err
            .to_string()
            .starts_with("Conflict. The container name \"/web\""));
        for bad in [
            "",
            "/",
            "a",
            "../../etc",
            "a/b",
            "-x",
            "x\0y",
            &"n".repeat(64),
        ] {
            assert!(
                matches!(
                    r.insert(Some(bad), ()),
                    Err(RegistryError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn generated_names_never_collide() {
        let mut r = Registry::default();
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..600 {
            let id = r.insert(None, ()).unwrap();
            assert!(names.insert(r.name(&id).unwrap().to_owned()));
        }
        assert!(names.iter().all(|n| validate_name(n).is_ok()));
    }

    #[test]
    fn rename_and_remove_free_the_old_name() {
        let mut r = Registry::default();
        let a = r.insert(Some("a1"), 1).unwrap();
        let b = r.insert(Some("b1"), 2).unwrap();
        assert!(matches!(
            r.rename(&a, "b1"),
            Err(RegistryError::NameInUse { .. })
        ));
        r.rename(&a, "a1").unwrap();
        r.rename(&a, "a2").unwrap();
        assert_eq!(r.lookup("a2"), Ok(&a));
        assert!(r.lookup("a1").is_err());
        r.insert(Some("a1"), 3).unwrap();
        assert_eq!(r.remove(&b), Some(2));
        assert!(r.lookup("b1").is_err());
        r.insert(Some("b1"), 4).unwrap();
        let order: Vec<i32> = r.iter().map(|(_, _, v)| *v).collect();
        assert_eq!(order, [1, 3, 4]);
    }
}
