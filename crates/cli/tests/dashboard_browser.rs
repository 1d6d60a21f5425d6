//! The dashboard in headless Chromium, through WebDriver (chromedriver +
//! fantoccini), against real processes: a worker runs a long job and is
//! killed with SIGKILL; the Stuck-jobs page shows the job with the
//! expired-lease diagnosis; a logged-in admin clicks Requeue; a second
//! worker finishes the job, and the Job page says so. Every page is saved
//! as a PNG in `target/dashboard-screenshots/` (or `$STUCKLESS_SCREENSHOTS`);
//! docs/screenshots/ holds copies.
//!
//! Needs `chromedriver` and `chromium` on PATH (Debian: `apt-get install
//! chromium chromium-driver`; `.ci/run` installs them). Without them the
//! test fails saying so, unless `STUCKLESS_SKIP_BROWSER=1` is set.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, http, wait_until, WorkerProc, BIN};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use stuckless_core::{JobStatus, NewJob};
use stuckless_tests::TestDb;

const TOKEN: &str = "browser-test-admin-token-42";
const SKIP: &str = "STUCKLESS_SKIP_BROWSER";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("STUCKLESS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(browser: &fantoccini::Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: a PNG");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn click(browser: &fantoccini::Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn text(browser: &fantoccini::Client) -> String {
    browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_is_found_requeued_and_finished_from_the_browser() {
    if !(on_path("chromedriver") && on_path("chromium")) {
        if std::env::var(SKIP).is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: chromedriver or chromium missing and {SKIP}=1");
            return;
        }
        panic!(
            "the browser test needs chromedriver and chromium on PATH: \
             apt-get install -y chromium chromium-driver (or set {SKIP}=1 to skip it)"
        );
    }
    let db = TestDb::new().await;
    let url = db.url().to_owned();

    // The dashboard binary, with actions enabled.
    let port = free_port();
    let dash = Proc(
        Command::new(BIN)
            .args(["dashboard", "--port", &port.to_string()])
            .env("DATABASE_URL", &url)
            .env("STUCKLESS_DASHBOARD_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stuckless dashboard"),
    );
    let up = wait_until("dashboard answers", Duration::from_secs(20), || {
        http(port, "GET", "/", None).is_ok_and(|(s, _)| s == 200)
    });
    assert!(up, "the dashboard never answered");

    // chromedriver, headless Chromium.
    let driver_port = free_port();
    let _driver = Proc(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver"),
    );
    let ready = wait_until("chromedriver listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", driver_port)).is_ok()
    });
    assert!(ready, "chromedriver never listened");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,900"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session");
    let base = format!("http://127.0.0.1:{port}");

    // Worker A runs a ten-minute job, then dies mid-job.
    let id = stuckless_pg::enqueue(
        db.pool(),
        NewJob::new(
            "default",
            "report",
            json!({"ms": 600_000, "note": "<b>not bold</b>"}),
        ),
    )
    .await
    .unwrap()
    .job
    .id;
    let worker_a = WorkerProc::start(&url, "worker-a", &["--handler", "report=sleep"]);
    let claimed = wait_until("job running", Duration::from_secs(20), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| rt.block_on(db.job(id.0))).status == JobStatus::Running
    });
    assert!(claimed, "worker A never claimed the job");
    browser.goto(&format!("{base}/workers")).await.unwrap();
    assert!(text(&browser).await.contains("worker-a"));
    shoot(&browser, "workers").await;
    worker_a.signal("-KILL");

    // The lease (2 s) runs out and nobody reaps it: the Stuck-jobs page says so.
    let row = format!("tr[data-job=\"{}\"][data-verdict=\"expired_lease\"]", id.0);
    let mut found = false;
    for _ in 0..40 {
        browser.goto(&format!("{base}/stuck")).await.unwrap();
        if browser.find(Locator::Css(&row)).await.is_ok() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        found,
        "the stuck page never showed the expired lease: {}",
        text(&browser).await
    );
    let diagnosis = browser
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(diagnosis.contains("lease expired, not reaped"), "{diagnosis}");
    assert!(diagnosis.contains("worker-a"), "{diagnosis}");
    assert!(
        browser
            .find(Locator::Css(&format!("{row} button")))
            .await
            .is_err(),
        "read-only until logged in"
    );
    browser.goto(&base).await.unwrap();
    assert!(text(&browser).await.contains("1 stuck job(s)"));
    shoot(&browser, "overview").await;

    // Log in, then requeue from the Stuck-jobs page.
    browser.goto(&format!("{base}/login")).await.unwrap();
    shoot(&browser, "login").await;
    browser
        .find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys("browser test")
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    click(&browser, "form button[type=submit]").await;
    // Logged in: the header offers a logout form.
    browser
        .wait()
        .for_element(Locator::Css("span.who form"))
        .await
        .unwrap();
    browser.goto(&format!("{base}/stuck")).await.unwrap();
    shoot(&browser, "stuck").await;
    click(&browser, &format!("{row} button.requeue")).await;
    // The action redirects to the job's page, which says what was done.
    browser
        .wait()
        .for_element(Locator::Css("div.fine"))
        .await
        .unwrap();
    let page = text(&browser).await;
    assert!(page.contains("Requeued"), "{page}");
    assert_eq!(db.job(id.0).await.status, JobStatus::Queued);

    // Worker B (which finishes the kind at once) takes it and completes it.
    let _worker_b = WorkerProc::start(&url, "worker-b", &["--handler", "report=noop"]);
    let done = wait_until("job succeeded", Duration::from_secs(30), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| rt.block_on(db.job(id.0))).status == JobStatus::Succeeded
    });
    assert!(done, "worker B never finished the job");
    browser.goto(&format!("{base}/jobs/{}", id.0)).await.unwrap();
    let page = text(&browser).await;
    assert!(page.contains("succeeded"), "{page}");
    assert!(
        page.contains("by browser test (dashboard)"),
        "the requeue is signed: {page}"
    );
    assert!(
        page.contains("<b>not bold</b>"),
        "the payload's markup shows as text: {page}"
    );
    shoot(&browser, "job").await;
    browser.goto(&format!("{base}/jobs")).await.unwrap();
    shoot(&browser, "jobs").await;
    browser.goto(&format!("{base}/timeline?minutes=2")).await.unwrap();
    shoot(&browser, "timeline").await;
    browser.close().await.unwrap();
    drop(dash);
    db.cleanup().await;
}
