//! The best key among the tasks still waiting for tokens: a reservation of ready tasks ahead of
//! time must never jump ahead of it (see `RunState::ahead_is_safe`).
//!
//! A task waits from its admission until its tokens are satisfied (or it is skipped), and almost
//! never again after, so the best waiting key only gets worse and a cursor that moves forward
//! finds it. The exception, a task reserved ahead of its token and given back while the token is
//! still pending (`RunState::reserve_successor`), puts its key back ([`WaitingKeys::wait_again`]).

use std::cmp::Reverse;

use super::queue::Key;

/// Keys of the tasks admitted while waiting for tokens, in key order, with a forward cursor.
#[derive(Debug)]
pub(crate) enum WaitingKeys {
    /// Every task admitted while waiting had this one priority (`None`: no task waited yet), as
    /// in most runs: key order is then index order, and the tasks still waiting are found in
    /// the task states themselves, from `next` up to `end` (no table of keys: a chain or a
    /// fan-out of 10^6 tasks waits with all of them but one, 8 bytes each).
    OnePriority {
        priority: Option<i32>,
        next: u32,
        /// The last task admitted while waiting, plus one.
        end: u32,
    },
    /// Mixed priorities: the keys `(priority, index)` sorted, and how many at the front are
    /// known to wait no more.
    Sorted { keys: Vec<(i32, u32)>, seen: usize },
}

impl Default for WaitingKeys {
    fn default() -> Self {
        Self::OnePriority {
            priority: None,
            next: 0,
            end: 0,
        }
    }
}

impl WaitingKeys {
    /// Adds task `idx`, admitted while waiting with `priority` (tasks are added in index
    /// order). `waiting(idx)` is the priority of task `idx` if it still waits. Call
    /// [`WaitingKeys::admitted`] once a batch is added.
    pub(crate) fn push(&mut self, priority: i32, idx: u32, waiting: impl Fn(u32) -> Option<i32>) {
        if let Self::OnePriority {
            priority: one,
            next,
            end,
        } = self
        {
            if one.is_none_or(|p| p == priority) {
                *one = Some(priority);
                *end = idx + 1;
                return;
            }
            // A second priority: from now on, a table of keys; those that still wait first.
            let keys = (*next..*end)
                .filter_map(|i| waiting(i).map(|p| (p, i)))
                .collect();
            *self = Self::Sorted { keys, seen: 0 };
        }
        if let Self::Sorted { keys, .. } = self {
            keys.push((priority, idx));
        }
    }

    /// A batch of tasks is added: the keys in order again.
    pub(crate) fn admitted(&mut self) {
        if let Self::Sorted { keys, seen } = self {
            keys.drain(..*seen);
            *seen = 0;
            // The first batch of a run is mostly in order already: nothing to sort then.
            if !keys.is_sorted() {
                keys.sort_unstable();
            }
        }
    }

    /// Task `idx`, admitted while waiting with `priority` and found to wait no more, waits
    /// again.
    pub(crate) fn wait_again(&mut self, priority: i32, idx: u32) {
        match self {
            Self::OnePriority { next, .. } => *next = (*next).min(idx),
            Self::Sorted { keys, seen } => {
                let key = (priority, idx);
                let at = *seen + keys[*seen..].partition_point(|&k| k < key);
                if keys.get(at) != Some(&key) {
                    keys.insert(at, key);
                }
            }
        }
    }

    /// The best key of a task that still waits, if any. `waiting(idx)` is the priority of task
    /// `idx` if it still waits.
    pub(crate) fn best(&mut self, waiting: impl Fn(u32) -> Option<i32>) -> Option<Key> {
        match self {
            Self::OnePriority { next, end, .. } => {
                while *next < *end {
                    if let Some(p) = waiting(*next) {
                        return Some(Reverse((p, *next)));
                    }
                    *next += 1;
                }
                None
            }
            Self::Sorted { keys, seen } => {
                while let Some(&(p, idx)) = keys.get(*seen) {
                    if waiting(idx).is_some() {
                        return Some(Reverse((p, idx)));
                    }
                    *seen += 1;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Priorities of tasks, `None` for those not waiting.
    fn lookup(tasks: &[Option<i32>]) -> impl Fn(u32) -> Option<i32> + '_ {
        |idx| tasks[idx as usize]
    }

    /// Admits a batch of waiting tasks `(priority, index)`.
    fn admit(keys: &mut WaitingKeys, batch: &[(i32, u32)], tasks: &[Option<i32>]) {
        for &(p, idx) in batch {
            keys.push(p, idx, lookup(tasks));
        }
        keys.admitted();
    }

    /// The best waiting keys, in turn, each task then waiting no more.
    fn drain(keys: &mut WaitingKeys, tasks: &mut [Option<i32>]) -> Vec<(i32, u32)> {
        let mut order = Vec::new();
        while let Some(Reverse((p, idx))) = keys.best(lookup(tasks)) {
            order.push((p, idx));
            tasks[idx as usize] = None;
        }
        order
    }

    #[test]
    fn one_priority_finds_the_first_task_still_waiting_without_a_table() {
        let mut tasks = vec![None, Some(0), None, Some(0), Some(0)];
        let mut keys = WaitingKeys::default();
        admit(&mut keys, &[(0, 1), (0, 3), (0, 4)], &tasks);
        assert!(matches!(keys, WaitingKeys::OnePriority { .. }));
        assert_eq!(keys.best(lookup(&tasks)), Some(Reverse((0, 1))));
        tasks[1] = None;
        tasks[3] = None;
        assert_eq!(keys.best(lookup(&tasks)), Some(Reverse((0, 4))));
        tasks[4] = None;
        assert_eq!(keys.best(lookup(&tasks)), None);
    }

    #[test]
    fn nothing_waiting_looks_at_no_task() {
        let mut keys = WaitingKeys::default();
        keys.admitted();
        assert_eq!(keys.best(|_| panic!("no task to look at")), None);
    }

    #[test]
    fn a_second_priority_sorts_the_keys_still_waiting() {
        // Tasks 0..3 wait with priority 5; task 0 no longer waits when a batch brings task 4
        // with priority -1 and task 5 with priority 5.
        let mut tasks = vec![Some(5), Some(5), None, Some(5), Some(-1), Some(5)];
        let mut keys = WaitingKeys::default();
        admit(&mut keys, &[(5, 0), (5, 1), (5, 3)], &tasks);
        tasks[0] = None;
        admit(&mut keys, &[(-1, 4), (5, 5)], &tasks);
        assert!(matches!(keys, WaitingKeys::Sorted { .. }));
        let order = drain(&mut keys, &mut tasks);
        assert_eq!(order, [(-1, 4), (5, 1), (5, 3), (5, 5)]);
    }

    #[test]
    fn a_task_that_waits_again_is_found_again() {
        let mut tasks = vec![Some(0), Some(0), Some(0)];
        let mut keys = WaitingKeys::default();
        admit(&mut keys, &[(0, 0), (0, 1), (0, 2)], &tasks);
        tasks[0] = None;
        tasks[1] = None;
        assert_eq!(keys.best(lookup(&tasks)), Some(Reverse((0, 2))));
        tasks[1] = Some(0);
        keys.wait_again(0, 1);
        assert_eq!(keys.best(lookup(&tasks)), Some(Reverse((0, 1))));

        // With mixed priorities: the key goes back in order, once.
        let mut tasks = vec![Some(1), Some(2), Some(3)];
        let mut keys = WaitingKeys::default();
        admit(&mut keys, &[(1, 0), (2, 1), (3, 2)], &tasks);
        tasks[0] = None;
        tasks[1] = None;
        assert_eq!(keys.best(lookup(&tasks)), Some(Reverse((3, 2))));
        tasks[0] = Some(1);
        keys.wait_again(1, 0);
        keys.wait_again(1, 0);
        let order = drain(&mut keys, &mut tasks);
        assert_eq!(order, [(1, 0), (3, 2)]);
    }

    #[test]
    fn mixed_priorities_in_the_first_batch() {
        let mut tasks = vec![Some(2), Some(1), Some(2)];
        let mut keys = WaitingKeys::default();
        admit(&mut keys, &[(2, 0), (1, 1), (2, 2)], &tasks);
        assert_eq!(keys.best(lookup(&tasks)), Some(Reverse((1, 1))));
        tasks[1] = None;
        assert_eq!(keys.best(lookup(&tasks)), Some(Reverse((2, 0))));
    }
}
