//! The attacks a dashboard must refuse.

use super::*;

// ---------------------------------------------------------------------------------------------
// The attacks a dashboard must refuse
/// Changes need the token, the same origin and the session's CSRF value; each attack leaves
/// the row as it was.
pub(crate) fn attacks(db: &Db) {
    let s = seed(db);
    let read_only = start(db, None);
    let a = read_only.addr();
    post(a, &format!("/tasks/{}/retry", s.dead_old))
        .same_origin()
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(403)
        .has("read-only");
    post(a, "/login")
        .same_origin()
        .form(&[("token", TOKEN)])
        .send()
        .expect(403);
    read_only.shutdown();
    assert_eq!(status_of(db, s.dead_old), "dead");

    let server = start(db, Some(TOKEN));
    let a = server.addr();
    let retry = format!("/tasks/{}/retry", s.dead_old);
    // No token at all (a plain form post from anywhere).
    post(a, &retry).form(&[("db", "0")]).send().expect(403);
    post(a, &retry)
        .same_origin()
        .form(&[("db", "0")])
        .send()
        .expect(401);
    // A wrong token, as a header or at the login.
    post(a, &retry)
        .bearer("guess")
        .form(&[("db", "0")])
        .send()
        .expect(401);
    post(a, &retry)
        .header("Authorization", "Basic Z3Vlc3M=")
        .send()
        .expect(401);
    post(a, "/login")
        .same_origin()
        .form(&[("token", "guess")])
        .send()
        .expect(401)
        .has("wrong token");
    // A cross-site login (login CSRF).
    post(a, "/login")
        .header("Origin", "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .expect(403);
    let session = login(a, TOKEN);
    let token = csrf(a, &retry, &session);
    // Forged cross-site POSTs with the victim's cookie: a foreign Origin, a foreign Referer,
    // neither; then a missing and a wrong CSRF value from the right origin.
    post(a, &retry)
        .cookie(&session)
        .header("Origin", "http://evil.example")
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403)
        .has("cross-site");
    post(a, &retry)
        .cookie(&session)
        .header("Origin", "null")
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie(&session)
        .header("Referer", "http://evil.example/x")
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie(&session)
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0")])
        .send()
        .expect(403)
        .has("CSRF");
    post(a, &retry)
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0"), ("csrf", "0123456789abcdef0123456789abcdef")])
        .send()
        .expect(403);
    post(a, &retry)
        .cookie("forged-session")
        .same_origin()
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(401);
    // A page under a name that is not ours (DNS rebinding) is refused, even for reading.
    get(a, "/")
        .header("Host", "evil.example:8080")
        .send()
        .expect(421);
    post(a, &retry)
        .header("Host", "evil.example")
        .header("Origin", "http://evil.example")
        .bearer(TOKEN)
        .send()
        .expect(421);
    // A GET never changes anything.
    get(a, &format!("{retry}?db=0&csrf={token}"))
        .cookie(&session)
        .send()
        .expect(200);
    assert_eq!(
        status_of(db, s.dead_old),
        "dead",
        "no attack changed the row"
    );

    // Oversized and malformed input: clear 4xx pages, never a crash.
    let long = format!("/tasks?signature={}", "x".repeat(5000));
    get(a, &long).send().expect(414);
    post(a, &retry)
        .bearer(TOKEN)
        .body(format!("db=0&pad={}", "x".repeat(20_000)))
        .send()
        .expect(413);
    let many: Vec<String> = (0..100).map(|i| format!("p{i}=1")).collect();
    get(a, &format!("/tasks?{}", many.join("&")))
        .send()
        .expect(400);
    get(a, &format!("/tasks?error={}", "e".repeat(2000)))
        .send()
        .expect(400);
    for (path, status) in [
        ("/tasks?limit=abc", 400),
        ("/tasks?limit=0", 400),
        ("/tasks?limit=100000", 400),
        ("/tasks?status=bogus", 400),
        ("/tasks?shard_key=1e9", 400),
        ("/tasks?after_id=--1", 400),
        ("/tasks?db=7", 400),
        ("/tasks?db=-1", 400),
        ("/tasks?status=%FF%FE", 400),
        ("/tasks/99999999999999999999999", 404),
        ("/tasks/abc", 404),
        ("/tasks/1/explode", 404),
        ("/tasks/987654321", 404),
        ("/purge?older_than=forever", 400),
        ("/nope", 404),
        // Path traversal: nothing is served from the file system.
        ("/static/../../../../etc/passwd", 404),
        ("/static/..%2F..%2FCargo.toml", 404),
        ("/static/%2e%2e/%2e%2e/etc/passwd", 404),
        ("/..%2f..%2fetc%2fpasswd", 404),
    ] {
        let r = get(a, path).send();
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(!r.body.contains("root:"), "{path} leaked a file");
        assert!(r.body.contains("<h1>"), "{path} answers with an error page");
    }
    post(a, &format!("/tasks/{}/retry", s.dead_old))
        .bearer(TOKEN)
        .form(&[("db", "x")])
        .send()
        .expect(400);
    post(a, "/purge")
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(400);
    post(a, "/purge")
        .bearer(TOKEN)
        .form(&[("older_than", "1d"), ("status", "pending")])
        .send()
        .expect(400);
    let put = raw(
        a,
        format!("PUT /tasks/1/retry HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(put.status, 405);
    let garbage = raw(a, b"\x16\x03\x01garbage\r\n\r\n");
    assert!((400..500).contains(&garbage.status), "{garbage:?}");
    let no_host = raw(a, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!((400..500).contains(&no_host.status), "{no_host:?}");
    // An endless header line, and very many headers: answered 431 once the head passes
    // 16 KiB, without reading (or holding) the rest.
    let endless = format!(
        "GET / HTTP/1.1\r\nHost: {a}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(8 << 20)
    );
    assert_eq!(raw(a, endless.as_bytes()).status, 431);
    let many: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: {a}\r\n{many}\r\n");
    assert_eq!(raw(a, many.as_bytes()).status, 431);
    // A client that sends half a head and stalls gets 408 and loses the connection (in
    // 10 s); meanwhile the dashboard serves others.
    let mut slow = std::net::TcpStream::connect(a).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: ").unwrap();
    get(a, "/").send().expect(200);
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // Keep-alive asked for is not granted: one request per connection, so each passes the
    // guard. The server closes after its answer (a kept connection would time this out).
    let mut kept = std::net::TcpStream::connect(a).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    kept.write_all(
        format!("GET / HTTP/1.1\r\nHost: {a}\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    kept.read_to_string(&mut answer)
        .expect("the server closes the connection");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(status_of(db, s.dead_old), "dead");
    // The server still answers after all that.
    get(a, "/").send().expect(200);

    // The real thing: a logged-in browser form, and a script's Bearer token.
    post(a, &retry)
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(303);
    assert_eq!(status_of(db, s.dead_old), "failed");
    // Same rules as the CLI: retry applies to failed, dead and held tasks only...
    post(a, &format!("/tasks/{}/retry", s.pending))
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(409);
    // ...and running tasks are cancelled or deleted only when forced.
    let cancel_running = format!("/tasks/{}/cancel", s.running);
    post(a, &cancel_running)
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(409)
        .has("running");
    assert_eq!(status_of(db, s.running), "running");
    post(a, &cancel_running)
        .bearer(TOKEN)
        .form(&[("db", "0"), ("force", "1")])
        .send()
        .expect(303);
    assert_eq!(status_of(db, s.running), "dead");
    post(a, &format!("/tasks/{}/retry", s.held))
        .bearer(TOKEN)
        .form(&[("db", "0"), ("reset_attempts", "1")])
        .send()
        .expect(303);
    let row = db.row(s.held).unwrap();
    assert_eq!(
        (row["status"].as_str(), row["execute_times"].as_i64()),
        (Some("pending"), Some(0))
    );
    post(a, &format!("/tasks/{}/delete", s.pending))
        .bearer(TOKEN)
        .form(&[("db", "0")])
        .send()
        .expect(303);
    assert!(db.row(s.pending).is_none());
    // Purge: dead and succeeded rows older than 7 days (dead_old was retried above).
    let r = post(a, "/purge")
        .bearer(TOKEN)
        .form(&[("db", "0"), ("older_than", "7d")])
        .send()
        .expect(303);
    assert_eq!(r.header("Location"), Some("/purge?db=0&purged=1"));
    assert!(db.row(s.done_old).is_none());
    assert!(db.row(s.dead_new).is_some(), "a recent dead task stays");
    // Bulk actions: the list's filter, the CLI's rules, a confirmation with the count.
    get(a, "/bulk/retry?db=0")
        .send()
        .expect(400)
        .has("needs a filter");
    get(a, "/bulk/retry?db=0&status=pending")
        .send()
        .expect(409)
        .has("not pending");
    get(a, "/bulk/retry?db=0&status=dead")
        .send()
        .expect(200)
        .has("retry 2 tasks?");
    let bulk = [("db", "0"), ("status", "dead")];
    post(a, "/bulk/retry")
        .cookie(&session)
        .header("Origin", "http://evil.example")
        .form(&[("db", "0"), ("status", "dead"), ("csrf", &token)])
        .send()
        .expect(403);
    post(a, "/bulk/retry").form(&bulk).send().expect(403);
    assert_eq!(status_of(db, s.dead_new), "dead");
    let r = post(a, "/bulk/retry")
        .bearer(TOKEN)
        .form(&bulk)
        .send()
        .expect(303);
    assert_eq!(
        r.header("Location"),
        Some("/tasks?db=0&status=dead&changed=2")
    );
    assert_eq!(status_of(db, s.dead_new), "failed");
    assert_eq!(status_of(db, s.running), "failed");
    let r = post(a, "/bulk/cancel")
        .bearer(TOKEN)
        .form(&[("db", "0"), ("signature", "payments.refund")])
        .send()
        .expect(303);
    assert!(r.header("Location").unwrap().ends_with("changed=1"));
    assert_eq!(status_of(db, s.running), "dead");
    // Logging out ends the session.
    post(a, "/logout")
        .cookie(&session)
        .same_origin()
        .form(&[("csrf", &token)])
        .send()
        .expect(303);
    post(a, &format!("/tasks/{}/cancel", s.failed))
        .cookie(&session)
        .same_origin()
        .form(&[("db", "0"), ("csrf", &token)])
        .send()
        .expect(401);
    server.shutdown();
}
