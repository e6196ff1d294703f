//! The one group-commit mechanism of the engine: callers queue requests on a bounded
//! channel; a single flusher task takes the first, gathers whatever else is already queued
//! (up to a weight bound, and only requests that may share a group with the first), and
//! hands the group to a flush function that writes it with one fdatasync. While one group
//! is on its way to disk the next gathers. The block log and the journal both use it.

use std::cell::RefCell;
use std::future::Future;

use futures::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

/// A request of a group commit.
pub trait Member {
    /// What it counts toward the group's bound (bytes, commits).
    fn weight(&self) -> usize;
    /// Whether it may join a group that `first` started.
    fn joins(&self, first: &Self) -> bool;
}

/// The queue in front of a flusher task. Not `Send`: it lives on its shard's executor.
pub struct GroupCommit<R> {
    tx: LocalSender<R>,
    flusher: RefCell<Option<glommio::Task<()>>>,
}

/// The flusher has stopped (the store is closing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl<R: Member + 'static> GroupCommit<R> {
    /// Starts the flusher: at most `queue_max` requests wait (then senders wait), a group
    /// stops growing once its weight reaches `weight_max`, and `flush` writes each group.
    pub fn start<F, Fut>(queue_max: usize, weight_max: usize, flush: F) -> GroupCommit<R>
    where
        F: Fn(Vec<R>) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (tx, rx) = local_channel::new_bounded(queue_max.max(1));
        let task = crate::runtime::spawn_urgent(run(rx, weight_max, flush));
        GroupCommit {
            tx,
            flusher: RefCell::new(Some(task)),
        }
    }

    /// Queues `request`, waiting while the queue is full.
    pub async fn send(&self, request: R) -> Result<(), Closed> {
        self.tx.send(request).await.map_err(|_| Closed)
    }

    /// Stops taking requests, lets the queued ones be flushed, and waits for the flusher.
    pub async fn close(self) {
        let GroupCommit { tx, flusher } = self;
        drop(tx);
        let task = flusher.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
    }
}

async fn run<R, F, Fut>(rx: LocalReceiver<R>, weight_max: usize, flush: F)
where
    R: Member,
    F: Fn(Vec<R>) -> Fut,
    Fut: Future<Output = ()>,
{
    // A request that could not join the group before it starts the next one.
    let mut carry: Option<R> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut weight = first.weight();
        let mut group = vec![first];
        while weight < weight_max {
            match rx.recv().now_or_never() {
                Some(Some(r)) if r.joins(&group[0]) => {
                    weight += r.weight();
                    group.push(r);
                }
                Some(Some(r)) => {
                    carry = Some(r);
                    break;
                }
                _ => break,
            }
        }
        flush(group).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    struct Req(usize, bool);

    impl Member for Req {
        fn weight(&self) -> usize {
            self.0
        }
        fn joins(&self, first: &Self) -> bool {
            self.1 && first.1
        }
    }

    #[test]
    fn groups_gather_what_is_queued_up_to_the_bound_and_keep_order() {
        crate::runtime::run(async {
            let groups: Rc<RefCell<Vec<Vec<usize>>>> = Rc::default();
            let seen = groups.clone();
            let gc = GroupCommit::start(64, 10, move |g: Vec<Req>| {
                seen.borrow_mut().push(g.iter().map(|r| r.0).collect());
                async {}
            });
            // Queued before the flusher runs: they gather.
            let sends = [3, 4, 5, 1, 1].map(|w| gc.send(Req(w, true)));
            for s in sends {
                s.await.unwrap();
            }
            gc.send(Req(2, false)).await.unwrap();
            gc.send(Req(2, true)).await.unwrap();
            gc.close().await;
            let groups = groups.borrow();
            let flat: Vec<usize> = groups.iter().flatten().copied().collect();
            assert_eq!(
                flat,
                vec![3, 4, 5, 1, 1, 2, 2],
                "every request once, in order"
            );
            for g in groups.iter() {
                let w: usize = g.iter().sum();
                assert!(
                    w - g.last().unwrap() < 10,
                    "a group grows only below its bound: {g:?}"
                );
            }
            assert!(
                groups.contains(&vec![2]),
                "a request that may not join stands alone"
            );
        });
    }
}
