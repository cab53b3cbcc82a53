//! The gate's picture: a release answering 5xx to a fifth of its requests fails its
//! first step; the deployer has written `gates/shop/test/<release>-step1.svg` under its
//! state directory, names it in the failure, in `--json` and in `rollout status`, and a
//! real browser (headless Chromium) draws it: many colours, both slots' lines in their
//! own.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::gate::{Load, config};
use crate::harness::{SITE, Traffic};

/// Where Chromium is, or the test fails saying how to get it.
fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "chromium is not installed: the chart test opens the gate's SVG in a real browser (Debian: apt-get install chromium, or run scripts/test)"
    );
}

/// Headless Chromium's screenshot of `svg`, 1000x700, within a minute.
fn screenshot(svg: &Path, png: &Path, profile: &Path) {
    let started = Instant::now();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", svg.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for chromium") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took more than 60 s to draw {}", svg.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.success() && png.exists(),
        "chromium failed ({status}) to screenshot {}:\n{err}",
        svg.display()
    );
    eprintln!("chromium drew the chart in {:?}", started.elapsed());
}

/// The pixels of an RGB(A) PNG, as RGB triples.
fn pixels(png: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::io::BufReader::new(fs::File::open(png).expect("open the screenshot"));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a frame size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("a colour screenshot, not {other:?}"),
    };
    let px = buf[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, px)
}

fn near(p: [u8; 3], c: [u8; 3], by: i32) -> bool {
    p.iter()
        .zip(c)
        .all(|(&a, b)| (i32::from(a) - i32::from(b)).abs() <= by)
}

#[test]
fn a_failed_gate_leaves_a_chart_a_browser_draws() {
    // Before any deploy: without a browser the test fails at once, saying how to get one.
    chromium();
    let mut t = Traffic::start(1);
    t.extra = config("0s");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);

    t.write_app("v2", None);
    t.app_file("ERROR_RATE", "0.2");
    let load = Load::start(&t.address(0), 4);
    let run = t.slipway(&["--json", "deploy", "test"]);
    load.finish();
    assert_eq!(run.code, 1, "{}", run.all());

    // The verdict names its chart, in --json and in the failure.
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let g = events
        .iter()
        .find_map(|e| e["data"].get("gate"))
        .unwrap_or_else(|| panic!("no gate verdict in {}", run.stdout));
    assert_eq!(g["verdict"], "fail", "{g}");
    let chart = PathBuf::from(
        g["chart"]
            .as_str()
            .unwrap_or_else(|| panic!("no chart in {g}")),
    );
    // Under the deployer's state directory (the harness's SLIPWAY_STATE_DIR).
    let gates = t.dir.path().join("state/gates/shop/test");
    assert_eq!(chart.parent(), Some(gates.as_path()), "{g}");
    let name = chart.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.ends_with("-step1.svg"), "{name}");
    let result = events
        .iter()
        .rfind(|e| e["event"] == "result")
        .expect("a result");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("chart: {}", chart.display())),
        "{message}"
    );

    // Both slots, by name, in the picture's text.
    let canary = g["canary_slot"].as_str().unwrap().to_string();
    let stable = g["stable_slot"].as_str().unwrap().to_string();
    let svg = fs::read_to_string(&chart).expect("the chart");
    assert!(svg.contains(&format!("slot {canary} (new)")), "{svg}");
    assert!(svg.contains(&format!("slot {stable} (stable)")), "{svg}");
    assert!(svg.contains("max_error_rate 5%"), "{svg}");

    // `rollout status` points at it too.
    let status = t.ok(&["rollout", "status", "test"]);
    assert!(
        status
            .stdout
            .contains(&format!("gate chart, step 1: {}", chart.display())),
        "{}",
        status.all()
    );
    let status = t.ok(&["--json", "rollout", "status", "test"]);
    let data = status
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "result")
        .expect("a result")["data"]["result"]
        .clone();
    assert_eq!(
        data["gate_charts"][0]["path"].as_str(),
        Some(chart.to_str().unwrap()),
        "{data}"
    );
    assert_eq!(data["gate_charts"][0]["step"], 1, "{data}");

    // A real browser draws it: not blank, many colours, each slot's line in its colour.
    let png = t.dir.path().join("chart.png");
    screenshot(&chart, &png, &t.dir.path().join("chromium-profile"));
    let (w, h, px) = pixels(&png);
    assert_eq!((w, h), (1000, 700));
    let white = px.iter().filter(|p| near(**p, [255, 255, 255], 4)).count();
    let colours: std::collections::HashSet<[u8; 3]> = px.iter().copied().collect();
    let new = px.iter().filter(|p| near(**p, [214, 39, 40], 30)).count();
    let old = px.iter().filter(|p| near(**p, [31, 119, 180], 30)).count();
    // Chromium shows an SVG it cannot parse with a pink error box.
    let error_box = px.iter().filter(|p| near(**p, [255, 221, 221], 2)).count();
    eprintln!(
        "screenshot: {} distinct colours, {} of {} pixels not white, {new} of the new slot's colour, {old} of the stable slot's, {error_box} of an error box",
        colours.len(),
        px.len() - white,
        px.len()
    );
    assert!(colours.len() >= 50, "{} colours", colours.len());
    assert!(
        px.len() - white >= px.len() / 50,
        "nearly blank: {} non-white pixels",
        px.len() - white
    );
    assert!(
        new >= 200,
        "the new slot's lines are not drawn: {new} pixels"
    );
    assert!(
        old >= 200,
        "the stable slot's lines are not drawn: {old} pixels"
    );
    assert!(error_box < 100, "an XML error box: {error_box} pixels");
}
