//! The Choria v2 decoders on one input: transport, secure request (and its verification against
//! a fixed issuer) and secure reply with the documents inside them. Whatever decodes must encode
//! to something that decodes to the same value.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedgate_dev::fuzzing::choria_v2(data));
