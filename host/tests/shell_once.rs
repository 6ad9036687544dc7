//! A shell command runs once even when the daemon is SIGKILLed after
//! starting it but before the round that started it was committed: the
//! restarted daemon adopts the running (or finished) command from the
//! attempt's working directory instead of starting it again.

mod daemon_harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_harness::Daemon;
use kozmo_host::client::Client;
use serde_json::{json, Value};

const COMMANDS: usize = 300;
const SUBMITTERS: usize = 3;
const KILLS: usize = 6;

fn task(id: &str, ledger: &str) -> Value {
    json!({
        "execution_id": id, "type": "shell",
        "container": {"command": ["sh", "-c", "echo \"$1\" >> \"$2\"; sleep 0.2", "sh", id, ledger]},
    })
}

#[test]
fn sigkill_while_commands_start_never_runs_one_twice() {
    let root = tempfile::tempdir().unwrap();
    let ledger = root.path().join("ledger").to_string_lossy().into_owned();
    // The kills are the test's, not the plugin's: crash-loop protection
    // (which counts any unclean stop during a plugin call) is off, or an
    // execution inside `handle` at two kills in a row would be failed.
    let mut d = Daemon::start(root.path(), &["kozmo-plugin-shell"], &["--crash-loop-limit", "0"]);
    let ids: Vec<String> = (0..COMMANDS).map(|i| format!("once-{i:03}")).collect();
    // Submitters keep submitting (a resubmission is idempotent) through the
    // kills, so commands are being started whenever a kill lands.
    let base = Arc::new(Mutex::new(d.client.base().to_string()));
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let ids: Vec<String> = ids.iter().skip(s).step_by(SUBMITTERS).cloned().collect();
            let (base, ledger) = (base.clone(), ledger.clone());
            std::thread::spawn(move || {
                for id in ids {
                    let mut tries = 0;
                    loop {
                        let url = base.lock().unwrap().clone();
                        if Client::new(&url, None)
                            .post("/v1/executions", &task(&id, &ledger))
                            .is_ok()
                        {
                            break;
                        }
                        tries += 1;
                        assert!(tries < 3000, "{id} could not be submitted");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
        .collect();
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(150 + 40 * k as u64));
        d.signal("KILL");
        d.restart();
        *base.lock().unwrap() = d.client.base().to_string();
    }
    for s in submitters {
        s.join().unwrap();
    }
    for id in &ids {
        let v = d.wait_terminal(id);
        assert_eq!(v["phase"], "Succeeded", "{v}; log:\n{}", d.log_text());
    }
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&ledger).unwrap().lines() {
        *runs.entry(line.to_string()).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "commands that ran more than once: {twice:?}");
    assert_eq!(runs.len(), ids.len(), "every command ran");
    let log = d.log_text();
    let adopted = log.matches("instead of starting it again").count();
    eprintln!(
        "{COMMANDS} commands, {KILLS} SIGKILLs while they started: {adopted} adopted after a restart, each ran once"
    );
}
