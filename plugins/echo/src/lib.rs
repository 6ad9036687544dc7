//! The `echo` plugin: a task's outputs are its inputs.
//!
//! It is Kozmo's default plugin (it takes task types nobody registered) and
//! the example plugin authors copy: one struct implementing
//! [`Plugin`], one [`PluginEntry`], one `export_plugins!` call. It uses only
//! the API released in kozmo-interface 1.0.0 (the compatibility suite
//! builds it against that release), so not the kit.

use kozmo_interface::{PhaseInfo, Plugin, PluginEntry, PluginLoader, Result, TaskExecutionContext, Transition};

/// Returns its inputs as its outputs, in one round.
pub struct Echo;

impl Plugin for Echo {
    fn id(&self) -> &str {
        "echo"
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let inputs = ctx.input_reader().get()?;
        log::info!(
            "echo: {} returns {} input(s) as outputs",
            ctx.task_execution_metadata().task_execution_id().generated_name(),
            inputs.len()
        );
        ctx.output_writer().put_outputs(inputs)?;
        Ok(Transition::ephemeral(PhaseInfo::success(None)))
    }

    fn abort(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
        Ok(())
    }

    fn finalize(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
        Ok(())
    }
}

/// The entry: id `echo`, task type `echo`, default plugin.
pub fn entry() -> PluginEntry {
    PluginEntry {
        id: "echo".into(),
        registered_task_types: vec!["echo".into()],
        load_plugin: PluginLoader::new(|_setup| Ok(Box::new(Echo))),
        is_default: true,
    }
}

kozmo_interface::export_plugins![entry()];

#[cfg(test)]
mod tests {
    use kozmo_interface::testing::{drive, TestTaskContext};
    use kozmo_interface::{Literal, Phase};

    use super::*;

    #[test]
    fn outputs_are_the_inputs() {
        let ctx = TestTaskContext::new()
            .with_input("greeting", Literal::String("hello".into()))
            .with_input("n", Literal::Integer(3));
        let t = Echo.handle(&ctx).unwrap();
        assert_eq!(t.info().phase(), Phase::SUCCESS);
        assert_eq!(ctx.outputs().unwrap(), ctx.inputs);
    }

    #[test]
    fn driven_like_the_daemon_it_succeeds_in_one_round_and_says_so() {
        let ctx = TestTaskContext::new()
            .with_unique_generated_name()
            .with_input("x", Literal::Integer(1));
        let run = drive(&Echo, &ctx).unwrap();
        assert_eq!(run.phases(), [Phase::SUCCESS]);
        assert!(run.finalized);
        assert!(run.logged("returns 1 input(s) as outputs"), "{}", run.log_text());
    }
}
