//! The relay's scripts (`[upload] relay`): one host of a group starts, for this deploy
//! only, an sshd of its own ([`relay_open`]), then receives the release from the deployer
//! while keeping the stream ([`relay_keep`]); the other hosts of the group fetch it from
//! there over the hosts' network as it arrives ([`relay_fetch`]), check it against the
//! digest the deployer gave them, and only then receive it as a direct upload would
//! (`receive`, unchanged, reading the fetched copy).
//!
//! What each credential is and how long it lives (see `deploy::relay` for the design):
//!
//! - the relay's host key: made on the relay by `ssh-keygen` for this deploy, in
//!   `.slipway/relay/` (0700); its public half goes to the fetching hosts through the
//!   deployer (their `known_hosts`, nothing else trusted);
//! - the client key: made on the deployer for this deploy; the relay's
//!   `authorized_keys` (read by the relay's own sshd only, never the user's) lists its
//!   public half with `restrict`, a forced command that reads the kept stream and an
//!   `expiry-time`; its private half reaches each fetching host on the stdin of the
//!   fetch script (never a command line), lives in a 0700 directory while `ssh` runs and
//!   is removed as soon as it returns.
//!
//! The relay's sshd runs under `timeout` (the upload's time limit), is stopped by
//! [`relay_stop`] when the uploads are over, and a relay left by a deployer that died is
//! stopped and removed by the next relayed deploy of the app.

use super::PRELUDE;
use super::upload::Receive;
use crate::layout::{Layout, quote};

/// Exit status of the relay scripts when the relayed stream could not be had (the relay
/// could not keep it, or a host could not fetch it or got other bytes than the
/// deployer's): nothing was extracted, and the deployer sends that host the release
/// directly.
pub const EXIT_RELAY: i32 = 79;

/// The first field of the line [`relay_open`] prints about its server.
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

/// The relay's server, started before a byte of the release reaches it: a one-time sshd
/// on the address the deployer reached this host at, serving to `client_key` only, for
/// at most `life_seconds`, the stream [`relay_keep`] is still writing — from its first
/// byte, following it as it grows, until its writer ends (`tail -f --pid`). The group's
/// hosts fetch while the relay receives: the deployer's link, not the relay's own
/// extraction, sets the pace. Prints
/// `slipway-relay<TAB>on<TAB>ADDRESS<TAB>PORT<TAB>USER<TAB>HOSTKEY`, or
/// `slipway-relay<TAB>off<TAB>why` when no server could be started (its group is then sent
/// the release directly). `fanout` bounds the connections the server takes at once. The
/// relay directory's path must hold only `[A-Za-z0-9/._+-]` (see
/// `deploy::relay::path_ok`): sshd's files name it.
pub fn relay_open(layout: &Layout, client_key: &str, life_seconds: u64, fanout: usize) -> String {
    format!(
        r#"{PRELUDE}d={d}
rd={rd}
# A relay left by a deploy that did not finish: the lock is held, nobody fetches from it.
if [ -d "$rd" ]; then
{STOP_SERVER}  rm -rf -- "$rd"
fi
off() {{
  printf '{RELAY_LINE}\toff\t%s\n' "$1"
  rm -rf -- "$rd"
  exit 0
}}
{{ mkdir -p -- "$d/.slipway" && (umask 077 && mkdir -- "$rd") && : > "$rd/stream"; }} || off "cannot create the relay directory $rd"
sshd=""
for s in /usr/sbin/sshd /usr/local/sbin/sshd /usr/bin/sshd /sbin/sshd; do
  if [ -x "$s" ]; then sshd=$s; break; fi
done
[ -n "$sshd" ] || off "no sshd on this host (install openssh-server)"
command -v ssh-keygen >/dev/null 2>&1 || off "no ssh-keygen on this host (install openssh-client)"
command -v timeout >/dev/null 2>&1 || off "no timeout on this host (install coreutils)"
tail -c 0 --pid=$$ -- /dev/null >/dev/null 2>&1 || off "this host's tail cannot follow a growing file (install GNU coreutils)"
tee -p < /dev/null > /dev/null 2>&1 || off "this host's tee cannot keep a copy past its reader (install GNU coreutils)"
ip=$(printf '%s\n' "${{SSH_CONNECTION:-}}" | cut -d ' ' -f 3)
case "$ip" in
  ''|*[!0-9A-Fa-f.:]*) off "the address this host was reached at is unknown (SSH_CONNECTION)" ;;
esac
user=$(id -un 2>/dev/null) || user=""
case "$user" in
  ''|*[!A-Za-z0-9._-]*) off "the login user's name is not a plain name" ;;
esac
# What the one-time key may run: the stream from its first byte, followed until its
# writer (relay_keep's tee, named in $rd/writer) ends; it waits for the writer to start.
cat > "$rd/serve" <<SERVE || off "cannot write the relay's command"
n=0
while [ ! -s "$rd/writer" ]; do
  [ -d "$rd" ] || exit 1
  n=\$((n + 1))
  [ "\$n" -le {waits} ] || exit 1
  sleep 0.1
done
read -r pid < "$rd/writer" || exit 1
case "\$pid" in ''|*[!0-9]*) exit 1 ;; esac
exec tail -c +1 -s 0.2 -f --pid="\$pid" -- "$rd/stream"
SERVE
ssh-keygen -q -t ed25519 -N '' -C slipway-relay -f "$rd/host_key" < /dev/null > /dev/null 2>&1 || off "ssh-keygen failed"
now=$(date +%s)
expiry=$(date -d "@$((now + {life}))" +%Y%m%d%H%M 2>/dev/null) || off "date cannot compute the key's expiry time"
printf 'restrict,command="exec sh -- %s/serve",expiry-time="%s" %s\n' "$rd" "$expiry" {client_key} > "$rd/authorized_keys" || off "cannot write the relay's authorized_keys"
cat > "$rd/sshd_config" <<CONFIG || off "cannot write the relay's sshd_config"
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
CONFIG
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
        // A fetch waits at most this long (in tenths of a second) for the relay's upload
        // to begin: the server's whole life.
        waits = life_seconds.max(60) * 10,
        // Unauthenticated connections at once: the hosts it serves, and as many again
        // for retries; a stranger's connection attempts cannot starve them for long
        // (LoginGraceTime), and cannot log in (no key but this deploy's).
        startups = fanout.max(1) * 2,
    )
}

/// The relay's upload step: receives the release with `receive` (the direct upload's
/// script, run as is) while `tee` keeps every byte of the stream in
/// `.slipway/relay/stream` for [`relay_open`]'s server, which the group's hosts are
/// already reading. A copy that could not be kept whole (a full disk) only fails the
/// fetches (their digest differs): this host's own release is received either way.
/// Without the relay's directory (its server was removed) nothing is read and the step
/// ends with [`EXIT_RELAY`].
pub fn relay_keep(layout: &Layout, receive: &str) -> String {
    format!(
        r#"{PRELUDE}rd={rd}
if [ ! -f "$rd/stream" ] || [ -e "$rd/writer" ]; then
  echo "the relay's directory $rd is gone or already written" >&2
  exit {EXIT_RELAY}
fi
# tee -p: the copy is kept whole even if receive stops reading before the stream's end.
sh -c 'echo "$$" > "$1/writer.new" && mv -f -- "$1/writer.new" "$1/writer" && exec tee -p -- "$1/stream"' sh "$rd" | (
{receive}
)
"#,
        rd = quote(&relay_dir(layout)),
    )
}

/// Where a host fetches the release from: the relay's server, as [`relay_open`]
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
/// relay's stream over ssh (the relay's one-time host key the only one trusted; the key
/// removed as soon as `ssh` returns) and extracts it as it arrives with `receive.head`
/// (the direct upload's extraction, unchanged; what it says is kept until the digest is
/// known) while `b2sum -l 256` reads the same bytes.
/// Only a stream whose BLAKE2b-256 is exactly `digest` (what the deployer computed of the
/// stream it would have sent) goes on to `receive.tail` (the manifest check, the shared
/// links, the rename into place); any other — a relay that cannot be reached, dies
/// mid-stream or serves other bytes — has its partial release removed and ends this with
/// [`EXIT_RELAY`]: the host then gets the release directly. The extraction is GNU tar's
/// into the partial release (members outside it refused, links out of it made last), the
/// same as for a direct upload; a host without GNU tee (`tee -p`) is not fetched for.
pub fn relay_fetch(layout: &Layout, from: &Endpoint, digest: &str, receive: &Receive) -> String {
    format!(
        r#"{PRELUDE}d={d}
t={t}
{{ tee -p < /dev/null && b2sum -l 256 < /dev/null; }} > /dev/null 2>&1 || {{ echo "this host lacks GNU tee or b2sum (install GNU coreutils)" >&2; exit {EXIT_RELAY}; }}
[ -d "$d/.slipway" ] || mkdir -p -- "$d/.slipway" || exit {EXIT_RELAY}
rm -rf -- "$t"
(umask 077 && mkdir -- "$t") || {{ echo "cannot create $t" >&2; exit {EXIT_RELAY}; }}
trap 'rm -rf -- "$t"; exit 1' HUP INT TERM PIPE
if ! (umask 077 && cat > "$t/key" && printf 'slipway-relay %s\n' {host_key} > "$t/known_hosts" && mkfifo -- "$t/tap"); then
  rm -rf -- "$t"
  echo "cannot write this deploy's relay key in $t" >&2
  exit {EXIT_RELAY}
fi
b2sum -l 256 < "$t/tap" > "$t/sum" &
hashing=$!
rc=0
{{
  s=0
  ssh -F /dev/null -T -n -i "$t/key" -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o HostKeyAlias=slipway-relay -o UserKnownHostsFile="$t/known_hosts" \
    -o GlobalKnownHostsFile=/dev/null -o CheckHostIP=no -o UpdateHostKeys=no -o ConnectTimeout=10 \
    -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o ForwardAgent=no -o ClearAllForwardings=yes \
    -o LogLevel=ERROR -p {port} -l {user} {address} 2> "$t/err" || s=$?
  rm -f -- "$t/key"
  echo "$s" > "$t/ssh"
}} | tee -p -- "$t/tap" | (
{head}
) 2> "$t/said" || rc=$?
wait "$hashing" || true
s=""
read -r s < "$t/ssh" || s=""
got=""
read -r got _ < "$t/sum" || got=""
if [ "$s" != 0 ]; then
  why=$(tail -n 3 "$t/err" | tr '\n\t\r' '   ')
  rm -rf -- {partial} "$t"
  echo "cannot fetch the release from the relay at "{address}":{port} (ssh exit status $s): $why" >&2
  exit {EXIT_RELAY}
fi
if [ "$got" != {digest} ]; then
  rm -rf -- {partial} "$t"
  echo "the stream from the relay at "{address}":{port} is not the deployer's (its BLAKE2b-256 differs): not used" >&2
  exit {EXIT_RELAY}
fi
# What the extraction said matters only for the deployer's own bytes.
cat -- "$t/said" >&2
rm -rf -- "$t"
[ "$rc" -eq 0 ] || exit "$rc"
(
{tail}
)
"#,
        d = quote(layout.deploy_to()),
        t = quote(&fetched_dir(layout)),
        host_key = quote(&from.host_key),
        port = from.port,
        user = quote(&from.user),
        address = quote(&from.address),
        digest = quote(digest),
        partial = quote(&receive.partial),
        head = receive.head,
        tail = receive.tail,
    )
}

/// Where a fetching host keeps its key and the stream's digest while it fetches.
fn fetched_dir(layout: &Layout) -> String {
    format!("{}/relay-in", layout.state_dir())
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
        let s = relay_open(&Layout::new("/srv/app"), "ssh-ed25519 AAAA", 1800, 4);
        assert!(
            s.contains(r#"restrict,command="exec sh -- %s/serve",expiry-time="%s""#),
            "{s}"
        );
        for line in [
            "PermitRootLogin forced-commands-only",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "PasswordAuthentication no",
            "MaxStartups 8",
            "timeout -s TERM 1800",
            // The forced command follows the stream until its writer ends, and waits
            // for a writer no longer than the server lives.
            r#"exec tail -c +1 -s 0.2 -f --pid="\$pid" -- "$rd/stream""#,
            r#"[ "\$n" -le 18000 ] || exit 1"#,
        ] {
            assert!(s.contains(line), "{line} missing");
        }
    }

    #[test]
    fn the_relay_keeps_the_stream_while_it_receives_it() {
        let s = relay_keep(&Layout::new("/srv/app"), "RECEIVE-HERE\n");
        // The writer is named before its first byte; the release is received from the
        // same stream, not after it.
        let writer = s.find(r#"mv -f -- "$1/writer.new" "$1/writer""#).unwrap();
        let tee = s
            .find(r#"exec tee -p -- "$1/stream"' sh "$rd" | ("#)
            .unwrap();
        let receive = s.find("RECEIVE-HERE").unwrap();
        assert!(writer < tee && tee < receive, "{s}");
        assert!(s.contains(&format!("exit {EXIT_RELAY}")), "{s}");
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
        let receive = Receive {
            head: "EXTRACT-HERE\n".into(),
            tail: "FINISH-HERE\n".into(),
            partial: "/srv/app/releases/1.partial".into(),
        };
        let s = relay_fetch(&layout, &from, "ab12", &receive);
        // Extracted as it arrives, with the digest taken of the same bytes; finished only
        // once the digest is the deployer's, removed otherwise.
        let tap = s.find(r#"| tee -p -- "$t/tap" | ("#).unwrap();
        let extract = s.find("EXTRACT-HERE").unwrap();
        let check = s.find(r#"if [ "$got" != 'ab12' ]; then"#).unwrap();
        let discard = check
            + s[check..]
                .find("rm -rf -- '/srv/app/releases/1.partial' \"$t\"")
                .unwrap();
        let finish = s.find("FINISH-HERE").unwrap();
        assert!(tap < extract && extract < check && discard < finish, "{s}");
        // The key is gone as soon as ssh returns.
        let key_gone = s.find("rm -f -- \"$t/key\"").unwrap();
        assert!(key_gone < tap, "{s}");
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
