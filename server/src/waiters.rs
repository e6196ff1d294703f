//! Parked requests waiting for something on this shard: longpolls waiting for a namespace to
//! change, retrieves waiting for a pending block to be uploaded. A waiter is a oneshot
//! sender: a parked request costs no thread, and one that gave up (timeout, closed
//! connection) drops its receiver, which the next sweep notices and forgets.

use std::hash::Hash;

use futures::channel::oneshot;
use hashbrown::HashMap;

/// Waiters keyed by what they wait for, each with a tag the waker may filter on; at most
/// `waiters_max` at once.
pub struct Waiters<K, T> {
    map: HashMap<K, Vec<(T, oneshot::Sender<()>)>>,
    len: usize,
    waiters_max: usize,
}

/// Too many parked requests on this shard.
#[derive(Debug)]
pub struct Full;

impl<K: Hash + Eq, T> Waiters<K, T> {
    /// No waiters; room for `waiters_max`.
    pub fn new(waiters_max: usize) -> Self {
        Waiters {
            map: HashMap::new(),
            len: 0,
            waiters_max,
        }
    }

    /// Parks a waiter on `key`; the receiver resolves when it is woken.
    pub fn park(&mut self, key: K, tag: T) -> Result<oneshot::Receiver<()>, Full> {
        if let Some(list) = self.map.get_mut(&key) {
            let before = list.len();
            list.retain(|(_, tx)| !tx.is_canceled());
            self.len -= before - list.len();
        }
        if self.len >= self.waiters_max {
            self.sweep();
            if self.len >= self.waiters_max {
                return Err(Full);
            }
        }
        let (tx, rx) = oneshot::channel();
        self.map.entry(key).or_default().push((tag, tx));
        self.len += 1;
        Ok(rx)
    }

    /// Wakes the waiters on `key` whose tag passes `wake`; returns how many.
    pub fn wake(&mut self, key: &K, wake: impl Fn(&T) -> bool) -> usize {
        let Some(list) = self.map.get_mut(key) else {
            return 0;
        };
        let before = list.len();
        let mut woken = 0;
        let mut kept = Vec::new();
        for (tag, tx) in list.drain(..) {
            if wake(&tag) {
                woken += usize::from(tx.send(()).is_ok());
            } else if !tx.is_canceled() {
                kept.push((tag, tx));
            }
        }
        self.len -= before - kept.len();
        if kept.is_empty() {
            self.map.remove(key);
        } else {
            *list = kept;
        }
        woken
    }

    /// Waiters parked (some may have given up since the last sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn sweep(&mut self) {
        self.map.retain(|_, list| {
            list.retain(|(_, tx)| !tx.is_canceled());
            !list.is_empty()
        });
        self.len = self.map.values().map(Vec::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_filters_and_bounds_hold() {
        let mut w: Waiters<u64, u64> = Waiters::new(2);
        let mut a = w.park(1, 10).unwrap();
        let mut b = w.park(1, 20).unwrap();
        assert!(w.park(2, 30).is_err(), "bounded");
        assert_eq!(w.wake(&1, |&user| user != 10), 1);
        assert_eq!(b.try_recv(), Ok(Some(())));
        assert_eq!(a.try_recv(), Ok(None), "filtered out, still parked");
        assert_eq!(w.len(), 1);
        drop(a);
        // A waiter that gave up frees its room.
        let _c = w.park(2, 30).unwrap();
        let _d = w.park(3, 40).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.wake(&9, |_| true), 0);
    }
}
