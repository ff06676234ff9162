//! Locks (`claims` exclusive, `uses` shared) and counted slots, acquired all-or-nothing.
//!
//! A task that cannot acquire everything waits in the queue of the first resource that blocked
//! it, ordered like the ready queue (priority, then definition order). Releasing a resource
//! wakes only that resource's waiters, and only as many as could possibly proceed, so the cost
//! stays linear even when 10^6 tasks claim one lock.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use crate::task::{Meta, Token};

pub(crate) use super::queue::Key;
use super::queue::TaskQueue;

/// What one task holds while it runs (resource ids), as a view of its row in
/// [`Resources::items`].
#[derive(Debug, Clone, Copy)]
struct Needs<'a> {
    claims: &'a [u32],
    uses: &'a [u32],
    /// `(slot id, units)` pairs, end to end.
    slots: &'a [u32],
}

impl Needs<'_> {
    fn slots(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.slots.chunks_exact(2).map(|p| (p[0], p[1]))
    }
}

/// Marks a task that needs nothing in [`Resources::needs`].
const NOTHING: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Lock {
    /// Number of holders: one for a claim, any number for uses.
    holders: u32,
    exclusive: bool,
    waiters: TaskQueue,
}

#[derive(Debug, Default)]
struct Slot {
    capacity: u32,
    used: u32,
    waiters: TaskQueue,
}

/// The resource that kept a task from starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocker {
    Lock(u32),
    Slot(u32),
}

#[derive(Debug, Default)]
pub(crate) struct Resources {
    lock_ids: HashMap<String, u32>,
    slot_ids: HashMap<String, u32>,
    locks: Vec<Lock>,
    slots: Vec<Slot>,
    /// Per task: where its needs start in `items`; [`NOTHING`] for the common task that needs
    /// nothing. Empty until a task needs something (4 bytes per task of a run without locks or
    /// slots otherwise).
    needs: Vec<u32>,
    /// How many tasks are registered.
    registered: u32,
    /// Every task's needs, end to end, each row `[claims, uses, slots, claim ids..., use
    /// ids..., (slot id, units)...]` (counts first): a few blocks for a whole run, not one or
    /// more per task to allocate and free.
    items: Vec<u32>,
    /// Whether any task needs anything: until one does, no task's needs are looked up (a
    /// cache miss per start and per end on a large run).
    any_needs: bool,
}

impl Resources {
    pub(crate) fn new(capacity: &BTreeMap<String, u32>) -> Self {
        let mut r = Resources::default();
        for (name, &cap) in capacity {
            let id = r.slot_id(name);
            r.slots[id as usize].capacity = cap;
        }
        r
    }

    fn lock_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.lock_ids.get(name) {
            return id;
        }
        let id = self.locks.len() as u32;
        self.locks.push(Lock::default());
        self.lock_ids.insert(name.to_owned(), id);
        id
    }

    fn slot_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.slot_ids.get(name) {
            return id;
        }
        let id = self.slots.len() as u32;
        self.slots.push(Slot::default());
        self.slot_ids.insert(name.to_owned(), id);
        id
    }

    /// Registers the next task's needs (tasks are registered in index order).
    // Inlined up to the common task that needs nothing (a call per task of the run's setup).
    #[inline]
    pub(crate) fn register(&mut self, meta: &Meta) {
        let idx = self.registered;
        self.registered += 1;
        if meta.claims.is_empty() && meta.uses.is_empty() && meta.more.slots.is_empty() {
            if self.any_needs {
                self.needs.push(NOTHING);
            }
            return;
        }
        self.register_needs(idx, meta);
    }

    fn register_needs(&mut self, idx: u32, meta: &Meta) {
        // The tasks before the first one that needs something need nothing.
        self.needs.resize(idx as usize, NOTHING);
        // Written straight into `items` (three vectors per task to allocate and free were a
        // third of the setup of 10^6 tasks claiming one lock). Claims and uses are sorted and
        // deduplicated in place; slots keep the map's order.
        let row = self.items.len();
        self.any_needs = true;
        self.needs.push(row as u32);
        self.items.extend([0, 0, 0]);
        let claims = self.push_ids(&meta.claims);
        let uses = self.push_ids(&meta.uses);
        let mut slots = 0;
        for (name, &n) in &meta.more.slots {
            if n > 0 {
                let id = self.slot_id(name);
                self.items.extend([id, n]);
                slots += 1;
            }
        }
        self.items[row..row + 3].copy_from_slice(&[claims, uses, slots]);
    }

    /// Appends the lock ids of `names` to `items`, sorted and deduplicated: returns how many.
    fn push_ids(&mut self, names: &[Token]) -> u32 {
        let from = self.items.len();
        for name in names {
            let id = self.lock_id(name);
            self.items.push(id);
        }
        let ids = &mut self.items[from..];
        let n = if ids.len() < 2 {
            ids.len()
        } else {
            ids.sort_unstable();
            let mut kept = 1;
            for i in 1..ids.len() {
                if ids[i] != ids[kept - 1] {
                    ids[kept] = ids[i];
                    kept += 1;
                }
            }
            kept
        };
        self.items.truncate(from + n);
        n as u32
    }

    /// Whether some task of the run claims, uses or counts something.
    #[inline]
    pub(crate) fn any_needs(&self) -> bool {
        self.any_needs
    }

    /// Takes every resource of task `idx`, or nothing and names the first that is busy.
    // Inlined up to the check that any task needs anything (a call per start and per end of
    // every task otherwise, in the dispatcher's critical section).
    #[inline]
    pub(crate) fn try_acquire(&mut self, idx: u32) -> Result<(), Blocker> {
        if !self.any_needs {
            return Ok(());
        }
        self.acquire_needs(idx)
    }

    fn acquire_needs(&mut self, idx: u32) -> Result<(), Blocker> {
        let Some(needs) = Self::needs_in(&self.needs, &self.items, idx) else {
            return Ok(());
        };
        for &l in needs.claims {
            if self.locks[l as usize].holders > 0 {
                return Err(Blocker::Lock(l));
            }
        }
        for &l in needs.uses {
            if self.locks[l as usize].exclusive {
                return Err(Blocker::Lock(l));
            }
        }
        for (s, n) in needs.slots() {
            let slot = &self.slots[s as usize];
            if slot.used + n > slot.capacity {
                return Err(Blocker::Slot(s));
            }
        }
        for &l in needs.claims {
            let lock = &mut self.locks[l as usize];
            lock.holders = 1;
            lock.exclusive = true;
        }
        for &l in needs.uses {
            self.locks[l as usize].holders += 1;
        }
        for (s, n) in needs.slots() {
            self.slots[s as usize].used += n;
        }
        Ok(())
    }

    /// Task `idx`'s needs, if it has any (on borrowed fields, so that the locks and slots can
    /// change meanwhile).
    fn needs_in<'a>(needs: &[u32], items: &'a [u32], idx: u32) -> Option<Needs<'a>> {
        let start = needs[idx as usize];
        if start == NOTHING {
            return None;
        }
        let row = &items[start as usize..];
        let (claims, uses, slots) = (row[0] as usize, row[1] as usize, row[2] as usize);
        let row = &row[3..];
        Some(Needs {
            claims: &row[..claims],
            uses: &row[claims..claims + uses],
            slots: &row[claims + uses..claims + uses + 2 * slots],
        })
    }

    /// Parks a task in the queue of the resource that blocked it.
    pub(crate) fn wait(&mut self, blocker: Blocker, key: Key) {
        match blocker {
            Blocker::Lock(l) => self.locks[l as usize].waiters.push(key),
            Blocker::Slot(s) => self.slots[s as usize].waiters.push(key),
        }
    }

    /// Releases everything task `idx` holds; pushes the waiters that may now proceed into
    /// `woken` (they must try to acquire again).
    #[inline]
    pub(crate) fn release(&mut self, idx: u32, woken: &mut Vec<Key>) {
        if self.any_needs {
            self.release_needs(idx, woken);
        }
    }

    fn release_needs(&mut self, idx: u32, woken: &mut Vec<Key>) {
        let Some(needs) = Self::needs_in(&self.needs, &self.items, idx) else {
            return;
        };
        for &l in needs.claims {
            let lock = &mut self.locks[l as usize];
            lock.holders = 0;
            lock.exclusive = false;
            wake_lock(&mut self.locks, &self.needs, &self.items, l, woken);
        }
        for &l in needs.uses {
            let lock = &mut self.locks[l as usize];
            lock.holders -= 1;
            if lock.holders == 0 {
                wake_lock(&mut self.locks, &self.needs, &self.items, l, woken);
            }
        }
        for (s, n) in needs.slots() {
            self.slots[s as usize].used -= n;
            wake_slot(&mut self.slots, &self.needs, &self.items, s, woken);
        }
    }
}

/// A free lock can take a run of sharers, or one claimer: wake them, best first.
fn wake_lock(locks: &mut [Lock], needs: &[u32], items: &[u32], l: u32, woken: &mut Vec<Key>) {
    while let Some(key) = locks[l as usize].waiters.pop() {
        let claims =
            Resources::needs_in(needs, items, key.0 .1).is_some_and(|n| n.claims.contains(&l));
        woken.push(key);
        if claims {
            break;
        }
    }
}

/// Wake waiters while the freed units cover what they want of this slot.
fn wake_slot(slots: &mut [Slot], needs: &[u32], items: &[u32], s: u32, woken: &mut Vec<Key>) {
    let slot = &slots[s as usize];
    let mut free = slot.capacity - slot.used;
    while let Some(key) = slots[s as usize].waiters.peek() {
        let want = Resources::needs_in(needs, items, key.0 .1)
            .and_then(|n| n.slots().find(|&(id, _)| id == s))
            .map_or(0, |(_, n)| n);
        if want > free {
            break;
        }
        free -= want;
        slots[s as usize].waiters.pop();
        woken.push(key);
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use super::*;

    fn meta(claims: &[&str], uses: &[&str], slots: &[(&str, u32)]) -> Meta {
        Meta {
            claims: claims.iter().map(|&c| Token::from(c)).collect(),
            uses: uses.iter().map(|&u| Token::from(u)).collect(),
            more: crate::task::MoreMeta {
                slots: slots.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
                ..Default::default()
            }
            .into(),
            ..Meta::default()
        }
    }

    #[test]
    fn claims_exclude_claims_and_uses() {
        let mut r = Resources::new(&BTreeMap::new());
        r.register(&meta(&["db"], &[], &[]));
        r.register(&meta(&["db"], &[], &[]));
        r.register(&meta(&[], &["db"], &[]));
        assert!(r.try_acquire(0).is_ok());
        assert_eq!(r.try_acquire(1), Err(Blocker::Lock(0)));
        assert_eq!(r.try_acquire(2), Err(Blocker::Lock(0)));
        r.wait(Blocker::Lock(0), Reverse((0, 2)));
        r.wait(Blocker::Lock(0), Reverse((0, 1)));
        let mut woken = Vec::new();
        r.release(0, &mut woken);
        // Task 1 (a claimer, earlier in definition order) is woken, and only it.
        assert_eq!(woken, [Reverse((0, 1))]);
    }

    #[test]
    fn tasks_before_the_first_with_needs_need_nothing() {
        let mut r = Resources::new(&BTreeMap::new());
        r.register(&meta(&[], &[], &[]));
        r.register(&meta(&[], &[], &[]));
        assert!(r.needs.is_empty(), "no table while no task needs anything");
        r.register(&meta(&["db"], &[], &[]));
        r.register(&meta(&[], &[], &[]));
        r.register(&meta(&["db"], &[], &[]));
        assert_eq!(r.needs.len(), 5);
        assert!(r.try_acquire(0).is_ok() && r.try_acquire(1).is_ok());
        assert!(r.try_acquire(2).is_ok());
        assert!(r.try_acquire(3).is_ok());
        assert_eq!(r.try_acquire(4), Err(Blocker::Lock(0)));
    }

    #[test]
    fn uses_share_and_wake_together() {
        let mut r = Resources::new(&BTreeMap::new());
        r.register(&meta(&["db"], &[], &[]));
        r.register(&meta(&[], &["db"], &[]));
        r.register(&meta(&[], &["db"], &[]));
        r.register(&meta(&["db"], &[], &[]));
        assert!(r.try_acquire(0).is_ok());
        for i in 1..4 {
            let b = r.try_acquire(i).unwrap_err();
            r.wait(b, Reverse((0, i)));
        }
        let mut woken = Vec::new();
        r.release(0, &mut woken);
        assert_eq!(woken, [Reverse((0, 1)), Reverse((0, 2)), Reverse((0, 3))]);
        assert!(r.try_acquire(1).is_ok());
        assert!(r.try_acquire(2).is_ok());
        assert!(r.try_acquire(3).is_err());
    }

    #[test]
    fn slots_are_counted_all_or_nothing() {
        let cap = BTreeMap::from([("gpu".to_string(), 2)]);
        let mut r = Resources::new(&cap);
        r.register(&meta(&[], &[], &[("gpu", 1)]));
        r.register(&meta(&["x"], &[], &[("gpu", 2)]));
        r.register(&meta(&[], &[], &[("gpu", 1)]));
        assert!(r.try_acquire(0).is_ok());
        assert_eq!(r.try_acquire(1), Err(Blocker::Slot(0)));
        // Nothing of task 1 was taken: lock x is still free.
        r.register(&meta(&["x"], &[], &[]));
        assert!(r.try_acquire(3).is_ok());
        assert!(r.try_acquire(2).is_ok());
        r.wait(Blocker::Slot(0), Reverse((0, 1)));
        let mut woken = Vec::new();
        r.release(0, &mut woken);
        assert!(woken.is_empty(), "one free gpu is not enough for task 1");
        r.release(2, &mut woken);
        assert_eq!(woken, [Reverse((0, 1))]);
    }
}
