//! [`EngineHandle`]: what the daemon, the benchmarks and the tests hold of a
//! running engine; and [`LateEnqueueOwner`], the enqueue owner that
//! exists before the engine does.

use super::*;

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
        let c = &self.core;
        if c.sched_stopping() {
            return items.iter().map(|_| Err(EngineError::ShuttingDown)).collect();
        }
        let now = now_ms();
        let mut results: Vec<Result<(SubmitOutcome, Option<ExecutionView>), EngineError>> =
            Vec::with_capacity(items.len());
        let mut pending = Vec::new();
        for (i, (id, spec)) in items.into_iter().enumerate() {
            match c.prepare(id, spec, now) {
                Ok(p) => {
                    results.push(Ok((SubmitOutcome::Created(p.0.id.clone()), None)));
                    pending.push((i, p));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // The committer makes them durable with whatever else is pending.
        let (news, rest): (Vec<NewExecution>, Vec<_>) = pending
            .into_iter()
            .map(|(i, (new, spec, plugin))| (new, (i, spec, plugin)))
            .unzip();
        if news.is_empty() {
            return results;
        }
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        // No answer: the committer stopped (shutdown) before writing them.
        let reply = c
            .commit_tx
            .send(CommitMsg::Submit(news, reply_tx))
            .ok()
            .and_then(|()| reply_rx.recv().ok())
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
                InsertOutcome::Exists { spec_json } if spec_json == new.spec_json => {
                    Ok((SubmitOutcome::Existing(id), None))
                }
                InsertOutcome::Exists { .. } => Err(EngineError::Conflict(format!(
                    "execution [{id}] exists with a different spec"
                ))),
                InsertOutcome::Created => {
                    let view = c.activate(new, spec, Some(plugin), views);
                    Ok((SubmitOutcome::Created(id), view))
                }
            };
        }
        results
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
        // Another engine may use the directory from now on.
        lock(&c.lock).take();
    }

    /// Wakes an execution now (as a plugin signal would).
    pub fn wake(&self, id: &str) {
        self.core.sched.enqueue(id);
    }
}
