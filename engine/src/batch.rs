//! Rounds of an isolated plugin in batches: a worker that takes a `handle`
//! round whose plugin runs in a child process also takes, without waiting,
//! up to [`MAX_BATCH`] − 1 more due rounds of that plugin from the work
//! queue, and sends all their calls in one batch frame. Each round still
//! starts and ends (commit, events, errors) exactly as a single one does;
//! only the plugin calls travel together. Plugins in the daemon are never
//! batched: [`PluginResolver::may_batch`](super::PluginResolver::may_batch)
//! tells cheaply that no plugin can be.
//!
//! Jobs taken while looking for more of a batch that are not rounds of its
//! plugin run after the batch, on the same worker, in the order taken.
//!
//! A child that ends during a batch leaves several calls unanswered, and
//! only one of them can have caused it: those rounds run again, each alone
//! (a lone call, a fresh context), so only the cause gets
//! `PluginProcessDied`, and executions batched with a crashing one do not
//! spend their system retries on it.

// Jobs are `Box<Active>` wherever they travel (the scheduler's `Job`).
#![allow(clippy::vec_box)]

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use kozmo_interface::{Plugin, TaskExecutionContext};

use super::call_slots::Call;
use super::scheduler::{Next, Work};
use super::step::{RoundStart, StepOutcome};
use super::{workers, Active, Engine};
use super::{BatchHandler, BatchOutcome};

/// The most rounds one batch carries (a [`BatchHandler`] takes this many).
pub const MAX_BATCH: usize = 64;

/// The isolated plugin a batch calls.
pub(crate) struct Target {
    /// As the rounds resolve it.
    plugin: Arc<dyn Plugin>,
    isolated: Arc<dyn BatchHandler>,
}

impl Engine {
    /// The isolated plugin of `a`'s next step, if that step is a `handle`
    /// round of one.
    pub(crate) fn batch_target(&self, a: &Active) -> Option<Target> {
        if !self.plugins.may_batch() || a.record.state.phase.is_finishing() || a.record.abort_requested.is_some() {
            return None;
        }
        let p = match &a.spec.plugin {
            Some(p) => p.clone(),
            None => self.plugins.resolve(&a.spec.template.task_type).ok()?,
        };
        let isolated = self.plugins.batcher(&*p)?;
        Some(Target { plugin: p, isolated })
    }

    /// Takes due jobs from `rx` without waiting: rounds of `target` join
    /// `batch` (up to [`MAX_BATCH`]), others go to `later`. True if a stop
    /// sentinel was taken (the worker stops once it has run them all).
    pub(crate) fn fill_batch(
        &self,
        rx: &Receiver<Work<Box<Active>>>,
        target: &Target,
        batch: &mut Vec<Box<Active>>,
        later: &mut VecDeque<Box<Active>>,
    ) -> bool {
        while batch.len() < MAX_BATCH && later.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Work::Run(b)) => {
                    let Some(b) = self.take_job(b) else { continue };
                    match self.batch_target(&b) {
                        Some(t) if same_handler(&t.isolated, &target.isolated) => batch.push(b),
                        _ => later.push_back(b),
                    }
                }
                Ok(Work::Stop) => return true,
                Err(_) => break,
            }
        }
        false
    }

    /// Runs the rounds of `batch` (all of `target`) and sends each home.
    pub(crate) fn run_batch(&self, busy: &workers::Busy, target: &Target, mut batch: Vec<Box<Active>>) {
        if batch.len() == 1 {
            let a = batch.pop().expect("one job");
            return self.run_one(busy, a);
        }
        // The watchdog and status reads see the batch as its first round.
        busy.begin(&batch[0].record.id, batch[0].record.state.attempt);
        let outs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.batch_step(target, &mut batch)));
        busy.end();
        match outs {
            Ok(outs) => {
                for (a, out) in batch.into_iter().zip(outs) {
                    self.after_step(a, out);
                }
            }
            Err(_) => {
                for a in batch {
                    log::error!("engine bug: a batched step of {} panicked; retrying later", a.record.id);
                    self.sched.done(a, Next::Resync);
                }
            }
        }
    }

    /// One `handle` round of every job of `batch`, their plugin calls in
    /// one batch frame.
    fn batch_step(&self, target: &Target, batch: &mut [Box<Active>]) -> Vec<StepOutcome> {
        let mut outs: Vec<Option<StepOutcome>> = batch.iter().map(|_| None).collect();
        let mut rounds: Vec<(usize, RoundStart)> = Vec::with_capacity(batch.len());
        for (i, a) in batch.iter_mut().enumerate() {
            match self.round_start(a) {
                Err(out) => outs[i] = Some(*out),
                // A plugin resolved anew since the batch was formed runs alone.
                Ok(r) if !Arc::ptr_eq(&r.plugin, &target.plugin) => {
                    outs[i] = Some(self.round_call(a, r));
                }
                Ok(r) => rounds.push((i, r)),
            }
        }
        if !rounds.is_empty() {
            let names: Vec<_> = rounds
                .iter()
                .map(|(i, r)| self.context_names(&mut batch[*i], &r.plugin))
                .collect();
            let (results, buffered) = {
                let ctxs: Vec<_> = rounds
                    .iter()
                    .zip(&names)
                    .map(|((i, r), n)| self.context(&batch[*i], &r.plugin, n))
                    .collect();
                let dyns: Vec<&dyn TaskExecutionContext> =
                    ctxs.iter().map(|c| c as &dyn TaskExecutionContext).collect();
                // The call slot names the batch's first execution.
                let results = {
                    let _in_call = self.calls.enter(&batch[rounds[0].0].record.id, Call::Handle);
                    target.isolated.handle_batch(&dyns)
                };
                drop(dyns);
                (results, ctxs.into_iter().map(|c| c.into_buffered()).collect::<Vec<_>>())
            };
            let BatchOutcome { results, answered } = results;
            // The child ended during the batch with several calls
            // unanswered: only one of them can have caused it, so each runs
            // again alone, with a fresh context (what the first run
            // buffered is dropped, as a failed round's is), and only the
            // cause fails.
            let alone = results.len() - answered > 1;
            for (k, ((((i, r), result), buffered), (gname, _))) in
                rounds.into_iter().zip(results).zip(buffered).zip(names).enumerate()
            {
                outs[i] = Some(if alone && k >= answered {
                    drop(buffered);
                    self.round_call(&mut batch[i], r)
                } else {
                    self.round_end(&mut batch[i], r, result, buffered, gname)
                });
            }
        }
        outs.into_iter().map(|o| o.expect("every round ended")).collect()
    }
}

/// The same batch caller (by address: two vtables of one type may differ).
fn same_handler(a: &Arc<dyn BatchHandler>, b: &Arc<dyn BatchHandler>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}
