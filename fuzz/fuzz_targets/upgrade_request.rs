//! The Upgrade request parser (RFC 6455 §4.2.1), whole and split; see ringway_proto::fuzz.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_proto::fuzz::upgrade_request(data));
