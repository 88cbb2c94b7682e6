//! Ruby Marshal as legacy MCollective sends it: the value decoder, the raw node decoder, and
//! the request and reply envelopes. A decoded value re-encodes to bytes that decode to the same
//! bytes again, and the raw form of an encoding is that encoding, byte for byte.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedgate_dev::fuzzing::marshal(data));
