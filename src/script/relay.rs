//! The relay's scripts (`[upload] relay`): one host of a group receives the release from
//! the deployer, keeps the stream and serves it, for this deploy only, through an sshd of
//! its own; the other hosts of the group fetch it from there over the hosts' network,
//! check it against the digest the deployer gave them, and only then receive it as a
//! direct upload would (`receive`, unchanged, reading the fetched copy).
//!
//! What each credential is and how long it lives (see `deploy::relay` for the design):
//!
//! - the relay's host key: made on the relay by `ssh-keygen` for this deploy, in
//!   `.slipway/relay/` (0700); its public half goes to the fetching hosts through the
//!   deployer (their `known_hosts`, nothing else trusted);
//! - the client key: made on the deployer for this deploy; the relay's
//!   `authorized_keys` (read by the relay's own sshd only, never the user's) lists its
//!   public half with `restrict`, a forced `cat` of the kept stream and an
//!   `expiry-time`; its private half reaches each fetching host on the stdin of the
//!   fetch script (never a command line), lives in a 0700 directory while `ssh` runs and
//!   is removed as soon as it returns.
//!
//! The relay's sshd runs under `timeout` (the upload's time limit), is stopped by
//! [`relay_stop`] when the uploads are over, and a relay left by a deployer that died is
//! stopped and removed by the next relayed deploy of the app.

use super::PRELUDE;
use crate::layout::{Layout, quote};

/// Exit status of the relay scripts when the relayed stream could not be had (the relay
/// could not keep it, or a host could not fetch it or got other bytes than the
/// deployer's): nothing was extracted, and the deployer sends that host the release
/// directly.
pub const EXIT_RELAY: i32 = 79;

/// The first field of the line [`relay_serve`] prints about its server.
pub const RELAY_LINE: &str = "slipway-relay";

/// The relay's directory on a host: the kept stream, the server's keys and config.
fn relay_dir(layout: &Layout) -> String {
    format!("{}/relay", layout.state_dir())
}

/// Stops the relay server recorded in `$rd/pid`, if it is still the one this directory
/// started (its command line names this directory's config: a pid reused since by
/// another process is left alone). `timeout` passes the signal to sshd.
const STOP_SERVER: &str = r#"if [ -f "$rd/pid" ]; then
  pid=""
  read -r pid < "$rd/pid" || true
  case "$pid" in
    ''|*[!0-9]*) ;;
    *) if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$rd/sshd_config"; then
         kill -TERM "$pid" 2>/dev/null || true
       fi ;;
  esac
fi
"#;

/// The relay's upload step: keeps the release stream (stdin) in `.slipway/relay/stream`,
/// receives the release from that copy with `receive` (the direct upload's script, run
/// as is), then starts a one-time sshd on the address the deployer reached this host at,
/// serving only that copy to `client_key`, for at most `life_seconds`. Prints
/// `slipway-relay<TAB>on<TAB>ADDRESS<TAB>PORT<TAB>USER<TAB>HOSTKEY`, or
/// `slipway-relay<TAB>off<TAB>why` when no server could be started (this host's release
/// is in place either way; its group is then sent the release directly). `fanout`
/// bounds the connections the server takes at once. The relay directory's path must
/// hold only `[A-Za-z0-9/._+-]` (see `deploy::relay::path_ok`): sshd's files name it.
pub fn relay_serve(
    layout: &Layout,
    receive: &str,
    client_key: &str,
    life_seconds: u64,
    fanout: usize,
) -> String {
    format!(
        r#"{PRELUDE}d={d}
rd={rd}
# A relay left by a deploy that did not finish: the lock is held, nobody fetches from it.
if [ -d "$rd" ]; then
{STOP_SERVER}  rm -rf -- "$rd"
fi
if ! {{ mkdir -p -- "$d/.slipway" && (umask 077 && mkdir -- "$rd"); }}; then
  echo "cannot create the relay directory $rd" >&2
  exit {EXIT_RELAY}
fi
if ! cat > "$rd/stream"; then
  rm -rf -- "$rd"
  echo "cannot keep a copy of the release stream in $rd (is the disk full?)" >&2
  exit {EXIT_RELAY}
fi
(
{receive}
) < "$rd/stream"
rc=$?
if [ "$rc" -ne 0 ]; then
  rm -rf -- "$rd"
  exit "$rc"
fi
off() {{
  printf '{RELAY_LINE}\toff\t%s\n' "$1"
  rm -rf -- "$rd"
  exit 0
}}
sshd=""
for s in /usr/sbin/sshd /usr/local/sbin/sshd /usr/bin/sshd /sbin/sshd; do
  if [ -x "$s" ]; then sshd=$s; break; fi
done
[ -n "$sshd" ] || off "no sshd on this host (install openssh-server)"
command -v ssh-keygen >/dev/null 2>&1 || off "no ssh-keygen on this host (install openssh-client)"
command -v timeout >/dev/null 2>&1 || off "no timeout on this host (install coreutils)"
ip=$(printf '%s\n' "${{SSH_CONNECTION:-}}" | cut -d ' ' -f 3)
case "$ip" in
  ''|*[!0-9A-Fa-f.:]*) off "the address this host was reached at is unknown (SSH_CONNECTION)" ;;
esac
user=$(id -un 2>/dev/null) || user=""
case "$user" in
  ''|*[!A-Za-z0-9._-]*) off "the login user's name is not a plain name" ;;
esac
ssh-keygen -q -t ed25519 -N '' -C slipway-relay -f "$rd/host_key" < /dev/null > /dev/null 2>&1 || off "ssh-keygen failed"
now=$(date +%s)
expiry=$(date -d "@$((now + {life}))" +%Y%m%d%H%M 2>/dev/null) || off "date cannot compute the key's expiry time"
printf 'restrict,command="exec cat -- %s/stream",expiry-time="%s" %s\n' "$rd" "$expiry" {client_key} > "$rd/authorized_keys" || off "cannot write the relay's authorized_keys"
cat > "$rd/sshd_config" <<EOF || off "cannot write the relay's sshd_config"
HostKey $rd/host_key
AuthorizedKeysFile $rd/authorized_keys
AllowUsers $user
PidFile none
PermitRootLogin forced-commands-only
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding no
AllowStreamLocalForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PermitTunnel no
PermitUserEnvironment no
PermitUserRC no
MaxAuthTries 2
MaxSessions 1
MaxStartups {startups}
LoginGraceTime 30
ClientAliveInterval 15
ClientAliveCountMax 4
UseDNS no
PrintMotd no
LogLevel VERBOSE
EOF
port=""
tries=0
while [ -z "$port" ] && [ "$tries" -lt 20 ]; do
  tries=$((tries + 1))
  r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  case "$r" in ''|*[!0-9]*) r=$$ ;; esac
  p=$((40000 + r % 20000))
  case "$ip" in *:*) at="[$ip]:$p" ;; *) at="$ip:$p" ;; esac
  : > "$rd/log"
  timeout -s TERM {life} "$sshd" -D -f "$rd/sshd_config" -E "$rd/log" -o "ListenAddress=$at" < /dev/null > /dev/null 2>&1 &
  pid=$!
  echo "$pid" > "$rd/pid"
  n=0
  while [ "$n" -lt 200 ]; do
    if grep -q 'Server listening' "$rd/log"; then port=$p; break; fi
    # (A failed sshd may stay a zombie, which kill -0 still finds: its log says it.)
    if grep -q 'Cannot bind' "$rd/log"; then break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
    n=$((n + 1))
  done
  if [ -z "$port" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    grep -q 'Address already in use' "$rd/log" || break
  fi
done
if [ -z "$port" ]; then
  off "its sshd did not start: $(tail -n 2 "$rd/log" 2>/dev/null | tr '\n\t' '  ')"
fi
printf '{RELAY_LINE}\ton\t%s\t%s\t%s\t%s\n' "$ip" "$port" "$user" "$(cut -d ' ' -f 1-2 "$rd/host_key.pub")"
"#,
        d = quote(layout.deploy_to()),
        rd = quote(&relay_dir(layout)),
        client_key = quote(client_key),
        life = life_seconds.max(60),
        // Unauthenticated connections at once: the hosts it serves, and as many again
        // for retries; a stranger's connection attempts cannot starve them for long
        // (LoginGraceTime), and cannot log in (no key but this deploy's).
        startups = fanout.max(1) * 2,
    )
}

/// Where a host fetches the release from: the relay's server, as [`relay_serve`]
/// printed it (checked by the deployer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `ssh-ed25519 AAAA...`: the relay server's one-time host key.
    pub host_key: String,
}

/// A fetching host's upload step: reads this deploy's client key on stdin, fetches the
/// relay's copy of the stream over ssh (the relay's one-time host key the only one
/// trusted), removes the key, and checks the copy: exactly `digest` (the SHA-256 the
/// deployer computed of the stream it would have sent). Only then `receive` (the direct
/// upload's script, unchanged) reads it. A relay that cannot be reached, dies mid-stream
/// or serves other bytes ends this with [`EXIT_RELAY`] and nothing extracted.
pub fn relay_fetch(layout: &Layout, from: &Endpoint, digest: &str, receive: &str) -> String {
    format!(
        r#"{PRELUDE}d={d}
[ -d "$d/.slipway" ] || mkdir -p -- "$d/.slipway" || exit {EXIT_RELAY}
for old in "$d"/.slipway/relay-in.*; do
  [ -e "$old" ] || continue
  rm -rf -- "$old"
done
t=$(umask 077 && mktemp -d "$d/.slipway/relay-in.XXXXXX") || {{ echo "cannot create a directory in $d/.slipway" >&2; exit {EXIT_RELAY}; }}
trap 'rm -rf -- "$t"; exit 1' HUP INT TERM PIPE
if ! (umask 077 && cat > "$t/key" && printf 'slipway-relay %s\n' {host_key} > "$t/known_hosts"); then
  rm -rf -- "$t"
  echo "cannot write this deploy's relay key in $t" >&2
  exit {EXIT_RELAY}
fi
rc=0
ssh -F /dev/null -T -n -i "$t/key" -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
  -o StrictHostKeyChecking=yes -o HostKeyAlias=slipway-relay -o UserKnownHostsFile="$t/known_hosts" \
  -o GlobalKnownHostsFile=/dev/null -o CheckHostIP=no -o UpdateHostKeys=no -o ConnectTimeout=10 \
  -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o ForwardAgent=no -o ClearAllForwardings=yes \
  -o LogLevel=ERROR -p {port} -l {user} {address} > "$t/stream" 2> "$t/err" || rc=$?
rm -f -- "$t/key"
if [ "$rc" -ne 0 ]; then
  why=$(tail -n 3 "$t/err" | tr '\n\t\r' '   ')
  rm -rf -- "$t"
  echo "cannot fetch the release from the relay at "{address}":{port} (ssh exit status $rc): $why" >&2
  exit {EXIT_RELAY}
fi
got=$(sha256sum < "$t/stream") || got=""
got=${{got%% *}}
if [ "$got" != {digest} ]; then
  size=$(wc -c < "$t/stream")
  rm -rf -- "$t"
  echo "the stream from the relay at "{address}":{port} is not the deployer's ($size bytes, SHA-256 differs): not used" >&2
  exit {EXIT_RELAY}
fi
(
{receive}
) < "$t/stream"
rc=$?
rm -rf -- "$t"
exit "$rc"
"#,
        d = quote(layout.deploy_to()),
        host_key = quote(&from.host_key),
        port = from.port,
        user = quote(&from.user),
        address = quote(&from.address),
        digest = quote(digest),
    )
}

/// Stops a host's relay server and removes its directory (the kept stream, its keys).
/// Run when the uploads are over, whatever their outcome.
pub fn relay_stop(layout: &Layout) -> String {
    format!(
        "{PRELUDE}rd={rd}\nif [ -d \"$rd\" ]; then\n{STOP_SERVER}  rm -rf -- \"$rd\" || {{ echo \"cannot remove $rd\" >&2; exit 1; }}\nfi\n",
        rd = quote(&relay_dir(layout)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_stream_and_the_keys_live_in_one_directory_under_the_state_dir() {
        let layout = Layout::new("/srv/app");
        assert_eq!(relay_dir(&layout), "/srv/app/.slipway/relay");
        let stop = relay_stop(&layout);
        assert!(stop.contains("rm -rf -- \"$rd\""), "{stop}");
    }

    #[test]
    fn the_relay_key_serves_one_file_and_expires_with_the_server() {
        let s = relay_serve(
            &Layout::new("/srv/app"),
            "RECEIVE-HERE\n",
            "ssh-ed25519 AAAA",
            1800,
            4,
        );
        assert!(
            s.contains(r#"restrict,command="exec cat -- %s/stream",expiry-time="%s""#),
            "{s}"
        );
        for line in [
            "PermitRootLogin forced-commands-only",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "PasswordAuthentication no",
            "MaxStartups 8",
            "timeout -s TERM 1800",
        ] {
            assert!(s.contains(line), "{line} missing");
        }
        // The stream is kept before the release is received from it; the server starts
        // once this host's own release is in place.
        let keep = s.find("cat > \"$rd/stream\"").unwrap();
        let receive = s.find("RECEIVE-HERE").unwrap();
        let serve = s.find("timeout -s TERM").unwrap();
        assert!(keep < receive && receive < serve, "{s}");
    }

    #[test]
    fn the_fetch_checks_the_digest_before_anything_is_extracted() {
        let layout = Layout::new("/srv/app");
        let from = Endpoint {
            address: "10.0.0.1".into(),
            port: 41000,
            user: "deploy".into(),
            host_key: "ssh-ed25519 AAAAC3Nza".into(),
        };
        let s = relay_fetch(&layout, &from, "ab12", "RECEIVE-HERE\n");
        let check = s.find("sha256sum").unwrap();
        let receive = s.find("RECEIVE-HERE").unwrap();
        let key_gone = s.find("rm -f -- \"$t/key\"").unwrap();
        assert!(key_gone < check && check < receive, "{s}");
        // No agent, no forwarding, only the relay's one-time host key trusted.
        for option in [
            "IdentityAgent=none",
            "ForwardAgent=no",
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=/dev/null",
            "-F /dev/null",
        ] {
            assert!(s.contains(option), "{option} missing");
        }
    }
}
