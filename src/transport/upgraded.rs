//! Upgraded connections (WebSocket handshakes) served outside the HTTP/1 dispatcher.
//!
//! actix-http's dispatcher allocates an 8 KiB read buffer and an 8 KiB write buffer per connection
//! and keeps both for the connection's life: for a WebSocket that sits idle for hours that is most of
//! what it costs. The dispatcher hands an upgrade request and its socket to an upgrade service
//! instead, when one is configured: [`service`] is that service. It gives the request to the same
//! application (so handlers, extractors and middleware are the ones plain requests go through),
//! writes the answer, and when the answer is `101 Switching Protocols` it runs a [`Pump`] on a task
//! of its own: bytes read from the socket go to the request's payload, the response body's chunks go
//! to the socket. It reads through one scratch buffer per thread and holds bytes of its own only while
//! the socket does not take them, so an idle connection costs the socket, the pump and the
//! connection's actors. Any other answer is written with `Connection: close` and the socket closed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, Encoder, Framed, ReadBuf};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, Payload, Request, Response, StatusCode};
use actix_service::{fn_factory, fn_service, IntoServiceFactory, Service, ServiceFactory};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;

/// Bytes read from the socket that may wait for the connection to take them; beyond, the pump stops
/// reading and TCP slows the peer down (the dispatcher's own bound).
const INBOUND_LIMIT: usize = 32 * 1024;

/// Size of the per-thread read scratch buffer, and so of one read.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes of the response body the pump holds before it stops taking more.
const OUTBOUND_LIMIT: usize = 32 * 1024;

/// Reads per poll at most, so one busy peer does not hold the thread.
const READS_PER_POLL: usize = 4;

/// How long the socket may take to accept the last bytes once the response has ended, and an answer
/// that is not an upgrade.
const LINGER: Duration = Duration::from_secs(5);

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The upgrade service for `HttpService::build().upgrade(…)`: every upgrade request goes to a
/// service made by `make_app` (one per worker, besides the one plain requests go to).
pub fn service<T, F, I, S, B, C>(
    make_app: F,
    config: C,
) -> impl ServiceFactory<
    (Request, Framed<T, Codec>),
    Config = (),
    Response = (),
    Error = actix_http::Error,
    InitError = (),
>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn() -> I + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = C> + 'static,
    S::Service: 'static,
    S::InitError: std::fmt::Debug,
    S::Error: Into<Response<BoxBody>>,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
    C: Clone + 'static,
{
    fn_factory(move || {
        let factory = make_app().into_factory();
        let config = config.clone();
        async move {
            let app = factory
                .new_service(config)
                .await
                .map_err(|e| log::error!("upgrade service: the application did not start: {e:?}"))?;
            let app = Rc::new(app);
            Ok(fn_service(move |(req, framed): (Request, Framed<T, Codec>)| {
                let app = app.clone();
                async move {
                    serve(app, req, framed).await;
                    Ok::<_, actix_http::Error>(())
                }
            }))
        }
    })
}

/// Answers one upgrade request on its socket: the answer is made on the connection's own task, and
/// an upgrade leaves it for a task of its own running only the [`Pump`] (the connection's task,
/// with room for every step of an HTTP exchange, ends).
async fn serve<T, S, B>(app: Rc<S>, mut req: Request, framed: Framed<T, Codec>)
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request>,
    S::Error: Into<Response<BoxBody>>,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    let parts = framed.into_parts();
    let (io, mut codec) = (parts.io, parts.codec);
    // What the peer sent right behind the request head (a first frame, often) is the connection's
    // first input; the dispatcher's buffers go now.
    let early = Bytes::copy_from_slice(&parts.read_buf);
    drop((parts.read_buf, parts.write_buf));
    let inbound = Rc::new(RefCell::new(Inbound::default()));
    if !early.is_empty() {
        inbound.borrow_mut().push(early);
    }
    *req.payload() = Payload::Stream { payload: Box::pin(InboundStream(inbound.clone())) };
    let res: Response<BoxBody> = match app.call(req).await {
        Ok(res) => res.into().map_into_boxed_body(),
        Err(err) => err.into(),
    };
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (head, body) = res.into_parts();
        let mut out = BytesMut::new();
        if codec.encode(Message::Item((head, body.size())), &mut out).is_err() {
            return;
        }
        actix_rt::spawn(Pump::new(io, inbound, body, out));
    } else {
        let written = actix_rt::time::timeout(LINGER, answer_and_close(io, codec, res)).await;
        if !matches!(written, Ok(Ok(()))) {
            log::debug!("upgrade refused; the answer was not written whole");
        }
    }
}

/// Writes a refusal (or any answer that is not an upgrade) and closes the connection.
async fn answer_and_close<T>(mut io: T, mut codec: Codec, mut res: Response<BoxBody>) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    res.head_mut().set_connection_type(ConnectionType::Close);
    let (head, mut body) = res.into_parts();
    let mut out = BytesMut::new();
    codec.encode(Message::Item((head, body.size())), &mut out)?;
    if !matches!(body.size(), BodySize::None) {
        while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
            let chunk = chunk.map_err(|e| io::Error::other(e.to_string()))?;
            codec.encode(Message::Chunk(Some(chunk)), &mut out)?;
            if out.len() > OUTBOUND_LIMIT {
                io.write_all(&out).await?;
                out.clear();
            }
        }
        codec.encode(Message::Chunk(None), &mut out)?;
    }
    io.write_all(&out).await?;
    io.shutdown().await
}

/// Bytes read from the socket, waiting for the connection's payload stream to take them.
#[derive(Default)]
struct Inbound {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// The peer closed its side, or the read failed (`error`).
    ended: bool,
    error: Option<PayloadError>,
    /// The payload stream was dropped: nobody reads any more.
    reader_gone: bool,
    reader: Option<Waker>,
    pump: Option<Waker>,
}

impl Inbound {
    fn push(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.chunks.push_back(bytes);
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn end(&mut self, error: Option<PayloadError>) {
        self.ended = true;
        self.error = error;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn has_room(&self) -> bool {
        self.len < INBOUND_LIMIT
    }
}

/// The request payload of an upgraded connection.
struct InboundStream(Rc<RefCell<Inbound>>);

impl Stream for InboundStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inbound = self.0.borrow_mut();
        if let Some(chunk) = inbound.chunks.pop_front() {
            let had_room = inbound.has_room();
            inbound.len -= chunk.len();
            if inbound.chunks.is_empty() {
                // An idle connection keeps no queue.
                inbound.chunks = VecDeque::new();
            }
            if !had_room {
                if let Some(w) = inbound.pump.take() {
                    w.wake();
                }
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if inbound.ended {
            return Poll::Ready(inbound.error.take().map(Err));
        }
        inbound.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for InboundStream {
    fn drop(&mut self) {
        let mut inbound = self.0.borrow_mut();
        inbound.reader_gone = true;
        inbound.chunks.clear();
        inbound.len = 0;
        if let Some(w) = inbound.pump.take() {
            w.wake();
        }
    }
}

/// Moves bytes both ways between an upgraded socket and its connection until the response body ends
/// (then what is left is written, within [`LINGER`]) or the socket fails.
struct Pump<T> {
    io: T,
    inbound: Rc<RefCell<Inbound>>,
    /// `None` once the body has ended.
    body: Option<BoxBody>,
    /// Bytes taken from the body, not yet taken by the socket (empty, without an allocation, while
    /// the socket keeps up).
    out: BytesMut,
    reading: bool,
    linger: Option<Pin<Box<actix_rt::time::Sleep>>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Pump<T> {
    fn new(io: T, inbound: Rc<RefCell<Inbound>>, body: BoxBody, out: BytesMut) -> Self {
        Pump { io, inbound, body: Some(body), out, reading: true, linger: None }
    }

    /// Writes what waits; `Err` when the socket failed.
    fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while !self.out.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
        // Nothing waits: no buffer is kept.
        self.out = BytesMut::new();
        Ok(())
    }

    /// Takes the body's chunks while there is room; `Err` when the body failed.
    fn take_body(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        let mut took = false;
        while self.out.len() < OUTBOUND_LIMIT {
            let Some(body) = self.body.as_mut() else { break };
            match Pin::new(body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.out.extend_from_slice(&chunk);
                    took = true;
                }
                Poll::Ready(Some(Err(_))) => return Err(()),
                Poll::Ready(None) => {
                    self.body = None;
                    took = true;
                }
                Poll::Pending => break,
            }
        }
        Ok(took)
    }

    /// The body has ended: what is left goes out (within [`LINGER`]), then a FIN.
    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.out.is_empty() {
            // The peer gets a FIN; an error here changes nothing.
            return Pin::new(&mut self.io).poll_shutdown(cx).map(|_| ());
        }
        let linger = self.linger.get_or_insert_with(|| Box::pin(actix_rt::time::sleep(LINGER)));
        linger.as_mut().poll(cx)
    }

    /// Reads what the peer sent while the connection has room for it; `Err` when the read failed.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        let mut got = false;
        for _ in 0..READS_PER_POLL {
            if !self.reading {
                break;
            }
            {
                let mut inbound = self.inbound.borrow_mut();
                if inbound.reader_gone {
                    // Nobody will read: the connection is ending; its body ends the pump.
                    self.reading = false;
                    break;
                }
                if !inbound.has_room() {
                    inbound.pump = Some(cx.waker().clone());
                    break;
                }
            }
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(Bytes::copy_from_slice(buf.filled()))),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match read {
                Poll::Ready(Ok(bytes)) if bytes.is_empty() => {
                    self.inbound.borrow_mut().end(None);
                    self.reading = false;
                    got = true;
                }
                Poll::Ready(Ok(bytes)) => {
                    self.inbound.borrow_mut().push(bytes);
                    got = true;
                }
                Poll::Ready(Err(e)) => {
                    self.inbound.borrow_mut().end(Some(PayloadError::Io(e)));
                    return Err(());
                }
                Poll::Pending => break,
            }
        }
        Ok(got)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Pump<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..8 {
            if this.flush(cx).is_err() {
                return Poll::Ready(());
            }
            let Ok(took) = this.take_body(cx) else { return Poll::Ready(()) };
            if took && this.flush(cx).is_err() {
                return Poll::Ready(());
            }
            if this.body.is_none() {
                return this.finish(cx);
            }
            let Ok(got) = this.read(cx) else { return Poll::Ready(()) };
            if !got && !took {
                return Poll::Pending;
            }
        }
        // Still busy: let other connections run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T> Drop for Pump<T> {
    fn drop(&mut self) {
        // The connection learns that the socket is gone (if it has not already).
        let mut inbound = self.inbound.borrow_mut();
        if !inbound.ended {
            inbound.end(Some(PayloadError::Incomplete(None)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_rt::task::JoinHandle;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A response body the test feeds by hand.
    #[derive(Clone, Default)]
    struct Feed(Rc<RefCell<FeedState>>);

    /// Chunks to hand out, whether the body has ended, and who waits for the next chunk.
    #[derive(Default)]
    struct FeedState(VecDeque<Bytes>, bool, Option<Waker>);

    impl Feed {
        fn send(&self, chunk: &'static [u8]) {
            let mut f = self.0.borrow_mut();
            f.0.push_back(Bytes::from_static(chunk));
            if let Some(w) = f.2.take() {
                w.wake();
            }
        }

        fn end(&self) {
            let mut f = self.0.borrow_mut();
            f.1 = true;
            if let Some(w) = f.2.take() {
                w.wake();
            }
        }
    }

    impl MessageBody for Feed {
        type Error = io::Error;

        fn size(&self) -> BodySize {
            BodySize::Stream
        }

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, io::Error>>> {
            let mut f = self.0.borrow_mut();
            if let Some(chunk) = f.0.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if f.1 {
                return Poll::Ready(None);
            }
            f.2 = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A pump between a peer (the returned stream) and a connection (the payload stream and the
    /// body feed), on a pipe holding `pipe` bytes each way.
    fn pumped(pipe: usize) -> (DuplexStream, InboundStream, Feed, Rc<RefCell<Inbound>>, JoinHandle<()>) {
        let (peer, server) = tokio::io::duplex(pipe);
        let inbound = Rc::new(RefCell::new(Inbound::default()));
        let feed = Feed::default();
        let pump =
            Pump::new(server, inbound.clone(), BoxBody::new(feed.clone()), BytesMut::from(&b"head;"[..]));
        let task = actix_rt::spawn(pump);
        (peer, InboundStream(inbound.clone()), feed, inbound, task)
    }

    async fn next(payload: &mut InboundStream) -> Option<Result<Bytes, PayloadError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx)).await
    }

    #[actix_rt::test]
    async fn bytes_go_both_ways_and_the_end_of_the_body_closes_the_socket() {
        let (mut peer, mut payload, feed, _, task) = pumped(1024);
        peer.write_all(b"hello").await.unwrap();
        assert_eq!(next(&mut payload).await.unwrap().unwrap(), Bytes::from_static(b"hello"));
        feed.send(b"one;");
        feed.send(b"two");
        let mut got = vec![0; 12];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"head;one;two", "the head first, then the body's chunks in order");
        feed.end();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the socket closes when the body ends");
        task.await.unwrap();
    }

    #[actix_rt::test]
    async fn the_peer_closing_ends_the_payload() {
        let (mut peer, mut payload, feed, _, task) = pumped(1024);
        peer.write_all(b"bye").await.unwrap();
        peer.shutdown().await.unwrap();
        assert_eq!(next(&mut payload).await.unwrap().unwrap(), Bytes::from_static(b"bye"));
        assert!(next(&mut payload).await.is_none(), "a clean end after the last bytes");
        feed.end();
        task.await.unwrap();
    }

    #[actix_rt::test]
    async fn a_connection_that_does_not_read_stops_the_reading() {
        let (mut peer, mut payload, feed, inbound, task) = pumped(64 * 1024);
        let chunk = vec![7u8; 8 * 1024];
        // The peer writes far more than the bound; the pump stops taking it and the pipe fills.
        let writer = actix_rt::spawn(async move {
            for _ in 0..64 {
                if peer.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            peer
        });
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        let held = inbound.borrow().len;
        assert!(held >= INBOUND_LIMIT, "read up to the bound: {held}");
        assert!(held < INBOUND_LIMIT + READ_CHUNK, "not beyond the bound and one read: {held}");
        assert!(!writer.is_finished(), "the peer is held back");
        // Reading again lets everything through.
        let mut total = 0;
        while total < 64 * 8 * 1024 {
            total += next(&mut payload).await.unwrap().unwrap().len();
        }
        writer.await.unwrap();
        feed.end();
        task.await.unwrap();
    }

    #[actix_rt::test]
    async fn an_idle_pump_holds_no_buffer() {
        let (peer, server) = tokio::io::duplex(1024);
        let inbound = Rc::new(RefCell::new(Inbound::default()));
        let feed = Feed::default();
        let mut pump = Pump::new(server, inbound.clone(), BoxBody::new(feed.clone()), BytesMut::new());
        feed.send(b"a frame");
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut pump).poll(cx))).await;
        assert!(polled.is_pending());
        assert_eq!(pump.out.capacity(), 0, "written out, nothing kept");
        assert_eq!(inbound.borrow().chunks.capacity(), 0);
        drop(peer);
    }
}
