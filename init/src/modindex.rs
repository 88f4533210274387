//! The module index: `modules.dep`, `modules.alias` and `modules.builtin` as `berth build`
//! writes them into `/lib/modules/$(uname -r)/`, and the questions PID 1 asks of them.
//!
//! Formats (those of depmod, so that `modprobe` would read the same files):
//! - `modules.dep`: `kernel/a/x.ko: kernel/b/y.ko kernel/c/z.ko`: every module and *all*
//!   its dependencies, ordered so that loading them from last to first, then the module
//!   itself, is a valid order;
//! - `modules.alias`: `alias <fnmatch pattern> <module name>`;
//! - `modules.builtin`: `kernel/a/x.ko`, one built-in module per line.
//!
//! Module names treat `-` and `_` alike; they are kept with `_`.
//! Everything here is pure: loading lives in [`crate::modules`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parsed index.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Name → (path relative to the modules dir, dependency paths in depmod order).
    modules: BTreeMap<String, (PathBuf, Vec<PathBuf>)>,
    /// (pattern, module name), in file order.
    aliases: Vec<(String, String)>,
    builtin: BTreeSet<String>,
}

/// Why the index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `kernel/drivers/net/dummy.ko` → `dummy`; `snd-hda-intel.ko` → `snd_hda_intel`.
pub fn name_from_path(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.split(".ko").next()?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

impl ModuleIndex {
    /// Reads the index files in `dir`. `modules.dep` is required; a missing alias or
    /// builtin list just means no coldplug matches or no built-ins are known.
    pub fn load(dir: &Path) -> Result<ModuleIndex, IndexError> {
        let read = |name: &str, required: bool| -> Result<String, IndexError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(String::new())
                }
                Err(source) => Err(IndexError::Read { path, source }),
            }
        };
        Ok(ModuleIndex::parse(
            &read("modules.dep", true)?,
            &read("modules.alias", false)?,
            &read("modules.builtin", false)?,
        ))
    }

    /// Parses the three files' text. Malformed lines are skipped: the files are ours,
    /// written by `berth build`, and one bad line must not cost the rest.
    pub fn parse(dep: &str, alias: &str, builtin: &str) -> ModuleIndex {
        let mut index = ModuleIndex::default();
        for line in dep.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let module = PathBuf::from(module.trim());
            let Some(name) = name_from_path(&module) else {
                continue;
            };
            let deps = deps.split_whitespace().map(PathBuf::from).collect();
            index.modules.insert(name, (module, deps));
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(name)) =
                (words.next(), words.next(), words.next())
            {
                index
                    .aliases
                    .push((pattern.to_owned(), name.replace('-', "_")));
            }
        }
        index.builtin = builtin
            .lines()
            .filter_map(|l| name_from_path(Path::new(l.trim())))
            .collect();
        index
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&name.replace('-', "_"))
    }

    /// The files to load for `name`, in load order: dependencies first, the module last.
    /// `None` if the index does not know the module.
    pub fn load_order(&self, name: &str) -> Option<Vec<PathBuf>> {
        let (path, deps) = self.modules.get(&name.replace('-', "_"))?;
        let mut order: Vec<PathBuf> = deps.iter().rev().cloned().collect();
        order.push(path.clone());
        Some(order)
    }

    /// The modules whose alias patterns match a device's `modalias`, without duplicates.
    pub fn modules_for_alias(&self, modalias: &str) -> Vec<&str> {
        let mut found: Vec<&str> = Vec::new();
        for (pattern, name) in &self.aliases {
            if fnmatch(pattern.as_bytes(), modalias.as_bytes()) && !found.contains(&name.as_str()) {
                found.push(name);
            }
        }
        found
    }
}

/// Shell-style matching as modprobe does it for aliases: `*`, `?` and bracket
/// expressions (`[abc]`, `[a-z]`, `[!x]` or `[^x]`). Iterative, with one backtrack point
/// for the last `*`, so it runs in O(pattern × text) at worst.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some(b'[') => {
                if let Some((matched, next)) = match_bracket(pattern, p, text[t]) {
                    if matched {
                        p = next;
                        t += 1;
                        continue;
                    }
                } else if text[t] == b'[' {
                    // An unterminated bracket is a literal '['.
                    p += 1;
                    t += 1;
                    continue;
                }
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression starting at `pattern[start] == b'['`.
/// Returns whether it matched and the index after the closing `]`, or `None` if the
/// bracket is not closed.
fn match_bracket(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_cases() {
        let yes = [
            (
                "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            ),
            ("virtio:d00000001v*", "virtio:d00000001v00001AF4"),
            ("acpi*:LNXPWRBN:*", "acpi:LNXPWRBN:"),
            ("a?c", "abc"),
            ("[a-c]x", "bx"),
            ("[!a]x", "bx"),
            ("*", ""),
            ("a*b*c", "a_b_b_c"),
        ];
        for (p, t) in yes {
            assert!(fnmatch(p.as_bytes(), t.as_bytes()), "{p} !~ {t}");
        }
        let no = [
            ("virtio:d00000001v*", "virtio:d00000002v00001AF4"),
            ("a?c", "ac"),
            ("[a-c]x", "dx"),
            ("[!a]x", "ax"),
            ("abc", "abcd"),
            ("a*b*c", "a_b_b_d"),
        ];
        for (p, t) in no {
            assert!(!fnmatch(p.as_bytes(), t.as_bytes()), "{p} ~ {t}");
        }
    }

    #[test]
    fn fnmatch_is_not_exponential() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(5000);
        assert!(!fnmatch(pattern.as_bytes(), text.as_bytes()));
    }

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/net/dummy.ko:
not a dep line
";
    const ALIAS: &str = "\
alias virtio:d00000001v* virtio_net
alias pci:v*d*sv*sd*bc02sc00i* virtio_net
alias rtnl-link-dummy dummy
";

    #[test]
    fn index_resolves_load_order() {
        let idx = ModuleIndex::parse(DEP, ALIAS, "kernel/drivers/input/serio/i8042.ko\n");
        let order = idx.load_order("virtio-net").unwrap();
        let names: Vec<_> = order.iter().map(|p| name_from_path(p).unwrap()).collect();
        assert_eq!(names, ["failover", "net_failover", "virtio_net"]);
        assert_eq!(
            idx.load_order("dummy").unwrap(),
            [PathBuf::from("kernel/drivers/net/dummy.ko")]
        );
        assert!(idx.load_order("nope").is_none());
        assert!(idx.is_builtin("i8042"));
        assert!(!idx.is_builtin("dummy"));
        assert_eq!(
            idx.modules_for_alias("virtio:d00000001v00001AF4"),
            ["virtio_net"]
        );
        assert!(idx
            .modules_for_alias("virtio:d00000009v00001AF4")
            .is_empty());
    }
}
