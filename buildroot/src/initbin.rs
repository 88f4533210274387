//! The init binary that becomes `/init`: where to find it, and the check that it can run
//! as the first process of an initramfs, i.e. is a static x86-64 ELF executable. A dynamic
//! binary would need a loader and libraries that the image does not carry, and the kernel
//! would fail to exec it with a bare "No working init found" panic.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use object::read::elf::{FileHeader, ProgramHeader};
use object::{elf, Endianness};

/// Where the `cargo build --release --target x86_64-unknown-linux-gnu` output lands,
/// relative to the workspace root.
pub const WORKSPACE_INIT: &str = "target/x86_64-unknown-linux-gnu/release/berth-init";

/// Why the init binary cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InitBinaryError {
    #[error("no init binary found; looked at: {}. Build the static PID 1 with `make init`, or pass --init PATH", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { looked: Vec<PathBuf> },
    #[error("cannot read init binary {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("init binary {path} is not a 64-bit ELF file: {source}")]
    NotElf {
        path: PathBuf,
        source: object::Error,
    },
    #[error("init binary {path} is for ELF machine {machine}, not x86-64")]
    WrongMachine { path: PathBuf, machine: u16 },
    #[error("init binary {path} is not an executable (ELF type {kind})")]
    NotExecutable { path: PathBuf, kind: u16 },
    #[error("no {HELPER_NAME} next to the init binary: {looked} is missing. `make init` builds both; an init binary given with --init needs its {HELPER_NAME} beside it")]
    HelperNotFound { looked: PathBuf },
    #[error("init binary {path} is dynamically linked (it asks for the loader {interpreter}); build it static, e.g. with RUSTFLAGS='-C target-feature=+crt-static'")]
    Dynamic { path: PathBuf, interpreter: String },
}

/// Where to look for the init binary, in order: `--init`, `$BERTH_INIT`, `berth-init`
/// next to the running executable, then [`WORKSPACE_INIT`] under `cwd`.
pub fn candidates(
    flag: Option<&Path>,
    env: Option<OsString>,
    current_exe: Option<&Path>,
    cwd: &Path,
) -> Vec<PathBuf> {
    // An explicit choice is the only candidate: a typo must not fall through to another.
    if let Some(path) = flag {
        return vec![path.to_owned()];
    }
    if let Some(path) = env.filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let mut out = Vec::new();
    if let Some(dir) = current_exe.and_then(Path::parent) {
        out.push(dir.join("berth-init"));
    }
    out.push(cwd.join(WORKSPACE_INIT));
    out
}

/// The file name of PID 1's helper binary (netd and the image importer), which a build
/// takes from the init binary's directory.
pub use berth_init::helper::HELPER_NAME;

/// The helper binary that goes with the init binary at `init`: [`HELPER_NAME`] in the
/// same directory, so that the two always come from one build.
pub fn locate_helper(init: &Path) -> Result<PathBuf, InitBinaryError> {
    let helper = init.with_file_name(HELPER_NAME);
    if helper.is_file() {
        Ok(helper)
    } else {
        Err(InitBinaryError::HelperNotFound { looked: helper })
    }
}

/// The first candidate that is a file.
pub fn locate(candidates: Vec<PathBuf>) -> Result<PathBuf, InitBinaryError> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(InitBinaryError::NotFound { looked: candidates })
}

/// Reads the binary at `path` and checks that it is a static x86-64 ELF executable.
pub fn read_static(path: &Path) -> Result<Vec<u8>, InitBinaryError> {
    let bytes = std::fs::read(path).map_err(|source| InitBinaryError::Read {
        path: path.to_owned(),
        source,
    })?;
    check_static(path, &bytes)?;
    Ok(bytes)
}

/// Checks that `bytes` is a static x86-64 ELF executable: `ET_EXEC`, or `ET_DYN` as a
/// static-pie is, but without a `PT_INTERP` program header.
pub fn check_static(path: &Path, bytes: &[u8]) -> Result<(), InitBinaryError> {
    let not_elf = |source| InitBinaryError::NotElf {
        path: path.to_owned(),
        source,
    };
    let header = elf::FileHeader64::<Endianness>::parse(bytes).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(InitBinaryError::WrongMachine {
            path: path.to_owned(),
            machine,
        });
    }
    let kind = header.e_type(endian);
    if kind != elf::ET_EXEC && kind != elf::ET_DYN {
        return Err(InitBinaryError::NotExecutable {
            path: path.to_owned(),
            kind,
        });
    }
    for phdr in header.program_headers(endian, bytes).map_err(not_elf)? {
        if phdr.p_type(endian) == elf::PT_INTERP {
            let interpreter = phdr
                .data(endian, bytes)
                .map(|d| String::from_utf8_lossy(d).trim_end_matches('\0').to_owned())
                .unwrap_or_else(|_| "?".to_owned());
            return Err(InitBinaryError::Dynamic {
                path: path.to_owned(),
                interpreter,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_order() {
        let cwd = Path::new("/work");
        let exe = Path::new("/opt/bin/berth");
        assert_eq!(
            candidates(
                Some(Path::new("/x/init")),
                Some("/env".into()),
                Some(exe),
                cwd
            ),
            [PathBuf::from("/x/init")]
        );
        assert_eq!(
            candidates(None, Some("/env".into()), Some(exe), cwd),
            [PathBuf::from("/env")]
        );
        assert_eq!(
            candidates(None, Some("".into()), Some(exe), cwd),
            [
                PathBuf::from("/opt/bin/berth-init"),
                PathBuf::from("/work/target/x86_64-unknown-linux-gnu/release/berth-init")
            ]
        );
    }

    #[test]
    fn not_found_names_every_place() {
        let err = locate(vec![
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/nonexistent/b"),
        ])
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/a, /nonexistent/b"), "{msg}");
    }

    #[test]
    fn static_and_dynamic_binaries() {
        // busybox-static is a static ELF; /bin/sh (dash) is dynamic on Debian.
        let busybox = Path::new("/bin/busybox");
        if busybox.exists() {
            read_static(busybox).unwrap();
        }
        let err = read_static(Path::new("/bin/sh")).unwrap_err();
        assert!(
            matches!(&err, InitBinaryError::Dynamic { interpreter, .. } if interpreter.contains("ld-linux")),
            "{err}"
        );
        let err = check_static(Path::new("x"), b"#!/bin/sh\n").unwrap_err();
        assert!(matches!(err, InitBinaryError::NotElf { .. }), "{err}");
        // A relocatable object (a .ko) is not an executable.
        let ko = crate::modules::tests::synthetic_ko(b"name=x\0");
        assert!(matches!(
            check_static(Path::new("x.ko"), &ko),
            Err(InitBinaryError::NotExecutable { kind: 1, .. })
        ));
    }
}
