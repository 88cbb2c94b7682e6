//! YAML as legacy MCollective (Psych) sends it: the decoder and the request and reply
//! envelopes. What decodes re-encodes to YAML that decodes, and encoding is then a fixed point.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedgate_dev::fuzzing::yaml(data));
