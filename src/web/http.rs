//! Requests and responses: bounded parsing of the URL, query and form, the security checks of
//! mutating requests (token, same origin, per-session CSRF value), sessions, and the headers
//! every response carries.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest request target accepted (path and query).
pub(crate) const MAX_URL: usize = 4096;
/// Largest request body accepted (forms are a few hundred bytes).
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// Most parameters in a query or form.
pub(crate) const MAX_PARAMS: usize = 64;
/// Longest parameter value.
pub(crate) const MAX_VALUE: usize = 1024;
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; the oldest go first.
const MAX_SESSIONS: usize = 1000;
/// The session cookie's name.
pub(crate) const COOKIE: &str = "tend_session";

/// A request refused or failed: the status and a message for the error page.
#[derive(Debug, Clone)]
pub(crate) struct HttpError {
    pub status: u16,
    pub msg: String,
}

impl HttpError {
    pub fn new(status: u16, msg: impl Into<String>) -> HttpError {
        HttpError {
            status,
            msg: msg.into(),
        }
    }
    pub fn bad(msg: impl Into<String>) -> HttpError {
        HttpError::new(400, msg)
    }
}

/// GET (and HEAD), POST, or another method (refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Other,
}

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    /// The path, not decoded (routes only match ASCII segments).
    pub path: String,
    pub query: Params,
    pub form: Params,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub referer: Option<String>,
    pub authorization: Option<String>,
    pub session: Option<String>,
}

/// Query or form parameters, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text within the limits.
    pub fn parse(s: &[u8]) -> Result<Params, HttpError> {
        let mut v = Vec::new();
        for (k, val) in form_urlencoded::parse(s) {
            if v.len() == MAX_PARAMS {
                return Err(HttpError::bad(format!(
                    "too many parameters (at most {MAX_PARAMS})"
                )));
            }
            if k.len() > 64 || val.len() > MAX_VALUE {
                return Err(HttpError::bad(format!(
                    "parameter too long (names at most 64 bytes, values at most {MAX_VALUE})"
                )));
            }
            v.push((k.into_owned(), val.into_owned()));
        }
        Ok(Params(v))
    }

    /// The first value of `key`, if present and not empty (after trimming).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// `key` parsed as a number, or a 400 naming it.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, HttpError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| HttpError::bad(format!("`{key}` must be a whole number in range"))),
        }
    }

    /// Whether a checkbox `key` is on.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "on" | "true" | "yes"))
    }
}

/// Reads what the handlers need from a tiny_http request, refusing oversized or malformed
/// input with a 4xx.
pub(crate) fn read(req: &mut tiny_http::Request) -> Result<Req, HttpError> {
    let url = req.url().to_string();
    if url.len() > MAX_URL {
        return Err(HttpError::new(
            414,
            format!("request target too long (at most {MAX_URL} bytes)"),
        ));
    }
    let method = match req.method() {
        tiny_http::Method::Get | tiny_http::Method::Head => Method::Get,
        tiny_http::Method::Post => Method::Post,
        _ => Method::Other,
    };
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q),
        None => (url.clone(), ""),
    };
    if !path.starts_with('/') {
        return Err(HttpError::bad("the request target must be a path"));
    }
    let query = Params::parse(query.as_bytes())?;
    let header = |name: &'static str| {
        req.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let host = header("Host");
    let origin = header("Origin");
    let referer = header("Referer");
    let authorization = header("Authorization");
    let session = header("Cookie").and_then(|c| {
        c.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())
    });
    let mut form = Params::default();
    if method == Method::Post {
        if req.body_length().is_some_and(|n| n > MAX_BODY) {
            return Err(HttpError::new(
                413,
                format!("request body too large (at most {MAX_BODY} bytes)"),
            ));
        }
        let mut body = Vec::new();
        req.as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| HttpError::bad(format!("cannot read the request body: {e}")))?;
        if body.len() > MAX_BODY {
            return Err(HttpError::new(
                413,
                format!("request body too large (at most {MAX_BODY} bytes)"),
            ));
        }
        form = Params::parse(&body)?;
    }
    Ok(Req {
        method,
        path,
        query,
        form,
        host,
        origin,
        referer,
        authorization,
        session,
    })
}

/// A response: status, type, body and extra headers.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Resp {
    pub fn html(status: u16, body: String) -> Resp {
        Resp {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }
    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }
    /// A 303 to a local path.
    pub fn see_other(location: &str) -> Resp {
        let mut r = Resp::text(303, "text/plain; charset=utf-8", "see other");
        r.headers.push(("Location", location.to_string()));
        r
    }

    /// As tiny_http sends it, with the headers every response carries.
    pub fn into_tiny(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let mut r = tiny_http::Response::from_data(self.body).with_status_code(self.status);
        let mut headers: Vec<(&str, String)> = vec![
            ("Content-Type", self.content_type.to_string()),
            // No script at all; styles and images only from this server.
            (
                "Content-Security-Policy",
                "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'"
                    .to_string(),
            ),
            ("X-Content-Type-Options", "nosniff".to_string()),
            ("X-Frame-Options", "DENY".to_string()),
            ("Referrer-Policy", "same-origin".to_string()),
            ("Cache-Control", "no-store".to_string()),
        ];
        headers.extend(self.headers);
        for (k, v) in headers {
            if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                r.add_header(h);
            }
        }
        r
    }
}

/// Equal strings, in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 128 random bits as hex, from the OS (std's hasher keys as a fallback where there is no
/// `/dev/urandom`).
pub(crate) fn random_hex() -> String {
    let mut buf = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !from_os {
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Logged-in browsers: session id to its CSRF value.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, (String, Instant)>>,
}

impl Sessions {
    /// A new session: its id (the cookie) and CSRF value.
    pub fn create(&self) -> (String, String) {
        let id = random_hex();
        let csrf = random_hex();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, at)| at.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), (csrf.clone(), Instant::now()));
        (id, csrf)
    }

    /// The CSRF value of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id)
            .filter(|(_, at)| at.elapsed() < SESSION_TTL)
            .map(|(c, _)| c.clone())
    }

    pub fn remove(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }
}

/// Whether `host` (a Host header) may be served: an IP literal, `localhost`, or one of the
/// allowed names. A DNS-rebinding page reaches the server under its own name, so it is
/// refused here.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8080
        return rest.split_once(']').is_some_and(|(ip, tail)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && (tail.is_empty() || tail.starts_with(':'))
        });
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Whether a browser's POST comes from a page of this server: its `Origin` (or, when a browser
/// sent none, its `Referer`) names the host the request was sent to, over `http` or (behind a
/// TLS proxy) `https`.
pub(crate) fn same_origin(req: &Req) -> bool {
    let Some(host) = &req.host else { return false };
    ["http", "https"].iter().any(|scheme| {
        let own = format!("{scheme}://{host}");
        match (&req.origin, &req.referer) {
            (Some(o), _) => o == &own,
            (None, Some(r)) => r == &own || r.starts_with(&format!("{own}/")),
            (None, None) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: Vec<String> = vec![];
        assert!(host_allowed("127.0.0.1:8080", &none));
        assert!(host_allowed("localhost:1", &none));
        assert!(host_allowed("[::1]:80", &none));
        assert!(!host_allowed("evil.example:8080", &none));
        assert!(!host_allowed("[evil]:8080", &none));
        assert!(host_allowed(
            "tend.internal:80",
            &["tend.internal".to_string()]
        ));
    }

    #[test]
    fn origins() {
        let req = |origin: Option<&str>, referer: Option<&str>| Req {
            method: Method::Post,
            path: "/".into(),
            query: Params::default(),
            form: Params::default(),
            host: Some("127.0.0.1:8080".into()),
            origin: origin.map(Into::into),
            referer: referer.map(Into::into),
            authorization: None,
            session: None,
        };
        assert!(same_origin(&req(Some("http://127.0.0.1:8080"), None)));
        assert!(same_origin(&req(Some("https://127.0.0.1:8080"), None)));
        assert!(same_origin(&req(None, Some("http://127.0.0.1:8080/tasks"))));
        assert!(!same_origin(&req(
            Some("http://127.0.0.1:8080.evil.example"),
            None
        )));
        assert!(!same_origin(&req(
            None,
            Some("http://127.0.0.1:8080.evil.example/")
        )));
        assert!(!same_origin(&req(
            Some("null"),
            Some("http://127.0.0.1:8080/")
        )));
        assert!(!same_origin(&req(None, None)));
    }

    #[test]
    fn params_are_bounded() {
        assert!(Params::parse("a=1&b=2".as_bytes()).is_ok());
        let many = "a=1&".repeat(MAX_PARAMS + 1);
        assert_eq!(Params::parse(many.as_bytes()).unwrap_err().status, 400);
        let long = format!("a={}", "x".repeat(MAX_VALUE + 1));
        assert_eq!(Params::parse(long.as_bytes()).unwrap_err().status, 400);
        let p = Params::parse(b"id=12&id=&x=%ZZ&n=99999999999999999999").unwrap();
        assert_eq!(p.num::<i64>("id").unwrap(), Some(12));
        assert!(p.num::<i64>("n").is_err());
        assert_eq!(p.get("x"), Some("%ZZ"));
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert_eq!(random_hex().len(), 32);
        assert_ne!(random_hex(), random_hex());
    }
}
