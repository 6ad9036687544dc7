//! A small W3C WebDriver client over `ureq` for the console's browser test:
//! starts `chromedriver` on a free loopback port, opens headless Chromium
//! through it, and stops both by pid when dropped (on a panic too). Only the
//! few commands the test needs: navigate, find, click, type, run a script,
//! take a screenshot.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key WebDriver uses for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

const INSTALL: &str = "the console's browser test drives headless Chromium through chromedriver: install them \
                       (Debian/Ubuntu: `apt-get install chromium chromium-driver`; .ci/run does) and make sure \
                       `chromium` and `chromedriver` are on PATH";

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The browser binary: `$CHROME` or `chromium` (Debian), `chromium-browser`.
fn browser_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROME") {
        return PathBuf::from(p);
    }
    ["chromium", "chromium-browser"]
        .iter()
        .find_map(|n| on_path(n))
        .unwrap_or_else(|| panic!("no chromium on PATH: {INSTALL}"))
}

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: Option<String>,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of
    /// `width`×`height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let chrome = browser_binary();
        let driver_bin = on_path("chromedriver").unwrap_or_else(|| panic!("no chromedriver on PATH: {INSTALL}"));
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Dies with the test process even if it is killed.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver did not start ({e}): {INSTALL}"));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build();
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            agent,
            _profile: profile,
        };
        let start = Instant::now();
        while b
            .raw("GET", "/status", None)
            .map(|v| v["value"]["ready"] != true)
            .unwrap_or(true)
        {
            if let Ok(Some(status)) = b.driver.try_wait() {
                panic!("chromedriver exited ({status}): {INSTALL}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver not ready in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-breakpad", "--disable-crash-reporter", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", b._profile.path().display()),
                ]
            }
        }}});
        let v = b
            .raw("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("chromium did not start through chromedriver: {e}; {INSTALL}"));
        b.session = Some(v["value"]["sessionId"].as_str().expect("a session id").to_string());
        b
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        let resp = match body {
            Some(b) => req.send_json(b),
            None if method == "POST" => req.send_json(json!({})),
            None => req.call(),
        };
        match resp {
            Ok(r) => r.into_json::<Value>().map_err(|e| e.to_string()),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                Err(format!(
                    "{method} {path}: {code} {}: {}",
                    v["value"]["error"], v["value"]["message"]
                ))
            }
            Err(e) => Err(format!("{method} {path}: {e}")),
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let s = self.session.as_deref().expect("a session");
        self.raw(method, &format!("/session/{s}{path}"), body)
            .unwrap_or_else(|e| panic!("webdriver: {e}"))["value"]
            .take()
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns
    /// what it returns.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let s = self.session.as_deref().expect("a session");
        self.raw(
            "POST",
            &format!("/session/{s}/element"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v["value"][ELEMENT].as_str().map(str::to_string))
    }

    /// Waits up to `within` for an element matching `css`.
    pub fn wait_for(&self, css: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                start.elapsed() < within,
                "no element {css} within {within:?}; page text:\n{}",
                self.text_of("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `within` until `check` (a script returning a value) returns
    /// something truthy; returns it.
    pub fn wait_until(&self, what: &str, script: &str, args: Value, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.exec(script, args.clone());
            if !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0) {
                return v;
            }
            assert!(
                start.elapsed() < within,
                "{what}: not within {within:?}; page text:\n{}",
                self.text_of("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks an element (a real pointer click).
    pub fn click(&self, element: &str) {
        self.cmd("POST", &format!("/element/{element}/click"), None);
    }

    /// Clicks the first element matching `css`, found again if the page
    /// replaced it in between (live updates redraw parts of the page).
    pub fn click_css(&self, css: &str, within: Duration) {
        let s = self.session.as_deref().expect("a session");
        let start = Instant::now();
        loop {
            let e = self.wait_for(css, within);
            match self.raw("POST", &format!("/session/{s}/element/{e}/click"), None) {
                Ok(_) => return,
                Err(err) if err.contains("stale element") && start.elapsed() < within => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(err) => panic!("clicking {css}: {err}"),
            }
        }
    }

    /// Types `text` into an element.
    pub fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The visible text of the first element matching `css` ("" if none).
    pub fn text_of(&self, css: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The page as a PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        decode_base64(b64.as_str().expect("base64 text"))
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": width, "height": height})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium the polite way, then stops whatever is left by pid:
        // the driver's children (the browser) and the driver.
        if let Some(s) = self.session.take() {
            let _ = self.raw("DELETE", &format!("/session/{s}"), None);
        }
        let driver = self.driver.id() as i32;
        for pid in descendants(driver) {
            // SAFETY: plain kill(2) of a pid that is our driver's descendant.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Every live process whose chain of parents reaches `root`.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    parent
        .keys()
        .copied()
        .filter(|&p| {
            let mut cur = p;
            for _ in 0..64 {
                match parent.get(&cur) {
                    Some(&pp) if pp == root => return true,
                    Some(&pp) if pp > 1 => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

fn decode_base64(text: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("aGV5"), b"hey");
}
