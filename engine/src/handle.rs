//! [`EngineHandle`]: what the daemon, the benchmarks and the tests hold of a
//! running engine; and [`LateEnqueueOwner`], the enqueue owner that
//! exists before the engine does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::*;
use crate::committer::SubmitReply;
use crate::oneshot;

/// A handle on a running engine (cheap to clone, usable from any thread).
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) core: Arc<Engine>,
}

/// An [`EnqueueOwner`] that exists before the engine (give it to loaders)
/// and is bound to the engine once it runs. Requests before binding are
/// dropped: every execution is evaluated at start anyway.
#[derive(Default)]
pub struct LateEnqueueOwner {
    pub(crate) sched: OnceLock<Weak<ExecutionScheduler>>,
}

impl LateEnqueueOwner {
    /// An unbound owner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds to a running engine.
    pub fn bind(&self, engine: &EngineHandle) {
        let _ = self.sched.set(Arc::downgrade(&engine.core.sched));
    }
}

impl EnqueueOwner for LateEnqueueOwner {
    fn enqueue(&self, owner: &NamespacedName) -> PResult<()> {
        match self.sched.get().and_then(Weak::upgrade) {
            Some(s) => s.enqueue(&owner.name),
            None => log::debug!("enqueue of {owner} before the engine started: ignored"),
        }
        Ok(())
    }
}

/// A submission sent to the committer: the results known before it
/// answers, and what to do with the ones it makes durable.
struct Submission {
    core: Arc<Engine>,
    /// One per item; the sent ones `Created` until the committer answers.
    results: Vec<Result<(SubmitOutcome, Option<ExecutionView>), EngineError>>,
    /// The sent items: index, parsed spec, plugin.
    /// (No plugin: another node's task type, left for it to claim.)
    rest: Vec<(usize, SplitSpec, Option<BoundPlugin>)>,
    /// The committer's answer, if anything was sent.
    reply: Option<oneshot::Receiver<SubmitReply>>,
    views: bool,
}

impl Submission {
    /// The results, given the committer's `reply` (`None`: it stopped
    /// without writing them): conflicts told apart from resubmissions, the
    /// new executions activated.
    fn finish(self, reply: Option<SubmitReply>) -> Vec<Result<(SubmitOutcome, Option<ExecutionView>), EngineError>> {
        let Submission {
            core: c,
            mut results,
            rest,
            views,
            ..
        } = self;
        if rest.is_empty() {
            return results;
        }
        let reply = reply
            .ok_or(EngineError::ShuttingDown)
            .and_then(|written| written.map_err(EngineError::from));
        let (news, outcomes) = match reply {
            Ok(written) => written,
            Err(e) => {
                for (i, _, _) in &rest {
                    results[*i] = Err(e.clone());
                }
                return results;
            }
        };
        for ((new, (i, spec, plugin)), outcome) in news.into_iter().zip(rest).zip(outcomes) {
            let id = new.id.clone();
            results[i] = match outcome {
                InsertOutcome::Exists { spec_json } if ExecutionSpec::same_canonical(&spec_json, &new.spec_json) => {
                    Ok((SubmitOutcome::Existing(id), None))
                }
                InsertOutcome::Exists { .. } => Err(EngineError::Conflict(format!(
                    "execution [{id}] exists with a different spec"
                ))),
                InsertOutcome::Created => match plugin {
                    Some(plugin) => {
                        let view = c.activate(new, spec, Some(plugin), views);
                        Ok((SubmitOutcome::Created(id), view))
                    }
                    None => Ok((SubmitOutcome::Created(id), None)),
                },
            };
        }
        results
    }
}

/// One submission on its way to durability ([`EngineHandle::submit_async`]):
/// resolves to its outcome and, for a new execution, its view.
#[must_use = "the answer says whether the submission was accepted"]
pub struct SubmitFuture {
    /// `None` once answered.
    submission: Option<Submission>,
}

impl Future for SubmitFuture {
    type Output = Result<(SubmitOutcome, Option<ExecutionView>), EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = match self.submission.as_mut().and_then(|s| s.reply.as_mut()) {
            Some(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(reply) => reply,
            },
            None => None,
        };
        let Some(mut submission) = self.submission.take() else {
            return Poll::Ready(Err(EngineError::Invalid("the submission was answered already".into())));
        };
        submission.reply = None;
        let answer = submission.finish(reply).pop();
        Poll::Ready(answer.unwrap_or(Err(EngineError::Invalid("empty batch".into()))))
    }
}

impl Drop for SubmitFuture {
    /// Given up before its answer: the committer's answer still activates
    /// what it made durable (on the committer's thread), as if awaited.
    fn drop(&mut self) {
        if let Some(mut submission) = self.submission.take() {
            if let Some(rx) = submission.reply.take() {
                submission.views = false;
                rx.abandon(move |reply| {
                    submission.finish(Some(reply));
                });
            }
        }
    }
}

impl EngineHandle {
    /// Accepts an execution; returns once it is durable. The same id with
    /// the same spec is `Existing`; with another spec, `Conflict`.
    pub fn submit(&self, id: Option<String>, spec: ExecutionSpec) -> Result<SubmitOutcome, EngineError> {
        self.submit_batch(vec![(id, spec)])
            .pop()
            .unwrap_or(Err(EngineError::Invalid("empty batch".into())))
    }

    /// Accepts an execution like [`Self::submit`] and returns its view: a
    /// new one's is built from the record in hand (no store read), an
    /// existing one's is read.
    pub fn submit_viewed(
        &self,
        id: Option<String>,
        spec: ExecutionSpec,
    ) -> Result<(SubmitOutcome, ExecutionView), EngineError> {
        let (outcome, view) = self
            .submit_all(vec![(id, spec)], true)
            .pop()
            .unwrap_or(Err(EngineError::Invalid("empty batch".into())))?;
        match (view, &outcome) {
            (Some(v), _) => Ok((outcome, v)),
            (None, SubmitOutcome::Created(id) | SubmitOutcome::Existing(id)) => {
                let v = self.get(id)?;
                Ok((outcome, v))
            }
        }
    }

    /// Accepts several executions in one durable transaction (one fsync);
    /// one result per item, in order.
    pub fn submit_batch(&self, items: Vec<(Option<String>, ExecutionSpec)>) -> Vec<Result<SubmitOutcome, EngineError>> {
        self.submit_all(items, false)
            .into_iter()
            .map(|r| r.map(|(outcome, _)| outcome))
            .collect()
    }

    /// [`Self::submit_batch`], with the views of the new executions if `views`.
    pub(crate) fn submit_all(
        &self,
        items: Vec<(Option<String>, ExecutionSpec)>,
        views: bool,
    ) -> Vec<Result<(SubmitOutcome, Option<ExecutionView>), EngineError>> {
        let mut submission = self.send_submission(items, views);
        let reply = submission.reply.take().and_then(oneshot::Receiver::recv);
        submission.finish(reply)
    }

    /// Accepts an execution like [`Self::submit_viewed`], as a future: the
    /// spec is checked here, the insert goes to the committer, and the
    /// future resolves once it is durable (no thread waits for it). Its
    /// view is in the answer for a new execution; an existing one's is
    /// `None` (read it with [`Self::get`]). Dropping the future does not
    /// cancel the submission: once durable, the execution runs all the same.
    pub fn submit_async(&self, id: Option<String>, spec: ExecutionSpec) -> SubmitFuture {
        SubmitFuture {
            submission: Some(self.send_submission(vec![(id, spec)], true)),
        }
    }

    /// Prepares `items` and sends the valid ones to the committer.
    fn send_submission(&self, items: Vec<(Option<String>, ExecutionSpec)>, views: bool) -> Submission {
        let c = &self.core;
        let mut submission = Submission {
            core: c.clone(),
            results: Vec::with_capacity(items.len()),
            rest: Vec::new(),
            reply: None,
            views,
        };
        if c.sched_stopping() {
            submission.results = items.iter().map(|_| Err(EngineError::ShuttingDown)).collect();
            return submission;
        }
        let now = now_ms();
        let mut news = Vec::new();
        for (i, (id, spec)) in items.into_iter().enumerate() {
            match c.prepare(id, spec, now) {
                Ok((new, spec, plugin)) => {
                    submission
                        .results
                        .push(Ok((SubmitOutcome::Created(new.id.clone()), None)));
                    news.push(new);
                    submission.rest.push((i, spec, plugin));
                }
                Err(e) => submission.results.push(Err(e)),
            }
        }
        if news.is_empty() {
            return submission;
        }
        // The committer makes them durable with whatever else is pending.
        let (reply_tx, reply_rx) = oneshot::channel();
        // Not sent: the committer stopped (shutdown); the reply's sender
        // is dropped with the message and the answer is `ShuttingDown`.
        let _ = c.commit_tx.send(CommitMsg::Submit(news, reply_tx));
        submission.reply = Some(reply_rx);
        submission
    }

    /// The durable state of an execution.
    pub fn get(&self, id: &str) -> Result<ExecutionView, EngineError> {
        let rec = self.core.store.get_execution(id)?.ok_or(EngineError::NotFound)?;
        Ok(self.core.view(&rec))
    }

    /// Executions ordered by id, optionally of one phase, after `after`.
    pub fn list(
        &self,
        phase: Option<ExecPhase>,
        limit: usize,
        after: Option<String>,
    ) -> Result<Vec<ExecutionView>, EngineError> {
        let recs = self.core.store.list_executions(phase, limit, after.as_deref())?;
        Ok(recs.iter().map(|r| self.core.view(r)).collect())
    }

    /// The events of an execution, in order.
    pub fn events(&self, id: &str) -> Result<Vec<EventRecord>, EngineError> {
        let c = &self.core;
        if c.store.get_execution(id)?.is_none() {
            return Err(EngineError::NotFound);
        }
        Ok(c.store.events(id)?)
    }

    /// The events with `seq` after `after_seq`, in order, at most `limit`:
    /// of execution `id` (which must exist), or of every execution. Read
    /// from the store, so they include what other writers of it committed.
    pub fn events_after(
        &self,
        id: Option<&str>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, EngineError> {
        Ok(self.core.store.events_after(id, after_seq, limit)?)
    }

    /// The greatest event `seq` in the store (0: none).
    pub fn last_event_seq(&self) -> Result<i64, EngineError> {
        Ok(self.core.store.last_event_seq()?)
    }

    /// Sets the function called after each durable commit of this engine
    /// (step results, submissions): a wake-up for watchers, who then read
    /// the store. It runs on the committing thread, so it must be quick and
    /// never block. Only the first call sets it; `false` if one was set.
    pub fn on_commit(&self, listener: Box<dyn Fn() + Send + Sync>) -> bool {
        self.core.commit_listener.set(listener).is_ok()
    }

    /// The outputs of the execution's current attempt.
    pub fn outputs(&self, id: &str) -> Result<Option<LiteralMap>, EngineError> {
        let c = &self.core;
        let rec = c.store.get_execution(id)?.ok_or(EngineError::NotFound)?;
        Ok(c.store.outputs(id, rec.state.attempt)?)
    }

    /// Requests an abort: Abort + Finalize run, the execution ends Aborted.
    /// Terminal executions, and ones already succeeding or failing, are
    /// left as they are.
    pub fn abort(&self, id: &str, reason: &str) -> Result<ExecutionView, EngineError> {
        let c = &self.core;
        let rec = c.store.get_execution(id)?.ok_or(EngineError::NotFound)?;
        if rec.state.phase.is_terminal() {
            return Ok(c.view(&rec));
        }
        let reason = if reason.is_empty() {
            "aborted by a client"
        } else {
            reason
        };
        if !c.store.request_abort(id, reason)? {
            return Err(EngineError::NotFound);
        }
        c.sched.with_job(id, |a, shared| match a {
            Some(a) => a.record.abort_requested = Some(reason.to_string()),
            None => *lock(&shared.abort) = Some(reason.to_string()),
        });
        c.sched.enqueue(id);
        self.get(id)
    }

    /// Set while store writes fail (cheap: no store query).
    pub fn store_degraded(&self) -> Option<StoreDegraded> {
        self.core.store_health.degraded()
    }

    /// Engine statistics.
    pub fn stats(&self) -> EngineStats {
        let c = &self.core;
        let (queued, in_flight, active) = c.sched.depth();
        let by_phase = c
            .store
            .count_by_phase()
            .unwrap_or_default()
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
        c.stats.snapshot(
            (queued, in_flight, active),
            by_phase,
            c.store_health.errors_by_kind(),
            c.store_health.degraded(),
            c.resources.usage(),
        )
    }

    /// Stops starting steps, waits up to `timeout` for running ones, commits
    /// what they produced and stops the threads. Whatever did not finish is
    /// resumed from the store at the next start.
    pub fn shutdown(&self, timeout: Duration) {
        let c = &self.core;
        let deadline = Instant::now() + timeout;
        c.sched.stop();
        if !c.sched.wait_idle(timeout) {
            c.log_calls_left_behind(timeout);
        }
        let threads = std::mem::take(&mut *lock(&c.threads));
        for _ in 0..c.pool.total() {
            let _ = c.work_tx.send(Work::Stop);
        }
        let _ = c.commit_tx.send(CommitMsg::Stop);
        for t in threads {
            if Instant::now() >= deadline && !t.is_finished() {
                continue; // a plugin call is stuck: leave the thread behind
            }
            let _ = t.join();
        }
        // A clean stop: calls still stuck are not crashes.
        c.calls.mark_clean();
        // Other nodes may take this node's executions at once.
        if let Some(cluster) = c.store.cluster() {
            if let Err(e) = cluster.leave() {
                log::warn!("node {}: giving its executions back failed: {e}", cluster.node_id());
            }
        }
        // Another engine may use the directory from now on.
        lock(&c.lock).take();
    }

    /// The daemons sharing the store, if it is shared
    /// ([`crate::store::Store::cluster`]); `None` for a store of one daemon.
    pub fn nodes(&self) -> Result<Option<Vec<crate::store::NodeRow>>, EngineError> {
        match self.core.store.cluster() {
            Some(c) => Ok(Some(c.nodes()?)),
            None => Ok(None),
        }
    }

    /// This node's id among the daemons sharing the store, if it is shared.
    pub fn node_id(&self) -> Option<String> {
        self.core.store.cluster().map(|c| c.node_id().to_string())
    }

    /// Wakes an execution now (as a plugin signal would).
    pub fn wake(&self, id: &str) {
        self.core.sched.enqueue(id);
    }
}
