//! Request bodies that drip: a client sending a POST body a byte a second would hold a connection
//! and a handler for ever. Every body (WebSocket upgrades excepted) must keep an average of at least
//! `min_bytes_per_sec` once `grace` has passed; a slower one ends with an error (the handler answers
//! 4xx and the connection closes).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// A body stream held to a minimum average rate.
pub struct MinRate<S> {
    inner: S,
    started: Instant,
    bytes: u64,
    grace: Duration,
    min_bytes_per_sec: u64,
    check: Pin<Box<Sleep>>,
}

impl<S> MinRate<S> {
    pub fn new(inner: S, grace: Duration, min_bytes_per_sec: u64) -> MinRate<S> {
        let started = Instant::now();
        MinRate {
            inner,
            started,
            bytes: 0,
            grace,
            min_bytes_per_sec,
            check: Box::pin(tokio::time::sleep(grace)),
        }
    }

    /// When the rate would fall below the minimum if nothing more came.
    fn deadline(&self) -> Instant {
        let rate = self.min_bytes_per_sec.max(1);
        let due = Duration::from_secs_f64((self.bytes + 1) as f64 / rate as f64);
        self.started + due.max(self.grace)
    }

    fn too_slow(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.started);
        elapsed >= self.grace && (self.bytes as f64) < self.min_bytes_per_sec as f64 * elapsed.as_secs_f64()
    }
}

impl<S> Stream for MinRate<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.bytes += chunk.len() as u64;
                let next = this.deadline();
                this.check.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                while this.check.as_mut().poll(cx).is_ready() {
                    if this.too_slow(Instant::now()) {
                        return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "request body too slow",
                        )))));
                    }
                    let next = this.deadline();
                    this.check.as_mut().reset(next);
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A body that yields `chunks` bytes, one chunk every `every`.
    fn dripping(chunks: usize, every: Duration) -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        Box::pin(futures_util::stream::unfold(0, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from_static(b"x")), i + 1))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_body_is_cut_off_a_steady_one_is_not() {
        // A byte a second against 100 bytes a second after 2 s of grace: cut after ~2 s.
        let mut slow = MinRate::new(dripping(1000, Duration::from_secs(1)), Duration::from_secs(2), 100);
        let t0 = Instant::now();
        let mut got = 0;
        let err = loop {
            match slow.next().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("the drip was not cut off"),
            }
        };
        assert!(matches!(err, PayloadError::Io(_)));
        assert!(got <= 2 && t0.elapsed() <= Duration::from_secs(3), "{got} bytes, {:?}", t0.elapsed());
        // 1000 bytes at 1000 a second: passes whole.
        let fast = MinRate::new(dripping(1000, Duration::from_millis(1)), Duration::from_secs(2), 100);
        let all: Vec<_> = fast.collect().await;
        assert_eq!(all.iter().filter(|c| c.is_ok()).count(), 1000);
        // Silence from the start: cut at the end of the grace period.
        let mut silent = MinRate::new(dripping(1, Duration::from_secs(3600)), Duration::from_secs(2), 100);
        let t0 = Instant::now();
        assert!(matches!(silent.next().await, Some(Err(_))));
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }
}
