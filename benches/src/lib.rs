//! Measurements shared by `holdall-bench` and the criterion benches: the hardware limits of
//! this machine and the engine's figures, each taken the same way every run.

pub mod delta_bench;
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
pub mod wire_bench;

/// Median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Deterministic text like a service's log (timestamps, levels, paths, numbers), which
/// zstd shrinks several times over, as it does real logs and source code.
pub fn text_payload(seed: u64, len: usize) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["INFO", "DEBUG", "WARN", "INFO"];
    const VERBS: [&str; 5] = ["GET", "POST", "PUT", "GET", "DELETE"];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 128);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line = format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z {} {} /api/v1/items/{} status={} took={}ms\n",
            x % 12 + 1,
            x >> 4 & 0x1f,
            x >> 9 & 0x17,
            x >> 14 & 0x3f,
            x >> 20 & 0x3f,
            LEVELS[(x >> 26) as usize % 4],
            VERBS[(x >> 28) as usize % 5],
            x >> 32 & 0xffff,
            [200, 200, 404, 500][(x >> 50) as usize % 4],
            x >> 54,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
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
