//! [`StateDir`]: the one owner of every path under `/var/lib/berth`.
//!
//! ```text
//! /var/lib/berth/                 StateDir::root (tmpfs today; the state disk later)
//! ├── lock refs.json blobs/ layers/ l/ holds/ empty/ scaffold/ tmp/
//! │                               the image store, laid out by berth_imagefs::store
//! ├── containers/
//! │   └── <id>/                   one container, by its 64-hex id (registry::ContainerId)
//! │       ├── record.json         its record: spec, state, restarts, times, exit, health;
//! │       │                       replaced atomically (record.json.tmp, fsync, rename,
//! │       │                       fsync of the directory)
//! │       ├── log log.1           its output (crate::logs)
//! │       └── upper/ work/ scratch/
//! │                               its root filesystem's writable layer (berth_runtime)
//! ├── uploads/                    `docker load` archives while they stream in (berth_api)
//! ├── volumes/<name>/             named volumes (berth_runtime::volume)
//! └── network/                    the container bridge's address leases (berth_netd::ipam)
//! ```
//!
//! Every path is built from a [`ContainerId`], whose parser admits only 64 lowercase hex
//! characters, or from a fixed name: nothing a client sends becomes a path component
//! here. A record is written before the change it records is acknowledged, so that the
//! records read back at boot ([`StateDir::load_records`]) are what clients were told.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::registry::ContainerId;

/// The largest record read back; a bigger file is damage, not a record.
pub const MAX_RECORD: u64 = 1024 * 1024;
const RECORD: &str = "record.json";
const RECORD_TMP: &str = "record.json.tmp";

/// Why state could not be written or read back. Each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the record for {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is over {MAX_RECORD} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a valid record: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What [`StateDir::load_records`] found in one container directory.
#[derive(Debug)]
pub struct Loaded<T> {
    pub id: ContainerId,
    pub record: Result<T, StateError>,
}

/// The state directory, `/var/lib/berth` on a host ([`crate::images::STORE_DIR`]).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The host's: [`crate::images::STORE_DIR`].
    pub fn host() -> StateDir {
        StateDir::new(crate::images::STORE_DIR)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image store's directory (the root itself: the store's layout shares it).
    pub fn image_store(&self) -> &Path {
        &self.root
    }

    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn container(&self, id: &ContainerId) -> PathBuf {
        self.containers().join(id.as_str())
    }

    pub fn record(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join(RECORD)
    }

    pub fn log(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("log")
    }

    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    pub fn network(&self) -> PathBuf {
        self.root.join("network")
    }

    /// Writes container `id`'s record atomically and durably: once this returns, a power
    /// cut leaves either this record or the previous one, never a mix or nothing.
    pub fn write_record<T: Serialize>(
        &self,
        id: &ContainerId,
        record: &T,
    ) -> Result<(), StateError> {
        let dir = self.container(id);
        fs::create_dir_all(&dir).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(RECORD);
        let mut bytes = serde_json::to_vec_pretty(record).map_err(|source| StateError::Encode {
            path: path.clone(),
            source,
        })?;
        bytes.push(b'\n');
        let tmp = dir.join(RECORD_TMP);
        let write = |p: &Path| -> std::io::Result<()> {
            let mut f = File::create(p)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(p, &path)?;
            // The rename is durable once the directory holding the name is.
            File::open(&dir)?.sync_all()
        };
        write(&tmp).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StateError::Write {
                path: path.clone(),
                source,
            }
        })
    }

    /// Reads container `id`'s record back.
    pub fn read_record<T: DeserializeOwned>(&self, id: &ContainerId) -> Result<T, StateError> {
        let path = self.record(id);
        let read_err = |source| StateError::Read {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_RECORD + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_RECORD {
            return Err(StateError::TooLarge { path });
        }
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
    }

    /// Every container directory's record, in id order. Entries of `containers/` that
    /// are not container ids are left alone and not reported; a leftover `.tmp` record
    /// (a write cut short) is removed, the record before it stands.
    pub fn load_records<T: DeserializeOwned>(&self) -> Vec<Loaded<T>> {
        let Ok(entries) = fs::read_dir(self.containers()) else {
            return Vec::new();
        };
        let mut ids: Vec<ContainerId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| ContainerId::parse(e.file_name().to_str()?))
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let _ = fs::remove_file(self.container(&id).join(RECORD_TMP));
                let record = self.read_record(&id);
                Loaded { id, record }
            })
            .collect()
    }

    /// Removes container `id`'s directory: its record, log and writable layer.
    pub fn remove_container(&self, id: &ContainerId) -> Result<(), StateError> {
        let dir = self.container(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StateError::Remove { path: dir, source }),
        }
        // The removal is durable once `containers/` is.
        let containers = self.containers();
        File::open(&containers)
            .and_then(|d| d.sync_all())
            .map_err(|source| StateError::Remove {
                path: containers,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        restarts: u32,
    }

    fn rec(n: u32) -> Rec {
        Rec {
            name: "web".into(),
            restarts: n,
        }
    }

    #[test]
    fn records_round_trip_and_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let id = ContainerId::random();
        state.write_record(&id, &rec(0)).unwrap();
        state.write_record(&id, &rec(3)).unwrap();
        assert_eq!(state.read_record::<Rec>(&id).unwrap(), rec(3));
        assert!(!state.container(&id).join(RECORD_TMP).exists());
        assert_eq!(
            state.record(&id),
            tmp.path()
                .join("containers")
                .join(id.as_str())
                .join("record.json")
        );
    }

    #[test]
    fn load_reports_damage_and_skips_strangers() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let good = ContainerId::random();
        let torn = ContainerId::random();
        let huge = ContainerId::random();
        state.write_record(&good, &rec(1)).unwrap();
        // A write cut short before its rename: the old record stands, the .tmp goes.
        fs::write(state.container(&good).join(RECORD_TMP), b"{\"na").unwrap();
        fs::create_dir_all(state.container(&torn)).unwrap();
        fs::write(state.record(&torn), b"{\"name\": \"x\", \"restarts\"").unwrap();
        fs::create_dir_all(state.container(&huge)).unwrap();
        fs::write(state.record(&huge), vec![b' '; MAX_RECORD as usize + 1]).unwrap();
        fs::create_dir_all(state.containers().join("not-an-id")).unwrap();

        let loaded = state.load_records::<Rec>();
        assert_eq!(loaded.len(), 3);
        for l in &loaded {
            match &l.record {
                Ok(r) => {
                    assert_eq!(l.id, good);
                    assert_eq!(r, &rec(1));
                }
                Err(StateError::Parse { path, .. }) => assert_eq!(path, &state.record(&torn)),
                Err(StateError::TooLarge { path }) => assert_eq!(path, &state.record(&huge)),
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert!(!state.container(&good).join(RECORD_TMP).exists());
        assert!(state.containers().join("not-an-id").exists());
    }

    #[test]
    fn removal_takes_the_whole_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let id = ContainerId::random();
        state.write_record(&id, &rec(0)).unwrap();
        fs::write(state.log(&id), b"hello\n").unwrap();
        state.remove_container(&id).unwrap();
        assert!(!state.container(&id).exists());
        // Removing what is gone is not an error.
        state.remove_container(&id).unwrap();
        assert!(state.load_records::<Rec>().is_empty());
    }

    #[test]
    fn a_write_that_fails_names_the_record_and_leaves_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let id = ContainerId::random();
        state.write_record(&id, &rec(1)).unwrap();
        // A directory where the temporary file would go makes the write fail.
        fs::create_dir(state.container(&id).join(RECORD_TMP)).unwrap();
        let err = state.write_record(&id, &rec(2)).unwrap_err();
        assert!(err.to_string().contains(id.as_str()), "{err}");
        assert_eq!(state.read_record::<Rec>(&id).unwrap(), rec(1));
    }
}
