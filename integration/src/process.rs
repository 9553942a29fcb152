//! Child processes in their own process group, logging to a file, killed on drop.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A running child process. Dropping it kills its whole process group.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts `cmd` in a new process group with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exit: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Sends `signal` (a `kill -s` name such as `KILL` or `TERM`) to the process group.
    fn signal_group(&self, signal: &str) {
        // The group id is the child's pid (process_group(0)). `kill` is used instead of
        // libc so that this crate stays free of unsafe code.
        let status = Command::new("kill")
            .args(["-s", signal, "--", &format!("-{}", self.pid())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) && self.exit.is_none() {
            // Group already gone or `kill` missing: fall back to the process itself.
            if signal == "KILL" {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &self.pid().to_string()])
                    .status();
            }
        }
    }

    /// Kills the process group with SIGKILL (a crash, as far as the process is concerned)
    /// and reaps the child.
    pub fn kill(&mut self) {
        if self.exited().is_some() {
            // The leader is gone; still sweep any survivors of its group.
            self.signal_group("KILL");
            return;
        }
        self.signal_group("KILL");
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal_group("TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Resident set size in KiB, from `/proc/<pid>/status` (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// The last `max_bytes` of the log file.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        tail_file(&self.log, max_bytes)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `max_bytes` of a file, lossily decoded, starting at a line boundary.
pub fn tail_file(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("<no log at {}>", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        match text.find('\n') {
            Some(i) => format!("[… {start} bytes omitted …]\n{}", &text[i + 1..]),
            None => text,
        }
    } else {
        text
    }
}
