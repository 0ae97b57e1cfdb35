//! The registry: which task types this process can run, found by signature.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::alert::Alerter;
use crate::enqueue::{bincode_config, validate_signature};
use crate::error::{Error, ErrorKind};
use crate::task::{States, Task, TaskContext, TaskError, TaskOptions};
use crate::util::panic_message;

/// The task types a worker pool can run, keyed by their [`Task::SIGNATURE`].
///
/// Registration checks each type's options (an invalid alert expression is rejected here, with
/// its position, not discovered when it would fire).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tend::{Task, TaskContext, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Ship { order_id: i64 }
/// # impl Task for Ship {
/// #     const SIGNATURE: &'static str = "orders.ship";
/// #     fn execute(&self, _: &TaskContext) -> Result<(), TaskError> { Ok(()) }
/// # }
/// let mut registry = tend::Registry::new();
/// registry.register::<Ship>().unwrap();
/// assert!(registry.contains("orders.ship"));
/// // The same signature twice is an error.
/// assert!(registry.register::<Ship>().is_err());
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
    alerters: HashMap<String, Arc<dyn Alerter>>,
    states: States,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sigs: Vec<_> = self.handlers.keys().collect();
        sigs.sort();
        f.debug_struct("Registry")
            .field("signatures", &sigs)
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    ///
    /// ```
    /// let registry = tend::Registry::new();
    /// assert!(registry.signatures().is_empty());
    /// ```
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers task type `T` under its signature.
    ///
    /// # Errors
    /// A signature already registered or invalid, invalid options in `T::options()` (an alert
    /// expression that does not parse, with its position), or an alerter name that was not
    /// registered with [`Registry::alerter`] first.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::{ErrorKind, Registry, Task, TaskOptions};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Noisy;
    /// impl Task for Noisy {
    ///     const SIGNATURE: &'static str = "demo.noisy";
    ///     fn options() -> TaskOptions { TaskOptions::new().alert_expression(Some("executeTimes >")) }
    /// #   fn execute(&self, _: &tend::TaskContext) -> Result<(), tend::TaskError> { Ok(()) }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = Registry::new();
    /// registry.register::<Ship>()?.register::<AlwaysFails>()?; // it chains
    /// // A broken option is caught here, at startup, not when the alert would fire:
    /// let err = registry.register::<Noisy>().unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::InvalidExpression { error, .. } if error.position == 14));
    /// # Ok(()) }
    /// ```
    pub fn register<T: Task>(&mut self) -> Result<&mut Registry, Error> {
        validate_signature(T::SIGNATURE)?;
        let opts = T::options();
        opts.validate()?;
        if let Some(name) = &opts.alerter {
            if !self.alerters.contains_key(name) {
                return Err(Error::new(ErrorKind::UnknownAlerter(name.clone())));
            }
        }
        if self.handlers.contains_key(T::SIGNATURE) {
            return Err(Error::new(ErrorKind::DuplicateSignature(
                T::SIGNATURE.to_string(),
            )));
        }
        self.handlers.insert(
            T::SIGNATURE,
            Arc::new(Typed::<T> {
                opts,
                _t: PhantomData,
            }),
        );
        Ok(self)
    }

    /// Makes `state` reachable from every handler as [`TaskContext::state::<S>()`]
    /// (`ctx.state::<S>()?`): the application's database pool, HTTP clients, configuration.
    /// One value per type, like axum's `State` or actix's `Data`; wrap two values of one type
    /// in newtypes. The payload types stay plain serde data.
    ///
    /// # Errors
    /// A state of type `S` is already registered
    /// ([`ErrorKind::InvalidSetting`] named `state`).
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// use tend::Registry;
    /// struct Config { api_url: String }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = Registry::new();
    /// registry.state(Config { api_url: "https://psp.example".into() })?.register::<Ship>()?;
    /// assert_eq!(registry.get_state::<Config>().unwrap().api_url, "https://psp.example");
    /// assert!(registry.state(Config { api_url: String::new() }).is_err()); // one per type
    /// # Ok(()) }
    /// ```
    pub fn state<S: Send + Sync + 'static>(&mut self, state: S) -> Result<&mut Registry, Error> {
        let map = Arc::make_mut(&mut self.states.0);
        if map.contains_key(&TypeId::of::<S>()) {
            return Err(Error::invalid_setting(
                "state",
                format!(
                    "a state of type `{}` is already registered (wrap a second value of one \
                     type in a newtype)",
                    std::any::type_name::<S>()
                ),
            ));
        }
        map.insert(TypeId::of::<S>(), Arc::new(state));
        Ok(self)
    }

    /// The state of type `S`, if one is registered (what handlers reach through
    /// [`TaskContext::state`]).
    ///
    /// ```
    /// let mut registry = tend::Registry::new();
    /// assert!(registry.get_state::<u64>().is_none());
    /// registry.state(7u64).unwrap();
    /// assert_eq!(registry.get_state::<u64>(), Some(&7));
    /// ```
    pub fn get_state<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.states.get::<S>()
    }

    /// A stored row's payload as JSON for operators (`tend tasks show`, the dashboard), or why
    /// it cannot be shown.
    #[cfg(feature = "cli")]
    pub(crate) fn describe_row(
        &self,
        r: &crate::store::row::TaskRow,
    ) -> Result<serde_json::Value, String> {
        let len = r.task_parameter.len();
        let sig = &r.method_sign_name;
        let Some(handler) = self.get(sig) else {
            return Err(format!(
                "<{len} bytes, signature {sig}, not decodable by this binary>"
            ));
        };
        handler.describe(&r.task_parameter).map_err(|e| {
            format!(
                "<{len} bytes, signature {sig}, does not decode as {} (stored payload_version {}, \
                 this binary's is {}): {e}>",
                handler.type_name(),
                r.payload_version,
                handler.version()
            )
        })
    }

    /// The states, for the executor to put in each [`TaskContext`].
    pub(crate) fn states(&self) -> States {
        self.states.clone()
    }

    /// Registers an [`Alerter`] under `name` (the seed's `alertActionBeanName`). Register
    /// alerters before the task types that name them.
    ///
    /// # Errors
    /// An empty name, or a name already registered.
    ///
    /// ```
    /// use tend::{Alert, Registry, Task, TaskOptions};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge;
    /// impl Task for Charge {
    ///     const SIGNATURE: &'static str = "billing.charge";
    ///     fn options() -> TaskOptions { TaskOptions::new().alerter("pager") }
    /// #   fn execute(&self, _: &tend::TaskContext) -> Result<(), tend::TaskError> { Ok(()) }
    /// }
    /// let mut registry = Registry::new();
    /// assert!(registry.register::<Charge>().is_err()); // no alerter named "pager" yet
    /// registry.alerter("pager", |a: &Alert| eprintln!("task {} failed: {}", a.id, a.error_msg))?;
    /// registry.register::<Charge>()?;
    /// assert!(registry.alerter("pager", |_: &Alert| {}).is_err()); // names are unique
    /// # Ok::<(), tend::Error>(())
    /// ```
    pub fn alerter(
        &mut self,
        name: impl Into<String>,
        alerter: impl Alerter,
    ) -> Result<&mut Registry, Error> {
        let name = name.into();
        if name.is_empty() || name.len() > 255 {
            return Err(Error::invalid_setting(
                "alerter",
                "name must be 1 to 255 bytes",
            ));
        }
        if self.alerters.contains_key(&name) {
            return Err(Error::invalid_setting(
                "alerter",
                format!("an alerter named `{name}` is already registered"),
            ));
        }
        self.alerters.insert(name, Arc::new(alerter));
        Ok(self)
    }

    pub(crate) fn get_alerter(&self, name: &str) -> Option<&Arc<dyn Alerter>> {
        self.alerters.get(name)
    }

    /// Whether a task type is registered under `signature`.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = tend::Registry::new();
    /// registry.register::<Ship>()?;
    /// assert!(registry.contains("orders.ship"));
    /// // Rows of an unregistered signature are kept as Held, never lost.
    /// assert!(!registry.contains("orders.cancel"));
    /// # Ok(()) }
    /// ```
    pub fn contains(&self, signature: &str) -> bool {
        self.handlers.contains_key(signature)
    }

    /// The registered signatures, sorted.
    ///
    /// ```
    /// # include!("doctest_setup.rs");
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut registry = tend::Registry::new();
    /// registry.register::<Ship>()?.register::<AlwaysFails>()?;
    /// assert_eq!(registry.signatures(), ["demo.always_fails", "orders.ship"]);
    /// # Ok(()) }
    /// ```
    pub fn signatures(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.handlers.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn get(&self, signature: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(signature)
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// `execute` succeeded.
    Succeeded,
    /// `execute` failed and the fallback succeeded.
    FallbackSucceeded(TaskError),
    /// `execute` failed; `fallback` holds the fallback's error if it ran and failed.
    Failed {
        error: TaskError,
        fallback: Option<TaskError>,
    },
    /// The payload did not decode.
    Undecodable(String),
}

/// A task type with its payload type erased.
pub(crate) trait Handler: Send + Sync {
    fn options(&self) -> &TaskOptions;
    fn type_name(&self) -> &'static str;
    fn version(&self) -> i32;
    /// Decodes and runs the task; runs the fallback after a failure when `fallback_due` says so
    /// (given the error). Panics in either become errors.
    fn run(
        &self,
        payload: &[u8],
        ctx: &TaskContext,
        fallback_due: &dyn Fn(&TaskError) -> bool,
    ) -> Attempt;
    /// Decodes a payload into JSON for operators (`tend tasks show`).
    #[cfg(feature = "cli")]
    fn describe(&self, payload: &[u8]) -> Result<serde_json::Value, String>;
}

struct Typed<T> {
    opts: TaskOptions,
    _t: PhantomData<fn() -> T>,
}

impl<T: Task> Handler for Typed<T> {
    fn options(&self) -> &TaskOptions {
        &self.opts
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn version(&self) -> i32 {
        T::VERSION
    }

    #[cfg(feature = "cli")]
    fn describe(&self, payload: &[u8]) -> Result<serde_json::Value, String> {
        let task = decode::<T>(payload)?;
        serde_json::to_value(&task).map_err(|e| e.to_string())
    }

    fn run(
        &self,
        payload: &[u8],
        ctx: &TaskContext,
        fallback_due: &dyn Fn(&TaskError) -> bool,
    ) -> Attempt {
        let task: T = match decode::<T>(payload) {
            Ok(t) => t,
            Err(e) => return Attempt::Undecodable(e),
        };
        let error = match guarded(|| task.execute(ctx)) {
            Ok(()) => return Attempt::Succeeded,
            Err(e) => e,
        };
        if !fallback_due(&error) {
            return Attempt::Failed {
                error,
                fallback: None,
            };
        }
        match guarded(|| task.fallback(ctx)) {
            Ok(()) => Attempt::FallbackSucceeded(error),
            Err(f) => Attempt::Failed {
                error,
                fallback: Some(f),
            },
        }
    }
}

/// Decodes a payload; the whole input must be consumed, so a payload written by another
/// shape of the type is caught rather than silently misread.
pub(crate) fn decode<T: Task>(payload: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice::<T, _>(payload, bincode_config()) {
        Ok((t, n)) if n == payload.len() => Ok(t),
        Ok((_, n)) => Err(format!(
            "{} trailing bytes after the value ({} of {} bytes read)",
            payload.len() - n,
            n,
            payload.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs a handler, turning a panic into an error (the worker thread survives it).
fn guarded(f: impl FnOnce() -> Result<(), TaskError>) -> Result<(), TaskError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(TaskError::new(format!(
            "handler panicked: {}",
            panic_message(&*p)
        ))),
    }
}
