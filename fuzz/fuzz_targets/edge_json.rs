//! The WebSocket edge's JSON protocol: a text frame as the socket reads it, then what the
//! session does with it before any network I/O (the rpc checks, the signed request's layers).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedgate_dev::fuzzing::edge_json(data));
