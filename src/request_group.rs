//! [`RequestGroup`]: requests started together with the same timeout, carried out in
//! one task under one timer and one watch for the endpoint's close.
//!
//! The Node binding starts the requests JS made in one tick together, so those with the
//! same timeout have the same deadline. One task per request, each with its own timer
//! and close watch, cost the client about 61,000 instructions per request in the `rps`
//! benchmark, one group per tick about 55,000 (`bash bench/callgrind.sh client quic
//! 40000`; see the README's Performance section).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;

use crate::codec::WireFrame;
use crate::endpoint::{request_timeout, Endpoint};
use crate::error::Error;

/// One request of a group: an encoded request frame (its size checked) for `addr`.
pub(crate) struct GroupRequest {
    /// The caller's name for the request, given back with its outcome.
    pub(crate) token: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) head: Bytes,
    pub(crate) payload: Bytes,
    /// Aborts the request (with [`Error::Aborted`]) when it fires.
    pub(crate) abort: Option<oneshot::Receiver<()>>,
}

impl GroupRequest {
    /// Carries the request out with `exchange` (given its address and frame), unless its
    /// abort fires first, and reports the outcome.
    async fn settle<E, R>(self, exchange: impl FnOnce(SocketAddr, Bytes, Bytes) -> E, report: &R)
    where
        E: Future<Output = Result<WireFrame, Error>>,
        R: Fn(u32, bool, Result<WireFrame, Error>),
    {
        let GroupRequest {
            token,
            addr,
            head,
            payload,
            abort,
        } = self;
        let abortable = abort.is_some();
        let exchange = exchange(addr, head, payload);
        let outcome = match abort {
            Some(abort) => tokio::select! {
                reply = exchange => reply,
                Ok(()) = abort => Err(Error::Aborted),
            },
            None => exchange.await,
        };
        report(token, abortable, outcome);
    }
}

/// Requests with one timeout, started together by [`RequestGroup::run`].
pub(crate) struct RequestGroup {
    /// The timeout as the caller gave it (`None`: the endpoint's `request_timeout`).
    pub(crate) timeout: Option<Duration>,
    requests: Vec<GroupRequest>,
}

impl RequestGroup {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        RequestGroup {
            timeout,
            requests: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, request: GroupRequest) {
        self.requests.push(request);
    }

    /// The tokens of the requests that have an abort handle.
    pub(crate) fn abortable(&self) -> impl Iterator<Item = u32> + '_ {
        self.requests
            .iter()
            .filter(|r| r.abort.is_some())
            .map(|r| r.token)
    }

    /// Sends every request and reports each outcome once, as `report(token, abortable,
    /// outcome)`: the reply, or why there is none (the peer's error, [`Error::Timeout`]
    /// once the group's deadline passed, [`Error::Aborted`], [`Error::Closed`] once the
    /// endpoint closes, …). `abortable` says whether the request had an abort handle.
    ///
    /// The future's first poll writes every request whose connection is up and that has
    /// a stream (the others as soon as they do). A reply that is there when the deadline
    /// passes is reported, not the timeout. Dropping the future drops the unsettled
    /// requests unreported, resetting their streams.
    pub(crate) fn run<R>(
        mut self,
        endpoint: Arc<Endpoint>,
        report: R,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        R: Fn(u32, bool, Result<WireFrame, Error>) + Send + Sync + 'static,
    {
        let deadline = self.timeout.unwrap_or(endpoint.config.request_timeout);
        let lone = match self.requests.len() {
            1 => self.requests.pop(),
            _ => None,
        };
        async move {
            match lone {
                Some(request) => alone(request, deadline, endpoint, report).await,
                None => together(self.requests, deadline, endpoint, report).await,
            }
        }
    }
}

/// A request alone in its group (one in flight, as in the `rtt` benchmark), with a timer
/// and a close watch of its own, as before groups: for one request, the set a group
/// polls its requests from and the record of which have settled cost more than they
/// save (`bash bench/callgrind.sh client quic 10000 64 1`: through a group, 3% more
/// client instructions per request than before groups; this way, 1% more).
async fn alone<R>(request: GroupRequest, deadline: Duration, endpoint: Arc<Endpoint>, report: R)
where
    R: Fn(u32, bool, Result<WireFrame, Error>),
{
    let exchange =
        |addr, head, payload| endpoint.request_encoded(addr, head, payload, Some(deadline));
    request.settle(exchange, &report).await;
}

/// Many requests in one task, under one timer and one close watch.
async fn together<R>(
    requests: Vec<GroupRequest>,
    deadline: Duration,
    endpoint: Arc<Endpoint>,
    report: R,
) where
    R: Fn(u32, bool, Result<WireFrame, Error>),
{
    // Token and abortable of each request until it settles. (On a closed endpoint each
    // request settles at once: it finds no connection.)
    let mut unsettled: Vec<Option<(u32, bool)>> = requests
        .iter()
        .map(|r| Some((r.token, r.abort.is_some())))
        .collect();
    let ended = {
        let mut pending: FuturesUnordered<_> = requests
            .into_iter()
            .enumerate()
            .map(|(index, request)| {
                let endpoint = &endpoint;
                let report = &report;
                async move {
                    let exchange =
                        |addr, head, payload| endpoint.exchange_encoded(addr, head, payload);
                    request.settle(exchange, report).await;
                    index
                }
            })
            .collect();
        let all_settled = async {
            while let Some(index) = pending.next().await {
                unsettled[index] = None;
            }
        };
        // Biased: a reply that arrived with the deadline counts, as with one request's
        // own timer (`tokio::time::timeout` polls what it times first).
        tokio::select! {
            biased;
            () = all_settled => None,
            () = tokio::time::sleep(deadline) => Some(request_timeout(deadline)),
            () = endpoint.closed() => Some(Error::Closed),
        }
        // The unsettled requests are dropped here, which resets their streams.
    };
    if let Some(error) = ended {
        for (token, abortable) in unsettled.into_iter().flatten() {
            report(token, abortable, Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, FrameKind};
    use crate::config::trusting;
    use crate::{BoxFuture, Handler, Message, Peer, QuicClient, QuicServer, TransportConfig};
    use std::sync::Mutex;
    use std::time::Instant;

    /// Echoes at once, or after 3 s for a request of type `slow`.
    struct SlowOrFast;

    impl Handler for SlowOrFast {
        fn request(&self, request: Message, _peer: Peer) -> BoxFuture<Result<Message, String>> {
            Box::pin(async move {
                if request.kind == "slow" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Ok(request)
            })
        }

        fn message(&self, _message: Message, _peer: Peer) -> BoxFuture<()> {
            Box::pin(async {})
        }
    }

    type Outcomes = Arc<Mutex<Vec<(u32, bool, Result<WireFrame, Error>)>>>;

    fn request(token: u32, kind: &str, addr: SocketAddr) -> GroupRequest {
        let mut message = Message::binary(kind, token.to_be_bytes().to_vec());
        message.ensure_id();
        let (head, payload) = codec::encode(FrameKind::Request, &message, u64::MAX).unwrap();
        GroupRequest {
            token,
            addr,
            head,
            payload,
            abort: None,
        }
    }

    /// Starts `group` and returns where its outcomes are reported.
    fn start(group: RequestGroup, client: &QuicClient) -> Outcomes {
        let outcomes = Outcomes::default();
        let seen = outcomes.clone();
        tokio::spawn(
            group.run(client.endpoint.clone(), move |token, abortable, outcome| {
                seen.lock().unwrap().push((token, abortable, outcome))
            }),
        );
        outcomes
    }

    async fn wait_for(outcomes: &Outcomes, count: usize) {
        let start = Instant::now();
        while outcomes.lock().unwrap().len() < count {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "outcomes missing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn sorted(outcomes: &Outcomes) -> Vec<(u32, bool, Result<WireFrame, Error>)> {
        let mut all = outcomes.lock().unwrap().clone();
        all.sort_by_key(|(token, _, _)| *token);
        all
    }

    #[tokio::test]
    async fn each_request_is_reported_once_and_only_the_slow_ones_time_out() {
        let server = QuicServer::bind(TransportConfig::default(), SlowOrFast).unwrap();
        let client = QuicClient::new(trusting(&server.fingerprint())).unwrap();
        let addr = server.local_addr();
        client.connect(addr).await.unwrap();
        // Odd tokens are slow. One request alone (its own timer), and a group.
        for tokens in [1..2, 0..6] {
            let mut group = RequestGroup::new(Some(Duration::from_millis(800)));
            for token in tokens.clone() {
                group.push(request(
                    token,
                    if token % 2 == 0 { "fast" } else { "slow" },
                    addr,
                ));
            }
            let outcomes = start(group, &client);
            wait_for(&outcomes, tokens.len()).await;
            // Past the deadline, nothing more is reported.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let all = sorted(&outcomes);
            assert_eq!(all.len(), tokens.len());
            for ((token, abortable, outcome), expected) in all.into_iter().zip(tokens) {
                assert_eq!(token, expected);
                assert!(!abortable);
                match outcome {
                    Ok(reply) => {
                        assert_eq!(token % 2, 0);
                        assert_eq!(reply.payload.as_ref(), token.to_be_bytes());
                    }
                    Err(e) => {
                        assert_eq!(token % 2, 1);
                        assert_eq!(
                            e,
                            Error::Timeout {
                                what: "request",
                                ms: 800
                            }
                        );
                    }
                }
            }
        }
        client.close().await;
        server.close().await;
    }

    #[tokio::test]
    async fn an_aborted_request_fails_alone() {
        let server = QuicServer::bind(TransportConfig::default(), SlowOrFast).unwrap();
        let client = QuicClient::new(trusting(&server.fingerprint())).unwrap();
        let addr = server.local_addr();
        let mut group = RequestGroup::new(Some(Duration::from_millis(400)));
        let mut aborts = Vec::new();
        for token in 0..3 {
            let (abort, aborted) = oneshot::channel();
            aborts.push(abort);
            group.push(GroupRequest {
                abort: Some(aborted),
                ..request(token, "slow", addr)
            });
        }
        let outcomes = start(group, &client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        aborts.remove(1).send(()).unwrap();
        wait_for(&outcomes, 1).await;
        assert_eq!(outcomes.lock().unwrap()[0], (1, true, Err(Error::Aborted)));
        wait_for(&outcomes, 3).await;
        let timed_out = Err(Error::Timeout {
            what: "request",
            ms: 400,
        });
        assert_eq!(
            sorted(&outcomes),
            vec![
                (0, true, timed_out.clone()),
                (1, true, Err(Error::Aborted)),
                (2, true, timed_out)
            ]
        );
        client.close().await;
        server.close().await;
    }

    /// `size` slow requests under the default timeout.
    fn slow_group(size: u32, addr: SocketAddr) -> RequestGroup {
        let mut group = RequestGroup::new(None);
        for token in 0..size {
            group.push(request(token, "slow", addr));
        }
        group
    }

    fn assert_all_closed(all: &[(u32, bool, Result<WireFrame, Error>)]) {
        assert!(
            all.iter()
                .all(|(_, _, outcome)| *outcome == Err(Error::Closed)),
            "{all:?}"
        );
    }

    #[tokio::test]
    async fn a_close_fails_every_unsettled_request_with_closed() {
        let server = QuicServer::bind(TransportConfig::default(), SlowOrFast).unwrap();
        let addr = server.local_addr();
        // One request (its own close watch), and a group.
        for size in [1, 4] {
            // Two streams at a time: the others wait for one, which a close must end too.
            let mut config = trusting(&server.fingerprint());
            config.max_concurrent_streams = 2;
            let client = QuicClient::new(config).unwrap();
            let outcomes = start(slow_group(size, addr), &client);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let started = Instant::now();
            client.close().await;
            wait_for(&outcomes, size as usize).await;
            assert!(started.elapsed() < Duration::from_secs(2));
            let all = sorted(&outcomes);
            assert_eq!(all.len(), size as usize);
            assert_all_closed(&all);
        }
        server.close().await;
    }

    #[tokio::test]
    async fn requests_fail_with_closed_as_soon_as_the_close_begins() {
        // Before any connection is closed: what settles them is the group's close watch
        // (or a lone request's own).
        let server = QuicServer::bind(TransportConfig::default(), SlowOrFast).unwrap();
        let addr = server.local_addr();
        for size in [1, 4] {
            let client = QuicClient::new(trusting(&server.fingerprint())).unwrap();
            client.connect(addr).await.unwrap();
            let outcomes = start(slow_group(size, addr), &client);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let started = Instant::now();
            client.endpoint.begin_closing();
            wait_for(&outcomes, size as usize).await;
            assert!(started.elapsed() < Duration::from_secs(1));
            let all = sorted(&outcomes);
            assert_all_closed(&all);
            client.close().await;
        }
        server.close().await;
    }
}
