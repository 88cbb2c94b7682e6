//! The Choria v1 decoders on one input: transport (and its relay form), secure request and
//! secure reply with the documents inside them. Whatever decodes must encode to something that
//! decodes to the same value.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedgate_dev::fuzzing::choria(data));
