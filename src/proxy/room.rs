//! Waiting for an upstream connection when the upstream's `max_connections` are all open and
//! in use. A request that finds no idle connection and no free place queues; a connection
//! that finishes its response is handed straight to the longest-waiting request instead of
//! going back to the idle queue, so waiters are served in order and a stream of newcomers
//! cannot starve them (nginx-like overload then queues instead of failing). Without waiters,
//! giving a connection back costs one atomic load more than pushing it to the idle queue.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;
use tokio::sync::oneshot;

use super::pool::IdleStream;

/// The requests waiting for a connection to one upstream, oldest first.
#[derive(Default)]
pub(super) struct Waiters {
    queue: SegQueue<oneshot::Sender<IdleStream>>,
    /// Entries in `queue` (some may have stopped waiting), read without the lock.
    count: AtomicUsize,
}

impl Waiters {
    /// Whether requests are waiting: a newcomer then queues behind them.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Gives `item` to the longest-waiting request that still waits; back when none does.
    pub fn hand_over(&self, item: IdleStream) -> Option<IdleStream> {
        if !self.any() {
            return Some(item);
        }
        let mut item = item;
        while let Some(waiter) = self.queue.pop() {
            self.count.fetch_sub(1, Ordering::SeqCst);
            match waiter.send(item) {
                Ok(()) => return None,
                Err(back) => item = back,
            }
        }
        Some(item)
    }

    /// Queues a request; what it is handed arrives on the receiver. Dropping the receiver
    /// stops waiting (what is then handed to it goes to the next).
    pub fn join(&self) -> oneshot::Receiver<IdleStream> {
        let (tx, rx) = oneshot::channel();
        self.queue.push(tx);
        self.count.fetch_add(1, Ordering::SeqCst);
        // Paired with the fence in `Connections::give_back`: either the request, looking again
        // after this, finds a connection given back meanwhile, or the one giving it back sees
        // the request and hands it over.
        std::sync::atomic::fence(Ordering::SeqCst);
        rx
    }
}
