//! Payload decoding: a stored `task_parameter` of arbitrary bytes, run the way a worker runs it,
//! through the public API (as `tests/fuzz/` does): a task is enqueued into an in-memory SQLite
//! database migrated with `tend::migrate`, its payload is overwritten by SQL (as a corrupt row
//! or another deployment's row would be), and `tend::testing::TestWorker` runs it.
//!
//! Input: one byte choosing the task type, then the payload.
//!
//! Invariants: no panic; the outcome is exactly "the handler ran once and the row is gone" when
//! bincode (tend's configuration: standard, 4 MiB limit, whole input consumed) decodes the bytes,
//! and "held (status 5) with a `does not decode` message, handler not run" otherwise.
#![no_main]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Binary, Integer, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tend::testing::TestWorker;
use tend::{Task, TaskContext, TaskError};

thread_local! {
    static RAN: Cell<usize> = const { Cell::new(0) };
    static BENCH: RefCell<Option<(SqliteConnection, TestWorker)>> = const { RefCell::new(None) };
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: i64,
    name: String,
    tags: Vec<u32>,
    flag: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Shape {
    Unit,
    Pair(u8, i16),
    Named { text: String, bytes: Vec<u8> },
    Nested(Box<Option<Shape>>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Numbers(u64, i32, f64, char, u128, i8);

#[derive(Debug, Serialize, Deserialize)]
struct Maps {
    by_name: BTreeMap<String, Vec<Option<i16>>>,
    pairs: Vec<(u16, String)>,
    unit: (),
}

macro_rules! fuzz_task {
    ($t:ty, $sig:literal) => {
        impl Task for $t {
            const SIGNATURE: &'static str = $sig;
            fn execute(&self, _: &TaskContext) -> Result<(), TaskError> {
                let _ = format!("{self:?}");
                RAN.with(|r| r.set(r.get() + 1));
                Ok(())
            }
        }
    };
}
fuzz_task!(Record, "fuzz.record");
fuzz_task!(Shape, "fuzz.shape");
fuzz_task!(Numbers, "fuzz.numbers");
fuzz_task!(Maps, "fuzz.maps");

const SIGNATURES: [&str; 4] = ["fuzz.record", "fuzz.shape", "fuzz.numbers", "fuzz.maps"];

fn bench() -> (SqliteConnection, TestWorker) {
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    tend::migrate(&mut conn).unwrap();
    let mut registry = tend::Registry::new();
    registry.register::<Record>().unwrap();
    registry.register::<Shape>().unwrap();
    registry.register::<Numbers>().unwrap();
    registry.register::<Maps>().unwrap();
    (conn, TestWorker::new(registry))
}

/// Whether tend's decoding contract accepts `bytes` as a `T`.
fn decodes<T: DeserializeOwned>(bytes: &[u8]) -> bool {
    let config = bincode::config::standard().with_limit::<{ tend::MAX_PAYLOAD_BYTES }>();
    matches!(
        bincode::serde::decode_from_slice::<T, _>(bytes, config),
        Ok((_, n)) if n == bytes.len()
    )
}

#[derive(QueryableByName)]
struct Left {
    #[diesel(sql_type = Integer)]
    task_status: i32,
    #[diesel(sql_type = Text)]
    error_msg: String,
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let kind = usize::from(kind) % SIGNATURES.len();
    let expect_ran = match kind {
        0 => decodes::<Record>(payload),
        1 => decodes::<Shape>(payload),
        2 => decodes::<Numbers>(payload),
        _ => decodes::<Maps>(payload),
    };
    BENCH.with(|b| {
        let mut b = b.borrow_mut();
        let (conn, worker) = b.get_or_insert_with(bench);
        conn.batch_execute("DELETE FROM consistency_task").unwrap();
        let now = worker.now_ms();
        diesel::sql_query(
            "INSERT INTO consistency_task (task_id, execute_time, method_sign_name, \
             task_parameter, gmt_create, gmt_modified) VALUES ('t', ?, ?, ?, ?, ?)",
        )
        .bind::<BigInt, _>(now)
        .bind::<Text, _>(SIGNATURES[kind])
        .bind::<Binary, _>(payload)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(now)
        .execute(conn)
        .unwrap();
        RAN.with(|r| r.set(0));
        let drained = worker.drain(conn).unwrap();
        let ran = RAN.with(|r| r.get());
        let left: Vec<Left> =
            diesel::sql_query("SELECT task_status, error_msg FROM consistency_task")
                .load(conn)
                .unwrap();
        assert_eq!(drained.failed + drained.dead, 0, "{drained:?}");
        if expect_ran {
            assert_eq!(
                (drained.succeeded, ran, left.len()),
                (1, 1, 0),
                "{drained:?}"
            );
        } else {
            assert_eq!((drained.held, ran, left.len()), (1, 0, 1), "{drained:?}");
            assert_eq!(left[0].task_status, 5);
            assert!(
                left[0].error_msg.contains("does not decode"),
                "{}",
                left[0].error_msg
            );
        }
    });
});
