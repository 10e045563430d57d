//! The web console in a real browser: Debian's Chromium driven through ChromeDriver
//! (WebDriver) against a real `echolog serve` with seeded data. Each page is loaded, a history
//! query and a count query are run (the chart's data must equal the gRPC Count's answer), a
//! live tail must receive exactly the events appended during the test, and screenshots are
//! saved as artifacts (`target/tmp/console-screenshots/`, or `ECHOLOG_SCREENSHOTS_DIR`).
//!
//! Without `chromedriver` and `chromium` the test says so and passes, unless
//! `ECHOLOG_BROWSER_TESTS=require` (set by `.ci/run`), where their absence fails it.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, CountRequest, DeleteRequest, HistoryRequest};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const HOUR_MS: i64 = 3_600_000;
const WAIT_MAX: Duration = Duration::from_secs(60);

/// ChromeDriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Starts ChromeDriver, or says why it cannot (`None` only when the browser is not required).
fn driver() -> Option<(Driver, PathBuf)> {
    let required = std::env::var("ECHOLOG_BROWSER_TESTS").as_deref() == Ok("require");
    let drv = find("ECHOLOG_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    let chromium = find("ECHOLOG_CHROMIUM", &["/usr/bin/chromium"]);
    let (Some(drv), Some(chromium)) = (drv, chromium) else {
        assert!(
            !required,
            "ECHOLOG_BROWSER_TESTS=require but chromium or chromedriver is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED: the console browser test needs /usr/bin/chromium and /usr/bin/chromedriver \
             (apt-get install chromium chromium-driver); .ci/run installs them"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(drv)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < WAIT_MAX, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    Some((Driver { child, url }, chromium))
}

async fn browser(d: &Driver, chromium: &PathBuf, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    // The flags keep a headless Chromium off the network it cannot reach here.
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a WebDriver session")
}

fn with<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Polls a script until it returns something other than null/false, or fails with `what`.
async fn wait_js(c: &Client, script: &str, what: &str) -> Value {
    let started = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if !(v.is_null() || v == json!(false)) {
            return v;
        }
        if started.elapsed() > WAIT_MAX {
            let banner = c.execute(
                "return document.getElementById('banner').textContent",
                vec![],
            );
            panic!("timed out waiting for {what}; banner: {:?}", banner.await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = std::env::var("ECHOLOG_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = screenshots_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// A UTC datetime-local value, as the console's inputs take it.
fn input_time(ms: i64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Appends in requests under the test server's 64 KiB message limit; returns the seqs.
async fn append(
    grpc: &mut EventStoreClient<tonic::transport::Channel>,
    events: Vec<pb::Event>,
) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(events.len());
    for chunk in events.chunks(250) {
        let r = grpc.append(with(
            "w",
            AppendRequest {
                events: chunk.to_vec(),
            },
        ));
        seqs.extend(r.await.unwrap().into_inner().seqs);
    }
    seqs
}

struct Seeded {
    day0: i64,
    product_events: usize,
    deleted_seq: u64,
}

/// Yesterday's events: product:123's price changes and tenant t42's API calls per hour, with
/// other tenants' calls beside them, and one price change deleted with a reason.
async fn seed(grpc: &mut EventStoreClient<tonic::transport::Channel>) -> Seeded {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day0 = (now / 86_400_000 - 1) * 86_400_000;
    let mut events = Vec::new();
    let mut price = 12_900;
    for i in 0..60i64 {
        let old = price;
        price += (i * 7919 % 1300) - 650;
        events.push(pb::Event {
            entity: "product:123".into(),
            kind: "price_changed".into(),
            ts: day0 + i * HOUR_MS / 3 + 17,
            tags: vec!["tenant:t42".into(), "source:feed".into()],
            payload: format!(r#"{{"old":{old},"new":{price},"currency":"EUR"}}"#)
                .into_bytes()
                .into(),
            ..Default::default()
        });
    }
    let product_events = events.len();
    for h in 0..24i64 {
        // A day's shape: quiet at night, busy in the afternoon, none at all at 03:00.
        let calls = if h == 3 { 0 } else { 20 + (h * 37 % 90) };
        for i in 0..calls {
            events.push(pb::Event {
                entity: format!("apikey:{}", i % 9),
                kind: "api_call".into(),
                ts: day0 + h * HOUR_MS + i * 1000,
                tags: vec!["tenant:t42".into(), format!("endpoint:/v1/e{}", i % 3)],
                payload: format!(r#"{{"status":200,"ms":{}}}"#, 3 + i % 80)
                    .into_bytes()
                    .into(),
                ..Default::default()
            });
            events.push(pb::Event {
                entity: format!("apikey:{}", 100 + i % 5),
                kind: "api_call".into(),
                ts: day0 + h * HOUR_MS + i * 1000 + 500,
                tags: vec![format!("tenant:t{}", 1 + i % 40)],
                payload: b"{\"status\":200}".to_vec().into(),
                ..Default::default()
            });
        }
    }
    let seqs = append(grpc, events).await;
    let deleted_seq = seqs[55];
    grpc.delete(with(
        "a",
        DeleteRequest {
            entity: "product:123".into(),
            seqs: vec![deleted_seq],
            reason: "wrong feed price".into(),
        },
    ))
    .await
    .unwrap();
    Seeded {
        day0,
        product_events,
        deleted_seq,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_answer_in_a_real_browser() {
    let Some((drv, chromium)) = driver() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let tokens = d.path().join("tokens");
    std::fs::write(&tokens, "r read\nw write\na admin\n").unwrap();
    let srv = Server::start_with(
        &d.path().join("data"),
        &["--tokens-file", tokens.to_str().unwrap()],
    );
    let mut grpc = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    let seeded = seed(&mut grpc).await;
    let c = browser(&drv, &chromium, &d.path().join("profile")).await;
    let base = srv.http_url.clone();

    // A wrong token reads as a sentence from the server, then the read token opens the pages.
    c.goto(&format!("{base}/#/overview")).await.unwrap();
    wait_js(
        &c,
        "return document.getElementById('token-dialog').open",
        "the token dialog",
    )
    .await;
    c.find(Locator::Id("token-input"))
        .await
        .unwrap()
        .send_keys("nope")
        .await
        .unwrap();
    c.find(Locator::Id("token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let banner = wait_js(
        &c,
        "const b = document.getElementById('banner'); return !b.hidden && b.textContent",
        "the unknown-token message",
    )
    .await;
    assert_eq!(banner, "Not signed in: unknown token");
    let input = c.find(Locator::Id("token-input")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("r").await.unwrap();
    c.find(Locator::Id("token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    overview(&c, &mut grpc).await;
    history(&c, &mut grpc, &seeded).await;
    counts(&c, &mut grpc, &seeded).await;
    tail(&c, &mut grpc).await;
    phone(&c, &base, &seeded).await;
    c.close().await.unwrap();
    srv.stop();
}

async fn overview(c: &Client, grpc: &mut EventStoreClient<tonic::transport::Channel>) {
    let stats = grpc
        .stats(with("r", pb::StatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let want = json!(format_number(stats.events));
    let got = wait_js(
        c,
        &format!(
            "const t = document.getElementById('ov-events').textContent; return t === {want} && t"
        ),
        "the overview's event count",
    )
    .await;
    assert_eq!(got, want);
    let state = c
        .execute(
            "return document.getElementById('ov-state').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(state, "writable");
    screenshot(c, "overview.png").await;
}

fn format_number(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Seqs of the history table's rows, top to bottom.
const TABLE_SEQS: &str = "return [...document.querySelectorAll('#history-table tbody tr')]
    .map(r => Number(r.dataset.seq))";

async fn history(c: &Client, grpc: &mut EventStoreClient<tonic::transport::Channel>, s: &Seeded) {
    c.find(Locator::Css("nav a[data-page=history]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let entity = c
        .wait()
        .for_element(Locator::Id("history-entity"))
        .await
        .unwrap();
    entity.send_keys("product:123").await.unwrap();
    c.find(Locator::Id("history-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        c,
        "return window.echologConsole.pages.history.state.shown === 50",
        "the first page of history",
    )
    .await;
    c.find(Locator::Id("history-more"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let want_shown = s.product_events - 1; // one is deleted
    wait_js(
        c,
        &format!("return window.echologConsole.pages.history.state.shown === {want_shown}"),
        "the second page of history",
    )
    .await;
    let shown: Vec<u64> =
        serde_json::from_value(c.execute(TABLE_SEQS, vec![]).await.unwrap()).unwrap();
    let want: Vec<u64> = grpc_history(grpc, false).await;
    assert_eq!(
        shown, want,
        "the table holds History's answer, newest first"
    );
    let first_payload = c
        .find(Locator::Css("#history-table tbody tr td pre"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        first_payload.contains("\"currency\": \"EUR\""),
        "pretty-printed JSON: {first_payload}"
    );

    // Deleted events with their tombstone and reason, from the toggle.
    c.find(Locator::Id("history-deleted"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("history-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let tomb = wait_js(
        c,
        &format!(
            "const r = document.querySelector('#history-table tr[data-seq=\"{}\"]');
             return r && r.classList.contains('deleted') && r.textContent",
            s.deleted_seq
        ),
        "the deleted event",
    )
    .await;
    let tomb = tomb.as_str().unwrap();
    assert!(
        tomb.contains("deleted by tombstone #") && tomb.contains("reason: wrong feed price"),
        "{tomb}"
    );
    // The URL keeps the query: loading it again shows the same rows.
    let url = c.current_url().await.unwrap();
    assert!(url.fragment().unwrap().contains("deleted=on"), "{url}");
    screenshot(c, "history.png").await;

    // A time range: the second hour of the day holds three price changes.
    let (from, to) = (
        input_time(s.day0 + HOUR_MS),
        input_time(s.day0 + 2 * HOUR_MS),
    );
    c.goto(&format!(
        "{}#/history?entity=product:123&from={from}&to={to}",
        url.as_str().split('#').next().unwrap()
    ))
    .await
    .unwrap();
    wait_js(
        c,
        "return window.echologConsole.pages.history.state.shown === 3",
        "the time-ranged history",
    )
    .await;
}

async fn grpc_history(
    grpc: &mut EventStoreClient<tonic::transport::Channel>,
    include_deleted: bool,
) -> Vec<u64> {
    let mut stream = grpc
        .history(with(
            "r",
            HistoryRequest {
                entity: "product:123".into(),
                reverse: true,
                include_deleted,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(b) = stream.message().await.unwrap() {
        seqs.extend(b.events.iter().map(|e| e.seq));
    }
    seqs
}

async fn counts(c: &Client, grpc: &mut EventStoreClient<tonic::transport::Channel>, s: &Seeded) {
    // "How many calls did tenant t42 make per hour yesterday", typed into the form.
    c.find(Locator::Css("nav a[data-page=counts]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let (from, to) = (s.day0, s.day0 + 24 * HOUR_MS);
    let form = c.find(Locator::Id("counts-form")).await.unwrap();
    let kind = form.find(Locator::Css("input[name=kind]")).await.unwrap();
    kind.send_keys("api_call").await.unwrap();
    c.find(Locator::Id("counts-tags"))
        .await
        .unwrap()
        .send_keys("tenant:t42")
        .await
        .unwrap();
    c.execute(
        "document.getElementById('counts-from').value = arguments[0];
         document.getElementById('counts-to').value = arguments[1];",
        vec![json!(input_time(from)), json!(input_time(to))],
    )
    .await
    .unwrap();
    c.find(Locator::Id("counts-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let data = wait_js(
        c,
        "const s = window.echologConsole.pages.counts.state;
         return s.chart && s.query.tag[0] === 'tenant:t42' && s.query.kind === 'api_call'
             && s.chart.data",
        "the count chart",
    )
    .await;
    let answer = grpc
        .count(with(
            "r",
            CountRequest {
                kind: Some("api_call".into()),
                tags: vec!["tenant:t42".into()],
                from_ts: Some(from),
                to_ts: Some(to),
                bucket: pb::Bucket::Hour as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let xs: Vec<f64> = serde_json::from_value(data[0].clone()).unwrap();
    let ys: Vec<f64> = serde_json::from_value(data[1].clone()).unwrap();
    assert_eq!(
        xs.len(),
        24,
        "one bar per hour of the day, empty ones as zero"
    );
    let mut want = [0u64; 24];
    for b in &answer.buckets {
        want[((b.start_ts - from) / HOUR_MS) as usize] = b.count;
    }
    for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
        assert_eq!(*x as i64 * 1000, from + i as i64 * HOUR_MS);
        assert_eq!(
            *y as u64, want[i],
            "hour {i}: the chart's bar equals Count's bucket"
        );
    }
    assert_eq!(want[3], 0, "03:00 had no calls");
    assert_eq!(ys.iter().sum::<f64>() as u64, answer.total);
    let rows = c
        .execute(
            "return document.querySelectorAll('#counts-table tbody tr').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows, json!(answer.buckets.len()));
    let url = c.current_url().await.unwrap();
    let shared = url.as_str().to_owned();
    screenshot(c, "counts.png").await;

    // The shared URL answers the same in a page loaded from it.
    c.goto("about:blank").await.unwrap();
    c.goto(&shared).await.unwrap();
    let again = wait_js(
        c,
        "const s = window.echologConsole.pages.counts.state; return s.answer && s.answer.total",
        "the count from a shared URL",
    )
    .await;
    assert_eq!(again, json!(answer.total));

    // A bad range reads as the server's sentence naming the field.
    let (head, rest) = shared.split_once("&to=").expect("the URL holds the range");
    let rest = rest.split_once('&').map_or("", |(_, r)| r);
    let bad = format!("{head}&to=1970-01-01T00%3A00&{rest}");
    c.goto(&bad).await.unwrap();
    let banner = wait_js(
        c,
        "const b = document.getElementById('banner'); return !b.hidden && b.textContent",
        "the bad range message",
    )
    .await;
    let banner = banner.as_str().unwrap();
    assert!(
        banner.starts_with("Bad input: ") && banner.contains("from_ts"),
        "{banner}"
    );
}

/// Clicks Start with the given tags filter and waits until the tail is live.
async fn start_tail(c: &Client, tags: &str) {
    let input = c
        .find(Locator::Css("#tail-form input[name=tags]"))
        .await
        .unwrap();
    input.clear().await.unwrap();
    if !tags.is_empty() {
        input.send_keys(tags).await.unwrap();
    }
    c.find(Locator::Id("tail-start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        c,
        "return document.getElementById('tail-state').textContent === 'live'",
        "the tail to go live",
    )
    .await;
}

fn log_event(n: u64, error: bool) -> pb::Event {
    pb::Event {
        entity: format!("deploy:{}", n % 13),
        kind: "log".into(),
        ts: 1_700_000_000_000 + n as i64,
        tags: vec![if error { "level:error" } else { "level:info" }.into()],
        payload: format!(r#"{{"n":{n},"msg":"line {n}"}}"#)
            .into_bytes()
            .into(),
        ..Default::default()
    }
}

/// The received counter once it reaches `want`, with the page's tail state.
async fn tail_received(c: &Client, want: usize, what: &str) -> Value {
    let script = format!(
        "const s = window.echologConsole.pages.tail.state; return s.received === {want} && s"
    );
    wait_js(c, &script, what).await
}

async fn tail(c: &Client, grpc: &mut EventStoreClient<tonic::transport::Channel>) {
    c.find(Locator::Css("nav a[data-page=tail]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Unfiltered, 50,000 events as fast as the test can append them: every one is counted.
    start_tail(c, "").await;
    const EVENTS: u64 = 50_000;
    let started = Instant::now();
    let mut want_seqs = Vec::new();
    let mut max_script_ms = 0u128;
    for b in 0..EVENTS / 1000 {
        let events = (0..1000u64)
            .map(|i| log_event(b * 1000 + i, i % 5 == 0))
            .collect();
        want_seqs.extend(append(grpc, events).await);
        if b % 10 == 0 {
            // The page answers a script while the stream pours in: it is not frozen.
            let t = Instant::now();
            c.execute(
                "return window.echologConsole.pages.tail.state.received",
                vec![],
            )
            .await
            .unwrap();
            max_script_ms = max_script_ms.max(t.elapsed().as_millis());
        }
    }
    let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    let got = tail_received(c, want_seqs.len(), "the tail to receive every event").await;
    let drained = EVENTS as f64 / started.elapsed().as_secs_f64();
    assert_eq!(got["lastSeq"], json!(want_seqs.last().unwrap()));
    let buffered: Vec<u64> = got["buffer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        buffered.len() <= 1000,
        "the page's buffer is bounded: {}",
        buffered.len()
    );
    assert_eq!(
        buffered[..],
        want_seqs[want_seqs.len() - buffered.len()..],
        "the newest events, in order, without a gap"
    );
    eprintln!(
        "tail: {EVENTS} events appended at {rate:.0}/s and all received by the page \
         ({drained:.0}/s end to end); slowest script answer during the stream {max_script_ms} ms"
    );
    screenshot(c, "tail.png").await;

    // Filtered: only errors arrive. Pause freezes the table, counting goes on, resume redraws.
    start_tail(c, "level:error").await;
    let events = (0..20u64).map(|n| log_event(n, n % 2 == 0)).collect();
    let seqs = append(grpc, events).await;
    let errors: Vec<u64> = seqs.iter().step_by(2).copied().collect();
    let got = tail_received(c, errors.len(), "the filtered tail").await;
    assert_eq!(got["lastSeq"], json!(errors.last().unwrap()));
    let top = "Number(document.querySelector('#tail-table tbody tr')?.dataset.seq)";
    let newest = errors.last().unwrap();
    wait_js(
        c,
        &format!("return {top} === {newest}"),
        "the table to show the newest",
    )
    .await;
    c.find(Locator::Id("tail-pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let frozen = c.execute(&format!("return {top}"), vec![]).await.unwrap();
    let more = (20..30u64).map(|n| log_event(n, true)).collect();
    let last = *append(grpc, more).await.last().unwrap();
    tail_received(c, errors.len() + 10, "the count to go on while paused").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let still = c.execute(&format!("return {top}"), vec![]).await.unwrap();
    assert_eq!(still, frozen, "the table stays as it was while paused");
    c.find(Locator::Id("tail-pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        c,
        &format!("return {top} === {last}"),
        "the table after resume",
    )
    .await;
    c.find(Locator::Id("tail-stop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn phone(c: &Client, base: &str, s: &Seeded) {
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/#/history?entity=product:123&deleted=on"))
        .await
        .unwrap();
    wait_js(
        c,
        "return window.echologConsole.pages.history.state.shown > 0",
        "history on a phone",
    )
    .await;
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        fits,
        json!(true),
        "the page fits a phone's width (tables scroll inside)"
    );
    screenshot(c, "history-phone.png").await;
    let (from, to) = (input_time(s.day0), input_time(s.day0 + 24 * HOUR_MS));
    c.goto(&format!(
        "{base}/#/counts?kind=api_call&tags=tenant:t42&from={from}&to={to}&bucket=hour"
    ))
    .await
    .unwrap();
    let form_kind = wait_js(
        c,
        "const s = window.echologConsole.pages.counts.state;
         return s.answer !== null && document.querySelector('#counts-form [name=kind]').value",
        "counts on a phone",
    )
    .await;
    assert_eq!(form_kind, "api_call", "the form shows the URL's query");
    c.execute(
        "document.getElementById('counts-summary').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    screenshot(c, "counts-phone.png").await;
    // A page without a query resets the form to its defaults rather than keeping old values.
    c.goto(&format!("{base}/#/counts?bucket=day"))
        .await
        .unwrap();
    let kind = wait_js(
        c,
        "const s = window.echologConsole.pages.counts.state;
         return s.answer !== null && s.query.bucket === 'day'
             && [document.querySelector('#counts-form [name=kind]').value]",
        "counts without a query",
    )
    .await;
    assert_eq!(kind, json!([""]));
}
