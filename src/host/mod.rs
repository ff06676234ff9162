//! Hosts: the same run spread over this machine and others (SPEC section 9).
//!
//! `Hosts` is where an attempt of a command task runs when a run has hosts: it sits behind
//! the executor (the one seam between the scheduler and the places attempts run), so the
//! dispatcher never branches on where. It picks a place that carries the task's `host_tags`
//! and has a free job slot, tells the run where the attempt starts (`TaskStarted` carries the
//! host), runs it there, and frees the slot. `claims`/`uses` locks stay in the run state, so
//! they hold across hosts.
//!
//! - `local` runs attempts with the executor's own runner.
//! - ssh hosts (`ssh`) are bootstrapped with nothing installed, their tree synced by
//!   content; attempts go over one connection (`conn`) per host, by task name.
//! - A host lost mid-run has its running attempts put back in the queue (the run state counts
//!   that, at most twice per task) and is reconnected with bounded backoff. A host that cannot
//!   be reached is reported with the real reason; a refusal that will not change (a key, a
//!   platform, a cache directory) is not retried.

mod checkpoint;
mod conn;
mod driven;
pub mod pilot;
pub(crate) mod placement;
pub mod serve;
pub mod spec;
pub mod ssh;
pub mod tls;
pub(crate) mod tree;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub use spec::{
    check_unique as check_unique_names, load_hosts_file, HostKind, HostSpec, SpecError,
};
pub use ssh::{ConnectError, Connecting, SSH_ENV};

use crate::context::ResultSink;
use crate::error::{GraphError, GraphErrors};
use crate::pool::attempt::{Attempt, Ran, Recorder};
use crate::pool::Job;
use crate::protocol::{self, FileEntry, RunRef, ToWorker, ToWorkerRef};
use crate::sched::events::Event;
use crate::task::{Outcome, Task, Work};

use conn::{Conn, Msg};

/// Reconnections tried after a transient failure before a host is given up for the run.
const MAX_RECONNECTS: u32 = 3;
/// The first reconnection delay; doubled after each failure (0.5 s, 1 s, 2 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How often a waiting attempt looks at cancellation.
const TICK: Duration = Duration::from_millis(25);
/// A remote place whose attempts take less than this on average (a moving average, from
/// their real start) holds up to twice its `jobs` in flight: the worker queues the extra ones
/// and starts each the moment a slot frees, instead of a round trip later. Longer attempts
/// gain nothing from it, and an attempt queued behind one could wait there while another
/// host frees: those places hold only their `jobs`.
const QUEUE_AHEAD_BELOW: Duration = Duration::from_millis(50);
/// Attempts shorter than this on average queue deeper: [`DEEP_PER_SLOT`] per job slot (at
/// most [`MAX_AHEAD`] per place). A round trip through ssh on a busy machine can take several
/// of them; with one per slot, the worker's queue ran dry for 7% of 3 000 `/bin/true`, with
/// three for 0.1-1%.
const DEEP_AHEAD_BELOW: Duration = Duration::from_millis(5);
/// Attempts queued ahead per job slot on a place whose attempts are shorter than
/// [`DEEP_AHEAD_BELOW`]. Beyond keeping the worker's queue from running dry (three did), a
/// deeper queue lets the worker hold its ends back longer (see `host::serve`'s `HOLD_LIMIT`)
/// and send them, and the scheduler its `Run`s, more to a packet: with eight, 3 000
/// `/bin/true` on a loopback ssh host crossed ssh in about half as many packets as with three.
const DEEP_PER_SLOT: usize = 8;
/// Attempts queued ahead on one place at most: a host with many slots has slots freeing at
/// different times, so its queue is refilled more often.
const MAX_AHEAD: usize = 32;
/// On a host whose attempts are short, the worker's word that an attempt started wakes
/// nobody (see `Conn::set_quiet_starts`): the attempt's thread hears of it with the attempt's
/// end or, for an attempt that turns out long, within this lag.
const QUIET_START_LAG: Duration = Duration::from_millis(10);
/// An attempt still waiting in a worker's queue this long after it was sent (behind attempts
/// longer than the host's short average) moves to a place that has a free slot, if one does:
/// taken back with `Unqueue` unless it starts first.
const MOVE_AFTER: Duration = Duration::from_millis(100);

/// The hosts of a run (see [`crate::SchedulerBuilder::hosts`]).
#[derive(Clone, Debug, Default)]
pub struct HostsConfig {
    /// Hosts besides `local`.
    pub hosts: Vec<HostSpec>,
    /// Do not run command tasks on this machine.
    pub no_local: bool,
    /// The task tree the command tasks come from: synced to hosts, and where `outputs` land.
    pub tree: Option<PathBuf>,
    /// This run's TLS identity for `tls://` hosts (`--tls-cert`, `--tls-key`, `--ca`).
    pub tls: Option<tls::TlsFiles>,
    /// Slurm pilot workers, as hosts `pilot-1` ... `pilot-N` (`--slurm-workers`).
    pub pilots: Option<Arc<pilot::Pilots>>,
    /// Ends the ssh hosts' setups of the runs started with this config, before the run is
    /// there to cancel (keep a clone, call [`ssh::Connecting::cancel`]).
    pub connecting: ssh::Connecting,
}

#[derive(Debug)]
enum Status {
    Up,
    Connecting,
    /// Down for now; tried again from `retry_at`.
    Down {
        retry_at: Instant,
        failures: u32,
    },
    /// Given up for the rest of the run.
    Dead(String),
}

struct Slot {
    /// Job slots and per-host resources (see [`placement`]).
    room: placement::Room,
    /// Capacities of the place: its spec's, merged with what a daemon announces.
    declared: std::collections::BTreeMap<String, u32>,
    /// Its tags: its spec's, and those a daemon announces.
    tags: Vec<String>,
    status: Status,
    /// A place on another machine (queues ahead, see [`QUEUE_AHEAD_BELOW`]).
    remote: bool,
    /// Moving average of its attempts' durations from their real start. It starts at
    /// [`QUEUE_AHEAD_BELOW`]: nothing is queued ahead on a host before one of its attempts
    /// was short (a task queued behind a long first attempt would wait there while another
    /// host frees or connects); short ones open the window and deepen it, long ones close it.
    avg: Duration,
    /// Of `room`'s busy slots, those reserved for an attempt that may move here (see
    /// [`Reserved`]): not counted against new tasks by [`Hosts::promise`], since nothing
    /// dispatches again when a reservation is given back.
    reserved: usize,
}

impl Slot {
    /// How many attempts the place may hold now: its `jobs`, and as many more queued on a
    /// remote worker while its attempts are short.
    fn window(&self) -> usize {
        let jobs = self.room.jobs;
        if !self.remote || self.avg >= QUEUE_AHEAD_BELOW {
            return jobs;
        }
        let per_slot = if self.avg < DEEP_AHEAD_BELOW {
            DEEP_PER_SLOT
        } else {
            1
        };
        jobs + (jobs * per_slot).min(MAX_AHEAD)
    }

    /// The largest [`Slot::window`] the place may have.
    fn most(&self) -> usize {
        if self.remote {
            self.room.jobs + (self.room.jobs * DEEP_PER_SLOT).min(MAX_AHEAD)
        } else {
            self.room.jobs
        }
    }
}

struct Place {
    name: Arc<str>,
    spec: HostSpec,
    conn: Mutex<Option<Arc<Conn>>>,
    /// The ssh connection being set up, which a cancel ends.
    setup: Arc<ssh::Setup>,
    /// The order in which attempts placed here send their `Run`: the order they were placed.
    turns: Turns,
}

/// Attempts placed on a place send their `Run` in the order they were placed (which is the
/// order the dispatcher handed them out, see `Hosts::arriving`), whatever the threads that
/// carry them do in between (outputs, a checkpoint): the worker starts them in that order.
#[derive(Default)]
struct Turns {
    state: Mutex<TurnState>,
    moved: Bell,
}

/// A condition variable that makes no system call to wake nobody: the standard one's
/// `notify_all` always does, and the places' two were rung three times per attempt, mostly
/// with no thread waiting (issue 10). Only for state changed under the mutex its waiters hold:
/// a waiter counts itself in before its wait releases that mutex, so a change made under it
/// afterwards sees the waiter.
#[derive(Default)]
struct Bell {
    cv: Condvar,
    sleepers: std::sync::atomic::AtomicUsize,
}

impl Bell {
    fn wait_timeout<'a, T>(
        &self,
        guard: std::sync::MutexGuard<'a, T>,
        limit: Duration,
    ) -> std::sync::MutexGuard<'a, T> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let guard = self
            .cv
            .wait_timeout(guard, limit)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// Wakes every waiter, if any; after a change made under their mutex.
    fn ring(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }

    /// Wakes every waiter, whatever changed (an atomic flag they look at).
    fn ring_always(&self) {
        self.cv.notify_all();
    }
}

#[derive(Default)]
struct TurnState {
    handed: u64,
    /// The first turn not passed yet.
    next: u64,
    /// Turns passed out of order.
    passed: std::collections::BTreeSet<u64>,
}

impl Turns {
    fn take(&self) -> u64 {
        let mut s = lock(&self.state);
        s.handed += 1;
        s.handed - 1
    }

    /// A turn, if every turn taken before passed: its holder may send at once.
    fn take_first(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        if s.next != s.handed {
            return None;
        }
        s.handed += 1;
        Some(s.handed - 1)
    }

    /// Waits until every turn before `turn` passed (or `give_up`).
    fn wait(&self, turn: u64, give_up: impl Fn() -> bool) {
        let mut s = lock(&self.state);
        while s.next < turn && !give_up() {
            s = self.moved.wait_timeout(s, TICK);
        }
    }

    fn pass(&self, turn: u64) {
        let mut s = lock(&self.state);
        s.passed.insert(turn);
        loop {
            let next = s.next;
            if !s.passed.remove(&next) {
                break;
            }
            s.next += 1;
        }
        self.moved.ring();
    }
}

/// Passes a turn when dropped (every way out of an attempt's start).
struct Pass<'a>(&'a Turns, u64);

/// How an attempt on a remote place went.
enum Remote<'a> {
    /// It ended (or never started): the attempt, the connection its `Done` came through, how
    /// long it ran.
    Ended(Attempt, Option<Arc<Conn>>, Option<Duration>),
    /// It was taken back from the worker's queue, to run where room was reserved for it.
    Moved(Reserved<'a>),
    /// Sent, and handed to the connection's reader (see [`driven`]).
    HandedOff,
}

/// Room taken on a place for an attempt that may move there, with its turn; given back
/// (and the turn passed) unless [`Reserved::keep`] keeps it.
struct Reserved<'a> {
    hosts: &'a Hosts,
    place: usize,
    turn: u64,
    wanted: &'a std::collections::BTreeMap<String, u32>,
}

impl Reserved<'_> {
    /// The place and turn, now the attempt's (its room stays taken).
    fn keep(self) -> (usize, u64) {
        lock(&self.hosts.slots)[self.place].reserved -= 1;
        let kept = (self.place, self.turn);
        std::mem::forget(self);
        kept
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.hosts.places[self.place].turns.pass(self.turn);
        let mut slots = lock(&self.hosts.slots);
        let slot = &mut slots[self.place];
        slot.reserved -= 1;
        slot.room.give_back(self.wanted);
        drop(slots);
        self.hosts.freed.ring();
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.pass(self.1);
    }
}

/// What an ended attempt holds until its end is recorded: its place, its `slots`, the
/// connection whose `Done` it was (its end counts there, see [`Conn::wait_recorded`]) and how
/// long it ran (`None`: it never started).
struct Held {
    place: usize,
    slots: std::collections::BTreeMap<String, u32>,
    conn: Option<Arc<Conn>>,
    ran: Option<Duration>,
    /// Its end was reported by the connection's reader, in order with the starts after it:
    /// no thread waits for it to be recorded ([`Conn::wait_recorded`]).
    driven: bool,
}

/// The places of a run and their free job slots.
pub(crate) struct Hosts {
    places: Vec<Place>,
    slots: Mutex<Vec<Slot>>,
    /// Rung when room frees on a place or a place's state changes (under `slots`).
    freed: Bell,
    notices: Mutex<Vec<Event>>,
    has_notices: AtomicBool,
    /// 0 running, 1 terminating, 2 killing.
    level: AtomicU8,
    tree: Option<PathBuf>,
    tls: Option<tls::TlsFiles>,
    tls_config: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    manifest: OnceLock<Result<(Vec<FileEntry>, String), String>>,
    /// Outputs copied back during this run: path -> entry (pushed to hosts that lack them).
    outputs: Mutex<HashMap<String, FileEntry>>,
    next_id: AtomicU64,
    grace: Duration,
    /// Arguments for the workers (an embedder's `worker_args`).
    worker_args: Vec<std::ffi::OsString>,
    /// Rooms held by attempts that ended but are not recorded yet: (task, attempt) -> place.
    /// They are given back once the run state has recorded the end ([`Hosts::release`]), so
    /// that no attempt starts on a place before the end that made room for it is an event.
    held: Mutex<HashMap<(u32, u32), Held>>,
    pilots: Option<Arc<pilot::Pilots>>,
    /// The run's checkpoints, as attempts on hosts get them (see [`checkpoint`]).
    copies: checkpoint::Copies,
    /// Jobs the dispatcher handed out for places that have room, not placed yet (changed
    /// under the lock of `slots`; see [`Hosts::promise`]).
    promised: std::sync::atomic::AtomicUsize,
    /// Tickets of the jobs handed out that have not come to [`Hosts::acquire`] yet, and the
    /// next ticket (changed under the lock of `slots`): a job is placed only once every job
    /// handed out before it (a better task) came to be placed, so that the race between
    /// the threads that took them does not decide which starts first.
    arriving: Mutex<std::collections::BTreeSet<u64>>,
    next_ticket: AtomicU64,
    /// The run, where attempts handed to a connection's reader are reported (see [`driven`]).
    recorder: OnceLock<std::sync::Weak<dyn Recorder>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hosts {
    /// Validates placement (every task with `host_tags` has a host carrying them all) and
    /// connects the remote hosts, in parallel. `None` for a run without hosts.
    pub(crate) fn start(
        config: Option<&HostsConfig>,
        local_jobs: usize,
        grace: Duration,
        tasks: &[Task],
        process: &crate::pool::process::ProcessConfig,
    ) -> Result<Option<Arc<Hosts>>, GraphErrors> {
        let Some(config) = config else {
            return Ok(None);
        };
        let mut specs = Vec::new();
        if !config.no_local {
            // A `local` entry (hosts file) gives this machine tags and capacities; its jobs
            // are the run's.
            let mut local = config
                .hosts
                .iter()
                .find(|s| s.kind == HostKind::Local)
                .cloned()
                .unwrap_or_else(|| HostSpec::local(local_jobs));
            local.jobs = Some(local_jobs);
            specs.push(local);
        }
        specs.extend(
            config
                .hosts
                .iter()
                .filter(|s| s.kind != HostKind::Local)
                .cloned(),
        );
        if let Some(p) = &config.pilots {
            specs.extend(p.seats());
        }
        // Before connecting, a daemon may carry any tag (it announces its own): the exact
        // check is made once the hosts answered.
        let remote = |t: &Task| remote_ok(t, process.default_pool);
        let errors = no_host_for(
            tasks,
            &remote,
            &specs
                .iter()
                .map(|s| {
                    (
                        s.kind.clone(),
                        if matches!(s.kind, HostKind::Tls { .. }) {
                            None
                        } else {
                            Some(s.tags.as_slice())
                        },
                    )
                })
                .collect::<Vec<_>>(),
        );
        if !errors.is_empty() {
            return Err(GraphErrors(errors));
        }
        let hosts = Arc::new(Hosts {
            slots: Mutex::new(
                specs
                    .iter()
                    .map(|s| Slot {
                        room: placement::Room {
                            jobs: s.jobs.unwrap_or(1),
                            ..placement::Room::default()
                        },
                        declared: s.capacity.clone(),
                        tags: s.tags.clone(),
                        status: if s.kind == HostKind::Local {
                            Status::Up
                        } else {
                            Status::Connecting
                        },
                        remote: s.kind != HostKind::Local,
                        avg: QUEUE_AHEAD_BELOW,
                        reserved: 0,
                    })
                    .collect(),
            ),
            places: specs
                .into_iter()
                .map(|spec| Place {
                    name: Arc::from(spec.name.as_str()),
                    spec,
                    conn: Mutex::new(None),
                    setup: Arc::default(),
                    turns: Turns::default(),
                })
                .collect(),
            freed: Bell::default(),
            notices: Mutex::new(Vec::new()),
            has_notices: AtomicBool::new(false),
            level: AtomicU8::new(0),
            tree: config.tree.clone(),
            tls: config.tls.clone(),
            tls_config: OnceLock::new(),
            manifest: OnceLock::new(),
            outputs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            grace,
            worker_args: process.args.clone(),
            held: Mutex::new(HashMap::new()),
            pilots: config.pilots.clone(),
            copies: checkpoint::Copies::default(),
            promised: std::sync::atomic::AtomicUsize::new(0),
            arriving: Mutex::new(std::collections::BTreeSet::new()),
            next_ticket: AtomicU64::new(0),
            recorder: OnceLock::new(),
        });
        for place in &hosts.places {
            config.connecting.register(&place.setup);
        }
        std::thread::scope(|s| {
            // The tree's manifest is read while the hosts connect, not after.
            if hosts.tree.is_some() && hosts.places.iter().any(|p| !p.spec.shared_fs) {
                let hosts = &hosts;
                s.spawn(move || {
                    let _ = hosts.manifest();
                });
            }
            for i in 0..hosts.places.len() {
                if pilot::seat_of(&hosts.places[i].spec.kind).is_some() {
                    // A worker job may wait in Slurm's queue for long: the run starts
                    // without it, and its tasks wait for a seat that comes up.
                    let hosts = hosts.clone();
                    let _ = std::thread::Builder::new()
                        .name("pexen-pilot-seat".into())
                        .spawn(move || hosts.connect(i, 0));
                } else if hosts.places[i].spec.kind != HostKind::Local {
                    let hosts = &hosts;
                    s.spawn(move || hosts.connect(i, 0));
                }
            }
        });
        // Per-host capacities are known once the daemons answered: fixed for the run.
        let errors = hosts.set_capacities(tasks, &remote);
        if !errors.is_empty() {
            hosts.shutdown();
            return Err(GraphErrors(errors));
        }
        if let Some(limit) = hosts.pilots.as_ref().and_then(|p| p.idle()) {
            let weak = Arc::downgrade(&hosts);
            let _ = std::thread::Builder::new()
                .name("pexen-pilot-idle".into())
                .spawn(move || watch_idle(&weak, limit));
        }
        Ok(Some(hosts))
    }

    /// Lets go of the pilot workers that took no attempt and ran none for `limit`, while no
    /// task waits for a place (`seen`: per place, the attempts it had taken when it was first
    /// seen idle, and when). A released place is down, to be submitted again (connected
    /// again) when a task has nowhere else to go.
    fn release_idle(&self, limit: Duration, seen: &mut Vec<Option<(u64, Instant)>>) {
        seen.resize(self.places.len(), None);
        let now = Instant::now();
        let mut released = Vec::new();
        {
            let mut slots = lock(&self.slots);
            let waiting = self.promised.load(Ordering::SeqCst) > 0;
            for (i, place) in self.places.iter().enumerate() {
                let slot = &mut slots[i];
                if pilot::seat_of(&place.spec.kind).is_none()
                    || !matches!(slot.status, Status::Up)
                    || slot.room.busy > 0
                {
                    seen[i] = None;
                    continue;
                }
                match seen[i] {
                    Some((taken, since)) if taken == slot.room.taken => {
                        if !waiting && now.duration_since(since) >= limit {
                            slot.status = Status::Down {
                                retry_at: now,
                                failures: 0,
                            };
                            seen[i] = None;
                            // Under the lock of `slots`, as a connection that comes up sets
                            // its own: this one is the released worker's.
                            released.push((i, lock(&place.conn).take()));
                        }
                    }
                    _ => seen[i] = Some((slot.room.taken, now)),
                }
            }
        }
        for (i, conn) in released {
            let place = &self.places[i];
            if let Some(conn) = conn {
                // Not a loss: the worker sees the end of its connection and exits.
                conn.close();
            }
            self.notice(Event::HostReleased {
                host: place.name.clone(),
                reason: format!(
                    "no attempt for {}: its Slurm job ends",
                    humantime::format_duration(limit)
                ),
            });
        }
    }

    /// Counts per host the names some place declares, and checks that every task's tags and
    /// `slots` fit some place.
    fn set_capacities(&self, tasks: &[Task], remote: &dyn Fn(&Task) -> bool) -> Vec<GraphError> {
        let mut slots = lock(&self.slots);
        let errors = no_host_for(
            tasks,
            remote,
            &self
                .places
                .iter()
                .zip(slots.iter())
                .map(|(p, s)| (p.spec.kind.clone(), Some(s.tags.as_slice())))
                .collect::<Vec<_>>(),
        );
        if !errors.is_empty() {
            return errors;
        }
        let names = placement::per_host_names(slots.iter().map(|s| &s.declared));
        for slot in slots.iter_mut() {
            let jobs = slot.room.jobs;
            slot.room = placement::Room::new(jobs, &slot.declared, &names);
        }
        let mut errors = Vec::new();
        for t in tasks.iter().filter(|t| !t.meta.more.slots.is_empty()) {
            let fits = self.places.iter().zip(slots.iter()).any(|(p, s)| {
                (p.spec.kind == HostKind::Local || remote(t))
                    && t.meta.more.host_tags.iter().all(|g| s.tags.contains(g))
                    && s.room.could_take(&t.meta.more.slots)
            });
            if !fits {
                errors.push(GraphError::NoHostSlots {
                    task: t.name.clone(),
                    slots: t
                        .meta
                        .more
                        .slots
                        .iter()
                        .map(|(n, c)| format!("{n}: {c}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        errors
    }

    /// Whether the setup of some host was cancelled ([`HostsConfig::connecting`], a Ctrl-C
    /// while `pexen run` connected its hosts): the run starts cancelled, its tasks not run.
    pub(crate) fn cancelled_while_connecting(&self) -> bool {
        self.places.iter().any(|p| p.setup.cancelled())
    }

    /// The capacities the run state enforces across every host (see [`placement`]).
    pub(crate) fn run_capacity(
        &self,
        declared: &std::collections::BTreeMap<String, u32>,
    ) -> std::collections::BTreeMap<String, u32> {
        placement::run_capacity(declared, lock(&self.slots).iter().map(|s| &s.declared))
    }

    /// Job slots over every place: how many attempts run at once at most.
    pub(crate) fn jobs(&self) -> usize {
        lock(&self.slots)
            .iter()
            .map(|s| s.room.jobs)
            .sum::<usize>()
            .max(1)
    }

    /// The run's worker threads: one per attempt the places may hold at once (queued ahead
    /// included, see [`QUEUE_AHEAD_BELOW`] and [`DEEP_AHEAD_BELOW`]).
    pub(crate) fn threads(&self) -> usize {
        lock(&self.slots)
            .iter()
            .map(Slot::most)
            .sum::<usize>()
            .max(1)
    }

    /// The dispatcher asks before it hands out a job: true (and counted until the job is
    /// placed or given up, [`Hosts::unpromise`]) when some place has room for one more
    /// attempt now, counting those handed out and not placed yet. So no task leaves the run
    /// state's queue (priorities, locks) to wait for a place. Places that are down count (a
    /// job waits there for the reconnection, as before); with no place left, every job goes
    /// on, to fail with the reason.
    pub(crate) fn promise(&self) -> Option<u64> {
        let slots = lock(&self.slots);
        let mut free = 0;
        let mut alive = false;
        for s in slots
            .iter()
            .filter(|s| !matches!(s.status, Status::Dead(_)))
        {
            alive = true;
            free += s
                .window()
                .saturating_sub(s.room.busy.saturating_sub(s.reserved));
        }
        let promised = self.promised.load(Ordering::SeqCst);
        if alive && promised >= free {
            return None;
        }
        self.promised.store(promised + 1, Ordering::SeqCst);
        let ticket = self.next_ticket.fetch_add(1, Ordering::SeqCst);
        lock(&self.arriving).insert(ticket);
        Some(ticket)
    }

    /// A job handed out after [`Hosts::promise`] will not be placed after all.
    pub(crate) fn unpromise(&self, ticket: Option<u64>) {
        let _slots = lock(&self.slots);
        self.placed(ticket);
        self.freed.ring();
    }

    /// The manifest of the tree, read once per run.
    fn manifest(&self) -> Result<&(Vec<FileEntry>, String), String> {
        self.manifest
            .get_or_init(|| {
                let Some(root) = self.tree.as_ref() else {
                    // An embedder's run without a tree: nothing to sync (closures only).
                    return Ok((Vec::new(), protocol::manifest_hash(&[])));
                };
                let key = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
                let index = serve::cache_dir()
                    .join("manifests")
                    .join(format!("{}.json", &key[..32]));
                let m = tree::manifest_cached(root, &index)
                    .map_err(|e| format!("cannot read the tree to sync: {e}"))?;
                let h = protocol::manifest_hash(&m);
                Ok((m, h))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Connects place `i` (after `failures` earlier failures) and records the outcome.
    fn connect(self: &Arc<Self>, i: usize, failures: u32) {
        let place = &self.places[i];
        let result = self.open(i);
        let mut slots = lock(&self.slots);
        match result {
            Ok(conn) => {
                // The spec on the controller wins; a daemon adds tags and the capacities the
                // spec does not give.
                let slot = &mut slots[i];
                if place.spec.jobs.is_none() {
                    slot.room.jobs = conn.cpus;
                }
                for tag in &conn.tags {
                    if !slot.tags.contains(tag) {
                        slot.tags.push(tag.clone());
                    }
                }
                for (name, &n) in &conn.capacity {
                    slot.declared.entry(name.clone()).or_insert(n);
                }
                self.notice(Event::HostConnected {
                    host: place.name.clone(),
                    uploaded: conn.uploaded,
                    files_sent: conn.files_sent,
                });
                // A cancel that came while this host was connecting.
                let level = self.level.load(Ordering::SeqCst);
                if level > 0 {
                    let kill = level >= 2;
                    let _ = conn.send_with(|w| protocol::send(w, &ToWorker::Cancel { kill }));
                }
                *lock(&place.conn) = Some(conn);
                slots[i].status = Status::Up;
            }
            Err(e) => {
                let reason = crate::error::error_chain(&e);
                let failures = failures + 1;
                slots[i].status = if e.is_transient() && failures <= MAX_RECONNECTS {
                    Status::Down {
                        retry_at: Instant::now() + FIRST_BACKOFF * (1 << (failures - 1)),
                        failures,
                    }
                } else {
                    Status::Dead(reason.clone())
                };
                self.notice(Event::HostLost {
                    host: place.name.clone(),
                    reason: format!("cannot connect: {reason}"),
                });
            }
        }
        drop(slots);
        self.freed.ring();
    }

    fn open(self: &Arc<Self>, i: usize) -> Result<Arc<Conn>, ConnectError> {
        let place = &self.places[i];
        let seat = pilot::seat_of(&place.spec.kind);
        let mut link = if let (Some(seat), Some(pilots)) = (seat, &self.pilots) {
            // Submits a worker job and waits until it connects back.
            pilots.link(seat)?
        } else if let HostKind::Tls { host, port } = &place.spec.kind {
            let files = self.tls.as_ref().ok_or(ConnectError::NoTlsIdentity)?;
            let config = self
                .tls_config
                .get_or_init(|| tls::client_config(files).map_err(|e| e.to_string()))
                .clone()
                .map_err(ConnectError::TlsRefused)?;
            ssh::connect_tls(host, *port, config)?
        } else {
            let bin = ssh::Binary::this().map_err(ConnectError::Bootstrap)?;
            ssh::connect(&place.spec, bin, &self.worker_args, Some(&place.setup))?
        };
        // The sync below is part of the setup that a cancel ends.
        let fail = |link: &mut ssh::Link, e: ConnectError| {
            let e = if place.setup.cancelled() {
                ConnectError::Cancelled
            } else {
                e
            };
            place.setup.end();
            link.transport.kill();
            Err(e)
        };
        let (manifest, manifest_hash) = match self.manifest() {
            Ok((m, h)) => (m.as_slice(), h.as_str()),
            Err(e) => return fail(&mut link, ConnectError::Tree(e)),
        };
        let root = self.tree.clone().unwrap_or_default();
        let tree = ssh::TreeToSync {
            root: &root,
            manifest,
            manifest_hash,
            jobs: place.spec.jobs.unwrap_or(link.hello.cpus),
        };
        let shared_fs = place.spec.shared_fs && self.tree.is_some();
        if let Err(e) = ssh::sync_tree(&mut link, &place.name, shared_fs, &tree) {
            return fail(&mut link, e);
        }
        place.setup.end();
        let me = Arc::downgrade(self);
        Ok(Conn::start(link, me.clone(), move |reason| {
            if let Some(hosts) = me.upgrade() {
                hosts.on_lost(i, reason);
            }
        }))
    }

    fn on_lost(&self, i: usize, reason: String) {
        let place = &self.places[i];
        lock(&place.conn).take();
        let mut slots = lock(&self.slots);
        slots[i].status = Status::Down {
            retry_at: Instant::now() + FIRST_BACKOFF,
            failures: 1,
        };
        self.notice(Event::HostLost {
            host: place.name.clone(),
            reason,
        });
        drop(slots);
        self.freed.ring();
    }

    fn notice(&self, event: Event) {
        lock(&self.notices).push(event);
        self.has_notices.store(true, Ordering::SeqCst);
    }

    /// Moves host events (connected, lost) into the run's event queue.
    pub(crate) fn take_notices(&self, events: &mut std::collections::VecDeque<Event>) {
        if self.has_notices.swap(false, Ordering::SeqCst) {
            events.extend(lock(&self.notices).drain(..));
        }
    }

    /// Runs one attempt of a command task where it can run: `local` runs it with `local`.
    /// The attempt is reported started (`ResultSink::begin`, with the host) when it really
    /// starts: here at once, on a remote worker when the worker says so. A remote attempt
    /// may be handed to its connection's reader once sent ([`Ran::HandedOff`]).
    pub(crate) fn run(
        self: &Arc<Self>,
        job: &Job,
        sink: &dyn ResultSink,
        local: impl FnOnce(&str) -> Attempt,
    ) -> Ran {
        let (i, turn) = match self.acquire(job.ticket, &job.host_tags, &job.slots) {
            Ok(placed) => placed,
            Err(None) => return Ran::Ended(Attempt::not_started()),
            Err(Some(message)) => return Ran::Ended(Attempt::new(Outcome::Error).message(message)),
        };
        let (mut i, mut turn) = (i, turn);
        let mut local = Some(local);
        let (attempt, conn, ran) = loop {
            let place = &self.places[i];
            let pass = Pass(&place.turns, turn);
            if place.spec.kind == HostKind::Local {
                drop(pass);
                sink.begin(&place.name);
                let local = local.take().expect("an attempt runs here once");
                let mut attempt = local(&place.name);
                if attempt.outcome.is_success() && !attempt.suspend {
                    self.checkpoint_passed_here(job);
                }
                if attempt.outcome.is_success() && !job.outputs.is_empty() {
                    if let Err(e) = self.note_local_outputs(job) {
                        attempt.outcome = Outcome::Error;
                        attempt.message = Some(e);
                    }
                }
                break (attempt, None, None);
            }
            match self.run_remote(i, job, sink, pass) {
                Remote::Ended(attempt, conn, ran) => break (attempt, conn, ran),
                Remote::HandedOff => return Ran::HandedOff,
                Remote::Moved(to) => {
                    // Taken back from the worker's queue before it started: its room there is
                    // free, and it goes where room was reserved for it.
                    self.give_back(i, &job.slots);
                    (i, turn) = to.keep();
                }
            }
        };
        lock(&self.held).insert(
            (job.idx, job.attempt),
            Held {
                place: i,
                slots: job.slots.clone(),
                conn,
                ran,
                driven: false,
            },
        );
        Ran::Ended(attempt)
    }

    /// The end of attempt `attempt` of task `idx` is recorded: its place takes others, and a
    /// start the worker sent after its end may be reported.
    pub(crate) fn release(&self, idx: u32, attempt: u32) {
        let Some(held) = lock(&self.held).remove(&(idx, attempt)) else {
            return;
        };
        if let Some(conn) = held.conn.as_ref().filter(|_| !held.driven) {
            conn.end_recorded();
        }
        let mut slots = lock(&self.slots);
        let slot = &mut slots[held.place];
        slot.room.give_back(&held.slots);
        if let Some(ran) = held.ran {
            slot.avg = slot.avg.saturating_sub(slot.avg / 8) + ran / 8;
            if let Some(conn) = &held.conn {
                conn.set_quiet_starts(slot.avg < DEEP_AHEAD_BELOW);
            }
        }
        drop(slots);
        self.freed.ring();
    }

    /// The name of `local` for closures, which always run here.
    pub(crate) fn local_name() -> Arc<str> {
        Arc::from("local")
    }

    /// Waits for room on a place that carries `tags` and has the per-host part of `wanted`
    /// free: first a place with a free job slot (the first in the order of the hosts), else a
    /// remote place that may queue one more ahead (see [`QUEUE_AHEAD_BELOW`]); reconnects a
    /// down place whose backoff has passed on the way. Fails when no such place is left
    /// (`Some(reason)`), or on cancellation (`None`: the attempt never started).
    fn acquire(
        self: &Arc<Self>,
        ticket: Option<u64>,
        tags: &[String],
        wanted: &std::collections::BTreeMap<String, u32>,
    ) -> Result<(usize, u64), Option<String>> {
        let mut slots = lock(&self.slots);
        // The jobs handed out before this one come to be placed first.
        while let Some(t) = ticket {
            let first = lock(&self.arriving).first().copied();
            if first.is_none_or(|f| f >= t) || self.level.load(Ordering::SeqCst) != 0 {
                break;
            }
            slots = self.freed.wait_timeout(slots, TICK);
        }
        // Came: the jobs after it may be placed once this one had its pick.
        if let Some(t) = ticket {
            lock(&self.arriving).remove(&t);
            self.freed.ring();
        }
        loop {
            if self.level.load(Ordering::SeqCst) != 0 {
                self.placed(None);
                return Err(None);
            }
            let now = Instant::now();
            let mut alive = false;
            let mut retry = None;
            let mut ahead = None;
            // A place that fits and is still being connected (an ssh host being set up, a
            // pilot whose job has not started): the task waits for a free slot rather than
            // queue on a busy host, where it would stay when the other one comes up.
            let mut coming = false;
            let mut wake = now + Duration::from_secs(1);
            let mut reasons = Vec::new();
            for (i, place) in self.places.iter().enumerate() {
                let slot = &mut slots[i];
                if !tags.iter().all(|t| slot.tags.contains(t)) {
                    continue;
                }
                match &slot.status {
                    Status::Up => {
                        alive = true;
                        if slot.room.can_take(wanted) {
                            slot.room.take(wanted);
                            self.placed(None);
                            return Ok((i, place.turns.take()));
                        }
                        if ahead.is_none() && slot.room.can_hold(slot.window(), wanted) {
                            ahead = Some(i);
                        }
                    }
                    Status::Connecting => {
                        alive = true;
                        coming = true;
                    }
                    Status::Down {
                        retry_at, failures, ..
                    } => {
                        alive = true;
                        if *retry_at <= now && retry.is_none() {
                            retry = Some((i, *failures));
                        }
                        wake = wake.min(*retry_at);
                    }
                    Status::Dead(reason) => reasons.push(format!("{}: {reason}", place.name)),
                }
            }
            if let Some(i) = ahead.filter(|_| !coming) {
                slots[i].room.take(wanted);
                self.placed(None);
                return Ok((i, self.places[i].turns.take()));
            }
            if let Some((i, failures)) = retry {
                slots[i].status = Status::Connecting;
                drop(slots);
                self.connect(i, failures);
                slots = lock(&self.slots);
                continue;
            }
            if !alive {
                self.placed(None);
                let what = if tags.is_empty() {
                    String::new()
                } else {
                    format!(" with tags {}", tags.join(", "))
                };
                return Err(Some(format!(
                    "no host{what} can run it: {}",
                    reasons.join("; ")
                )));
            }
            let rest = wake.saturating_duration_since(Instant::now()).max(TICK);
            slots = self.freed.wait_timeout(slots, rest);
        }
    }

    /// The `Run` of attempt `id` of `job`, with its checkpoint as `given`.
    fn run_request<'a>(
        &self,
        id: u64,
        job: &'a Job,
        given: &'a checkpoint::Given,
    ) -> ToWorkerRef<'a> {
        ToWorkerRef::Run(RunRef {
            id,
            task: &job.name,
            attempt: job.attempt,
            shared: job.shared(),
            timeout_ms: job.timeout.map(|t| t.as_millis() as u64),
            grace_ms: self.grace.as_millis() as u64,
            outputs: &job.outputs,
            checkpoint: given.shared(),
            checkpoint_key: given.key(),
        })
    }

    /// [`Hosts::acquire`] for a job that must not wait: place `i`'s room taken, and its turn,
    /// if the place is up and has room now, no job handed out before this one is still to be
    /// placed and no attempt placed there before is still to send its `Run`.
    fn place_at_once(&self, i: usize, job: &Job) -> Option<u64> {
        let mut slots = lock(&self.slots);
        if let Some(t) = job.ticket {
            if lock(&self.arriving).first().is_some_and(|&f| f < t) {
                return None;
            }
        }
        let slot = &mut slots[i];
        let fits = matches!(slot.status, Status::Up)
            && job.host_tags.iter().all(|t| slot.tags.contains(t))
            && (slot.room.can_take(&job.slots) || slot.room.can_hold(slot.window(), &job.slots));
        if !fits {
            return None;
        }
        let turn = self.places[i].turns.take_first()?;
        slot.room.take(&job.slots);
        self.placed(job.ticket);
        drop(slots);
        // The jobs handed out after this one may be placed now.
        self.freed.ring();
        Some(turn)
    }

    /// A promised job is placed or given up ([`Hosts::promise`]); under the lock of `slots`.
    fn placed(&self, ticket: Option<u64>) {
        let promised = self.promised.load(Ordering::SeqCst);
        self.promised
            .store(promised.saturating_sub(1), Ordering::SeqCst);
        if let Some(t) = ticket {
            lock(&self.arriving).remove(&t);
        }
    }

    /// Gives back the room an attempt held on place `i`, for others.
    fn give_back(&self, i: usize, wanted: &std::collections::BTreeMap<String, u32>) {
        lock(&self.slots)[i].room.give_back(wanted);
        self.freed.ring();
    }

    /// Room for `job` on a place other than `besides` that is up and can start it now, taken
    /// (with a turn there): where an attempt waiting in a busy worker's queue may move.
    fn room_elsewhere<'a>(&'a self, besides: usize, job: &'a Job) -> Option<Reserved<'a>> {
        if self.level.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let mut slots = lock(&self.slots);
        let i = (0..self.places.len()).find(|&i| {
            let slot = &slots[i];
            i != besides
                && matches!(slot.status, Status::Up)
                && job.host_tags.iter().all(|t| slot.tags.contains(t))
                && slot.room.can_take(&job.slots)
        })?;
        slots[i].room.take(&job.slots);
        slots[i].reserved += 1;
        Some(Reserved {
            hosts: self,
            place: i,
            turn: self.places[i].turns.take(),
            wanted: &job.slots,
        })
    }

    /// Runs an attempt on remote place `i`. Returns the attempt, the connection if its `Done`
    /// came through it, and how long it ran if it started; or the place it moves to, when it
    /// waited in the worker's queue past [`MOVE_AFTER`] while another place had room for it.
    fn run_remote<'a>(
        &'a self,
        i: usize,
        job: &'a Job,
        sink: &dyn ResultSink,
        pass: Pass<'_>,
    ) -> Remote<'a> {
        let place = &self.places[i];
        let conn = lock(&place.conn).clone();
        let Some(conn) = conn.filter(|c| c.is_alive()) else {
            return Remote::Ended(Attempt::not_started(), None, None);
        };
        // An attempt that fails before it is sent is reported where it was placed.
        let failed = |message: String| {
            sink.begin(&place.name);
            Remote::Ended(Attempt::new(Outcome::Error).message(message), None, None)
        };
        if let Err(e) = self.push_outputs(&conn) {
            return failed(e);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = conn::mailbox();
        if !conn.expect(id, tx) {
            return Remote::Ended(Attempt::not_started(), None, None);
        }
        let given = match self.checkpoint_before(place, &conn, job, id, &rx) {
            Ok(given) => given,
            Err(attempt) => {
                conn.forget(id);
                if attempt.host_lost.is_some() {
                    // Lost before the attempt was even sent.
                    return Remote::Ended(Attempt::not_started(), None, None);
                }
                sink.begin(&place.name);
                return Remote::Ended(*attempt, None, None);
            }
        };
        let request = self.run_request(id, job, &given);
        // Handed to the reader before the `Run` goes, so that the reader knows whom its
        // frames are for.
        let driven = self.may_hand_off(!job.outputs.is_empty()) && {
            let d = driven::Driven {
                idx: job.idx,
                attempt: job.attempt,
                place: i,
                host: place.name.clone(),
                slots: job.slots.clone(),
                given: given.clone(),
                started: None,
                sent: 0,
            };
            if !conn.drive(id, d) {
                // Lost meanwhile.
                return Remote::Ended(Attempt::not_started(), None, None);
            }
            true
        };
        // The attempts placed here before this one send theirs first.
        place.turns.wait(pass.1, || {
            self.level.load(Ordering::SeqCst) != 0 || !conn.is_alive()
        });
        let sent = conn.send_with(|w| protocol::send(w, &request));
        drop(pass);
        if let (true, Ok(end)) = (driven, &sent) {
            conn.sent_to(id, *end);
        }
        // Any other error is a broken connection: the reader notices and tells this attempt.
        if let Err(
            e @ (protocol::ChannelError::TooLarge { .. } | protocol::ChannelError::Encode(_)),
        ) = sent
        {
            conn.forget(id);
            return failed(format!(
                "cannot send the attempt: {}",
                crate::error::error_chain(&e)
            ));
        }
        if driven {
            return Remote::HandedOff;
        }
        // Until the worker says it started, the attempt waits in the worker's queue.
        let sent_at = Instant::now();
        let mut started: Option<Instant> = None;
        // Room taken elsewhere while this attempt is being taken back from the queue here.
        let mut moving: Option<Reserved<'a>> = None;
        let lost = |started: Option<Instant>, reason: String| {
            if started.is_some() {
                Remote::Ended(Attempt::lost(reason), None, None)
            } else {
                // It never started (or its start was not reported): back to the queue.
                Remote::Ended(Attempt::not_started(), None, None)
            }
        };
        loop {
            let wait = match (started, &moving) {
                // Its start may have come without a word (see `Conn::set_quiet_starts`).
                (None, _) if conn.quiet_starts() => QUIET_START_LAG,
                (None, None) => MOVE_AFTER,
                _ => Duration::from_secs(1),
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Started(ends, at)) => {
                    // It started here after all: the room taken elsewhere goes back.
                    moving = None;
                    // Reported once the ends the worker sent before are recorded.
                    if !conn.wait_recorded(ends) {
                        return lost(None, String::new());
                    }
                    sink.begin(&place.name);
                    started = Some(at);
                }
                Ok(Msg::Dropped) => {
                    return match moving {
                        Some(to) if self.level.load(Ordering::SeqCst) == 0 => Remote::Moved(to),
                        // Dropped by a cancel.
                        _ => Remote::Ended(Attempt::not_started(), None, None),
                    };
                }
                Ok(Msg::Result(status, message)) => sink.result(status, message),
                Ok(Msg::Done(done)) => {
                    let started = started.unwrap_or_else(|| {
                        sink.begin(&place.name);
                        Instant::now()
                    });
                    let attempt = self.ended(&conn, place, &given, *done, started);
                    let ran = attempt.duration;
                    return Remote::Ended(attempt, Some(conn), Some(ran));
                }
                Ok(Msg::Lost(reason)) => return lost(started, reason),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    if started.is_none() && moving.is_none() && sent_at.elapsed() >= MOVE_AFTER =>
                {
                    // Still queued behind longer attempts while a place has room: take it
                    // back, unless it starts first.
                    if let Some(to) = self.room_elsewhere(i, job) {
                        let unqueue = ToWorker::Unqueue { id };
                        if conn.send_with(|w| protocol::send(w, &unqueue)).is_ok() {
                            moving = Some(to);
                        }
                    }
                }
                Ok(Msg::Need(_)) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return lost(started, "the connection closed".into())
                }
            }
        }
    }

    /// The attempt a worker's `Done` reports, timed from `started`: its outputs written into
    /// the tree and its checkpoint taken in (an error if either cannot be) before its end is
    /// recorded, so that the journal sees what the task saved.
    fn ended(
        &self,
        conn: &Conn,
        place: &Place,
        given: &checkpoint::Given,
        done: conn::Done,
        started: Instant,
    ) -> Attempt {
        let mut attempt = Attempt::new(done.outcome);
        attempt.message = done.message;
        attempt.exports = done.exports;
        attempt.exit_code = done.exit_code;
        attempt.output = done.output.map(Box::new);
        attempt.suspend = done.suspend;
        if let Err(e) = self.take_outputs(conn, done.files) {
            attempt.outcome = Outcome::Error;
            attempt.message = Some(e);
        }
        if let Err(e) = self.checkpoint_after(place, given, done.checkpoint) {
            attempt.outcome = Outcome::Error;
            attempt.message = Some(e);
        }
        attempt.duration = started.elapsed();
        attempt
    }

    /// Writes a finished task's outputs into the local tree; remembers them for other hosts.
    fn take_outputs(&self, conn: &Conn, files: Vec<(FileEntry, Vec<u8>)>) -> Result<(), String> {
        if files.is_empty() {
            return Ok(());
        }
        let root = self
            .tree
            .as_ref()
            .ok_or("outputs came back, but the run has no tree to put them in")?;
        let mut outputs = lock(&self.outputs);
        let mut known = lock(&conn.known);
        for (entry, bytes) in files {
            tree::write_file(root, &entry.path, entry.mode, &bytes)
                .map_err(|e| format!("cannot copy back output {}: {e}", entry.path))?;
            known.insert(entry.path.clone(), entry.hash.clone());
            outputs.insert(entry.path.clone(), entry);
        }
        Ok(())
    }

    /// Outputs written by a task that ran here: hosts of its dependents get them too.
    fn note_local_outputs(&self, job: &Job) -> Result<(), String> {
        let (Some(root), Work::Command(spec)) = (&self.tree, &job.work) else {
            return Ok(());
        };
        let cwd = spec.cwd.clone().unwrap_or_else(|| root.clone());
        let paths = tree::outputs(root, &cwd, &job.outputs)?;
        let mut outputs = lock(&self.outputs);
        for rel in paths {
            let entry = tree::entry(root, rel.clone())
                .map_err(|e| format!("cannot read output {rel}: {e}"))?;
            outputs.insert(rel, entry);
        }
        Ok(())
    }

    /// Sends the outputs copied back during the run that this host does not have yet, so
    /// that a dependent finds its providers' outputs wherever it runs.
    fn push_outputs(&self, conn: &Conn) -> Result<(), String> {
        let outputs = lock(&self.outputs);
        if outputs.is_empty() {
            return Ok(());
        }
        let Some(root) = &self.tree else {
            return Ok(());
        };
        let mut known = lock(&conn.known);
        for (path, entry) in outputs.iter() {
            if known.get(path) == Some(&entry.hash) {
                continue;
            }
            let bytes = std::fs::read(root.join(path))
                .map_err(|e| format!("cannot read output {path} to send it: {e}"))?;
            let sent = conn.send_with(|w| {
                protocol::send(
                    w,
                    &ToWorker::File {
                        path: path.clone(),
                        mode: entry.mode,
                        size: bytes.len() as u64,
                    },
                )?;
                protocol::send_file(w, &bytes)
            });
            if sent.is_ok() {
                known.insert(path.clone(), entry.hash.clone());
            }
        }
        Ok(())
    }

    /// Cancellation reaches every host: TERM, grace, KILL there (or KILL at once).
    pub(crate) fn cancel(&self, kill: bool) {
        self.level
            .fetch_max(if kill { 2 } else { 1 }, Ordering::SeqCst);
        for place in &self.places {
            place.setup.cancel();
            // Not under the place's lock: the connection's reader may hold the writer while
            // it places attempts (see `Hosts::carry`).
            let conn = lock(&place.conn).clone();
            if let Some(conn) = conn {
                let _ = conn.send_with(|w| protocol::send(w, &ToWorker::Cancel { kill }));
            }
        }
        if let Some(p) = &self.pilots {
            p.cancel();
        }
        self.freed.ring_always();
    }

    /// The run is over: every connection is closed in order (workers end their tasks).
    pub(crate) fn shutdown(&self) {
        for place in &self.places {
            let conn = lock(&place.conn).take();
            if let Some(conn) = conn {
                conn.close();
            }
        }
        if let Some(p) = &self.pilots {
            p.shutdown();
        }
    }
}

/// Releases idle pilot workers (see [`Hosts::release_idle`]) until the run ends.
fn watch_idle(hosts: &std::sync::Weak<Hosts>, limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut seen = Vec::new();
    loop {
        std::thread::sleep(tick);
        let Some(hosts) = hosts.upgrade() else {
            return;
        };
        let over = hosts.level.load(Ordering::SeqCst) != 0
            || hosts.pilots.as_ref().is_none_or(|p| p.is_closed());
        if over {
            return;
        }
        hosts.release_idle(limit, &mut seen);
    }
}

/// Whether a task may run on another machine: commands, and closures of the process pool
/// (the embedding binary is shipped and serves them); closures on threads run here.
pub(crate) fn remote_ok(t: &Task, default_pool: crate::task::PoolKind) -> bool {
    match t.work {
        Work::Command(_) => true,
        Work::Closure(_) => {
            t.meta.more.pool.unwrap_or(default_pool) == crate::task::PoolKind::Processes
        }
    }
}

/// Tasks that no place can take for their `host_tags` (`None` tags: a place that may carry
/// any). Closures on threads run on this machine only.
fn no_host_for(
    tasks: &[Task],
    remote: &dyn Fn(&Task) -> bool,
    places: &[(HostKind, Option<&[String]>)],
) -> Vec<GraphError> {
    let mut errors = Vec::new();
    for t in tasks.iter().filter(|t| !t.meta.more.host_tags.is_empty()) {
        let remote = remote(t);
        let fits = places.iter().any(|(kind, tags)| {
            (*kind == HostKind::Local || remote)
                && tags.is_none_or(|tags| t.meta.more.host_tags.iter().all(|g| tags.contains(g)))
        });
        if !fits {
            errors.push(GraphError::NoHost {
                task: t.name.clone(),
                tags: t.meta.more.host_tags.to_vec(),
            });
        }
    }
    errors
}
