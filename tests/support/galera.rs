//! A throw-away 3-node MariaDB Galera cluster on loopback (issue 17), started and stopped by
//! the test: `mariadb-install-db --no-defaults` per node, one `my.cnf` per node (read with
//! `--defaults-file`, so the machine's own configuration is never read), the first node
//! bootstrapped with `--wsrep-new-cluster`, the others joining it by rsync state transfer.
//! See `/work/shared/design/galera-notes.md` for what was seen to matter.
//!
//! Ports: SQL 3307-3309, group communication 4567/4577/4587 (incremental state transfer one
//! above each), rsync state transfer 4444/4454/4464. Data under the temp directory. Every node
//! still running is SIGKILLed when the [`Cluster`] is dropped, also when the test panics.
//!
//! Nothing here waits without a bound: a node's status is read on a helper thread given 10 s
//! ([`bounded`]), and [`watchdog`] ends the whole test process, after killing the nodes and the
//! worker processes and printing where the test stood, when it has not finished in time (a CI
//! run once hung in this test until CI's own limit, with no word of where).

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection, RunQueryDsl};

use super::now_us;

pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";
pub const NODES: usize = 3;
/// The database tend's table lives in.
pub const DB: &str = "tend";

/// One node's ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub sql: u16,
    pub gcomm: u16,
    pub sst: u16,
}

pub fn ports(i: usize) -> Ports {
    let i = i as u16;
    Ports {
        sql: 3307 + i,
        gcomm: 4567 + 10 * i,
        sst: 4444 + 10 * i,
    }
}

#[derive(Debug)]
pub struct Node {
    pub index: usize,
    pub ports: Ports,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// `mysql://root@127.0.0.1:PORT/tend`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/{DB}", self.ports.sql)
    }

    /// The server's URL without a database (before it exists).
    fn server_url(&self) -> String {
        server_url(self.ports.sql)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// A connection to this node's `tend` database.
    pub fn connect(&self) -> MysqlConnection {
        MysqlConnection::establish(&self.url())
            .unwrap_or_else(|e| panic!("connecting to node {}: {e}", self.index + 1))
    }

    /// A `SHOW GLOBAL STATUS` value, `None` if the node does not answer within 10 s.
    pub fn status(&self, name: &str) -> Option<String> {
        status_of(self.ports.sql, name)
    }

    /// SIGKILLs the node (`kill -9`); returns when it is reaped, with that time (µs).
    pub fn kill9(&mut self) -> i64 {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        now_us()
    }
}

#[derive(Debug, diesel::QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
    value: String,
}

/// `SHOW GLOBAL STATUS LIKE name` on the node at `port`, `None` if it does not answer within
/// 10 s (a node mid-transfer or wedged can accept a connection and never reply).
fn status_of(port: u16, name: &str) -> Option<String> {
    let url = server_url(port);
    let name = name.to_string();
    bounded(Duration::from_secs(10), move || {
        let mut c = MysqlConnection::establish(&url).ok()?;
        status_on(&mut c, &name)
    })
    .flatten()
}

/// The URL of the node listening on `port`, without tend's database.
fn server_url(port: u16) -> String {
    format!("mysql://root@127.0.0.1:{port}/mysql")
}

/// Runs `f` on its own thread and waits at most `limit` for it; `None` when it takes longer
/// (the thread is left to finish or hang on its own).
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// The processes the watchdog kills, and what the test is doing now.
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static PHASE: Mutex<(String, Option<Instant>)> = Mutex::new((String::new(), None));

/// Registers a process (a node, a worker) for the watchdog to SIGKILL if it fires.
pub fn track(pid: u32) {
    PIDS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Says what the test does now: one `GALERA phase` line on stderr (uncaptured, so CI's log
/// shows how far a test got), kept for the watchdog's report.
pub fn phase(what: &str) {
    let mut p = PHASE.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = *p.1.get_or_insert_with(Instant::now);
    p.0 = what.to_string();
    let _ = writeln!(
        std::io::stderr(),
        "GALERA phase at {:.1} s: {what}",
        t0.elapsed().as_secs_f64()
    );
}

/// Ends the test process if it has not finished within `limit`: prints the phase it was in,
/// each node's state and the tail of its error log, SIGKILLs every tracked process (the
/// nodes and the workers would outlive the test process otherwise) and exits with status 101,
/// which fails the test run. Dropping the returned guard disarms it.
pub fn watchdog(limit: Duration) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    let dir = cluster_dir();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
            return;
        }
        let phase = PHASE.lock().unwrap_or_else(|e| e.into_inner()).0.clone();
        let mut report = format!(
            "GALERA WATCHDOG: the test did not finish within {limit:?}; it was at: {phase}\n"
        );
        for i in 0..NODES {
            let port = ports(i).sql;
            let state = |k: &str| status_of(port, k).unwrap_or_else(|| "no answer".into());
            report += &format!(
                "node {}: state={} cluster_size={} flow_control_paused={} recv_queue={}\n",
                i + 1,
                state("wsrep_local_state_comment"),
                state("wsrep_cluster_size"),
                state("wsrep_flow_control_paused"),
                state("wsrep_local_recv_queue"),
            );
            report += &processlist(port);
            report += &format!(
                "---- node {} error log (last lines) ----\n{}\n",
                i + 1,
                tail(&dir.join(format!("node{}", i + 1)).join("error.log"), 30)
            );
        }
        // A node that cannot write (a full disk) waits rather than fails: say how full it is.
        if let Ok(out) = Command::new("df").arg("-h").arg(&dir).output() {
            report += &String::from_utf8_lossy(&out.stdout);
        }
        let pids = PIDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        report += &format!("killing processes {pids:?}\n");
        let _ = std::io::stderr().write_all(report.as_bytes());
        for pid in pids.into_iter().filter(|&p| is_our_child(p)) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = fs::remove_dir_all(&dir);
        std::process::exit(101);
    });
    Watchdog { _disarm: tx }
}

/// What every connection of the node at `port` is doing (`information_schema.PROCESSLIST`:
/// id, user, command, seconds, state, statement), and the wsrep counters that say whether it
/// is paused, desynced or behind: what a hang needs to be understood. Read with the `mariadb`
/// client on a helper thread given 10 s, so a wedged node cannot hang the report.
pub fn processlist(port: u16) -> String {
    let out = bounded(Duration::from_secs(10), move || {
        Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-uroot", "--batch"])
            .arg(format!("-P{port}"))
            .arg("-e")
            .arg(
                "SELECT ID, USER, COMMAND, TIME, STATE, LEFT(INFO, 160) AS INFO \
                 FROM information_schema.PROCESSLIST ORDER BY ID; \
                 SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_last_committed', \
                 'wsrep_local_state', 'wsrep_desync_count', 'wsrep_local_send_queue', \
                 'wsrep_cluster_status', 'wsrep_ready', 'wsrep_connected'); \
                 SHOW GLOBAL VARIABLES WHERE Variable_name IN ('wsrep_desync', 'read_only', \
                 'wsrep_reject_queries')",
            )
            .output()
    });
    match out {
        Some(Ok(o)) => format!(
            "---- port {port}: processlist and wsrep state ----\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Some(Err(e)) => format!("---- port {port}: cannot run the mariadb client: {e}\n"),
        None => format!("---- port {port}: no answer within 10 s\n"),
    }
}

/// Whether `pid` is still a child of this process: a tracked worker that exited long ago
/// may have left its pid to an unrelated process, which must not be killed.
fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the parenthesised command name: state, then the parent's pid.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// Disarms the [`watchdog`] when dropped.
pub struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

/// Where the cluster's nodes keep their data: one directory per test process.
fn cluster_dir() -> PathBuf {
    std::env::temp_dir().join(format!("tend-galera-{}", std::process::id()))
}

fn status_on(c: &mut MysqlConnection, name: &str) -> Option<String> {
    diesel::sql_query(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .load::<StatusRow>(c)
        .ok()?
        .pop()
        .map(|r| r.value)
}

#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    /// How long the cluster took to form (install, bootstrap, two joins).
    pub formed_in: Duration,
}

/// Why the cluster cannot run here, if it cannot.
fn missing() -> Option<String> {
    for (what, path) in [
        ("the galera-4 package", PROVIDER),
        ("mariadbd", "/usr/sbin/mariadbd"),
        ("mariadb-install-db", "/usr/bin/mariadb-install-db"),
        ("rsync", "/usr/bin/rsync"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{what} is not installed ({path} is missing)"));
        }
    }
    for i in 0..NODES {
        let p = ports(i);
        for port in [p.sql, p.gcomm, p.gcomm + 1, p.sst] {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Some(format!("port {port} is in use"));
            }
        }
    }
    None
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Starts the cluster, or returns `None` after a loud line when Galera cannot run here
    /// (unless `TEND_REQUIRE_GALERA=1`: then it panics).
    pub fn start() -> Option<Cluster> {
        if let Some(why) = missing() {
            if std::env::var("TEND_REQUIRE_GALERA").is_ok_and(|v| v.trim() == "1") {
                panic!("TEND_REQUIRE_GALERA=1 but the Galera cluster cannot run: {why}");
            }
            super::figures(format!(
                "GALERA SKIPPED: {why} (apt-get install galera-4 rsync mariadb-server; set \
                 TEND_REQUIRE_GALERA=1 to make this a failure)"
            ));
            return None;
        }
        let t0 = Instant::now();
        let dir = cluster_dir();
        let _ = fs::remove_dir_all(&dir);
        let root = is_root();
        let mut cluster = Cluster {
            dir: dir.clone(),
            nodes: Vec::new(),
            formed_in: Duration::ZERO,
        };
        for i in 0..NODES {
            let nd = dir.join(format!("node{}", i + 1));
            fs::create_dir_all(nd.join("data")).unwrap();
            fs::create_dir_all(nd.join("tmp")).unwrap();
            fs::write(nd.join("my.cnf"), my_cnf(i, &nd)).unwrap();
            cluster.nodes.push(Node {
                index: i,
                ports: ports(i),
                dir: nd,
                child: None,
            });
        }
        if root {
            // The nodes run as `mysql`, and so does the rsync state transfer: their
            // directories must be theirs (see the notes).
            run(
                Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir),
                "chown",
            );
        }
        // One after the other: run at once, their bootstraps collided on temporary tables.
        for n in &cluster.nodes {
            let mut c = Command::new("mariadb-install-db");
            c.arg("--no-defaults")
                .arg(format!("--datadir={}", n.dir.join("data").display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db");
            if root {
                c.arg("--user=mysql");
            }
            phase(&format!("mariadb-install-db for node {}", n.index + 1));
            run(
                &mut c,
                &format!("mariadb-install-db for node {}", n.index + 1),
            );
        }
        // Bootstrap node 1, then join 2 and 3 one at a time (node 1 donates to one at once).
        for i in 0..NODES {
            phase(&format!(
                "starting node {} and waiting until it is Synced",
                i + 1
            ));
            cluster.spawn(i, i == 0, root);
            cluster.wait_synced(i, Duration::from_secs(90));
        }
        cluster.wait_size(NODES, Duration::from_secs(30));
        let mut c = MysqlConnection::establish(&cluster.nodes[0].server_url()).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {DB}")).unwrap();
        cluster.formed_in = t0.elapsed();
        Some(cluster)
    }

    fn spawn(&mut self, i: usize, bootstrap: bool, root: bool) {
        let n = &mut self.nodes[i];
        let mut c = Command::new("/usr/sbin/mariadbd");
        c.arg(format!(
            "--defaults-file={}",
            n.dir.join("my.cnf").display()
        ));
        if root {
            c.arg("--user=mysql");
        }
        if bootstrap {
            c.arg("--wsrep-new-cluster");
        }
        let out = fs::File::create(n.dir.join("stdout.log")).unwrap();
        c.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = c.spawn().expect("starting mariadbd");
        track(child.id());
        n.child = Some(child);
    }

    /// Waits until node `i` answers and says it is `Synced`.
    fn wait_synced(&mut self, i: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let n = &mut self.nodes[i];
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "node {} exited with {status} while starting; its log:\n{}",
                    i + 1,
                    tail(&n.error_log(), 40)
                );
            }
            if n.status("wsrep_local_state_comment").as_deref() == Some("Synced") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not Synced within {limit:?}; its log:\n{}",
                i + 1,
                tail(&n.error_log(), 40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until a live node sees `size` members.
    pub fn wait_size(&self, size: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let n = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a live node");
        while n.status("wsrep_cluster_size").as_deref() != Some(&size.to_string()) {
            assert!(
                Instant::now() < deadline,
                "wsrep_cluster_size did not become {size} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Certification failures plus brute-force aborts of local transactions, summed over the
    /// live nodes: the conflicts Galera resolved by failing a transaction with error 1213.
    pub fn conflicts(&self) -> Vec<Option<u64>> {
        self.nodes
            .iter()
            .map(|n| {
                if !n.is_running() {
                    return None;
                }
                let v = |k: &str| n.status(k).and_then(|v| v.parse::<u64>().ok());
                Some(v("wsrep_local_cert_failures")? + v("wsrep_local_bf_aborts")?)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for n in &mut self.nodes {
            if panicking {
                eprintln!(
                    "---- node {} error log (last lines) ----\n{}",
                    n.index + 1,
                    tail(&n.error_log(), 30)
                );
            }
            n.kill9();
        }
        // A state-transfer rsync daemon outlives its node only if the node died mid-transfer.
        for n in &self.nodes {
            for f in ["rsync_sst.pid", "data/rsync_sst.pid"] {
                if let Ok(pid) = fs::read_to_string(n.dir.join(f)) {
                    let pid = pid.trim();
                    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).contains("rsync") {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn my_cnf(i: usize, dir: &Path) -> String {
    let p = ports(i);
    let members: Vec<String> = (0..NODES)
        .map(|j| format!("127.0.0.1:{}", ports(j).gcomm))
        .collect();
    let d = dir.display();
    format!(
        "[mysqld]
datadir={d}/data
socket={d}/mysqld.sock
pid-file={d}/mysqld.pid
tmpdir={d}/tmp
port={sql}
bind-address=127.0.0.1
log-error={d}/error.log
skip-name-resolve
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=64M
innodb_log_file_size=48M
innodb_flush_log_at_trx_commit=0
performance_schema=OFF
max_connections=200
wsrep_on=ON
wsrep_provider={PROVIDER}
wsrep_cluster_name=tend_test
wsrep_cluster_address=gcomm://{members}
wsrep_node_name=node{n}
wsrep_node_address=127.0.0.1:{gcomm}
wsrep_provider_options=\"base_port={gcomm};gcache.size=32M{evs}\"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{sst}
wsrep_slave_threads=2
",
        sql = p.sql,
        gcomm = p.gcomm,
        sst = p.sst,
        n = i + 1,
        members = members.join(","),
        evs = evs_options(),
    )
}

/// Group-communication timeouts: how long the survivors wait before they evict a node that
/// stopped answering (they cannot commit meanwhile). The test shortens Galera's defaults
/// (suspect after 5 s, declared inactive after 15 s), as a deployment on a fast local network
/// may; `TEND_GALERA_EVS=default` keeps the defaults.
fn evs_options() -> String {
    match std::env::var("TEND_GALERA_EVS").as_deref() {
        Ok("default") => String::new(),
        _ => {
            ";evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.inactive_check_period=PT0.5S;\
              evs.keepalive_period=PT0.5S"
                .to_string()
        }
    }
}
