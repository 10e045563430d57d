//! The `echolog serve` binary on a store, in its own process on a free port of 127.0.0.1:
//! the server as it is deployed (its own runtime and allocator), apart from the bench's
//! client. Shared by the benches that talk to it (`#[path]`-included).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

/// How long the server may take to listen after starting (it opens the store first).
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ServerProcess {
    child: Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts the server on `dir` with `extra_args` after the bench's own (no HTTP side, a
    /// quiet log) and waits until it listens.
    pub fn start(dir: &std::path::Path, extra_args: &[&str]) -> Result<ServerProcess, Error> {
        // A port the kernel just handed out and let go: free unless something races for it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_echolog"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", "none"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra_args)
            .env("ECHOLOG_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let mut server = ServerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > SERVER_START_TIMEOUT {
                let _ = server.child.kill();
                let _ = server.child.wait();
                return Err(
                    format!("the server did not listen within {SERVER_START_TIMEOUT:?}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// A line of the server's /proc status (`RssAnon:`, `RssFile:`), "?" if unreadable.
    pub fn status(&self, field: &str) -> String {
        status_of(&format!("/proc/{}/status", self.child.id()), field)
    }

    /// Stops the server as an operator would (SIGTERM: in-flight calls finish, the store
    /// closes) and waits for it to let go of the store.
    pub fn stop(mut self) -> Result<(), Error> {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let exit = self.child.wait()?;
        if !exit.success() {
            return Err(format!("the server exited with {exit}").into());
        }
        Ok(())
    }
}

/// A server the bench did not stop (a panic, an early return) is killed, not left behind.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line of a /proc status file, "?" if unreadable.
pub fn status_of(path: &str, field: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l.trim_start_matches(field).trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}
