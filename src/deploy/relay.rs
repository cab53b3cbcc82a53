//! `[upload] relay = true`: each byte over the deployer's uplink once per group of hosts
//! that get the same payload, not once per host.
//!
//! The first host of a group (the relay) starts a one-time sshd of its own
//! (`script::relay_open`), then gets the payload from the deployer as usual while keeping
//! a copy (`script::relay_keep`); every other host of the group fetches that copy from
//! there over the hosts' network (`script::relay_fetch`), at most `relay_fanout` at once,
//! as it grows: the first of them are done about when the relay is, and the deploy takes
//! about the time of one copy over the deployer's link. What this rests on:
//!
//! - **Nothing long-lived.** The keys are made for this deploy: the client key on the
//!   deployer (its private half goes to the fetching hosts on their script's stdin and is
//!   removed there as soon as `ssh` returns), the host key on the relay. Neither is added
//!   to any `authorized_keys` or `known_hosts` of the user or the system: the relay's
//!   sshd reads its own files, in `.slipway/relay/`, removed with it when the uploads are
//!   over ([`stop`], whatever the outcome). A deployer that dies leaves a server that
//!   stops by itself (`timeout`, the upload's time limit) and a key that expires then
//!   (`expiry-time`); the next relayed deploy removes both.
//! - **Encrypted and authenticated.** Host to host is ssh: the fetching host trusts only
//!   the relay's one-time host key (handed over by the deployer), the relay only the
//!   one-time client key, for one forced command (`restrict`, reading the kept stream). No
//!   agent forwarding, no jump through the deployer's connection: the user's own key
//!   never leaves the deployer.
//! - **Checked against the deployer.** The deployer gives each fetching host the
//!   BLAKE2b-256 of the exact stream it would have sent; the host hashes the stream as it
//!   extracts it into the partial release, and finishes the release (its manifest check,
//!   the rename into place) only when the digest is the deployer's. A relay that cannot
//!   be reached, dies mid-stream or serves other bytes costs that host a direct upload,
//!   never a wrong or partial release.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use tokio::sync::Semaphore;

use crate::config::TransportKind;
use crate::fleet::{Fleet, StepResult};
use crate::script::{self, Endpoint};
use crate::transport::{Input, Stdin};

use super::upload::Upload;

/// Payloads smaller than this go to every host directly: a second ssh handshake per
/// host costs more than it saves (an incremental upload is usually far below it).
pub(super) const RELAY_MIN_BYTES: u64 = 1 << 20;

/// Hosts that get the same payload: the first is the relay, the others fetch from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    pub relay: usize,
    pub followers: Vec<usize>,
}

/// The relay groups, from each host's payload (an identity and its length): hosts that
/// share a payload of at least `min` bytes form a group, led by the first of them (in the
/// stage's order). A payload only one host gets makes no group.
pub(super) fn groups(payloads: &[(usize, u64)], min: u64) -> Vec<Group> {
    let mut order: Vec<usize> = Vec::new();
    let mut by_payload: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (host, &(payload, len)) in payloads.iter().enumerate() {
        if len < min {
            continue;
        }
        let hosts = by_payload.entry(payload).or_default();
        if hosts.is_empty() {
            order.push(payload);
        }
        hosts.push(host);
    }
    order
        .into_iter()
        .filter_map(|payload| {
            let hosts = by_payload.remove(&payload)?;
            let (&relay, followers) = hosts.split_first()?;
            (!followers.is_empty()).then(|| Group {
                relay,
                followers: followers.to_vec(),
            })
        })
        .collect()
}

/// Whether the relay's directory under `deploy_to` can be named in sshd's own files
/// (`HostKey`, `AuthorizedKeysFile`, the forced command) without any quoting: those
/// files have rules of their own (spaces split, `%` expands), so other paths are not
/// relayed at all.
pub(super) fn path_ok(deploy_to: &str) -> bool {
    !deploy_to.is_empty()
        && deploy_to
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c))
}

/// The relay server's line in the relay's output: its endpoint, or why there is none.
pub(super) fn parse_endpoint(stdout: &str) -> Result<Endpoint, String> {
    let Some(line) = stdout.lines().find_map(|l| {
        l.strip_prefix(script::RELAY_LINE)
            .and_then(|r| r.strip_prefix('\t'))
    }) else {
        return Err("the relay script printed no server line".into());
    };
    let fields: Vec<&str> = line.split('\t').collect();
    match fields.as_slice() {
        ["off", why, ..] => Err(crate::report::clip(why, 300).into_owned()),
        ["on", address, port, user, host_key] => {
            let address_ok = !address.is_empty()
                && address
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':');
            let user_ok = !user.is_empty()
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            let key_ok = host_key.strip_prefix("ssh-ed25519 ").is_some_and(|b| {
                !b.is_empty()
                    && b.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            });
            let port = port.parse::<u16>().ok().filter(|p| *p > 0);
            match (address_ok, port, user_ok, key_ok) {
                (true, Some(port), true, true) => Ok(Endpoint {
                    address: address.to_string(),
                    port,
                    user: user.to_string(),
                    host_key: host_key.to_string(),
                }),
                _ => Err("the relay's server line is malformed".into()),
            }
        }
        _ => Err("the relay's server line is malformed".into()),
    }
}

/// This deploy's client key: `ssh-keygen` on the deployer, in a private temporary
/// directory removed before this returns. The private half stays in memory.
struct ClientKey {
    private: Vec<u8>,
    public: String,
}

async fn client_key() -> Result<ClientKey, String> {
    let dir = tempfile::Builder::new()
        .prefix("slipway-relay.")
        .tempdir()
        .map_err(|e| format!("no temporary directory: {e}"))?;
    let path = dir.path().join("key");
    let out = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "slipway-relay", "-f"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run ssh-keygen ({e}): install openssh-client"))?;
    if !out.status.success() {
        return Err(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let private = std::fs::read(&path).map_err(|e| format!("cannot read the key: {e}"))?;
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .map_err(|e| format!("cannot read the key: {e}"))?;
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(ClientKey { private, public })
}

/// The BLAKE2b-256 of everything `input` holds, in hex (what `b2sum -l 256` prints): a
/// fetching host hashes the stream as it extracts it, and BLAKE2b costs it about a third
/// of SHA-256's CPU in coreutils (no hardware SHA there).
fn stream_digest(input: &Input) -> std::io::Result<String> {
    use blake2::Digest as _;
    let mut hasher = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    input.write_to(&mut hasher)?;
    Ok(crate::archive::hex(&hasher.finalize()))
}

/// Every host's upload step, done.
pub(super) struct Delivery {
    /// Each host's final upload result (after a direct upload for hosts whose relay
    /// failed them). A host whose relay failed outright is left out: that failure ends
    /// the deploy.
    pub results: Vec<(usize, StepResult)>,
    /// Per host: the host it fetched its release from, if it did.
    pub relayed_from: Vec<Option<usize>>,
    /// What the deployer sent a host that fetched from its relay: this deploy's key.
    pub key_bytes: u64,
}

/// A host's part in this upload.
enum Role<'a> {
    Direct,
    Relay(&'a [usize], String),
}

/// What became of one host.
enum Done {
    Result(usize, StepResult, Option<usize>),
    /// The relayed stream could not be had: send it directly.
    Direct(usize),
}

/// Uploads the release to every host: directly, or (`[upload] relay`) through the relay
/// of its group. `receive(i)` is host i's upload script (whole, as a direct upload runs
/// it; in parts for a host that fetches from its relay).
/// Every relay started is recorded in `started` before its script runs, for [`stop`].
pub(super) async fn deliver<F>(
    fleet: &Fleet,
    uploads: &[Upload],
    receive: F,
    started: &Mutex<Vec<usize>>,
) -> Delivery
where
    F: Fn(usize) -> script::Receive,
{
    let timeout = fleet.stage.timeouts.upload;
    let mut delivery = Delivery {
        results: Vec::new(),
        relayed_from: vec![None; fleet.len()],
        key_bytes: 0,
    };
    let direct = async |which: &[usize]| {
        fleet
            .step_on_each(
                which,
                "upload",
                |i| receive(i).whole(),
                |i| Some(Arc::clone(&uploads[i].payload)),
                timeout,
            )
            .await
    };
    let planned = plan(fleet, uploads).await;
    let Some((groups, key, digests)) = planned else {
        delivery.results = direct(&fleet.all()).await;
        return delivery;
    };
    delivery.key_bytes = key.private.len() as u64;
    let key_input: Stdin = Some(Arc::new(Input::bytes(key.private.clone())));
    let mut roles: Vec<Option<Role>> = (0..fleet.len()).map(|_| Some(Role::Direct)).collect();
    for (g, digest) in groups.iter().zip(&digests) {
        roles[g.relay] = Some(Role::Relay(&g.followers, digest.clone()));
        for &f in &g.followers {
            roles[f] = None;
        }
    }
    if let Ok(mut started) = started.lock() {
        started.extend(groups.iter().map(|g| g.relay));
    }
    let life = timeout.as_secs().saturating_add(60);
    let fanout = fleet.stage.relay_fanout;
    let runs = roles.iter().enumerate().filter_map(|(i, role)| {
        let role = role.as_ref()?;
        let receive = &receive;
        let key = &key;
        let key_input = &key_input;
        Some(async move {
            let mut done = Vec::new();
            let Role::Relay(followers, digest) = role else {
                let result = step(fleet, i, &receive(i).whole(), Some(Arc::clone(&uploads[i].payload))).await;
                done.push(Done::Result(i, result, None));
                return done;
            };
            // The relay's server first, before a byte of the release: the group's hosts
            // then fetch the stream while the relay receives it.
            let endpoint = match open(fleet, i, &key.public, life, fanout).await {
                Ok(endpoint) => endpoint,
                Err(why) => {
                    fleet.reporter.warning(
                        Some(fleet.name(i)),
                        &format!("cannot serve the release to its group ({why}); sending it to them directly"),
                    );
                    let result = step(fleet, i, &receive(i).whole(), Some(Arc::clone(&uploads[i].payload))).await;
                    done.push(Done::Result(i, result, None));
                    done.extend(followers.iter().map(|&f| Done::Direct(f)));
                    return done;
                }
            };
            let keep = async {
                let script = script::relay_keep(&fleet.layout, &receive(i).whole());
                let result = step(fleet, i, &script, Some(Arc::clone(&uploads[i].payload))).await;
                if !matches!(&result, Ok(out) if out.success()) {
                    // No stream, or not all of it: the fetches waiting for it end now.
                    stop_one(fleet, i).await;
                }
                result
            };
            let slots = Semaphore::new(fanout.max(1));
            let fetches = followers.iter().map(|&f| {
                let slots = &slots;
                let endpoint = &endpoint;
                async move {
                    let _slot = slots.acquire().await;
                    let script = script::relay_fetch(&fleet.layout, endpoint, digest, &receive(f));
                    let result = step(fleet, f, &script, key_input.clone()).await;
                    match result {
                        Ok(out) if out.code == script::EXIT_RELAY => {
                            fleet.reporter.warning(
                                Some(fleet.name(f)),
                                &format!("{}; sending the release directly", out.message()),
                            );
                            Done::Direct(f)
                        }
                        Ok(out) if out.success() => Done::Result(f, Ok(out), Some(i)),
                        other => Done::Result(f, other, None),
                    }
                }
            });
            let (result, fetched) = tokio::join!(keep, join_all(fetches));
            match &result {
                Ok(out) if out.success() => done.push(Done::Result(i, result, None)),
                Ok(out) if out.code == script::EXIT_RELAY => {
                    fleet.reporter.warning(
                        Some(fleet.name(i)),
                        &format!("cannot relay the release ({}); sending it directly to this host and its group", out.message()),
                    );
                    done.push(Done::Direct(i));
                }
                // Not this host's release (a base that differs): the deploy sends it the
                // whole release; its group's fetches stand or fall on their own.
                Ok(out) if out.code == script::EXIT_NOT_VERIFIED => done.push(Done::Result(i, result, None)),
                // The relay failed outright: that ends the deploy, so the hosts whose fetch
                // failed with it are not sent the release directly.
                _ => {
                    done.push(Done::Result(i, result, None));
                    done.extend(fetched.into_iter().filter(|d| matches!(d, Done::Result(..))));
                    return done;
                }
            }
            done.extend(fetched);
            done
        })
    });
    let mut fallback = Vec::new();
    for done in join_all(runs).await.into_iter().flatten() {
        match done {
            Done::Result(i, result, from) => {
                delivery.relayed_from[i] = from;
                delivery.results.push((i, result));
            }
            Done::Direct(i) => fallback.push(i),
        }
    }
    stop(fleet, started).await;
    if !fallback.is_empty() {
        fallback.sort_unstable();
        delivery.results.extend(direct(&fallback).await);
    }
    delivery.results.sort_by_key(|(i, _)| *i);
    delivery
}

/// The relay groups of this upload, this deploy's key and each group's stream digest;
/// `None` when nothing is relayed (off, not over ssh, nothing shared, or the key or a
/// digest could not be made: said as a warning, and every host gets a direct upload).
async fn plan(fleet: &Fleet, uploads: &[Upload]) -> Option<(Vec<Group>, ClientKey, Vec<String>)> {
    let stage = &fleet.stage;
    if !stage.relay || stage.transport != TransportKind::Ssh {
        return None;
    }
    if !path_ok(stage.deploy_to.as_str()) {
        fleet.reporter.warning(
            None,
            &format!(
                "[upload] relay is off for this deploy: deploy_to `{}` has characters sshd's own files cannot name (only letters, digits and / . _ + -); every host gets the release directly",
                stage.deploy_to
            ),
        );
        return None;
    }
    let payloads: Vec<(usize, u64)> = uploads
        .iter()
        .map(|u| (Arc::as_ptr(&u.payload) as usize, u.payload.len()))
        .collect();
    let groups = groups(&payloads, RELAY_MIN_BYTES);
    if groups.is_empty() {
        return None;
    }
    let key = match client_key().await {
        Ok(key) => key,
        Err(e) => {
            fleet.reporter.warning(
                None,
                &format!("[upload] relay is off for this deploy: cannot make its key ({e}); every host gets the release directly"),
            );
            return None;
        }
    };
    let mut digests = Vec::new();
    for g in &groups {
        let payload = Arc::clone(&uploads[g.relay].payload);
        match tokio::task::spawn_blocking(move || stream_digest(&payload)).await {
            Ok(Ok(d)) => digests.push(d),
            Ok(Err(e)) => {
                fleet.reporter.warning(None, &format!("[upload] relay is off for this deploy: cannot read the release stream ({e})"));
                return None;
            }
            Err(e) => {
                fleet
                    .reporter
                    .warning(None, &format!("[upload] relay is off for this deploy: {e}"));
                return None;
            }
        }
    }
    Some((groups, key, digests))
}

/// Starts host `i`'s relay server ([`script::relay_open`]): its endpoint, or why there is
/// none (said by the caller, whose group then gets the release directly).
async fn open(
    fleet: &Fleet,
    i: usize,
    client_key: &str,
    life: u64,
    fanout: usize,
) -> Result<Endpoint, String> {
    let script = script::relay_open(&fleet.layout, client_key, life, fanout);
    match fleet
        .exec(i, "relay-open", &script, None, fleet.stage.timeouts.command)
        .await
    {
        Ok(out) if out.success() => parse_endpoint(&out.stdout),
        Ok(out) => Err(out.message()),
        Err(e) => Err(e.to_string()),
    }
}

/// Stops host `i`'s relay server now, not when every upload is over: its stream will not
/// grow any more, and a fetch waiting for it must not wait for the upload's time limit.
/// A failure is left to [`stop`], which runs again at the end.
async fn stop_one(fleet: &Fleet, i: usize) {
    let _ = fleet
        .exec(
            i,
            "relay-stop",
            &script::relay_stop(&fleet.layout),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
}

/// One host's upload step, reported as `Fleet::step_on_each` reports it.
async fn step(fleet: &Fleet, i: usize, script: &str, stdin: Stdin) -> StepResult {
    let host = fleet.name(i);
    let started = Instant::now();
    let result = fleet
        .exec(i, "upload", script, stdin, fleet.stage.timeouts.upload)
        .await;
    match &result {
        Ok(out) if out.success() => {
            fleet
                .reporter
                .finished(host, "upload", started.elapsed(), None)
        }
        // Not a failure of the host: the caller says why and sends the release directly.
        Ok(out) if out.code == script::EXIT_RELAY => {}
        Ok(out) => fleet
            .reporter
            .failed(host, "upload", started.elapsed(), &out.message()),
        Err(_) => {}
    }
    result
}

/// Stops the relay servers in `started` and removes their copies and keys (each once:
/// the list is emptied). Called when the uploads are over, and again by the deploy
/// whatever ended them (a signal included). A relay that cannot be reached is said; its
/// server stops by itself and its key expires at the upload's time limit.
pub(super) async fn stop(fleet: &Fleet, started: &Mutex<Vec<usize>>) {
    let relays = match started.lock() {
        Ok(mut started) => std::mem::take(&mut *started),
        Err(_) => return,
    };
    if relays.is_empty() {
        return;
    }
    let results = fleet
        .step_on(
            &relays,
            "relay-stop",
            |_| script::relay_stop(&fleet.layout),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    for (i, r) in results {
        if let Err(e) = r {
            fleet.reporter.warning(
                Some(fleet.name(i)),
                &format!(
                    "could not stop its relay server ({e}): it stops by itself and its key expires within {}; the next relayed deploy removes them",
                    humantime::format_duration(fleet.stage.timeouts.upload)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_sharing_a_large_payload_form_a_group_led_by_the_first() {
        // Hosts 0, 2, 3 share payload 7; host 1 has its own; hosts 4 and 5 share a small one.
        let payloads = [
            (7, 5 << 20),
            (8, 5 << 20),
            (7, 5 << 20),
            (7, 5 << 20),
            (9, 10),
            (9, 10),
        ];
        assert_eq!(
            groups(&payloads, RELAY_MIN_BYTES),
            vec![Group {
                relay: 0,
                followers: vec![2, 3]
            }]
        );
        assert!(groups(&[(1, 5 << 20)], RELAY_MIN_BYTES).is_empty());
        assert!(groups(&[], RELAY_MIN_BYTES).is_empty());
        // Two payloads, two groups, in the order their first host comes.
        let two = groups(&[(2, 2 << 20), (1, 2 << 20), (1, 2 << 20), (2, 2 << 20)], 1);
        assert_eq!(
            two,
            vec![
                Group {
                    relay: 0,
                    followers: vec![3]
                },
                Group {
                    relay: 1,
                    followers: vec![2]
                }
            ]
        );
    }

    #[test]
    fn only_plain_paths_are_named_in_sshd_files() {
        assert!(path_ok("/srv/app"));
        assert!(path_ok("/var/www/shop-2.0_x+y"));
        for bad in [
            "/srv/my app",
            "/srv/a%h",
            "/srv/it's",
            "/srv/\"q\"",
            "/srv/ünï",
            "",
        ] {
            assert!(!path_ok(bad), "{bad}");
        }
    }

    #[test]
    fn the_server_line_is_checked_before_it_is_used() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx+/=";
        let ok = format!("noise\nslipway-relay\ton\t10.0.0.5\t41234\tdeploy\t{key}\n");
        assert_eq!(
            parse_endpoint(&ok),
            Ok(Endpoint {
                address: "10.0.0.5".into(),
                port: 41234,
                user: "deploy".into(),
                host_key: key.into()
            })
        );
        assert_eq!(
            parse_endpoint("slipway-relay\toff\tno sshd on this host\n"),
            Err("no sshd on this host".into())
        );
        for bad in [
            format!("slipway-relay\ton\t10.0.0.5;rm\t41234\tdeploy\t{key}"),
            format!("slipway-relay\ton\t10.0.0.5\t0\tdeploy\t{key}"),
            format!("slipway-relay\ton\t10.0.0.5\t41234\tde ploy\t{key}"),
            "slipway-relay\ton\t10.0.0.5\t41234\tdeploy\tssh-rsa AAAA".to_string(),
            "slipway-relay\ton\t10.0.0.5\t41234\tdeploy\tssh-ed25519 AA'A".to_string(),
            "nothing".to_string(),
        ] {
            assert!(parse_endpoint(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stream_digest_is_what_b2sum_prints() {
        let input = Input::bytes(b"abc".to_vec());
        assert_eq!(
            stream_digest(&input).unwrap(),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
    }
}
