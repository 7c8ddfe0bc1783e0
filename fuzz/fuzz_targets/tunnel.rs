//! The tunnel state machine driven by event sequences; see ringway_proto::fuzz.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_proto::fuzz::tunnel(data));
