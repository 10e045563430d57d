//! Security through a real server: TLS and mutual TLS, tokens with rights (missing, wrong and
//! underprivileged tokens get UNAUTHENTICATED / PERMISSION_DENIED), reflection over TLS with a
//! read token, health open to all and NOT_SERVING while the store is read-only, the refusal of
//! plain TCP on a non-loopback address, and the tokens file re-read on SIGHUP.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, DeleteRequest, HistoryRequest, StatsRequest};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn https(srv: &Server) -> String {
    srv.url.replacen("http://", "https://", 1)
}

async fn tls_channel(url: &str, pki: &Pki, client_cert: bool) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca));
    if client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    let ep = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    ep.connect().await.map_err(|e| format!("{e:?}"))
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn event(i: u64) -> pb::Event {
    pb::Event {
        entity: "product:1".into(),
        kind: "price".into(),
        ts: 1000 + i as i64,
        ..Default::default()
    }
}

const TOKENS: &str = "# test tokens\nreader read\nwriter write\nboss read,write,admin\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_rights_over_tls() {
    let d = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(d.path(), "server.pem", &pki.server_cert);
    let key = write(d.path(), "server.key", &pki.server_key);
    let tokens = write(d.path(), "tokens", TOKENS);
    let srv = Server::start_with(
        &d.path().join("data"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tokens-file",
            &tokens,
        ],
    );
    let ch = tls_channel(&https(&srv), &pki, false).await.unwrap();
    let mut c = EventStoreClient::new(ch.clone());

    let append = |t: Option<&'static str>| {
        with_token(
            AppendRequest {
                events: vec![event(1)],
            },
            t,
        )
    };
    let code =
        |r: Result<tonic::Response<pb::AppendResponse>, tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(c.append(append(None)).await),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        code(c.append(append(Some("guess"))).await),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        code(c.append(append(Some("reader"))).await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(code(c.append(append(Some("writer"))).await), None);
    let hist = |t| {
        with_token(
            HistoryRequest {
                entity: "product:1".into(),
                ..Default::default()
            },
            t,
        )
    };
    assert_eq!(
        c.history(hist(None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        c.history(hist(Some("writer"))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    c.history(hist(Some("reader"))).await.unwrap();
    let stats = c
        .stats(with_token(StatsRequest {}, Some("reader")))
        .await
        .unwrap();
    assert_eq!(stats.into_inner().last_seq, 1);
    let del = |t| {
        with_token(
            DeleteRequest {
                entity: "product:1".into(),
                seqs: vec![],
                reason: "x".into(),
            },
            t,
        )
    };
    assert_eq!(
        c.delete(del(Some("writer"))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    c.delete(del(Some("boss"))).await.unwrap();

    // Health is open to all; reflection needs read (and works over TLS, as grpcurl uses it).
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "echolog.v1.EventStore".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut r = ServerReflectionClient::new(ch.clone());
        let req = || {
            tokio_stream::iter(vec![ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            }])
        };
        let denied = r.server_reflection_info(with_token(req(), None)).await;
        assert_eq!(denied.unwrap_err().code(), Code::Unauthenticated);
        let mut s = r
            .server_reflection_info(with_token(req(), Some("reader")))
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        assert!(format!("{first:?}").contains("echolog.v1.EventStore"));
    }

    // Plain TCP to a TLS port does not get through.
    let plain = async {
        let mut p = EventStoreClient::connect(srv.url.clone()).await.ok()?;
        p.stats(with_token(StatsRequest {}, Some("reader")))
            .await
            .ok()
    };
    assert!(plain.await.is_none());

    // The CLI speaks TLS with a token.
    let ca = write(d.path(), "ca.pem", &pki.ca);
    let url = https(&srv);
    let (ok, out, err) = common::cli(
        &["--server", &url, "--tls-ca", &ca, "--token", "reader"],
        &["stats"],
    );
    assert!(ok && out.contains("last_seq    2"), "{out}{err}");
    let (ok, _, err) = common::cli(
        &["--server", &url, "--tls-ca", &ca, "--token", "reader"],
        &["restore", "product:1"],
    );
    assert!(!ok && err.contains("PermissionDenied"), "{err}");

    // SIGHUP re-reads the tokens file.
    std::fs::write(&tokens, format!("{TOKENS}late read\n")).unwrap();
    Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status()
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if c.stats(with_token(StatsRequest {}, Some("late")))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a token added to the file works after SIGHUP");
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let d = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(d.path(), "server.pem", &pki.server_cert);
    let key = write(d.path(), "server.key", &pki.server_key);
    let ca = write(d.path(), "ca.pem", &pki.ca);
    let srv = Server::start_with(
        &d.path().join("data"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let url = https(&srv);
    let without = async {
        let ch = tls_channel(&url, &pki, false).await.ok()?;
        EventStoreClient::new(ch).stats(StatsRequest {}).await.ok()
    };
    assert!(without.await.is_none(), "no client certificate, no call");
    let ch = tls_channel(&url, &pki, true).await.unwrap();
    EventStoreClient::new(ch)
        .stats(StatsRequest {})
        .await
        .unwrap();
    let client_cert = write(d.path(), "client.pem", &pki.client_cert);
    let client_key = write(d.path(), "client.key", &pki.client_key);
    let (ok, out, err) = common::cli(
        &[
            "--server",
            &url,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &client_cert,
            "--tls-key",
            &client_key,
        ],
        &["stats"],
    );
    assert!(ok && out.contains("last_seq"), "{out}{err}");
    srv.stop();
}

#[test]
fn plain_tcp_on_a_non_loopback_address_is_refused_unless_insecure() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_echolog"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refusing") && err.contains("--tls-cert") && err.contains("--insecure"),
        "{err}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_echolog"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--insecure",
            "--http-listen",
            "none",
        ])
        .arg("--data-dir")
        .arg(d.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on 0.0.0.0:"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_store_is_read_only() {
    use echolog::storage::sim::{Errno, FaultOp, FaultRule, SimDisk};
    let disk = SimDisk::new();
    let opts = echolog::Options {
        backend: Some(disk.backend()),
        ..echolog::Options::default()
    };
    let store = echolog::Store::open("/sim/data", opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(echolog_server::serve(
        store,
        listener,
        echolog_server::ServerConfig::default(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let ch = Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut c = EventStoreClient::new(ch.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let status = |h: tonic_health::pb::HealthCheckResponse| h.status;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let check = tonic_health::pb::HealthCheckRequest {
        service: "echolog.v1.EventStore".into(),
    };
    c.append(AppendRequest {
        events: vec![event(1)],
    })
    .await
    .unwrap();
    assert_eq!(
        status(health.check(check.clone()).await.unwrap().into_inner()),
        serving
    );
    disk.add_rule(FaultRule::new(FaultOp::Sync, Errno::Eio));
    let e = c
        .append(AppendRequest {
            events: vec![event(2)],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let mut seen = false;
    for _ in 0..40 {
        let s = status(health.check(check.clone()).await.unwrap().into_inner());
        if s == not_serving {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "health turns NOT_SERVING");
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
