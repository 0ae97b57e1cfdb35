//! The dashboard's tests (`tests/web/`): a raw HTTP/1.1 client (so that a test can send exactly
//! the bytes an attacker would, malformed or oversized), and a tiny W3C WebDriver client over it.

pub mod webdriver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            &self.body[..self.body.len().min(3000)]
        );
        self
    }

    #[track_caller]
    pub fn has(self, needle: &str) -> Resp {
        assert!(
            self.body.contains(needle),
            "body lacks {needle:?}: {}",
            &self.body[..self.body.len().min(6000)]
        );
        self
    }

    #[track_caller]
    pub fn lacks(self, needle: &str) -> Resp {
        assert!(
            !self.body.contains(needle),
            "body has {needle:?}: {}",
            self.body
        );
        self
    }

    /// The value of the first `name="…" value="…"` hidden input.
    pub fn input(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &self.body[at + name.len() + 15..];
        Some(rest[..rest.find('"')?].to_string())
    }
}

/// Sends raw bytes and reads the response (the server closes or sends a length).
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // A server may answer (413) before it read everything: ignore a reset while writing.
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if let Some(r) = parse(&buf) {
            return r;
        }
    }
    parse(&buf)
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(&buf)))
}

fn parse(buf: &[u8]) -> Option<Resp> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = &buf[end + 4..];
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(len) = get("Content-Length") {
        let len: usize = len.parse().ok()?;
        if body.len() < len {
            return None;
        }
        body[..len].to_vec()
    } else if get("Transfer-Encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..nl])
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        return None; // read until close
    };
    Some(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A request builder: method, path, headers, form body.
pub struct Req {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    content_type: &'static str,
}

pub fn get(addr: SocketAddr, path: &str) -> Req {
    Req::new(addr, "GET", path)
}

pub fn post(addr: SocketAddr, path: &str) -> Req {
    Req::new(addr, "POST", path)
}

impl Req {
    pub fn new(addr: SocketAddr, method: &str, path: &str) -> Req {
        Req {
            addr,
            method: method.to_string(),
            path: path.to_string(),
            headers: vec![("Host".into(), addr.to_string())],
            body: None,
            content_type: "application/x-www-form-urlencoded",
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    /// The Origin a page of this server sends.
    pub fn same_origin(self) -> Req {
        let o = format!("http://{}", self.addr);
        self.header("Origin", &o)
    }

    pub fn cookie(self, session: &str) -> Req {
        self.header("Cookie", &format!("tend_session={session}"))
    }

    pub fn bearer(self, token: &str) -> Req {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn form(mut self, pairs: &[(&str, &str)]) -> Req {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        self.body = Some(body.join("&"));
        self
    }

    pub fn body(mut self, body: String) -> Req {
        self.body = Some(body);
        self
    }

    pub fn json(mut self, body: String) -> Req {
        self.body = Some(body);
        self.content_type = "application/json";
        self
    }

    pub fn send(self) -> Resp {
        let mut req = format!(
            "{} {} HTTP/1.1\r\nConnection: close\r\n",
            self.method, self.path
        );
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = &self.body {
            req.push_str(&format!("Content-Type: {}\r\n", self.content_type));
            req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
        } else if self.method == "POST" {
            req.push_str("Content-Length: 0\r\n\r\n");
        } else {
            req.push_str("\r\n");
        }
        raw(self.addr, req.as_bytes())
    }
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Logs in with `token` and returns the session cookie's value.
pub fn login(addr: SocketAddr, token: &str) -> String {
    let r = post(addr, "/login")
        .same_origin()
        .form(&[("token", token), ("next", "/")])
        .send()
        .expect(303);
    let cookie = r
        .header("Set-Cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie
        .split(';')
        .next()
        .unwrap()
        .trim()
        .strip_prefix("tend_session=")
        .unwrap()
        .to_string()
}
