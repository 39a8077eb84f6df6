//! Running peer requests on a few threads at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::error::PeerError;

/// Runs `f` on every item on up to `threads` scoped threads and returns the results in the
/// items' order. After an error no further item is started, and the first error is returned.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, PeerError> + Sync,
) -> Result<Vec<R>, PeerError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut done: Vec<(usize, Result<R, PeerError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let result = f(item);
                        failed.fetch_or(result.is_err(), Ordering::Relaxed);
                        out.push((i, result));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec![(usize::MAX, Err(PeerError::Invalid("a peer request panicked".into())))])
            })
            .collect()
    });
    // Indices are taken in order, so the results cover a prefix of the items; it falls short
    // only after an error, which `collect` then returns.
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
