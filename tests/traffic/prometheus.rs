//! `[gate] source = "prometheus"`: the same verdicts as the access log's, from a real
//! Prometheus (Debian's `prometheus`, started by each test on a loopback port with a
//! config the test writes) scraping every second the slot apps' `/metrics` (a request
//! counter by status code and a latency histogram, each with a `slot` label). A release
//! answering 5xx to a fifth of its requests fails its first step and gets no user; one
//! 40 % slower at p95 fails and one as fast passes a whole rollout; a trickle of requests
//! below min_requests pauses the rollout; Prometheus down (or not Prometheus) makes the
//! gate inconclusive, named.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::gate::{Load, gate_events, result_message};
use crate::harness::{SITE, Traffic, app_config, get};

/// The slot app of the harness (a release's DELAY_MS and ERROR_RATE), plus `/metrics` in
/// Prometheus's text format: `http_requests_total{slot,code}` and the histogram
/// `http_request_duration_seconds{slot}` (5 ms buckets up to 100 ms), counting every
/// request but the health checks and the scrapes, timed by the app itself.
const APP_PY: &str = r#"import os, time, random, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse
here = os.getcwd()
version = open(os.path.join(here, 'VERSION')).read().strip()
slot = os.environ['SLIPWAY_SLOT']
def knob(name):
    p = os.path.join(here, name)
    return float(open(p).read().strip()) if os.path.exists(p) else 0.0
delay_ms = knob('DELAY_MS')
error_rate = knob('ERROR_RATE')
BUCKETS = [round(0.005 * i, 3) for i in range(1, 21)] + [0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0]
lock = threading.Lock()
codes = {}
buckets = [0] * len(BUCKETS)
total = [0.0, 0]
def observe(code, seconds):
    with lock:
        codes[code] = codes.get(code, 0) + 1
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                buckets[i] += 1
        total[0] += seconds
        total[1] += 1
def exposition():
    with lock:
        out = ['# TYPE http_requests_total counter']
        for code, n in sorted(codes.items()):
            out.append('http_requests_total{slot="%s",code="%d"} %d' % (slot, code, n))
        out.append('# TYPE http_request_duration_seconds histogram')
        for b, n in zip(BUCKETS, buckets):
            out.append('http_request_duration_seconds_bucket{slot="%s",le="%g"} %d' % (slot, b, n))
        out.append('http_request_duration_seconds_bucket{slot="%s",le="+Inf"} %d' % (slot, total[1]))
        out.append('http_request_duration_seconds_sum{slot="%s"} %f' % (slot, total[0]))
        out.append('http_request_duration_seconds_count{slot="%s"} %d' % (slot, total[1]))
    return '\n'.join(out)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        started = time.monotonic()
        u = urlparse(self.path)
        if u.path == '/healthz':
            return self.reply(200, 'ok')
        if u.path == '/metrics':
            return self.reply(200, exposition())
        if delay_ms:
            time.sleep(delay_ms * random.uniform(0.5, 1.5) / 1000.0)
        code = 500 if error_rate and random.random() < error_rate else 200
        observe(code, time.monotonic() - started)
        self.reply(code, version if code == 200 else 'injected failure')
    def reply(self, code, body):
        b = (body + '\n').encode()
        self.send_response(code)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer((os.environ['SLIPWAY_ADDRESS'], int(os.environ['SLIPWAY_PORT'])), H).serve_forever()
"#;

/// Where Prometheus is, or the test fails saying how to get it.
fn prometheus_binary() -> &'static str {
    let p = "/usr/bin/prometheus";
    if Path::new(p).exists() {
        return p;
    }
    panic!(
        "prometheus is not installed: the Prometheus gate tests need a real Prometheus server (Debian/Ubuntu: apt-get install prometheus, or run scripts/test)"
    );
}

/// A throwaway Prometheus on a loopback port, scraping `targets` every second; killed
/// when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Prometheus {
    fn start(targets: &[String]) -> Prometheus {
        let binary = prometheus_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .expect("write prometheus.yml");
        // A free loopback port: bound, read, freed for Prometheus.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            log,
        };
        let address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while !matches!(get(&address, "/-/ready", &[]), Ok((200, _))) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus did not become ready in 30 s: {}",
                fs::read_to_string(&p.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("prometheus ready at {} in {:?}", p.url, started.elapsed());
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two user steps, no pause between them, the gate on Prometheus at `url`: 5 s per step,
/// asked every second, at least 40 requests to the new slot.
fn config(url: &str, extra: &str) -> String {
    format!(
        "{}\n[gate]\nsource = \"prometheus\"\nprometheus = \"{url}\"\nwindow = \"5s\"\ninterval = \"1s\"\nmin_requests = 40\nmax_error_rate = 0.05\nmax_p95_increase = 0.3\nmax_consecutive_failures = 2\n{extra}",
        app_config("0s").replace("steps = [10, 50, 100]", "steps = [50, 100]")
    )
}

/// The app source at `version`, with the metrics app and its knobs.
fn release(t: &Traffic, version: &str, knobs: &[(&str, &str)]) {
    t.write_app(version, None);
    t.app_file("app.py", APP_PY);
    for (name, value) in knobs {
        t.app_file(name, value);
    }
}

/// Both slots of every host, as Prometheus's targets.
fn targets(t: &Traffic) -> Vec<String> {
    t.fleet
        .hosts()
        .iter()
        .flat_map(|h| {
            [
                format!("{}:18001", h.address),
                format!("{}:18002", h.address),
            ]
        })
        .collect()
}

/// A few requests a second (one every `every`), each with its own cookie, until stopped
/// (at most 60 s).
struct Trickle {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    handle: JoinHandle<()>,
}

impl Trickle {
    fn start(addr: &str, every: Duration) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (s, n, addr) = (stop.clone(), sent.clone(), addr.to_string());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0;
            while !s.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                i += 1;
                let _ = get(&addr, "/", &[("Cookie", &format!("uid=trickle-{i}"))]);
                n.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(every);
            }
        });
        Trickle { stop, sent, handle }
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("trickle thread");
        self.sent.load(Ordering::SeqCst)
    }
}

#[test]
fn prometheus_fails_a_release_answering_5xx_pauses_on_too_few_requests_and_names_a_server_that_is_down()
 {
    let test_started = Instant::now();
    let mut t = Traffic::start(1);
    let prom = Prometheus::start(&targets(&t));
    t.extra = config(&prom.url, "");
    release(&t, "v1", &[]);
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    // `slipway check` asks each of the gate's queries once, from the deployer.
    let check = t.ok(&["check", "test"]);
    for name in ["requests", "errors_5xx", "p95"] {
        assert!(
            check.stdout.lines().any(|l| l.starts_with("ok")
                && l.contains(&format!("[gate.queries] {name}: Prometheus at"))),
            "{name}: {}",
            check.all()
        );
    }

    // v2 answers its health check but 500 to a fifth of the users' requests.
    release(&t, "v2", &[("ERROR_RATE", "0.2")]);
    let load = Load::start(&t.address(0), 4);
    let started = Instant::now();
    let run = t.slipway(&["--json", "deploy", "test"]);
    let took = started.elapsed();
    let (sent, errors) = load.finish();
    eprintln!("5xx release: deploy failed in {took:?}; load {sent} requests, {errors} errors");
    assert_eq!(run.code, 1, "{}", run.all());
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
    for line in run.stdout.lines() {
        let e: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        let problems = crate::schema::validate(&schema, &e);
        assert!(problems.is_empty(), "{e}: {problems:?}");
    }
    assert!(
        run.stdout.contains(&format!(
            "traffic gate on Prometheus at {}/ for up to 5s",
            prom.url
        )),
        "{}",
        run.all()
    );
    let gates = gate_events(&run);
    assert_eq!(gates.len(), 1, "one verdict, at step 1: {gates:?}");
    let g = &gates[0];
    eprintln!("5xx release: {}", g["reason"]);
    assert_eq!(
        (
            g["verdict"].as_str(),
            g["step"].as_u64(),
            g["source"].as_str()
        ),
        (Some("fail"), Some(1), Some("prometheus")),
        "{g}"
    );
    let canary_rate = g["canary"]["rate_5xx"].as_f64().unwrap();
    assert!((0.08..0.4).contains(&canary_rate), "{g}");
    assert_eq!(g["stable"]["rate_5xx"].as_f64(), Some(0.0), "{g}");
    assert!(g["canary"]["requests"].as_u64().unwrap() >= 40, "{g}");
    assert!(g["stable"]["requests"].as_u64().unwrap() >= 40, "{g}");
    assert!(g["canary"]["p95_ms"].as_u64().is_some(), "{g}");
    assert!(g["queries"].as_u64().unwrap() >= 6, "{g}");
    assert_eq!(g["p_slower"], serde_json::Value::Null, "no rank test: {g}");
    let canary = crate::gate::failed_gate_reported(&run, g);
    let text = crate::gate::gate_record_text(&t);
    assert!(
        text.contains("(new): ")
            && text.contains("(stable): ")
            && text.contains("Prometheus queries answered"),
        "{text}"
    );
    // Nobody on the new slot any more, and its instance is stopped.
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("-"));
    for i in 0..50 {
        let cookie = format!("uid=k{i}");
        let (_, slot) = get(&t.address(0), "/slot", &[("Cookie", &cookie)]).unwrap();
        assert_ne!(slot, canary, "a user still lands on the failed slot");
    }
    assert!(!t.slot_running(0, &canary), "the failed slot is stopped");

    // Prometheus down (a port nobody listens on), and with on_inconclusive = "fail":
    // named, inconclusive, rolled back.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    t.extra = config(&format!("http://{closed}"), "on_inconclusive = \"fail\"\n")
        .replace("window = \"5s\"", "window = \"2s\"");
    let check = t.slipway(&["check", "test"]);
    assert_ne!(check.code, 0, "{}", check.all());
    assert!(
        check.stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains("[gate.queries] requests: Prometheus at")
            && l.contains("got no answer (cannot connect")),
        "{}",
        check.all()
    );
    release(&t, "v3", &[]);
    let load = Load::start(&t.address(0), 2);
    let run = t.slipway(&["deploy", "test"]);
    load.finish();
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    if let Some(line) = all
        .lines()
        .find(|l| l.contains("traffic gate inconclusive"))
    {
        eprintln!("prometheus down: {line}");
    }
    assert!(
        all.contains(&format!(
            "traffic gate inconclusive at step 1: Prometheus at http://{closed}/ over the last "
        )) && all.contains("queries (requests of slot")
            && all.contains("got no answer (cannot connect"),
        "{all}"
    );
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("-"));

    // A trickle of requests, fewer than min_requests in the window: inconclusive, the
    // rollout pauses at step 1 (its users stay where they are).
    t.extra = config(&prom.url, "");
    release(&t, "v4", &[]);
    let trickle = Trickle::start(&t.address(0), Duration::from_millis(200));
    let run = t.slipway(&["--json", "deploy", "test"]);
    let sent = trickle.finish();
    assert_eq!(run.code, 0, "{}", run.all());
    let gates = gate_events(&run);
    let g = gates
        .last()
        .unwrap_or_else(|| panic!("no verdict: {}", run.all()));
    eprintln!("trickle of {sent} requests: {}", g["reason"]);
    assert_eq!(g["verdict"], "inconclusive", "{g}");
    let reason = g["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("request(s) reached the new slot, fewer than min_requests = 40"),
        "{reason}"
    );
    let n = g["canary"]["requests"].as_u64().unwrap();
    assert!(n < 40, "{g}");
    assert!(run.stdout.contains("rollout paused"), "{}", run.all());
    assert_eq!(t.header_value(0, "percent").as_deref(), Some("50"));
    eprintln!("whole test: {:?}", test_started.elapsed());
}

#[test]
fn prometheus_fails_a_release_slower_at_p95_and_passes_one_as_fast() {
    let test_started = Instant::now();
    let mut t = Traffic::start(1);
    let prom = Prometheus::start(&targets(&t));
    // Quantiles only, no rank test: the threshold sits halfway between the 40 % to catch
    // and the up to ~10 % by which two equal slots' p95s differ here under load.
    t.extra = config(&prom.url, "").replace("max_p95_increase = 0.3", "max_p95_increase = 0.25");
    release(&t, "v1", &[("DELAY_MS", "20")]);
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    let load = Load::start(&t.address(0), 4);

    // 40 % slower, no errors: the relative p95 threshold fails it.
    release(&t, "v2", &[("DELAY_MS", "28")]);
    let run = t.slipway(&["--json", "deploy", "test"]);
    let gates = gate_events(&run);
    let g = gates
        .last()
        .unwrap_or_else(|| panic!("no verdict: {}", run.all()));
    eprintln!("40% slower: {}", g["reason"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        (g["verdict"].as_str(), g["step"].as_u64()),
        (Some("fail"), Some(1)),
        "{g}"
    );
    assert_eq!(g["canary"]["rate_5xx"].as_f64(), Some(0.0), "{g}");
    let (cp, sp) = (
        g["canary"]["p95_ms"].as_u64().unwrap(),
        g["stable"]["p95_ms"].as_u64().unwrap(),
    );
    assert!(cp as f64 > sp as f64 * 1.25, "{g}");
    let message = result_message(&run);
    assert!(
        message.contains("above the stable slot's") && message.contains("no rank test"),
        "{message}"
    );

    // As fast: the whole rollout passes both steps' gates and is promoted.
    release(&t, "v3", &[("DELAY_MS", "20")]);
    let run = t.slipway(&["--json", "deploy", "test"]);
    let (sent, errors) = load.finish();
    assert_eq!(run.code, 0, "{}", run.all());
    let gates = gate_events(&run);
    for g in &gates {
        eprintln!("as fast, step {}: {}", g["step"], g["summary"]);
    }
    assert_eq!(gates.len(), 2, "{gates:?}");
    assert!(gates.iter().all(|g| g["verdict"] == "pass"), "{gates:?}");
    assert!(
        gates[0]["stable"]["p95_ms"].as_u64().is_some(),
        "step 1 compared both slots: {gates:?}"
    );
    let (_, body) = get(&t.address(0), "/", &[("Cookie", "uid=after")]).unwrap();
    assert_eq!(body, "v3");
    eprintln!(
        "load {sent} requests, {errors} errors; whole test: {:?}",
        test_started.elapsed()
    );
}
