//! Kernel modules: which ones go into the image, and the index files PID 1 reads.
//!
//! Debian's kernel package ships the `.ko` files but no `modules.dep` or `modules.alias`
//! (its postinst runs depmod on the target). berth has no depmod on the target, so this
//! module does depmod's job at build time:
//!
//! 1. [`ModuleTree::scan`] indexes every `kernel/**/*.ko` by module name (the file stem with
//!    `-` turned into `_`, which is the kernel's `KBUILD_MODNAME`), and reads
//!    `modules.builtin`;
//! 2. [`ModuleTree::resolve`] turns the config's `kernel.modules` plus [`image_modules`]
//!    into root names: a configured module that is neither a module nor built in is an
//!    error; a default one that this kernel lacks or builds in is skipped;
//! 3. [`ModuleTree::load_closure`] reads each root's `.modinfo` ELF section
//!    ([`parse_modinfo`]) and follows `depends=` recursively;
//! 4. [`modules_dep`] and [`modules_alias`] write the index files in depmod's formats.
//!
//! `modules.dep` convention, as depmod (kmod's `depmod.c`, `depmod_calculate_dependencies`)
//! does it: one line per module, `kernel/a/x.ko: kernel/b/y.ko kernel/c/z.ko`, listing
//! *all* transitive dependencies ordered by a topological sort in which a module comes
//! before everything it depends on. So a module's dependencies appear after it, and loading
//! the list from last to first, then the module itself, is a valid load order. Lines are
//! sorted by module path; ties in the topological sort are broken by module name, so the
//! output depends only on the modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

/// Modules every image carries when the kernel has them as modules: drivers for the usual
/// virtual and cloud hardware (QEMU/KVM virtio, AWS ENA, GCP gVNIC, VMware, Hyper-V, Xen)
/// and pvpanic (so the hypervisor learns of a kernel panic). [`image_modules`] adds the
/// ones PID 1 loads by name: the ACPI power button and evdev, overlayfs, and the container
/// network's.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_console",
    "virtio_rng",
    "virtio_balloon",
    "virtio_input",
    "ena",
    "gve",
    "vmxnet3",
    "e1000",
    "e1000e",
    "hv_vmbus",
    "hv_netvsc",
    "hv_storvsc",
    "xen_netfront",
    "xen_blkfront",
    "ahci",
    "sd_mod",
    "pvpanic_mmio",
    "pvpanic_pci",
];

/// Every module an image carries besides the config's: [`DEFAULT_MODULES`] and the
/// lists PID 1 loads by name (its own, the containers' and the bridge network's), so the
/// two can never disagree.
pub fn image_modules() -> Vec<&'static str> {
    DEFAULT_MODULES
        .iter()
        .chain(berth_init::boot::OWN_MODULES)
        .chain(berth_init::boot::CONTAINER_MODULES)
        .chain(berth_init::network::BRIDGE_MODULES)
        .copied()
        .collect()
}

/// Why the module set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("cannot list {path}: {source}")]
    ScanDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module path {path} is not UTF-8")]
    NonUtf8Path { path: PathBuf },
    #[error("module {name} exists twice: {first} and {second}")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error("cannot read {path}: {source}")]
    ReadIndex {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module `{name}` (from kernel.modules in the config) is neither a module nor built in to kernel {release}{}", suggestion_text(suggestions))]
    Unknown {
        name: String,
        release: String,
        suggestions: Vec<String>,
    },
    #[error("cannot read module {path}: {source}")]
    ReadModule {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {path} is not a valid ELF file: {source}")]
    ParseElf {
        path: PathBuf,
        source: object::Error,
    },
    #[error("module {path} has no .modinfo section")]
    NoModinfo { path: PathBuf },
    #[error("module {path} calls itself `{modinfo_name}` in .modinfo, but its file name says `{file_name}`")]
    NameMismatch {
        path: PathBuf,
        file_name: String,
        modinfo_name: String,
    },
    #[error("module {path} was built for `{vermagic}`, not kernel {release}")]
    Vermagic {
        path: PathBuf,
        vermagic: String,
        release: String,
    },
    #[error("module {module} depends on {dependency}, which is not in this kernel's modules")]
    MissingDependency { module: String, dependency: String },
    #[error("module dependency cycle among: {}", modules.join(", "))]
    Cycle { modules: Vec<String> },
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

/// Normalises a module name the way the kernel compares them: `-` and `_` are the same.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name a `.ko` path implies: `kernel/drivers/net/xen-netfront.ko` →
/// `xen_netfront`.
pub fn name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.strip_suffix(".ko")?;
    (!stem.is_empty()).then(|| normalize(stem))
}

/// What a module's `.modinfo` section says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, normalised; absent in modules from old kernels.
    pub name: Option<String>,
    /// `alias=` patterns, in section order.
    pub aliases: Vec<String>,
    /// `depends=` names, normalised, in section order.
    pub depends: Vec<String>,
    /// `vermagic=`.
    pub vermagic: Option<String>,
}

/// Parses the contents of a `.modinfo` section: NUL-separated `key=value` strings (with
/// NUL padding between some of them). Unknown keys are ignored.
pub fn parse_modinfo_section(data: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for entry in data.split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(normalize(value)),
            "alias" => info.aliases.push(value.to_owned()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(normalize),
            ),
            "vermagic" => info.vermagic = Some(value.to_owned()),
            _ => {}
        }
    }
    info
}

/// Parses the `.modinfo` section of the module ELF `bytes`; `path` only names it in errors.
pub fn parse_modinfo(path: &Path, bytes: &[u8]) -> Result<ModInfo, ModulesError> {
    let file = object::File::parse(bytes).map_err(|source| ModulesError::ParseElf {
        path: path.to_owned(),
        source,
    })?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| ModulesError::NoModinfo {
            path: path.to_owned(),
        })?;
    let data = section.data().map_err(|source| ModulesError::ParseElf {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_modinfo_section(data))
}

/// A module chosen for the image.
#[derive(Debug, Clone)]
pub struct Module {
    /// Path relative to `lib/modules/<release>/`, e.g. `kernel/drivers/net/dummy.ko`.
    pub path: String,
    pub info: ModInfo,
    /// The `.ko` file's bytes.
    pub bytes: Vec<u8>,
}

/// The modules of one unpacked kernel: what exists, and what is built in.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    dir: PathBuf,
    release: String,
    /// Module name → path relative to `dir`.
    available: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
    builtin_text: Vec<u8>,
}

impl ModuleTree {
    /// Indexes `dir` (`lib/modules/<release>`): every `kernel/**/*.ko`, and
    /// `modules.builtin`.
    pub fn scan(dir: &Path, release: &str) -> Result<ModuleTree, ModulesError> {
        let mut files = Vec::new();
        walk(dir, Path::new("kernel"), &mut files)?;
        let mut available: BTreeMap<String, String> = BTreeMap::new();
        for rel in files {
            let Some(name) = name_from_path(&rel) else {
                continue;
            };
            if let Some(first) = available.get(&name) {
                return Err(ModulesError::Duplicate {
                    name,
                    first: first.clone(),
                    second: rel,
                });
            }
            available.insert(name, rel);
        }
        let builtin_path = dir.join("modules.builtin");
        let builtin_text =
            std::fs::read(&builtin_path).map_err(|source| ModulesError::ReadIndex {
                path: builtin_path,
                source,
            })?;
        let builtin = String::from_utf8_lossy(&builtin_text)
            .lines()
            .filter_map(|l| name_from_path(l.trim()))
            .collect();
        log::debug!(
            "kernel {release}: {} modules, {} built in",
            available.len(),
            BTreeSet::len(&builtin)
        );
        Ok(ModuleTree {
            dir: dir.to_owned(),
            release: release.to_owned(),
            available,
            builtin,
            builtin_text,
        })
    }

    /// The kernel release these modules belong to.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// `modules.builtin`, verbatim.
    pub fn builtin_text(&self) -> &[u8] {
        &self.builtin_text
    }

    pub fn is_module(&self, name: &str) -> bool {
        self.available.contains_key(&normalize(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The root modules to include: every `requested` one that is a module (built-in ones
    /// need nothing), and every `defaults` one that is a module. Sorted, without
    /// duplicates.
    pub fn resolve(
        &self,
        requested: &[String],
        defaults: &[&str],
    ) -> Result<Vec<String>, ModulesError> {
        let mut roots = BTreeSet::new();
        for name in requested {
            let name = normalize(name);
            if self.available.contains_key(&name) {
                roots.insert(name);
            } else if self.builtin.contains(&name) {
                log::info!("module {name} is built in to kernel {}", self.release);
            } else {
                return Err(ModulesError::Unknown {
                    suggestions: self.suggest(&name),
                    name,
                    release: self.release.clone(),
                });
            }
        }
        for name in defaults {
            let name = normalize(name);
            if self.available.contains_key(&name) {
                roots.insert(name);
            } else {
                log::debug!("default module {name} is not a module of this kernel; skipped");
            }
        }
        Ok(roots.into_iter().collect())
    }

    /// Up to three known names close to `name`: within edit distance 2, or containing it.
    fn suggest(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &String)> = self
            .available
            .keys()
            .chain(self.builtin.iter())
            .filter_map(|known| {
                let d = edit_distance(name, known);
                if d <= 2 {
                    Some((d, known))
                } else if name.len() >= 3 && known.contains(name) {
                    Some((3, known))
                } else {
                    None
                }
            })
            .collect();
        scored.sort();
        scored.dedup();
        scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
    }

    /// Reads `roots` and, recursively, everything they depend on.
    pub fn load_closure(&self, roots: &[String]) -> Result<BTreeMap<String, Module>, ModulesError> {
        let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
        let mut pending: Vec<(String, Option<String>)> =
            roots.iter().rev().map(|r| (normalize(r), None)).collect();
        while let Some((name, wanted_by)) = pending.pop() {
            if loaded.contains_key(&name) {
                continue;
            }
            let Some(rel) = self.available.get(&name) else {
                return Err(ModulesError::MissingDependency {
                    module: wanted_by.unwrap_or_default(),
                    dependency: name,
                });
            };
            let path = self.dir.join(rel);
            let bytes = std::fs::read(&path).map_err(|source| ModulesError::ReadModule {
                path: path.clone(),
                source,
            })?;
            let info = parse_modinfo(&path, &bytes)?;
            if let Some(modinfo_name) = &info.name {
                if *modinfo_name != name {
                    return Err(ModulesError::NameMismatch {
                        path,
                        file_name: name,
                        modinfo_name: modinfo_name.clone(),
                    });
                }
            }
            if let Some(vermagic) = &info.vermagic {
                // vermagic is "<release> SMP preempt mod_unload …".
                if vermagic.split_whitespace().next() != Some(self.release.as_str()) {
                    return Err(ModulesError::Vermagic {
                        path,
                        vermagic: vermagic.clone(),
                        release: self.release.clone(),
                    });
                }
            }
            for dep in info.depends.iter().rev() {
                pending.push((dep.clone(), Some(name.clone())));
            }
            loaded.insert(
                name,
                Module {
                    path: rel.clone(),
                    info,
                    bytes,
                },
            );
        }
        Ok(loaded)
    }
}

/// Collects `*.ko` paths under `dir/rel`, relative to `dir`, with `/` separators.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<String>) -> Result<(), ModulesError> {
    let abs = dir.join(rel);
    let scan_err = |source| ModulesError::ScanDir {
        path: abs.clone(),
        source,
    };
    for entry in std::fs::read_dir(&abs).map_err(scan_err)? {
        let entry = entry.map_err(scan_err)?;
        let child = rel.join(entry.file_name());
        let file_type = entry.file_type().map_err(scan_err)?;
        if file_type.is_dir() {
            walk(dir, &child, out)?;
        } else if child.extension().is_some_and(|e| e == "ko") {
            let text = child.to_str().ok_or_else(|| ModulesError::NonUtf8Path {
                path: child.clone(),
            })?;
            out.push(text.to_owned());
        }
    }
    Ok(())
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One module in the dependency graph: its path and the names it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepNode {
    pub path: String,
    pub depends: Vec<String>,
}

impl From<&Module> for DepNode {
    fn from(m: &Module) -> DepNode {
        DepNode {
            path: m.path.clone(),
            depends: m.info.depends.clone(),
        }
    }
}

/// The text of `modules.dep` for a dependency-closed set of modules (see the module doc
/// for the format and the order).
pub fn modules_dep(graph: &BTreeMap<String, DepNode>) -> Result<String, ModulesError> {
    // Every dependency must be in the set.
    for (name, node) in graph {
        for dep in &node.depends {
            if !graph.contains_key(dep) {
                return Err(ModulesError::MissingDependency {
                    module: name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
    }
    // Kahn's algorithm, as depmod: start from the modules nothing depends on, give each a
    // sort index, and release a dependency once all its users have one. A module's index
    // is therefore lower than that of everything it depends on.
    let mut users: BTreeMap<&str, usize> = graph.keys().map(|k| (k.as_str(), 0)).collect();
    for node in graph.values() {
        for dep in dedup(&node.depends) {
            if let Some(n) = users.get_mut(dep.as_str()) {
                *n += 1;
            }
        }
    }
    let mut ready: BTreeSet<&str> = users
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(&k, _)| k)
        .collect();
    let mut sort_index: BTreeMap<&str, usize> = BTreeMap::new();
    while let Some(name) = ready.pop_first() {
        sort_index.insert(name, sort_index.len());
        for dep in dedup(&graph[name].depends) {
            if let Some(n) = users.get_mut(dep.as_str()) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(dep.as_str());
                }
            }
        }
    }
    if sort_index.len() != graph.len() {
        let modules = graph
            .keys()
            .filter(|k| !sort_index.contains_key(k.as_str()))
            .cloned()
            .collect();
        return Err(ModulesError::Cycle { modules });
    }
    let mut lines: Vec<String> = graph
        .iter()
        .map(|(name, node)| {
            let mut deps: Vec<&str> = transitive_deps(graph, name).into_iter().collect();
            deps.sort_by_key(|d| sort_index[d]);
            let paths: Vec<&str> = deps.iter().map(|d| graph[*d].path.as_str()).collect();
            if paths.is_empty() {
                format!("{}:", node.path)
            } else {
                format!("{}: {}", node.path, paths.join(" "))
            }
        })
        .collect();
    lines.sort();
    Ok(lines.iter().map(|l| format!("{l}\n")).collect())
}

fn dedup(names: &[String]) -> BTreeSet<&String> {
    names.iter().collect()
}

/// Every module `name` depends on, directly or not (not `name` itself).
fn transitive_deps<'a>(graph: &'a BTreeMap<String, DepNode>, name: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph[name].depends.iter().map(String::as_str).collect();
    while let Some(dep) = stack.pop() {
        if let Some((key, node)) = graph.get_key_value(dep) {
            if seen.insert(key.as_str()) {
                stack.extend(node.depends.iter().map(String::as_str));
            }
        }
    }
    seen.remove(name);
    seen
}

/// The text of `modules.alias`: `alias <pattern> <module name>` for every alias of every
/// module given, sorted by module name then pattern. A pattern with whitespace (which the
/// format cannot carry) is skipped with a warning.
pub fn modules_alias<'a>(modules: impl IntoIterator<Item = (&'a str, &'a [String])>) -> String {
    let mut lines = BTreeSet::new();
    for (name, aliases) in modules {
        for alias in aliases {
            if alias.is_empty() || alias.contains(char::is_whitespace) {
                log::warn!(
                    "module {name}: alias {alias:?} cannot be written to modules.alias; skipped"
                );
                continue;
            }
            lines.insert((name, alias.as_str()));
        }
    }
    let mut out = String::from("# Aliases extracted from modules themselves.\n");
    for (name, alias) in lines {
        out.push_str(&format!("alias {alias} {name}\n"));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, DepNode> {
        edges
            .iter()
            .map(|(name, deps)| {
                (
                    name.to_string(),
                    DepNode {
                        path: format!("kernel/{name}.ko"),
                        depends: deps.iter().map(|d| d.to_string()).collect(),
                    },
                )
            })
            .collect()
    }

    /// Parses modules.dep text back into name → dependency names.
    fn parse_dep(text: &str) -> BTreeMap<String, Vec<String>> {
        text.lines()
            .map(|line| {
                let (module, deps) = line.split_once(':').unwrap();
                let name = name_from_path(module).unwrap();
                let deps = deps
                    .split_whitespace()
                    .map(|d| name_from_path(d).unwrap())
                    .collect();
                (name, deps)
            })
            .collect()
    }

    /// Checks that loading each line's deps from last to first, then the module, never
    /// loads a module before one of its direct dependencies.
    fn assert_valid_load_orders(g: &BTreeMap<String, DepNode>, text: &str) {
        for (name, deps) in parse_dep(text) {
            let mut order: Vec<String> = deps.iter().rev().cloned().collect();
            order.push(name.clone());
            for (i, m) in order.iter().enumerate() {
                for d in &g[m].depends {
                    let pos = order.iter().position(|x| x == d);
                    assert!(
                        pos.is_some_and(|p| p < i),
                        "{name}: {m} loaded before its dependency {d} in {order:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn chain_lists_all_deps_users_first() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["d"]), ("d", &[])]);
        let text = modules_dep(&g).unwrap();
        assert_eq!(
            text,
            "kernel/a.ko: kernel/b.ko kernel/c.ko kernel/d.ko\n\
             kernel/b.ko: kernel/c.ko kernel/d.ko\n\
             kernel/c.ko: kernel/d.ko\n\
             kernel/d.ko:\n"
        );
        assert_valid_load_orders(&g, &text);
    }

    #[test]
    fn diamond_puts_shared_dep_last() {
        // top → left, right; left → base; right → base. base must follow both.
        let g = graph(&[
            ("top", &["right", "left"]),
            ("left", &["base"]),
            ("right", &["base"]),
            ("base", &[]),
        ]);
        let text = modules_dep(&g).unwrap();
        assert_eq!(
            text,
            "kernel/base.ko:\n\
             kernel/left.ko: kernel/base.ko\n\
             kernel/right.ko: kernel/base.ko\n\
             kernel/top.ko: kernel/left.ko kernel/right.ko kernel/base.ko\n"
        );
        assert_valid_load_orders(&g, &text);
    }

    #[test]
    fn skewed_diamond_orders_by_depth_not_name() {
        // a → z, m; z → m. Name order would put m before z, but z uses m.
        let g = graph(&[("a", &["m", "z"]), ("z", &["m"]), ("m", &[])]);
        let text = modules_dep(&g).unwrap();
        assert!(
            text.contains("kernel/a.ko: kernel/z.ko kernel/m.ko\n"),
            "{text}"
        );
        assert_valid_load_orders(&g, &text);
    }

    #[test]
    fn cycles_and_missing_deps_are_errors() {
        let g = graph(&[("a", &["b"]), ("b", &["a"]), ("c", &[])]);
        match modules_dep(&g) {
            Err(ModulesError::Cycle { modules }) => assert_eq!(modules, ["a", "b"]),
            other => panic!("{other:?}"),
        }
        let g = graph(&[("a", &["nope"])]);
        assert!(matches!(
            modules_dep(&g),
            Err(ModulesError::MissingDependency { .. })
        ));
    }

    #[test]
    fn alias_lines() {
        let net = vec!["virtio:d00000001v*".to_owned()];
        let dummy = vec!["rtnl-link-dummy".to_owned(), "bad alias".to_owned()];
        let text = modules_alias([("virtio_net", net.as_slice()), ("dummy", dummy.as_slice())]);
        assert_eq!(
            text,
            "# Aliases extracted from modules themselves.\n\
             alias rtnl-link-dummy dummy\n\
             alias virtio:d00000001v* virtio_net\n"
        );
    }

    #[test]
    fn modinfo_section_parsing() {
        let data = b"alias=rtnl-link-dummy\0license=GPL\0\0\0depends=\0name=dummy\0\
                     vermagic=6.1.0-50-cloud-amd64 SMP preempt mod_unload modversions \0";
        let info = parse_modinfo_section(data);
        assert_eq!(info.name.as_deref(), Some("dummy"));
        assert_eq!(info.aliases, ["rtnl-link-dummy"]);
        assert!(info.depends.is_empty());
        assert!(info.vermagic.unwrap().starts_with("6.1.0-50-cloud-amd64 "));

        let info =
            parse_modinfo_section(b"depends=virtio_ring,virtio,net-failover\0name=xen-netfront\0");
        assert_eq!(info.depends, ["virtio_ring", "virtio", "net_failover"]);
        assert_eq!(info.name.as_deref(), Some("xen_netfront"));
    }

    /// A minimal ELF64 relocatable file with one `.modinfo` section, built by hand.
    pub(crate) fn synthetic_ko(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let data_off = 64u64;
        let shstr_off = data_off + modinfo.len() as u64;
        let sh_off = (shstr_off + shstrtab.len() as u64).next_multiple_of(8);
        let mut elf = Vec::new();
        elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        elf.extend_from_slice(&[0; 8]);
        elf.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // entry
        elf.extend_from_slice(&0u64.to_le_bytes()); // phoff
        elf.extend_from_slice(&sh_off.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes()); // flags
        elf.extend_from_slice(&64u16.to_le_bytes()); // ehsize
        elf.extend_from_slice(&0u16.to_le_bytes()); // phentsize
        elf.extend_from_slice(&0u16.to_le_bytes()); // phnum
        elf.extend_from_slice(&64u16.to_le_bytes()); // shentsize
        elf.extend_from_slice(&3u16.to_le_bytes()); // shnum
        elf.extend_from_slice(&2u16.to_le_bytes()); // shstrndx
        elf.extend_from_slice(modinfo);
        elf.extend_from_slice(shstrtab);
        elf.resize(sh_off as usize, 0);
        let section = |elf: &mut Vec<u8>, name: u32, kind: u32, off: u64, size: u64| {
            elf.extend_from_slice(&name.to_le_bytes());
            elf.extend_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&0u64.to_le_bytes()); // flags
            elf.extend_from_slice(&0u64.to_le_bytes()); // addr
            elf.extend_from_slice(&off.to_le_bytes());
            elf.extend_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&0u32.to_le_bytes()); // link
            elf.extend_from_slice(&0u32.to_le_bytes()); // info
            elf.extend_from_slice(&1u64.to_le_bytes()); // addralign
            elf.extend_from_slice(&0u64.to_le_bytes()); // entsize
        };
        section(&mut elf, 0, 0, 0, 0);
        section(&mut elf, 1, 1, data_off, modinfo.len() as u64); // SHT_PROGBITS
        section(&mut elf, 10, 3, shstr_off, shstrtab.len() as u64); // SHT_STRTAB
        elf
    }

    #[test]
    fn modinfo_from_synthetic_elf() {
        let ko = synthetic_ko(b"alias=fs-toy\0depends=a,b-c\0name=toy\0vermagic=6.1.0-test SMP\0");
        let info = parse_modinfo(Path::new("toy.ko"), &ko).unwrap();
        assert_eq!(info.name.as_deref(), Some("toy"));
        assert_eq!(info.aliases, ["fs-toy"]);
        assert_eq!(info.depends, ["a", "b_c"]);
        assert!(matches!(
            parse_modinfo(Path::new("x.ko"), b"not elf"),
            Err(ModulesError::ParseElf { .. })
        ));
        // A module without .modinfo: rename the section to .mXdinfo.
        let mut renamed = synthetic_ko(b"name=x\0");
        let at = renamed.windows(8).position(|w| w == b".modinfo").unwrap();
        renamed[at + 1] = b'X';
        assert!(matches!(
            parse_modinfo(Path::new("x.ko"), &renamed),
            Err(ModulesError::NoModinfo { .. })
        ));
    }

    /// Unpacks just `members` (tar wildcards) of the pinned kernel package, fetching it
    /// into the shared cache first if needed.
    pub(crate) fn real_modules(members: &[&str]) -> tempfile::TempDir {
        let cache = crate::kernel::cache_dir().unwrap();
        let deb = crate::kernel::fetch(&cache, &crate::kernel::PIN).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"deb="$1"; dir="$2"; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards "$@""#)
            .arg("sh")
            .arg(&deb)
            .arg(dir.path())
            .args(members)
            .status()
            .unwrap();
        assert!(status.success());
        dir
    }

    #[test]
    fn modinfo_of_real_modules() {
        let dir = real_modules(&["*/net/dummy.ko", "*/net/virtio_net.ko"]);
        let net = dir
            .path()
            .join("lib/modules")
            .join(
                crate::kernel::PIN
                    .package
                    .trim_start_matches("linux-image-"),
            )
            .join("kernel/drivers/net");
        let read = |f: &str| {
            let path = net.join(f);
            parse_modinfo(&path, &std::fs::read(&path).unwrap()).unwrap()
        };
        let dummy = read("dummy.ko");
        assert_eq!(dummy.name.as_deref(), Some("dummy"));
        assert_eq!(dummy.aliases, ["rtnl-link-dummy"]);
        assert!(dummy.depends.is_empty());
        assert!(dummy
            .vermagic
            .unwrap()
            .starts_with("6.1.0-50-cloud-amd64 SMP"));
        let virtio_net = read("virtio_net.ko");
        assert_eq!(virtio_net.name.as_deref(), Some("virtio_net"));
        assert_eq!(
            virtio_net.depends,
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert_eq!(virtio_net.aliases, ["virtio:d00000001v*"]);
    }

    /// Builds a fake `lib/modules/<release>` tree of synthetic modules.
    fn fake_tree(dir: &Path, mods: &[(&str, &str)]) {
        for (rel, modinfo) in mods {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, synthetic_ko(modinfo.as_bytes())).unwrap();
        }
        std::fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
    }

    #[test]
    fn resolve_and_closure_on_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        fake_tree(
            dir.path(),
            &[
                (
                    "kernel/net/veth.ko",
                    "name=veth\0depends=\0vermagic=6.1.0-t SMP\0",
                ),
                (
                    "kernel/net/top-mod.ko",
                    "name=top_mod\0depends=veth,mid\0alias=top:*\0vermagic=6.1.0-t SMP\0",
                ),
                (
                    "kernel/lib/mid.ko",
                    "name=mid\0depends=veth\0vermagic=6.1.0-t SMP\0",
                ),
                ("kernel/lib/odd.ko", "name=other\0depends=\0"),
                ("kernel/lib/old.ko", "name=old\0vermagic=5.10.0 SMP\0"),
            ],
        );
        let tree = ModuleTree::scan(dir.path(), "6.1.0-t").unwrap();
        assert!(tree.is_module("top-mod") && tree.is_builtin("ext4"));

        // Built-in requests need nothing; unknown defaults are skipped.
        let roots = tree
            .resolve(&["top-mod".into(), "ext4".into()], &["nonexistent", "veth"])
            .unwrap();
        assert_eq!(roots, ["top_mod", "veth"]);

        // An unknown request is an error with a suggestion.
        let err = tree.resolve(&["vet".into()], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`vet`") && msg.contains("did you mean veth"),
            "{msg}"
        );

        let closure = tree.load_closure(&["top_mod".to_owned()]).unwrap();
        assert_eq!(
            closure.keys().collect::<Vec<_>>(),
            ["mid", "top_mod", "veth"]
        );
        let g = closure
            .iter()
            .map(|(k, m)| (k.clone(), DepNode::from(m)))
            .collect();
        assert_eq!(
            modules_dep(&g).unwrap(),
            "kernel/lib/mid.ko: kernel/net/veth.ko\n\
             kernel/net/top-mod.ko: kernel/lib/mid.ko kernel/net/veth.ko\n\
             kernel/net/veth.ko:\n"
        );

        assert!(matches!(
            tree.load_closure(&["odd".to_owned()]),
            Err(ModulesError::NameMismatch { .. })
        ));
        assert!(matches!(
            tree.load_closure(&["old".to_owned()]),
            Err(ModulesError::Vermagic { .. })
        ));
    }
}
