//! The operator queries (`tend tasks …`, `tend stats`): filters, key pagination, changes that
//! re-check their filter, unknown statuses only when named, and the counts.

use super::*;
use crate::admin::{Admin, Change, Filter, Page, Unknown};
use crate::status::TaskStatus;

fn by_status(v: &[TaskStatus]) -> Filter {
    Filter {
        statuses: v.to_vec(),
        ..Filter::default()
    }
}

pub(super) fn operator_queries_filter_page_and_count<D: Db>(db: &D)
where
    D::Conn: Admin,
{
    let mut conn = migrated(db);
    let pending = insert(&mut conn, &row(T0 - 5));
    let dead = insert(
        &mut conn,
        &NewRow {
            task_status: 4,
            ..row(PARKED)
        },
    );
    let shard7 = insert(
        &mut conn,
        &NewRow {
            shard_key: 7,
            ..row(T0 + WEEK)
        },
    );
    let other = insert(
        &mut conn,
        &NewRow {
            method_sign_name: "other.sig".into(),
            ..row(T0 - 9)
        },
    );
    let nine = insert(
        &mut conn,
        &NewRow {
            task_status: 9,
            ..row(T0 - 1)
        },
    );
    let minus = insert(
        &mut conn,
        &NewRow {
            task_status: -1,
            ..row(T0 - 1)
        },
    );
    let list = |conn: &mut D::Conn, f: &Filter, page: Page, limit: i64| -> Vec<i64> {
        Admin::list(conn, f, page, limit)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    let all = Filter::default();
    assert_eq!(
        list(&mut conn, &all, Page::AfterId(0), 100),
        [pending, dead, shard7, other, nine, minus]
    );
    // Key pagination: pages by id, stable.
    assert_eq!(list(&mut conn, &all, Page::AfterId(0), 2), [pending, dead]);
    assert_eq!(
        list(&mut conn, &all, Page::AfterId(dead), 2),
        [shard7, other]
    );
    assert_eq!(list(&mut conn, &all, Page::Offset(4), 10), [nine, minus]);
    let f = by_status(&[TaskStatus::Dead]);
    assert_eq!(list(&mut conn, &f, Page::AfterId(0), 10), [dead]);
    let f = Filter {
        unknown: Unknown::All,
        ..Filter::default()
    };
    assert_eq!(list(&mut conn, &f, Page::AfterId(0), 10), [nine, minus]);
    let f = Filter {
        unknown: Unknown::Values(vec![-1]),
        ..by_status(&[TaskStatus::Dead])
    };
    assert_eq!(list(&mut conn, &f, Page::AfterId(0), 10), [dead, minus]);
    let f = Filter {
        signature: Some("other.sig".into()),
        ..Filter::default()
    };
    assert_eq!(list(&mut conn, &f, Page::AfterId(0), 10), [other]);
    let f = Filter {
        shard_key: Some(7),
        ..Filter::default()
    };
    assert_eq!(Admin::count(&mut conn, &f).unwrap(), 1);
    let f = Filter {
        due_before: Some(T0),
        ..Filter::default()
    };
    assert_eq!(
        Admin::ids(&mut conn, &f, 10).unwrap(),
        [pending, other, nine, minus]
    );
    let f = Filter {
        due_after: Some(T0),
        ..Filter::default()
    };
    assert_eq!(
        Admin::ids(&mut conn, &f, 10).unwrap(),
        [shard7],
        "parked rows excluded"
    );

    let stats = Admin::stats(&mut conn, T0).unwrap();
    let counts: HashMap<i32, i64> = stats.by_status.iter().copied().collect();
    assert_eq!(counts[&0], 3);
    assert_eq!((counts[&4], counts[&9], counts[&-1]), (1, 1, 1));
    assert_eq!(
        stats.due_now, 2,
        "pending and other; unknown statuses are never due"
    );
    assert_eq!(stats.oldest_due.map(|o| o.id), Some(other));
    // A running row keeps its due time under its lease: due again only once the lease lapsed.
    let running = |lease: i64| NewRow {
        task_status: 1,
        execute_times: 1,
        lease_token: Some(5),
        lease_expires_at: Some(lease),
        ..row(T0 - WEEK)
    };
    insert(&mut conn, &running(T0 + 1));
    let lapsed = insert(&mut conn, &running(T0));
    let stats = Admin::stats(&mut conn, T0).unwrap();
    assert_eq!(
        stats.due_now, 3,
        "a lease that lapsed at T0 is due, one held past T0 is not"
    );
    assert_eq!(stats.oldest_due.map(|o| o.id), Some(lapsed));
}

pub(super) fn operator_changes_recheck_their_filter<D: Db>(db: &D)
where
    D::Conn: Admin,
{
    let mut conn = migrated(db);
    let dead = insert(
        &mut conn,
        &NewRow {
            task_status: 4,
            execute_times: 3,
            max_attempts: 3,
            ..row(PARKED)
        },
    );
    let held = insert(
        &mut conn,
        &NewRow {
            task_status: 5,
            execute_times: 1,
            ..row(PARKED)
        },
    );
    let pending = insert(&mut conn, &row(T0 - 5));
    let nine = insert(
        &mut conn,
        &NewRow {
            task_status: 9,
            ..row(T0 - 1)
        },
    );
    let bad_max = insert(
        &mut conn,
        &NewRow {
            task_status: 4,
            max_attempts: i32::MIN,
            execute_times: i32::MAX,
            ..row(PARKED)
        },
    );
    let retry = Change::Retry {
        reset_attempts: false,
        now: T0,
    };
    let eligible = retry.eligible(false);
    let f = Filter::default().restricted_to(&eligible);
    let mut batches = Vec::new();
    let n = Admin::apply(&mut conn, &retry, &f, 2, &mut |k| batches.push(k)).unwrap();
    assert_eq!(
        n, 3,
        "dead, held and the bad row; not pending, not status 9"
    );
    assert_eq!(batches.iter().sum::<usize>(), 3);
    let r = found(&mut conn, dead);
    assert_eq!((r.task_status, r.execute_times, r.execute_time), (2, 2, T0));
    assert_eq!(found(&mut conn, held).task_status, 2);
    // i32::MIN max_attempts: no `max_attempts - 1` overflow, attempts kept (the worker will
    // hold the row, naming max_attempts).
    let r = found(&mut conn, bad_max);
    assert_eq!((r.task_status, r.execute_times), (2, i32::MAX));
    assert_eq!(found(&mut conn, pending).execute_time, T0 - 5);
    assert_eq!(found(&mut conn, nine).task_status, 9);

    // Named, an unknown status is changed.
    let cancel = Change::Cancel {
        now: T0,
        message: "cancelled by an operator".into(),
    };
    let f = Filter {
        unknown: Unknown::All,
        ..Filter::default()
    }
    .restricted_to(&cancel.eligible(false));
    assert_eq!(
        Admin::apply(&mut conn, &cancel, &f, 10, &mut |_| {}).unwrap(),
        1
    );
    let r = found(&mut conn, nine);
    assert_eq!((r.task_status, r.execute_time), (4, PARKED));
    assert_eq!(r.error_msg, "cancelled by an operator");

    // A row claimed after the ids were chosen is left alone: the update re-checks the status.
    let leased = claim(&mut conn, T0, T0 + 30_000, 5, 1, None);
    assert_eq!(leased[0].id, pending);
    let f = Filter {
        id: Some(pending),
        ..Filter::default()
    }
    .restricted_to(&cancel.eligible(false));
    assert_eq!(
        Admin::apply(&mut conn, &cancel, &f, 10, &mut |_| {}).unwrap(),
        0
    );
    assert_eq!(found(&mut conn, pending).lease_token, Some(5));
    let f = Filter::default().restricted_to(&Change::Delete.eligible(false));
    let n = Admin::apply(&mut conn, &Change::Delete, &f, 10, &mut |_| {}).unwrap();
    assert_eq!(n, 4, "every row but the running one");
    assert_eq!(D::rows(&mut conn).len(), 1);
}
