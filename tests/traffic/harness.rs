//! A host with two slots behind a real nginx: the test fleet's sshd hosts, one nginx per
//! host (started inside the host's mount namespace through ssh, listening on the host's
//! own address, its prefix under the host's `/srv/nginx`), and a tiny Python HTTP app
//! per slot that can be made slow (`/slow?s=N`) or to fail its health check
//! (`FAIL_AFTER` in the release); a release's `DELAY_MS` makes its `/` take that long on
//! average (uniform over half to one and a half times), its `ERROR_RATE` answers that
//! share of `/` with a 500 (its health check stays fine).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::hosts::Fleet;

pub const NGINX_PORT: u16 = 18080;
pub const APP: &str = "shop";
pub const INCLUDE: &str = "/srv/nginx/conf.d/slipway-shop.conf";

/// Where nginx is, or the test fails saying how to get it.
pub fn nginx_binary() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!(
        "nginx is not installed: the traffic tests need a real nginx (Debian/Ubuntu: apt-get install nginx-light, or run scripts/test)"
    );
}

pub struct Traffic {
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
    /// Raw TOML for the top level after the generated part (rollout, health, traffic).
    pub extra: String,
    /// Top-level keys (before any table), e.g. `recipe = "static-site"`.
    pub top: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The slot app: answers its release's VERSION; `/healthz` fails after FAIL_AFTER calls
/// when the release has that file; `/slow?s=N` answers after N seconds.
const APP_PY: &str = r#"import os, time, random
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs
here = os.getcwd()
version = open(os.path.join(here, 'VERSION')).read().strip()
fail_after = None
if os.path.exists(os.path.join(here, 'FAIL_AFTER')):
    fail_after = int(open(os.path.join(here, 'FAIL_AFTER')).read().strip())
calls = [0]
def knob(name):
    p = os.path.join(here, name)
    return float(open(p).read().strip()) if os.path.exists(p) else 0.0
delay_ms = knob('DELAY_MS')
error_rate = knob('ERROR_RATE')
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        u = urlparse(self.path)
        if u.path == '/healthz':
            calls[0] += 1
            ok = fail_after is None or calls[0] <= fail_after
            return self.reply(200 if ok else 500, 'ok' if ok else 'failing')
        if u.path == '/slow':
            time.sleep(float(parse_qs(u.query).get('s', ['1'])[0]))
        if delay_ms:
            time.sleep(delay_ms * random.uniform(0.5, 1.5) / 1000.0)
        if error_rate and random.random() < error_rate:
            return self.reply(500, 'injected failure')
        self.reply(200, version)
    def reply(self, code, body):
        b = (body + '\n').encode()
        self.send_response(code)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
port = os.environ['SLIPWAY_PORT']
if port.startswith('/'):
    # A slot on a Unix socket ([traffic] slots = { a = "unix:/path" }).
    import socketserver
    class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True
    class UH(H):
        def address_string(self):
            return 'unix'
    if os.path.exists(port):
        os.unlink(port)
    UnixServer(port, UH).serve_forever()
ThreadingHTTPServer((os.environ['SLIPWAY_ADDRESS'], int(port)), H).serve_forever()
"#;

const START: &str = r#"#!/bin/sh
set -u
pidf="$SLIPWAY_DEPLOY_TO/slots/$SLIPWAY_SLOT.pid"
if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then exit 0; fi
setsid /usr/bin/python3 app.py </dev/null >>"$SLIPWAY_DEPLOY_TO/slots/$SLIPWAY_SLOT.log" 2>&1 &
echo $! > "$pidf"
i=0
while [ $i -lt 100 ]; do
  /usr/bin/python3 -c '
import socket, sys
if sys.argv[2].startswith("/"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(0.5)
    s.connect(sys.argv[2])
else:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()
' "$SLIPWAY_ADDRESS" "$SLIPWAY_PORT" 2>/dev/null && exit 0
  sleep 0.05
  i=$((i+1))
done
echo "the app did not listen on $SLIPWAY_ADDRESS:$SLIPWAY_PORT" >&2
exit 1
"#;

const STOP: &str = r#"#!/bin/sh
pidf="$SLIPWAY_DEPLOY_TO/slots/$SLIPWAY_SLOT.pid"
[ -f "$pidf" ] || exit 0
p=$(cat "$pidf")
kill "$p" 2>/dev/null
i=0
while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
echo "$(date +%s.%N) stopped" >> "$SLIPWAY_DEPLOY_TO/slots/$SLIPWAY_SLOT.stops"
rm -f "$pidf"
"#;

/// `[traffic]` etc. for the slot app (manual pauses unless the test says otherwise).
pub fn app_config(pause: &str) -> String {
    format!(
        r#"
[rollout]
strategy = "canary"
steps = [10, 50, 100]
pause = "{pause}"

[health]
http = {{ port = 18001, path = "/healthz" }}
window = "2s"
interval = "100ms"
min_samples = 2
max_consecutive_failures = 2

[traffic]
include = "{INCLUDE}"
key = "cookie:uid"
pin = "header:X-Slipway-Slot"
slots = {{ a = 18001, b = 18002 }}
address = "{{host}}"
start = ["sh bin/start"]
stop = ["sh bin/stop"]
drain = "15s"
test = "nginx -p /srv/nginx/ -c /srv/nginx/nginx.conf -t"
reload = "nginx -p /srv/nginx/ -c /srv/nginx/nginx.conf -s reload"
access_log = "/srv/nginx/logs/slipway-shop.log"
pid = "/srv/nginx/nginx.pid"
"#
    )
}

impl Traffic {
    /// `n` hosts, each with nginx running (no site yet: its variables come from the
    /// include, which the first deploy writes).
    pub fn start(n: usize) -> Traffic {
        let nginx = nginx_binary();
        let fleet = Fleet::start(n);
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Traffic {
            fleet,
            dir,
            extra: String::new(),
            top: String::new(),
        };
        for i in 0..n {
            let srv = t.fleet.host(i).srv();
            for d in ["nginx/conf.d", "nginx/sites", "nginx/logs", "nginx/tmp"] {
                fs::create_dir_all(srv.join(d)).expect("mkdir");
            }
            fs::write(
                srv.join("nginx/nginx.conf"),
                "user root;\nworker_processes 1;\npid /srv/nginx/nginx.pid;\nerror_log /srv/nginx/logs/error.log;\nevents { worker_connections 1024; }\nhttp {\n  client_body_temp_path /srv/nginx/tmp/body;\n  proxy_temp_path /srv/nginx/tmp/proxy;\n  fastcgi_temp_path /srv/nginx/tmp/fastcgi;\n  uwsgi_temp_path /srv/nginx/tmp/uwsgi;\n  scgi_temp_path /srv/nginx/tmp/scgi;\n  include /srv/nginx/conf.d/*.conf;\n  include /srv/nginx/sites/*.conf;\n}\n",
            )
            .expect("write nginx.conf");
            t.fleet.ssh_ok(
                i,
                &format!("{nginx} -p /srv/nginx/ -c /srv/nginx/nginx.conf"),
            );
        }
        t.write_app("v1", None);
        t
    }

    pub fn address(&self, i: usize) -> String {
        format!("{}:{NGINX_PORT}", self.fleet.host(i).address)
    }

    /// Host i's proxied site: `/slot` answers nginx's choice itself; everything else
    /// goes to the slot's app. Then nginx reloads.
    pub fn install_site(&self, i: usize, site: &str) {
        let h = self.fleet.host(i);
        let text = site.replace("ADDR", &format!("{}:{NGINX_PORT}", h.address));
        fs::write(h.srv().join("nginx/sites/shop.conf"), text).expect("write site");
        self.reload(i);
    }

    pub fn reload(&self, i: usize) {
        self.fleet.ssh_ok(
            i,
            &format!(
                "{} -p /srv/nginx/ -c /srv/nginx/nginx.conf -s reload",
                nginx_binary()
            ),
        );
        // nginx reloads asynchronously: wait until the new workers answer.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// The app source: the slot app with VERSION `version` (and FAIL_AFTER).
    pub fn write_app(&self, version: &str, fail_after: Option<u32>) {
        let app = self.app_dir();
        let _ = fs::remove_dir_all(&app);
        fs::create_dir_all(app.join("bin")).expect("mkdir");
        fs::write(app.join("VERSION"), format!("{version}\n")).expect("write");
        fs::write(app.join("app.py"), APP_PY).expect("write");
        fs::write(app.join("bin/start"), START).expect("write");
        fs::write(app.join("bin/stop"), STOP).expect("write");
        if let Some(n) = fail_after {
            fs::write(app.join("FAIL_AFTER"), n.to_string()).expect("write");
        }
    }

    /// Adds a file to the app source (after `write_app`): `DELAY_MS`, `ERROR_RATE`.
    pub fn app_file(&self, name: &str, content: &str) {
        fs::write(self.app_dir().join(name), content).expect("write app file");
    }

    pub fn app_dir(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    pub fn config_text(&self) -> String {
        let hosts: Vec<String> = self
            .fleet
            .hosts()
            .iter()
            .map(|h| {
                format!(
                    "  {{ address = \"{}\", port = {}, roles = [\"app\", \"db\"] }},",
                    h.address, h.port
                )
            })
            .collect();
        format!(
            "app = \"{APP}\"\ndeploy_to = \"/srv/app\"\nkeep_releases = 5\n{}\n[source]\npath = \"app\"\n\n[ssh]\nconfig_file = \"{}\"\nconnect_timeout = \"5s\"\n{}\n[stages.test]\nhosts = [\n{}\n]\n",
            self.top,
            self.fleet.ssh_config().display(),
            self.extra,
            hosts.join("\n")
        )
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let config = self.dir.path().join("deploy.toml");
        fs::write(&config, self.config_text()).expect("write deploy.toml");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.arg("-c")
            .arg(&config)
            .args(args)
            .env_remove("SLIPWAY_FAULT")
            // The deployer's own files (the gates' charts) stay in the test's directory.
            .env("SLIPWAY_STATE_DIR", self.dir.path().join("state"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    pub fn slipway(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().expect("run slipway");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.slipway(args);
        assert_eq!(r.code, 0, "slipway {args:?} failed:\n{}", r.all());
        r
    }

    /// The first line of host i's include (the split as slipway wrote it).
    pub fn include_header(&self, i: usize) -> String {
        let p = self.fleet.host(i).path(INCLUDE);
        fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// A value of the include's header (`percent`, `salt`, `canary`, ...).
    pub fn header_value(&self, i: usize, key: &str) -> Option<String> {
        self.include_header(i)
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    /// Whether host i's slot instance has a live process.
    pub fn slot_running(&self, i: usize, slot: &str) -> bool {
        let pidf = self
            .fleet
            .host(i)
            .path(&format!("/srv/app/slots/{slot}.pid"));
        match fs::read_to_string(pidf) {
            Ok(p) => Path::new(&format!("/proc/{}", p.trim())).exists(),
            Err(_) => false,
        }
    }

    pub fn audit(&self, i: usize) -> Vec<serde_json::Value> {
        let p = self.fleet.host(i).path("/srv/app/.slipway/log.jsonl");
        fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// One HTTP/1.0 GET: the status and the body, or why there was none.
pub fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(3))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: shop.test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.trim().to_string()))
}

/// The site of the slot app: `/slot` is nginx's own answer (which slot the request
/// lands on), everything else is proxied to the slot.
pub const SITE: &str = "server {\n  listen ADDR;\n  location = /slot { return 200 \"$slipway_shop_slot\\n\"; }\n  location / { proxy_pass http://$slipway_shop_upstream; }\n}\n";
