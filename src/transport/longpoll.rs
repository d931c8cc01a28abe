//! Parking long-poll requests: the one request waiting on a mailbox (a gateway `/notify?protoc=poll`,
//! a longweb poll box, a Gru polling session), answered when something comes for it, or when its time
//! is up. A newer request displaces the older (the caller decides what the older gets).

use tokio::sync::oneshot;

/// The waiting request of a mailbox, if any.
#[derive(Debug)]
pub struct Parked<T> {
    waiting: Option<(u64, oneshot::Sender<T>)>,
    tickets: u64,
}

impl<T> Default for Parked<T> {
    fn default() -> Self {
        Parked { waiting: None, tickets: 0 }
    }
}

impl<T> Parked<T> {
    /// Parks the request answered on `tx`; returns its ticket (for [`Parked::expire`]) and the
    /// request it displaced, if one was still waiting.
    pub fn park(&mut self, tx: oneshot::Sender<T>) -> (u64, Option<oneshot::Sender<T>>) {
        self.tickets += 1;
        let displaced =
            self.waiting.replace((self.tickets, tx)).map(|(_, tx)| tx).filter(|tx| !tx.is_closed());
        (self.tickets, displaced)
    }

    /// Whether a request waits whose client is still there.
    pub fn waiting(&self) -> bool {
        self.waiting.as_ref().is_some_and(|(_, tx)| !tx.is_closed())
    }

    /// Answers the waiting request; gives `value` back when none waits or its client went away.
    pub fn answer(&mut self, value: T) -> Result<(), T> {
        match self.waiting.take() {
            Some((_, tx)) => tx.send(value),
            None => Err(value),
        }
    }

    /// The waiting request, if it is still the one parked with `ticket` (its time is up).
    pub fn expire(&mut self, ticket: u64) -> Option<oneshot::Sender<T>> {
        match &self.waiting {
            Some((t, _)) if *t == ticket => self.waiting.take().map(|(_, tx)| tx),
            _ => None,
        }
    }

    /// Takes the waiting request, whichever it is.
    pub fn take(&mut self) -> Option<oneshot::Sender<T>> {
        self.waiting.take().map(|(_, tx)| tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_waits_newer_ones_displace_and_time_is_per_request() {
        let mut p: Parked<u32> = Parked::default();
        assert!(!p.waiting());
        assert_eq!(p.answer(1), Err(1), "nobody waits: the value comes back");
        let (tx1, mut rx1) = oneshot::channel();
        let (t1, displaced) = p.park(tx1);
        assert!(displaced.is_none() && p.waiting());
        let (tx2, mut rx2) = oneshot::channel();
        let (t2, displaced) = p.park(tx2);
        let displaced = displaced.expect("the first is displaced");
        displaced.send(0).expect("its client still waits");
        assert_eq!(rx1.try_recv(), Ok(0));
        assert!(p.expire(t1).is_none(), "the first's time is up, but it is gone already");
        assert_eq!(p.answer(7), Ok(()));
        assert_eq!(rx2.try_recv(), Ok(7));
        assert!(!p.waiting() && p.expire(t2).is_none());
        // A request whose client went away is not waiting, and is not displaced.
        let (tx3, rx3) = oneshot::channel::<u32>();
        let (t3, _) = p.park(tx3);
        drop(rx3);
        assert!(!p.waiting());
        let (tx4, _rx4) = oneshot::channel();
        assert!(p.park(tx4).1.is_none(), "a gone client is not displaced");
        assert!(p.expire(t3).is_none());
        assert!(p.take().is_some() && p.take().is_none());
    }
}
