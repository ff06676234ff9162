//! The order in which runnable tasks start: lowest priority value first, ties in definition
//! order. Used for the ready queue and for the waiters of each lock and slot.
//!
//! A binary heap of 10^6 entries costs some twenty cache misses per pop. But tasks mostly become
//! runnable in definition order (independent tasks, fan-outs, chains, trees read in order), so
//! each priority level keeps a FIFO for entries that arrive in increasing definition order, and
//! a heap only for the ones that arrive out of order. Popping takes the smaller of the two heads.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Priority key of a task: `Reverse((priority, definition index))`, so that the greatest key
/// is the one to start first.
pub(crate) type Key = Reverse<(i32, u32)>;

#[derive(Debug, Default)]
struct Level {
    /// Indices in increasing order.
    fifo: VecDeque<u32>,
    /// Indices that arrived out of order (min-heap).
    heap: BinaryHeap<Reverse<u32>>,
}

impl Level {
    fn head(&self) -> Option<u32> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(&a), Some(&Reverse(b))) => Some(a.min(b)),
            (Some(&a), None) => Some(a),
            (None, Some(&Reverse(b))) => Some(b),
            (None, None) => None,
        }
    }

    fn pop(&mut self) -> Option<u32> {
        // Entries mostly arrive in order: no heap to compare with then.
        if self.heap.is_empty() {
            return self.fifo.pop_front();
        }
        let head = self.head()?;
        if self.fifo.front() == Some(&head) {
            self.fifo.pop_front();
        } else {
            self.heap.pop();
        }
        Some(head)
    }

    fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.heap.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct TaskQueue {
    /// Priority levels, sorted by priority. Emptied levels are kept (up to `KEPT_LEVELS`) so
    /// that a chain of tasks does not allocate and free a level for every task.
    levels: Vec<(i32, Level)>,
}

/// Empty levels kept for reuse before they are dropped.
const KEPT_LEVELS: usize = 16;

// `push`, `peek` and `pop` are inlined into the run state's transitions: called for every task,
// with the dispatcher's lock held.
impl TaskQueue {
    #[inline]
    pub(crate) fn push(&mut self, Reverse((priority, idx)): Key) {
        // Most runs have one priority level: no search then.
        let i = match self.levels.first() {
            Some((p, _)) if self.levels.len() == 1 && *p == priority => 0,
            _ => self.level(priority),
        };
        let level = &mut self.levels[i].1;
        if level.fifo.back().is_none_or(|&last| idx > last) {
            level.fifo.push_back(idx);
        } else {
            level.heap.push(Reverse(idx));
        }
    }

    /// The position of the level of `priority`, inserted if missing.
    fn level(&mut self, priority: i32) -> usize {
        match self.levels.binary_search_by_key(&priority, |(p, _)| *p) {
            Ok(i) => i,
            Err(i) => {
                self.levels.insert(i, (priority, Level::default()));
                i
            }
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<Key> {
        let (priority, level) = self.levels.iter().find(|(_, l)| !l.is_empty())?;
        level.head().map(|idx| Reverse((*priority, idx)))
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Key> {
        if let [(priority, level)] = self.levels.as_mut_slice() {
            return level.pop().map(|idx| Reverse((*priority, idx)));
        }
        let i = self.levels.iter().position(|(_, l)| !l.is_empty())?;
        let priority = self.levels[i].0;
        let idx = self.levels[i].1.pop()?;
        if self.levels.len() > KEPT_LEVELS && self.levels[i].1.is_empty() {
            self.levels.remove(i);
        }
        Some(Reverse((priority, idx)))
    }
}

impl Extend<Key> for TaskQueue {
    // Measured: left out of line (a generic, instantiated in another unit of code generation),
    // 10^5 tasks claiming one lock ran 16 more instructions per task in `queue_woken`.
    #[inline]
    fn extend<I: IntoIterator<Item = Key>>(&mut self, iter: I) {
        for key in iter {
            self.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_like_a_heap_of_priority_then_index() {
        let mut q = TaskQueue::default();
        let mut heap = BinaryHeap::new();
        // A deterministic shuffle with repeated priorities, in and out of order.
        let mut x: u64 = 7;
        for i in 0..2000u32 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let prio = ((x >> 33) % 4) as i32 - 2;
            let idx = if i % 3 == 0 { 5000 - i } else { i };
            q.push(Reverse((prio, idx)));
            heap.push(Reverse((prio, idx)));
            if i % 5 == 0 {
                assert_eq!(q.pop(), heap.pop());
            }
        }
        while let Some(k) = heap.pop() {
            assert_eq!(q.peek(), Some(k));
            assert_eq!(q.pop(), Some(k));
        }
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn one_level_pops_like_a_heap_too() {
        // The single-level shortcuts of `push` and `pop`, in and out of order, then a second
        // level appearing.
        let mut q = TaskQueue::default();
        let mut heap = BinaryHeap::new();
        for (i, idx) in [5u32, 7, 3, 9, 1, 8, 2, 10].into_iter().enumerate() {
            q.push(Reverse((0, idx)));
            heap.push(Reverse((0, idx)));
            if i % 3 == 2 {
                assert_eq!(q.pop(), heap.pop());
            }
        }
        q.push(Reverse((-1, 20)));
        heap.push(Reverse((-1, 20)));
        while let Some(k) = heap.pop() {
            assert_eq!(q.pop(), Some(k));
        }
        assert_eq!(q.pop(), None);
    }
}
