//! One module per read-only or maintenance command: `releases`, `status`, `check`,
//! `unlock`, `log`, `recipes`. Each turns its arguments into reads (and, for `unlock`,
//! the one write it makes) and an `Outcome`.

mod check;
mod log;
pub mod recipes;
mod releases;
mod status;
mod unlock;

pub use check::{Finding, check, judge};
pub use log::{LogEntry, SavedHeads, log, merge_logs, parse_since, saved_heads, verify_log};
pub use releases::releases;
pub use status::status;
pub use unlock::unlock;
