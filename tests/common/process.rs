//! The built `portico` binary as users run it: started as a child process, signalled with
//! `kill`, its output kept in a file for the failure message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `portico`; killed when dropped.
pub struct Running {
    pub child: Child,
    /// stdout and stderr, interleaved.
    pub output: PathBuf,
}

impl Running {
    /// `portico <args>`, its output in `<dir>/<name>.out`. What it writes to its temporary
    /// directory (`emulate`'s and `demo`'s generated files) goes under `dir` too, so that
    /// the test's directory takes it away (a killed process cannot).
    pub fn start(args: &[&str], dir: &Path, name: &str) -> Running {
        Running::start_logging(args, dir, name, "info")
    }

    /// [`Running::start`] with `RUST_LOG` set to `filter`.
    pub fn start_logging(args: &[&str], dir: &Path, name: &str, filter: &str) -> Running {
        let output = dir.join(format!("{name}.out"));
        let file = std::fs::File::create(&output).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(args)
            .env("RUST_LOG", filter)
            .env("TMPDIR", dir)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Running { child, output }
    }

    /// `portico run -c conf`, output discarded.
    pub fn portico_run(conf: &Path) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["run", "-c"])
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Running {
            child,
            output: PathBuf::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `HUP`, `QUIT`, `INT`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits up to `deadline` for the process to exit.
    pub async fn exited_within(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first answer from this process at `url` while it starts: like [`first_answer`],
    /// but a process that exits (a port taken, a config refused) fails at once, and one
    /// that never answers fails with what it printed.
    pub async fn first_answer(&mut self, client: &reqwest::Client, url: &str) -> reqwest::Response {
        let answer = answer_within(client, url, || {
            let exited = self.child.try_wait().unwrap();
            exited.map(|status| format!("the process exited ({status})"))
        })
        .await;
        answer.unwrap_or_else(|why| panic!("{url}: {why}\n{}", self.printed()))
    }

    /// What the process printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port for a process the test starts, which binds it later (Pingora
/// cannot report a port-0 bind). Taken below the kernel's default ephemeral range
/// (32768–60999), so no `127.0.0.1:0` listener of another test nor an outgoing
/// connection's local port takes it between this check and the bind, and never the same
/// port twice in one test process (each process its own block, by its pid).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const BLOCKS: u32 = 120;
    const BLOCK: u16 = 100;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = FIRST + (std::process::id() % BLOCKS) as u16 * BLOCK;
    for _ in 0..BLOCK {
        let port = block + NEXT.fetch_add(1, Ordering::Relaxed) % BLOCK;
        // Skipped if something on the machine holds it.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {block}..{}", block + BLOCK)
}

/// The first answer from a server still starting: connection errors are retried for 30 s.
pub async fn first_answer(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let answer = answer_within(client, url, || None).await;
    answer.unwrap_or_else(|why| panic!("{url} {why}"))
}

/// Asks `url` until it answers, for at most 30 s; between tries `gone` may say why no
/// answer will come.
async fn answer_within(
    client: &reqwest::Client,
    url: &str,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<reqwest::Response, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(url).send().await {
            Ok(response) => return Ok(response),
            Err(e) => {
                if let Some(why) = gone() {
                    return Err(why);
                }
                if Instant::now() >= deadline {
                    return Err(format!("never answered: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Polls `url` until its status is `wanted`, for at most `deadline`; returns the time it
/// took, or `None`.
pub async fn status_becomes(
    client: &reqwest::Client,
    url: &str,
    wanted: u16,
    deadline: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if let Ok(response) = client.get(url).send().await {
            if response.status().as_u16() == wanted {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// GET `url` and parse the answer as JSON (an admin `/status`).
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let text = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {text}"))
}

/// Requests to one URL, one after the other, until [`RequestLoop::finish`]: how many
/// were sent and why each that did not get a 200 failed.
pub struct RequestLoop {
    stop: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl RequestLoop {
    /// With `fresh_connections`, every request opens a new connection (what a listener
    /// handover must not refuse); otherwise connections are kept alive.
    pub fn start(url: String, fresh_connections: bool) -> RequestLoop {
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let mut builder = reqwest::Client::builder();
        if fresh_connections {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().unwrap();
        let task = tokio::spawn(async move {
            let (mut sent, mut failures) = (0, Vec::new());
            loop {
                tokio::select! {
                    _ = stopped.notified() => return (sent, failures),
                    answer = client.get(&url).send() => {
                        sent += 1;
                        match answer {
                            Ok(r) if r.status() == 200 => {}
                            Ok(r) => failures.push(format!("status {}", r.status())),
                            Err(e) => failures.push(format!("{e:?}")),
                        }
                    }
                }
            }
        });
        RequestLoop { stop, task }
    }

    /// Stops the loop: how many requests were sent, and what went wrong with each that
    /// failed.
    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.notify_one();
        self.task.await.unwrap()
    }
}

/// Copies the shipped `rules/` into `dir/rules`, the demo origin's address (127.0.0.1:8081)
/// replaced by `origin`.
pub fn shipped_rules_into(dir: &Path, origin: std::net::SocketAddr) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    for file in std::fs::read_dir(root.join("rules")).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("127.0.0.1:8081", &origin.to_string());
        std::fs::write(dir.join("rules").join(path.file_name().unwrap()), text).unwrap();
    }
}
