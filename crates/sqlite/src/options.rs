//! How a [`SqliteLog`](crate::SqliteLog) is opened: durability level and the sizes of the
//! reader pool and of one group commit.

use std::fmt;
use std::str::FromStr;

/// Tuning for [`SqliteLog::open`](crate::SqliteLog::open). Every field has a safe default.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How hard a commit waits for the disk; see [`Synchronous`].
    pub synchronous: Synchronous,
    /// Read-only connections kept for `read`, `topics` and `position_before`: at most this
    /// many reads run at once, each on a blocking thread.
    pub readers: usize,
    /// Most events the writer puts in one transaction (one fsync). A single append larger
    /// than this still runs, alone.
    pub max_batch_events: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            readers: 4,
            max_batch_events: 10_000,
        }
    }
}

/// SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is fsynced before the append returns: an acknowledged event survives
    /// a power cut, which is what a 2xx from the server promises.
    #[default]
    Full,
    /// Commits are fsynced at checkpoints only: an acknowledged event survives a crash of
    /// the process but maybe not of the machine. Faster; only when asked for.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

impl fmt::Display for Synchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        })
    }
}

/// A `synchronous` setting other than `full` or `normal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown synchronous mode {0:?} (expected \"full\" or \"normal\")")]
pub struct ParseSynchronousError(pub String);

impl FromStr for Synchronous {
    type Err = ParseSynchronousError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("full") {
            Ok(Synchronous::Full)
        } else if s.eq_ignore_ascii_case("normal") {
            Ok(Synchronous::Normal)
        } else {
            Err(ParseSynchronousError(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_parses_and_defaults_to_full() {
        assert_eq!("full".parse(), Ok(Synchronous::Full));
        assert_eq!("NORMAL".parse(), Ok(Synchronous::Normal));
        assert!("off".parse::<Synchronous>().is_err());
        assert_eq!(SqliteOptions::default().synchronous, Synchronous::Full);
        assert_eq!(Synchronous::Normal.to_string(), "normal");
    }
}
