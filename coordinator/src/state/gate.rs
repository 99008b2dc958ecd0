//! The write gate: one writer at a time on the state file's write connection, admitted from two
//! lanes. Scheduling writes (Register, Lease, Heartbeat, Complete, Fail, reaping, Submit, Cancel)
//! are short and a worker is idle while it waits for one; result ingestion is bulk. While a
//! scheduling writer waits, no ingest writer is admitted: a scheduling write waits for at most
//! the one write in progress plus the scheduling writes ahead of it, however many ingest writes
//! are queued. Within a lane the order is the condition variable's wake order.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Which queue a writer waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// short writes a worker waits on: admitted before any waiting ingest writer
    Scheduling,
    /// result ingestion: admitted only while no scheduling writer waits
    Ingest,
}

impl Lane {
    fn slot(self) -> usize {
        match self {
            Lane::Scheduling => 0,
            Lane::Ingest => 1,
        }
    }
}

#[derive(Default)]
struct GateState {
    /// a writer is inside
    held: bool,
    /// writers waiting to enter, per lane
    waiting: [usize; 2],
}

/// See the module documentation.
#[derive(Default)]
pub struct WriteGate {
    state: Mutex<GateState>,
    scheduling: Condvar,
    ingest: Condvar,
}

/// Being inside the gate; dropping it lets the next writer in.
pub struct Pass<'a> {
    gate: &'a WriteGate,
}

impl WriteGate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn condvar(&self, lane: Lane) -> &Condvar {
        match lane {
            Lane::Scheduling => &self.scheduling,
            Lane::Ingest => &self.ingest,
        }
    }

    /// Waits until this writer may write: the gate is free and, for an ingest writer, no
    /// scheduling writer is waiting.
    pub fn enter(&self, lane: Lane) -> Pass<'_> {
        let mut state = self.state();
        state.waiting[lane.slot()] += 1;
        while state.held || (lane == Lane::Ingest && state.waiting[Lane::Scheduling.slot()] > 0) {
            state = self
                .condvar(lane)
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.waiting[lane.slot()] -= 1;
        state.held = true;
        Pass { gate: self }
    }

    /// Spins (without sleeping) until `n` writers wait to enter; returns how many wait in each
    /// lane, (scheduling, ingest).
    #[cfg(test)]
    pub fn until_queued(&self, n: usize) -> (usize, usize) {
        loop {
            let [scheduling, ingest] = self.state().waiting;
            if scheduling + ingest >= n {
                return (scheduling, ingest);
            }
            std::thread::yield_now();
        }
    }

    #[cfg(test)]
    fn held(&self) -> bool {
        self.state().held
    }
}

impl Drop for Pass<'_> {
    /// Every release wakes one waiter of the lane that goes next, so no waiter is left asleep at
    /// a free gate (a woken waiter that finds the gate taken again is woken by that holder's
    /// release in turn).
    fn drop(&mut self) {
        let mut state = self.gate.state();
        state.held = false;
        if state.waiting[Lane::Scheduling.slot()] > 0 {
            self.gate.scheduling.notify_one();
        } else if state.waiting[Lane::Ingest.slot()] > 0 {
            self.gate.ingest.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::thread;

    use super::*;

    /// Starts a thread that enters the gate in `lane`, reports `name` once inside and leaves.
    fn writer(
        gate: &Arc<WriteGate>,
        lane: Lane,
        name: &'static str,
        entered: &mpsc::Sender<&'static str>,
    ) -> thread::JoinHandle<()> {
        let gate = gate.clone();
        let entered = entered.clone();
        thread::spawn(move || {
            let _pass = gate.enter(lane);
            entered.send(name).unwrap();
        })
    }

    #[test]
    fn a_scheduling_writer_enters_ahead_of_queued_ingest_writers() {
        let gate = Arc::new(WriteGate::default());
        let (entered, order) = mpsc::channel();
        // an ingest write in progress, three more queued behind it
        let held = gate.enter(Lane::Ingest);
        let mut threads: Vec<_> = ["ingest 1", "ingest 2", "ingest 3"]
            .into_iter()
            .map(|name| writer(&gate, Lane::Ingest, name, &entered))
            .collect();
        assert_eq!(gate.until_queued(3), (0, 3));
        // a lease arrives last
        threads.push(writer(&gate, Lane::Scheduling, "lease", &entered));
        assert_eq!(gate.until_queued(4), (1, 3));
        assert!(
            order.try_recv().is_err(),
            "nobody enters while the gate is held"
        );
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        let order: Vec<_> = order.try_iter().collect();
        assert_eq!(order.len(), 4, "every writer got in: {order:?}");
        assert_eq!(order[0], "lease", "order of entry: {order:?}");
        assert_eq!(gate.until_queued(0), (0, 0));
    }

    #[test]
    fn a_scheduling_writer_enters_ahead_of_an_ingest_writer_queued_before_it() {
        let gate = Arc::new(WriteGate::default());
        let (entered, order) = mpsc::channel();
        // a scheduling write in progress, an ingest writer queued, then a heartbeat
        let held = gate.enter(Lane::Scheduling);
        let ingest = writer(&gate, Lane::Ingest, "ingest", &entered);
        assert_eq!(gate.until_queued(1), (0, 1));
        let heartbeat = writer(&gate, Lane::Scheduling, "heartbeat", &entered);
        assert_eq!(gate.until_queued(2), (1, 1));
        drop(held);
        heartbeat.join().unwrap();
        ingest.join().unwrap();
        let order: Vec<_> = order.try_iter().collect();
        assert_eq!(order, ["heartbeat", "ingest"]);
    }

    #[test]
    fn the_gate_is_released_when_a_writer_panics_inside() {
        let gate = Arc::new(WriteGate::default());
        let inside = gate.clone();
        let panicked = thread::spawn(move || {
            let _pass = inside.enter(Lane::Ingest);
            assert!(inside.held());
            panic!("a failing write");
        })
        .join();
        assert!(panicked.is_err());
        assert!(!gate.held(), "the pass is dropped while unwinding");
    }
}
