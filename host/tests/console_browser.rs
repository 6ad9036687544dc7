//! The web console in a real browser: headless Chromium (driven through
//! chromedriver, `webdriver/`) against the real daemon with the real shell
//! and sleep-quota plugins. A submitted shell task appears and turns
//! Succeeded without a reload; a quota-limited task says why it waits; the
//! abort button aborts; stdout is readable; with a token the page asks for
//! it and keeps it out of URLs and the page. Screenshots land in
//! `target/console-screenshots/`, and in `docs/` with
//! `KOZMO_UPDATE_SCREENSHOTS=1`.

mod daemon_harness;
mod webdriver;

use std::time::Duration;

use daemon_harness::Daemon;
use serde_json::{json, Value};
use webdriver::Browser;

const PLUGINS: [&str; 2] = ["kozmo-plugin-shell", "kozmo-plugin-sleep-quota"];
const WITHIN: Duration = Duration::from_secs(30);

fn shell(id: &str, script: &str) -> Value {
    json!({
        "type": "shell",
        "execution_id": id,
        "id": {"project": "demo", "domain": "development", "name": "console-shell", "version": "1"},
        "metadata": {"retries": 0, "timeout": "1m"},
        "interface": {"outputs": {"exit_code": {"type": "integer"}, "stdout": {"type": "string"}}},
        "container": {"command": ["sh", "-c", script]},
    })
}

fn nap(id: &str, seconds: u32) -> Value {
    json!({
        "type": "sleep-quota",
        "execution_id": id,
        "id": {"project": "demo", "domain": "development", "name": "nap", "version": "1"},
        "metadata": {"retries": 0, "timeout": "5m"},
        "interface": {"outputs": {"slept_seconds": {"type": "float"}}},
        "inputs": {"seconds": seconds},
    })
}

fn save_screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let root = kozmo_testkit::workspace_root();
    let dir = root.join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &png).unwrap();
    if std::env::var_os("KOZMO_UPDATE_SCREENSHOTS").is_some() {
        std::fs::write(root.join("docs").join(name), &png).unwrap();
    }
}

/// The phase badge of an execution's row in the list.
const ROW_PHASE: &str = "const r = document.querySelector(`tr[data-id=\"${arguments[0]}\"] .badge`); \
                         return r ? r.dataset.phase : null;";

#[test]
fn the_console_follows_executions_explains_waits_aborts_and_shows_stdout() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_env(root.path(), &PLUGINS, &[], &[("KOZMO_SECRET_SLEEP_QUOTA", "1")]);
    let base = d.client.base().to_string();
    let browser = Browser::start(1280, 900);

    // Some history for the list.
    d.submit(&shell("hello-console", "echo 'hello from the console test'"));
    d.submit(&shell("failing-step", "echo 'error: no such input' >&2; exit 3"));
    d.wait_terminal("hello-console");
    d.wait_terminal("failing-step");

    browser.goto(&format!("{base}/"));
    browser.wait_for("#executions tr[data-id=\"hello-console\"]", WITHIN);
    // A marker a reload would lose.
    browser.exec("window.kozmoNoReload = 42;", json!([]));
    // The daemon has watch streams: the page follows them rather than poll.
    browser.wait_until(
        "the page follows the watch stream",
        "const l = document.querySelector('#live'); return l && l.textContent === 'live (server events)';",
        json!([]),
        WITHIN,
    );

    // A shell task submitted now appears, and turns Succeeded, live.
    d.submit(&shell("live-shell", "sleep 1.5; echo 'live and done'"));
    browser.wait_until(
        "the new shell task appears in the list",
        ROW_PHASE,
        json!(["live-shell"]),
        WITHIN,
    );
    let phase = browser.wait_until(
        "the shell task turns Succeeded in the list",
        &format!("const p = (() => {{ {ROW_PHASE} }})(); return p === 'Succeeded' ? p : null;"),
        json!(["live-shell"]),
        WITHIN,
    );
    assert_eq!(phase, "Succeeded");
    assert_eq!(
        browser.exec("return window.kozmoNoReload;", json!([])),
        42,
        "the page was reloaded"
    );

    let pager = browser.exec(
        "return [document.querySelector('#page-prev').disabled, document.querySelector('#page-next').disabled];",
        json!([]),
    );
    assert_eq!(pager, json!([true, true]), "one page: no paging");

    // Two naps with a quota of 1: one holds the token, the other waits.
    d.submit(&nap("nap-a", 60));
    d.submit(&nap("nap-b", 60));
    let waits = |id: &str| {
        let (_, v) = d.client.get(&format!("/v1/executions/{id}")).unwrap();
        v["plugin_phase"] == "PhaseWaitingForResources"
    };
    let start = std::time::Instant::now();
    let (holder, waiter) = loop {
        match (waits("nap-a"), waits("nap-b")) {
            (false, true) => break ("nap-a", "nap-b"),
            (true, false) => break ("nap-b", "nap-a"),
            _ => {}
        }
        assert!(
            start.elapsed() < WITHIN,
            "no nap waits for the quota; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    browser.wait_until(
        "the waiting nap appears in the list",
        ROW_PHASE,
        json!([waiter]),
        WITHIN,
    );
    save_screenshot(&browser, "console-list.png");

    // Its page says why it waits: the namespace, 1 / 1 in use, first in line.
    browser.click_css(&format!("tr[data-id=\"{waiter}\"] a"), WITHIN);
    browser.wait_until(
        "the waiting nap's page explains the wait",
        "const r = document.querySelector('#wait-reason'); return r && r.dataset.kind === 'resources' ? r.innerText : null;",
        json!([]),
        WITHIN,
    );
    let wait = browser.text_of("#wait");
    assert!(wait.contains("Waiting for a resource token"), "{wait}");
    assert!(wait.contains("quota for sleep-quota slots exhausted"), "{wait}");
    assert!(wait.contains("sleep-quota:slots"), "{wait}");
    assert!(wait.contains("1 / 1"), "{wait}");
    assert!(wait.contains("1 of 1"), "its place in line: {wait}");
    assert!(wait.contains(holder), "who holds the token: {wait}");
    save_screenshot(&browser, "console-execution.png");
    assert_eq!(
        browser.exec("return window.kozmoNoReload;", json!([])),
        42,
        "the page was reloaded"
    );

    // The holder's page: abort it with the button (two clicks: arm, confirm).
    browser.goto(&format!("{base}/#/executions/{holder}"));
    let abort = browser.wait_for("#abort:not([hidden])", WITHIN);
    browser.click(&abort);
    assert_eq!(browser.text_of("#abort"), "Confirm abort");
    browser.click(&abort);
    browser.wait_until(
        "the aborted nap shows Aborted",
        "const b = document.querySelector('#exec-phase .badge'); return b && b.dataset.phase === 'Aborted';",
        json!([]),
        WITHIN,
    );
    let v = d.wait_terminal(holder);
    assert_eq!(v["phase"], "Aborted", "{v}");
    assert!(
        browser.find("#abort:not([hidden])").is_none(),
        "no abort button on a finished execution"
    );
    // The waiter gets the freed token.
    d.wait_phase_where(waiter, |v| v["plugin_phase"] == "PhaseRunning", WITHIN);

    // Stdout of the shell task, from the data store, through the page.
    browser.goto(&format!("{base}/#/executions/live-shell"));
    browser.click_css("#files a[data-log=\"stdout\"]", WITHIN);
    let text = browser.wait_until(
        "stdout is shown",
        "const v = document.querySelector('#file-view'); return v && !v.hidden ? v.textContent : null;",
        json!([]),
        WITHIN,
    );
    assert_eq!(text, "live and done\n");
    let outputs = browser.text_of("#outputs");
    assert!(outputs.contains("live and done"), "{outputs}");
    let timeline = browser.text_of("#timeline");
    assert!(
        timeline.contains("PhaseSuccess") && timeline.contains("terminal"),
        "{timeline}"
    );

    // A failed task's error and stderr.
    browser.goto(&format!("{base}/#/executions/failing-step"));
    browser.wait_for("#exec-error", WITHIN);
    assert!(browser.text_of("#exec-error").contains("NonZeroExit"));
    browser.click_css("#files a[data-log=\"stderr\"]", WITHIN);
    let text = browser.wait_until(
        "stderr is shown",
        "const v = document.querySelector('#file-view'); return v && !v.hidden ? v.textContent : null;",
        json!([]),
        WITHIN,
    );
    assert_eq!(text, "error: no such input\n");

    // The plugins and quotas pages.
    browser.goto(&format!("{base}/#/plugins"));
    browser.wait_for("#plugins tr[data-id=\"shell\"]", WITHIN);
    let plugins = browser.text_of("#plugins");
    assert!(
        plugins.contains("sleep-quota") && plugins.contains("in the daemon"),
        "{plugins}"
    );
    browser.goto(&format!("{base}/#/quotas"));
    browser.wait_for("#quotas tr[data-namespace]", WITHIN);
    let quotas = browser.text_of("#quotas");
    assert!(
        quotas.contains("sleep-quota:slots") && quotas.contains("1 / 1"),
        "{quotas}"
    );
    assert!(quotas.contains(waiter), "the token's holder now: {quotas}");

    // A phone-sized window still shows the list.
    browser.resize(390, 844);
    browser.goto(&format!("{base}/"));
    browser.wait_for("#executions tr[data-id=\"live-shell\"]", WITHIN);
    let _ = d.client.post(&format!("/v1/executions/{waiter}/abort"), &json!({}));
}

#[test]
fn with_a_token_the_console_asks_for_it_and_keeps_it_out_of_urls() {
    const TOKEN: &str = "console-test-token-5b1e";
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &PLUGINS, &["--api-token", TOKEN]);
    let base = d.client.base().to_string();
    d.submit(&shell("behind-a-token", "echo guarded"));
    d.wait_terminal("behind-a-token");
    let browser = Browser::start(1280, 900);

    browser.goto(&format!("{base}/"));
    browser.wait_for("#token-panel:not([hidden])", WITHIN);
    assert!(
        browser.find("#executions").is_none(),
        "nothing is listed without the token"
    );

    // A wrong token is refused and the page asks again.
    let input = browser.wait_for("#token-input", WITHIN);
    browser.type_into(&input, "not-the-token");
    browser.click(&browser.wait_for("#token-submit", WITHIN));
    browser.wait_until(
        "a wrong token is refused",
        "const e = document.querySelector('#token-error'); return e && !e.hidden ? e.innerText : null;",
        json!([]),
        WITHIN,
    );

    browser.type_into(&input, TOKEN);
    browser.click(&browser.wait_for("#token-submit", WITHIN));
    browser.wait_for("#executions tr[data-id=\"behind-a-token\"]", WITHIN);
    assert!(browser.find("#token-panel:not([hidden])").is_none());

    // Without the watch streams (refused here in the page), the list polls
    // and still follows a new execution to its end.
    browser.exec(
        "const real = window.fetch; \
         window.fetch = (url, opts) => String(url).includes('/watch') \
           ? Promise.resolve(new Response('{}', {status: 503, headers: {'content-type': 'application/json'}})) \
           : real(url, opts); \
         location.hash = '#/?type=shell';",
        json!([]),
    );
    browser.wait_until(
        "the list falls back to polling",
        "const l = document.querySelector('#live'); return l && l.textContent === 'polling every 1 s';",
        json!([]),
        WITHIN,
    );
    d.submit(&shell("polled", "sleep 1; echo polled"));
    browser.wait_until(
        "a polled list sees the execution succeed",
        &format!("const p = (() => {{ {ROW_PHASE} }})(); return p === 'Succeeded';"),
        json!(["polled"]),
        WITHIN,
    );

    // Paging: 50 a page, newest first.
    let batch: Vec<Value> = (0..55).map(|i| shell(&format!("many-{i:02}"), "true")).collect();
    let (status, _) = d.client.post("/v1/executions:batch", &json!(batch)).unwrap();
    assert_eq!(status, 200);
    browser.exec("location.hash = '#/';", json!([]));
    browser.wait_until(
        "the list has two pages",
        "const i = document.querySelector('.pager .muted'); return i && i.textContent.includes('page 1 of 2');",
        json!([]),
        WITHIN,
    );
    assert_eq!(
        browser.exec(
            "return document.querySelectorAll('#executions tbody tr').length;",
            json!([])
        ),
        50
    );
    browser.click_css("#page-next", WITHIN);
    browser.wait_until(
        "the second page",
        "const i = document.querySelector('.pager .muted'); return i && i.textContent.includes('page 2 of 2');",
        json!([]),
        WITHIN,
    );
    assert!(
        browser.find("#executions tr[data-id=\"behind-a-token\"]").is_some(),
        "the oldest is on page 2"
    );
    assert!(
        browser.url().contains("page=1"),
        "the page is in the URL: {}",
        browser.url()
    );

    // Kept for the session only, in sessionStorage; never in the URL, the
    // page or localStorage.
    let stored = browser.exec("return sessionStorage.getItem('kozmo.api-token');", json!([]));
    assert_eq!(stored, TOKEN);
    let leaked = browser.exec(
        "return [location.href, document.documentElement.outerHTML, JSON.stringify(localStorage)]\
         .some(s => s.includes(arguments[0]));",
        json!([TOKEN]),
    );
    assert_eq!(leaked, false);
    assert!(!browser.url().contains(TOKEN));

    // Another page of the same tab does not ask again.
    browser.goto(&format!("{base}/#/executions/behind-a-token"));
    browser.wait_for("#files a[data-log=\"stdout\"]", WITHIN);
    assert!(browser.find("#token-panel:not([hidden])").is_none());

    // A token that stops working (changed on the daemon) is dropped and
    // asked for again.
    browser.exec("sessionStorage.setItem('kozmo.api-token', 'an-old-token');", json!([]));
    browser.goto(&format!("{base}/#/plugins"));
    let said = browser.wait_until(
        "a refused stored token is asked for again",
        "const e = document.querySelector('#token-error'); \
         return document.querySelector('#token-panel:not([hidden])') && e && !e.hidden ? e.innerText : null;",
        json!([]),
        WITHIN,
    );
    assert_eq!(said, "The token was refused.");
    assert_eq!(
        browser.exec("return sessionStorage.getItem('kozmo.api-token');", json!([])),
        Value::Null
    );

    // The daemon's log never holds it either.
    assert!(!d.log_text().contains(TOKEN));
}
