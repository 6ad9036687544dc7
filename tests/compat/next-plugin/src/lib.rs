//! A plugin built against the simulated next minor (ABI 1.1): it calls the
//! host service 1.1 added and implements the plugin method 1.1 added.

use kozmo_interface::abi::host_abi;
use kozmo_interface::{Literal, PhaseInfo, Plugin, PluginEntry, PluginLoader, Result, TaskExecutionContext, Transition};

struct Next;

impl Plugin for Next {
    fn id(&self) -> &str {
        "next"
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let mut out = ctx.input_reader().get()?;
        let answer = match ctx.simulated_host_service("ping") {
            Ok(text) => text,
            Err(e) => format!("error {}: {}", e.code, e.message),
        };
        out.insert("host_service".into(), Literal::String(answer));
        let abi = host_abi().map(|v| v.to_string()).unwrap_or_default();
        out.insert("host_abi".into(), Literal::String(abi));
        ctx.output_writer().put_outputs(out)?;
        Ok(Transition::ephemeral(PhaseInfo::success(None)))
    }

    fn simulated_plugin_method(&self) -> Option<String> {
        Some("plugin 1.1 answered".into())
    }
}

kozmo_interface::export_plugins![PluginEntry {
    id: "next".into(),
    registered_task_types: vec!["next".into()],
    load_plugin: PluginLoader::new(|_| Ok(Box::new(Next))),
    is_default: false,
}];
