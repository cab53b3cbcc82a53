//! The traffic gate's second source (`[gate] source = "prometheus"`): each reading asks
//! Prometheus's HTTP API (`GET /api/v1/query`, from the deployer, through slipway's one
//! HTTP client) for each slot's numbers over the time since the step's split took
//! effect, and hands them to the same verdict as the access log
//! ([`log_verdict::verdict`]).
//!
//! Prometheus answers quantiles, not requests: a p95 comes from the query (a histogram's
//! `histogram_quantile` by default), so there is no Mann-Whitney test; the relative
//! latency decision rests on `max_p95_increase` and `min_p95_difference` alone.
//!
//! Prometheus's answers are untrusted input: down, not JSON, an error, several series, an
//! empty vector, NaN or an infinity each become a sentence in the verdict (inconclusive
//! when a number the gate needs is missing), never a panic.

use std::time::{Duration, Instant};

use futures::future::join_all;
use url::Url;

use super::access_log::SlotNumbers;
use super::log_verdict::{self, Judged, Reading, Source};
use super::split::Slot;
use crate::config::{Gate, Queries};
use crate::rollout::http;

/// Bytes of one answer read: a query the gate can use answers one number (a few hundred
/// bytes); more is a query that selects many series.
pub const ANSWER_LIMIT: usize = 256 * 1024;

/// What one instant query answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// One finite number.
    Number(f64),
    /// An empty vector: no series matched (or none had a sample in the range).
    Empty,
    /// `NaN` (e.g. a quantile of a histogram with no observation in the range).
    NaN,
    /// `+Inf` or `-Inf` (e.g. a quantile in a histogram's `+Inf` bucket).
    Infinite(f64),
}

/// `query` with `{slot}`, `{window}` (whole seconds, e.g. `42s`) and `{app}` filled in.
pub fn expand(query: &str, slot: Slot, window: Duration, app: &str) -> String {
    query
        .replace("{slot}", slot.name())
        .replace("{window}", &format!("{}s", window.as_secs().max(1)))
        .replace("{app}", app)
}

/// Reads an answer of `/api/v1/query` (its HTTP status and body).
pub fn parse_answer(status: u16, body: &str) -> Result<Answer, String> {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let Some(json) = json else {
        let start: String = body.trim().chars().take(80).collect();
        return Err(format!(
            "answered status {status} with something that is not JSON (`{}`): is it Prometheus's address?",
            start.escape_debug()
        ));
    };
    if json["status"] != "success" || !(200..300).contains(&status) {
        return Err(match (json["errorType"].as_str(), json["error"].as_str()) {
            (Some(kind), Some(e)) => format!("answered status {status}, {kind}: {e}"),
            _ => format!("answered status {status} without Prometheus's `status: success`"),
        });
    }
    let data = &json["data"];
    let value = match data["resultType"].as_str() {
        Some("vector") => {
            let Some(result) = data["result"].as_array() else {
                return Err("answered a vector without its `result` list".into());
            };
            match result.len() {
                0 => return Ok(Answer::Empty),
                1 => &result[0]["value"],
                n => {
                    return Err(format!(
                        "answered {n} series, not one number: aggregate them (e.g. sum(...) or sum by (le) (...) inside histogram_quantile)"
                    ));
                }
            }
        }
        Some("scalar") => &data["result"],
        Some(other) => {
            return Err(format!(
                "answered a {}, not a number: write an instant query (e.g. sum(increase(metric[{{window}}])))",
                other.chars().take(20).collect::<String>().escape_debug()
            ));
        }
        None => return Err("answered without a `data.resultType`".into()),
    };
    // A sample is [timestamp, "value"]: the value is a string ("NaN", "+Inf" included).
    let Some(text) = value.get(1).and_then(|v| v.as_str()) else {
        return Err("answered a sample without a value".into());
    };
    match text {
        "NaN" => Ok(Answer::NaN),
        "+Inf" | "Inf" => Ok(Answer::Infinite(f64::INFINITY)),
        "-Inf" => Ok(Answer::Infinite(f64::NEG_INFINITY)),
        t => match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Answer::Number(v)),
            Ok(v) if v.is_nan() => Ok(Answer::NaN),
            Ok(v) => Ok(Answer::Infinite(v)),
            Err(_) => Err(format!(
                "answered `{}`, not a number",
                t.chars().take(40).collect::<String>().escape_debug()
            )),
        },
    }
}

/// Asks `promql` of the server at `base`.
pub async fn query(base: &Url, promql: &str, timeout: Duration) -> Result<Answer, String> {
    let mut url = base
        .join("api/v1/query")
        .map_err(|e| format!("cannot make the query's URL: {e}"))?;
    url.query_pairs_mut().append_pair("query", promql);
    let (status, body) = http::get_text(&url, ANSWER_LIMIT, timeout)
        .await
        .map_err(|e| format!("got no answer ({e})"))?;
    parse_answer(status, &body)
}

/// `slipway check`'s look at the gate's Prometheus: every query of `queries` asked once
/// (slot `a`, a one-minute window), each answer named — `(ok, what)` per query. A number,
/// an empty vector or NaN is a query Prometheus accepts (there may simply be no traffic
/// yet); no answer, an error or several series is what a gate would fail on.
pub async fn preflight(url: &Url, queries: &Queries, app: &str) -> Vec<(bool, String)> {
    let named = [
        ("requests", &queries.requests),
        ("errors_5xx", &queries.errors_5xx),
        ("errors_4xx", &queries.errors_4xx),
        ("p50", &queries.p50),
        ("p95", &queries.p95),
        ("p99", &queries.p99),
    ];
    let asked = named
        .iter()
        .filter(|(_, q)| !q.is_empty())
        .map(|&(name, q)| async move {
            let promql = expand(q, Slot::A, Duration::from_secs(60), app);
            let answer = query(url, &promql, Duration::from_secs(10)).await;
            let at = crate::redact::url(url);
            match answer {
                Ok(a) => (
                    true,
                    format!(
                        "[gate.queries] {name}: Prometheus at {at} answers {}",
                        match a {
                            Answer::Number(v) => format!("{v}"),
                            Answer::Empty => "an empty vector (no traffic yet?)".to_string(),
                            Answer::NaN => "NaN (no observation yet?)".to_string(),
                            Answer::Infinite(v) => format!("{v}"),
                        }
                    ),
                ),
                Err(why) => (
                    false,
                    format!("[gate.queries] {name}: Prometheus at {at} {why}"),
                ),
            }
        });
    join_all(asked).await
}

/// A query whose answer the gate cannot use: which, of which slot, and why.
#[derive(Debug, Clone, PartialEq)]
struct Problem {
    what: &'static str,
    slot: Slot,
    why: String,
}

/// The problems, those with the same cause together (Prometheus down fails every query
/// the same way): `the requests query of slot b got no answer (...)`, `6 queries
/// (requests of slot b, errors_5xx of slot b, ...) got no answer (...)`.
fn problems_text(problems: &[Problem]) -> String {
    let mut whys: Vec<&str> = Vec::new();
    for p in problems {
        if !whys.contains(&p.why.as_str()) {
            whys.push(&p.why);
        }
    }
    whys.iter()
        .map(|why| {
            let same: Vec<&Problem> = problems.iter().filter(|p| p.why == *why).collect();
            match same[..] {
                [p] => format!("the {} query of slot {} {why}", p.what, p.slot.name()),
                _ => {
                    let named: Vec<String> = same
                        .iter()
                        .take(2)
                        .map(|p| format!("{} of slot {}", p.what, p.slot.name()))
                        .collect();
                    let more = if same.len() > 2 { ", ..." } else { "" };
                    format!("{} queries ({}{more}) {why}", same.len(), named.join(", "))
                }
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One number of a slot: which query, and what became of its answer.
struct Asked {
    what: &'static str,
    answer: Option<Result<Answer, String>>,
}

/// Watches one step's window through Prometheus.
pub struct Reader {
    url: Url,
    queries: Queries,
    app: String,
    started: Instant,
    timeout: Duration,
}

impl Reader {
    /// The window starts now (the step's split is in force).
    pub fn begin(url: &Url, queries: &Queries, app: &str, gate: &Gate) -> Reader {
        Reader {
            url: url.clone(),
            queries: queries.clone(),
            app: app.to_string(),
            started: Instant::now(),
            timeout: gate
                .interval
                .clamp(Duration::from_secs(1), Duration::from_secs(10)),
        }
    }

    /// Where the numbers come from, as the gate's progress line says it.
    pub fn describe(&self) -> String {
        format!("Prometheus at {}", crate::redact::url(&self.url))
    }

    /// The numbers of the window so far (whole seconds since the step began), judged.
    pub async fn read(&self, canary: Slot, stable: Option<Slot>, gate: &Gate) -> Judged {
        let window = self.started.elapsed();
        let slots: Vec<Slot> = std::iter::once(canary).chain(stable).collect();
        let asked = join_all(slots.iter().map(|&s| self.ask_slot(s, window))).await;
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut answered = 0;
        let mut numbers = Vec::new();
        for (slot, asked) in slots.iter().zip(asked) {
            answered += asked
                .iter()
                .filter(|a| matches!(a.answer, Some(Ok(_))))
                .count() as u64;
            numbers.push(slot_numbers(*slot, &asked, &mut problems, &mut notes));
        }
        let unsure = if problems.is_empty() {
            vec![]
        } else {
            vec![format!(
                "{} over the last {}s: {}",
                self.describe(),
                window.as_secs().max(1),
                problems_text(&problems)
            )]
        };
        log_verdict::verdict(
            Reading {
                source: Source::Prometheus,
                canary_slot: canary,
                canary: numbers[0],
                stable_slot: stable,
                stable: numbers.get(1).copied(),
                p_slower: None,
                malformed_lines: 0,
                bytes_read: 0,
                queries: answered,
                unsure,
                notes,
                hosts: None,
            },
            gate,
        )
    }

    async fn ask_slot(&self, slot: Slot, window: Duration) -> Vec<Asked> {
        let q = &self.queries;
        let all: [(&'static str, &String); 6] = [
            ("requests", &q.requests),
            ("errors_5xx", &q.errors_5xx),
            ("errors_4xx", &q.errors_4xx),
            ("p50", &q.p50),
            ("p95", &q.p95),
            ("p99", &q.p99),
        ];
        let asks = all.iter().map(|&(what, text)| async move {
            let answer = if text.is_empty() {
                None
            } else {
                let promql = expand(text, slot, window, &self.app);
                Some(query(&self.url, &promql, self.timeout).await)
            };
            Asked { what, answer }
        });
        join_all(asks).await
    }
}

/// A slot's numbers from its answers; what makes them unusable goes to `problems`, what
/// only explains them to `notes`.
fn slot_numbers(
    slot: Slot,
    asked: &[Asked],
    problems: &mut Vec<Problem>,
    notes: &mut Vec<String>,
) -> SlotNumbers {
    let name = slot.name();
    let answer = |what: &str| {
        asked
            .iter()
            .find(|a| a.what == what)
            .and_then(|a| a.answer.clone())
    };
    let mut failed = |what: &'static str, why: String| {
        problems.push(Problem { what, slot, why });
    };
    // Counts: an empty vector is none (a `code="5xx"` series exists only after the
    // first 5xx); NaN, an infinity or a negative count is not a count.
    let mut count = |what: &'static str| -> Option<f64> {
        match answer(what)? {
            Err(why) => {
                failed(what, why);
                None
            }
            Ok(Answer::Empty) => Some(0.0),
            Ok(Answer::Number(v)) if v >= 0.0 => Some(v),
            Ok(other) => {
                failed(
                    what,
                    format!("answered {}, not a count", answer_text(other)),
                );
                None
            }
        }
    };
    let requests = count("requests");
    let errors_5xx = count("errors_5xx");
    let errors_4xx = count("errors_4xx");
    let n = requests.unwrap_or(0.0);
    if matches!(answer("requests"), Some(Ok(Answer::Empty))) {
        notes.push(format!(
            "Prometheus had no series for the requests of slot {name}"
        ));
    }
    let rate = |e: Option<f64>| match e {
        Some(e) if n > 0.0 => (e / n).clamp(0.0, 1.0),
        _ => 0.0,
    };
    let mut latency = |what: &'static str| -> Option<u32> {
        match answer(what)? {
            Err(why) => {
                failed(what, why);
                None
            }
            Ok(Answer::Number(v)) if (0.0..1_000_000.0).contains(&v) => {
                Some((v * 1000.0).round() as u32)
            }
            // No observation in the window: no latency, which matters only if there
            // were requests.
            Ok(Answer::Empty | Answer::NaN) if n < 1.0 => None,
            Ok(a @ (Answer::Empty | Answer::NaN)) => {
                notes.push(format!(
                    "Prometheus answered {} for the {what} of slot {name}",
                    answer_text(a)
                ));
                None
            }
            Ok(Answer::Infinite(v)) if v > 0.0 => {
                failed(
                    what,
                    "is above the histogram's highest finite bucket (+Inf): add larger buckets to judge it".into(),
                );
                None
            }
            Ok(other) => {
                failed(
                    what,
                    format!("answered {}, not a latency in seconds", answer_text(other)),
                );
                None
            }
        }
    };
    SlotNumbers {
        requests: n.round() as u64,
        rate_5xx: rate(errors_5xx),
        rate_4xx: rate(errors_4xx),
        p50_ms: latency("p50"),
        p95_ms: latency("p95"),
        p99_ms: latency("p99"),
    }
}

fn answer_text(a: Answer) -> String {
    match a {
        Answer::Number(v) => format!("{v}"),
        Answer::Empty => "an empty vector".into(),
        Answer::NaN => "NaN".into(),
        Answer::Infinite(v) if v > 0.0 => "+Inf".into(),
        Answer::Infinite(_) => "-Inf".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(values: &[&str]) -> String {
        let items: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"metric":{{}},"value":[1764507600.5,"{v}"]}}"#))
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        )
    }

    #[test]
    fn placeholders_are_filled() {
        let q = crate::config::Queries::default();
        assert_eq!(
            expand(&q.requests, Slot::B, Duration::from_millis(7900), "shop"),
            r#"sum(increase(http_requests_total{slot="b"}[7s]))"#
        );
        assert_eq!(
            expand(&q.p95, Slot::A, Duration::from_millis(300), "shop"),
            r#"histogram_quantile(0.95, sum by (le) (increase(http_request_duration_seconds_bucket{slot="a"}[1s])))"#
        );
        assert_eq!(
            expand(
                r#"x{job="{app}",slot="{slot}"}"#,
                Slot::A,
                Duration::ZERO,
                "shop"
            ),
            r#"x{job="shop",slot="a"}"#
        );
    }

    #[test]
    fn the_same_problem_of_many_queries_is_said_once() {
        let why = "got no answer (cannot connect: Connection refused)".to_string();
        let problems: Vec<Problem> = [Slot::B, Slot::A]
            .into_iter()
            .flat_map(|slot| {
                let why = why.clone();
                ["requests", "errors_5xx", "p95"].map(move |what| Problem {
                    what,
                    slot,
                    why: why.clone(),
                })
            })
            .collect();
        assert_eq!(
            problems_text(&problems),
            "6 queries (requests of slot b, errors_5xx of slot b, ...) got no answer (cannot connect: Connection refused)"
        );
    }

    #[test]
    fn answers_good_and_bad() {
        assert_eq!(
            parse_answer(200, &vector(&["41.5"])),
            Ok(Answer::Number(41.5))
        );
        assert_eq!(parse_answer(200, &vector(&[])), Ok(Answer::Empty));
        assert_eq!(parse_answer(200, &vector(&["NaN"])), Ok(Answer::NaN));
        assert_eq!(
            parse_answer(200, &vector(&["+Inf"])),
            Ok(Answer::Infinite(f64::INFINITY))
        );
        assert_eq!(
            parse_answer(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#
            ),
            Ok(Answer::Number(3.0))
        );
        for (status, body, needle) in [
            (200, "<html>hello</html>", "not JSON"),
            (200, "", "not JSON"),
            (502, "Bad Gateway", "status 502"),
            (
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
                "bad_data: parse error at char 5",
            ),
            (200, &vector(&["1", "2"]), "2 series"),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "a matrix, not a number",
            ),
            (200, &vector(&["lots"]), "not a number"),
            (200, r#"{"status":"success","data":{}}"#, "resultType"),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}"#,
                "without a value",
            ),
            (200, r#"[1,2,3]"#, "without Prometheus's"),
        ] {
            let e = parse_answer(status, body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    fn asked(answers: [Option<Result<Answer, String>>; 6]) -> Vec<Asked> {
        ["requests", "errors_5xx", "errors_4xx", "p50", "p95", "p99"]
            .into_iter()
            .zip(answers)
            .map(|(what, answer)| Asked { what, answer })
            .collect()
    }

    #[test]
    fn numbers_from_answers() {
        use Answer::*;
        let (mut problems, mut notes) = (vec![], vec![]);
        let n = slot_numbers(
            Slot::B,
            &asked([
                Some(Ok(Number(199.6))),
                Some(Ok(Number(40.0))),
                Some(Ok(Empty)),
                Some(Ok(Number(0.0201))),
                Some(Ok(Number(0.0294))),
                None,
            ]),
            &mut problems,
            &mut notes,
        );
        assert!(
            problems.is_empty() && notes.is_empty(),
            "{problems:?} {notes:?}"
        );
        assert_eq!(n.requests, 200);
        assert!((n.rate_5xx - 40.0 / 199.6).abs() < 1e-9);
        assert_eq!(n.rate_4xx, 0.0);
        assert_eq!((n.p50_ms, n.p95_ms, n.p99_ms), (Some(20), Some(29), None));

        // No requests: NaN quantiles are expected, not a problem.
        let n = slot_numbers(
            Slot::A,
            &asked([
                Some(Ok(Empty)),
                Some(Ok(Empty)),
                Some(Ok(Empty)),
                Some(Ok(NaN)),
                Some(Ok(NaN)),
                Some(Ok(NaN)),
            ]),
            &mut problems,
            &mut notes,
        );
        assert_eq!((n.requests, n.p95_ms), (0, None));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            notes,
            ["Prometheus had no series for the requests of slot a"]
        );

        // Down, NaN counts, +Inf quantiles: each named.
        notes.clear();
        slot_numbers(
            Slot::B,
            &asked([
                Some(Ok(Number(100.0))),
                Some(Ok(NaN)),
                Some(Err("got no answer (cannot connect: refused)".into())),
                Some(Ok(Infinite(f64::INFINITY))),
                Some(Ok(Number(-1.0))),
                Some(Ok(Empty)),
            ]),
            &mut problems,
            &mut notes,
        );
        assert_eq!(
            problems_text(&problems),
            "the errors_5xx query of slot b answered NaN, not a count; \
             the errors_4xx query of slot b got no answer (cannot connect: refused); \
             the p50 query of slot b is above the histogram's highest finite bucket (+Inf): add larger buckets to judge it; \
             the p95 query of slot b answered -1, not a latency in seconds"
        );
        assert_eq!(
            notes,
            ["Prometheus answered an empty vector for the p99 of slot b"]
        );
    }
}
