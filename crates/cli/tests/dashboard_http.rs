//! The dashboard over HTTP on a real Postgres: every page, hostile input
//! escaped, bad filters refused with a message, read-only without a token,
//! bearer and cookie auth, CSRF and origin checks, and each action (requeue
//! with its second step for a live lease, cancel, retry-now) fenced and
//! logged with who did it.

mod common;

use common::dashboard::{bearer, csrf_of, App, TOKEN};
use serde_json::json;
use stuckless_core::{JobStatus, NewJob};
use stuckless_tests::TestDb;

const HOSTILE: &str = "<script>alert('pwned')</script>";

async fn enqueue(db: &TestDb, queue: &str, kind: &str, payload: serde_json::Value) -> i64 {
    stuckless_pg::enqueue(db.pool(), NewJob::new(queue, kind, payload))
        .await
        .unwrap()
        .job
        .id
        .0
}

async fn sql(db: &TestDb, text: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(text.to_owned()))
        .execute(db.pool())
        .await
        .unwrap();
}

/// Job `id` running under `owner` with its lease ending `lease` from now (negative: expired).
async fn running(db: &TestDb, id: i64, owner: &str, lease: &str) {
    sql(
        db,
        &format!(
            "update stuckless.jobs set status = 'running', attempt = 1, epoch = 1, lease_owner = '{owner}',
             lease_expires_at = now() + interval '{lease}', claimed_at = now() - interval '2 minutes',
             heartbeat_at = now() - interval '1 minute' where id = {id}"
        ),
    )
    .await;
}

async fn event_details(db: &TestDb, id: i64) -> Vec<(String, String)> {
    sqlx::query_as(
        "select kind, coalesce(detail, '') from stuckless.job_events where job_id = $1 order by id",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_answers_and_hostile_input_shows_as_text() {
    let db = TestDb::new().await;
    let id = enqueue(&db, "mail", "send", json!({ "html": HOSTILE })).await;
    let stuck = enqueue(&db, "mail", "send", json!({})).await;
    running(&db, stuck, "w-crashed", "-1 minute").await;
    sql(
        &db,
        "insert into stuckless.workers (id, queues, concurrency, metadata, started_at, last_heartbeat_at)
              values ('w-alive', '{mail}', 4, '{}', now(), now())",
    )
    .await;
    let app = App::new(&db, None);
    for path in [
        "/",
        "/stuck",
        "/jobs",
        &format!("/jobs/{id}"),
        "/workers",
        "/timeline",
        "/assets/style.css",
        "/assets/app.js",
    ] {
        let a = app.get(path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.headers["cache-control"], "no-store", "{path}");
        assert!(
            a.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'"),
            "{path}"
        );
        assert!(!a.body.contains("<script>alert"), "{path} shows raw script");
    }
    for path in ["/timeline.svg", &format!("/jobs/{id}/timeline.svg")] {
        let a = app.get(path).await;
        assert_eq!(
            (a.status, a.headers["content-type"].to_str().unwrap()),
            (200, "image/svg+xml"),
            "{path}"
        );
        assert!(
            a.body.starts_with("<svg") || a.body.starts_with("<?xml"),
            "{path}: {}",
            &a.body[..80.min(a.body.len())]
        );
    }
    let job = app.get(&format!("/jobs/{id}")).await.body;
    assert!(
        job.contains("&lt;script&gt;alert('pwned')&lt;/script&gt;"),
        "{job}"
    );
    let overview = app.get("/").await.body;
    assert!(
        overview.contains("1 stuck job(s)") && overview.contains("1 lease expired, not reaped"),
        "{overview}"
    );
    assert!(
        overview.contains("http-equiv=\"refresh\""),
        "the overview refreshes itself"
    );
    let stuck_page = app.get("/stuck").await.body;
    assert!(
        stuck_page.contains(&format!("data-job=\"{stuck}\" data-verdict=\"expired_lease\"")),
        "{stuck_page}"
    );
    assert!(
        stuck_page.contains(&format!("stuckless requeue {stuck}")),
        "{stuck_page}"
    );
    let workers = app.get("/workers").await.body;
    assert!(
        workers.contains("w-alive") && workers.contains("alive"),
        "{workers}"
    );
    assert!(
        workers.contains(&format!("/jobs/{stuck}")),
        "in-flight job listed: {workers}"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_and_filters_get_a_clear_400_never_a_500() {
    let db = TestDb::new().await;
    let app = App::new(&db, None);
    for (path, status, says) in [
        (
            "/jobs/%3Cscript%3E",
            400,
            "invalid job id &quot;&lt;script&gt;&quot;",
        ),
        ("/jobs/-1", 400, "positive integers"),
        ("/jobs/99999999999999999999", 400, "positive integers"),
        ("/jobs/12345", 404, "no job with id 12345"),
        ("/jobs?status=stuck", 400, "invalid status filter"),
        (
            "/jobs?queue=%3Cb%3E",
            400,
            "invalid queue filter &quot;&lt;b&gt;&quot;",
        ),
        ("/jobs?since=yesterday", 400, "invalid since filter"),
        ("/jobs?before=0", 400, "positive job id"),
        ("/jobs?since=1m&until=1h", 400, "must be before"),
        ("/timeline?minutes=0", 400, "invalid minutes"),
        ("/timeline.svg?minutes=abc", 400, "invalid minutes"),
        ("/nothing-here", 404, "no such page"),
    ] {
        let a = app.get(path).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        assert!(a.body.contains(says), "{path}: {}", a.body);
        assert!(!a.body.contains("<b>") && !a.body.contains("<script>"), "{path}");
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_dashboard_is_read_only() {
    let db = TestDb::new().await;
    let id = enqueue(&db, "q", "k", json!({})).await;
    running(&db, id, "w", "-1 minute").await;
    let app = App::new(&db, None);
    let stuck = app.get("/stuck").await.body;
    assert!(!stuck.contains("<form"), "no action forms: {stuck}");
    assert!(stuck.contains("read-only"), "{stuck}");
    for action in ["requeue", "cancel", "retry-now"] {
        let a = app
            .post(
                &format!("/jobs/{id}/{action}"),
                "epoch=1",
                &[(bearer().0, &bearer().1)],
            )
            .await;
        assert_eq!(a.status, 403, "{action}: {}", a.body);
        assert!(a.body.contains("read-only"), "{}", a.body);
    }
    let login = app.post("/login", &format!("name=x&token={TOKEN}"), &[]).await;
    assert_eq!(login.status, 403);
    assert_eq!(db.job(id).await.status, JobStatus::Running, "nothing changed");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_token_and_cookie_posts_need_csrf_and_the_same_origin() {
    let db = TestDb::new().await;
    let id = enqueue(&db, "q", "k", json!({})).await;
    let app = App::new(&db, Some(TOKEN));
    // No credentials, a wrong bearer, a wrong login.
    assert_eq!(app.post(&format!("/jobs/{id}/cancel"), "", &[]).await.status, 401);
    let wrong = app
        .post(
            &format!("/jobs/{id}/cancel"),
            "",
            &[("authorization", "Bearer nope")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    let bad_login = app.post("/login", "name=eve&token=nope", &[]).await;
    assert_eq!(bad_login.status, 401);
    assert!(bad_login.headers.get("set-cookie").is_none());
    assert!(app.get("/").await.body.contains("log in for actions"));
    // A login from another site is refused.
    let forged = app
        .post(
            "/login",
            &format!("name=eve&token={TOKEN}"),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(forged.status, 403);
    // The login cookie: HttpOnly, SameSite=Strict.
    let login = app
        .post("/login", &format!("name=Ann+%3Cb%3E&token={TOKEN}"), &[])
        .await;
    let set = login.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    let (cookie, csrf) = app.login("Ann+%3Cb%3E").await;
    let page = app
        .get_with(&format!("/jobs/{id}"), &[("cookie", &cookie)])
        .await
        .body;
    assert!(page.contains("admin: Ann &lt;b&gt;"), "{page}");
    assert!(page.contains("/cancel"), "a logged-in admin sees the actions");
    let path = format!("/jobs/{id}/cancel");
    for (form, headers, status) in [
        ("epoch=0".to_owned(), vec![("cookie", cookie.as_str())], 403),
        (
            "epoch=0&csrf=0000".to_owned(),
            vec![("cookie", cookie.as_str())],
            403,
        ),
        (
            format!("epoch=0&csrf={csrf}"),
            vec![("cookie", cookie.as_str()), ("sec-fetch-site", "cross-site")],
            403,
        ),
        (
            format!("epoch=0&csrf={csrf}"),
            vec![("cookie", cookie.as_str()), ("origin", "https://evil.example")],
            403,
        ),
    ] {
        let a = app.post(&path, &form, &headers).await;
        assert_eq!(a.status, status, "{form} {headers:?}: {}", a.body);
    }
    assert_eq!(
        db.job(id).await.status,
        JobStatus::Queued,
        "no refused request changed the job"
    );
    let ok = app
        .post(
            &path,
            &format!("epoch=0&csrf={csrf}"),
            &[("cookie", &cookie), ("origin", "http://dash.test")],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.location(), format!("/jobs/{id}?done=cancelled"));
    assert_eq!(db.job(id).await.status, JobStatus::Cancelled);
    let events = event_details(&db, id).await;
    assert_eq!(events.last().unwrap().0, "cancelled");
    assert!(
        events.last().unwrap().1.contains("by Ann <b> (dashboard)"),
        "{events:?}"
    );
    // Logging out forgets the session.
    let out = app
        .post("/logout", &format!("csrf={csrf}"), &[("cookie", &cookie)])
        .await;
    assert_eq!(out.status, 303);
    let after = app.get_with("/", &[("cookie", &cookie)]).await.body;
    assert!(csrf_of(&after).is_none() && after.contains("log in for actions"));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeueing_a_live_lease_is_a_second_step_and_a_moved_epoch_is_refused() {
    let db = TestDb::new().await;
    let id = enqueue(&db, "q", "k", json!({})).await;
    running(&db, id, "w-busy", "5 minutes").await;
    let app = App::new(&db, Some(TOKEN));
    let auth = bearer();
    let path = format!("/jobs/{id}/requeue");
    let stale = app.post(&path, "epoch=0", &[(auth.0, &auth.1)]).await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert!(
        stale.body.contains("changed since the page was drawn"),
        "{}",
        stale.body
    );
    let first = app.post(&path, "epoch=1", &[(auth.0, &auth.1)]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(
        first.body.contains("live lease held by") && first.body.contains("--force"),
        "{}",
        first.body
    );
    assert!(
        first.body.contains("name=\"force\" value=\"yes\""),
        "the second step's form"
    );
    assert_eq!(
        db.job(id).await.status,
        JobStatus::Running,
        "the first step changes nothing"
    );
    let second = app.post(&path, "epoch=1&force=yes", &[(auth.0, &auth.1)]).await;
    assert_eq!(second.status, 303, "{}", second.body);
    assert_eq!(db.job(id).await.status, JobStatus::Queued);
    let (kind, detail) = event_details(&db, id).await.pop().unwrap();
    assert_eq!(kind, "requeued");
    assert!(
        detail.contains("--force") && detail.contains("by admin token (bearer) (dashboard)"),
        "{detail}"
    );
    // An expired lease needs no second step.
    let other = enqueue(&db, "q", "k", json!({})).await;
    running(&db, other, "w-dead", "-1 minute").await;
    let direct = app
        .post(&format!("/jobs/{other}/requeue"), "epoch=1", &[(auth.0, &auth.1)])
        .await;
    assert_eq!(direct.status, 303, "{}", direct.body);
    assert_eq!(db.job(other).await.status, JobStatus::Queued);
    // A queued job cannot be requeued: the CLI's refusal, as a 409.
    let again = app
        .post(&format!("/jobs/{other}/requeue"), "", &[(auth.0, &auth.1)])
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_now_makes_a_waiting_job_due_only_while_it_waits() {
    let db = TestDb::new().await;
    let id = enqueue(&db, "q", "k", json!({})).await;
    sql(&db, &format!("update stuckless.jobs set run_at = now() + interval '1 hour', attempt = 1, epoch = 3 where id = {id}")).await;
    let app = App::new(&db, Some(TOKEN));
    let auth = bearer();
    let page = app
        .get_with(&format!("/jobs/{id}"), &[(auth.0, &auth.1)])
        .await
        .body;
    assert!(
        page.contains("/retry-now"),
        "a waiting job offers retry-now: {page}"
    );
    let path = format!("/jobs/{id}/retry-now");
    assert_eq!(app.post(&path, "epoch=2", &[(auth.0, &auth.1)]).await.status, 409);
    assert_eq!(app.post(&path, "epoch=x", &[(auth.0, &auth.1)]).await.status, 400);
    let ok = app.post(&path, "epoch=3", &[(auth.0, &auth.1)]).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let due: bool = sqlx::query_scalar("select run_at <= now() from stuckless.jobs where id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(due, "the job is due now");
    let (kind, detail) = event_details(&db, id).await.pop().unwrap();
    assert_eq!(
        (kind.as_str(), detail.contains("by admin token (bearer)")),
        ("requeued", true),
        "{detail}"
    );
    let twice = app.post(&path, "epoch=3", &[(auth.0, &auth.1)]).await;
    assert_eq!(twice.status, 409, "a due job is not waiting: {}", twice.body);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_under_a_prefix_every_link_and_form_keeps_it() {
    use std::sync::Arc;
    use stuckless_cli::dashboard::{mount, Dashboard};
    let db = TestDb::new().await;
    let id = enqueue(&db, "q", "k", json!({})).await;
    running(&db, id, "w", "-1 minute").await;
    let board = Dashboard::new(
        db.pool().clone(),
        Some(TOKEN.into()),
        std::time::Duration::from_secs(90),
        "/dashboard/",
    );
    let outer = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let app = App {
        router: mount(outer, Arc::new(board)),
    };
    assert_eq!(
        app.get("/healthz").await.body,
        "ok\n",
        "the worker's own routes stay"
    );
    let auth = bearer();
    let stuck = app.get_with("/dashboard/stuck", &[(auth.0, &auth.1)]).await;
    assert_eq!(stuck.status, 200, "{}", stuck.body);
    assert!(
        stuck.body.contains("href=\"/dashboard/assets/style.css\""),
        "{}",
        stuck.body
    );
    assert!(
        stuck
            .body
            .contains(&format!("action=\"/dashboard/jobs/{id}/requeue\"")),
        "{}",
        stuck.body
    );
    assert!(!stuck.body.contains("href=\"/jobs"), "no link escapes the prefix");
    let requeued = app
        .post(
            &format!("/dashboard/jobs/{id}/requeue"),
            "epoch=1",
            &[(auth.0, &auth.1)],
        )
        .await;
    assert_eq!(
        (requeued.status, requeued.location()),
        (303, format!("/dashboard/jobs/{id}?done=requeued").as_str())
    );
    assert_eq!(app.get("/stuck").await.status, 404, "nothing at the root");
    let overview = app.get("/dashboard").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(
        overview.body.contains("href=\"/dashboard\""),
        "the overview link: {}",
        overview.body
    );
    let slash = app.get("/dashboard/").await;
    assert_eq!((slash.status, slash.location()), (303, "/dashboard"));
    db.cleanup().await;
}
