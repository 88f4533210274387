//! `berth-image`: the `berth image` commands as a standalone tool, for
//! hosts and tests until the `berth` binary mounts [`berth_imagefs::cli`].

use clap::Parser;

#[derive(Parser)]
#[command(name = "berth-image", about = "Manage berth's image store")]
struct Cli {
    #[command(flatten)]
    image: berth_imagefs::cli::ImageArgs,
}

fn main() -> std::process::ExitCode {
    berth_imagefs::cli::run(Cli::parse().image)
}
