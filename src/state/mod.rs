//! Run state that outlives the process: the journal of finished tasks, task fingerprints, and
//! the resume decision that combines them (SPEC section 6); the lock that keeps one run per state
//! directory, and the record of running tasks that lets a run end what a killed one left.

pub mod checkpoint;
pub mod fingerprint;
pub mod journal;
pub mod live;
pub mod lock;
mod persist;
pub mod resume;

pub use checkpoint::Checkpoints;
pub use fingerprint::{fingerprints, Digest, Fingerprint};
pub use journal::{Journal, JournalEntry, JournalError, LoadedJournal};
pub use live::LiveRecord;
pub use lock::StateLock;
pub use persist::RunJournal;
pub use resume::{decide, Decision, Explanation, Reason, Verdict};
