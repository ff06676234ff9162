//! Run state that outlives the process: the journal of finished tasks, task fingerprints, and
//! the resume decision that combines them (SPEC section 6).

pub mod checkpoint;
pub mod fingerprint;
pub mod journal;
mod persist;
pub mod resume;

pub use checkpoint::Checkpoints;
pub use fingerprint::{fingerprints, Digest, Fingerprint};
pub use journal::{Journal, JournalEntry, JournalError, LoadedJournal};
pub use persist::RunJournal;
pub use resume::{decide, Decision, Explanation, Reason, Verdict};
