//! The edge's limits: what sessions read from `[edge]`, and the handshakes each remote address
//! may hold at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::EdgeConfig;

/// The limits and settings sessions read.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) origins: Vec<String>,
    pub(super) max_message_bytes: usize,
    pub(super) max_in_flight: usize,
    pub(super) outbound_queue: usize,
    pub(super) outbound_queue_bytes: usize,
    pub(super) idle: Duration,
    pub(super) ping: Duration,
    pub(super) auth_timeout: Duration,
    pub(super) handshake_timeout: Duration,
    pub(super) grace: Duration,
    pub(super) token_ttl: Duration,
}

impl Settings {
    /// The settings of `edge`, each raised to its least usable value.
    pub(super) fn new(edge: &EdgeConfig) -> Settings {
        Settings {
            origins: edge.origins.clone(),
            max_message_bytes: edge.max_message_bytes,
            max_in_flight: edge.max_in_flight.max(1),
            outbound_queue: edge.outbound_queue.max(4),
            outbound_queue_bytes: edge.outbound_queue_bytes.max(64 * 1024),
            idle: Duration::from_secs(edge.idle_timeout_s.max(1)),
            ping: Duration::from_secs(edge.ping_interval_s.max(1)),
            auth_timeout: Duration::from_secs(edge.auth_timeout_s.max(1)),
            handshake_timeout: Duration::from_secs(edge.handshake_timeout_s.max(1)),
            grace: Duration::from_secs(edge.shutdown_grace_s),
            token_ttl: Duration::from_secs(edge.token_ttl_s.max(60)),
        }
    }
}

/// Password checks (argon2, 19 MiB each) running at once.
pub(super) const MAX_LOGINS: usize = 4;
/// Logins one source may have waiting for a password check.
pub(super) const LOGINS_WAITING_PER_SOURCE: usize = 4;
/// Logins waiting for a password check, in all.
pub(super) const LOGINS_WAITING: usize = 256;
/// How long a login waits for a password check before it is answered 503: long enough for a
/// few checks on a busy machine, since a source waits only behind its own and a few others'.
pub(super) const LOGIN_WAIT: Duration = Duration::from_secs(30);

/// How long a socket's writer may wait on a client that does not read before the connection is
/// dropped.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections held per remote address, each at most `limit`; an address leaves the map with
/// its last connection, so the map is never larger than the connections held.
pub(super) struct AddressSlots {
    held: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
    limit: usize,
}

/// One connection's place in [`AddressSlots`], given back on drop.
pub(super) struct AddressSlot {
    slots: Arc<AddressSlots>,
    address: std::net::IpAddr,
}

impl AddressSlots {
    /// Slots of at most `limit` connections per address.
    pub(super) fn new(limit: usize) -> AddressSlots {
        AddressSlots {
            held: std::sync::Mutex::default(),
            limit: limit.max(1),
        }
    }

    /// A slot for `address`, unless it holds `limit` already.
    pub(super) fn take(
        slots: &Arc<AddressSlots>,
        address: std::net::IpAddr,
    ) -> Option<AddressSlot> {
        let mut held = slots.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(address).or_default();
        if *count >= slots.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: slots.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}
