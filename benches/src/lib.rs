//! Measurements shared by `holdall-bench` and the criterion benches: the hardware limits of
//! this machine and the engine's figures, each taken the same way every run.

pub mod dropbox_bench;
pub mod engine_runs;
pub mod gc_bench;
pub mod http_client;
pub mod limits;
pub mod load;
pub mod nginx;
pub mod restart_bench;
pub mod server_cpu;
pub mod streaming_bench;
pub mod sync_bench;
pub mod tls_bench;
pub mod versus_nginx;

/// Median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A deterministic pseudo-random buffer (xorshift), so payloads do not compress or dedup.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
