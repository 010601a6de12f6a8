//! The admin listener's status page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`; the test is skipped, saying so, where they are
//! not installed). It signs in with an admin login, finds a trader's session, ends it, and sees
//! the `session.revoked` event in the audit tail, all under the page's strict CSP.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ADMIN, Gateway, Setup, TRADER, route, upstream};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, candidates: &[&str]) -> Option<String> {
    std::env::var(env)
        .ok()
        .into_iter()
        .chain(candidates.iter().map(|c| c.to_string()))
        .find(|p| std::path::Path::new(p).exists())
}

/// A WebDriver session on a chromedriver this test started (and stops when dropped).
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start(driver: &str, chromium: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let ready = Instant::now();
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(ready.elapsed() < Duration::from_secs(10), "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let r: Value =
            http.post(format!("{root}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        Self { driver: child, base: format!("{root}/session/{id}"), http, _profile: profile }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut r = self.http.request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            r = r.json(&body);
        }
        let v: Value = r.send().await.unwrap().json().await.unwrap();
        assert!(v["value"].get("error").is_none(), "{path}: {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({"url": url})).await;
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", json!({"script": js, "args": []})).await
    }

    async fn element(&self, css: &str) -> String {
        let v =
            self.cmd(reqwest::Method::POST, "/element", json!({"using": "css selector", "value": css})).await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/value"), json!({"text": text})).await;
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/click"), json!({})).await;
    }

    /// Waits (up to 10 s) until the text of `css` contains `want`.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let js = format!("const e = document.querySelector({css:?}); return e ? e.textContent : null;");
        let started = Instant::now();
        loop {
            let text = self.script(&js).await.as_str().unwrap_or_default().to_string();
            if text.contains(want) {
                return text;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "`{css}` never showed `{want}`: {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_ends_a_session_from_the_status_page() {
    let (Some(driver), Some(chromium)) = (
        find_program("BO_GATEWAY_CHROMEDRIVER", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]),
        find_program("BO_GATEWAY_CHROMIUM", &["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
    ) else {
        assert!(
            std::env::var_os("BO_GATEWAY_REQUIRE_BROWSER").is_none(),
            "BO_GATEWAY_REQUIRE_BROWSER is set but chromium or chromedriver is missing"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed");
        return;
    };
    let up = upstream::start("bo").await;
    let gw =
        Gateway::start(Setup { routes: route("api", "/api", &up.url(), ""), ..Default::default() }).await;
    // What a client sends is shown as text, never markup: this agent must not become an element.
    let agent = "<img id=pwned src=/x>";
    let victim: Value = gw
        .client
        .post(gw.url("/auth/token"))
        .header("user-agent", agent)
        .json(&json!({"login": TRADER.0, "password": TRADER.1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = victim["accessToken"].as_str().unwrap().to_string();
    let sid = support::claims(&access)["sid"].as_str().unwrap().to_string();
    let call = || gw.client.get(gw.url("/api/x")).bearer_auth(&access).send();
    assert_eq!(call().await.unwrap().status(), 200);

    let page = reqwest::get(gw.admin_url("/")).await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");

    let b = Browser::start(&driver, &chromium).await;
    b.goto(&gw.admin_url("/")).await;
    // The page's own script ran under its CSP: it filled the routes table from /readyz.
    assert!(b.wait_text("#routes tbody", "api").await.contains("1 / 1"));
    assert_eq!(b.script("return document.querySelectorAll('script:not([src])').length").await, 0);

    b.type_into("#login", ADMIN.0).await;
    b.type_into("#password", "wrong").await;
    b.click("#signin-button").await;
    b.wait_text("#signin-error", "Wrong login or password").await;
    b.script("document.getElementById('login').value = ''; return null").await;
    b.type_into("#login", ADMIN.0).await;
    b.type_into("#password", ADMIN.1).await;
    b.click("#signin-button").await;
    b.wait_text("#who", "alice").await;
    let stored = b.script("return [document.cookie, localStorage.length, sessionStorage.length]").await;
    assert_eq!(stored, json!(["", 0, 0]), "the token is kept in memory only");

    b.type_into("#search-login", TRADER.0).await;
    b.click("#search-button").await;
    let row = format!("#sessions tr[data-session='{sid}']");
    assert!(b.wait_text(&row, TRADER.0).await.contains(agent));
    assert_eq!(b.script("return document.getElementById('pwned') === null").await, true);
    if let Ok(path) = std::env::var("BO_GATEWAY_SCREENSHOT") {
        use base64::Engine;
        let png = b.cmd(reqwest::Method::GET, "/screenshot", json!({})).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    b.click(&format!("{row} button.end-session")).await;
    b.wait_text("#audit tbody", "session.revoked").await;
    assert_eq!(b.script(&format!("return document.querySelector(\"{row}\") === null")).await, true);
    assert_eq!(call().await.unwrap().status(), 401, "the session the page ended is over");
    let _ = b.cmd(reqwest::Method::DELETE, "", json!({})).await;
}
