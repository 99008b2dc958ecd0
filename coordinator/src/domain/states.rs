//! The closed sets of states a sweep, checkpoint, task, lease, attempt and worker go through, and
//! Each value has one name: the text the state file keeps (see
//! `state::states` for how it is read back), what logs print and what `coord status` shows.

/// Declares each enum with `ALL`, `as_str` (its name), `parse` (the value of a name) and
/// `Display` (the name).
macro_rules! named_values {
    ($(
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    )+) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value named `text`, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

named_values! {
    /// A sweep is active until no task of it is pending or leased.
    pub enum SweepState {
        /// tasks are pending or leased
        Active = "active",
        /// every task is done or failed (its reports are due)
        Done = "done",
        Cancelled = "cancelled",
    }

    /// Derived from the checkpoint's tasks.
    pub enum CheckpointState {
        /// no task of it leased yet
        Pending = "pending",
        /// a task of it has been leased
        Running = "running",
        /// every task done: its results are complete
        Done = "done",
        /// a task failed for good, or the checkpoint itself is bad
        Failed = "failed",
        Cancelled = "cancelled",
    }

    /// One checkpoint x one shard of the evaluation set.
    pub enum TaskState {
        /// waiting for a lease (after its backoff, if it failed before)
        Pending = "pending",
        /// at least one live lease
        Leased = "leased",
        /// completed by one of its leases
        Done = "done",
        /// failed for good (max attempts, or its checkpoint failed)
        Failed = "failed",
        Cancelled = "cancelled",
    }

    /// One lease (task, epoch); only an active lease may stream results and complete.
    pub enum LeaseState {
        Active = "active",
        /// no heartbeat before its deadline
        Expired = "expired",
        /// handed back by its worker (draining)
        Released = "released",
        /// its worker reported a failure
        Failed = "failed",
        /// it completed its task
        Done = "done",
        /// taken away: the task was completed by another lease, its checkpoint failed or its
        /// sweep was cancelled
        Revoked = "revoked",
    }

    /// What became of one lease's attempt at its task (`coord status` shows the failures).
    pub enum AttemptOutcome {
        Running = "running",
        Done = "done",
        /// completed after another lease of the same task had completed it
        Duplicate = "duplicate",
        Expired = "expired",
        /// a failure that may not happen again (network, out of memory, preemption)
        Transient = "transient",
        /// the checkpoint itself is bad or gone
        Checkpoint = "checkpoint",
        Released = "released",
        Revoked = "revoked",
        Cancelled = "cancelled",
    }

    /// Derived from a worker's heartbeats and leases when asked.
    pub enum WorkerState {
        /// heard from, holds no lease
        Idle = "idle",
        /// heard from, holds a lease
        Busy = "busy",
        /// got SIGTERM: finishes what it holds, takes nothing new
        Draining = "draining",
        /// not heard from within the lease timeout
        Lost = "lost",
    }
}

impl AttemptOutcome {
    /// The state of the lease whose attempt has this outcome: a running attempt's lease is
    /// active, a duplicate's was revoked when the other lease completed, and a failure's lease
    /// failed.
    pub fn lease_state(self) -> LeaseState {
        match self {
            AttemptOutcome::Running => LeaseState::Active,
            AttemptOutcome::Done => LeaseState::Done,
            AttemptOutcome::Expired => LeaseState::Expired,
            AttemptOutcome::Transient | AttemptOutcome::Checkpoint => LeaseState::Failed,
            AttemptOutcome::Released => LeaseState::Released,
            AttemptOutcome::Duplicate | AttemptOutcome::Revoked | AttemptOutcome::Cancelled => {
                LeaseState::Revoked
            }
        }
    }

    /// The outcomes `coord status` lists as failures (each cost an attempt).
    pub const FAILURES: [AttemptOutcome; 3] = [
        AttemptOutcome::Expired,
        AttemptOutcome::Transient,
        AttemptOutcome::Checkpoint,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_its_value_and_names_are_unique() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            name: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            let mut names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            for v in all {
                assert_eq!(parse(name(*v)), Some(*v));
            }
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all.len(), "a name is used twice: {all:?}");
        }
        check(SweepState::ALL, SweepState::as_str, SweepState::parse);
        check(
            CheckpointState::ALL,
            CheckpointState::as_str,
            CheckpointState::parse,
        );
        check(TaskState::ALL, TaskState::as_str, TaskState::parse);
        check(LeaseState::ALL, LeaseState::as_str, LeaseState::parse);
        check(
            AttemptOutcome::ALL,
            AttemptOutcome::as_str,
            AttemptOutcome::parse,
        );
        check(WorkerState::ALL, WorkerState::as_str, WorkerState::parse);
        assert_eq!(TaskState::parse("Pending"), None);
        assert_eq!(TaskState::parse(""), None);
    }
}
