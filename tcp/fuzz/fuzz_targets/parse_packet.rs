//! Every parser on arbitrary bytes: no panic, and a parse → emit → parse
//! round trip keeps every field. The logic is `tcp_fuzz::parse_packet`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tcp_fuzz::parse_packet(data));
