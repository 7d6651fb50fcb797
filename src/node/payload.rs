//! Large received payloads handed to JS without a copy, and taken back for reuse.
//!
//! A payload of [`crate::buffer::REUSED_FROM`] bytes or more is read into memory
//! that an earlier payload gave back (see `buffer.rs`: zeroing fresh memory was a
//! quarter of the receiver's samples in the `bulk` benchmark). JS gets that memory as an
//! external Buffer; once JS has collected the Buffer, its memory goes back to the spare
//! memory instead of to the allocator.

use std::ffi::c_void;

use napi::bindgen_prelude::{within_runtime_if_available, Buffer, ToNapiValue};
use napi::sys;

/// A payload for JS, as a Buffer over its own memory.
pub struct Payload(pub(crate) Vec<u8>);

impl ToNapiValue for Payload {
    unsafe fn to_napi_value(env: sys::napi_env, payload: Self) -> napi::Result<sys::napi_value> {
        let mut memory = payload.0;
        if memory.is_empty() {
            // SAFETY: forwarded as received.
            return unsafe { Buffer::to_napi_value(env, Buffer::from(memory)) };
        }
        let (data, len) = (memory.as_mut_ptr(), memory.len());
        let owner = Box::into_raw(Box::new(memory));
        let mut value = std::ptr::null_mut();
        // SAFETY: `data` and `len` describe `*owner`'s bytes, which stay where they are
        // until `give_back` takes `owner` back; on success napi calls it exactly once.
        let status = unsafe {
            sys::napi_create_external_buffer(
                env,
                len,
                data.cast(),
                Some(give_back),
                owner.cast(),
                &mut value,
            )
        };
        if status == sys::Status::napi_ok {
            return Ok(value);
        }
        // Some runtimes forbid external buffers: hand the memory over napi-rs's way.
        // SAFETY: napi did not take `owner`, so it is still ours alone.
        let memory = *unsafe { Box::from_raw(owner) };
        // SAFETY: forwarded as received.
        unsafe { Buffer::to_napi_value(env, Buffer::from(memory)) }
    }
}

/// napi's finalizer for the Buffers made above: the memory goes back for reuse.
unsafe extern "C" fn give_back(_env: sys::napi_env, _data: *mut c_void, owner: *mut c_void) {
    // SAFETY: `owner` is the Box made in `to_napi_value`, passed to napi once.
    let memory = *unsafe { Box::from_raw(owner.cast::<Vec<u8>>()) };
    // The spare memory is freed later by a task on the runtime; napi-rs's runtime is at
    // hand here (the finalizer runs outside of it).
    within_runtime_if_available(|| crate::buffer::give_back(memory));
}
