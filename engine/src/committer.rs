//! Group commit: one thread makes every write of the engine durable — new
//! submissions and step results alike — in as few store transactions (and
//! so as few syncs) as the load allows. A step's execution runs again, and a
//! submitter gets its answer, only once the transaction holding it is
//! durable. A store that can leave the sync to the engine
//! ([`WriteTxn::commit_unsynced`]) has it run on a second thread, the
//! syncer, while the committer fills the next transaction: the answers of
//! a transaction wait for its sync, the statements of the next do not.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

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
    /// Retention: delete these terminal executions in the next
    /// transaction (no sync of their own); the answer once durable.
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

/// Writes gathered for one transaction.
#[derive(Default)]
struct Pending {
    steps: Vec<RoundCommit>,
    jobs: Vec<(Box<Active>, Next)>,
    news: Vec<NewExecution>,
    /// One per submitter: how many of `news` are theirs, in order.
    submitters: Vec<(usize, oneshot::Sender<SubmitReply>)>,
    /// Retention's deletes, and what applying each did (in this transaction).
    prunes: Vec<(Vec<String>, Sender<PruneReply>, Option<PruneReply>)>,
}

impl Pending {
    fn len(&self) -> usize {
        self.steps.len() + self.news.len() + self.prunes.len()
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
                self.prunes.push((ids, reply, None));
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
        // A failed delete is undone by itself (a savepoint) and answered
        // as failed; it never fails the steps and submissions around it.
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
            let mut stop = match rx.recv() {
                Ok(msg) => pending.add(msg),
                Err(_) => true,
            };
            while pending.len() < self.cfg.max_batch {
                match rx.try_recv() {
                    Ok(msg) => stop |= pending.add(msg),
                    Err(_) => break,
                }
            }
            match self.store.begin() {
                Ok(Some(txn)) => stop |= self.stream(txn, rx, &mut pending, syncer),
                Ok(None) => {}
                Err(e) => {
                    self.store_health.failed(&e);
                    log::error!("cannot open a store transaction: {e}")
                }
            }
            // A store without transactions of its own, or a failed one.
            if pending.len() > 0 {
                self.flush(&mut pending);
            }
            if stop {
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
        let applied = loop {
            if let Err(e) = p.apply_rest(txn.as_mut(), &mut done, &mut outcomes) {
                break Err(e);
            }
            if stop || p.len() >= self.cfg.max_batch || !self.steps_coming(p.steps.len()) {
                break Ok(());
            }
            match rx.recv_deadline(deadline) {
                Ok(msg) => stop |= p.add(msg),
                Err(RecvTimeoutError::Timeout) => break Ok(()),
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
        };
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
                    pending: std::mem::take(p),
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
