//! The node registry (`tend_node`), which shard affinity uses: slots are taken once, kept by
//! heartbeats, taken over when stale, and given back only by their owner.

use super::*;

pub(super) fn node_slots_are_taken_once_and_taken_over_when_stale<D: Db>(db: &D) {
    let mut conn = migrated(db);
    let minute = 60_000;
    assert!(conn.node_live(0).unwrap().is_empty());
    // A free slot is taken; a live one is not.
    assert!(conn.node_claim(3, "a", T0, T0 - minute).unwrap());
    assert!(!conn.node_claim(3, "b", T0 + 1, T0 + 1 - minute).unwrap());
    assert!(conn.node_claim(1023, "b", T0, T0 - minute).unwrap());
    assert_eq!(conn.node_live(T0).unwrap(), [3, 1023]);
    // Heartbeats keep a slot; only its owner's count.
    assert!(conn.node_heartbeat(3, "a", T0 + minute).unwrap());
    assert!(!conn.node_heartbeat(3, "b", T0 + minute).unwrap());
    assert_eq!(conn.node_live(T0 + minute).unwrap(), [3]);
    // A slot whose heartbeat is older than `stale_before` is taken over...
    assert!(conn
        .node_claim(1023, "c", T0 + 2 * minute, T0 + minute)
        .unwrap());
    // ...and its former owner learns it at its next heartbeat.
    assert!(!conn.node_heartbeat(1023, "b", T0 + 2 * minute).unwrap());
    assert!(conn.node_heartbeat(1023, "c", T0 + 2 * minute).unwrap());
    // Leaving gives back only one's own slot.
    assert_eq!(conn.node_leave(3, "b").unwrap(), 0);
    assert_eq!(conn.node_leave(3, "a").unwrap(), 1);
    assert_eq!(conn.node_live(0).unwrap(), [1023]);
    assert!(conn
        .node_claim(3, "d", T0 + 3 * minute, T0 + 2 * minute)
        .unwrap());
}

/// Two processes racing for the same free slot: exactly one gets it.
pub(super) fn racing_node_claims_give_a_slot_to_one<D: Db>(db: &D) {
    let _ = migrated(db);
    let wins = AtomicUsize::new(0);
    thread::scope(|s| {
        for who in ["p1", "p2", "p3", "p4"] {
            let wins = &wins;
            s.spawn(move || {
                let mut conn = db.connect();
                let won = retry_transient(|| conn.node_claim(7, who, T0, T0 - 60_000))
                    .expect("node_claim");
                if won {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.load(Ordering::SeqCst), 1, "{}", D::BACKEND);
}
