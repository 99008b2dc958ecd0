//! The typed columns of the state file: each enum is stored as its name (TEXT) in one column, and
//! read back with `parse`; a name that is no value of the enum is an error naming the column and
//! the text (the store answers it as [`super::StoreError::Corrupt`]), never a panic.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::domain::{
    AttemptOutcome, CheckpointFormat, CheckpointState, LeaseState, SweepState, TaskState,
};

/// A checkpoint's format as the `checkpoints.format` column stores it (the format itself is
/// herd-rpc's, shared with the worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StoredFormat(pub CheckpointFormat);

/// Text in a typed column that names no value of its enum.
#[derive(Debug)]
pub(super) struct UnknownName {
    column: &'static str,
    text: String,
    names: Vec<&'static str>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} holds {:?}, which is none of {}",
            self.column,
            self.text,
            self.names.join(", ")
        )
    }
}

impl std::error::Error for UnknownName {}

/// `ToSql` / `FromSql` for each enum, stored in the column named beside it.
macro_rules! stored_by_name {
    ($($ty:ident in $column:literal),+ $(,)?) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $ty::parse(text).ok_or_else(|| {
                    FromSqlError::Other(Box::new(UnknownName {
                        column: $column,
                        text: text.to_owned(),
                        names: $ty::ALL.iter().map(|v| v.as_str()).collect(),
                    }))
                })
            }
        }
    )+};
}

impl StoredFormat {
    const ALL: &'static [StoredFormat] = &[
        StoredFormat(CheckpointFormat::EasyLm),
        StoredFormat(CheckpointFormat::HuggingFace),
    ];

    fn as_str(self) -> &'static str {
        self.0.as_str()
    }

    fn parse(text: &str) -> Option<Self> {
        CheckpointFormat::parse(text).map(StoredFormat)
    }
}

stored_by_name! {
    SweepState in "sweeps.state",
    CheckpointState in "checkpoints.state",
    StoredFormat in "checkpoints.format",
    TaskState in "tasks.state",
    LeaseState in "leases.state",
    AttemptOutcome in "attempts.outcome",
}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection};

    use super::*;
    use crate::state::StoreError;

    #[test]
    fn every_checkpoint_format_is_stored_and_read_back() {
        let stored: Vec<CheckpointFormat> = StoredFormat::ALL.iter().map(|f| f.0).collect();
        assert_eq!(
            stored,
            CheckpointFormat::ALL,
            "a format the state file cannot name"
        );
        let conn = Connection::open_in_memory().unwrap();
        for format in CheckpointFormat::ALL {
            let back: StoredFormat = conn
                .query_row("SELECT ?1", params![StoredFormat(*format)], |r| r.get(0))
                .unwrap();
            assert_eq!(back.0, *format);
        }
    }

    #[test]
    fn a_stored_name_reads_back_as_its_value_and_an_unknown_one_is_corrupt() {
        let conn = Connection::open_in_memory().unwrap();
        for state in TaskState::ALL {
            let back: TaskState = conn
                .query_row("SELECT ?1", params![state], |r| r.get(0))
                .unwrap();
            assert_eq!(back, *state);
        }
        let err: StoreError = conn
            .query_row("SELECT 'leasd'", [], |r| r.get::<_, TaskState>(0))
            .unwrap_err()
            .into();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "state file: tasks.state holds \"leasd\", which is none of pending, leased, done, \
             failed, cancelled"
        );
        // not text at all: a SQLite type error, not a panic
        let err: StoreError = conn
            .query_row("SELECT 7", [], |r| r.get::<_, TaskState>(0))
            .unwrap_err()
            .into();
        assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    }
}
