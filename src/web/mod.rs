//! The web dashboard (feature `web`): an overview of the task table, a task list with filters
//! and key pagination, each task with its decoded payload, retry, cancel, delete and purge
//! with a confirmation, and Prometheus `/metrics`, on one or several databases.
//!
//! `tend web --database-url URL --listen 127.0.0.1:8080` serves it from the `tend` binary. An
//! application serves it with its own [`Registry`], so that payloads decode, either through
//! [`crate::cli::run`] (which has the `web` subcommand) or with [`serve`] / [`Server::start`]:
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # use tend::{Task, TaskContext, TaskError};
//! # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
//! # impl Task for Ship {
//! #     const SIGNATURE: &'static str = "orders.ship";
//! #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
//! # }
//! let mut registry = tend::Registry::new();
//! registry.register::<Ship>().expect("valid task type");
//! let metrics = tend::web::MetricsEvents::new(); // also give a clone to your WorkerPool's .events()
//! let opts = tend::web::Options::new(["postgres://app@db/app"])
//!     .listen("127.0.0.1:8080")
//!     .token(std::env::var("TEND_WEB_TOKEN").ok())
//!     .metrics(metrics);
//! tend::web::serve(registry, opts).expect("the dashboard runs");
//! ```
//!
//! # Safe by default
//!
//! * It binds 127.0.0.1 unless told otherwise, and answers only requests whose `Host` is an IP
//!   address, `localhost` or a name given with `--allow-host` (no DNS rebinding).
//! * Without a token it is read-only, and says so. With one, a browser logs in once with the
//!   token (an `HttpOnly`, `SameSite=Strict` session cookie), and every change is a POST that
//!   needs the session's CSRF value and an `Origin` (or `Referer`) of this server. Scripts may
//!   instead send `Authorization: Bearer TOKEN`. `--read-only` refuses changes even then.
//! * Every value from the database is HTML-escaped (maud escapes whatever it interpolates);
//!   pages run no script, and the Content-Security-Policy allows none.
//! * Database URLs are shown with their passwords masked, and error messages are scrubbed.
//! * Request targets, bodies and parameters are bounded; bad input gets a 4xx page. A guard
//!   in front of the HTTP server reads each request head within 16 KiB and 10 s (else `431` or
//!   `408`) and serves one request per connection, so no client can grow its memory or hold
//!   its threads.

mod guard;
pub(crate) mod handlers;
mod http;
mod metrics;
mod pages;
mod query;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use clap::Args;

use crate::admin::{Change, Filter, Page, Unknown};
use crate::cli::db::{self, Database};
use crate::cli::text::{fmt_time, parse_duration, parse_status, StatusArg};
use crate::registry::Registry;
use crate::status::TaskStatus;
use crate::util::now_ms;

use self::http::{HttpError, Method, Req, Resp, Sessions};
pub use self::metrics::MetricsEvents;

use self::handlers::*;
use self::pages::Ctx;
use self::query::WebDb;

/// Rows per statement for the dashboard's changes.
const BATCH: i64 = 1000;

/// `tend web`'s options.
#[derive(Debug, Clone, Args)]
pub struct WebArgs {
    /// Address to listen on. Give a non-loopback address only behind a trusted network.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Token that unlocks retry, cancel, delete and purge [default: $TEND_WEB_TOKEN]; without
    /// one the dashboard is read-only. Prefer the environment variable: arguments are visible
    /// to other users of the machine.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Refuse every change, even with a token.
    #[arg(long)]
    read_only: bool,
    /// A host name the dashboard may be reached by, besides IP addresses and localhost
    /// (repeat for several).
    #[arg(long, value_name = "NAME")]
    allow_host: Vec<String>,
    /// Threads serving requests (each with its own database connections).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

/// What [`serve`] and [`Server::start`] need: the databases, where to listen, and who may
/// change things.
#[derive(Debug, Clone)]
pub struct Options {
    database_urls: Vec<String>,
    listen: String,
    token: Option<String>,
    read_only: bool,
    allowed_hosts: Vec<String>,
    threads: usize,
    metrics: Option<MetricsEvents>,
}

impl Options {
    /// The databases to show (one per shard), in tend CLI URL syntax; read-only, listening on
    /// 127.0.0.1:8080 with 2 threads.
    pub fn new<I, S>(database_urls: I) -> Options
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Options {
            database_urls: database_urls.into_iter().map(Into::into).collect(),
            listen: "127.0.0.1:8080".to_string(),
            token: None,
            read_only: false,
            allowed_hosts: Vec::new(),
            threads: 2,
            metrics: None,
        }
    }

    /// The address to listen on (`127.0.0.1:0` picks a free port).
    pub fn listen(mut self, addr: impl Into<String>) -> Options {
        self.listen = addr.into();
        self
    }

    /// The token that unlocks changes; `None` (or an empty string) keeps the dashboard
    /// read-only.
    pub fn token(mut self, token: Option<String>) -> Options {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Refuse every change, even with a token.
    pub fn read_only(mut self, yes: bool) -> Options {
        self.read_only = yes;
        self
    }

    /// A host name the dashboard may be reached by, besides IP addresses and `localhost`.
    pub fn allow_host(mut self, name: impl Into<String>) -> Options {
        self.allowed_hosts.push(name.into());
        self
    }

    /// Threads serving requests (at least 1).
    pub fn threads(mut self, n: usize) -> Options {
        self.threads = n.max(1);
        self
    }

    /// Counters from this process's pools, shown on the overview and in `/metrics`.
    pub fn metrics(mut self, metrics: MetricsEvents) -> Options {
        self.metrics = Some(metrics);
        self
    }
}

/// What every request handler shares.
struct State {
    registry: Registry,
    dbs: Vec<Database>,
    secrets: Vec<String>,
    token: Option<String>,
    read_only: bool,
    allowed_hosts: Vec<String>,
    metrics: Option<MetricsEvents>,
    sessions: Sessions,
}

impl State {
    /// Why changes are refused, or `None` when they are allowed.
    fn locked(&self) -> Option<&'static str> {
        if self.read_only {
            Some("read-only (--read-only)")
        } else if self.token.is_none() {
            Some("read-only: no token (start it with --token or TEND_WEB_TOKEN to allow changes)")
        } else {
            None
        }
    }
}

/// A running dashboard.
pub struct Server {
    addr: SocketAddr,
    guard: guard::Guard,
    http: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Checks every database (reachable, migrated), binds, and serves on background threads.
    ///
    /// # Errors
    /// A bad URL, an unreachable or unmigrated database, or an address that cannot be bound;
    /// passwords are masked in the message.
    pub fn start(registry: Registry, opts: Options) -> io::Result<Server> {
        let secrets: Vec<String> = opts
            .database_urls
            .iter()
            .flat_map(|u| db::mask(u).1)
            .collect();
        let fail = |msg: String| io::Error::other(db::scrub(&msg, &secrets));
        if opts.database_urls.is_empty() {
            return Err(fail("no database given".to_string()));
        }
        let mut dbs = Vec::new();
        for url in &opts.database_urls {
            let d = Database::parse(url).map_err(&fail)?;
            let mut conn = query::connect(&d).map_err(&fail)?;
            conn.check_schema().map_err(|e| {
                let hint = if e.is_not_migrated() {
                    format!("; run `tend migrate --database-url {}`", d.shown)
                } else {
                    String::new()
                };
                fail(format!("{}: {e}{hint}", d.shown))
            })?;
            dbs.push(d);
        }
        // tiny_http serves on a private Unix socket; the guard in front bounds request heads.
        let (dir, sock) = guard::socket_path().map_err(|e| {
            fail(format!(
                "cannot create the dashboard's socket directory: {e}"
            ))
        })?;
        let http = tiny_http::Server::http_unix(&sock).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            fail(format!("cannot listen on {}: {e}", sock.display()))
        })?;
        let guard = guard::Guard::start(opts.listen.as_str(), sock, dir)
            .map_err(|e| fail(format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = guard.addr();
        let http = Arc::new(http);
        let state = Arc::new(State {
            registry,
            dbs,
            secrets,
            token: opts.token,
            read_only: opts.read_only,
            allowed_hosts: opts.allowed_hosts,
            metrics: opts.metrics,
            sessions: Sessions::default(),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..opts.threads {
            let (http, state, stopping) = (http.clone(), state.clone(), stopping.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tend-web-{i}"))
                    .spawn(move || worker(&http, &state, &stopping))?,
            );
        }
        Ok(Server {
            addr,
            guard,
            http,
            stopping,
            threads,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the threads (a request in progress finishes first).
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Serves until the process ends.
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn stop(&mut self) {
        self.guard.stop();
        self.stopping.store(true, Ordering::SeqCst);
        for _ in 0..self.threads.len() {
            self.http.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves the dashboard until the process ends.
///
/// # Errors
/// As [`Server::start`].
pub fn serve(registry: Registry, opts: Options) -> io::Result<()> {
    let server = Server::start(registry, opts)?;
    log::info!("tend web: listening on http://{}", server.addr());
    server.join();
    Ok(())
}

/// `tend web`: starts, says where it listens, serves until killed.
pub(crate) fn run_cli(
    args: WebArgs,
    urls: &[String],
    registry: Registry,
    err: &mut dyn Write,
) -> Result<(), String> {
    let token = args
        .token
        .or_else(|| std::env::var("TEND_WEB_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let writable = token.is_some() && !args.read_only;
    let opts = Options {
        database_urls: urls.to_vec(),
        listen: args.listen,
        token,
        read_only: args.read_only,
        allowed_hosts: args.allow_host,
        threads: usize::from(args.threads),
        metrics: None,
    };
    let server = Server::start(registry, opts).map_err(|e| e.to_string())?;
    if writable && !server.addr().ip().is_loopback() {
        let _ = writeln!(
            err,
            "tend web: warning: listening on {} over plain HTTP: the token and the session \
             cookie cross the network unencrypted; put a TLS proxy in front, or listen on \
             127.0.0.1",
            server.addr()
        );
    }
    let _ = writeln!(
        err,
        "tend web: listening on http://{} ({})",
        server.addr(),
        if writable {
            "changes need the token"
        } else {
            "read-only"
        }
    );
    let _ = err.flush();
    server.join();
    Ok(())
}

/// One connection per database, opened on first use and again after an error.
struct Conns {
    open: Vec<Option<Box<dyn WebDb>>>,
}

fn worker(http: &tiny_http::Server, state: &State, stopping: &AtomicBool) {
    let mut conns = Conns {
        open: state.dbs.iter().map(|_| None).collect(),
    };
    loop {
        let mut rq = match http.recv() {
            Ok(rq) => rq,
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                log::warn!("tend web: cannot accept a request: {e}");
                continue;
            }
        };
        if stopping.load(Ordering::SeqCst) {
            let _ = rq.respond(Resp::text(503, "text/plain", "shutting down").into_tiny());
            return;
        }
        let resp = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            respond(state, &mut conns, &mut rq)
        })) {
            Ok(r) => r,
            Err(_) => {
                conns.open.iter_mut().for_each(|c| *c = None);
                Resp::html(
                    500,
                    pages::error_page(&Ctx::anonymous(state), 500, "internal error (see the log)"),
                )
            }
        };
        let _ = rq.respond(resp.into_tiny());
    }
}

/// The response to one request: a page, or an error page.
fn respond(state: &State, conns: &mut Conns, rq: &mut tiny_http::Request) -> Resp {
    let req = match http::read(rq) {
        Ok(r) => r,
        Err(e) => return error_resp(&Ctx::anonymous(state), e),
    };
    let ctx = Ctx::of(state, &req);
    match route(state, conns, &req, &ctx) {
        Ok(r) => r,
        Err(e) => error_resp(&ctx, e),
    }
}

fn error_resp(ctx: &Ctx, e: HttpError) -> Resp {
    let mut r = Resp::html(e.status, pages::error_page(ctx, e.status, &e.msg));
    if e.status == 405 {
        r.headers.push(("Allow", "GET, HEAD, POST".to_string()));
    }
    r
}

fn route(state: &State, conns: &mut Conns, req: &Req, ctx: &Ctx) -> Result<Resp, HttpError> {
    if !req
        .host
        .as_deref()
        .is_some_and(|h| http::host_allowed(h, &state.allowed_hosts))
    {
        return Err(HttpError::new(
            421,
            "unknown Host: the dashboard answers to IP addresses, localhost and --allow-host names",
        ));
    }
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method, segs.as_slice()) {
        (Method::Other, _) => Err(HttpError::new(405, "method not allowed")),
        (Method::Get, []) => overview(state, conns, ctx),
        (Method::Get, ["static", "style.css"]) => Ok(Resp::text(
            200,
            "text/css; charset=utf-8",
            include_str!("style.css"),
        )),
        (Method::Get, ["metrics"]) => Ok(Resp::text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(state, conns),
        )),
        (Method::Get, ["tasks"]) => list(state, conns, req, ctx),
        (Method::Get, ["tasks", id]) => detail(state, conns, req, ctx, parse_id(id)?),
        (Method::Get, ["tasks", id, action]) => {
            confirm(state, conns, req, ctx, parse_id(id)?, action_of(action)?)
        }
        (Method::Post, ["tasks", id, action]) => {
            let (id, action) = (parse_id(id)?, action_of(action)?);
            authorize(state, req)?;
            change(state, conns, req, id, action)
        }
        (Method::Get, ["bulk", action]) => bulk_page(state, conns, req, ctx, action_of(action)?),
        (Method::Post, ["bulk", action]) => {
            let action = action_of(action)?;
            authorize(state, req)?;
            bulk(state, conns, req, action)
        }
        (Method::Get, ["keys", "skip"]) => key_skip_page(state, conns, req, ctx),
        (Method::Post, ["keys", "skip"]) => {
            authorize(state, req)?;
            key_skip(state, conns, req)
        }
        (Method::Get, ["purge"]) => purge_page(state, conns, req, ctx),
        (Method::Post, ["purge"]) => {
            authorize(state, req)?;
            purge(state, conns, req)
        }
        (Method::Get, ["login"]) => Ok(Resp::html(200, pages::login(ctx, next_of(req), None))),
        (Method::Post, ["login"]) => login(state, req, ctx),
        (Method::Post, ["logout"]) => {
            authorize(state, req)?;
            if let Some(s) = &req.session {
                state.sessions.remove(s);
            }
            let mut r = Resp::see_other("/");
            r.headers.push((
                "Set-Cookie",
                format!(
                    "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
                    http::COOKIE
                ),
            ));
            Ok(r)
        }
        (Method::Post, _) => Err(HttpError::new(405, "nothing to post to here")),
        _ => Err(HttpError::new(404, "no such page")),
    }
}

fn parse_id(s: &str) -> Result<i64, HttpError> {
    s.parse()
        .map_err(|_| HttpError::new(404, "no such page: a task id is a whole number"))
}

/// What a task page's button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Retry,
    Cancel,
    Delete,
}

impl Action {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Cancel => "cancel",
            Action::Delete => "delete",
        }
    }
    fn change(self, now: i64) -> Change {
        match self {
            Action::Retry => Change::Retry {
                reset_attempts: false,
                now,
            },
            Action::Cancel => Change::Cancel {
                now,
                message: format!("cancelled by an operator at {} (tend web)", fmt_time(now)),
            },
            Action::Delete => Change::Delete,
        }
    }
}

fn action_of(s: &str) -> Result<Action, HttpError> {
    match s {
        "retry" => Ok(Action::Retry),
        "cancel" => Ok(Action::Cancel),
        "delete" => Ok(Action::Delete),
        _ => Err(HttpError::new(
            404,
            "no such action: retry, cancel or delete",
        )),
    }
}

/// The `next` parameter if it is a path on this server (never another site).
fn next_of(req: &Req) -> String {
    let next = req
        .form
        .get("next")
        .or(req.query.get("next"))
        .unwrap_or("/");
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if local { next } else { "/" }.to_string()
}

/// Whether a POST may change something: changes allowed, the same origin, and the token
/// (a Bearer header, or the session of a browser that logged in with it plus its CSRF value).
fn authorize(state: &State, req: &Req) -> Result<(), HttpError> {
    if let Some(why) = state.locked() {
        return Err(HttpError::new(403, format!("{why}; nothing was changed")));
    }
    let token = state.token.as_deref().unwrap_or_default();
    if let Some(auth) = &req.authorization {
        let given = auth.strip_prefix("Bearer ").unwrap_or_default();
        return if http::same_secret(given, token) {
            Ok(())
        } else {
            Err(HttpError::new(401, "wrong token; nothing was changed"))
        };
    }
    if !http::same_origin(req) {
        return Err(HttpError::new(
            403,
            "cross-site request refused: the Origin (or Referer) is not this server; nothing \
             was changed",
        ));
    }
    let csrf = req
        .session
        .as_deref()
        .and_then(|s| state.sessions.csrf(s))
        .ok_or_else(|| HttpError::new(401, "log in with the token first; nothing was changed"))?;
    let given = req.form.get("csrf").unwrap_or_default();
    if !http::same_secret(given, &csrf) {
        return Err(HttpError::new(
            403,
            "the form's CSRF value is missing or stale (reload the page); nothing was changed",
        ));
    }
    Ok(())
}

fn login(state: &State, req: &Req, ctx: &Ctx) -> Result<Resp, HttpError> {
    if let Some(why) = state.locked() {
        return Err(HttpError::new(403, why));
    }
    if !http::same_origin(req) {
        return Err(HttpError::new(403, "cross-site request refused"));
    }
    let given = req.form.get("token").unwrap_or_default();
    if !http::same_secret(given, state.token.as_deref().unwrap_or_default()) {
        return Ok(Resp::html(
            401,
            pages::login(ctx, next_of(req), Some("wrong token")),
        ));
    }
    let (session, _) = state.sessions.create();
    let mut r = Resp::see_other(&next_of(req));
    r.headers.push((
        "Set-Cookie",
        format!(
            "{}={session}; Path=/; HttpOnly; SameSite=Strict",
            http::COOKIE
        ),
    ));
    Ok(r)
}

/// The database a request names (`db`, an index into the --database-url list; 0 by default).
fn db_of(state: &State, p: &http::Params) -> Result<usize, HttpError> {
    let i = p.num::<usize>("db")?.unwrap_or(0);
    if i >= state.dbs.len() {
        return Err(HttpError::bad(format!(
            "no database {i}: there {} {} (0-based)",
            if state.dbs.len() == 1 { "is" } else { "are" },
            state.dbs.len()
        )));
    }
    Ok(i)
}

impl Conns {
    /// Runs `f` on database `i`'s connection; an error drops the connection (the next request
    /// reconnects) and becomes a 503 with passwords scrubbed.
    fn run<R>(
        &mut self,
        state: &State,
        i: usize,
        f: impl FnOnce(&mut dyn WebDb) -> diesel::QueryResult<R>,
    ) -> Result<R, HttpError> {
        let d = &state.dbs[i];
        let unavailable = |msg: String| HttpError::new(503, db::scrub(&msg, &state.secrets));
        if self.open[i].is_none() {
            self.open[i] = Some(query::connect(d).map_err(unavailable)?);
        }
        let conn = self.open[i].as_mut().expect("opened above");
        f(conn.as_mut()).map_err(|e| {
            self.open[i] = None;
            unavailable(format!("{}: database error: {e}", d.shown))
        })
    }
}
