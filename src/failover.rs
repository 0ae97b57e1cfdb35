//! Several server URLs for one database, tried in order: a small TCP forwarder on loopback.
//!
//! tend's pools are r2d2 pools of diesel's `ConnectionManager`, which connects to one URL, and
//! the MySQL/MariaDB client library takes one host. [`Failover`] gives such a pool one URL (a
//! loopback port of this process) behind which each new connection goes to the first of
//! several servers that accepts it. When the server a connection went to dies, the forwarder
//! closes that connection; diesel then reports it broken, r2d2's checkout test (`SELECT 1`)
//! fails, r2d2 opens a new one, and that one goes to the next server that answers. Used for
//! the nodes of a MariaDB Galera cluster (see the README's "Running on a cluster").

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::error::Error;

/// One database reachable through several servers (the nodes of a MariaDB Galera cluster),
/// tried in order for each new connection. Build the r2d2 pool with [`Failover::url`].
///
/// Every URL must name the same user, password, database and options; only `host:port`
/// differs. Each new connection goes to the first server, in the order given, that accepts a
/// TCP connection within the connect timeout ([`Failover::DEFAULT_CONNECT_TIMEOUT`]): list
/// the node this process should normally use first. A connection stays on its server until
/// that server closes it or dies; then the forwarder closes the client side too, so r2d2
/// replaces the connection (its checkout test fails) and the new one goes to the next live
/// server. When the first server is back, new connections go to it again.
///
/// It works at the TCP level: it cannot tell a server that accepts connections but refuses
/// queries (a Galera node that lost quorum, a PostgreSQL standby). For PostgreSQL use libpq's
/// own multi-host URL instead (`postgres://a:5432,b:5432/db?target_session_attrs=read-write`).
/// The forwarder listens on 127.0.0.1 only, uses two threads per open connection, and stops
/// (closing every connection) when dropped: keep it alive as long as the pool.
///
/// ```
/// use std::io::Read;
/// use std::net::{TcpListener, TcpStream};
/// // A dead server (a port nobody listens on) and a live one that greets each connection.
/// let dead = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
/// let live = TcpListener::bind("127.0.0.1:0")?;
/// let live_addr = live.local_addr()?;
/// std::thread::spawn(move || {
///     for s in live.incoming() {
///         use std::io::Write;
///         let _ = s.and_then(|mut s| s.write_all(b"hello"));
///     }
/// });
/// let failover = tend::Failover::start(&[
///     format!("mysql://app:secret@{dead}/shop"),
///     format!("mysql://app:secret@{live_addr}/shop"),
/// ])?;
/// // What the pool is built with: same user, password and database, a loopback port.
/// let url = failover.url();
/// assert!(url.starts_with("mysql://app:secret@127.0.0.1:") && url.ends_with("/shop"));
/// // A connection goes to the first server that answers: the second one here.
/// let mut s = TcpStream::connect(failover.local_addr())?;
/// let mut greeting = [0u8; 5];
/// s.read_exact(&mut greeting)?;
/// assert_eq!(&greeting, b"hello");
/// assert_eq!(failover.current(), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With tend (feature `mysql`), the pool and the worker pool are built as usual:
///
/// ```no_run
/// # #[cfg(feature = "mysql")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use diesel::MysqlConnection;
/// // This process drains through node 2, and through node 3 while node 2 is down.
/// let failover = tend::Failover::start(&[
///     "mysql://tend@10.0.0.2:3306/shop",
///     "mysql://tend@10.0.0.3:3306/shop",
/// ])?;
/// let pool = Pool::builder().build(ConnectionManager::<MysqlConnection>::new(failover.url()))?;
/// let handle = tend::WorkerPool::builder(pool, tend::Registry::new()).build()?.start()?;
/// // … at exit: shut the worker pool down, then drop `failover`.
/// handle.shutdown();
/// drop(failover);
/// # Ok(()) }
/// # #[cfg(not(feature = "mysql"))]
/// # fn main() {}
/// ```
pub struct Failover {
    inner: Arc<Inner>,
    url: String,
    local: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

struct Inner {
    upstreams: Vec<String>,
    connect_timeout: Duration,
    stopping: AtomicBool,
    /// The upstream the latest connection went to, plus one (0: none yet).
    current: AtomicUsize,
    /// How many connections went to another upstream than the one before them.
    switches: AtomicU64,
    next_id: AtomicU64,
    /// The client side of every open connection, to close them all when stopping.
    open: Mutex<HashMap<u64, TcpStream>>,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("local", &self.local)
            .field("upstreams", &self.inner.upstreams)
            .finish()
    }
}

/// A URL split around its `host:port`.
#[derive(Debug, PartialEq, Eq)]
struct Parts<'a> {
    /// `scheme://` and the user info with its `@`, if any.
    head: &'a str,
    host_port: String,
    /// The path and query, from the first `/` or `?` after the host.
    tail: &'a str,
}

fn split_url(url: &str) -> Result<Parts<'_>, String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| format!("`{url}` is not a URL (no `scheme://`)"))?;
    let default_port = match &url[..scheme_end] {
        "mysql" => 3306,
        "postgres" | "postgresql" => 5432,
        other => {
            return Err(format!(
                "scheme `{other}` in `{url}`: only mysql:// and postgres:// servers can be \
                 failed over"
            ))
        }
    };
    let rest = &url[scheme_end + 3..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let at = authority.rfind('@').map_or(0, |i| i + 1);
    let host = &authority[at..];
    if host.is_empty() || host.contains(',') {
        return Err(format!(
            "`{url}` must name exactly one host (give each server as its own URL)"
        ));
    }
    // A port follows the last `:` unless that `:` is inside an IPv6 `[…]`.
    let has_port = host.rfind(':').is_some_and(|i| !host[i..].contains(']'));
    let host_port = if has_port {
        host.to_string()
    } else {
        format!("{host}:{default_port}")
    };
    Ok(Parts {
        head: &url[..scheme_end + 3 + at],
        host_port,
        tail: &rest[auth_end..],
    })
}

impl Failover {
    /// How long a connection attempt to one server may take before the next is tried.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Starts a forwarder to `urls`, tried in that order, with
    /// [`DEFAULT_CONNECT_TIMEOUT`](Self::DEFAULT_CONNECT_TIMEOUT).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSetting`](crate::ErrorKind::InvalidSetting) `failover` when there
    /// is no URL, a URL is not a `mysql://` or `postgres://` URL with one host, or the URLs
    /// differ in anything but `host:port`, or no loopback port can be bound (the message says
    /// which).
    ///
    /// ```
    /// let err = tend::Failover::start(&["mysql://a@h1/db", "mysql://b@h2/db"]).unwrap_err();
    /// assert!(err.to_string().contains("differ"));
    /// assert!(tend::Failover::start::<&str>(&[]).is_err());
    /// assert!(tend::Failover::start(&["sqlite:///tmp/x.db"]).is_err());
    /// ```
    pub fn start<S: AsRef<str>>(urls: &[S]) -> Result<Failover, Error> {
        Failover::start_with(urls, Failover::DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`start`](Self::start) with another connect timeout per server (at least 1 ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// let urls = ["mysql://root@127.0.0.1:3307/db"];
    /// let f = tend::Failover::start_with(&urls, Duration::from_millis(500))?;
    /// assert_eq!(f.upstreams(), ["127.0.0.1:3307"]);
    /// # Ok::<(), tend::Error>(())
    /// ```
    pub fn start_with<S: AsRef<str>>(
        urls: &[S],
        connect_timeout: Duration,
    ) -> Result<Failover, Error> {
        let bad = |reason: String| Error::invalid_setting("failover", reason);
        if urls.is_empty() {
            return Err(bad("give at least one URL".into()));
        }
        if connect_timeout < Duration::from_millis(1) {
            return Err(bad("the connect timeout must be at least 1 ms".into()));
        }
        let parts = urls
            .iter()
            .map(|u| split_url(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let first = &parts[0];
        if let Some(p) = parts
            .iter()
            .find(|p| p.head != first.head || p.tail != first.tail)
        {
            return Err(bad(format!(
                "the URLs differ in more than host:port (`{}…{}` against `{}…{}`): every \
                 server must be the same database with the same credentials",
                first.head, first.tail, p.head, p.tail
            )));
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| bad(format!("cannot listen on a loopback port: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| bad(format!("cannot read the loopback port: {e}")))?;
        let url = format!("{}{}{}", first.head, local, first.tail);
        let inner = Arc::new(Inner {
            upstreams: parts.into_iter().map(|p| p.host_port).collect(),
            connect_timeout,
            stopping: AtomicBool::new(false),
            current: AtomicUsize::new(0),
            switches: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let accept = {
            let inner = inner.clone();
            thread::Builder::new()
                .name("tend-failover".into())
                .spawn(move || accept_loop(listener, inner))
                .map_err(|e| bad(format!("cannot start the forwarder thread: {e}")))?
        };
        Ok(Failover {
            inner,
            url,
            local,
            accept: Some(accept),
        })
    }

    /// The URL to build the r2d2 pool with: the first URL with its `host:port` replaced by
    /// this forwarder's loopback address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The forwarder's loopback address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The servers' `host:port`, in the order they are tried.
    pub fn upstreams(&self) -> &[String] {
        &self.inner.upstreams
    }

    /// The index (into [`upstreams`](Self::upstreams)) of the server the latest connection
    /// went to; `None` before the first.
    pub fn current(&self) -> Option<usize> {
        self.inner.current.load(Ordering::SeqCst).checked_sub(1)
    }

    /// How many connections went to another server than the connection before them.
    pub fn switches(&self) -> u64 {
        self.inner.switches.load(Ordering::SeqCst)
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let open = std::mem::take(&mut *self.inner.open.lock().unwrap_or_else(|p| p.into_inner()));
        for s in open.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for client in listener.incoming() {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            // Out of file descriptors and the like: do not spin.
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        let inner = inner.clone();
        let spawned = thread::Builder::new()
            .name("tend-failover-conn".into())
            .spawn(move || serve(client, &inner));
        if let Err(e) = spawned {
            log::error!("tend: failover: cannot start a connection thread: {e}");
        }
    }
}

/// Connects to the first upstream that accepts, in order; returns it with its index.
fn connect_first(inner: &Inner) -> Option<(TcpStream, usize)> {
    for (i, up) in inner.upstreams.iter().enumerate() {
        let addrs: Vec<SocketAddr> = match up.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                log::warn!("tend: failover: cannot resolve {up}: {e}");
                continue;
            }
        };
        for a in addrs {
            match TcpStream::connect_timeout(&a, inner.connect_timeout) {
                Ok(s) => return Some((s, i)),
                Err(e) => log::debug!("tend: failover: {up} ({a}) refused: {e}"),
            }
        }
    }
    None
}

fn serve(client: TcpStream, inner: &Inner) {
    let Some((server, i)) = connect_first(inner) else {
        log::warn!(
            "tend: failover: no server accepted a connection (tried {})",
            inner.upstreams.join(", ")
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let before = inner.current.swap(i + 1, Ordering::SeqCst);
    if before != 0 && before != i + 1 {
        inner.switches.fetch_add(1, Ordering::SeqCst);
        log::warn!(
            "tend: failover: new connections go to {} (server {} of {})",
            inner.upstreams[i],
            i + 1,
            inner.upstreams.len()
        );
    }
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let (Ok(c2), Ok(s2), Ok(c3)) = (client.try_clone(), server.try_clone(), client.try_clone())
    else {
        return;
    };
    {
        let mut open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        open.insert(id, c3);
    }
    // Server to client on a second thread, client to server on this one; whichever side
    // ends (the server died, the client closed) closes both, which ends the other copy.
    let down = thread::Builder::new()
        .name("tend-failover-conn".into())
        .spawn(move || pump(s2, c2));
    match down {
        Ok(down) => {
            pump(client, server);
            let _ = down.join();
        }
        Err(e) => log::error!("tend: failover: cannot start a connection thread: {e}"),
    }
    inner
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

/// Copies `from` to `to` until either fails or ends, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _: io::Result<u64> = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn urls_split_around_host_and_port() {
        let p = split_url("mysql://u:p@h:3307/db?x=1").unwrap();
        assert_eq!(
            (p.head, p.host_port.as_str(), p.tail),
            ("mysql://u:p@", "h:3307", "/db?x=1")
        );
        let p = split_url("mysql://h/db").unwrap();
        assert_eq!((p.head, p.host_port.as_str()), ("mysql://", "h:3306"));
        let p = split_url("postgres://u@[::1]/db").unwrap();
        assert_eq!(p.host_port, "[::1]:5432");
        let p = split_url("postgresql://u@[::1]:6000").unwrap();
        assert_eq!((p.host_port.as_str(), p.tail), ("[::1]:6000", ""));
        assert!(split_url("postgres://u@a:1,b:2/db").is_err());
        assert!(split_url("sqlite://x").is_err());
        assert!(split_url("no-scheme").is_err());
    }

    #[test]
    fn a_dead_server_moves_new_connections_to_the_next() {
        // Two echo servers; the first is stopped after the first connection.
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let echo = |l: TcpListener, tag: u8, once: bool| {
            thread::spawn(move || {
                for s in l.incoming() {
                    let mut s = s.unwrap();
                    let mut buf = [0u8; 1];
                    while s.read_exact(&mut buf).is_ok() {
                        if s.write_all(&[buf[0], tag]).is_err() {
                            break;
                        }
                    }
                    if once {
                        return; // the listener is dropped: the port refuses from now on
                    }
                }
            })
        };
        let a_thread = echo(a, b'a', true);
        echo(b, b'b', false);
        let f = Failover::start(&[
            format!("mysql://u@{a_addr}/d"),
            format!("mysql://u@{b_addr}/d"),
        ])
        .unwrap();
        let ask = |s: &mut TcpStream| {
            s.write_all(b"x").ok()?;
            let mut r = [0u8; 2];
            s.read_exact(&mut r).ok()?;
            Some(r[1])
        };
        let mut first = TcpStream::connect(f.local_addr()).unwrap();
        assert_eq!(ask(&mut first), Some(b'a'));
        assert_eq!(f.current(), Some(0));
        // Server a closes this connection (its loop ends when the client goes away; here
        // the client goes away, which also stops server a for good).
        first.shutdown(Shutdown::Both).unwrap();
        a_thread.join().unwrap();
        let mut second = TcpStream::connect(f.local_addr()).unwrap();
        assert_eq!(ask(&mut second), Some(b'b'));
        assert_eq!((f.current(), f.switches()), (Some(1), 1));
        drop(f);
        // Stopping the forwarder closes its open connections.
        let mut buf = [0u8; 1];
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(second.read(&mut buf).unwrap_or(0), 0);
    }

    #[test]
    fn a_server_that_dies_closes_the_client_side() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = thread::spawn(move || l.accept().unwrap().0);
        let f = Failover::start(&[format!("mysql://u@{addr}/d")]).unwrap();
        let mut c = TcpStream::connect(f.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let s = server.join().unwrap();
        drop(s); // the server side goes away
        let mut buf = [0u8; 1];
        assert_eq!(
            c.read(&mut buf).unwrap_or(0),
            0,
            "the client sees the close"
        );
    }
}
