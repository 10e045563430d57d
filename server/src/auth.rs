//! Tokens and rights: who may call what.
//!
//! A tokens file holds one token per line followed by its rights, any of `read`, `write`,
//! `admin` separated by commas (`s3cr3t-token read,write`); `#` starts a comment. Clients send
//! `authorization: Bearer <token>`. With a tokens file configured, a missing or unknown token is
//! `UNAUTHENTICATED` and a right the token lacks is `PERMISSION_DENIED`. The check is one tower
//! layer in front of every service, keyed by the gRPC method path, so no handler can forget it.
//! Tokens are compared in constant time and never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use subtle::ConstantTimeEq;
use tonic::codegen::http;
use tonic::Status;

/// Tokens in one file, at most.
pub const TOKENS_COUNT_MAX: usize = 10_000;
/// Length of one token, bytes.
pub const TOKEN_BYTES_MAX: usize = 512;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

/// The right a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    Read,
    Write,
    Admin,
}

impl Right {
    fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }
}

impl Rights {
    fn has(&self, r: Right) -> bool {
        match r {
            Right::Read => self.read,
            Right::Write => self.write,
            Right::Admin => self.admin,
        }
    }
}

/// A line of the tokens file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The parsed tokens file.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Rights)>,
}

impl Tokens {
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, TokensError> {
        let bad = |line: usize, reason: String| TokensError::Line {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(rights), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(
                    i + 1,
                    "expected `<token> <rights>`, rights like read,write".into(),
                ));
            };
            if token.len() > TOKEN_BYTES_MAX {
                return Err(bad(
                    i + 1,
                    format!("token longer than {TOKEN_BYTES_MAX} bytes"),
                ));
            }
            let mut r = Rights::default();
            for right in rights.split(',') {
                match right {
                    "read" => r.read = true,
                    "write" => r.write = true,
                    "admin" => r.admin = true,
                    other => {
                        return Err(bad(
                            i + 1,
                            format!("unknown right {other:?} (read, write, admin)"),
                        ))
                    }
                }
            }
            entries.push((token.as_bytes().to_vec(), r));
            if entries.len() > TOKENS_COUNT_MAX {
                return Err(bad(i + 1, format!("more than {TOKENS_COUNT_MAX} tokens")));
            }
        }
        Ok(Tokens { entries })
    }

    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse(path, &text)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The rights of `token`. Every entry is compared, each in constant time, so the time taken
    /// says nothing about which token (or how much of one) matched.
    fn rights_of(&self, token: &[u8]) -> Option<Rights> {
        let mut found = None;
        for (t, r) in &self.entries {
            if bool::from(t.as_slice().ct_eq(token)) {
                found = Some(*r);
            }
        }
        found
    }
}

/// The tokens in force, swapped whole when the file is re-read (SIGHUP).
#[derive(Clone)]
pub struct Auth {
    path: Option<PathBuf>,
    tokens: Arc<RwLock<Arc<Tokens>>>,
}

impl Auth {
    /// No tokens file: every call is allowed.
    pub fn open() -> Auth {
        Auth {
            path: None,
            tokens: Arc::new(RwLock::new(Arc::new(Tokens::default()))),
        }
    }

    pub fn from_file(path: &Path) -> Result<Auth, TokensError> {
        let tokens = Tokens::load(path)?;
        Ok(Auth {
            path: Some(path.to_path_buf()),
            tokens: Arc::new(RwLock::new(Arc::new(tokens))),
        })
    }

    /// Re-reads the tokens file; on error the tokens in force stay.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let t = Tokens::load(path)?;
        let n = t.len();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
        Ok(n)
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Checks the `authorization` header for `needed`.
    pub fn check(&self, headers: &http::HeaderMap, needed: Right) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing `authorization: Bearer <token>` (gRPC metadata or HTTP header)",
                )
            })?;
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let rights = tokens
            .rights_of(token.trim().as_bytes())
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        if rights.has(needed) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this token lacks the `{}` right",
                needed.name()
            )))
        }
    }
}

/// The right a gRPC method path needs; `None` for calls open to all (health).
pub fn needed_right(path: &str) -> Option<Right> {
    if path.starts_with("/grpc.health.v1.Health/") {
        return None;
    }
    let method = path.strip_prefix("/echolog.v1.EventStore/");
    Some(match method {
        Some("Append" | "AppendStream" | "CommitCursor") => Right::Write,
        Some("Delete" | "Restore" | "Purge" | "Backup") => Right::Admin,
        // Reads, reflection, and anything unknown (which then answers UNIMPLEMENTED to a
        // reader only).
        _ => Right::Read,
    })
}

/// Tower layer that runs [`Auth::check`] before every call.
#[derive(Clone)]
pub struct AuthLayer(pub Auth);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let verdict = match needed_right(req.uri().path()) {
            None => Ok(()),
            Some(r) => self.auth.check(req.headers(), r),
        };
        match verdict {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokens_file_parses_rights_and_names_the_bad_line() {
        let p = Path::new("tokens");
        let t = Tokens::parse(
            p,
            "# comment\n\nr1 read\nrw read,write # inline\nall read,write,admin\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.rights_of(b"rw"),
            Some(Rights {
                read: true,
                write: true,
                admin: false
            })
        );
        assert_eq!(t.rights_of(b"r"), None);
        let e = Tokens::parse(p, "ok read\nbad reed\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 2") && e.contains("reed"), "{e}");
        let e = Tokens::parse(p, "lonely\n").err().unwrap().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn every_method_needs_the_right_the_design_names() {
        for (m, r) in [
            ("Append", Some(Right::Write)),
            ("AppendStream", Some(Right::Write)),
            ("History", Some(Right::Read)),
            ("Count", Some(Right::Read)),
            ("Tail", Some(Right::Read)),
            ("Stats", Some(Right::Read)),
            ("Delete", Some(Right::Admin)),
            ("Restore", Some(Right::Admin)),
            ("CommitCursor", Some(Right::Write)),
            ("GetCursor", Some(Right::Read)),
            ("ListCursors", Some(Right::Read)),
        ] {
            assert_eq!(
                needed_right(&format!("/echolog.v1.EventStore/{m}")),
                r,
                "{m}"
            );
        }
        assert_eq!(needed_right("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            needed_right("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(Right::Read)
        );
    }

    #[test]
    fn missing_unknown_and_underprivileged_tokens_get_their_codes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "reader read\n").unwrap();
        let auth = Auth::from_file(&path).unwrap();
        let mut h = http::HeaderMap::new();
        assert_eq!(
            auth.check(&h, Right::Read).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            auth.check(&h, Right::Read).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        h.insert("authorization", "Bearer reader".parse().unwrap());
        auth.check(&h, Right::Read).unwrap();
        assert_eq!(
            auth.check(&h, Right::Write).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        std::fs::write(&path, "reader read,write\n").unwrap();
        assert_eq!(auth.reload().unwrap(), 1);
        auth.check(&h, Right::Write).unwrap();
        std::fs::write(&path, "broken\n").unwrap();
        assert!(auth.reload().is_err());
        auth.check(&h, Right::Write)
            .expect("a bad file keeps the tokens in force");
    }
}
