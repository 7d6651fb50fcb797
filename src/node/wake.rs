//! [`JsWake`]: waking the JS thread to take an event batch (see `events.rs`).
//!
//! On Unix this is a libuv async handle of this addon's own, rather than a Node-API
//! threadsafe function. A threadsafe function's call takes a lock inside Node and wakes
//! the JS thread while still holding it; with both threads on one core the woken JS
//! thread often ran at once, blocked on that lock, and the core switched back and forth
//! twice more per crossing. Here the waking thread holds no lock the JS thread needs, and
//! the batch is taken by the JS thread when it runs (`take`). Measured side by side:
//! README, Performance.
//!
//! libuv is not part of Node-API: its functions are resolved from the `node` executable
//! when the addon loads, as Node-API's are on Unix. Elsewhere (Windows, whose builds
//! load Node-API's functions from the host process by name) a threadsafe function does
//! the same job; `--cfg afq_tsfn` selects it on Unix too, to build and test it there.
//!
//! A handle is closed on the JS thread: after the final delivery once [`JsWake::finish`]
//! was called (the transport closed), or at once by [`JsWake::close_now`] (the JS
//! environment ending: libuv refuses to close a loop, such as a worker thread's, that
//! still has a handle open).

use napi::bindgen_prelude::Function;
use napi::Unknown;

use super::events::EventArgs;

/// Takes what is pending for JS, on the JS thread: `None` when there is nothing.
pub(crate) type Take = Box<dyn Fn() -> Option<EventArgs> + Send + Sync>;

pub(crate) use imp::JsWake;

#[cfg(all(unix, not(afq_tsfn)))]
mod imp {
    use std::ffi::{c_int, c_void};
    use std::sync::{Arc, Mutex};

    use napi::bindgen_prelude::{JsValue, JsValuesTupleIntoVec};
    use napi::sys;

    use super::*;

    extern "C" {
        fn uv_async_init(
            event_loop: *mut c_void,
            handle: *mut c_void,
            callback: Option<unsafe extern "C" fn(*mut c_void)>,
        ) -> c_int;
        fn uv_async_send(handle: *mut c_void) -> c_int;
        fn uv_close(handle: *mut c_void, callback: Option<unsafe extern "C" fn(*mut c_void)>);
        fn uv_unref(handle: *mut c_void);
    }

    /// The async resource's name (in async_hooks).
    const LABEL: &std::ffi::CStr = c"agentic-flow-quic:events";

    /// Room for libuv's `uv_async_t` (128 bytes on 64-bit Linux and macOS), which libuv
    /// writes to from other threads (`uv_async_send`) while the JS thread reads the rest.
    #[repr(C, align(16))]
    struct UvAsync(std::cell::UnsafeCell<[u8; 256]>);

    /// A handle and what its callback needs. libuv's part comes first, so that the
    /// pointer libuv passes to the callbacks is this struct's.
    #[repr(C)]
    struct Handle {
        uv: UvAsync,
        env: sys::napi_env,
        /// The JS callback and the async context it is called in (deleted at close, on
        /// the JS thread, while the environment is still alive).
        func: sys::napi_ref,
        context: sys::napi_async_context,
        take: Take,
        shared: Arc<Shared>,
    }

    struct Shared {
        /// The handle while it is open. Woken under this lock, so it cannot be closed
        /// (and freed) meanwhile.
        open: Mutex<Option<HandlePtr>>,
        /// Close after the next delivery.
        finishing: std::sync::atomic::AtomicBool,
    }

    struct HandlePtr(*mut Handle);
    // SAFETY: the pointer is only dereferenced on the JS thread (callbacks, close), and
    // handed to `uv_async_send`, which libuv allows from any thread.
    unsafe impl Send for HandlePtr {}

    /// Wakes the JS thread, which then calls `take` and, with what it returns, the JS
    /// callback.
    #[derive(Clone)]
    pub(crate) struct JsWake(Arc<Shared>);

    impl JsWake {
        /// On the JS thread of `callback`'s environment.
        ///
        /// # Errors
        /// When napi or libuv cannot set the handle up.
        pub(crate) fn new(
            callback: Function<'_, EventArgs, Unknown<'static>>,
            take: Take,
        ) -> napi::Result<Self> {
            let value = callback.value();
            let env = value.env;
            let shared = Arc::new(Shared {
                open: Mutex::new(None),
                finishing: std::sync::atomic::AtomicBool::new(false),
            });
            let mut func = std::ptr::null_mut();
            let mut name = std::ptr::null_mut();
            let mut context = std::ptr::null_mut();
            let mut event_loop = std::ptr::null_mut();
            // SAFETY: plain Node-API calls on the JS thread with out-parameters.
            let status = unsafe {
                check(sys::napi_create_reference(env, value.value, 1, &mut func))
                    .and_then(|()| {
                        check(sys::napi_create_string_utf8(
                            env,
                            LABEL.as_ptr(),
                            LABEL.count_bytes() as isize,
                            &mut name,
                        ))
                    })
                    .and_then(|()| {
                        check(sys::napi_async_init(
                            env,
                            std::ptr::null_mut(),
                            name,
                            &mut context,
                        ))
                    })
                    .and_then(|()| check(sys::napi_get_uv_event_loop(env, &mut event_loop)))
            };
            let handle = Box::into_raw(Box::new(Handle {
                uv: UvAsync(std::cell::UnsafeCell::new([0; 256])),
                env,
                func,
                context,
                take,
                shared: shared.clone(),
            }));
            // SAFETY: `handle` is ours and stays at its address until `closed` frees it;
            // libuv initialises its part; until then nothing else knows of it.
            let started = status.and_then(|()| unsafe {
                match uv_async_init(event_loop.cast(), handle.cast(), Some(on_wake)) {
                    0 => {
                        // Like a threadsafe function made weak: it does not keep the
                        // process alive (index.js keeps it alive while calls are pending).
                        uv_unref(handle.cast());
                        Ok(())
                    }
                    code => Err(napi::Error::from_reason(format!(
                        "could not start the event handle (libuv error {code})"
                    ))),
                }
            });
            if let Err(e) = started {
                // SAFETY: libuv does not know the handle; the references are ours.
                unsafe {
                    release(&*handle);
                    drop(Box::from_raw(handle));
                }
                return Err(e);
            }
            // However the environment ends (a worker thread exiting while a close is
            // still under way, say), the handle is closed with it, and later wake-ups
            // do nothing. Removed when the handle is closed before.
            // SAFETY: `handle` stays valid until the hook is removed or has run (see
            // `close`); on the JS thread.
            let hooked =
                unsafe { sys::napi_add_env_cleanup_hook(env, Some(on_env_cleanup), handle.cast()) };
            if hooked != sys::Status::napi_ok {
                // SAFETY: on the JS thread; libuv frees nothing of ours until `closed`.
                unsafe {
                    release(&*handle);
                    uv_close(handle.cast(), Some(closed));
                }
                return Err(napi::Error::from_reason(format!(
                    "could not register the event handle's cleanup (napi status {hooked})"
                )));
            }
            *shared.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(HandlePtr(handle));
            Ok(JsWake(shared))
        }

        /// Wakes the JS thread (from any thread); several wake-ups before it runs are
        /// one. Does nothing once the handle is closed.
        pub(crate) fn wake(&self) {
            let open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(HandlePtr(handle)) = &*open {
                // SAFETY: the handle is open (closing takes it out under this lock first).
                unsafe { uv_async_send(handle.cast()) };
            }
        }

        /// Delivers what is pending, then closes the handle (from any thread).
        pub(crate) fn finish(&self) {
            self.0
                .finishing
                .store(true, std::sync::atomic::Ordering::Release);
            self.wake();
        }

        /// Closes the handle now, dropping what was not delivered. On the JS thread.
        pub(crate) fn close_now(&self) {
            close(&self.0, Hook::Remove);
        }
    }

    /// Whether closing removes the environment's cleanup hook (not from the hook itself).
    #[derive(Clone, Copy, PartialEq)]
    enum Hook {
        Remove,
        Running,
    }

    fn check(status: sys::napi_status) -> napi::Result<()> {
        match status {
            sys::Status::napi_ok => Ok(()),
            status => Err(napi::Error::from_reason(format!(
                "could not set up event delivery (napi status {status})"
            ))),
        }
    }

    /// Takes the handle out of `shared` and closes it. On the JS thread.
    fn close(shared: &Shared, hook: Hook) {
        let taken = shared.open.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(HandlePtr(handle)) = taken {
            // SAFETY: on the JS thread, the handle open and its hook registered; after
            // `uv_close` only `closed` touches it.
            unsafe {
                if hook == Hook::Remove {
                    sys::napi_remove_env_cleanup_hook(
                        (*handle).env,
                        Some(on_env_cleanup),
                        handle.cast(),
                    );
                }
                release(&*handle);
                uv_close(handle.cast(), Some(closed));
            }
        }
    }

    /// The environment's cleanup hook, on the JS thread as the environment ends.
    unsafe extern "C" fn on_env_cleanup(raw: *mut c_void) {
        // SAFETY: registered with the handle, which stays until this ran or was removed.
        let handle = unsafe { &*raw.cast::<Handle>() };
        close(&handle.shared, Hook::Running);
    }

    /// Deletes the handle's references to JS. On the JS thread, the environment alive.
    unsafe fn release(handle: &Handle) {
        // SAFETY: as the caller promises; null (never created) is skipped.
        unsafe {
            if !handle.func.is_null() {
                sys::napi_delete_reference(handle.env, handle.func);
            }
            if !handle.context.is_null() {
                sys::napi_async_destroy(handle.env, handle.context);
            }
        }
    }

    unsafe extern "C" fn closed(handle: *mut c_void) {
        // SAFETY: the Box made in `new`; libuv is done with it.
        drop(unsafe { Box::from_raw(handle.cast::<Handle>()) });
    }

    /// libuv's callback, on the JS thread. Panics are caught (this is called from C).
    unsafe extern "C" fn on_wake(raw: *mut c_void) {
        // SAFETY: the handle is open (it is freed only after `uv_close`, after which
        // libuv calls no more of its callbacks).
        let handle = unsafe { &*raw.cast::<Handle>() };
        // Read before taking the batch: if `finish` comes while JS runs, its wake-up
        // runs this again, which takes what was added meanwhile before closing.
        let finishing = handle
            .shared
            .finishing
            .load(std::sync::atomic::Ordering::Acquire);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(args) = (handle.take)() {
                // SAFETY: on the JS thread of `handle.env`, its references alive.
                unsafe { call(handle, args) };
            }
        }));
        if finishing {
            close(&handle.shared, Hook::Remove);
        }
    }

    /// Calls the JS callback with `args`, as Node does for a threadsafe function: in a
    /// callback scope (so microtasks and `process.nextTick` run after it), an exception
    /// reported as uncaught.
    unsafe fn call(handle: &Handle, args: EventArgs) {
        let env = handle.env;
        // SAFETY: Node-API calls on the JS thread, inside a handle scope of their own.
        unsafe {
            let mut scope = std::ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return;
            }
            let mut func = std::ptr::null_mut();
            let mut global = std::ptr::null_mut();
            if sys::napi_get_reference_value(env, handle.func, &mut func) == sys::Status::napi_ok
                && !func.is_null()
                && sys::napi_get_global(env, &mut global) == sys::Status::napi_ok
            {
                if let Ok(argv) = args.into_vec(env) {
                    let mut result = std::ptr::null_mut();
                    let status = sys::napi_make_callback(
                        env,
                        handle.context,
                        global,
                        func,
                        argv.len(),
                        argv.as_ptr(),
                        &mut result,
                    );
                    if status == sys::Status::napi_pending_exception {
                        let mut error = std::ptr::null_mut();
                        if sys::napi_get_and_clear_last_exception(env, &mut error)
                            == sys::Status::napi_ok
                        {
                            sys::napi_fatal_exception(env, error);
                        }
                    }
                }
            }
            sys::napi_close_handle_scope(env, scope);
        }
    }
}

#[cfg(any(not(unix), afq_tsfn))]
mod imp {
    use std::sync::{Arc, Mutex};

    use napi::bindgen_prelude::FnArgs;
    use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
    use napi::Status;

    use super::*;
    use crate::node::events::Batch;

    type EventFn = ThreadsafeFunction<(), Unknown<'static>, EventArgs, Status, false, true>;

    /// Wakes the JS thread through a threadsafe function, released at `finish` (after
    /// its last call) or `close_now`, so that its libuv handle goes too.
    #[derive(Clone)]
    pub(crate) struct JsWake(Arc<Mutex<Option<EventFn>>>);

    impl JsWake {
        /// On the JS thread of `callback`'s environment.
        ///
        /// # Errors
        /// When napi cannot make the threadsafe function.
        pub(crate) fn new(
            callback: Function<'_, EventArgs, Unknown<'static>>,
            take: Take,
        ) -> napi::Result<Self> {
            let deliver = callback
                .build_threadsafe_function::<()>()
                .callee_handled::<false>()
                .weak::<true>()
                // A call that finds nothing pending passes an empty batch.
                .build_callback(move |_ctx| {
                    Ok(take().unwrap_or_else(|| FnArgs::from((Batch(Vec::new()), None))))
                })?;
            Ok(JsWake(Arc::new(Mutex::new(Some(deliver)))))
        }

        pub(crate) fn wake(&self) {
            if let Some(deliver) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
                // Fails only once the JS environment is going away; nobody is left to
                // tell.
                let _ = deliver.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }

        pub(crate) fn finish(&self) {
            self.wake();
            self.close_now();
        }

        pub(crate) fn close_now(&self) {
            drop(self.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        }
    }
}
