//! Choria actionpolicy files and the groups file. A policy that parses is then asked for a
//! decision, which must not panic either, and without an allow line nothing is permitted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedgate_dev::fuzzing::actionpolicy(data));
