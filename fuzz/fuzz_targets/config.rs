//! `fedgate run`'s config file: TOML, then every check `fedgate run` makes before it starts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedgate_dev::fuzzing::config(data));
