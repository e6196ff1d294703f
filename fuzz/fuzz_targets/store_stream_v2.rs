#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdall_fuzz_checks::store_stream_v2(data);
});
