//! The JS options object, converted once into the core's [`TransportOptions`].

use napi::bindgen_prelude::{Either, Uint8Array};
use napi_derive::napi;

use crate::config::{ListenOptions, TlsOptions, TransportOptions};

/// Options of `QuicTransport.create` (see `index.d.ts` for their meaning).
#[napi(object)]
pub struct JsTransportOptions {
    pub listen: Option<JsListenOptions>,
    pub tls: Option<JsTlsOptions>,
    pub server_name: Option<String>,
    pub connect_timeout_ms: Option<f64>,
    pub initial_rtt_ms: Option<f64>,
    pub request_timeout_ms: Option<f64>,
    pub max_idle_timeout_ms: Option<f64>,
    pub keep_alive_ms: Option<f64>,
    pub max_concurrent_streams: Option<f64>,
    pub max_message_bytes: Option<f64>,
    pub zero_rtt: Option<bool>,
}

/// `listen` options.
#[napi(object)]
pub struct JsListenOptions {
    pub host: Option<String>,
    pub port: Option<f64>,
}

/// `tls` options. PEM may be a string or a Buffer.
#[napi(object)]
pub struct JsTlsOptions {
    pub cert: Option<Either<String, Uint8Array>>,
    pub key: Option<Either<String, Uint8Array>>,
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
    pub ca: Option<Either<String, Uint8Array>>,
    pub ca_path: Option<String>,
    pub pinned_fingerprints: Option<Vec<String>>,
    pub insecure_skip_verify: Option<bool>,
    pub require_client_cert: Option<bool>,
}

fn pem(value: Option<Either<String, Uint8Array>>) -> Option<Vec<u8>> {
    value.map(|v| match v {
        Either::A(text) => text.into_bytes(),
        Either::B(bytes) => bytes.to_vec(),
    })
}

impl From<JsTransportOptions> for TransportOptions {
    fn from(js: JsTransportOptions) -> Self {
        TransportOptions {
            listen: js.listen.map(|l| ListenOptions {
                host: l.host,
                port: l.port,
            }),
            tls: js.tls.map(|t| TlsOptions {
                cert: pem(t.cert),
                key: pem(t.key),
                cert_path: t.cert_path.map(Into::into),
                key_path: t.key_path.map(Into::into),
                ca: pem(t.ca),
                ca_path: t.ca_path.map(Into::into),
                pinned_fingerprints: t.pinned_fingerprints,
                insecure_skip_verify: t.insecure_skip_verify,
                require_client_cert: t.require_client_cert,
            }),
            server_name: js.server_name,
            connect_timeout_ms: js.connect_timeout_ms,
            initial_rtt_ms: js.initial_rtt_ms,
            request_timeout_ms: js.request_timeout_ms,
            max_idle_timeout_ms: js.max_idle_timeout_ms,
            keep_alive_ms: js.keep_alive_ms,
            max_concurrent_streams: js.max_concurrent_streams,
            max_message_bytes: js.max_message_bytes,
            zero_rtt: js.zero_rtt,
        }
    }
}
