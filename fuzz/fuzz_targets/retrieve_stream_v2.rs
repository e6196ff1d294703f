#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdall_fuzz_checks::retrieve_stream_v2(data);
});
