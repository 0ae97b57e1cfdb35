//! tend's one error type. Every variant says what went wrong and, where there is one, the fix.

use std::fmt;

/// An error from tend: a setting, an encoding, or the database.
///
/// The kind is available through [`Error::kind`]; [`std::error::Error::source`] chains to the
/// underlying diesel, r2d2 or bincode error.
///
/// ```
/// use tend::{Error, ErrorKind};
/// let e = Error::invalid_setting("threads", "must be at least 1");
/// assert!(matches!(e.kind(), ErrorKind::InvalidSetting { .. }));
/// assert_eq!(e.to_string(), "invalid setting `threads`: must be at least 1");
/// ```
pub struct Error(Box<ErrorKind>);

/// What kind of error happened.
///
/// ```
/// use diesel::{Connection, SqliteConnection};
/// use tend::ErrorKind;
/// let mut conn = SqliteConnection::establish(":memory:").unwrap(); // not migrated
/// match tend::check_schema(&mut conn).unwrap_err().kind() {
///     ErrorKind::NotMigrated { backend, .. } => assert_eq!(*backend, "sqlite"),
///     other => panic!("unexpected error: {other:?}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A builder or option was given a value it cannot work with.
    InvalidSetting {
        /// The setting's name.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// `consistency_task` is missing or lacks columns: the migrations were not run.
    NotMigrated {
        /// `postgres`, `mysql` or `sqlite`.
        backend: &'static str,
        /// The database's own message.
        detail: String,
    },
    /// Running the embedded migrations failed.
    Migration(String),
    /// A database statement failed.
    Database(diesel::result::Error),
    /// A connection could not be taken from the r2d2 pool.
    Pool(r2d2::Error),
    /// A task could not be encoded.
    Encode {
        /// The task type's signature.
        signature: String,
        /// The encoder's error.
        source: bincode::error::EncodeError,
    },
    /// An encoded task is larger than the table accepts.
    PayloadTooLarge {
        /// The task type's signature.
        signature: String,
        /// Encoded size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Two task types were registered with the same signature.
    DuplicateSignature(String),
    /// A signature is empty, too long or has characters tend does not accept.
    InvalidSignature {
        /// The signature as given.
        signature: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An alert expression does not parse or type-check.
    InvalidExpression {
        /// The expression as given.
        expression: String,
        /// Where and why it was rejected.
        error: crate::expr::ExprError,
    },
    /// An alerter name was used that no [`crate::Alerter`] is registered under.
    UnknownAlerter(String),
    /// [`crate::complete_in`] found the task no longer held by this attempt (its lease
    /// expired and another worker took it over, or an operator cancelled it): roll the
    /// transaction back.
    LeaseLost {
        /// The task's id.
        id: i64,
    },
    /// An API was used in a way it cannot work (an `Outbox::transaction` nested in another
    /// transaction, a test kit asked to run a task that is not due): the message says how.
    Misuse(String),
}

impl Error {
    /// What kind of error this is.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() {
    /// use tend::{ErrorKind, Registry};
    /// let mut registry = Registry::new();
    /// registry.register::<Ship>().unwrap();
    /// let err = registry.register::<Ship>().unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::DuplicateSignature(s) if s == "orders.ship"));
    /// # }
    /// ```
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Consumes the error and returns its kind.
    ///
    /// ```
    /// use tend::{ErrorKind, Snowflake};
    /// let err = Snowflake::new(2000).unwrap_err();
    /// let ErrorKind::InvalidSetting { name, reason } = err.into_kind() else { unreachable!() };
    /// assert_eq!(name, "node_id");
    /// let reason: String = reason; // owned, no clone needed
    /// assert_eq!(reason, "must be 0 to 1023, got 2000");
    /// ```
    pub fn into_kind(self) -> ErrorKind {
        *self.0
    }

    /// Whether the error means the schema is missing (run the migrations).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use diesel::{Connection, SqliteConnection};
    /// let mut conn = SqliteConnection::establish(":memory:")?;
    /// let err = tend::enqueue(&mut conn, &Ship { order_id: 7 }).unwrap_err();
    /// assert!(err.is_not_migrated()); // and its message says to run `tend::migrate`
    /// tend::migrate(&mut conn)?;
    /// assert!(tend::enqueue(&mut conn, &Ship { order_id: 7 }).is_ok());
    /// # Ok(()) }
    /// ```
    pub fn is_not_migrated(&self) -> bool {
        matches!(*self.0, ErrorKind::NotMigrated { .. })
    }

    /// Whether the error is a lock conflict (deadlock, serialization failure, SQLite busy)
    /// that retrying the whole transaction would resolve.
    ///
    /// ```
    /// use diesel::result::{DatabaseErrorKind, Error as DieselError};
    /// use tend::Error;
    /// // PostgreSQL's "could not serialize access", as diesel reports it:
    /// let info = Box::new(String::from("could not serialize access"));
    /// let kind = DatabaseErrorKind::SerializationFailure;
    /// let conflict = Error::from(DieselError::DatabaseError(kind, info));
    /// assert!(conflict.is_transient()); // run the whole transaction again
    /// assert!(!Error::invalid_setting("threads", "must be at least 1").is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(&*self.0, ErrorKind::Database(e) if is_transient(e))
    }

    /// An [`ErrorKind::InvalidSetting`] error.
    ///
    /// ```
    /// use tend::{Error, ErrorKind};
    /// // A builder of your own on top of tend can report bad settings the same way.
    /// fn workers(n: usize) -> Result<usize, Error> {
    ///     if n == 0 {
    ///         return Err(Error::invalid_setting("workers", "must be at least 1"));
    ///     }
    ///     Ok(n)
    /// }
    /// let err = workers(0).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid setting `workers`: must be at least 1");
    /// assert!(matches!(err.kind(), ErrorKind::InvalidSetting { name: "workers", .. }));
    /// ```
    pub fn invalid_setting(name: &'static str, reason: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidSetting {
            name,
            reason: reason.into(),
        })
    }

    pub(crate) fn new(kind: ErrorKind) -> Error {
        Error(Box::new(kind))
    }

    /// Classifies a diesel error from a statement on tend's table: a missing table or column
    /// becomes [`ErrorKind::NotMigrated`] with the fix in its message.
    pub(crate) fn from_db(backend: &'static str, e: diesel::result::Error) -> Error {
        if is_missing_schema(&e) {
            return Error::new(ErrorKind::NotMigrated {
                backend,
                detail: e.to_string(),
            });
        }
        Error::new(ErrorKind::Database(e))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            ErrorKind::InvalidSetting { name, reason } => {
                write!(f, "invalid setting `{name}`: {reason}")
            }
            ErrorKind::NotMigrated { backend, detail } => write!(
                f,
                "tend's tables are missing or incomplete ({detail}); run the migrations first: call `tend::migrate(&mut conn)` at startup, or copy \
                 `migrations/{backend}` into your diesel migrations and run `diesel migration run`"
            ),
            ErrorKind::Migration(m) => write!(f, "running tend's migrations failed: {m}"),
            ErrorKind::Database(e) => write!(f, "database error: {e}"),
            ErrorKind::Pool(e) => {
                write!(f, "could not get a database connection from the pool: {e}")
            }
            ErrorKind::Encode { signature, source } => {
                write!(
                    f,
                    "could not encode task `{signature}` with bincode: {source}"
                )
            }
            ErrorKind::PayloadTooLarge {
                signature,
                size,
                max,
            } => write!(
                f,
                "task `{signature}` encodes to {size} bytes, more than the {max} bytes a task \
                 may hold; store large data in your own table and put its key in the task"
            ),
            ErrorKind::DuplicateSignature(s) => write!(
                f,
                "two task types are registered with the signature `{s}`; signatures must be unique"
            ),
            ErrorKind::InvalidSignature { signature, reason } => {
                write!(f, "invalid task signature `{signature}`: {reason}")
            }
            ErrorKind::InvalidExpression { expression, error } => {
                write!(f, "invalid alert expression `{expression}`: {error}")
            }
            ErrorKind::UnknownAlerter(name) => write!(
                f,
                "no alerter is registered under the name `{name}`; register it with \
                 `Registry::alerter` before the task types that name it"
            ),
            ErrorKind::Misuse(how) => write!(f, "{how}"),
            ErrorKind::LeaseLost { id } => write!(
                f,
                "task {id} is no longer held by this attempt (its lease expired and another \
                 worker took it over, or it was cancelled): roll this transaction back"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            ErrorKind::Database(e) => Some(e),
            ErrorKind::Pool(e) => Some(e),
            ErrorKind::Encode { source, .. } => Some(source),
            ErrorKind::InvalidExpression { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Error {
        Error::new(ErrorKind::Pool(e))
    }
}

/// Lets `conn.transaction(|conn| { …; tend::enqueue(conn, &task) })` return `tend::Error`:
/// diesel needs the transaction's error type to absorb its own errors.
impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Error {
        Error::new(ErrorKind::Database(e))
    }
}

/// Whether a database error means one of tend's tables (`consistency_task`, or
/// `tend_schedule` for periodic tasks) or one of their columns does not exist.
pub(crate) fn is_missing_schema(e: &diesel::result::Error) -> bool {
    let diesel::result::Error::DatabaseError(_, info) = e else {
        return false;
    };
    let m = info.message().to_ascii_lowercase();
    // PostgreSQL: relation "consistency_task" does not exist / column ... does not exist;
    // MySQL/MariaDB: Table 'db.consistency_task' doesn't exist / Unknown column;
    // SQLite: no such table / no such column.
    (m.contains("consistency_task") || m.contains("tend_schedule") || m.contains("column"))
        && (m.contains("does not exist")
            || m.contains("doesn't exist")
            || m.contains("no such table")
            || m.contains("no such column")
            || m.contains("unknown column"))
}

/// Whether a database error is a lock conflict that simply retrying the statement resolves:
/// PostgreSQL 40001/40P01, MySQL/MariaDB 1213 (deadlock) and 1205 (lock wait timeout),
/// SQLite busy/locked.
pub(crate) fn is_transient(e: &diesel::result::Error) -> bool {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::SerializationFailure,
            _,
        ) => true,
        diesel::result::Error::DatabaseError(_, info) => {
            let m = info.message().to_ascii_lowercase();
            m.contains("deadlock")
                || m.contains("lock wait timeout")
                || m.contains("database is locked")
                || m.contains("database table is locked")
                || m.contains("database is busy")
        }
        _ => false,
    }
}
