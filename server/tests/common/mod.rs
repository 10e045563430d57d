//! Helpers shared by the server's integration tests: a real `echolog serve` child process on
//! 127.0.0.1 with an ephemeral port, started and stopped by the test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Server {
    pub child: Child,
    pub url: String,
    /// The HTTP/JSON API, `http://127.0.0.1:<port>`.
    pub http_url: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    /// Starts `echolog serve` on `dir` with extra flags; returns once it listens.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echolog"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("ECHOLOG_PAYLOAD_BYTES_MAX", "4096")
            .env("ECHOLOG_MESSAGE_BYTES_MAX", "65536")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echolog serve");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(line.contains("listening"), "{line}");
        let mut http = String::new();
        stdout.read_line(&mut http).unwrap();
        assert!(http.contains("echolog http on"), "{http}");
        Server {
            child,
            url: format!("http://{addr}"),
            http_url: http.trim().rsplit(' ').next().unwrap().to_string(),
            stdout,
        }
    }

    /// The next line the server printed on stdout.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    /// SIGTERM, then wait: a graceful shutdown.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful shutdown exits 0, got {status}");
    }

    /// SIGKILL, then wait: the process dies wherever it is.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        cli(&["--server", &self.url], args)
    }
}

/// Runs the `echolog` binary with `pre` then `args`: (success, stdout, stderr).
pub fn cli(pre: &[&str], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_echolog"))
        .args(pre)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events of a History or Tail stream one at a time, whatever batches they came in.
pub struct Events {
    stream: tonic::Streaming<echolog_server::pb::EventBatch>,
    buf: std::collections::VecDeque<echolog_server::pb::Event>,
    pub batches: usize,
}

impl Events {
    pub fn new(stream: tonic::Streaming<echolog_server::pb::EventBatch>) -> Events {
        Events {
            stream,
            buf: Default::default(),
            batches: 0,
        }
    }

    pub async fn next(&mut self) -> Result<Option<echolog_server::pb::Event>, tonic::Status> {
        while self.buf.is_empty() {
            match self.stream.message().await? {
                Some(b) => {
                    assert!(!b.events.is_empty(), "a batch is never empty");
                    self.batches += 1;
                    self.buf.extend(b.events);
                }
                None => return Ok(None),
            }
        }
        Ok(self.buf.pop_front())
    }

    pub async fn collect(mut self) -> Vec<echolog_server::pb::Event> {
        let mut v = Vec::new();
        while let Some(e) = self.next().await.unwrap() {
            v.push(e);
        }
        v
    }
}
