//! Throwaway SSH test hosts for integration tests.
//!
//! A [`Fleet`] is a set of real `sshd` processes listening on loopback. Each host
//!
//! * listens on its own address `127.A.B.C` and port (unique across every test
//!   process running on the machine, see [`slot_address`]);
//! * runs in its own mount namespace (`unshare --mount --propagation private`)
//!   where a per-host directory is bind-mounted on `/srv`, so every host has the
//!   same `/srv/...` paths with different contents, like real machines
//!   ([`TestHost::srv`], [`TestHost::path`]);
//! * has its own ed25519 host key, listed in the fleet's `known_hosts`;
//! * gives the login user a clean, empty home directory ([`TestHost::home`]),
//!   so the machine's own `~/.bashrc` does not run for every ssh command.
//!
//! The fleet writes an ssh client config ([`Fleet::ssh_config`], for `ssh -F`)
//! that logs in as the current user with the fleet's client key and checks host
//! keys against the fleet's `known_hosts`. It deliberately does not set
//! `StrictHostKeyChecking`: the deployer under test chooses that.
//!
//! Hosts can be stopped ([`Fleet::stop`], like a crashed machine: the listener,
//! every session and everything they started is SIGKILLed) and started again
//! ([`Fleet::start_host`]) with the same address, port and key.
//!
//! Needs root (for mount namespaces), `/usr/sbin/sshd`, `ssh`, `ssh-keygen`,
//! `unshare` and `mount`. Anything missing makes [`Fleet::start`] panic with a
//! message saying how to install it; tests never skip silently.
//!
//! Only `std` and the `tempfile` crate are used, so this module can be included
//! from any integration test with `#[path = "support/hosts.rs"] mod hosts;` or a
//! `mod support;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's `openssh-server` puts the daemon (sshd re-executes itself, so
/// it must be an absolute path).
pub const SSHD: &str = "/usr/sbin/sshd";

/// The port of hosts in a network namespace of their own ([`Fleet::start_in_netns`]);
/// not 22, whose `known_hosts` entries are written without the port.
pub const NETNS_PORT: u16 = 2222;

/// How long a host may take to accept TCP connections after being spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// First port used for test hosts. Ports are below the kernel's ephemeral range
/// (32768..) so that no outgoing connection can hold them.
const PORT_BASE: u16 = 20000;

/// Script run inside the host's new mount namespace (by `unshare ... sh -c`).
/// `$1` = the host's srv dir, `$2` = its sshd_config, `$3` = the login user's
/// home dir (empty: leave it alone), `$4` = the host's clean home dir.
///
/// It bind-mounts `$1` on `/srv` and `$4` on `$3`, starts a watchdog in the
/// background and then becomes sshd (`exec`, so the spawned child's pid is sshd's). The watchdog
/// reads the pipe that is the child's stdin: it reaches end-of-file only when
/// the test process has gone (even by SIGKILL or Ctrl-C, where no `Drop`
/// runs), and then SIGKILLs every process of this mount namespace, so that
/// crashed test runs leave no sshd behind. (The watchdog is itself in the
/// namespace, which keeps it alive, so its inode number cannot be reused by
/// another host while the watchdog kills by that number.)
const HOST_SCRIPT: &str = r#"
mount --bind "$1" /srv || { echo "slipway test host: mount --bind $1 /srv failed" >&2; exit 97; }
# A clean home for the login user, like a fresh machine: the machine's own ~/.bashrc
# (Debian's bash sources it for every ssh command) must not slow down or break the tests
# (seen: `pyenv init` in root's .bashrc takes a lock file; a session killed by stop()
# leaves it behind and every later login then waits 60 s for it).
if [ -n "$3" ]; then
    mount --bind "$4" "$3" || { echo "slipway test host: cannot give $3 a clean home" >&2; exit 97; }
fi
ns=$(readlink /proc/self/ns/mnt)
ino=${ns#mnt:?}; ino=${ino%?}
exec 3<&0
(
    read -r _ <&3
    read -r me _ </proc/self/stat
    for round in 1 2 3; do
        for p in $(find /proc/[0-9]*/ns/mnt -maxdepth 0 -lname "mnt:?$ino?" 2>/dev/null | cut -d/ -f3); do
            [ "$p" = "$me" ] || kill -KILL "$p" 2>/dev/null
        done
    done
) </dev/null >/dev/null 2>&1 &
exec /usr/sbin/sshd -D -e -f "$2" </dev/null 3<&-
"#;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// A set of test hosts sharing one temp dir, one client key, one `known_hosts`
/// and one ssh client config. Dropping it kills every host.
pub struct Fleet {
    dir: tempfile::TempDir,
    hosts: Vec<TestHost>,
    ssh_config: PathBuf,
    known_hosts: PathBuf,
    identity: PathBuf,
    authorized_keys: PathBuf,
    user: String,
    /// Hosts whose key [`Fleet::forget_host_key`] left out of `known_hosts`.
    forgotten: Mutex<BTreeSet<usize>>,
}

/// One test host of a [`Fleet`].
pub struct TestHost {
    /// `"host1"`, `"host2"`, ... (1-based, in the order of [`Fleet::hosts`]).
    /// The fleet's ssh config also defines this name as an alias
    /// (`Host host1` → `HostName <address>`, `Port <port>`).
    pub name: String,
    /// The loopback address sshd listens on, e.g. `"127.18.52.2"`. An app
    /// that a test starts on this host should bind this address (not
    /// 0.0.0.0) so that hosts do not answer for each other.
    pub address: String,
    /// The port sshd listens on (20000..32767; apps that tests start on a
    /// host should use other ports, e.g. 8000 + i).
    pub port: u16,
    /// `<fleet dir>/hostN`: holds `srv/`, `home/`, the host key, sshd_config, sshd.log.
    dir: PathBuf,
    sshd_config: PathBuf,
    host_key: PathBuf,
    log: PathBuf,
    /// The network namespace the host runs in (`None`: this process's).
    netns: Option<PathBuf>,
    process: Option<HostProcess>,
}

/// Where [`Fleet::start_in_netns`] puts its hosts.
struct Placement {
    netns: PathBuf,
    addresses: Vec<String>,
}

/// A running host: the sshd listener (its pid is also its process group) and
/// the mount namespace all its processes live in.
struct HostProcess {
    child: Child,
    /// Keeps the watchdog's pipe open; closing it makes the watchdog kill the host.
    _lifeline: Option<ChildStdin>,
    /// The host's mount namespace, see [`MountNs`].
    mount_ns: Option<MountNs>,
}

/// A mount namespace, held open. Its processes are found by comparing
/// `readlink /proc/<pid>/ns/mnt` with `name`. The open file keeps the namespace
/// alive, so its inode number cannot be reused by a namespace created later
/// (e.g. by a host starting in a parallel test or another test process) while
/// we are still killing by that number: without it, a stop could kill an
/// unrelated, newly started host.
struct MountNs {
    /// e.g. `mnt:[4026532177]`.
    name: OsString,
    _handle: fs::File,
}

impl Fleet {
    /// Starts `n` hosts (`host1`..`hostN`) and waits until each accepts TCP
    /// connections. Panics, saying how to fix it, if the machine cannot run
    /// test hosts (not root; sshd, ssh, ssh-keygen or unshare missing; mount
    /// namespaces not permitted) or if a host does not come up within 10 s
    /// (the panic message includes sshd's stderr).
    pub fn start(n: usize) -> Fleet {
        Fleet::start_placed(n, None)
    }

    /// Like [`Fleet::start`], but the hosts live in the network namespace `netns` (a
    /// path such as `/run/netns/NAME`, joined with `nsenter --net`), host `i` listening
    /// on `addresses[i]`, port [`NETNS_PORT`]. The namespace and its addresses are the caller's: it
    /// made them. The caller must be able to reach those addresses (e.g. it runs in a
    /// namespace joined to `netns` by a veth pair).
    pub fn start_in_netns(netns: &Path, addresses: &[String]) -> Fleet {
        Fleet::start_placed(
            addresses.len(),
            Some(Placement {
                netns: netns.to_path_buf(),
                addresses: addresses.to_vec(),
            }),
        )
    }

    fn start_placed(n: usize, placement: Option<Placement>) -> Fleet {
        preflight();
        let dir = tempfile::Builder::new()
            .prefix("slipway-hosts.")
            .tempdir()
            .expect("create the test fleet's temp dir");
        let root = dir.path().to_path_buf();
        let identity = root.join("id_ed25519");
        let known_hosts = root.join("known_hosts");
        let ssh_config = root.join("ssh_config");
        let authorized_keys = root.join("authorized_keys");

        // All keys at once: ssh-keygen is a process per key.
        let mut hosts = Vec::with_capacity(n);
        let mut keygens = vec![keygen_spawn(&identity, "slipway-test-client")];
        for i in 0..n {
            let (address, port) = match &placement {
                Some(p) => (p.addresses[i].clone(), NETNS_PORT),
                None => next_free_slot(),
            };
            let hdir = root.join(format!("host{}", i + 1));
            fs::create_dir_all(hdir.join("srv")).expect("create host dir");
            fs::create_dir_all(hdir.join("home")).expect("create host dir");
            fs::set_permissions(hdir.join("home"), fs::Permissions::from_mode(0o700)).ok();
            let host = TestHost {
                name: format!("host{}", i + 1),
                address,
                port,
                sshd_config: hdir.join("sshd_config"),
                host_key: hdir.join("ssh_host_ed25519_key"),
                log: hdir.join("sshd.log"),
                dir: hdir,
                netns: placement.as_ref().map(|p| p.netns.clone()),
                process: None,
            };
            keygens.push(keygen_spawn(&host.host_key, &host.name));
            hosts.push(host);
        }
        for (path, child) in keygens {
            keygen_wait(&path, child);
        }

        let client_pub = read_public_key(&identity);
        fs::write(&authorized_keys, format!("{client_pub}\n")).expect("write authorized_keys");
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o600)).ok();

        let user = current_user();
        let mut fleet = Fleet {
            dir,
            hosts,
            ssh_config,
            known_hosts,
            identity,
            authorized_keys,
            user,
            forgotten: Mutex::new(BTreeSet::new()),
        };
        for host in &fleet.hosts {
            write_sshd_config(host, &fleet.authorized_keys);
        }
        fleet.write_known_hosts();
        fleet.write_ssh_config();

        for host in &mut fleet.hosts {
            host.spawn();
        }
        for host in &mut fleet.hosts {
            host.wait_ready();
        }
        fleet
    }

    /// All hosts, in order (`host1` first).
    pub fn hosts(&self) -> &[TestHost] {
        &self.hosts
    }

    /// Host `i` (0-based: `host(0)` is `host1`).
    pub fn host(&self, i: usize) -> &TestHost {
        &self.hosts[i]
    }

    /// The ssh client config file, for `ssh -F` / `openssh::SessionBuilder::config_file`.
    /// It has `Host hostN` aliases and a `Host *` block with `UserKnownHostsFile`,
    /// `IdentityFile`, `IdentitiesOnly yes`, `User`, `BatchMode yes`,
    /// `LogLevel ERROR` and `ConnectTimeout 5`; no `StrictHostKeyChecking`.
    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    /// The `known_hosts` file (`[addr]:port ssh-ed25519 ...` per host, minus
    /// the hosts passed to [`Fleet::forget_host_key`]).
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// The client's private key (its public half is `<identity>.pub`).
    pub fn identity(&self) -> &Path {
        &self.identity
    }

    /// The user to log in as: the current user (tests run as root).
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// The fleet's temp dir (removed on drop); tests may put scratch files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills host `i` like a crashed machine: SIGKILL to the sshd listener's
    /// process group and to every process in the host's mount namespace (live
    /// sessions and anything they started), then reaps the listener. Returns
    /// once no process of the host is left. A no-op if it is already stopped.
    pub fn stop(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        if let Some(process) = host.process.take() {
            kill_processes(vec![process]);
        }
    }

    /// Starts host `i` again (same address, port, host key and `/srv`
    /// contents) and waits until it accepts connections. A no-op if it is
    /// running.
    pub fn start_host(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        if host.process.is_none() {
            host.spawn();
            host.wait_ready();
        }
    }

    /// Freezes host `i` (SIGSTOP to every process of its mount namespace: the
    /// listener, live sessions and what they started). Its connections stay open
    /// but nothing answers — a network stall without RST. [`Fleet::thaw`] resumes it.
    pub fn freeze(&self, i: usize) {
        self.signal_host(i, SIGSTOP);
    }

    /// Resumes a host stopped by [`Fleet::freeze`].
    pub fn thaw(&self, i: usize) {
        self.signal_host(i, SIGCONT);
    }

    fn signal_host(&self, i: usize, sig: i32) {
        let Some(ns) = self.hosts[i]
            .process
            .as_ref()
            .and_then(|p| p.mount_ns.as_ref().map(|ns| ns.name.clone()))
        else {
            return;
        };
        // Twice: a session may be forking while we scan.
        for _ in 0..2 {
            if let Ok(entries) = fs::read_dir("/proc") {
                for entry in entries.flatten() {
                    let Some(pid) = entry
                        .file_name()
                        .to_str()
                        .and_then(|s| s.parse::<i32>().ok())
                    else {
                        continue;
                    };
                    if fs::read_link(entry.path().join("ns/mnt")).is_ok_and(|n| n == ns) {
                        unsafe { kill(pid, sig) };
                    }
                }
            }
        }
    }

    /// Whether host `i` is running (not [`Fleet::stop`]ped).
    pub fn is_running(&self, i: usize) -> bool {
        self.hosts[i].process.is_some()
    }

    /// Rewrites `known_hosts` without host `i`'s key, so connecting to it with
    /// strict host key checking fails ("Host key verification failed").
    /// Cumulative; undone by [`Fleet::trust_all_host_keys`].
    pub fn forget_host_key(&self, i: usize) {
        assert!(
            i < self.hosts.len(),
            "no host {i} in a fleet of {}",
            self.hosts.len()
        );
        self.forgotten.lock().unwrap().insert(i);
        self.write_known_hosts();
    }

    /// Rewrites `known_hosts` with every host's current key again.
    pub fn trust_all_host_keys(&self) {
        self.forgotten.lock().unwrap().clear();
        self.write_known_hosts();
    }

    /// Gives host `i` a new host key (restarting it if it runs) WITHOUT
    /// updating `known_hosts`: connecting to it then fails with "REMOTE HOST
    /// IDENTIFICATION HAS CHANGED" / "Host key verification failed" — the
    /// man-in-the-middle case. [`Fleet::trust_all_host_keys`] accepts the new key.
    pub fn change_host_key(&mut self, i: usize) {
        let running = self.is_running(i);
        self.stop(i);
        let host = &self.hosts[i];
        let _ = fs::remove_file(&host.host_key);
        let _ = fs::remove_file(host.host_key.with_extension("pub"));
        let (path, child) = keygen_spawn(&host.host_key, &host.name);
        keygen_wait(&path, child);
        if running {
            self.start_host(i);
        }
    }

    /// A `Command` for the system `ssh` to host `i`, using the fleet's config:
    /// `ssh -F <ssh_config> -p <port> <address>`; append the remote command
    /// with `.arg(..)`. Stdin is null.
    pub fn ssh_command(&self, i: usize) -> Command {
        let host = &self.hosts[i];
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(&self.ssh_config)
            .arg("-p")
            .arg(host.port.to_string())
            .arg(&host.address)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `command` on host `i` through the system `ssh` (see
    /// [`Fleet::ssh_command`]) and returns its output; does not check the
    /// exit status.
    pub fn ssh(&self, i: usize, command: &str) -> Output {
        self.ssh_command(i)
            .arg(command)
            .output()
            .expect("run ssh (is openssh-client installed?)")
    }

    /// Like [`Fleet::ssh`] but panics (with stdout/stderr) unless the command
    /// succeeds, and returns its stdout as a string.
    pub fn ssh_ok(&self, i: usize, command: &str) -> String {
        let out = self.ssh(i, command);
        assert!(
            out.status.success(),
            "ssh {} `{command}` failed with {}\nstdout: {}\nstderr: {}",
            self.hosts[i].name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write_known_hosts(&self) {
        let forgotten = self.forgotten.lock().unwrap();
        let mut text = String::new();
        for (i, host) in self.hosts.iter().enumerate() {
            if !forgotten.contains(&i) {
                let key = read_public_key(&host.host_key);
                text.push_str(&format!("[{}]:{} {}\n", host.address, host.port, key));
            }
        }
        write_atomically(&self.known_hosts, &text);
    }

    fn write_ssh_config(&self) {
        let mut text = String::new();
        for host in &self.hosts {
            text.push_str(&format!(
                "Host {}\n    HostName {}\n    Port {}\n\n",
                host.name, host.address, host.port
            ));
        }
        text.push_str(&format!(
            "Host *\n    UserKnownHostsFile {}\n    IdentityFile {}\n    IdentitiesOnly yes\n    \
             User {}\n    BatchMode yes\n    LogLevel ERROR\n    ConnectTimeout 5\n",
            self.known_hosts.display(),
            self.identity.display(),
            self.user,
        ));
        fs::write(&self.ssh_config, text).expect("write ssh_config");
    }
}

impl Drop for Fleet {
    /// Kills every host (listeners, sessions and what they started) and reaps
    /// them; then the temp dir is removed.
    fn drop(&mut self) {
        let processes: Vec<HostProcess> = self
            .hosts
            .iter_mut()
            .filter_map(|h| h.process.take())
            .collect();
        kill_processes(processes);
    }
}

impl TestHost {
    /// The local directory this host sees as `/srv`.
    pub fn srv(&self) -> PathBuf {
        self.dir.join("srv")
    }

    /// The local directory this host sees as the login user's home directory
    /// (e.g. `/root`): each host gets a clean, initially empty one, so that
    /// the machine's own `~/.bashrc` (which Debian's bash sources for every
    /// ssh command) cannot slow down or break the tests.
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// Maps a remote absolute path under `/srv` to the local one:
    /// `"/srv/app/current"` → `<srv>/app/current`. Panics if `remote` is not
    /// `/srv` or below it.
    pub fn path(&self, remote: &str) -> PathBuf {
        let rest = Path::new(remote).strip_prefix("/srv").unwrap_or_else(|_| {
            panic!(
                "{}: {remote:?} is not under /srv; only /srv differs between test hosts",
                self.name
            )
        });
        assert!(
            !rest
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir)),
            "{}: {remote:?} contains `..`",
            self.name
        );
        if rest.as_os_str().is_empty() {
            self.srv()
        } else {
            self.srv().join(rest)
        }
    }

    /// The destination as an ssh URL, `ssh://<user>@<address>:<port>`
    /// (the form `ssh` and `openssh::Session::connect` accept).
    pub fn ssh_url(&self, user: &str) -> String {
        format!("ssh://{user}@{}:{}", self.address, self.port)
    }

    /// The host's sshd log (sshd -e, LogLevel ERROR).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The host's sshd_config file.
    pub fn sshd_config(&self) -> &Path {
        &self.sshd_config
    }

    fn spawn(&mut self) {
        assert!(self.process.is_none());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open sshd.log");
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", netns.display())).arg("unshare");
                c
            }
            None => Command::new("unshare"),
        };
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            HOST_SCRIPT,
            "sh",
        ])
        .arg(self.srv())
        .arg(&self.sshd_config)
        .arg(login_home().unwrap_or_default())
        .arg(self.home())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("dup sshd.log"))
        .stderr(log)
        .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{}: cannot spawn `unshare` ({e}): install util-linux (or run scripts/test)",
                self.name
            )
        });
        let lifeline = child.stdin.take();
        self.process = Some(HostProcess {
            child,
            _lifeline: lifeline,
            mount_ns: None,
        });
    }

    fn wait_ready(&mut self) {
        let addr = SocketAddr::from((self.ipv4(), self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        let process = self.process.as_mut().expect("host spawned");
        loop {
            if let Some(status) = process.child.try_wait().expect("wait for sshd") {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "{} ({}:{}): sshd exited with {status} before accepting connections.\n\
                     sshd stderr:\n{log}",
                    self.name, self.address, self.port
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                // The pid is sshd's now (unshare and sh exec'd), and it lives in the new namespace.
                let link = format!("/proc/{}/ns/mnt", process.child.id());
                process.mount_ns = fs::File::open(&link).ok().and_then(|handle| {
                    let name = fs::read_link(&link).ok()?.into_os_string();
                    Some(MountNs {
                        name,
                        _handle: handle,
                    })
                });
                return;
            }
            if Instant::now() > deadline {
                let pid = process.child.id();
                let _ = self.process.take().map(|p| kill_processes(vec![p]));
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "{} ({}:{}): sshd (pid {pid}) did not accept connections within {:?}.\n\
                     sshd stderr:\n{log}",
                    self.name, self.address, self.port, READY_TIMEOUT
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn ipv4(&self) -> Ipv4Addr {
        self.address.parse().expect("host address is IPv4")
    }
}

/// SIGKILLs the given hosts' process groups and every process in their mount
/// namespaces, repeating until none is left (a session may be forking while
/// we scan), then reaps the listeners.
fn kill_processes(mut processes: Vec<HostProcess>) {
    if processes.is_empty() {
        return;
    }
    for p in &processes {
        // process_group(0): the group id is the listener's pid.
        unsafe { kill(-(p.child.id() as i32), SIGKILL) };
    }
    let namespaces: Vec<&OsString> = processes
        .iter()
        .filter_map(|p| p.mount_ns.as_ref().map(|ns| &ns.name))
        .collect();
    if !namespaces.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut found = 0;
            if let Ok(entries) = fs::read_dir("/proc") {
                for entry in entries.flatten() {
                    let Some(pid) = entry
                        .file_name()
                        .to_str()
                        .and_then(|s| s.parse::<i32>().ok())
                    else {
                        continue;
                    };
                    // Zombies have no namespace links any more, so they are not counted.
                    let in_namespace = fs::read_link(entry.path().join("ns/mnt"))
                        .is_ok_and(|ns| namespaces.iter().any(|n| **n == *ns.as_os_str()));
                    if in_namespace {
                        found += 1;
                        unsafe { kill(pid, SIGKILL) };
                    }
                }
            }
            if found == 0 || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
    for p in &mut processes {
        let _ = p.child.wait();
    }
}

/// Checks once per process that test hosts can run here; panics with how to fix it.
fn preflight() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned)); // effective uid
        if uid.as_deref() != Some("0") {
            panic!(
                "test hosts need root (mount namespaces via unshare): run the tests as root, \
                 e.g. via scripts/test (effective uid is {})",
                uid.as_deref().unwrap_or("unknown")
            );
        }
        if !Path::new(SSHD).is_file() {
            panic!(
                "sshd not found at {SSHD}: install it with `apt-get install openssh-server` \
                 (or run scripts/test, which installs it)"
            );
        }
        for (tool, package) in [
            ("ssh", "openssh-client"),
            ("ssh-keygen", "openssh-client"),
            ("unshare", "util-linux"),
            ("mount", "mount"),
        ] {
            if find_in_path(tool).is_none() {
                panic!(
                    "`{tool}` not found on PATH: install it with `apt-get install {package}` \
                     (or run scripts/test, which installs it)"
                );
            }
        }
        if !Path::new("/srv").is_dir() {
            fs::create_dir_all("/srv").unwrap_or_else(|e| {
                panic!("test hosts bind-mount their own dir on /srv, which is missing and cannot be created: {e}")
            });
        }
        // sshd's privilege separation directory (normally made by systemd's RuntimeDirectory).
        if let Err(e) = fs::create_dir_all("/run/sshd") {
            panic!("cannot create /run/sshd (sshd's privilege separation dir): {e}");
        }
        let _ = fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755));
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "mount", "--bind", "/srv", "/srv"])
            .stdin(Stdio::null())
            .output()
            .expect("run unshare");
        if !out.status.success() {
            panic!(
                "test hosts need mount namespaces, but `unshare --mount --propagation private -- \
                 mount --bind /srv /srv` failed ({}): {}\nRun the tests as root on a machine (or \
                 a privileged container) that allows unshare(CLONE_NEWNS).",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    });
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The current user's name (`id -un`), cached.
fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        Command::new("id")
            .arg("-un")
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".to_owned())
    })
    .clone()
}

/// The login user's home directory (from /etc/passwd, else `$HOME`), which
/// test hosts replace with a clean one; `None` if unknown or unsuitable (`/`).
fn login_home() -> Option<PathBuf> {
    static HOME: OnceLock<Option<PathBuf>> = OnceLock::new();
    HOME.get_or_init(|| {
        let user = current_user();
        let from_passwd = fs::read_to_string("/etc/passwd").ok().and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 6 && fields[0] == user).then(|| PathBuf::from(fields[5]))
            })
        });
        from_passwd
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .filter(|home| home.is_absolute() && home.is_dir() && home != Path::new("/"))
    })
    .clone()
}

/// Address and port for the `slot`-th host of this process.
///
/// The address is `127.A.B.C` with `A.B` = the low 16 bits of the pid and
/// `C` = 2 + slot % 253 (never 127.0.0.1); the port is
/// `20000 + 64 * (slot / 253) + (pid >> 16)` (pid_max is at most 2^22, so
/// `pid >> 16` < 64). The whole pid is thus encoded, so two test processes
/// never get the same address and port, and no slot of a process repeats.
fn slot_address(pid: u32, slot: u32) -> (Ipv4Addr, u16) {
    let a = ((pid >> 8) & 0xff) as u8;
    let b = (pid & 0xff) as u8;
    let c = (2 + slot % 253) as u8;
    let port = u32::from(PORT_BASE) + 64 * (slot / 253) + ((pid >> 16) & 63);
    assert!(port < 32768, "too many test hosts in one process");
    (Ipv4Addr::new(127, a, b, c), port as u16)
}

/// The next slot whose address:port can be bound right now (skipping ones that
/// something else on the machine holds, e.g. a service listening on 0.0.0.0).
fn next_free_slot() -> (String, u16) {
    static NEXT_SLOT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    for _ in 0..1000 {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        let (ip, port) = slot_address(pid, slot);
        match TcpListener::bind((ip, port)) {
            Ok(_) => return (ip.to_string(), port),
            Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
            Err(e) => panic!("cannot bind {ip}:{port} for a test host: {e}"),
        }
    }
    panic!("no free loopback address/port for a test host after 1000 tries");
}

fn keygen_spawn(path: &Path, comment: &str) -> (PathBuf, Child) {
    let child = Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run ssh-keygen ({e}): install it with `apt-get install openssh-client`")
        });
    (path.to_path_buf(), child)
}

fn keygen_wait(path: &Path, child: Child) {
    let out = child.wait_with_output().expect("wait for ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed ({}): {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssh-ed25519 AAAA...` (type and key, without the comment) of a private key's `.pub`.
fn read_public_key(private_key: &Path) -> String {
    let mut pub_path = private_key.as_os_str().to_owned();
    pub_path.push(".pub");
    let text = fs::read_to_string(&pub_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", Path::new(&pub_path).display()));
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_sshd_config(host: &TestHost, authorized_keys: &Path) {
    let text = format!(
        "# slipway test host {name}\n\
         ListenAddress {addr}:{port}\n\
         HostKey {key}\n\
         AuthorizedKeysFile {ak}\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PidFile none\n\
         MaxStartups 200\n\
         MaxSessions 64\n\
         LogLevel ERROR\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         X11Forwarding no\n\
         AllowTcpForwarding yes\n\
         Subsystem sftp internal-sftp\n",
        name = host.name,
        addr = host.address,
        port = host.port,
        key = host.host_key.display(),
        ak = authorized_keys.display(),
    );
    fs::write(&host.sshd_config, text).expect("write sshd_config");
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).expect("write temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    drop(f);
    fs::rename(&tmp, path).expect("rename temp file");
}

/// The value of `SLIPWAY_FAULT` for a run that must stop at a fault point. The points
/// exist only in builds with the `fault-injection` feature: without it this fails the
/// test (with how to run it), rather than letting the run go by the point unnoticed.
#[allow(dead_code)]
pub fn fault(spec: &str) -> &str {
    assert!(
        spec.is_empty() || cfg!(feature = "fault-injection"),
        "this test stops slipway at a fault point ({spec}), which only builds with the \
         `fault-injection` feature have: run it with `cargo test --features fault-injection` \
         (scripts/test does)"
    );
    spec
}
