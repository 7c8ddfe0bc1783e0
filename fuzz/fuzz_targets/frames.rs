//! The client-frame decoder against a reference decoder, in chunks; see ringway_proto::fuzz.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_proto::fuzz::frames(data));
