//! Per-shard counters, written only by their shard (relaxed atomics, no contention) and read
//! by whichever shard serves `/metrics`, which renders all shards in Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::block_cache::BlockCacheStats;

/// Routes counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/account`.
    Account,
    /// `POST /v1/admin/users`.
    AdminUsers,
    /// `POST /v1/store_batch`.
    StoreBatch,
    /// `POST /v1/namespaces`.
    Namespaces,
    /// `POST /v1/namespaces/{ns}/members`.
    Members,
    /// `POST /v1/commit`.
    Commit,
    /// `POST /v1/commit_batch`.
    CommitBatch,
    /// `POST /v1/list`.
    List,
    /// `POST /v1/longpoll`.
    Longpoll,
    /// `POST /v1/retrieve_batch`.
    RetrieveBatch,
    /// `GET /v1/blocks/{hash}`.
    Blocks,
    /// `POST /v1/signatures`.
    Signatures,
    /// `POST /v1/history`.
    History,
    /// `POST /v1/restore`.
    Restore,
    /// `POST /v1/deleted`.
    Deleted,
    /// `POST /v1/rewind`.
    Rewind,
    /// A Dropbox API RPC call, `POST /2/…`.
    DropboxRpc,
    /// A Dropbox API upload, `POST /2/files/upload…`.
    DropboxUpload,
    /// A Dropbox API download, `POST /2/files/download`.
    DropboxDownload,
    /// The Dropbox API's `POST /2/files/list_folder/longpoll`.
    DropboxNotify,
    /// `POST /v1/admin/gc`.
    AdminGc,
    /// `POST /v1/admin/fsck`.
    AdminFsck,
    AdminBackup,
    /// `POST /v1/admin/users/{user}/quota`.
    AdminQuota,
    /// `GET /v1/admin/users`.
    AdminListUsers,
    /// `POST /v1/admin/users/{user}/disable`.
    AdminDisable,
    /// `POST /v1/admin/users/{user}/enable`.
    AdminEnable,
    /// `POST /v1/tokens`.
    TokensCreate,
    /// `GET /v1/tokens`.
    TokensList,
    /// `DELETE /v1/tokens/{id}`.
    TokensRevoke,
    /// Anything else.
    Other,
}

impl Route {
    const ALL: [Route; 33] = [
        Route::Healthz,
        Route::Metrics,
        Route::Account,
        Route::AdminUsers,
        Route::StoreBatch,
        Route::Namespaces,
        Route::Members,
        Route::Commit,
        Route::CommitBatch,
        Route::List,
        Route::Longpoll,
        Route::RetrieveBatch,
        Route::Blocks,
        Route::Signatures,
        Route::History,
        Route::Restore,
        Route::Deleted,
        Route::Rewind,
        Route::DropboxRpc,
        Route::DropboxUpload,
        Route::DropboxDownload,
        Route::DropboxNotify,
        Route::AdminGc,
        Route::AdminFsck,
        Route::AdminBackup,
        Route::AdminQuota,
        Route::AdminListUsers,
        Route::AdminDisable,
        Route::AdminEnable,
        Route::TokensCreate,
        Route::TokensList,
        Route::TokensRevoke,
        Route::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Metrics => "metrics",
            Route::Account => "account",
            Route::AdminUsers => "admin_users",
            Route::StoreBatch => "store_batch",
            Route::Namespaces => "namespaces",
            Route::Members => "members",
            Route::Commit => "commit",
            Route::CommitBatch => "commit_batch",
            Route::List => "list",
            Route::Longpoll => "longpoll",
            Route::RetrieveBatch => "retrieve_batch",
            Route::Blocks => "blocks",
            Route::Signatures => "signatures",
            Route::History => "history",
            Route::Restore => "restore",
            Route::Deleted => "deleted",
            Route::Rewind => "rewind",
            Route::DropboxRpc => "dropbox_rpc",
            Route::DropboxUpload => "dropbox_upload",
            Route::DropboxDownload => "dropbox_download",
            Route::DropboxNotify => "dropbox_notify",
            Route::AdminGc => "admin_gc",
            Route::AdminFsck => "admin_fsck",
            Route::AdminBackup => "admin_backup",
            Route::AdminQuota => "admin_quota",
            Route::AdminListUsers => "admin_list_users",
            Route::AdminDisable => "admin_disable",
            Route::AdminEnable => "admin_enable",
            Route::TokensCreate => "tokens_create",
            Route::TokensList => "tokens_list",
            Route::TokensRevoke => "tokens_revoke",
            Route::Other => "other",
        }
    }
}

/// Status codes counted; anything else counts as the last.
const CODES: [u16; 14] = [
    200, 400, 401, 403, 404, 405, 408, 409, 413, 429, 500, 503, 507, 0,
];
/// Upper bounds of the latency histogram's buckets, seconds.
const BUCKETS_S: [f64; 9] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default)]
struct RouteCounters {
    by_code: [AtomicU64; CODES.len()],
    latency_buckets: [AtomicU64; BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Engine figures a shard publishes for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineGauges {
    /// Blocks stored.
    pub blocks: u64,
    /// Record bytes appended since start.
    pub block_bytes_appended: u64,
    /// Block log group commits.
    pub block_flushes: u64,
    /// Records written by them.
    pub block_flushed_records: u64,
    /// Time in block log fdatasync, ns.
    pub block_fsync_nanos: u64,
    /// Corrupt block records found.
    pub corrupt_blocks: u64,
    /// Journal rows written since start.
    pub journal_rows_written: u64,
    /// Journal group commits.
    pub journal_flushes: u64,
    /// Time in journal fdatasync, ns.
    pub journal_fsync_nanos: u64,
    /// Damaged journal records found at open (skipped, or cut with a torn tail).
    pub corrupt_journal_records: u64,
    /// Torn journal tails cut at open.
    pub journal_torn_tail_cuts: u64,
    /// Live prefetch entries.
    pub prefetch_entries: u64,
    /// Prefetch entries published.
    pub prefetch_inserts: u64,
    /// Prefetch entries refreshed by a retried commit.
    pub prefetch_refreshes: u64,
    /// Prefetch lookups that found a live entry.
    pub prefetch_hits: u64,
    /// Prefetch lookups that found none.
    pub prefetch_misses: u64,
    /// Prefetch entries that expired.
    pub prefetch_expirations: u64,
    /// Prefetch entries evicted by the table's bounds.
    pub prefetch_evictions: u64,
    /// Prefetch entries removed by their file's commit.
    pub prefetch_removals: u64,
    /// Prefetch entries kept alive by their arriving blocks.
    pub prefetch_touches: u64,
    /// Upload records (user, block) kept for the Dropship rule.
    pub upload_records: u64,
    /// Dropbox API upload sessions open.
    pub upload_sessions: u64,
    /// The block cache's counters.
    pub block_cache: BlockCacheStats,
    /// Bytes of the block log's segment files.
    pub block_segment_bytes: u64,
    /// Of them, live records (as the last collection found them, plus what came since).
    pub block_live_bytes: u64,
    /// The rest: dead records, torn or damaged bytes, segment headers.
    pub block_dead_bytes: u64,
    /// Collections of this shard's block log.
    pub gc_runs: u64,
    /// Time in them, ns.
    pub gc_nanos: u64,
    /// Dead blocks dropped.
    pub gc_blocks_dropped: u64,
    /// Bytes given back to the file system.
    pub gc_bytes_reclaimed: u64,
    /// Segments compacted and removed.
    pub gc_segments_compacted: u64,
    /// Live record bytes compaction copied forward.
    pub gc_bytes_moved: u64,
    /// Journal files removed by collections.
    pub journal_files_removed: u64,
}

/// One shard's counters.
pub struct ShardMetrics {
    routes: [RouteCounters; Route::ALL.len()],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    gauges: [AtomicU64; GAUGE_NAMES.len()],
    longpolls_parked: AtomicU64,
    pending_waits: AtomicU64,
    pending_wait_timeouts: AtomicU64,
    quota_refusals: AtomicU64,
    compressed_stored: AtomicU64,
    compressed_served: AtomicU64,
    delta_stored: AtomicU64,
    delta_served: AtomicU64,
    signatures_served: AtomicU64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            routes: std::array::from_fn(|_| RouteCounters::default()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            // Arrays derive `Default` only up to 32 elements.
            gauges: std::array::from_fn(|_| AtomicU64::new(0)),
            longpolls_parked: AtomicU64::new(0),
            pending_waits: AtomicU64::new(0),
            pending_wait_timeouts: AtomicU64::new(0),
            quota_refusals: AtomicU64::new(0),
            compressed_stored: AtomicU64::new(0),
            compressed_served: AtomicU64::new(0),
            delta_stored: AtomicU64::new(0),
            delta_served: AtomicU64::new(0),
            signatures_served: AtomicU64::new(0),
        }
    }
}

impl ShardMetrics {
    /// Counts one request.
    pub fn record(
        &self,
        route: Route,
        status: u16,
        elapsed: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let r = &self.routes[route as usize];
        let code = CODES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(CODES.len() - 1);
        r.by_code[code].fetch_add(1, Relaxed);
        let s = elapsed.as_secs_f64();
        if let Some(b) = BUCKETS_S.iter().position(|&le| s <= le) {
            r.latency_buckets[b].fetch_add(1, Relaxed);
        }
        r.latency_count.fetch_add(1, Relaxed);
        r.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    /// A longpoll parked (`true`) or ended (`false`).
    pub fn longpoll_parked(&self, parked: bool) {
        if parked {
            self.longpolls_parked.fetch_add(1, Relaxed);
        } else {
            self.longpolls_parked.fetch_sub(1, Relaxed);
        }
    }

    /// A retrieve waited for a pending block.
    pub fn pending_wait(&self) {
        self.pending_waits.fetch_add(1, Relaxed);
    }

    /// A wait for a pending block ended without it.
    pub fn pending_wait_timed_out(&self) {
        self.pending_wait_timeouts.fetch_add(1, Relaxed);
    }

    /// Commits refused because they would take a user past quota.
    pub fn quota_refused(&self, commits: u64) {
        self.quota_refusals.fetch_add(commits, Relaxed);
    }

    /// Blocks stored as they arrived zstd-compressed.
    pub fn compressed_stored(&self, blocks: u64) {
        self.compressed_stored.fetch_add(blocks, Relaxed);
    }

    /// Blocks served compressed, as kept, to format-2 readers.
    pub fn compressed_served(&self, blocks: u64) {
        self.compressed_served.fetch_add(blocks, Relaxed);
    }

    /// Blocks rebuilt from store_delta frames and stored.
    pub fn delta_stored(&self, blocks: u64) {
        self.delta_stored.fetch_add(blocks, Relaxed);
    }

    /// Blocks answered as deltas against a reader's signature.
    pub fn delta_served(&self, blocks: u64) {
        self.delta_served.fetch_add(blocks, Relaxed);
    }

    /// Signatures sent by `POST /v1/signatures`.
    pub fn signatures_served(&self, signatures: u64) {
        self.signatures_served.fetch_add(signatures, Relaxed);
    }

    /// Publishes the shard's engine figures.
    pub fn publish(&self, g: EngineGauges) {
        let values = [
            g.blocks,
            g.block_bytes_appended,
            g.block_flushes,
            g.block_flushed_records,
            g.block_fsync_nanos,
            g.corrupt_blocks,
            g.journal_rows_written,
            g.journal_flushes,
            g.journal_fsync_nanos,
            g.corrupt_journal_records,
            g.journal_torn_tail_cuts,
            g.prefetch_entries,
            g.prefetch_inserts,
            g.prefetch_refreshes,
            g.prefetch_hits,
            g.prefetch_misses,
            g.prefetch_expirations,
            g.prefetch_evictions,
            g.prefetch_removals,
            g.prefetch_touches,
            g.upload_records,
            g.upload_sessions,
            g.block_cache.blocks,
            g.block_cache.bytes,
            g.block_cache.hits,
            g.block_cache.misses,
            g.block_segment_bytes,
            g.block_live_bytes,
            g.block_dead_bytes,
            g.gc_runs,
            g.gc_nanos,
            g.gc_blocks_dropped,
            g.gc_bytes_reclaimed,
            g.gc_segments_compacted,
            g.gc_bytes_moved,
            g.journal_files_removed,
        ];
        for (slot, v) in self.gauges.iter().zip(values) {
            slot.store(v, Relaxed);
        }
    }
}

const GAUGE_NAMES: [(&str, &str, &str); 36] = [
    ("holdall_blocks", "gauge", "Blocks stored"),
    (
        "holdall_block_bytes_appended_total",
        "counter",
        "Block record bytes appended since start",
    ),
    (
        "holdall_block_group_commits_total",
        "counter",
        "Block log group commits (one fdatasync each)",
    ),
    (
        "holdall_block_group_commit_records_total",
        "counter",
        "Records written by block log group commits",
    ),
    (
        "holdall_block_fsync_seconds_total",
        "counter",
        "Time in block log fdatasync",
    ),
    (
        "holdall_corrupt_block_records_total",
        "counter",
        "Corrupt block records found",
    ),
    (
        "holdall_journal_rows_written_total",
        "counter",
        "Journal records written since start",
    ),
    (
        "holdall_journal_group_commits_total",
        "counter",
        "Journal group commits (one fdatasync each)",
    ),
    (
        "holdall_journal_fsync_seconds_total",
        "counter",
        "Time in journal fdatasync",
    ),
    (
        "holdall_corrupt_journal_records_total",
        "counter",
        "Damaged journal records found at open (skipped, or cut as a torn tail)",
    ),
    (
        "holdall_journal_torn_tail_cuts_total",
        "counter",
        "Torn journal tails cut at open",
    ),
    ("holdall_prefetch_entries", "gauge", "Live prefetch entries"),
    (
        "holdall_prefetch_inserts_total",
        "counter",
        "Prefetch entries published",
    ),
    (
        "holdall_prefetch_refreshes_total",
        "counter",
        "Prefetch entries refreshed by a retried commit",
    ),
    (
        "holdall_prefetch_hits_total",
        "counter",
        "Prefetch lookups that found a live entry",
    ),
    (
        "holdall_prefetch_misses_total",
        "counter",
        "Prefetch lookups that found none",
    ),
    (
        "holdall_prefetch_expirations_total",
        "counter",
        "Prefetch entries that expired",
    ),
    (
        "holdall_prefetch_evictions_total",
        "counter",
        "Prefetch entries evicted by the table's bounds",
    ),
    (
        "holdall_prefetch_removals_total",
        "counter",
        "Prefetch entries removed by their file's commit",
    ),
    (
        "holdall_prefetch_touches_total",
        "counter",
        "Prefetch entries kept alive by their arriving blocks",
    ),
    (
        "holdall_upload_records",
        "gauge",
        "Upload records kept for the Dropship rule",
    ),
    (
        "holdall_upload_sessions",
        "gauge",
        "Dropbox API upload sessions open",
    ),
    (
        "holdall_block_cache_blocks",
        "gauge",
        "Blocks held in memory after they were stored or served",
    ),
    (
        "holdall_block_cache_bytes",
        "gauge",
        "Bytes the block cache holds, as its bound counts them",
    ),
    (
        "holdall_block_cache_hits_total",
        "counter",
        "Block reads served from the block cache",
    ),
    (
        "holdall_block_cache_misses_total",
        "counter",
        "Block reads that went to the block log",
    ),
    (
        "holdall_block_segment_bytes",
        "gauge",
        "Bytes of the block log's segment files",
    ),
    (
        "holdall_block_live_bytes",
        "gauge",
        "Segment bytes holding live blocks, as the last collection found them plus what was stored since",
    ),
    (
        "holdall_block_dead_bytes",
        "gauge",
        "Segment bytes holding no live block (dead records, damaged bytes, headers)",
    ),
    (
        "holdall_gc_runs_total",
        "counter",
        "Garbage collections of the block log",
    ),
    (
        "holdall_gc_seconds_total",
        "counter",
        "Time spent in garbage collections",
    ),
    (
        "holdall_gc_blocks_dropped_total",
        "counter",
        "Dead blocks dropped by garbage collection",
    ),
    (
        "holdall_gc_bytes_reclaimed_total",
        "counter",
        "Bytes garbage collection gave back to the file system",
    ),
    (
        "holdall_gc_segments_compacted_total",
        "counter",
        "Block log segments compacted and removed",
    ),
    (
        "holdall_gc_bytes_moved_total",
        "counter",
        "Live record bytes compaction copied forward",
    ),
    (
        "holdall_journal_files_removed_total",
        "counter",
        "Journal files removed by garbage collection",
    ),
];

/// Renders all shards' counters in Prometheus text format.
pub fn render(shards: &[std::sync::Arc<ShardMetrics>]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP holdall_requests_total HTTP requests by route and status."
    );
    let _ = writeln!(out, "# TYPE holdall_requests_total counter");
    for route in Route::ALL {
        for (i, code) in CODES.iter().enumerate() {
            let n: u64 = shards
                .iter()
                .map(|s| s.routes[route as usize].by_code[i].load(Relaxed))
                .sum();
            if n > 0 {
                let status = if *code == 0 {
                    "other".to_string()
                } else {
                    code.to_string()
                };
                let _ = writeln!(
                    out,
                    "holdall_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    route.name()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP holdall_request_seconds HTTP request latency by route."
    );
    let _ = writeln!(out, "# TYPE holdall_request_seconds histogram");
    for route in Route::ALL {
        let sum = |f: &dyn Fn(&RouteCounters) -> u64| -> u64 {
            shards.iter().map(|s| f(&s.routes[route as usize])).sum()
        };
        let count = sum(&|r| r.latency_count.load(Relaxed));
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, le) in BUCKETS_S.iter().enumerate() {
            cumulative += sum(&|r| r.latency_buckets[i].load(Relaxed));
            let _ = writeln!(
                out,
                "holdall_request_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                route.name()
            );
        }
        let _ = writeln!(
            out,
            "holdall_request_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
            route.name()
        );
        let sum_s = sum(&|r| r.latency_sum_us.load(Relaxed)) as f64 / 1e6;
        let _ = writeln!(
            out,
            "holdall_request_seconds_sum{{route=\"{}\"}} {sum_s}",
            route.name()
        );
        let _ = writeln!(
            out,
            "holdall_request_seconds_count{{route=\"{}\"}} {count}",
            route.name()
        );
    }
    for (name, value) in [
        ("holdall_http_bytes_in_total", 0),
        ("holdall_http_bytes_out_total", 1),
    ] {
        let n: u64 = shards
            .iter()
            .map(|s| {
                if value == 0 {
                    s.bytes_in.load(Relaxed)
                } else {
                    s.bytes_out.load(Relaxed)
                }
            })
            .sum();
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {n}");
    }
    for (name, kind, help, read) in [
        (
            "holdall_longpolls_parked",
            "gauge",
            "Longpolls waiting for a change",
            (|s: &ShardMetrics| s.longpolls_parked.load(Relaxed)) as fn(&ShardMetrics) -> u64,
        ),
        (
            "holdall_pending_waits_total",
            "counter",
            "Retrieves that waited for a prefetch block to be uploaded",
            |s| s.pending_waits.load(Relaxed),
        ),
        (
            "holdall_pending_wait_timeouts_total",
            "counter",
            "Waits for a prefetch block that ended without it",
            |s| s.pending_wait_timeouts.load(Relaxed),
        ),
        (
            "holdall_quota_refusals_total",
            "counter",
            "Commits refused (507 quota_exceeded) as they would take a user past quota",
            |s| s.quota_refusals.load(Relaxed),
        ),
        (
            "holdall_blocks_stored_compressed_total",
            "counter",
            "Blocks that arrived zstd-compressed (frame format 2) and were stored so",
            |s| s.compressed_stored.load(Relaxed),
        ),
        (
            "holdall_blocks_served_compressed_total",
            "counter",
            "Blocks sent zstd-compressed, as kept, in format-2 retrieve answers",
            |s| s.compressed_served.load(Relaxed),
        ),
        (
            "holdall_blocks_stored_delta_total",
            "counter",
            "Blocks rebuilt from store_delta frames (a base and a delta) and stored",
            |s| s.delta_stored.load(Relaxed),
        ),
        (
            "holdall_blocks_served_delta_total",
            "counter",
            "Blocks sent as deltas against the reader's signature in format-2 retrieve answers",
            |s| s.delta_served.load(Relaxed),
        ),
        (
            "holdall_signatures_served_total",
            "counter",
            "Block signatures sent by POST /v1/signatures",
            |s| s.signatures_served.load(Relaxed),
        ),
    ] {
        let n: u64 = shards.iter().map(|s| read(s)).sum();
        let _ = writeln!(
            out,
            "# HELP {name} {help}.\n# TYPE {name} {kind}\n{name} {n}"
        );
    }
    for (i, (name, kind, help)) in GAUGE_NAMES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}");
        for (shard, s) in shards.iter().enumerate() {
            let v = s.gauges[i].load(Relaxed);
            if name.ends_with("_seconds_total") {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", v as f64 / 1e9);
            } else {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {v}");
            }
        }
    }
    let name = "holdall_reactor_nudges_total";
    let _ = writeln!(
        out,
        "# HELP {name} Shard threads interrupted as stuck (lost io_uring wake-up, slow start-up).\n\
         # TYPE {name} counter\n{name} {}",
        holdall_engine::watchdog::nudges_total()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_sums_over_shards() {
        let a = Arc::new(ShardMetrics::default());
        let b = Arc::new(ShardMetrics::default());
        a.record(Route::Account, 200, Duration::from_micros(300), 10, 100);
        b.record(Route::Account, 200, Duration::from_millis(20), 10, 100);
        b.record(Route::Account, 401, Duration::from_micros(10), 0, 50);
        a.publish(EngineGauges {
            blocks: 7,
            ..EngineGauges::default()
        });
        let text = render(&[a, b]);
        assert!(
            text.contains("holdall_requests_total{route=\"account\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("holdall_requests_total{route=\"account\",status=\"401\"} 1"));
        assert!(text.contains("holdall_request_seconds_bucket{route=\"account\",le=\"0.0005\"} 2"));
        assert!(text.contains("holdall_request_seconds_count{route=\"account\"} 3"));
        assert!(text.contains("holdall_http_bytes_out_total 250"));
        assert!(text.contains("holdall_blocks{shard=\"0\"} 7"));
        assert!(text.contains("holdall_blocks{shard=\"1\"} 0"));
    }
}
