//! Issue 11, threads and shutdown: no pool thread dies of a panic, shutdown is bounded on every
//! backend (also with a connection that hangs), and the MariaDB shutdown hang's root cause.
//!
//! Run: `TEND_PG_URL=postgres://postgres@127.0.0.1:5432/test
//! TEND_MYSQL_URL=mysql://root@127.0.0.1:3306/test TEND_REQUIRE_DBS=1
//! cargo test --all-features --test threads -- --nocapture`.

// This commit uses only part of it.
#[allow(unused_macros, unused_imports)]
mod common;

#[allow(unused_imports)]
use std::sync::mpsc;
#[allow(unused_imports)]
use std::thread;
#[allow(unused_imports)]
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use diesel::connection::SimpleConnection;
#[allow(unused_imports)]
use diesel::prelude::*;

#[allow(unused_imports)]
use common::TestDb;

/// The root cause of the MariaDB shutdown hang, at the driver level: a cached prepared
/// statement whose result read failed (the server sent an error packet in place of a row) is
/// left by MariaDB Connector/C in a state where its next `mysql_stmt_execute` first "flushes"
/// an unbuffered result that does not exist, i.e. waits on the socket for packets the server
/// will never send (`poll(timeout = -1)`). Dropping the statement (diesel's statement cache
/// reset) avoids it; this test proves that the reset tend does after an error is enough.
#[cfg(feature = "mysql")]
#[test]
fn mysql_a_cached_statement_whose_read_failed_runs_again_after_the_cache_reset() {
    use diesel::connection::CacheSize;
    let Some(db) = TestDb::<diesel::MysqlConnection>::fresh() else {
        return;
    };
    db.exec("INSERT INTO tend_test_orders (id, note) VALUES (1, 'a'), (2, 'b')");
    let reset = std::env::var("TEND_SKIP_CACHE_RESET").is_err();
    let mut holder = db.connect();
    let mut victim = db.connect();
    victim
        .batch_execute("SET SESSION innodb_lock_wait_timeout = 1")
        .unwrap();
    // The holder locks row 2; the victim's cached `SELECT … FOR UPDATE` reads row 1, sends it,
    // then times out on row 2: the error arrives while the client stores the result.
    holder
        .batch_execute("BEGIN; SELECT * FROM tend_test_orders WHERE id = 2 FOR UPDATE")
        .unwrap();
    let query = || {
        common::tend_test_orders::table
            .select(common::tend_test_orders::id)
            .order(common::tend_test_orders::id)
            .for_update()
    };
    let err = victim
        .transaction(|c| query().load::<i64>(c))
        .expect_err("the lock wait times out");
    eprintln!("THREADS mysql cached statement failed mid-result: {err}");
    holder.batch_execute("ROLLBACK").unwrap();
    if reset {
        victim.set_prepared_statement_cache_size(CacheSize::Disabled);
        victim.set_prepared_statement_cache_size(CacheSize::Unbounded);
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = victim.transaction(|c| query().load::<i64>(c));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let started = Instant::now();
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => {
            eprintln!(
                "THREADS mysql same statement again (cache reset {reset}): {r:?} in {:?}",
                started.elapsed()
            );
            assert_eq!(r.unwrap(), vec![1, 2]);
        }
        Err(_) => panic!(
            "the cached statement hung on its next execution (cache reset {reset}): \
             pid {} — attach gdb now",
            std::process::id()
        ),
    }
}
