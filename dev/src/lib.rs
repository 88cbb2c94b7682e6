//! fedgate-dev: what develops, demonstrates and measures fedgate, kept out of the gateway.
//!
//! The `fedgate` crate and binary hold only what an operator runs. Everything here runs
//! against them from outside: it drives `fedgate run` as a child process or uses the library's
//! public API, as any client would.
//!
//! # Layout
//! - [`fleet`]: simulated Choria nodes that check requests as a Choria server does.
//! - [`natsd`]: real nats-server child processes for the demo and tests.
//! - [`devpki`]: the development PKI (`fedgate-dev certs dev`).
//! - [`bench`]: the side-by-side benchmarks behind `fedgate-dev bench`.
//! - [`fuzzing`]: the bodies of the cargo-fuzz targets, replayed by the tests.
//! - [`testing`]: the integration tests' shared support (`tests/support` re-exports it).
//!
//! The integration tests of the `fedgate` package use this crate as a dev-dependency.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod devpki;
pub mod fleet;
pub mod fuzzing;
pub mod natsd;
pub mod testing;

/// Environment variable naming the `fedgate` binary the demo and benchmarks start.
pub const FEDGATE_BIN_ENV: &str = "FEDGATE_BIN";

/// The `fedgate` binary to start: `$FEDGATE_BIN`, else `fedgate` beside this executable (cargo
/// builds both into one folder), else `fedgate` on the `PATH`.
pub fn gateway_exe() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(FEDGATE_BIN_ENV).filter(|p| !p.is_empty()) {
        return path.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let sibling = exe.parent()?.join("fedgate");
            sibling.is_file().then_some(sibling)
        })
        .unwrap_or_else(|| "fedgate".into())
}
