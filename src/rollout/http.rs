//! slipway's one HTTP client (reqwest over rustls): the health gate's checks through an
//! ssh forward, the rollout event webhook (`http://` or `https://`), and the traffic
//! gate's Prometheus queries. Redirects,
//! chunked answers, keep-alive and TLS come with it.
//!
//! One client per process, built on first use and kept (its connection pool is what
//! lets a gate sample a host every interval over the same connection); a webhook with
//! `[rollout] event_ca` gets its own, since the trusted roots are part of a client.
//! Every request carries its own timeout. TLS verifies against the platform's trust
//! store (rustls-platform-verifier: on Linux the system CA bundle, so CAs an operator
//! installed there are trusted too), plus `event_ca` when one is set.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::redirect::{Attempt, Policy};
use reqwest::{Certificate, Client, Response};

/// Redirects followed before a request gives up.
pub const MAX_REDIRECTS: usize = 5;

/// Bytes of an answer's body read (so the connection can be reused); a longer body is
/// not read further and its connection is closed.
const BODY_LIMIT: usize = 64 * 1024;

/// Why a request got no status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Could not connect to the first address (refused, unreachable, unknown name).
    Connect(String),
    /// The server's TLS certificate was not accepted (or the handshake failed).
    Tls(String),
    /// No complete answer within the request's timeout.
    Timeout(Duration),
    /// Connected, but no valid answer: closed, reset, not HTTP, a broken body, a redirect
    /// not followed, or a client that could not be built.
    NoAnswer(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(why) => write!(f, "cannot connect: {why}"),
            HttpError::Tls(why) => write!(f, "TLS handshake failed: {why}"),
            HttpError::Timeout(t) => {
                write!(f, "no answer within {}", humantime::format_duration(*t))
            }
            HttpError::NoAnswer(why) => f.write_str(why),
        }
    }
}

/// `GET http://address/path` with `Host: host_header` (the forward's local end stands
/// in for the host); the status of the final answer, redirects followed.
pub async fn get(
    address: &str,
    host_header: &str,
    path: &str,
    timeout: Duration,
) -> Result<u16, HttpError> {
    let url = url::Url::parse(&format!("http://{address}"))
        .and_then(|base| base.join(path))
        .map_err(|e| {
            HttpError::NoAnswer(format!("cannot make a URL of {address} and {path}: {e}"))
        })?;
    let request = client(None)?
        .get(url.clone())
        .header(reqwest::header::HOST, host_header)
        .timeout(timeout);
    answer(request, &url, timeout).await
}

/// POSTs `body` as JSON to `url` (`http://` or `https://`, trusting `ca` besides the
/// platform's roots); the status of the final answer.
pub async fn post_json(
    url: &url::Url,
    body: &str,
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<u16, HttpError> {
    let request = client(ca)?
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .timeout(timeout);
    answer(request, url, timeout).await
}

/// `GET url` (`http://` or `https://`, redirects followed): the final answer's status
/// and its body as text, which may not exceed `limit` bytes (an API's answer, e.g.
/// Prometheus's JSON).
pub async fn get_text(
    url: &url::Url,
    limit: usize,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let request = client(None)?.get(url.clone()).timeout(timeout);
    let mut response = request
        .send()
        .await
        .map_err(|e| classify(&e, url, timeout))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(&e, url, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Err(HttpError::NoAnswer(format!(
                "an answer of more than {limit} bytes (status {status})"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The certificates of PEM file `path`, checked to be usable as trust anchors; the error
/// names the file and what is wrong with it.
pub fn load_ca(path: &Path) -> Result<Vec<Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "{} is not a PEM certificate file: {}",
            path.display(),
            chain(&e)
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    // A client trusting only these parses each one as a trust anchor: a file of
    // garbage between the PEM markers is refused here, not at the first webhook.
    Client::builder()
        .tls_certs_only(certs.clone())
        .build()
        .map_err(|e| {
            // rustls words it for a peer's certificate ("invalid peer certificate: X").
            let why = chain(&e);
            let why = why.rsplit(": ").next().unwrap_or(&why).to_string();
            format!(
                "{} holds a certificate that cannot be used as a CA ({why})",
                path.display()
            )
        })?;
    Ok(certs)
}

/// The clients built so far, by the extra CA they trust.
type Clients = Mutex<Vec<(Option<PathBuf>, Client)>>;

/// The process's client for `ca` (none: platform roots only), built once.
fn client(ca: Option<&Path>) -> Result<Client, HttpError> {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    let clients = CLIENTS.get_or_init(|| Mutex::new(Vec::new()));
    let key = ca.map(Path::to_path_buf);
    let mut clients = clients
        .lock()
        .map_err(|_| HttpError::NoAnswer("the HTTP client is unusable".into()))?;
    if let Some((_, c)) = clients.iter().find(|(k, _)| *k == key) {
        return Ok(c.clone());
    }
    let mut builder = Client::builder()
        .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
        // Health checks go to a forward on loopback; a proxy from the environment
        // would send them elsewhere.
        .no_proxy()
        .redirect(Policy::custom(follow))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(path) = ca {
        builder = builder.tls_certs_merge(load_ca(path).map_err(HttpError::NoAnswer)?);
    }
    let built = builder.build().map_err(|e| {
        HttpError::NoAnswer(format!("cannot set up the HTTP client: {}", chain(&e)))
    })?;
    clients.push((key, built.clone()));
    Ok(built)
}

/// Follows at most [`MAX_REDIRECTS`] redirects, never from `https://` down to `http://`.
fn follow(attempt: Attempt) -> reqwest::redirect::Action {
    let from_https = attempt
        .previous()
        .last()
        .is_some_and(|u| u.scheme() == "https");
    if attempt.previous().len() > MAX_REDIRECTS {
        let why = format!("more than {MAX_REDIRECTS} redirects");
        attempt.error(why)
    } else if from_https && attempt.url().scheme() != "https" {
        let why = format!(
            "refused a redirect from https to {}",
            crate::redact::url(attempt.url())
        );
        attempt.error(why)
    } else {
        attempt.follow()
    }
}

/// Sends `request` (first to `first`) and reads its answer: the status, after reading
/// the body (up to [`BODY_LIMIT`]) so that a broken body counts and the connection
/// can serve the next request.
async fn answer(
    request: reqwest::RequestBuilder,
    first: &url::Url,
    timeout: Duration,
) -> Result<u16, HttpError> {
    let response = request
        .send()
        .await
        .map_err(|e| classify(&e, first, timeout))?;
    read_body(response, first, timeout).await
}

async fn read_body(
    mut response: Response,
    first: &url::Url,
    timeout: Duration,
) -> Result<u16, HttpError> {
    let status = response.status().as_u16();
    let mut read = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(&e, first, timeout))?
    {
        read += chunk.len();
        if read > BODY_LIMIT {
            break;
        }
    }
    Ok(status)
}

/// The kind of failure the gate and the webhook tell apart. reqwest's own message names
/// the URL (which may hold a webhook's token): only the causes beneath it are shown.
fn classify(e: &reqwest::Error, first: &url::Url, timeout: Duration) -> HttpError {
    if e.is_timeout() {
        return HttpError::Timeout(timeout);
    }
    let why = chain(e);
    // rustls' errors reach here as text inside an io::Error.
    if why.contains("certificate") || why.contains("TLS") || why.contains("tls handshake") {
        return HttpError::Tls(why);
    }
    let redirected = e.url().is_some_and(|u| u != first);
    if e.is_redirect() {
        HttpError::NoAnswer(why)
    } else if e.is_connect() && !redirected {
        HttpError::Connect(why)
    } else if e.is_connect() {
        let to = e.url().map(crate::redact::url).unwrap_or_default();
        HttpError::NoAnswer(format!("redirected to {to}, which failed: {why}"))
    } else if e.is_body() || e.is_decode() {
        HttpError::NoAnswer(format!("a broken answer: {why}"))
    } else {
        HttpError::NoAnswer(why)
    }
}

/// The causes of `e`, outermost first, without `e`'s own message.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // hyper-util's wrapper ("client error (Connect)") says nothing the kind does not.
        if !text.starts_with("client error (") && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    if parts.is_empty() {
        // No causes: reqwest's own words name the URL (which may hold a token), so they
        // stay off the output.
        return "no further detail".into();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves each answer in turn on one connection each (or the same one, if the
    /// client keeps it), and returns the request heads it saw.
    async fn serve(answers: Vec<&'static str>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            let (mut s, _) = listener.accept().await.unwrap();
            let mut connections = 1;
            for a in answers {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        // The client closed: the next request comes on a new connection.
                        (s, _) = listener.accept().await.unwrap();
                        connections += 1;
                        head.clear();
                        continue;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                heads.push(String::from_utf8_lossy(&head).to_string());
                s.write_all(a.as_bytes()).await.unwrap();
            }
            heads.push(format!("connections: {connections}"));
            heads
        });
        (address, server)
    }

    #[tokio::test]
    async fn get_sends_the_host_header_and_reads_a_chunked_answer() {
        let (address, server) = serve(vec![
            "HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nboom\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ])
        .await;
        let t = Duration::from_secs(5);
        assert_eq!(get(&address, "app1", "/healthz", t).await, Ok(500));
        assert_eq!(get(&address, "app1", "/healthz", t).await, Ok(200));
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("GET /healthz HTTP/1.1\r\n"),
            "{heads:?}"
        );
        assert!(
            heads[0].to_ascii_lowercase().contains("host: app1\r\n"),
            "{heads:?}"
        );
        // Kept alive: both requests on one connection.
        assert_eq!(heads.last().unwrap(), "connections: 1", "{heads:?}");
    }

    #[tokio::test]
    async fn a_redirect_is_followed_and_the_final_answer_counts() {
        let (address, server) = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: /ready\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let code = get(&address, "x", "/healthz", Duration::from_secs(5)).await;
        assert_eq!(code, Ok(503));
        let heads = server.await.unwrap();
        assert!(heads[1].starts_with("GET /ready "), "{heads:?}");
    }

    #[tokio::test]
    async fn endless_redirects_give_up() {
        let hop = "HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n";
        let (address, _server) = serve(vec![hop; MAX_REDIRECTS + 2]).await;
        match get(&address, "x", "/", Duration::from_secs(5)).await {
            Err(HttpError::NoAnswer(why)) => assert!(why.contains("redirects"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn refused_silent_and_garbage_are_told_apart() {
        // Refused: bind a port, then free it.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = free.local_addr().unwrap().to_string();
        drop(free);
        let t = Duration::from_millis(500);
        assert!(
            matches!(get(&address, "x", "/", t).await, Err(HttpError::Connect(_))),
            "refused"
        );

        // Accepts and says nothing.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let hold = tokio::spawn(async move {
            let (_s, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        assert_eq!(get(&address, "x", "/", t).await, Err(HttpError::Timeout(t)));
        hold.abort();

        // Not HTTP.
        let ssh = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = ssh.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = ssh.accept().await.unwrap();
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        });
        assert!(
            matches!(
                get(&address, "x", "/", t).await,
                Err(HttpError::NoAnswer(_))
            ),
            "garbage"
        );
    }

    #[tokio::test]
    async fn post_json_sends_the_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!(
            "http://{}/hook?token=s3cret",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut text = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&text).ends_with("{\"a\":1}") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&text));
                text.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&text).to_string()
        });
        let code = post_json(&url, "{\"a\":1}", None, Duration::from_secs(5)).await;
        assert_eq!(code, Ok(204));
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("post /hook?token=s3cret http/1.1"),
            "{request}"
        );
        assert!(
            request.contains("content-type: application/json"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn get_text_reads_the_body_up_to_its_limit() {
        let (address, server) = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"status\":1}\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
        ])
        .await;
        let url = url::Url::parse(&format!(
            "http://mon:s3cret@{address}/api/v1/query?query=up"
        ))
        .unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(
            get_text(&url, 32, t).await,
            Ok((200, "{\"status\":1}\n".to_string()))
        );
        match get_text(&url, 32, t).await {
            Err(HttpError::NoAnswer(why)) => assert!(why.contains("more than 32 bytes"), "{why}"),
            other => panic!("{other:?}"),
        }
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("GET /api/v1/query?query=up HTTP/1.1\r\n"),
            "{heads:?}"
        );
        // User-info in the URL is basic auth (mon:s3cret), not part of the request line.
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains("authorization: basic bw9uonmzy3jlda=="),
            "{heads:?}"
        );
    }

    #[test]
    fn a_ca_file_that_is_not_one_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(load_ca(&missing).unwrap_err().contains("missing.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = load_ca(&empty).unwrap_err();
        assert!(
            e.contains("empty.pem") && e.contains("no certificate"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load_ca(&garbage).unwrap_err();
        assert!(e.contains("garbage.pem"), "{e}");
    }
}
