//! A throwaway Postgres cluster for the chaos run: `initdb` into a temporary
//! directory, a free port, fsync on, trust auth on 127.0.0.1 only. The chaos
//! run can stop and restart it at will without disturbing anyone else's
//! server. Stopped and removed on drop, which also runs on panic.
//!
//! Postgres refuses to run as root, so when the harness runs as root every
//! `initdb`/`pg_ctl` call goes through `runuser -u postgres --` and the
//! directory is handed to that user.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

/// The lowest port probed for a free one.
const PORT_LO: u16 = 20000;
/// The highest port probed.
const PORT_HI: u16 = 30000;
/// Directory names start with this, then `<pid>-<n>`: what the orphan sweep looks for.
const DIR_PREFIX: &str = "stuckless-pg-";

/// How the server is stopped (`pg_ctl stop -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint, exit: a planned restart.
    Fast,
    /// Exit at once, no checkpoint; crash recovery at the next start: a crash.
    Immediate,
}

impl StopMode {
    fn flag(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running (or stopped) throwaway cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `runuser -u postgres --` when running as root.
    as_user: Option<&'static str>,
    running: bool,
}

impl Cluster {
    /// Creates and starts a cluster in a fresh temporary directory on a free
    /// port. Clusters left by a killed harness (their pid gone) are stopped
    /// and removed first.
    pub fn start() -> anyhow::Result<Cluster> {
        sweep_orphans();
        let bin = bindir()?;
        let as_user = running_as_root().then_some("postgres");
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            as_user,
            running: false,
        };
        if let Some(user) = as_user {
            chown_to(&cluster.dir, user)?;
        }
        cluster.initdb()?;
        cluster.port = free_port()?;
        cluster.configure()?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// The server's URL, as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data in `data/`, server log in `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server is up (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server with `mode` and waits until it is down.
    pub fn stop(&mut self, mode: StopMode) -> anyhow::Result<()> {
        let data = self.data();
        self.pg_ctl(&["stop", "-D", &data, "-m", mode.flag(), "-w", "-t", "60"])
            .context("pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped server and waits until it accepts connections.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// Stops with `mode` and starts again at once; returns the downtime.
    pub fn restart(&mut self, mode: StopMode) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.stop(mode)?;
        self.start_again()?;
        Ok(started.elapsed())
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let data = self.data();
        // Trust auth: the server listens on 127.0.0.1 only and lives for one run.
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        )
        .context("initdb")
    }

    fn configure(&self) -> anyhow::Result<()> {
        let conf = format!(
            "\n# stuckless chaos cluster\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = on\nmax_connections = 300\n\
             recovery_init_sync_method = syncfs\n\
             logging_collector = off\n",
            self.port,
            self.dir.display()
        );
        let path = self.dir.join("data/postgresql.conf");
        let mut text =
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.push_str(&conf);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let data = self.data();
        let log = self.dir.join("server.log").display().to_string();
        self.pg_ctl(&["start", "-D", &data, "-l", &log, "-w", "-t", "120"])
            .with_context(|| format!("pg_ctl start (server log: {log})"))?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        self.run("pg_ctl", args)
    }

    /// Runs `bin/<program> args`, as the postgres user when root; the error
    /// carries the program's output.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // pg_ctl's children inherit the working directory; a root-only cwd
        // would make the postgres user's server fail to start.
        command.args(args).current_dir(&self.dir);
        let out = command
            .output()
            .with_context(|| format!("running {}", path.display()))?;
        if !out.status.success() {
            return Err(anyhow::anyhow!(
                "{program} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self.pg_ctl(&["stop", "-D", &data, "-m", "immediate", "-w", "-t", "30"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `initdb` and `pg_ctl` are: `$STUCKLESS_PG_BINDIR`, the newest
/// `/usr/lib/postgresql/*/bin` (Debian), or `pg_config --bindir`.
pub fn bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STUCKLESS_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = out {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir);
        }
    }
    Err(anyhow::anyhow!(
        "no initdb/pg_ctl found (looked in /usr/lib/postgresql/*/bin and `pg_config --bindir`); \
         install the PostgreSQL server (Debian: apt-get install postgresql), set STUCKLESS_PG_BINDIR, \
         or run the chaos run on a server of your own with --existing-server <url>"
    ))
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn chown_to(dir: &Path, user: &str) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(dir)
        .status()
        .context("running chown")?;
    anyhow::ensure!(status.success(), "chown {user} {} failed", dir.display());
    Ok(())
}

/// A port in 20000–30000 nobody listens on, probed from an offset derived
/// from the pid so concurrent runs seldom probe the same ports first.
fn free_port() -> anyhow::Result<u16> {
    let span = u32::from(PORT_HI - PORT_LO);
    let start = std::process::id() * 7919 % span;
    for i in 0..span {
        let port = PORT_LO + ((start + i) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(anyhow::anyhow!("no free port in {PORT_LO}-{PORT_HI}"))
}

/// Stops and removes clusters whose harness process is gone.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name: OsString = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(bin) = bindir() {
            let orphan = Cluster {
                dir: dir.clone(),
                bin,
                port: 0,
                as_user: running_as_root().then_some("postgres"),
                running: dir.join("data/postmaster.pid").exists(),
            };
            drop(orphan); // stops it if it runs, removes the directory
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts, restarts both ways, and removes a cluster. Without Postgres
    /// server binaries it fails, or with `STUCKLESS_SKIP_PG=1` prints a skip.
    #[test]
    fn a_cluster_starts_restarts_and_is_removed() {
        if let Err(e) = bindir() {
            assert!(
                std::env::var("STUCKLESS_SKIP_PG").is_ok_and(|v| v == "1"),
                "{e:#}"
            );
            eprintln!("SKIPPED a_cluster_starts_restarts_and_is_removed: {e:#}");
            return;
        }
        let mut cluster = Cluster::start().expect("cluster starts");
        let dir = cluster.dir().to_path_buf();
        let port = cluster.port();
        assert!((PORT_LO..PORT_HI).contains(&port));
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "server listens"
        );
        cluster.restart(StopMode::Immediate).expect("immediate restart");
        cluster.stop(StopMode::Fast).expect("fast stop");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "server is down"
        );
        cluster.start_again().expect("start again");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "server is back"
        );
        drop(cluster);
        assert!(!dir.exists(), "{} removed", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "server stopped"
        );
    }
}
