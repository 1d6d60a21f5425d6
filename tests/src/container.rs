//! The testcontainers fallback of [`crate::TestDb`]: one Postgres container
//! per test process, named by one setting, removed when the process exits.
//!
//! - The image is `$STUCKLESS_PG_IMAGE` (`name:tag`, default
//!   [`DEFAULT_IMAGE`]), so a user picks `postgres:15`, `postgres:16` or
//!   `postgres:17` without touching code.
//! - The container lives in a thread of its own for the whole test process
//!   (tests run on many runtimes; the container must outlive each of them),
//!   so it is never dropped: an `atexit` hook removes it when the process
//!   exits normally.
//! - A process that is killed runs no hook. Every container carries the
//!   labels [`LABEL`]`=1`, [`PID_LABEL`]`=<pid>` and [`HOST_LABEL`]`=<host>`;
//!   the next test process on the same host removes those whose pid is gone.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use testcontainers_modules::testcontainers::bollard::Docker;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::ImageExt;

/// The environment variable naming the Postgres image (`name:tag`).
pub const IMAGE_ENV: &str = "STUCKLESS_PG_IMAGE";

/// The image used when [`IMAGE_ENV`] is unset or empty.
pub const DEFAULT_IMAGE: &str = "postgres:16-alpine";

/// Label on every container the tests start (value `1`).
pub const LABEL: &str = "stuckless.test";

/// Label holding the pid of the test process that owns the container.
pub const PID_LABEL: &str = "stuckless.test.pid";

/// Label holding the host name of that process (pids mean nothing elsewhere).
pub const HOST_LABEL: &str = "stuckless.test.host";

/// The container's id once started, for the exit hook.
static STARTED_ID: OnceLock<String> = OnceLock::new();

/// The image to run, split into name and tag (`latest` when none is given).
pub fn image() -> (String, String) {
    let image = std::env::var(IMAGE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    split_image(image.trim())
}

/// `name[:tag]` → (name, tag); a `:` inside a registry host (`host:5000/pg`)
/// is not a tag separator.
fn split_image(image: &str) -> (String, String) {
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_owned(),
            image[last_slash + i + 1..].to_owned(),
        ),
        None => (image.to_owned(), "latest".to_owned()),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether a Docker engine looks reachable (`DOCKER_HOST` or the local socket).
pub fn docker_reachable() -> bool {
    std::env::var_os("DOCKER_HOST").is_some() || std::path::Path::new("/var/run/docker.sock").exists()
}

/// Removes containers labelled [`LABEL`] on this host whose owning process is
/// gone (a test process that was killed); returns how many.
pub async fn reap_orphans(docker: &Docker) -> usize {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL}=1")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(found) = docker.list_containers(Some(options)).await else {
        return 0;
    };
    let me = host_name();
    let mut removed = 0;
    for c in found {
        let labels = c.labels.unwrap_or_default();
        let pid = labels.get(PID_LABEL).and_then(|p| p.parse::<u32>().ok());
        let same_host = labels.get(HOST_LABEL).is_some_and(|h| *h == me);
        let (Some(id), Some(pid)) = (c.id, pid) else {
            continue;
        };
        if same_host && pid != std::process::id() && !pid_alive(pid) && remove(docker, &id).await {
            removed += 1;
        }
    }
    removed
}

async fn remove(docker: &Docker, id: &str) -> bool {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    docker.remove_container(id, Some(options)).await.is_ok()
}

/// Starts the process's Postgres container and returns its server URL (user
/// `postgres`, trust auth); the container is removed at process exit.
pub(crate) fn start(how_to: &str) -> Result<String, String> {
    if !docker_reachable() {
        return Err(format!(
            "DATABASE_URL is not set and no Docker engine is reachable.\n{how_to}"
        ));
    }
    let (name, tag) = image();
    let (tx, rx) = std::sync::mpsc::channel::<Result<(String, String), String>>();
    let how_to = how_to.to_owned();
    std::thread::Builder::new()
        .name("stuckless-test-postgres".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("tokio runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                if let Ok(docker) = Docker::connect_with_defaults() {
                    let n = reap_orphans(&docker).await;
                    if n > 0 {
                        eprintln!("removed {n} Postgres test container(s) left by killed test processes");
                    }
                }
                let started = Postgres::default()
                    .with_host_auth()
                    .with_name(name.clone())
                    .with_tag(tag.clone())
                    .with_label(LABEL, "1")
                    .with_label(PID_LABEL, std::process::id().to_string())
                    .with_label(HOST_LABEL, host_name())
                    .with_startup_timeout(Duration::from_secs(120))
                    .start()
                    .await;
                let container = match started {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(format!(
                            "testcontainers could not start {name}:{tag} (set {IMAGE_ENV} to pick another image): {e}\n{how_to}"
                        )));
                        return;
                    }
                };
                let url = match (container.get_host().await, container.get_host_port_ipv4(5432).await) {
                    (Ok(host), Ok(port)) => Ok((
                        container.id().to_owned(),
                        format!("postgres://postgres@{host}:{port}/postgres"),
                    )),
                    (h, p) => Err(format!("testcontainers: no host/port for postgres: {h:?} {p:?}")),
                };
                let _ = tx.send(url);
                // Held until the process exits; the exit hook removes it.
                std::future::pending::<()>().await;
                drop(container);
            });
        })
        .map_err(|e| format!("starting the container thread: {e}"))?;
    let (id, url) = rx
        .recv()
        .map_err(|_| "testcontainers thread ended without an answer".to_string())??;
    if STARTED_ID.set(id).is_ok() {
        // SAFETY: registers a plain `extern "C" fn()` that never unwinds.
        unsafe {
            libc::atexit(remove_at_exit);
        }
    }
    Ok(url)
}

/// The exit hook: removes the container this process started. Runs on a
/// thread of its own with a fresh runtime (the process's runtimes may be gone
/// or blocked by now) and never unwinds into C.
extern "C" fn remove_at_exit() {
    let Some(id) = STARTED_ID.get() else { return };
    let id = id.clone();
    let done = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return false;
        };
        rt.block_on(async {
            let Ok(docker) = Docker::connect_with_defaults() else {
                return false;
            };
            tokio::time::timeout(Duration::from_secs(30), remove(&docker, &id))
                .await
                .unwrap_or(false)
        })
    })
    .join();
    if !matches!(done, Ok(true)) {
        eprintln!(
            "warning: could not remove the Postgres test container; the next test run removes it (label {LABEL}=1)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn images_split_into_name_and_tag() {
        let s = |n: &str, t: &str| (n.to_owned(), t.to_owned());
        assert_eq!(split_image("postgres:16-alpine"), s("postgres", "16-alpine"));
        assert_eq!(split_image("postgres"), s("postgres", "latest"));
        assert_eq!(
            split_image("registry.local:5000/pg/postgres:17"),
            s("registry.local:5000/pg/postgres", "17")
        );
        assert_eq!(
            split_image("registry.local:5000/postgres"),
            s("registry.local:5000/postgres", "latest")
        );
    }
}
