//! Placement decisions, pure (no threads, no connections): which counted resources are
//! counted per host, what the run as a whole may hold, and whether a place can take an
//! attempt now (SPEC section 9: "`slots` capacities are per host").
//!
//! The rule (doc/hosts.md, "Placement"):
//! - A `slots` name that some host of the run declares in its `capacity` (the spec on the
//!   controller merged with what a daemon announces) is counted **per host**: an attempt that
//!   needs `n` of it goes only to a host with `n` free; a host that declares none of it has
//!   none (`local` declares capacities with a `local` entry of a hosts file).
//! - The run's own capacities (the tree's, `--capacity`, [`crate::SchedulerBuilder::capacity`])
//!   still bound the whole run, across hosts, in the run state. A per-host name the run does
//!   not declare is bounded there by the sum over the hosts.
//! - Names no host declares are counted for the whole run only, as without hosts.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::HostSpec;

/// The names counted per host: those that some place declares.
pub(crate) fn per_host_names<'a>(
    capacities: impl IntoIterator<Item = &'a BTreeMap<String, u32>>,
) -> BTreeSet<String> {
    capacities
        .into_iter()
        .flat_map(|c| c.keys().cloned())
        .collect()
}

/// The capacities the run state enforces over every host: the run's own, and for each per-host
/// name the run does not declare, the sum over the places.
pub(crate) fn run_capacity<'a>(
    declared: &BTreeMap<String, u32>,
    capacities: impl IntoIterator<Item = &'a BTreeMap<String, u32>>,
) -> BTreeMap<String, u32> {
    let mut sums: BTreeMap<String, u32> = BTreeMap::new();
    for c in capacities {
        for (name, &n) in c {
            let sum = sums.entry(name.clone()).or_default();
            *sum = sum.saturating_add(n);
        }
    }
    let mut run = declared.clone();
    for (name, sum) in sums {
        run.entry(name).or_insert(sum);
    }
    run
}

/// Capacities for validating a tree before its hosts are connected: a daemon may announce
/// capacities its spec does not have, so any name the run does not declare is unbounded here;
/// the exact check ([`run_capacity`], [`Room::could_take`]) comes once the hosts answered.
pub(crate) fn loose_capacity(
    declared: &BTreeMap<String, u32>,
    specs: &[HostSpec],
    wanted: impl IntoIterator<Item = String>,
) -> BTreeMap<String, u32> {
    let mut run = declared.clone();
    if !specs.is_empty() {
        for name in wanted {
            run.entry(name).or_insert(u32::MAX);
        }
    }
    run
}

/// One place's job slots and per-host resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Room {
    pub jobs: usize,
    pub busy: usize,
    /// Its capacity of each per-host name (0 for names it does not declare).
    pub capacity: BTreeMap<String, u32>,
    pub used: BTreeMap<String, u32>,
    /// Attempts taken so far (a place that took none since a moment was idle since then).
    pub taken: u64,
}

impl Room {
    /// A place with `jobs` slots that declares `declared`, in a run whose per-host names are
    /// `per_host`.
    pub(crate) fn new(
        jobs: usize,
        declared: &BTreeMap<String, u32>,
        per_host: &BTreeSet<String>,
    ) -> Self {
        Room {
            jobs,
            busy: 0,
            capacity: per_host
                .iter()
                .map(|n| (n.clone(), declared.get(n).copied().unwrap_or(0)))
                .collect(),
            used: BTreeMap::new(),
            taken: 0,
        }
    }

    /// Whether an attempt needing `slots` could ever run here (validation).
    pub(crate) fn could_take(&self, slots: &BTreeMap<String, u32>) -> bool {
        slots
            .iter()
            .all(|(name, &n)| self.capacity.get(name).is_none_or(|&cap| n <= cap))
    }

    /// Whether an attempt needing `slots` can start here now.
    pub(crate) fn can_take(&self, slots: &BTreeMap<String, u32>) -> bool {
        self.can_hold(self.jobs, slots)
    }

    /// Whether the place can hold one more attempt needing `slots` when it may hold `window`
    /// at once (its `jobs`, and those queued ahead on a remote worker). Per-host resources are
    /// taken from the moment an attempt is placed, queued or not.
    pub(crate) fn can_hold(&self, window: usize, slots: &BTreeMap<String, u32>) -> bool {
        self.busy < window
            && slots.iter().all(|(name, &n)| {
                self.capacity.get(name).is_none_or(|&cap| {
                    self.used.get(name).copied().unwrap_or(0).saturating_add(n) <= cap
                })
            })
    }

    /// Takes a job slot and the per-host part of `slots` (after [`Room::can_take`]).
    pub(crate) fn take(&mut self, slots: &BTreeMap<String, u32>) {
        self.busy += 1;
        self.taken += 1;
        for (name, &n) in slots {
            if self.capacity.contains_key(name) {
                *self.used.entry(name.clone()).or_default() += n;
            }
        }
    }

    /// Gives back what [`Room::take`] took.
    pub(crate) fn give_back(&mut self, slots: &BTreeMap<String, u32>) {
        self.busy = self.busy.saturating_sub(1);
        for (name, &n) in slots {
            if let Some(used) = self.used.get_mut(name) {
                *used = used.saturating_sub(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, u32)]) -> BTreeMap<String, u32> {
        items.iter().map(|&(n, c)| (n.to_string(), c)).collect()
    }

    #[test]
    fn names_some_host_declares_are_per_host() {
        let h1 = map(&[("gpu", 2)]);
        let h2 = map(&[("gpu", 1), ("fpga", 1)]);
        let names = per_host_names([&h1, &h2, &BTreeMap::new()]);
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["fpga", "gpu"]);
    }

    #[test]
    fn the_run_bounds_per_host_names_by_its_own_or_the_sum() {
        let h1 = map(&[("gpu", 2)]);
        let h2 = map(&[("gpu", 1), ("fpga", 1)]);
        let run = run_capacity(&map(&[("licence", 3), ("fpga", 0)]), [&h1, &h2]);
        // Declared for the run: kept (both bounds hold); else the sum over the hosts.
        assert_eq!(run, map(&[("fpga", 0), ("gpu", 3), ("licence", 3)]));
        assert_eq!(
            run_capacity(&BTreeMap::new(), [&map(&[("gpu", u32::MAX)]), &h1])["gpu"],
            u32::MAX
        );
    }

    #[test]
    fn validation_before_connecting_is_loose_only_with_hosts() {
        let spec = HostSpec::parse("ssh://h1?capacity=gpu:2").unwrap();
        let loose = loose_capacity(&map(&[("y", 1)]), &[spec], ["gpu".into(), "x".into()]);
        assert_eq!(loose["gpu"], u32::MAX, "a daemon may announce more");
        assert_eq!(loose["y"], 1, "the run's own capacity is checked at once");
        assert_eq!(loose["x"], u32::MAX);
        assert!(loose_capacity(&BTreeMap::new(), &[], ["x".into()]).is_empty());
    }

    #[test]
    fn a_host_without_a_per_host_name_has_none_of_it() {
        let names = per_host_names([&map(&[("gpu", 2)])]);
        let gpu_box = Room::new(4, &map(&[("gpu", 2)]), &names);
        let plain = Room::new(4, &BTreeMap::new(), &names);
        let one = map(&[("gpu", 1)]);
        assert!(gpu_box.can_take(&one));
        assert!(!plain.can_take(&one));
        assert!(!plain.could_take(&one));
        assert!(!gpu_box.could_take(&map(&[("gpu", 3)])));
        // Names counted for the whole run only do not limit a place.
        assert!(plain.can_take(&map(&[("licence", 5)])));
    }

    #[test]
    fn a_place_takes_until_its_capacity_then_after_give_back() {
        let names = per_host_names([&map(&[("gpu", 2)])]);
        let mut room = Room::new(3, &map(&[("gpu", 2)]), &names);
        let one = map(&[("gpu", 1)]);
        let two = map(&[("gpu", 2)]);
        room.take(&one);
        assert!(!room.can_take(&two), "1 of 2 used: 2 more do not fit");
        assert!(room.can_take(&one));
        room.take(&one);
        assert!(!room.can_take(&one));
        // A job slot is left, for an attempt that needs no gpu.
        assert!(room.can_take(&BTreeMap::new()));
        room.take(&BTreeMap::new());
        assert!(!room.can_take(&BTreeMap::new()), "every job slot is busy");
        room.give_back(&one);
        assert!(room.can_take(&one));
        assert!(!room.can_take(&two));
        room.give_back(&one);
        assert!(room.can_take(&two));
        assert_eq!(room.used["gpu"], 0);
        assert_eq!(room.busy, 1);
    }

    #[test]
    fn the_first_place_that_can_start_it_now_is_chosen() {
        let names = per_host_names([&map(&[("gpu", 1)])]);
        let mut rooms = [
            Room::new(2, &BTreeMap::new(), &names),
            Room::new(1, &map(&[("gpu", 1)]), &names),
        ];
        let gpu = map(&[("gpu", 1)]);
        let pick = |rooms: &[Room], slots| rooms.iter().position(|r| r.can_take(slots));
        assert_eq!(pick(&rooms, &gpu), Some(1));
        rooms[1].take(&gpu);
        assert_eq!(pick(&rooms, &gpu), None, "the only gpu is taken");
        assert_eq!(pick(&rooms, &BTreeMap::new()), Some(0));
    }

    #[test]
    fn a_window_holds_more_than_jobs_but_never_more_of_a_resource() {
        let names = per_host_names([&map(&[("gpu", 1)])]);
        let mut room = Room::new(2, &map(&[("gpu", 1)]), &names);
        let none = BTreeMap::new();
        let gpu = map(&[("gpu", 1)]);
        room.take(&gpu);
        room.take(&none);
        assert!(!room.can_take(&none), "both job slots are busy");
        assert!(room.can_hold(4, &none), "two more may queue ahead");
        assert!(
            !room.can_hold(4, &gpu),
            "a queued attempt holds its per-host slots too"
        );
        room.take(&none);
        room.take(&none);
        assert!(!room.can_hold(4, &none), "the window is full");
        room.give_back(&gpu);
        assert!(room.can_hold(4, &gpu));
        assert!(!room.can_take(&gpu), "three still in flight for two slots");
    }
}
