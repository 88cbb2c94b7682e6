//! What both binaries' command lines share: the version, logging set-up, signals, and the
//! flags that say how a request is checked.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The version and the commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FEDGATE_COMMIT"), ")");

/// How requests are checked: the CA plus Choria's name rules and the size limit.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// Privileged certname pattern (repeatable); defaults to Choria's.
    #[arg(long = "privileged", value_name = "REGEX")]
    privileged: Vec<String>,
    /// Certname allow-list pattern (repeatable); defaults to Choria's.
    #[arg(long = "allow", value_name = "REGEX")]
    allow: Vec<String>,
    /// Refuse messages larger than this many bytes.
    #[arg(long, default_value_t = crate::wire::DEFAULT_MAX_MESSAGE_BYTES)]
    max_bytes: usize,
}

impl TrustArgs {
    /// Decode limits with the configured size.
    pub fn limits(&self) -> crate::wire::Limits {
        crate::wire::Limits {
            max_message_bytes: self.max_bytes,
            ..crate::wire::Limits::default()
        }
    }

    /// A verifier for `ca` with these rules; an empty list means Choria's defaults.
    pub fn verifier(&self, ca: &std::path::Path) -> anyhow::Result<crate::security::Verifier> {
        use crate::security::{CaBundle, NamePatterns, patterns_defaults};
        Ok(crate::security::Verifier::new(
            CaBundle::from_file(ca)?,
            NamePatterns::or_defaults(given(&self.privileged), patterns_defaults::PRIVILEGED)?,
            NamePatterns::or_defaults(given(&self.allow), patterns_defaults::ALLOWLIST)?,
            self.limits(),
        ))
    }
}

/// Sends logs to stderr in `format`, filtered by `RUST_LOG` or the verbosity flag. Colours
/// only when stderr is a terminal and `NO_COLOR` is unset, so journald and files get plain text.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    use std::io::IsTerminal;
    let default = match verbose {
        0 => "warn,fedgate::status=info",
        1 => "info,fedgate=info",
        _ => "debug,fedgate=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_ansi(false)
            .init(),
    }
}

/// Ctrl-C and SIGTERM, listened for from the moment this is made: a signal that comes while a
/// process is still starting is kept, and seen by the first [`Shutdown::recv`], never lost.
pub struct Shutdown {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Starts listening.
    pub fn listen() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on Ctrl-C or SIGTERM (at once if one came since [`Shutdown::listen`]).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Patterns given on the command line, or `None` when the flag was not used.
fn given(list: &[String]) -> Option<&[String]> {
    (!list.is_empty()).then_some(list)
}

/// Runs `command` on a new multi-threaded tokio runtime and returns its exit code; when the
/// runtime cannot start or the command fails, says so on stderr as `program: reason` and
/// returns 2 (an operational failure).
pub fn block_on_command(
    program: &str,
    command: impl std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{program}: could not start the async runtime: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{program}: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
