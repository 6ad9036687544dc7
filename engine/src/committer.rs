//! Group commit: one thread makes every write of the engine durable — new
//! submissions and step results alike — in as few store transactions (and
//! so as few syncs) as the load allows. A step's execution runs again, and a
//! submitter gets its answer, only once the transaction holding it is
//! durable. A store that can leave the sync to the engine
//! ([`WriteTxn::commit_unsynced`]) has it run on a second thread, the
//! syncer, while the committer fills the next transaction: the answers of
//! a transaction wait for its sync, the statements of the next do not.
//!
//! Retention's deletes come in slices and wait in a queue of their own.
//! They go first into time the writer would spend waiting: a transaction
//! gathering the steps still running (until its deadline) deletes a slice
//! whenever nothing is queued, and a transaction with nothing else to
//! write deletes up to `IDLE_PRUNE_IDS`. The transactions of the load owe
//! retention `PRUNE_SHARE_PERCENT` of the executions they finish, minus
//! what was deleted in that spare time: a writer with time to spare
//! deletes while it would have waited anyway, and a busy one spreads the
//! deletes over every commit instead of lengthening a few by a whole
//! batch. Either way pruning keeps pace with the load.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::oneshot;

use super::scheduler::Next;
use super::{Active, Engine};
use crate::model::{NewExecution, RoundCommit};
use crate::store::{InsertOutcome, PendingSync, PrunedRows, StoreResult, WriteTxn};

/// What a submitter gets back: its executions and what inserting each did.
pub(crate) type SubmitReply = StoreResult<(Vec<NewExecution>, Vec<InsertOutcome>)>;

/// What retention gets back: the executions deleted and the rows per table.
pub(crate) type PruneReply = StoreResult<(Vec<String>, PrunedRows)>;

/// A write for the committer.
pub(crate) enum CommitMsg {
    /// A step's result and its execution, which goes on with `Next` (home
    /// to the scheduler) once the result is durable.
    Step(Box<RoundCommit>, Next, Box<Active>),
    /// New executions; the answer goes back on the sender once durable.
    Submit(Vec<NewExecution>, oneshot::Sender<SubmitReply>),
    /// Retention: delete these terminal executions (one slice) in a
    /// coming transaction (no sync of their own); the answer once durable.
    Prune(Vec<String>, Sender<PruneReply>),
    /// Commit what is pending and stop.
    Stop,
}

/// A committed transaction waiting for its sync, with what to answer once
/// it is durable.
struct Sealed {
    sync: PendingSync,
    pending: Pending,
    outcomes: Vec<InsertOutcome>,
    /// When its commit started (the commit latency ends at the sync).
    started: Instant,
}

/// Longest pause between two tries of a failed sync.
const SYNC_RETRY_MAX: Duration = Duration::from_secs(1);

/// Executions a transaction deletes, in percent of those it finishes, when
/// retention's slices wait: more than 100 so a pass catches up with what
/// finished while it slept; not much more, since a delete costs the writer
/// about half of what creating and running the execution did (measured
/// with `kozmo bench --only retention`) and the commits carrying them
/// are that much longer.
const PRUNE_SHARE_PERCENT: usize = 125;

/// Most executions owed to retention carried from one transaction to the
/// next (a few slices): what a burst of small transactions saved up.
const MAX_PRUNE_CREDIT: isize = 64;

/// Most executions deleted in the writer's spare time (while a transaction
/// gathers, or in one with nothing else to write) ahead of the load's
/// share: once the writer is busy, its transactions delete again after
/// that many more finished.
const MAX_PRUNE_AHEAD: isize = 4 * IDLE_PRUNE_IDS as isize;

/// Executions a transaction with nothing else in it deletes at most (a
/// step arriving meanwhile waits for at most this much deleting).
const IDLE_PRUNE_IDS: usize = 64;

/// A retention slice waiting for a transaction.
type PruneSlice = (Vec<String>, Sender<PruneReply>);

/// Writes gathered for one transaction.
#[derive(Default)]
struct Pending {
    steps: Vec<RoundCommit>,
    jobs: Vec<(Box<Active>, Next)>,
    news: Vec<NewExecution>,
    /// One per submitter: how many of `news` are theirs, in order.
    submitters: Vec<(usize, oneshot::Sender<SubmitReply>)>,
    /// Retention's deletes in this transaction, and what applying each did.
    prunes: Vec<(Vec<String>, Sender<PruneReply>, Option<PruneReply>)>,
    /// Retention's slices not yet in a transaction, oldest first (they stay
    /// when the transaction is sealed).
    waiting_prunes: VecDeque<PruneSlice>,
    /// Executions owed to retention by the transactions so far; below
    /// zero, what the writer's spare time deleted ahead of the share (kept
    /// when the transaction is sealed).
    prune_credit: isize,
}

impl Pending {
    fn len(&self) -> usize {
        self.steps.len() + self.news.len() + self.prunes.len()
    }

    /// Moves waiting retention slices into this transaction, whole ones.
    /// With no other write in it, up to `IDLE_PRUNE_IDS` (or what is owed,
    /// if more), taken off what the load owes. Otherwise what the load
    /// owes: `PRUNE_SHARE_PERCENT` of the executions it finishes (at least
    /// one), counted in a credit that carries over (a transaction finishing
    /// 5 adds 6, a slice of 16 goes once 16 are owed, so small transactions
    /// do not delete more than large ones) and that deletes in spare time
    /// lower (see [`Pending::take_slice_ahead`]), down to
    /// `-MAX_PRUNE_AHEAD`: a writer with time to spare deletes there, and
    /// the load's transactions delete only what it leaves.
    fn take_prunes(&mut self) {
        if self.waiting_prunes.is_empty() {
            self.prune_credit = 0;
            return;
        }
        let budget = if self.news.is_empty() && self.steps.is_empty() {
            self.prune_credit.max(IDLE_PRUNE_IDS as isize)
        } else {
            let finished = self.steps.iter().filter(|c| c.state.phase.is_terminal()).count();
            // At least one: under a load that finishes nothing (long-running
            // executions only) the pass still moves on.
            let owed = (finished * PRUNE_SHARE_PERCENT / 100).max(1) as isize;
            self.prune_credit = (self.prune_credit + owed).min(owed.max(MAX_PRUNE_CREDIT));
            self.prune_credit
        };
        let mut taken = 0;
        while let Some((ids, _)) = self.waiting_prunes.front() {
            if (taken + ids.len()) as isize > budget {
                break;
            }
            taken += self.take_front_slice();
        }
        self.prune_credit = (self.prune_credit - taken as isize).max(-MAX_PRUNE_AHEAD);
    }

    /// Moves the oldest waiting slice into this transaction ahead of what
    /// the load owes (the writer has time to spare), unless the deletes
    /// are `MAX_PRUNE_AHEAD` ahead already; whether it did.
    fn take_slice_ahead(&mut self) -> bool {
        if self.prune_credit <= -MAX_PRUNE_AHEAD || self.waiting_prunes.is_empty() {
            return false;
        }
        let taken = self.take_front_slice();
        self.prune_credit = (self.prune_credit - taken as isize).max(-MAX_PRUNE_AHEAD);
        true
    }

    /// Moves the oldest waiting slice into this transaction; its size.
    fn take_front_slice(&mut self) -> usize {
        match self.waiting_prunes.pop_front() {
            Some((ids, reply)) => {
                let n = ids.len();
                self.prunes.push((ids, reply, None));
                n
            }
            None => 0,
        }
    }

    /// Moves every waiting slice in (for [`Engine::flush`], which deletes
    /// each in a transaction of its own).
    fn take_all_prunes(&mut self) {
        let waiting = std::mem::take(&mut self.waiting_prunes);
        self.prunes
            .extend(waiting.into_iter().map(|(ids, reply)| (ids, reply, None)));
    }

    /// The transaction's writes, to seal; the waiting slices stay.
    fn seal(&mut self) -> Pending {
        let mut sealed = std::mem::take(self);
        self.waiting_prunes = std::mem::take(&mut sealed.waiting_prunes);
        self.prune_credit = sealed.prune_credit;
        sealed
    }

    /// Adds a message; true if it was `Stop`.
    fn add(&mut self, msg: CommitMsg) -> bool {
        match msg {
            CommitMsg::Step(c, n, a) => {
                self.steps.push(*c);
                self.jobs.push((a, n));
                false
            }
            CommitMsg::Submit(news, reply) => {
                self.submitters.push((news.len(), reply));
                self.news.extend(news);
                false
            }
            CommitMsg::Prune(ids, reply) => {
                self.waiting_prunes.push_back((ids, reply));
                false
            }
            CommitMsg::Stop => true,
        }
    }

    /// Applies the news and steps after the first `done` ones in `txn`.
    fn apply_rest(
        &mut self,
        txn: &mut dyn WriteTxn,
        done: &mut (usize, usize),
        outcomes: &mut Vec<InsertOutcome>,
    ) -> StoreResult<()> {
        if done.0 < self.news.len() {
            outcomes.extend(txn.insert_all(&self.news[done.0..])?);
        }
        done.0 = self.news.len();
        for c in &self.steps[done.1..] {
            txn.apply(c)?;
        }
        done.1 = self.steps.len();
        // A failed delete is answered as failed (its executions stay
        // terminal and are selected again); it never fails the steps and
        // submissions around it.
        for (ids, _, result) in self.prunes.iter_mut().filter(|p| p.2.is_none()) {
            *result = Some(txn.delete_terminal(ids));
        }
        Ok(())
    }

    /// Answers retention: what was deleted, once durable (`Ok`), or the
    /// error (nothing was deleted; the next pass selects them again).
    fn answer_prunes(&mut self, result: Result<(), &crate::store::StoreError>) {
        for (_, reply, done) in self.prunes.drain(..) {
            let _ = reply.send(match (result, done) {
                (Ok(()), Some(d)) => d,
                (Ok(()), None) => Ok((Vec::new(), PrunedRows::default())),
                (Err(e), _) => Err(e.clone()),
            });
        }
    }

    /// Answers the slices still waiting that nothing was deleted (at a
    /// stop: the next pass selects them again).
    fn release_waiting_prunes(&mut self) {
        for (_, reply) in self.waiting_prunes.drain(..) {
            let _ = reply.send(Ok((Vec::new(), PrunedRows::default())));
        }
    }

    /// Answers every submitter from the transaction's result.
    fn answer(&mut self, result: StoreResult<Vec<InsertOutcome>>) {
        let mut news = std::mem::take(&mut self.news).into_iter();
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for (n, reply) in self.submitters.drain(..) {
                    let mine: Vec<NewExecution> = news.by_ref().take(n).collect();
                    let theirs: Vec<InsertOutcome> = outcomes.by_ref().take(n).collect();
                    let _ = reply.send(Ok((mine, theirs)));
                }
            }
            Err(e) => {
                for (_, reply) in self.submitters.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Engine {
    /// The committer thread: takes whatever is queued (up to `max_batch`
    /// writes) and commits it in one transaction, repeats.
    pub(crate) fn committer(&self, rx: Receiver<CommitMsg>) {
        let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded::<Sealed>();
        std::thread::scope(|scope| {
            let syncer = std::thread::Builder::new()
                .name("kozmo-sync".into())
                .spawn_scoped(scope, || self.syncer(sealed_rx));
            let to_syncer = match syncer {
                Ok(_) => Some(sealed_tx),
                Err(e) => {
                    log::warn!("cannot start the sync thread ({e}): each commit syncs before the next");
                    None
                }
            };
            self.commit_loop(&rx, to_syncer.as_ref());
            // Dropping the sender lets the syncer answer what is left and end;
            // the scope waits for it.
            drop(to_syncer);
        });
    }

    fn commit_loop(&self, rx: &Receiver<CommitMsg>, syncer: Option<&Sender<Sealed>>) {
        let mut pending = Pending::default();
        loop {
            // Waiting retention slices are work of their own: no blocking.
            let first = if pending.waiting_prunes.is_empty() {
                rx.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            let mut stop = match first {
                Ok(msg) => pending.add(msg),
                Err(TryRecvError::Empty) => false,
                Err(TryRecvError::Disconnected) => true,
            };
            while pending.len() < self.cfg.max_batch {
                match rx.try_recv() {
                    Ok(msg) => stop |= pending.add(msg),
                    Err(_) => break,
                }
            }
            match self.store.begin() {
                Ok(Some(txn)) => stop |= self.stream(txn, rx, &mut pending, syncer),
                Ok(None) => pending.take_all_prunes(),
                Err(e) => {
                    self.store_health.failed(&e);
                    log::error!("cannot open a store transaction: {e}");
                    pending.take_all_prunes();
                }
            }
            // A store without transactions of its own, or a failed one.
            if pending.len() > 0 {
                self.flush(&mut pending);
            }
            if stop {
                pending.release_waiting_prunes();
                return;
            }
        }
    }

    /// Applies the pending writes in `txn`, then the ones that arrive while
    /// steps are still queued or running — at most for what a commit costs,
    /// so one sync serves them all (nothing else running: no wait) — and
    /// commits. The statements run while it waits. On success the writes
    /// are answered and `p` is empty; on failure the transaction is rolled
    /// back and `p` left for [`Engine::flush`]. True if `Stop` came.
    fn stream(
        &self,
        mut txn: Box<dyn WriteTxn + '_>,
        rx: &Receiver<CommitMsg>,
        p: &mut Pending,
        syncer: Option<&Sender<Sealed>>,
    ) -> bool {
        let deadline = Instant::now() + self.store.commit_cost();
        let mut stop = false;
        let mut outcomes = Vec::with_capacity(p.news.len());
        let mut done = (0, 0);
        let gathered = loop {
            if let Err(e) = p.apply_rest(txn.as_mut(), &mut done, &mut outcomes) {
                break Err(e);
            }
            if stop || p.len() >= self.cfg.max_batch || !self.steps_coming(p.steps.len()) {
                break Ok(());
            }
            // Retention's slices waiting and nothing queued: until the
            // deadline the writer would only wait; a slice uses that time
            // (one at a time, so a step arriving meanwhile waits for one
            // slice at most). Without slices, straight to the wait.
            if !p.waiting_prunes.is_empty() && Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(msg) => {
                        stop |= p.add(msg);
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => {
                        stop = true;
                        continue;
                    }
                    Err(TryRecvError::Empty) => {
                        if p.take_slice_ahead() {
                            continue;
                        }
                    }
                }
            }
            match rx.recv_deadline(deadline) {
                Ok(msg) => stop |= p.add(msg),
                Err(RecvTimeoutError::Timeout) => break Ok(()),
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
        };
        // Retention's share, sized by what the transaction holds now.
        let applied = gathered.and_then(|()| {
            p.take_prunes();
            p.apply_rest(txn.as_mut(), &mut done, &mut outcomes)
        });
        let started = Instant::now();
        let committed = applied.and_then(|()| txn.commit_unsynced());
        match committed {
            Ok(None) => {
                self.stats.commit_latency.observe(started.elapsed());
                self.store_health.succeeded();
                p.answer(Ok(outcomes));
                p.answer_prunes(Ok(()));
                self.committed(p);
            }
            Ok(Some(sync)) => {
                let sealed = Sealed {
                    sync,
                    pending: p.seal(),
                    outcomes,
                    started,
                };
                match syncer {
                    Some(tx) => {
                        if let Err(unsent) = tx.send(sealed) {
                            self.settle(vec![unsent.0]);
                        }
                    }
                    None => self.settle(vec![sealed]),
                }
            }
            Err(e) => {
                self.store_health.failed(&e);
                log::warn!(
                    "group commit of {} step results and {} new executions failed, retrying them as one batch: {e}",
                    p.steps.len(),
                    p.news.len()
                );
                p.answer_prunes(Err(&e));
            }
        }
        stop
    }

    /// The syncer thread: runs the syncs of committed transactions, one for
    /// all that are waiting, then answers them.
    fn syncer(&self, rx: Receiver<Sealed>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            self.settle(batch);
        }
    }

    /// Makes `batch` (committed in this order) durable with one sync — the
    /// last one's: a sync covers every transaction committed before it —
    /// then answers each. A failed sync is tried again (the store is
    /// reported unhealthy meanwhile); nothing is answered before one
    /// succeeds.
    fn settle(&self, mut batch: Vec<Sealed>) {
        let waiting = batch.len();
        let Some(last) = batch.last_mut() else { return };
        let mut pause = Duration::from_millis(10);
        while let Err(e) = (last.sync)() {
            self.store_health.failed(&e);
            log::error!("syncing {waiting} committed transaction(s) failed, trying again in {pause:?}: {e}");
            std::thread::sleep(pause);
            pause = (pause * 2).min(SYNC_RETRY_MAX);
        }
        self.store_health.succeeded();
        for mut s in batch {
            self.stats.commit_latency.observe(s.started.elapsed());
            s.pending.answer(Ok(s.outcomes));
            s.pending.answer_prunes(Ok(()));
            self.committed(&mut s.pending);
        }
    }

    /// Whether steps other than the `pending` ones are queued or running.
    fn steps_coming(&self, pending: usize) -> bool {
        let (queued, in_flight, _) = self.sched.depth();
        // `in_flight` counts a step until its commit is durable, so the
        // pending ones are in it.
        queued + in_flight > pending
    }

    /// One transaction for everything pending. If it fails, the submitters
    /// get the error at once (nothing of theirs was written) and the step
    /// results are retried alone; after five failures the executions are
    /// reloaded from the store and resynced later.
    fn flush(&self, p: &mut Pending) {
        self.drop_fenced(p);
        for (ids, reply, _) in p.prunes.drain(..) {
            let _ = reply.send(self.store.delete_executions(&ids));
        }
        if p.steps.is_empty() && p.news.is_empty() {
            return;
        }
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let written = self.store.write(&p.news, &mut p.steps);
            self.stats.commit_latency.observe(started.elapsed());
            match written {
                Ok(outcomes) => {
                    self.store_health.succeeded();
                    p.answer(Ok(outcomes));
                    break;
                }
                Err(e) => {
                    self.store_health.failed(&e);
                    attempt += 1;
                    log::error!(
                        "committing {} step results and {} new executions failed (try {attempt}): {e}",
                        p.steps.len(),
                        p.news.len()
                    );
                    if self.drop_fenced(p) {
                        // Refused for steps of executions another node
                        // holds now: the rest (and the submissions) again.
                        continue;
                    }
                    p.answer(Err(e));
                    if p.steps.is_empty() {
                        return;
                    }
                    if attempt >= 5 {
                        // Give up on this batch: reload the executions from the
                        // store so memory matches what is durable, retry later.
                        p.steps.clear();
                        for (a, _) in p.jobs.iter_mut() {
                            self.reload(a);
                        }
                        self.sched.done_all(p.jobs.drain(..).map(|(a, _)| (a, Next::Resync)));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                }
            }
        }
        self.committed(p);
    }

    /// Takes out of `p` the steps of executions the store's fencing check
    /// found held by another node, and drops those executions; true if
    /// there were any.
    fn drop_fenced(&self, p: &mut Pending) -> bool {
        let Some(cluster) = self.store.cluster() else {
            return false;
        };
        let fenced = cluster.take_fenced();
        if fenced.is_empty() {
            return false;
        }
        let fenced: std::collections::HashSet<&str> = fenced.iter().map(String::as_str).collect();
        let steps = std::mem::take(&mut p.steps);
        let jobs = std::mem::take(&mut p.jobs);
        for (step, (a, next)) in steps.into_iter().zip(jobs) {
            if fenced.contains(step.execution_id.as_str()) {
                log::warn!(
                    "execution {}: another node holds it now; its step is not committed here",
                    step.execution_id
                );
                self.drop_lost(a);
            } else {
                p.steps.push(step);
                p.jobs.push((a, next));
            }
        }
        true
    }

    /// The pending steps are durable: count them and send them home.
    fn committed(&self, p: &mut Pending) {
        self.stats.commits.fetch_add(p.steps.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.notify_committed();
        p.steps.clear();
        self.sched.done_all(p.jobs.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExecPhase, ExecState};

    /// Pending with `running` steps that leave their execution running and
    /// `finished` that end it, and `slices` retention slices of 16 waiting.
    fn pending(running: usize, finished: usize, slices: usize) -> Pending {
        let mut p = Pending::default();
        for i in 0..running + finished {
            let mut state = ExecState::new(0);
            state.phase = if i < finished {
                ExecPhase::Succeeded
            } else {
                ExecPhase::Running
            };
            p.steps.push(RoundCommit::state_only(&format!("e{i}"), state));
        }
        for s in 0..slices {
            let (tx, _) = crossbeam_channel::bounded(1);
            p.waiting_prunes
                .push_back(((0..16).map(|i| format!("old{s}-{i}")).collect(), tx));
        }
        p
    }

    fn taken(p: &Pending) -> usize {
        p.prunes.iter().map(|x| x.0.len()).sum()
    }

    #[test]
    fn a_transaction_deletes_about_as_many_executions_as_it_finishes() {
        // 160 finished: 125 % is 200, so 12 whole slices (192), 8 owed.
        let mut p = pending(500, 160, 100);
        p.take_prunes();
        assert_eq!((taken(&p), p.prune_credit), (192, 8));
        assert_eq!(p.waiting_prunes.len(), 88);
        // Nothing finished: one owed per transaction, a slice every 16.
        let mut p = pending(500, 0, 100);
        let mut deleted = 0;
        for _ in 0..32 {
            p.steps = pending(500, 0, 0).steps;
            p.take_prunes();
            deleted += taken(&p.seal());
        }
        assert_eq!(deleted, 32, "a load that finishes nothing does not starve retention");
        // Nothing else in the transaction: the idle share.
        let mut p = pending(0, 0, 100);
        p.take_prunes();
        assert_eq!(taken(&p), IDLE_PRUNE_IDS);
        assert_eq!(p.prune_credit, -(IDLE_PRUNE_IDS as isize), "deleted ahead of the load");
        // Fewer waiting than owed: all of them, and nothing carried.
        let mut p = pending(0, 160, 3);
        p.take_prunes();
        assert_eq!((taken(&p), p.waiting_prunes.len()), (48, 0));
        p.take_prunes();
        assert_eq!(p.prune_credit, 0);
    }

    #[test]
    fn small_transactions_save_up_for_a_slice() {
        let mut p = pending(0, 0, 10);
        let mut deleted = Vec::new();
        for _ in 0..6 {
            // Each finishes 5: 6 owed.
            p.steps = pending(2, 5, 0).steps;
            p.take_prunes();
            deleted.push(taken(&p.seal()));
        }
        assert_eq!(deleted, [0, 0, 16, 0, 0, 16], "36 owed over 6 transactions");
        assert_eq!(p.prune_credit, 4);
    }

    #[test]
    fn what_idle_transactions_delete_the_load_does_not_delete_again() {
        let mut p = pending(0, 0, 100);
        for _ in 0..8 {
            p.take_prunes();
            p.seal();
        }
        assert_eq!(p.prune_credit, -MAX_PRUNE_AHEAD, "idle ones run ahead, a bounded way");
        // Steps finishing 10 each now owe 12 per transaction: nothing is
        // deleted with them until the 256 deleted ahead are made up.
        let mut deleted = Vec::new();
        for _ in 0..24 {
            p.steps = pending(0, 10, 0).steps;
            p.take_prunes();
            deleted.push(taken(&p.seal()));
        }
        let quiet = deleted.iter().take_while(|n| **n == 0).count();
        assert_eq!(quiet, 22, "256 ahead / 12 owed per transaction: {deleted:?}");
        assert!(
            deleted[22..].iter().all(|n| *n > 0),
            "then the share again: {deleted:?}"
        );
    }

    #[test]
    fn a_gathering_transaction_deletes_ahead_one_slice_at_a_time_and_a_bounded_way() {
        let mut p = pending(3, 0, 100);
        assert!(p.take_slice_ahead());
        assert_eq!((taken(&p), p.prune_credit), (16, -16));
        let mut n = 1;
        while p.take_slice_ahead() {
            n += 1;
        }
        assert_eq!((n, p.prune_credit), (16, -MAX_PRUNE_AHEAD), "256 ahead, no more");
        // What the transaction finishes is counted against what it took.
        p.steps = pending(0, 80, 0).steps;
        p.take_prunes();
        assert_eq!((taken(&p), p.prune_credit), (256, -156));
        let mut p = pending(3, 0, 0);
        assert!(!p.take_slice_ahead(), "nothing waiting");
    }

    #[test]
    fn sealing_a_transaction_keeps_the_slices_still_waiting() {
        let mut p = pending(10, 13, 5);
        p.take_prunes();
        let sealed = p.seal();
        assert_eq!((sealed.steps.len(), taken(&sealed)), (23, 16));
        assert!(sealed.waiting_prunes.is_empty());
        assert_eq!((p.steps.len(), p.prunes.len(), p.waiting_prunes.len()), (0, 0, 4));
    }
}
