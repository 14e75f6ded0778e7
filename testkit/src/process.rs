//! Child processes with hard timeouts, background processes that die with the test, and this
//! process's own resident memory.

use std::io::Read;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for a reader thread once its process has exited (a grandchild may hold
/// the pipe open; then the output so far is all we get).
const DRAIN: Duration = Duration::from_secs(2);

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Reads a pipe to its end on a thread; the bytes arrive on the returned channel.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        // Closed before the bytes are handed over: a caller that got them holds no fd of ours.
        drop(pipe);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` to completion (stdin closed, stdout and stderr captured). If it has not exited
/// after `timeout`, kills it and panics with what it printed.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = stdout.recv_timeout(DRAIN).unwrap_or_default();
                let err = stderr.recv_timeout(DRAIN).unwrap_or_default();
                panic!(
                    "`{what}` did not finish within {timeout:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("cannot wait for `{what}`: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.recv_timeout(DRAIN).unwrap_or_default(),
        stderr: stderr.recv_timeout(DRAIN).unwrap_or_default(),
    }
}

/// Like [`output_with_timeout`], and panics unless the command exits 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Output {
    let what = describe(cmd);
    let out = output_with_timeout(cmd, timeout);
    if !out.status.success() {
        panic!(
            "`{what}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A process running in the background while the test goes on. Its output is collected as it
/// comes; it is killed when dropped (also when the test panics).
pub struct Background {
    what: String,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect<R: Read + Send + 'static>(
    mut pipe: R,
    into: Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .expect("output buffer")
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl Background {
    /// Starts `cmd` (stdin closed, stdout and stderr collected); `what` names it in messages.
    pub fn spawn(cmd: &mut Command, what: &str) -> Background {
        Background::start(cmd.stdin(Stdio::null()), what)
    }

    /// Starts a server that prints `ready` once it listens, and waits (up to 10 s) for that
    /// line; panics with its output if it exits first.
    pub fn serve(cmd: &mut Command, what: &str) -> Background {
        let mut process = Background::spawn(cmd, what);
        process.wait_until(Duration::from_secs(10), "ready", |p| {
            p.stdout().contains("ready")
        });
        process
    }

    /// Like [`Background::spawn`], with the process's stdin a pipe that the test writes to.
    pub fn spawn_with_stdin(cmd: &mut Command, what: &str) -> (Background, ChildStdin) {
        let mut process = Background::start(cmd.stdin(Stdio::piped()), what);
        let stdin = process
            .child
            .as_mut()
            .and_then(|c| c.stdin.take())
            .expect("piped stdin");
        (process, stdin)
    }

    fn start(cmd: &mut Command, what: &str) -> Background {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} (`{}`): {e}", describe(cmd)));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), stdout.clone()),
            collect(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        Background {
            what: format!("{what} (`{}`)", describe(cmd)),
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("output buffer")).into_owned()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("output buffer")).into_owned()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Polls `ready` until it holds; panics with the output so far if the process exits first
    /// or `timeout` passes.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&Background) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return;
            }
            if self.has_exited() {
                // Let the readers catch the last words.
                thread::sleep(Duration::from_millis(50));
                if ready(self) {
                    return;
                }
                panic!(
                    "{} exited before {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: no {what} within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`).
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold the Child).
        if unsafe { libc::kill(pid, signal) } != 0 {
            panic!(
                "cannot send signal {signal} to {}: {}",
                self.what,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Waits for it to exit; kills it and panics if that takes longer than `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let status: ExitStatus = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not exit within {timeout:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        self.what,
                        self.stdout(),
                        self.stderr()
                    );
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("cannot wait for {}: {e}", self.what),
            }
        };
        // The pipes close when it exits (unless a grandchild holds them): give the readers a
        // moment to finish.
        let deadline = Instant::now() + DRAIN;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        Output {
            status,
            stdout: self.stdout.lock().expect("output buffer").clone(),
            stderr: self.stderr.lock().expect("output buffer").clone(),
        }
    }

    /// Waits for it to exit and panics unless it exited 0; returns its stdout.
    pub fn wait_ok(self, timeout: Duration) -> String {
        let what = self.what.clone();
        let out = self.wait(timeout);
        if !out.status.success() {
            panic!(
                "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Calls `read` every 200 ms until `done` accepts what it read or `within` has passed, and
/// returns the last read: for what an agent exports a little later than the test caused it
/// (the test's assertions then say what is missing, if anything).
pub fn poll<T>(within: Duration, mut read: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + within;
    loop {
        let value = read();
        if done(&value) || Instant::now() > deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Calls `check` every 200 ms until it succeeds; after `within`, panics with its last error.
/// For what an agent reports a little later than the test caused it.
pub fn eventually(within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}
