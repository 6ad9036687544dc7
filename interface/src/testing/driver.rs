//! [`drive`] and [`Driver`]: run a plugin's rounds on a test context the
//! way the daemon does (rounds with a delay, at once after a signal,
//! abort and finalize), and capture what it logged.

use std::fmt;
use std::time::{Duration, Instant};

use super::logs::{capture_logs, LogRecord};
use super::TestTaskContext;
use crate::{Phase, PhaseInfo, Plugin, PluginError};

/// Runs `plugin` on `ctx` with the default [`Driver`]: a round every 10 ms
/// (at once after the plugin signals), until a terminal phase, then
/// `finalize`; after 10 s without one, `abort` and `finalize` and a
/// [`DriveError::Timeout`].
///
/// ```
/// use kozmo_interface::testing::{drive, TestTaskContext};
/// use kozmo_interface::{Phase, PhaseInfo, Plugin, Result, TaskExecutionContext, Transition};
///
/// struct Hello;
/// impl Plugin for Hello {
///     fn id(&self) -> &str { "hello" }
///     fn handle(&self, _ctx: &dyn TaskExecutionContext) -> Result<Transition> {
///         log::info!("hello, world");
///         Ok(Transition::ephemeral(PhaseInfo::success(None)))
///     }
/// }
///
/// let run = drive(&Hello, &TestTaskContext::new()).unwrap();
/// assert_eq!(run.phase(), Phase::SUCCESS);
/// assert!(run.finalized);
/// assert!(run.logged("hello, world"), "{}", run.log_text());
/// ```
pub fn drive(plugin: &dyn Plugin, ctx: &TestTaskContext) -> Result<Run, DriveError> {
    Driver::new().run(plugin, ctx)
}

/// How a [`Driver`] decides to abort an execution.
enum AbortWhen {
    Never,
    AfterRounds(usize),
    After(Duration),
    When(Box<dyn Fn(&PhaseInfo) -> bool>),
}

/// Runs rounds of a plugin like the daemon's engine, for tests:
///
/// * `handle`, then the round's state becomes visible
///   ([`TestTaskContext::next_round`]); a round whose `handle` failed is a
///   handler error: its state put is dropped
///   ([`TestTaskContext::discard_round`]) and the round is tried again;
///   after 10 consecutive ones (`max_round_failures`) the run ends as
///   [`Outcome::RoundFailures`];
/// * a round that changed something (a new phase or phase version, or a
///   state put) is followed by the next one at once, as in the daemon;
///   otherwise it waits [`Driver::delay`] (the daemon's resync), or less
///   when the plugin signals (`task_refresh_indicator`), as the daemon runs
///   a signalled execution at once;
/// * a terminal phase ends the rounds and `finalize` runs;
/// * an abort (asked with [`Driver::abort_after_rounds`],
///   [`Driver::abort_after`] or [`Driver::abort_when`]) runs `abort` then
///   `finalize` instead of the next round, and so does the
///   [`Driver::timeout`] (then the result is [`DriveError::Timeout`]);
/// * the plugin's `log` records from the calls it makes on this thread are
///   captured in [`Run::logs`] (records from its own threads go to stderr).
///
/// One attempt only: a retryable failure ends the run (the daemon would
/// start the next attempt with a new generated name and no state).
///
/// ```
/// use std::time::Duration;
/// use kozmo_interface::testing::{Driver, Outcome, TestTaskContext};
/// use kozmo_interface::{Phase, PhaseInfo, Plugin, Result, TaskExecutionContext, Transition};
///
/// /// Runs forever.
/// struct Forever;
/// impl Plugin for Forever {
///     fn id(&self) -> &str { "forever" }
///     fn handle(&self, _ctx: &dyn TaskExecutionContext) -> Result<Transition> {
///         Ok(Transition::ephemeral(PhaseInfo::running(0, None)))
///     }
///     fn abort(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
///         log::info!("stopping");
///         Ok(())
///     }
/// }
///
/// let run = Driver::new()
///     .delay(Duration::from_millis(1))
///     .abort_after_rounds(3)
///     .run(&Forever, &TestTaskContext::new())
///     .unwrap();
/// assert_eq!(run.outcome, Outcome::Aborted);
/// assert_eq!(run.phases(), [Phase::RUNNING; 3]);
/// assert!(run.aborted && run.finalized && run.logged("stopping"));
/// ```
pub struct Driver {
    delay: Duration,
    timeout: Duration,
    max_round_failures: usize,
    abort: AbortWhen,
    on_round: Option<RoundObserver>,
}

/// What [`Driver::on_round`] calls.
type RoundObserver = Box<dyn Fn(usize, &std::result::Result<PhaseInfo, PluginError>)>;

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("delay", &self.delay)
            .field("timeout", &self.timeout)
            .field("max_round_failures", &self.max_round_failures)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A round every 10 ms, a 10 s timeout, no abort.
    pub fn new() -> Self {
        Driver {
            delay: Duration::from_millis(10),
            timeout: Duration::from_secs(10),
            max_round_failures: 10,
            abort: AbortWhen::Never,
            on_round: None,
        }
    }

    /// Calls `f` after every round with its number (from 1) and what
    /// `handle` answered, e.g. to print the rounds as they happen.
    ///
    /// ```
    /// # use kozmo_interface::testing::Driver;
    /// let d = Driver::new().on_round(|n, answer| match answer {
    ///     Ok(info) => println!("round {n}: {info}"),
    ///     Err(e) => println!("round {n}: handler error: {e}"),
    /// });
    /// ```
    pub fn on_round(mut self, f: impl Fn(usize, &std::result::Result<PhaseInfo, PluginError>) + 'static) -> Self {
        self.on_round = Some(Box::new(f));
        self
    }

    /// The wait between rounds (the daemon's resync interval; a signal
    /// cuts it short).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// How long the rounds may take before the run is aborted and fails
    /// with [`DriveError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive handler errors that end the attempt (default 10).
    pub fn max_round_failures(mut self, n: usize) -> Self {
        self.max_round_failures = n.max(1);
        self
    }

    /// Aborts after `rounds` applied rounds that did not end the task.
    pub fn abort_after_rounds(mut self, rounds: usize) -> Self {
        self.abort = AbortWhen::AfterRounds(rounds);
        self
    }

    /// Aborts once `after` has passed since the first round (at the end of
    /// the round running then).
    pub fn abort_after(mut self, after: Duration) -> Self {
        self.abort = AbortWhen::After(after);
        self
    }

    /// Aborts after the first applied round whose phase `when` accepts.
    ///
    /// ```
    /// # use kozmo_interface::testing::Driver;
    /// # use kozmo_interface::Phase;
    /// let d = Driver::new().abort_when(|info| info.phase() == Phase::RUNNING);
    /// ```
    pub fn abort_when(mut self, when: impl Fn(&PhaseInfo) -> bool + 'static) -> Self {
        self.abort = AbortWhen::When(Box::new(when));
        self
    }

    /// Runs the rounds (see [`Driver`]).
    pub fn run(&self, plugin: &dyn Plugin, ctx: &TestTaskContext) -> Result<Run, DriveError> {
        let (result, logs) = capture_logs(|| self.run_uncaptured(plugin, ctx));
        match result {
            Ok(mut run) => {
                run.logs = logs;
                Ok(run)
            }
            Err(mut e) => {
                e.run_mut().logs = logs;
                Err(e)
            }
        }
    }

    fn run_uncaptured(&self, plugin: &dyn Plugin, ctx: &TestTaskContext) -> Result<Run, DriveError> {
        let start = Instant::now();
        let mut run = Run {
            rounds: Vec::new(),
            handler_errors: Vec::new(),
            outcome: Outcome::Aborted,
            aborted: false,
            finalized: false,
            logs: Vec::new(),
            elapsed: Duration::ZERO,
        };
        let mut consecutive = 0;
        let mut number = 0;
        loop {
            let signals = ctx.signal_count();
            let mut changed = false;
            let answer = plugin.handle(ctx).map(|t| t.into_info());
            number += 1;
            if let Some(f) = &self.on_round {
                f(number, &answer);
            }
            match answer {
                Ok(info) => {
                    let state_put = ctx.pending_state().is_some();
                    ctx.next_round();
                    consecutive = 0;
                    let before = run.rounds.last().map(|p| (p.phase(), p.version()));
                    changed = state_put || before != Some((info.phase(), info.version()));
                    run.rounds.push(info.clone());
                    if info.phase().is_terminal() {
                        run.outcome = Outcome::Terminal(info);
                        break;
                    }
                    let abort = match &self.abort {
                        AbortWhen::Never => false,
                        AbortWhen::AfterRounds(n) => run.rounds.len() >= *n,
                        AbortWhen::After(d) => start.elapsed() >= *d,
                        AbortWhen::When(f) => f(&info),
                    };
                    if abort {
                        run.outcome = Outcome::Aborted;
                        return self.abort_and_finalize(plugin, ctx, run, start);
                    }
                }
                Err(e) => {
                    ctx.discard_round();
                    run.handler_errors.push(e.clone());
                    consecutive += 1;
                    if consecutive >= self.max_round_failures {
                        run.outcome = Outcome::RoundFailures(e);
                        break;
                    }
                }
            }
            if start.elapsed() >= self.timeout {
                let run = self.abort_and_finalize(plugin, ctx, run, start)?;
                return Err(DriveError::Timeout(Box::new(run), self.timeout));
            }
            if changed {
                continue;
            }
            let until = Instant::now() + self.delay;
            while Instant::now() < until && ctx.signal_count() == signals {
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(1)));
            }
        }
        if let Err(e) = plugin.finalize(ctx) {
            run.elapsed = start.elapsed();
            return Err(DriveError::Finalize(e, Box::new(run)));
        }
        run.finalized = true;
        run.elapsed = start.elapsed();
        Ok(run)
    }

    fn abort_and_finalize(
        &self,
        plugin: &dyn Plugin,
        ctx: &TestTaskContext,
        mut run: Run,
        start: Instant,
    ) -> Result<Run, DriveError> {
        run.aborted = true;
        if let Err(e) = plugin.abort(ctx) {
            run.elapsed = start.elapsed();
            return Err(DriveError::Abort(e, Box::new(run)));
        }
        if let Err(e) = plugin.finalize(ctx) {
            run.elapsed = start.elapsed();
            return Err(DriveError::Finalize(e, Box::new(run)));
        }
        run.finalized = true;
        run.elapsed = start.elapsed();
        Ok(run)
    }
}

/// How a [`Run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `handle` reported a terminal phase (success, failure, aborted).
    Terminal(PhaseInfo),
    /// The driver aborted it (`abort` then `finalize` ran).
    Aborted,
    /// Too many consecutive handler errors (the last one here): the daemon
    /// fails the attempt with a SYSTEM retryable failure `RoundFailures`.
    RoundFailures(PluginError),
}

/// What a [`Driver`] saw.
#[derive(Debug, Clone)]
pub struct Run {
    /// The phase of every applied round, in order.
    pub rounds: Vec<PhaseInfo>,
    /// Errors `handle` returned (rounds not applied), in order.
    pub handler_errors: Vec<PluginError>,
    /// How it ended.
    pub outcome: Outcome,
    /// Whether `abort` ran.
    pub aborted: bool,
    /// Whether `finalize` ran (and succeeded).
    pub finalized: bool,
    /// The plugin's log records (from its calls on the driver's thread).
    pub logs: Vec<LogRecord>,
    /// From the first round to the end of `finalize`.
    pub elapsed: Duration,
}

impl Run {
    /// The phase the execution ended in: the terminal phase reported,
    /// `ABORTED` after an abort, `RETRYABLE_FAILURE` after too many
    /// handler errors.
    pub fn phase(&self) -> Phase {
        match &self.outcome {
            Outcome::Terminal(info) => info.phase(),
            Outcome::Aborted => Phase::ABORTED,
            Outcome::RoundFailures(_) => Phase::RETRYABLE_FAILURE,
        }
    }

    /// The last phase info `handle` reported, if any.
    pub fn last(&self) -> Option<&PhaseInfo> {
        self.rounds.last()
    }

    /// The phase of every applied round.
    pub fn phases(&self) -> Vec<Phase> {
        self.rounds.iter().map(|i| i.phase()).collect()
    }

    /// Whether a log message contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(text))
    }

    /// The captured logs, one line each (for assertion messages).
    pub fn log_text(&self) -> String {
        self.logs.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// A run that could not end normally; each carries the [`Run`] so far.
#[derive(Debug)]
pub enum DriveError {
    /// No terminal phase within the timeout (abort and finalize ran).
    Timeout(Box<Run>, Duration),
    /// `abort` failed.
    Abort(PluginError, Box<Run>),
    /// `finalize` failed.
    Finalize(PluginError, Box<Run>),
}

impl DriveError {
    /// The run so far.
    pub fn run(&self) -> &Run {
        match self {
            DriveError::Timeout(r, _) | DriveError::Abort(_, r) | DriveError::Finalize(_, r) => r,
        }
    }

    fn run_mut(&mut self) -> &mut Run {
        match self {
            DriveError::Timeout(r, _) | DriveError::Abort(_, r) | DriveError::Finalize(_, r) => r,
        }
    }
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = self.run();
        match self {
            DriveError::Timeout(_, t) => write!(f, "no terminal phase within {t:?} ({} rounds", run.rounds.len())?,
            DriveError::Abort(e, _) => write!(f, "abort failed: {e} ({} rounds", run.rounds.len())?,
            DriveError::Finalize(e, _) => write!(f, "finalize failed: {e} ({} rounds", run.rounds.len())?,
        }
        match run.last() {
            Some(last) => write!(f, ", last: {last})")?,
            None => write!(f, ")")?,
        }
        if let Some(e) = run.handler_errors.last() {
            write!(f, "; last handler error: {e}")?;
        }
        if !run.logs.is_empty() {
            write!(f, "; plugin logs:\n{}", run.log_text())?;
        }
        Ok(())
    }
}

impl std::error::Error for DriveError {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::{Result, TaskExecutionContext, Transition};

    /// Fails `failures` rounds (after putting state), then succeeds; counts calls.
    #[derive(Default)]
    struct Flaky {
        failures: usize,
        handled: AtomicUsize,
        aborted: AtomicUsize,
        finalized: AtomicUsize,
    }

    impl Plugin for Flaky {
        fn id(&self) -> &str {
            "flaky"
        }
        fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
            let n = self.handled.fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                ctx.plugin_state_reader().get_bytes()?,
                (0, None),
                "a failed round's state put is dropped"
            );
            if n < self.failures {
                ctx.plugin_state_writer().put_bytes(1, vec![n as u8])?;
                log::warn!("round {n} fails");
                return Err(PluginError::system("Flaky", format!("round {n}")));
            }
            Ok(Transition::ephemeral(PhaseInfo::success(None)))
        }
        fn abort(&self, _: &dyn TaskExecutionContext) -> Result<()> {
            self.aborted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn finalize(&self, _: &dyn TaskExecutionContext) -> Result<()> {
            self.finalized.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn handler_errors_drop_the_rounds_state_and_ten_in_a_row_end_the_attempt() {
        let flaky = Flaky {
            failures: 3,
            ..Flaky::default()
        };
        let ctx = TestTaskContext::new();
        let run = Driver::new().delay(Duration::ZERO).run(&flaky, &ctx).unwrap();
        assert_eq!(run.handler_errors.len(), 3);
        assert_eq!(run.phases(), [Phase::SUCCESS]);
        assert_eq!(run.logs.iter().filter(|l| l.level == log::Level::Warn).count(), 3);
        assert_eq!(flaky.finalized.load(Ordering::SeqCst), 1);

        let hopeless = Flaky {
            failures: usize::MAX,
            ..Flaky::default()
        };
        let run = Driver::new().delay(Duration::ZERO).run(&hopeless, &ctx).unwrap();
        assert!(
            matches!(&run.outcome, Outcome::RoundFailures(e) if e.code == "Flaky"),
            "{run:?}"
        );
        assert_eq!(run.phase(), Phase::RETRYABLE_FAILURE);
        assert_eq!(hopeless.handled.load(Ordering::SeqCst), 10);
        assert_eq!(
            (
                hopeless.aborted.load(Ordering::SeqCst),
                hopeless.finalized.load(Ordering::SeqCst)
            ),
            (0, 1)
        );
    }

    /// Running forever; signals itself from a thread when asked.
    struct Forever {
        signal_after: Option<Duration>,
        aborted: Arc<AtomicUsize>,
    }

    impl Plugin for Forever {
        fn id(&self) -> &str {
            "forever"
        }
        fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
            if let Some(after) = self.signal_after {
                let signal = ctx.task_refresh_indicator();
                std::thread::spawn(move || {
                    std::thread::sleep(after);
                    signal.signal();
                });
            }
            Ok(Transition::ephemeral(PhaseInfo::running(0, None)))
        }
        fn abort(&self, _: &dyn TaskExecutionContext) -> Result<()> {
            self.aborted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_timeout_aborts_and_finalizes_and_says_what_it_saw() {
        let plugin = Forever {
            signal_after: None,
            aborted: Arc::default(),
        };
        let err = Driver::new()
            .delay(Duration::from_millis(20))
            .timeout(Duration::from_millis(100))
            .run(&plugin, &TestTaskContext::new())
            .unwrap_err();
        assert!(matches!(err, DriveError::Timeout(..)), "{err}");
        assert!(err.run().aborted && err.run().finalized);
        assert_eq!(plugin.aborted.load(Ordering::SeqCst), 1);
        let rounds = err.run().rounds.len();
        assert!((2..=10).contains(&rounds), "a pause between unchanged rounds: {rounds}");
        assert!(err.to_string().contains("no terminal phase within"), "{err}");
    }

    #[test]
    fn a_signal_cuts_the_pause_short() {
        let plugin = Forever {
            signal_after: Some(Duration::from_millis(5)),
            aborted: Arc::default(),
        };
        let started = Instant::now();
        let run = Driver::new()
            .delay(Duration::from_secs(60))
            .abort_after_rounds(4)
            .run(&plugin, &TestTaskContext::new())
            .unwrap();
        assert_eq!(run.rounds.len(), 4);
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
        assert_eq!(run.outcome, Outcome::Aborted);
    }
}
