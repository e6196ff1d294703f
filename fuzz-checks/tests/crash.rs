//! Crash consistency at every sync point and under every I/O countdown, in process: the
//! real block log and journal over the in-memory medium (see `holdall_fuzz_checks::crash`).

use std::io::ErrorKind;

use holdall_engine::runtime;
use holdall_fuzz_checks::crash::{block_log_run, collect_run, journal_run, storage_faults, Fault};

/// Sync points tried at most; each workload below reaches fewer.
const SYNC_POINTS_MAX: u64 = 600;
/// Crash images opened per sync point, each with other unsynced pages kept.
const SEEDS: [u64; 3] = [1, 2, 3];

#[test]
fn the_block_log_keeps_every_acknowledged_block_across_a_crash_at_any_sync() {
    runtime::run(async {
        for point in 1..=SYNC_POINTS_MAX {
            if !block_log_run(Fault::CrashAtSync(point), 40, &SEEDS).await {
                assert!(point > 20, "the workload reached only {point} sync points");
                return;
            }
        }
        panic!("the workload still crashed after {SYNC_POINTS_MAX} sync points");
    });
}

#[test]
fn a_collection_loses_no_live_block_and_leaves_no_dead_byte_across_a_crash_at_any_sync() {
    runtime::run(async {
        for point in 1..=SYNC_POINTS_MAX {
            if !collect_run(Fault::CrashAtSync(point), 40, &SEEDS).await {
                assert!(point > 5, "the collection reached only {point} sync points");
                return;
            }
        }
        panic!("the collection still crashed after {SYNC_POINTS_MAX} sync points");
    });
}

#[test]
fn failing_io_during_a_collection_loses_no_live_block() {
    runtime::run(async {
        for ops in (0..200).step_by(3) {
            collect_run(Fault::FailAfter(ops, ErrorKind::StorageFull), 24, &[ops]).await;
        }
    });
}

#[test]
fn failing_block_io_is_an_error_and_loses_nothing_acknowledged() {
    runtime::run(async {
        for ops in (0..400).step_by(7) {
            block_log_run(Fault::FailAfter(ops, ErrorKind::StorageFull), 24, &[ops]).await;
        }
    });
}

#[test]
fn the_journal_keeps_every_acknowledged_commit_across_a_crash_at_any_sync() {
    runtime::run(async {
        for point in 1..=SYNC_POINTS_MAX {
            if !journal_run(Fault::CrashAtSync(point), 60, &SEEDS).await {
                assert!(point > 20, "the workload reached only {point} sync points");
                return;
            }
        }
        panic!("the workload still crashed after {SYNC_POINTS_MAX} sync points");
    });
}

#[test]
fn failing_journal_io_is_an_error_and_loses_nothing_acknowledged() {
    runtime::run(async {
        for ops in (0..300).step_by(5) {
            journal_run(Fault::FailAfter(ops, ErrorKind::Other), 30, &[ops]).await;
        }
    });
}

#[test]
fn the_fuzz_target_runs_both_stores_and_both_faults() {
    let mut struck = 0;
    for pick in 0..4u8 {
        for at in [0u8, 3, 17, 60] {
            let input = [pick, at, 0, 9, 8, 7, 6, 5, 4, 3, 2];
            struck += storage_faults(&input) as u32;
        }
    }
    assert!(
        struck >= 12,
        "most inputs reach their fault ({struck} of 16)"
    );
    assert!(!storage_faults(&[1, 2]), "too short an input is not a run");
}
