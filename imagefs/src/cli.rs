//! `berth image …`: the commands over the store, as a clap subcommand the
//! `berth` tool mounts with `#[command(flatten)]` or as a subcommand's args.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::import::{self, Event, ImportOptions};
use crate::info::{self, ImageInfo};
use crate::mount;
use crate::oci::Platform;
use crate::reference::Reference;
use crate::store::Store;
use crate::verify::{self, VerifyReport};

/// Manage images in the store.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The store directory. `import` creates it; `ls` and `inspect` only read it (any
    /// user who can read it may list it); the other commands write it.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/berth"
    )]
    pub store: PathBuf,
    /// Print JSON for scripts instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout (directory or tar) or a docker-archive tar.
    Import {
        /// The image to import.
        path: PathBuf,
        /// Name it NAME or NAME:TAG (default: from the image, else the file name).
        #[arg(long, value_name = "NAME:TAG")]
        name: Option<Reference>,
        /// Platform to take from a multi-platform image (default linux/amd64).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platform: Option<Platform>,
        /// Pick one of several images in the archive by its ref name or repo tag.
        #[arg(long, value_name = "NAME")]
        select: Option<String>,
    },
    /// List images.
    Ls,
    /// Show an image's config and layers.
    Inspect {
        /// NAME, NAME:TAG or digest.
        reference: String,
    },
    /// Remove an image's name (its data goes at the next gc).
    Rm {
        /// NAME or NAME:TAG.
        reference: String,
    },
    /// Delete blobs and layers no image or mount uses.
    Gc,
    /// Re-hash blobs and re-check unpacked layers; damaged parts are removed
    /// so that importing the image again repairs it.
    Verify {
        /// One image (default: all).
        reference: Option<String>,
    },
    /// Mount an image read-only at DIR, for looking inside.
    Mount {
        /// NAME, NAME:TAG or digest.
        reference: String,
        /// An existing directory.
        dir: PathBuf,
    },
    /// Unmount what `mount` mounted.
    Umount {
        /// The mount point.
        dir: PathBuf,
    },
    /// Write a one-layer OCI image layout holding a static busybox and its applet
    /// links (Debian's busybox-static), byte-for-byte reproducible. Touches no store.
    Busybox {
        /// The layout directory to write (replaced if it exists).
        out: PathBuf,
        /// The static busybox binary.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// The ref name recorded in the layout's index.
        #[arg(long, default_value = "busybox:latest")]
        name: String,
    },
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).ok_or_else(|| format!("{s:?} is not OS/ARCH[/VARIANT]"))
}

/// Run a `berth image` command; errors are printed with their causes.
pub fn run(args: ImageArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("error: {}", crate::error_chain(e.as_ref()));
            if args.json {
                println!("{}", serde_json::json!({ "error": msg }));
            } else {
                eprintln!("berth image: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

fn json_out(v: &impl serde::Serialize) -> Result<(), AnyError> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run_inner(args: &ImageArgs) -> Result<ExitCode, AnyError> {
    if let ImageCommand::Busybox { out, busybox, name } = &args.command {
        // Replace only an image layout (or an empty directory): never anything else
        // that happens to be at OUT.
        if out.exists() {
            let is_layout = out.join("oci-layout").is_file();
            let is_empty = std::fs::read_dir(out)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !is_layout && !is_empty {
                return Err(format!(
                    "{} exists and is not an OCI image layout: refusing to replace it",
                    out.display()
                )
                .into());
            }
            std::fs::remove_dir_all(out)?;
        }
        let digest = crate::build::write_busybox_layout(out, busybox, name)?;
        if args.json {
            json_out(&serde_json::json!({ "layout": out, "manifest": digest.to_string() }))?;
        } else {
            println!("wrote {} ({name}, manifest {digest})", out.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Listing and inspecting only read: they neither create the store nor need
    // to write to it, so they work for any user who can read it.
    let store = match &args.command {
        ImageCommand::Ls | ImageCommand::Inspect { .. } => Store::open_read_only(&args.store)?,
        _ => Store::open(&args.store)?,
    };
    match &args.command {
        ImageCommand::Import {
            path,
            name,
            platform,
            select,
        } => {
            let opts = ImportOptions {
                name: name.clone(),
                platform: platform.clone(),
                select: select.clone(),
                ..Default::default()
            };
            let mut progress = Progress::new(!args.json && std::io::stderr().is_terminal());
            let rep = import::import(&store, path, &opts, &mut |e| progress.event(e));
            progress.finish();
            let rep = rep?;
            if args.json {
                json_out(&rep)?;
            } else {
                println!(
                    "imported {} ({}): {} layer{}, {} unpacked, {} already present",
                    rep.name,
                    rep.manifest.short(),
                    rep.layers,
                    if rep.layers == 1 { "" } else { "s" },
                    rep.layers_unpacked,
                    rep.layers - rep.layers_unpacked
                );
                if let Some(old) = rep.replaced {
                    println!(
                        "{} previously named {}; run `berth image gc` to free it",
                        rep.name,
                        old.short()
                    );
                }
            }
        }
        ImageCommand::Ls => {
            let images = info::list(&store)?;
            if args.json {
                json_out(&images)?;
            } else if images.is_empty() {
                println!("no images");
            } else {
                println!(
                    "{:<40} {:<12} {:>6} {:>10}  PLATFORM",
                    "NAME", "ID", "LAYERS", "SIZE"
                );
                for i in &images {
                    for n in &i.names {
                        println!(
                            "{:<40} {:<12} {:>6} {:>10}  {}",
                            n,
                            i.manifest.short(),
                            i.layers.len(),
                            human(i.size),
                            shown(&i.platform)
                        );
                    }
                }
            }
        }
        ImageCommand::Inspect { reference } => {
            let (name, d) = store.resolve(reference)?;
            let names = names_for(&store, &d, name)?;
            let i = info::describe(&store, &d, names)?;
            if args.json {
                json_out(&i)?;
            } else {
                print_inspect(&i);
            }
        }
        ImageCommand::Rm { reference } => {
            let r = Reference::parse(reference)?;
            let d = store.remove_ref(&r)?;
            if args.json {
                json_out(&serde_json::json!({ "removed": r.to_string(), "manifest": d }))?;
            } else {
                println!(
                    "removed {r} ({}); run `berth image gc` to free its data",
                    d.short()
                );
            }
        }
        ImageCommand::Gc => {
            let rep = store.gc()?;
            if args.json {
                json_out(&rep)?;
            } else {
                println!(
                    "removed {} blobs and {} layers, freed {} of blobs",
                    rep.blobs_removed,
                    rep.layers_removed,
                    human(rep.bytes_freed)
                );
            }
        }
        ImageCommand::Verify { reference } => {
            let targets: Vec<(String, crate::Digest)> = match reference {
                Some(r) => {
                    let (n, d) = store.resolve(r)?;
                    vec![(n.unwrap_or_else(|| d.to_string()), d)]
                }
                None => store.refs()?.into_iter().collect(),
            };
            let mut rep = VerifyReport::default();
            for (name, d) in &targets {
                let before = rep.problems.len();
                verify::verify_image(&store, d, &mut rep)?;
                if !args.json {
                    if rep.problems.len() == before {
                        println!("{name}: ok");
                    } else {
                        println!("{name}: DAMAGED");
                        for p in &rep.problems[before..] {
                            println!("  {} {}: {}", p.kind, p.digest.short(), p.detail);
                        }
                    }
                }
            }
            if args.json {
                json_out(&rep)?;
            } else if !rep.problems.is_empty() {
                println!("damaged parts were removed; import the image again to repair it");
            } else {
                println!(
                    "{} blobs and {} layers verified",
                    rep.blobs_checked, rep.layers_checked
                );
            }
            if !rep.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        ImageCommand::Mount { reference, dir } => {
            let (name, d) = store.resolve(reference)?;
            mount::mount_image(&store, &d, dir, None)?;
            if args.json {
                json_out(&serde_json::json!({ "mounted": dir, "manifest": d }))?;
            } else {
                println!(
                    "mounted {} read-only at {}",
                    name.unwrap_or_else(|| d.to_string()),
                    dir.display()
                );
            }
        }
        ImageCommand::Busybox { .. } => {}
        ImageCommand::Umount { dir } => {
            mount::umount_image(&store, dir)?;
            if args.json {
                json_out(&serde_json::json!({ "unmounted": dir }))?;
            } else {
                println!("unmounted {}", dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn names_for(
    store: &Store,
    d: &crate::Digest,
    name: Option<String>,
) -> Result<Vec<String>, AnyError> {
    let mut names: Vec<String> = store
        .refs()?
        .into_iter()
        .filter(|(_, v)| v == d)
        .map(|(k, _)| k)
        .collect();
    if let Some(n) = name {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Ok(names)
}

/// Text from an image's config as `ls` and `inspect` print it: escaped, so that an
/// image cannot write control sequences to the terminal, and bounded.
fn shown(s: &str) -> String {
    crate::text::printable(s, 4096)
}

fn print_inspect(i: &ImageInfo) {
    // As a JSON array: each argument quoted, as Docker shows them.
    let list = |v: &Option<Vec<String>>| {
        v.as_ref().map_or("-".to_string(), |v| {
            shown(&serde_json::to_string(v).unwrap_or_default())
        })
    };
    let opt = |v: &Option<String>| v.as_deref().map_or("-".to_string(), shown);
    println!(
        "names:        {}",
        if i.names.is_empty() {
            "-".into()
        } else {
            i.names.join(", ")
        }
    );
    println!("manifest:     {}", i.manifest);
    println!("config:       {}", i.config);
    println!("platform:     {}", shown(&i.platform));
    println!("created:      {}", opt(&i.created));
    println!("entrypoint:   {}", list(&i.entrypoint));
    println!("cmd:          {}", list(&i.cmd));
    println!("workdir:      {}", opt(&i.working_dir));
    println!("user:         {}", opt(&i.user));
    println!(
        "ports:        {}",
        if i.exposed_ports.is_empty() {
            "-".into()
        } else {
            shown(&i.exposed_ports.join(", "))
        }
    );
    println!("env:");
    for e in &i.env {
        println!("  {}", shown(e));
    }
    println!("layers:       {} ({})", i.layers.len(), human(i.size));
    for (n, l) in i.layers.iter().enumerate() {
        println!(
            "  {n:>3}  {}  {:>10}  diff {}{}",
            l.digest.short(),
            human(l.size),
            l.diff_id.short(),
            if l.unpacked { "" } else { "  (not unpacked)" }
        );
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One status line on a terminal, rewritten in place.
struct Progress {
    on: bool,
    layers: usize,
    dirty: bool,
}

impl Progress {
    fn new(on: bool) -> Self {
        Progress {
            on,
            layers: 0,
            dirty: false,
        }
    }

    fn line(&mut self, s: String) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{s}");
        let _ = err.flush();
        self.dirty = true;
    }

    fn event(&mut self, e: &Event) {
        if !self.on {
            return;
        }
        let n = self.layers;
        match e {
            Event::Resolved { layers, bytes } => {
                self.layers = *layers;
                self.line(format!("importing {layers} layers ({})", human(*bytes)));
            }
            Event::BlobProgress { index, done, total } => self.line(format!(
                "[{}/{n}] copying {} / {}",
                index + 1,
                human(*done),
                human(*total)
            )),
            Event::LayerUnpacking { index } => self.line(format!("[{}/{n}] unpacking", index + 1)),
            Event::LayerProgress { index, done } => {
                self.line(format!("[{}/{n}] unpacking {}", index + 1, human(*done)))
            }
            Event::LayerUnpacked { index, stats, .. } => self.line(format!(
                "[{}/{n}] unpacked {} entries, {}",
                index + 1,
                stats.entries,
                human(stats.tar_bytes)
            )),
            Event::LayerPresent { index, .. } => {
                self.line(format!("[{}/{n}] already present", index + 1))
            }
            Event::BlobStored { .. } | Event::ImageStored { .. } | Event::RefWritten { .. } => {}
        }
    }

    fn finish(&mut self) {
        if self.dirty {
            eprint!("\r\x1b[2K");
        }
    }
}
