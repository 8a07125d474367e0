//! A real browser for the console's tests: Debian's Chromium, headless,
//! driven through ChromeDriver's W3C WebDriver endpoints.
//!
//! The handful of WebDriver calls the tests need (new session, navigate,
//! run a script, screenshot, the browser's log) are plain HTTP and JSON,
//! sent with reqwest here rather than through a WebDriver client crate,
//! whose builds bring a second HTTP stack for the same few requests.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// A headless Chromium with its ChromeDriver, ended on drop.
pub struct Browser {
    driver: Child,
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver and a Chromium session of 1280×800; `None`
    /// (the test skips, or fails on CI) when either is not installed.
    pub async fn start() -> Option<Browser> {
        let driver = crate::program("chromedriver")?;
        let chromium = crate::program("chromium")?;
        let port = crate::free_port().expect("a free port");
        // Its own process group, which the Chromium it starts joins: a
        // test that fails before `quit` still leaves no browser behind.
        let driver = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(crate::unique_name("vigil_browser"));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            driver,
            client,
            session: String::new(),
            profile,
        };
        let created = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(capabilities),
            )
            .await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"));
        browser.session = format!("{base}/session/{id}");
        Some(browser)
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("chromedriver answers");
        let bytes = response.bytes().await.expect("chromedriver's answer");
        let answer: Value = serde_json::from_slice(&bytes).expect("JSON from chromedriver");
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {url}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn session_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn goto(&self, url: &str) {
        self.session_call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        self.wait_loaded().await;
    }

    /// Waits until the current document has loaded (after a navigation or
    /// a form sent).
    pub async fn wait_loaded(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.eval("return document.readyState").await != "complete" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page did not load"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body: `return …`) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.session_call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The current page's path and query.
    pub async fn location(&self) -> String {
        let found = self
            .eval("return location.pathname + location.search")
            .await;
        found.as_str().unwrap_or_default().to_owned()
    }

    /// Presses and releases a key, as a person at the keyboard does:
    /// `"\u{E004}"` is Tab, `"\u{E007}"` Enter (WebDriver's key codes).
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key},
            {"type": "keyUp", "value": key},
        ]}]});
        self.session_call(reqwest::Method::POST, "/actions", Some(actions))
            .await;
    }

    /// Resizes the window (the viewport follows).
    pub async fn resize(&self, width: u32, height: u32) {
        self.session_call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The browser's log since the last call: JavaScript errors and failed
    /// requests are its `SEVERE` entries.
    pub async fn severe(&self) -> Vec<String> {
        let entries = self
            .session_call(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Writes a PNG of the viewport to `target/console-screenshots/<name>.png`
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self
            .session_call(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        let dir = screenshots();
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot written");
        path
    }
}

/// `target/console-screenshots` of the workspace.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

impl Browser {
    /// Ends the session (Chromium quits) and ChromeDriver.
    pub async fn quit(self) {
        self.session_call(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
