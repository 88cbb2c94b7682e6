//! The defaults of the configuration's keys, one function per key for serde.

use std::sync::Arc;

use crate::security::identity::IdentityRules;

pub fn stats_interval() -> u64 {
    10
}
pub fn drain_timeout() -> u64 {
    10
}
pub fn max_hops() -> usize {
    8
}
pub fn max_targets() -> usize {
    1000
}
pub fn batch_size() -> usize {
    200
}
pub fn unconfigured() -> crate::policy::Effect {
    crate::policy::Effect::Deny
}
pub fn rotate_bytes() -> u64 {
    64 * 1024 * 1024
}
pub fn fsync_interval_ms() -> u64 {
    1000
}
pub fn checkpoint_every() -> u64 {
    1000
}
pub fn checkpoint_interval_s() -> u64 {
    60
}
pub fn edge_realm() -> String {
    "edge".into()
}
pub fn edge_token_ttl() -> u64 {
    8 * 3600
}
pub fn edge_message_bytes() -> usize {
    64 * 1024
}
pub fn edge_connections() -> usize {
    10_000
}
pub fn edge_in_flight() -> usize {
    16
}
pub fn edge_reply_buffer() -> usize {
    262_144
}
pub fn edge_rate() -> u32 {
    20
}
pub fn edge_burst() -> u32 {
    40
}
pub fn legacy_collective() -> String {
    "mcollective".into()
}
pub fn legacy_serializer() -> crate::wire::mcollective::Serializer {
    crate::wire::mcollective::Serializer::Marshal
}
pub fn legacy_identity() -> String {
    "fedgate".into()
}
pub fn legacy_skew() -> i64 {
    30
}
pub fn legacy_agents() -> Vec<String> {
    vec!["discovery".into(), "rpcutil".into()]
}
pub fn legacy_prefetch() -> u16 {
    64
}
pub fn legacy_refresh() -> u64 {
    60
}
pub fn legacy_max_copies() -> usize {
    16
}
pub fn legacy_reconnect_min() -> u64 {
    100
}
pub fn legacy_reconnect_max() -> u64 {
    5_000
}
pub fn legacy_max_bytes() -> usize {
    1024 * 1024
}
pub fn edge_outbound() -> usize {
    16 * 1024
}
pub fn edge_outbound_bytes() -> usize {
    8 * 1024 * 1024
}
pub fn edge_idle() -> u64 {
    300
}
pub fn edge_ping() -> u64 {
    30
}
pub fn edge_auth_timeout() -> u64 {
    5
}
pub fn edge_handshake_timeout() -> u64 {
    10
}
pub fn edge_max_handshakes() -> usize {
    1024
}
pub fn edge_max_handshakes_per_address() -> usize {
    256
}
pub fn edge_login_rate() -> u32 {
    30
}
pub fn edge_login_burst() -> u32 {
    10
}
pub fn edge_grace() -> u64 {
    10
}
pub fn audit_stream() -> String {
    "FEDGATE_AUDIT".into()
}
pub fn audit_subject() -> String {
    "fedgate.audit".into()
}
pub fn audit_replicas() -> usize {
    1
}
pub fn yes() -> bool {
    true
}
pub fn replay_bucket() -> String {
    "fedgate-replay".into()
}
pub fn max_signed_ttl() -> i64 {
    super::replay::DEFAULT_MAX_SIGNED_TTL
}
pub fn min_life_s() -> i64 {
    super::replay::DEFAULT_MIN_LIFE
}
pub fn audit_stream_bytes() -> i64 {
    10 << 30
}
pub fn audit_duplicate_window() -> u64 {
    120
}
pub fn audit_ack_timeout_ms() -> u64 {
    2000
}
pub fn max_ttl() -> i64 {
    60
}
pub fn registry_prefix() -> String {
    "fedgate".into()
}
pub fn registry_timeout_ms() -> u64 {
    2000
}
pub fn registry_heartbeat() -> u64 {
    2
}
pub fn identity_rules() -> Arc<IdentityRules> {
    Arc::new(IdentityRules::deny_all())
}
pub fn edge_unverified_budget() -> u64 {
    100
}
pub fn edge_unverified_interval() -> u64 {
    60
}
