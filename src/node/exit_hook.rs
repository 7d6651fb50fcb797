//! Closing a transport that is still open when its JS environment ends (a worker thread
//! exiting, or the process), so the socket is not left open and the event flusher not
//! left waiting.
//!
//! The hook holds weak references only, and `close()` (or the transport being garbage
//! collected) removes it: a closed transport is freed whole. napi-rs's own
//! `add_env_cleanup_hook` keeps what it is given until the environment ends, even once
//! removed, so every transport ever created stayed in memory with its socket state and
//! its threadsafe function: 2,000 `create()`/`close()` pairs grew a process by about
//! 130 MiB and made a crossing into JS 2.5 times as slow (`uv__async_io` walks every
//! live async handle; `node --expose-gc bench/lifecycle.mjs` at commit 5f0fde8).

use std::ffi::c_void;
use std::sync::Weak;

use napi::{sys, Env};

use super::events::Events;
use crate::endpoint::Endpoint;

/// What the hook closes, if it still exists.
struct Targets {
    endpoint: Weak<Endpoint>,
    events: Weak<Events>,
}

/// A registered hook; dropping it (on the JS thread) removes it.
pub(crate) struct ExitHook {
    env: sys::napi_env,
    targets: Box<Targets>,
}

impl ExitHook {
    /// Registers the hook for `endpoint` and `events` in `env`.
    ///
    /// # Errors
    /// What napi reports when the hook cannot be registered.
    pub(crate) fn register(
        env: &Env,
        endpoint: Weak<Endpoint>,
        events: Weak<Events>,
    ) -> napi::Result<Self> {
        let targets = Box::new(Targets { endpoint, events });
        // SAFETY: `targets` lives at a fixed address until `drop` below has removed the
        // hook, so the pointer napi keeps stays valid for as long as napi may use it.
        let status = unsafe {
            sys::napi_add_env_cleanup_hook(env.raw(), Some(run), target_pointer(&targets))
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason(format!(
                "could not register the exit hook (napi status {status})"
            )));
        }
        Ok(ExitHook {
            env: env.raw(),
            targets,
        })
    }
}

impl Drop for ExitHook {
    fn drop(&mut self) {
        // SAFETY: called on the JS thread that registered the hook, with the same
        // function and argument; removing a hook that already ran is a no-op.
        unsafe {
            sys::napi_remove_env_cleanup_hook(self.env, Some(run), target_pointer(&self.targets));
        }
    }
}

fn target_pointer(targets: &Targets) -> *mut c_void {
    (targets as *const Targets).cast_mut().cast()
}

/// The hook: closes what is still alive. Panics are caught (this is called from C).
unsafe extern "C" fn run(arg: *mut c_void) {
    // SAFETY: `arg` is the `Targets` of a registered `ExitHook`, which is alive until it
    // removes this hook (see `register`).
    let targets = unsafe { &*arg.cast::<Targets>() };
    // Nothing observes the state a panic would leave behind: the environment is ending.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some(events) = targets.events.upgrade() {
            events.close_now();
        }
        if let Some(endpoint) = targets.endpoint.upgrade() {
            napi::bindgen_prelude::spawn(async move { endpoint.close().await });
        }
    }));
}
