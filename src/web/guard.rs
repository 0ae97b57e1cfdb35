//! The dashboard's front door. tiny_http reads a request's head with no bound: one endless
//! header line grows its buffer until memory runs out, and a client that sends nothing holds a
//! connection (and a thread) for good. So the guard accepts the TCP connections itself, reads
//! each request head within a size bound ([`MAX_HEAD`]) and a time bound ([`HEAD_TIMEOUT`]),
//! answers `431` or `408` itself when one is exceeded, and hands a good request to tiny_http,
//! which listens on a Unix socket in a directory only this user can enter. Each handed-over
//! request says `Connection: close`, so every request on a connection passes the guard.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest request head (request line and headers) passed on.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head, and may stall while sending its body.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more get a `503` at once.
const MAX_CONNECTIONS: usize = 256;

/// The listening guard.
pub(crate) struct Guard {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    dir: PathBuf,
}

/// A private directory for tiny_http's socket, and the socket's path in it.
pub(crate) fn socket_path() -> io::Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tend-web-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        crate::util::random_token()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let sock = dir.join("http.sock");
    Ok((dir, sock))
}

impl Guard {
    /// Listens on `listen` and passes good requests to the Unix socket `backend`, whose
    /// directory `dir` it removes when stopped.
    pub(crate) fn start(listen: &str, backend: PathBuf, dir: PathBuf) -> io::Result<Guard> {
        let bound = TcpListener::bind(listen).and_then(|l| Ok((l.local_addr()?, l)));
        let (addr, listener) = match bound {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let acceptor = std::thread::Builder::new()
            .name("tend-web-accept".into())
            .spawn(move || accept(&listener, &backend, &stop))?;
        Ok(Guard {
            addr,
            stopping,
            acceptor: Some(acceptor),
            dir,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting (connections being served finish on their own threads).
    pub(crate) fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            // Wakes the blocked accept.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept(listener: &TcpListener, backend: &Path, stopping: &AtomicBool) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut client = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("tend web: cannot accept a connection: {e}");
                std::thread::sleep(Duration::from_millis(50)); // out of descriptors, say
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = client.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = client.write_all(&reply(503, "too many connections"));
            continue;
        }
        let (backend, open2) = (backend.to_path_buf(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("tend-web-conn".into())
            .spawn(move || {
                if let Err(e) = serve(client, &backend) {
                    log::debug!("tend web: connection ended: {e}");
                }
                open2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A complete response the guard sends itself.
fn reply(status: u16, msg: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{msg}\n",
        msg.len() + 1
    )
    .into_bytes()
}

/// Why a head was not passed on.
enum Refused {
    Status(u16, &'static str),
    /// The client left, or the connection failed: nothing to answer.
    Gone,
}

/// Reads up to the end of the request head; returns the head and the bytes after it.
fn read_head(client: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), Refused> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match client.read(&mut chunk) {
            Ok(0) => return Err(Refused::Gone),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Refused::Status(408, "the request head took too long"))
            }
            Err(_) => return Err(Refused::Gone),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf[from..], b"\r\n\r\n").map(|i| from + i + 4) {
            if end > MAX_HEAD {
                return Err(Refused::Status(431, "the request head is too large"));
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(Refused::Status(431, "the request head is too large"));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The head with its `Connection` headers replaced by `Connection: close`.
fn closing(head: &[u8]) -> Vec<u8> {
    let text = &head[..head.len() - 4]; // without the blank line
    let mut out = Vec::with_capacity(head.len() + 20);
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if i > 0
            && (name.eq_ignore_ascii_case(b"connection")
                || name.eq_ignore_ascii_case(b"keep-alive"))
        {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

fn serve(mut client: TcpStream, backend: &Path) -> io::Result<()> {
    client.set_read_timeout(Some(HEAD_TIMEOUT))?;
    client.set_write_timeout(Some(HEAD_TIMEOUT))?;
    let (head, rest) = match read_head(&mut client) {
        Ok(h) => h,
        Err(Refused::Status(status, msg)) => {
            let _ = client.write_all(&reply(status, msg));
            let _ = client.shutdown(Shutdown::Write);
            // Let the client read the answer before the socket closes under unread input.
            let mut sink = [0u8; 4096];
            let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
            return Ok(());
        }
        Err(Refused::Gone) => return Ok(()),
    };
    let mut inner = match UnixStream::connect(backend) {
        Ok(s) => s,
        Err(e) => {
            let _ = client.write_all(&reply(503, "the dashboard is shutting down"));
            return Err(e);
        }
    };
    inner.write_all(&closing(&head))?;
    inner.write_all(&rest)?;
    // The body, if any, flows on; tiny_http and the handlers bound what they read of it.
    let (mut from_client, mut to_inner) = (client.try_clone()?, inner.try_clone()?);
    let upload = std::thread::Builder::new()
        .name("tend-web-body".into())
        .spawn(move || {
            let _ = io::copy(&mut from_client, &mut to_inner);
            let _ = to_inner.shutdown(Shutdown::Write);
        })?;
    let copied = io::copy(&mut inner, &mut client);
    // The response is complete (tiny_http closes after it): end both directions.
    let _ = client.shutdown(Shutdown::Both);
    let _ = inner.shutdown(Shutdown::Both);
    let _ = upload.join();
    copied.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_become_close() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\ncookie: a:b\r\n\r\n";
        let out = String::from_utf8(closing(head)).unwrap();
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: x\r\ncookie: a:b\r\nConnection: close\r\n\r\n"
        );
    }
}
