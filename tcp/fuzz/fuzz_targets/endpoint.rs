//! An endpoint driven by a program decoded from the input (crafted segments,
//! raw packets, time steps, application calls); checks every packet it emits
//! and its determinism. The logic is `tcp_fuzz::endpoint`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tcp_fuzz::endpoint(data));
