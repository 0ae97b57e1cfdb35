//! Shards: task tables in several databases, a router from shard key to database, and shard
//! key generation.
//!
//! A service that shards its business rows by a key enqueues each task with the same key, on
//! the connection of the same database, inside the same transaction: the outbox guarantee
//! holds per shard. One [`WorkerPool`](crate::WorkerPool) drains every shard.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};

use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};

use crate::error::Error;
use crate::store::StoreConnection;

/// Maps a shard key to one of `shards` databases.
///
/// ```
/// # include!("doctest_setup.rs");
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tend::{Router, Shards};
/// // Customers below 1000 live on the first database, the others on the last.
/// struct ByRange;
/// impl Router for ByRange {
///     fn route(&self, shard_key: i64, shards: usize) -> usize {
///         if shard_key < 1000 { 0 } else { shards - 1 }
///     }
/// }
/// let shards = Shards::new(memory_pools(2))?.router(ByRange);
/// assert_eq!((shards.index_for(7), shards.index_for(5000)), (0, 1));
/// # Ok(()) }
/// ```
pub trait Router: Send + Sync + 'static {
    /// The index, in `0..shards`, of the database for `shard_key`.
    fn route(&self, shard_key: i64, shards: usize) -> usize;
}

/// `shard_key mod shards` (Euclidean, so negative keys work): the default, and the seed's
/// ShardingSphere rule `ds$->{shard_key % 2}`.
///
/// ```
/// use tend::{ModuloRouter, Router};
/// assert_eq!(ModuloRouter.route(7, 2), 1);
/// assert_eq!(ModuloRouter.route(-7, 2), 1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ModuloRouter;

impl Router for ModuloRouter {
    fn route(&self, shard_key: i64, shards: usize) -> usize {
        shard_key.rem_euclid(shards.max(1) as i64) as usize
    }
}

impl<F: Fn(i64, usize) -> usize + Send + Sync + 'static> Router for F {
    fn route(&self, shard_key: i64, shards: usize) -> usize {
        self(shard_key, shards)
    }
}

/// Several databases, each with its own r2d2 pool and its own migrated `consistency_task`
/// table, and the router between them.
///
/// ```
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use diesel::SqliteConnection;
/// let dir = std::env::temp_dir();
/// let pools = (0..2)
///     .map(|i| {
///         let path = dir.join(format!("tend-shard-doc-{}-{i}.db", std::process::id()));
///         Pool::builder()
///             .connection_customizer(Box::new(tend::SqliteSetup::new()))
///             .build(ConnectionManager::<SqliteConnection>::new(path.to_str().unwrap()))
///             .unwrap()
///     })
///     .collect();
/// let shards = tend::Shards::new(pools).unwrap();
/// shards.migrate_all().unwrap();
/// assert_eq!(shards.index_for(42), 0);
/// assert_eq!(shards.index_for(43), 1);
/// let mut conn = shards.get(43).unwrap(); // the database that holds key 43's rows
/// # drop(conn); drop(shards); for i in 0..2 { let _ = std::fs::remove_file(dir.join(format!("tend-shard-doc-{}-{i}.db", std::process::id()))); }
/// ```
pub struct Shards<C: R2D2Connection + 'static> {
    pools: Vec<Pool<ConnectionManager<C>>>,
    router: Arc<dyn Router>,
}

impl<C: R2D2Connection + 'static> Clone for Shards<C> {
    fn clone(&self) -> Self {
        Shards {
            pools: self.pools.clone(),
            router: self.router.clone(),
        }
    }
}

impl<C: R2D2Connection + 'static> fmt::Debug for Shards<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shards")
            .field("len", &self.pools.len())
            .finish()
    }
}

impl<C> Shards<C>
where
    C: R2D2Connection + StoreConnection + Send + 'static,
{
    /// Shards over `pools`, in order (shard `i` is `pools[i]`), routed by [`ModuloRouter`].
    ///
    /// # Errors
    /// No pools, or more than 1024.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use diesel::SqliteConnection;
    /// use tend::Shards;
    /// let shards = Shards::new(memory_pools(2))?; // shard 0, shard 1
    /// assert_eq!(shards.len(), 2);
    /// assert!(Shards::<SqliteConnection>::new(Vec::new()).is_err()); // at least one
    /// # Ok(()) }
    /// ```
    pub fn new(pools: Vec<Pool<ConnectionManager<C>>>) -> Result<Shards<C>, Error> {
        if pools.is_empty() || pools.len() > 1024 {
            return Err(Error::invalid_setting(
                "shards",
                format!("need 1 to 1024 databases, got {}", pools.len()),
            ));
        }
        Ok(Shards {
            pools,
            router: Arc::new(ModuloRouter),
        })
    }

    /// Routes with `router` instead of [`ModuloRouter`]. An index it returns out of range is
    /// clamped to the last shard and logged.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tend::Shards;
    /// // Blocks of 1000 keys, dealt round the databases.
    /// let shards = Shards::new(memory_pools(4))?.router(|key: i64, n: usize| (key / 1000) as usize % n);
    /// assert_eq!(shards.index_for(2500), 2);
    /// assert_eq!(shards.index_for(4500), 0);
    /// # Ok(()) }
    /// ```
    pub fn router(mut self, router: impl Router) -> Shards<C> {
        self.router = Arc::new(router);
        self
    }

    /// How many databases.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let shards = tend::Shards::new(memory_pools(3))?;
    /// assert_eq!(shards.len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// Always false: there is at least one database.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let shards = tend::Shards::new(memory_pools(1))?;
    /// assert!(!shards.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The index of the database for `shard_key`.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let shards = tend::Shards::new(memory_pools(2))?; // routed by ModuloRouter
    /// assert_eq!(shards.index_for(42), 0);
    /// assert_eq!(shards.index_for(-7), 1);
    /// # Ok(()) }
    /// ```
    pub fn index_for(&self, shard_key: i64) -> usize {
        let i = self.router.route(shard_key, self.pools.len());
        if i >= self.pools.len() {
            log::error!(
                "tend: the router sent shard key {shard_key} to shard {i} of {}; using the last",
                self.pools.len()
            );
            return self.pools.len() - 1;
        }
        i
    }

    /// The pool of the database for `shard_key`.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tend::{NewTask, Shards};
    /// let shards = Shards::new(memory_pools(2))?;
    /// shards.migrate_all()?;
    /// let task = NewTask::new(&Ship { order_id: 43 })?.shard_key(43);
    /// tend::enqueue_new(&mut shards.pool_for(43).get()?, task)?;
    /// let mut second = shards.pools()[1].get()?; // 43 is odd
    /// assert_eq!(task_count(&mut second), 1);
    /// # Ok(()) }
    /// ```
    pub fn pool_for(&self, shard_key: i64) -> &Pool<ConnectionManager<C>> {
        &self.pools[self.index_for(shard_key)]
    }

    /// A connection to the database for `shard_key`: write the business rows and enqueue the
    /// task (with the same key) on it, in one transaction.
    ///
    /// # Errors
    /// [`ErrorKind::Pool`](crate::ErrorKind::Pool) when no connection can be had.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use diesel::Connection;
    /// use tend::{NewTask, Shards};
    /// let shards = Shards::new(memory_pools(2))?;
    /// shards.migrate_all()?;
    /// let customer_id = 43; // what the business rows are sharded by
    /// let mut conn = shards.get(customer_id)?;
    /// conn.transaction(|conn| {
    ///     // the customer's business rows, then:
    ///     tend::enqueue_new(conn, NewTask::new(&Ship { order_id: 1 })?.shard_key(customer_id))
    /// })?;
    /// assert_eq!(task_count(&mut conn), 1);
    /// # Ok(()) }
    /// ```
    pub fn get(&self, shard_key: i64) -> Result<PooledConnection<ConnectionManager<C>>, Error> {
        Ok(self.pool_for(shard_key).get()?)
    }

    /// Every pool, in shard order.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let shards = tend::Shards::new(memory_pools(2))?;
    /// shards.migrate_all()?;
    /// // A health check of every database:
    /// for pool in shards.pools() {
    ///     tend::check_schema(&mut pool.get()?)?;
    /// }
    /// assert_eq!(shards.pools().len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn pools(&self) -> &[Pool<ConnectionManager<C>>] {
        &self.pools
    }

    /// Runs tend's migrations on every shard.
    ///
    /// # Errors
    /// The first shard that fails, with its index in the message.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let shards = tend::Shards::new(memory_pools(2))?;
    /// assert!(tend::check_schema(&mut shards.get(1)?).is_err());
    /// shards.migrate_all()?; // idempotent: run it at every startup
    /// assert!(tend::check_schema(&mut shards.get(1)?).is_ok());
    /// # Ok(()) }
    /// ```
    pub fn migrate_all(&self) -> Result<(), Error> {
        for (i, p) in self.pools.iter().enumerate() {
            let mut conn = p.get()?;
            crate::store::migrate(&mut conn).map_err(|e| {
                Error::new(crate::error::ErrorKind::Migration(format!(
                    "shard {i}: {e}"
                )))
            })?;
        }
        Ok(())
    }
}

/// Produces shard keys for tasks enqueued without one.
///
/// ```
/// use std::sync::atomic::{AtomicI64, Ordering};
/// use tend::ShardKeyGenerator;
/// // Keys from a counter (say, seeded from a database sequence at startup).
/// struct Counter(AtomicI64);
/// impl ShardKeyGenerator for Counter {
///     fn next_key(&self) -> i64 {
///         self.0.fetch_add(1, Ordering::Relaxed)
///     }
/// }
/// let keys = Counter(AtomicI64::new(100));
/// assert_eq!((keys.next_key(), keys.next_key()), (100, 101));
/// tend::set_shard_key_generator(keys)?; // tasks without a key now take the counter's
/// assert_eq!(tend::next_shard_key(), 102);
/// # Ok::<(), tend::Error>(())
/// ```
pub trait ShardKeyGenerator: Send + Sync + 'static {
    /// A new key.
    fn next_key(&self) -> i64;
}

/// Snowflake-style keys: 41 bits of milliseconds since 2024-01-01, a 10-bit node id and a
/// 12-bit sequence, so keys are unique across processes with distinct node ids and roughly
/// time-ordered. (The original used the same layout with a 2016 epoch.)
///
/// The node id comes from configuration (`TEND_NODE_ID`, 0-1023, read by
/// [`Snowflake::from_env`], the default generator) or, when the pool's shard affinity is on,
/// from the node registry, which hands each live process a distinct id. Without either, the id
/// is random: keys from two processes may then collide with a probability of 1/1024 per pair of
/// processes and millisecond — harmless for routing, which is all tend uses keys for.
///
/// ```
/// use tend::{ShardKeyGenerator, Snowflake};
/// let g = Snowflake::new(7).unwrap();
/// let (a, b) = (g.next_key(), g.next_key());
/// assert!(b > a);
/// assert_eq!(Snowflake::node_of(a), 7);
/// ```
#[derive(Debug)]
pub struct Snowflake {
    node: AtomicU16,
    /// The last key's millisecond (since [`SNOWFLAKE_EPOCH_MS`]) times 4096 plus its
    /// sequence number: the next one is the larger of "now, sequence 0" and "last plus one",
    /// so a sequence past 4095 carries into the next millisecond and a clock that steps back
    /// keeps counting from the last key. One atomic, no lock per key.
    state: AtomicI64,
}

/// 2024-01-01T00:00:00Z in epoch milliseconds.
const SNOWFLAKE_EPOCH_MS: i64 = 1_704_067_200_000;

impl Snowflake {
    /// A generator for node `node_id` (0-1023).
    ///
    /// # Errors
    /// A node id over 1023.
    ///
    /// ```
    /// use tend::{ShardKeyGenerator, Snowflake};
    /// let keys = Snowflake::new(42)?;
    /// assert_eq!(Snowflake::node_of(keys.next_key()), 42);
    /// assert!(Snowflake::new(1024).is_err()); // ten bits: 0 to 1023
    /// # Ok::<(), tend::Error>(())
    /// ```
    pub fn new(node_id: u16) -> Result<Snowflake, Error> {
        if node_id > 1023 {
            return Err(Error::invalid_setting(
                "node_id",
                format!("must be 0 to 1023, got {node_id}"),
            ));
        }
        Ok(Snowflake {
            node: AtomicU16::new(node_id),
            state: AtomicI64::new(0),
        })
    }

    /// Node id from `TEND_NODE_ID`, else a random one (see the type's docs).
    ///
    /// ```
    /// use tend::{ShardKeyGenerator, Snowflake};
    /// std::env::set_var("TEND_NODE_ID", "17"); // normally set by the deployment
    /// let keys = Snowflake::from_env();
    /// assert_eq!(Snowflake::node_of(keys.next_key()), 17);
    /// ```
    pub fn from_env() -> Snowflake {
        let configured = std::env::var("TEND_NODE_ID")
            .ok()
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|n| *n <= 1023);
        let node = configured.unwrap_or_else(|| (crate::util::random_token() & 1023) as u16);
        Snowflake {
            node: AtomicU16::new(node),
            state: AtomicI64::new(0),
        }
    }

    /// Changes the node id (the node registry does this when it assigns one).
    ///
    /// ```
    /// use tend::{ShardKeyGenerator, Snowflake};
    /// let keys = Snowflake::new(0)?;
    /// keys.set_node_id(9);
    /// assert_eq!(Snowflake::node_of(keys.next_key()), 9);
    /// # Ok::<(), tend::Error>(())
    /// ```
    pub fn set_node_id(&self, node_id: u16) {
        self.node.store(node_id & 1023, Ordering::Relaxed);
    }

    /// The node id part of a key.
    ///
    /// ```
    /// use tend::{ShardKeyGenerator, Snowflake};
    /// let key = Snowflake::new(5)?.next_key();
    /// assert_eq!(Snowflake::node_of(key), 5); // which process made the key
    /// # Ok::<(), tend::Error>(())
    /// ```
    pub fn node_of(key: i64) -> u16 {
        ((key >> 12) & 1023) as u16
    }
}

impl ShardKeyGenerator for Snowflake {
    fn next_key(&self) -> i64 {
        let now = (crate::util::now_ms() - SNOWFLAKE_EPOCH_MS).max(0) << 12;
        let prev = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .expect("the update always returns Some");
        let v = now.max(prev + 1);
        let (ms, seq) = (v >> 12, v & 4095);
        let node = i64::from(self.node.load(Ordering::Relaxed));
        ((ms & ((1 << 41) - 1)) << 22) | (node << 12) | seq
    }
}

static GENERATOR: OnceLock<Box<dyn ShardKeyGenerator>> = OnceLock::new();
static DEFAULT_SNOWFLAKE: OnceLock<Arc<Snowflake>> = OnceLock::new();

/// Installs the process's shard key generator, used for tasks enqueued without a key. Call it
/// once at startup, before the first enqueue.
///
/// # Errors
/// A generator was already installed or already used.
///
/// ```
/// use tend::{set_shard_key_generator, Snowflake};
/// set_shard_key_generator(Snowflake::new(3)?)?; // once, at startup
/// assert_eq!(Snowflake::node_of(tend::next_shard_key()), 3);
/// assert!(set_shard_key_generator(Snowflake::new(4)?).is_err()); // only once
/// # Ok::<(), tend::Error>(())
/// ```
pub fn set_shard_key_generator(g: impl ShardKeyGenerator) -> Result<(), Error> {
    GENERATOR.set(Box::new(g)).map_err(|_| {
        Error::invalid_setting(
            "shard_key_generator",
            "a generator is already installed (set it once, before the first enqueue)",
        )
    })
}

/// The default generator's [`Snowflake`], shared with the node registry.
pub(crate) fn default_snowflake() -> &'static Arc<Snowflake> {
    DEFAULT_SNOWFLAKE.get_or_init(|| Arc::new(Snowflake::from_env()))
}

struct SharedSnowflake(Arc<Snowflake>);

impl ShardKeyGenerator for SharedSnowflake {
    fn next_key(&self) -> i64 {
        self.0.next_key()
    }
}

/// A new shard key from the process's generator (a [`Snowflake`] unless
/// [`set_shard_key_generator`] installed another).
///
/// ```
/// let a = tend::next_shard_key();
/// let b = tend::next_shard_key();
/// assert_ne!(a, b);
/// ```
pub fn next_shard_key() -> i64 {
    GENERATOR
        .get_or_init(|| Box::new(SharedSnowflake(default_snowflake().clone())))
        .next_key()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_keys_are_unique_ordered_and_carry_the_node() {
        let g = Snowflake::new(1023).unwrap();
        let keys: Vec<i64> = (0..20_000).map(|_| g.next_key()).collect();
        assert!(keys.windows(2).all(|w| w[1] > w[0]));
        assert!(keys
            .iter()
            .all(|k| Snowflake::node_of(*k) == 1023 && *k > 0));
        assert!(Snowflake::new(1024).is_err());
    }

    /// Threads drawing keys at once never get the same one, and each thread's keys rise.
    #[test]
    fn concurrent_keys_are_unique() {
        let g = Arc::new(Snowflake::new(3).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || (0..20_000).map(|_| g.next_key()).collect::<Vec<_>>())
            })
            .collect();
        let threads: Vec<Vec<i64>> = handles.into_iter().map(|t| t.join().unwrap()).collect();
        let mut all = std::collections::HashSet::new();
        for keys in &threads {
            assert!(keys.windows(2).all(|w| w[1] > w[0]));
            for k in keys {
                assert!(all.insert(*k), "key {k} drawn twice");
            }
        }
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn different_nodes_never_collide() {
        let (a, b) = (Snowflake::new(1).unwrap(), Snowflake::new(2).unwrap());
        let ka: std::collections::HashSet<i64> = (0..5000).map(|_| a.next_key()).collect();
        assert!((0..5000).all(|_| !ka.contains(&b.next_key())));
    }

    #[test]
    fn modulo_routes_negative_keys_into_range() {
        for k in [-5i64, -1, 0, 1, 5, i64::MIN, i64::MAX] {
            assert!(ModuloRouter.route(k, 3) < 3);
        }
    }
}
