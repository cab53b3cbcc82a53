//! A tiny HTTP/1.0 client over a plain TCP socket: enough for a health check through an
//! ssh forward (GET, read the status line) and for the event webhook (POST JSON). No TLS:
//! the forward is already encrypted, and a second TLS stack is not worth a status code.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a request got no status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Could not connect to the (local end of the) address.
    Connect(String),
    /// Connected, but no valid answer (closed, reset, garbage) or none in time.
    NoAnswer(String),
}

/// Sends `request` to `address` and returns the status code of the answer.
async fn exchange(address: &str, request: &[u8], timeout: Duration) -> Result<u16, HttpError> {
    let work = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| HttpError::NoAnswer(format!("sending the request: {e}")))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        // The status line is all we need.
        while !head.contains(&b'\n') && head.len() < 8192 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| HttpError::NoAnswer(e.to_string()))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        parse_status(&head)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::NoAnswer(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

fn parse_status(head: &[u8]) -> Result<u16, HttpError> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ if head.is_empty() => Err(HttpError::NoAnswer(
            "the connection closed without an answer (is the app listening?)".into(),
        )),
        _ => Err(HttpError::NoAnswer(format!(
            "not an HTTP answer: {:?}",
            line.chars().take(60).collect::<String>()
        ))),
    }
}

/// `GET path` with `Host: host_header`; the answer's status code.
pub async fn get(
    address: &str,
    host_header: &str,
    path: &str,
    timeout: Duration,
) -> Result<u16, HttpError> {
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: slipway\r\nConnection: close\r\n\r\n"
    );
    exchange(address, request.as_bytes(), timeout).await
}

/// POSTs `body` as JSON to an `http://` URL; the answer's status code.
pub async fn post_json(url: &url::Url, body: &str, timeout: Duration) -> Result<u16, HttpError> {
    let host = url.host_str().unwrap_or("localhost");
    let port = url.port_or_known_default().unwrap_or(80);
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: slipway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(&address, request.as_bytes(), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\n"), Ok(200));
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\nX: y"),
            Ok(503)
        );
        assert!(matches!(parse_status(b""), Err(HttpError::NoAnswer(_))));
        assert!(matches!(
            parse_status(b"SSH-2.0-OpenSSH\r\n"),
            Err(HttpError::NoAnswer(_))
        ));
    }

    #[tokio::test]
    async fn get_reads_the_status_from_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz HTTP/1.0"));
            s.write_all(b"HTTP/1.0 500 Internal\r\n\r\n").await.unwrap();
        });
        let code = get(&address, "x", "/healthz", Duration::from_secs(2)).await;
        assert_eq!(code, Ok(500));
        server.await.unwrap();
    }
}
