//! `fedgate completions` and `fedgate man` (hidden): shell completions and man pages generated
//! from the command line's own definition, so the package's copies can never drift from it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

/// Arguments of `fedgate completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; the script goes to stdout.
    #[arg(value_enum)]
    shell: Shell,
}

/// The shells the package ships completions for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Shell {
    /// bash (`/usr/share/bash-completion/completions/fedgate`).
    Bash,
    /// zsh (`/usr/share/zsh/vendor-completions/_fedgate`).
    Zsh,
    /// fish (`/usr/share/fish/vendor_completions.d/fedgate.fish`).
    Fish,
}

/// Arguments of `fedgate man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Folder to write `fedgate.1` and one `fedgate-<command>.1` a subcommand into.
    dir: PathBuf,
}

/// Writes the completion script for one shell to stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::Cli::command(), "fedgate", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completions")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages (section 1) of `fedgate` and every visible subcommand.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
