//! Decoding the next blocks of a long read on a second thread while the caller's thread
//! hands out the records of the current one.
//!
//! A busy entity's history in a cluster file is a run of thousands of blocks read one after
//! the other, every record of them the entity's: about half of the time goes into
//! decompressing them, the other half into decoding records and handing them to the sink.
//! [`pipelined`] splits the two: a helper thread loads block `i + 1` (through the block cache,
//! as the caller would) while the caller consumes block `i`. The order the caller sees is the
//! order of the list, exactly as without the helper.
//!
//! Short reads stay on the caller's thread: a thread costs tens of microseconds to start, a
//! block about fifty to decompress, so below [`PIPELINE_ITEMS_MIN`] items the helper would not
//! pay for itself. Segments are not read this way: an entity has a few records per block
//! there, so the caller would wait on the helper at every block (measured slower,
//! docs/decisions.md #39).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;

use crate::error::{Error, Result};

/// Items (blocks) a read must have before a helper thread loads them ahead.
pub const PIPELINE_ITEMS_MIN: usize = 16;
/// Items the helper may have loaded and the caller not yet consumed: bounds the memory held
/// besides the block cache (decoded blocks are up to a few MiB each).
pub const PIPELINE_ITEMS_AHEAD: usize = 4;

/// Calls `consume(i, load(i))` for `i` in `0..n`, in that order, until `consume` returns false
/// or either returns an error (which is returned). `expected` is how many items the caller
/// expects to consume (a history with a limit stops early): with `expected >=
/// PIPELINE_ITEMS_MIN`, `load` runs on a helper thread up to [`PIPELINE_ITEMS_AHEAD`] items
/// ahead of `consume` (on the caller's thread alone if no thread can be started), so a stop
/// wastes at most that many loads. Items after a stop or an error may have been loaded; none
/// is consumed.
pub fn pipelined<T: Send>(
    n: usize,
    expected: usize,
    load: &(dyn Fn(usize) -> Result<T> + Sync),
    consume: &mut dyn FnMut(usize, T) -> Result<bool>,
) -> Result<()> {
    if expected.min(n) < PIPELINE_ITEMS_MIN {
        return in_order(n, load, consume);
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<T>>(PIPELINE_ITEMS_AHEAD);
        let stop = &stop;
        let helper = move || {
            for i in 0..n {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let item = load(i);
                let failed = item.is_err();
                // A closed channel means the caller stopped: nothing more is wanted.
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        };
        let spawned = std::thread::Builder::new()
            .name("echolog-read-ahead".into())
            .spawn_scoped(scope, helper);
        if spawned.is_err() {
            return in_order(n, load, consume);
        }
        let result = (|| {
            for i in 0..n {
                let item = rx.recv().map_err(|_| {
                    Error::Inconsistent(format!("read-ahead ended before item {i} of {n}"))
                })??;
                if !consume(i, item)? {
                    break;
                }
            }
            Ok(())
        })();
        // The helper may be waiting to send: tell it to stop, and close the channel (the
        // scope joins it when this closure returns, after `rx` is dropped).
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        result
    })
}

fn in_order<T>(
    n: usize,
    load: &dyn Fn(usize) -> Result<T>,
    consume: &mut dyn FnMut(usize, T) -> Result<bool>,
) -> Result<()> {
    for i in 0..n {
        if !consume(i, load(i)?)? {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn run(
        n: usize,
        fail_load_at: Option<usize>,
        stop_at: Option<usize>,
    ) -> (Result<()>, Vec<usize>) {
        let load = |i: usize| -> Result<usize> {
            if Some(i) == fail_load_at {
                return Err(Error::Inconsistent(format!("load {i}")));
            }
            Ok(i * 10)
        };
        let mut seen = Vec::new();
        let r = pipelined(n, n, &load, &mut |i, v| {
            assert_eq!(v, i * 10, "each item arrives with its own load");
            seen.push(i);
            Ok(Some(i) != stop_at)
        });
        (r, seen)
    }

    #[test]
    fn every_item_is_consumed_once_in_order_below_and_above_the_threshold() {
        for n in [0, 1, PIPELINE_ITEMS_MIN - 1, PIPELINE_ITEMS_MIN, 1000] {
            let (r, seen) = run(n, None, None);
            assert!(r.is_ok());
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn a_read_expected_to_stop_early_stays_on_the_callers_thread() {
        let caller = std::thread::current().id();
        let load = |i: usize| -> Result<usize> {
            assert_eq!(std::thread::current().id(), caller);
            Ok(i)
        };
        let mut seen = 0;
        let r = pipelined(1000, PIPELINE_ITEMS_MIN - 1, &load, &mut |_, _| {
            seen += 1;
            Ok(true)
        });
        assert!(r.is_ok());
        assert_eq!(
            seen, 1000,
            "every item still comes when the caller does not stop"
        );
    }

    #[test]
    fn a_stop_consumes_nothing_after_it_and_returns() {
        for n in [10, 1000] {
            let (r, seen) = run(n, None, Some(7));
            assert!(r.is_ok());
            assert_eq!(seen, (0..=7).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_failed_load_is_returned_after_the_items_before_it() {
        for n in [10, 1000] {
            let (r, seen) = run(n, Some(5), None);
            assert!(matches!(r, Err(Error::Inconsistent(m)) if m == "load 5"));
            assert_eq!(seen, (0..5).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_failed_consume_is_returned_and_the_helper_stops_loading() {
        let loads = AtomicUsize::new(0);
        let load = |i: usize| -> Result<usize> {
            loads.fetch_add(1, Ordering::Relaxed);
            Ok(i)
        };
        let r = pipelined(100_000, 100_000, &load, &mut |i, _| {
            if i == 3 {
                return Err(Error::Inconsistent("consume".into()));
            }
            Ok(true)
        });
        assert!(matches!(r, Err(Error::Inconsistent(m)) if m == "consume"));
        // The helper runs at most a bounded distance ahead before it sees the stop.
        assert!(loads.load(Ordering::Relaxed) <= 4 + PIPELINE_ITEMS_AHEAD + 2);
    }
}
