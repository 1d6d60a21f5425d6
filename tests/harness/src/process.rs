//! Worker processes: spawn, signal, reap; killed on drop whatever happens.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use anyhow::Context;

/// The signals the chaos run sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Crash: no cleanup at all.
    Kill,
    /// Graceful shutdown.
    Term,
    /// Freeze (the zombie's pause).
    Stop,
    /// Thaw.
    Cont,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// A child process that is SIGCONTed and SIGKILLed when dropped, so no
/// worker outlives the harness, even on panic.
pub struct ChildGuard {
    name: String,
    child: Child,
    pid: u32,
    exited: Option<std::process::ExitStatus>,
}

impl ChildGuard {
    /// Spawns `program args` with `envs`, stdout and stderr appended to `log`.
    pub fn spawn(
        name: impl Into<String>,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<ChildGuard> {
        let name = name.into();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .context(format!("opening log {}", log.display()))?;
        let err = out.try_clone().context("cloning the log handle")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .context(format!("starting {} ({})", name, program.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{name} exited before it had a pid"))?;
        Ok(ChildGuard {
            name,
            child,
            pid,
            exited: None,
        })
    }

    /// The process's name in the run.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        if self.try_exit()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet, so the
        // pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal.raw()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context(format!("sending {signal:?} to {} (pid {})", self.name, self.pid));
        }
        Ok(())
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_exit(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .context(format!("checking on {}", self.name))?;
        }
        Ok(self.exited)
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_for(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let status = status.context(format!("waiting for {}", self.name))?;
                self.exited = Some(status);
                Ok(status)
            }
            Err(_) => Err(anyhow::anyhow!(
                "timed out: {} (pid {}) still running after {limit:?}",
                self.name,
                self.pid
            )),
        }
    }

    /// SIGKILLs the process and waits for it.
    pub async fn kill(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(Signal::Kill)?;
        self.wait_for(Duration::from_secs(10)).await
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // SAFETY: as in `signal`: our own unreaped child.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
        // kill_on_drop reaps it.
    }
}

/// Where a binary of this workspace is: `$CARGO_TARGET_DIR` or `target/`
/// beside the workspace, in the profile that built the running executable.
pub fn workspace_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/[deps/]exe: look in the profile dir.
    let mut dir = exe.parent()?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?.to_path_buf();
    }
    let candidate = dir.join(name);
    candidate.is_file().then_some(candidate)
}

/// Builds the `stuckless` binary (`cargo build -p stuckless-cli`, release when
/// `release`) and returns its path under the workspace's target directory.
pub fn build_cli(release: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = std::process::Command::new(&cargo);
    command
        .current_dir(&workspace)
        .args(["build", "-q", "-p", "stuckless-cli"]);
    if release {
        command.arg("--release");
    }
    let status = command
        .status()
        .context(format!("running {cargo} build -p stuckless-cli"))?;
    if !status.success() {
        return Err(anyhow::anyhow!("cargo build -p stuckless-cli failed: {status}"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let path = target
        .join(if release { "release" } else { "debug" })
        .join("stuckless");
    if path.is_file() {
        Ok(path)
    } else {
        Err(anyhow::anyhow!(
            "built stuckless-cli but found no {}",
            path.display()
        ))
    }
}
