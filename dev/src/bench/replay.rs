//! The replay guard's cost: the resign path with a claim per request, in this process and in a
//! shared JetStream key-value bucket, next to the same path with no guard.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use rcgen::RsaKeySize;

use super::resign::{fixture, resign_all};
use super::{BenchError, Row, interleaved, row, setup_err};
use crate::natsd::{NatsServer, NatsServerConfig};
use fedgate::gateway::{Claim, Lifetime, Mode, ReplayGuard};
use fedgate::security::Now;

/// Claims before an in-process guard is replaced, so it never fills.
const LOCAL_CLAIMS: u64 = 50_000;

/// Runs both comparisons, `budget` per side; the JetStream server's files go under `dir`.
/// Call it from a blocking thread of a Tokio runtime: the shared guard's I/O runs there.
pub fn run(budget: Duration, dir: &Path) -> Result<Vec<Row>, BenchError> {
    let now = Now::system();
    let fx = fixture(RsaKeySize::_2048, now)?;
    let signed = b"the signed request bytes";
    let mut serial = 0u64;
    let mut local = ReplayGuard::local();
    let mut rows = vec![row(
        "resign request + replay claim (in this process)".into(),
        "resign request, no guard",
        interleaved(
            budget,
            || {
                black_box(resign_all(&fx, black_box(now)).ok());
            },
            || {
                black_box(resign_all(&fx, black_box(now)).ok());
                serial += 1;
                if serial.is_multiple_of(LOCAL_CLAIMS) {
                    local = ReplayGuard::local();
                }
                let collective = serial.to_string();
                let claim = claim(signed, &collective);
                let at = now.unix_seconds();
                black_box(futures::executor::block_on(local.claim(&claim, at + 60, at)).ok());
            },
        ),
    )];

    let server = NatsServer::start(
        &dir.join("replay-nats"),
        NatsServerConfig {
            name: "replay".into(),
            jetstream: true,
            ..NatsServerConfig::default()
        },
    )
    .map_err(setup_err)?;
    let handle = tokio::runtime::Handle::current();
    let shared = handle.block_on(async {
        let client = async_nats::connect(server.url()).await.map_err(setup_err)?;
        ReplayGuard::shared(client, "bench-replay", Lifetime::default().keep(), 1)
            .await
            .map_err(setup_err)
    })?;
    rows.push(row(
        "resign request + replay claim (shared JetStream bucket)".into(),
        "resign request, no guard",
        interleaved(
            budget,
            || {
                black_box(resign_all(&fx, black_box(now)).ok());
            },
            || {
                black_box(resign_all(&fx, black_box(now)).ok());
                serial += 1;
                let collective = serial.to_string();
                let claim = claim(signed, &collective);
                let at = now.unix_seconds();
                black_box(handle.block_on(shared.claim(&claim, at + 60, at)).ok());
            },
        ),
    ));
    Ok(rows)
}

fn claim<'a>(signed: &'a [u8], collective: &'a str) -> Claim<'a> {
    Claim {
        realm: "prod",
        signed,
        collective,
        mode: Mode::Broadcast,
    }
}
