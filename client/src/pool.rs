//! The one worker pool of the client: a fixed slice of jobs shared by a bounded number of
//! scoped threads, each taking the next job until none is left or one has failed. Hashing,
//! uploading, downloading and placing files all run on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Runs `work` on every job of `jobs` on up to `threads` threads (at least one, never more
/// than there are jobs). Each thread makes its own scratch state with `init` and passes it,
/// the job's index and the job to `work`. The first error stops every thread from taking
/// another job and is returned; jobs already running finish.
pub fn run<J, S, E>(
    jobs: &[J],
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize, &J) -> Result<(), E> + Sync,
) -> Result<(), E>
where
    J: Sync,
    E: Send,
{
    let threads = threads.clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<E>> = Mutex::new(None);
    let worker = || {
        let mut state = init();
        loop {
            if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else { break };
            if let Err(e) = work(&mut state, i, job) {
                failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
                break;
            }
        }
    };
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(worker);
            }
        });
    }
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `f` of every job, in the jobs' order, computed on up to `threads` threads.
pub fn map<J, R>(jobs: &[J], threads: usize, f: impl Fn(&J) -> R + Sync) -> Vec<R>
where
    J: Sync,
    R: Send + Sync,
{
    let slots: Vec<OnceLock<R>> = jobs.iter().map(|_| OnceLock::new()).collect();
    let done: Result<(), std::convert::Infallible> = run(
        jobs,
        threads,
        || (),
        |_, i, job| {
            // Each index is taken once, so its slot is empty.
            let _ = slots[i].set(f(job));
            Ok(())
        },
    );
    let Ok(()) = done;
    slots
        .into_iter()
        .map(|s| s.into_inner().expect("every job ran to its end"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_job_runs_once_and_map_keeps_order() {
        for threads in [0, 1, 3, 64] {
            let jobs: Vec<u32> = (0..500).collect();
            let seen = Mutex::new(Vec::new());
            run(
                &jobs,
                threads,
                || (),
                |_, i, j| {
                    assert_eq!(i as u32, *j);
                    seen.lock().unwrap().push(*j);
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
            let seen = seen.into_inner().unwrap();
            assert_eq!(seen.len(), jobs.len());
            assert_eq!(seen.iter().collect::<HashSet<_>>().len(), jobs.len());
            assert_eq!(
                map(&jobs, threads, |j| j * 2),
                (0..500).map(|j| j * 2).collect::<Vec<_>>()
            );
        }
        assert!(map(&[] as &[u8], 4, |j| *j).is_empty());
    }

    #[test]
    fn the_first_failure_stops_the_other_threads_taking_jobs() {
        let jobs: Vec<u32> = (0..10_000).collect();
        let ran = AtomicUsize::new(0);
        let r = run(
            &jobs,
            4,
            || (),
            |_, _, j| {
                ran.fetch_add(1, Ordering::SeqCst);
                if *j == 10 {
                    return Err(*j);
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
                Ok(())
            },
        );
        assert_eq!(r, Err(10));
        // Every thread checks for a failure before each job: after job 10 fails, each other
        // thread finishes at most the job it has, instead of the remaining 9,989.
        assert!(
            ran.load(Ordering::SeqCst) < 1000,
            "ran {}",
            ran.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn each_thread_keeps_its_own_state() {
        let jobs: Vec<u32> = (0..1000).collect();
        let total = AtomicUsize::new(0);
        run(&jobs, 3, Vec::new, |mine: &mut Vec<u32>, _, j| {
            mine.push(*j);
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "a thread takes jobs in order"
            );
            total.fetch_add(1, Ordering::Relaxed);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(total.into_inner(), 1000);
    }
}
