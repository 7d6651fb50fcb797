//! Core errors as JS errors. The message carries the stable code as a `[ERR_…]` prefix,
//! which the JS layer (`index.js`) turns into `err.code`; napi's own status enum has no
//! room for custom codes on rejected promises.

use crate::error::Error;

pub(crate) fn to_js(error: Error) -> napi::Error {
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("[{}] {}", error.code(), error),
    )
}

pub(crate) trait IntoJs<T> {
    fn into_js(self) -> napi::Result<T>;
}

impl<T> IntoJs<T> for Result<T, Error> {
    fn into_js(self) -> napi::Result<T> {
        self.map_err(to_js)
    }
}
