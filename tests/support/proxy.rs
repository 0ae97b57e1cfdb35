//! A tiny fault-injecting TCP proxy on 127.0.0.1, to cut a database server off from tend.
//!
//! Up, it forwards every connection to the server. [`Proxy::down`] drops every live
//! connection (both directions shut down, so the client sees the connection die mid-query)
//! and makes new ones fail at once (accepted and closed before a byte is sent, so a client
//! never waits on a half-open socket). [`Proxy::up`] forwards again. [`Proxy::hang`] is the
//! server or network that stops answering: every connection, live or new, stays open but
//! nothing is forwarded in either direction, so a client waits for an answer forever (or until
//! its own timeout). The listener and the pump threads end when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    down: AtomicBool,
    hang: AtomicBool,
    /// Connections accepted while hanging: kept open, never answered.
    held: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
    /// Live forwarded connections: (id, client side, server side).
    conns: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next: AtomicU64,
    /// Connections refused while down.
    refused: AtomicU64,
}

#[derive(Debug)]
pub struct Proxy {
    /// host:port to connect to instead of the server.
    pub addr: String,
    state: Arc<State>,
}

impl Proxy {
    /// A proxy in front of `upstream` (host:port), listening on a free port of 127.0.0.1.
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State::default());
        let (st, upstream) = (state.clone(), upstream.to_string());
        thread::Builder::new()
            .name("test-proxy".into())
            .spawn(move || accept_loop(listener, st, upstream))
            .unwrap();
        Proxy { addr, state }
    }

    /// Drops every live connection and refuses new ones.
    pub fn down(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        let conns = std::mem::take(&mut *self.state.conns.lock().unwrap());
        for (_, c, s) in conns {
            let _ = c.shutdown(Shutdown::Both);
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again (and stops hanging).
    pub fn up(&self) {
        self.state.down.store(false, Ordering::SeqCst);
        self.state.hang.store(false, Ordering::SeqCst);
    }

    /// Stops answering: live connections stay open but nothing more is forwarded either way;
    /// new connections are accepted and never answered.
    pub fn hang(&self) {
        self.state.hang.store(true, Ordering::SeqCst);
    }

    /// Connections refused while down, so far.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }

    /// Live forwarded connections.
    pub fn live(&self) -> usize {
        self.state.conns.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.down();
        for c in std::mem::take(&mut *self.state.held.lock().unwrap()) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr.parse().unwrap(), Duration::from_secs(1));
    }
}

fn accept_loop(listener: TcpListener, st: Arc<State>, upstream: String) {
    for client in listener.incoming() {
        if st.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if st.hang.load(Ordering::SeqCst) {
            st.held.lock().unwrap().push(client);
            continue;
        }
        if st.down.load(Ordering::SeqCst) {
            st.refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let server = match TcpStream::connect(&upstream) {
            Ok(s) => s,
            Err(_) => {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = st.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = st.conns.lock().unwrap();
            // Checked under the lock, so that `down` cannot miss a connection.
            if st.down.load(Ordering::SeqCst) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                continue;
            }
            conns.push((id, client.try_clone().unwrap(), server.try_clone().unwrap()));
        }
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let st2 = st.clone();
        thread::spawn(move || pump(client, server, &st2, id));
        let st3 = st.clone();
        thread::spawn(move || pump(s2, c2, &st3, id));
    }
}

/// Copies `from` to `to` until either side ends, then shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream, st: &State, id: u64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            // Hanging: what arrives is swallowed, nothing is answered.
            Ok(_) if st.hang.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    st.conns.lock().unwrap().retain(|(i, _, _)| *i != id);
}
