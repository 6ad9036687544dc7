//! A one-value channel the committer answers a submitter on, which the
//! submitter either waits for on its thread ([`Receiver::recv`]) or awaits
//! as a [`Future`] (an async HTTP handler: no thread parked per request).
//! Dependency-free on purpose: the engine knows no async runtime.
//!
//! A receiver that is given up before the value came ([`Receiver::abandon`])
//! leaves a function that the sender runs on the value instead, so what the
//! value means (a durable submission to activate) is never lost with a
//! cancelled future.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use crate::sync::lock;

/// What becomes of a value whose receiver was given up.
type Orphan<T> = Box<dyn FnOnce(T) + Send>;

struct State<T> {
    value: Option<T>,
    /// The sender is gone: no value will come (after `value`, if any).
    closed: bool,
    /// The task awaiting the value, if any.
    waker: Option<Waker>,
    /// A thread waits in `recv`.
    blocked: bool,
    /// The receiver was given up: run this on the value.
    orphan: Option<Orphan<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

/// The sending side: one value, once.
pub(crate) struct Sender<T> {
    shared: Option<Arc<Shared<T>>>,
}

/// The receiving side: waited for or awaited.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A connected pair.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            value: None,
            closed: false,
            waker: None,
            blocked: false,
            orphan: None,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            shared: Some(shared.clone()),
        },
        Receiver { shared },
    )
}

impl<T> Shared<T> {
    /// Wakes whoever waits, after the lock is released.
    fn wake(&self, waker: Option<Waker>, blocked: bool) {
        if blocked {
            self.ready.notify_one();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Sender<T> {
    /// Sends the value. A given-up receiver's function runs on it here.
    /// `Err(value)` if the receiver was dropped without being given up.
    pub(crate) fn send(mut self, value: T) -> Result<(), T> {
        let Some(shared) = self.shared.take() else {
            return Err(value);
        };
        let mut s = lock(&shared.state);
        s.closed = true;
        if let Some(orphan) = s.orphan.take() {
            drop(s);
            orphan(value);
            return Ok(());
        }
        // Only the receiver and this side hold it: a dropped receiver
        // left one count.
        if Arc::strong_count(&shared) == 1 {
            return Err(value);
        }
        s.value = Some(value);
        let (waker, blocked) = (s.waker.take(), s.blocked);
        drop(s);
        shared.wake(waker, blocked);
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut s = lock(&shared.state);
            s.closed = true;
            s.orphan = None;
            let (waker, blocked) = (s.waker.take(), s.blocked);
            drop(s);
            shared.wake(waker, blocked);
        }
    }
}

impl<T> Receiver<T> {
    /// Waits on this thread for the value; `None` if the sender went
    /// without sending.
    pub(crate) fn recv(self) -> Option<T> {
        let mut s = lock(&self.shared.state);
        loop {
            if let Some(v) = s.value.take() {
                return Some(v);
            }
            if s.closed {
                return None;
            }
            s.blocked = true;
            s = self.shared.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Gives the receiver up: `f` runs on the value when it comes (on the
    /// sender's thread), or here if it is already in.
    pub(crate) fn abandon(self, f: impl FnOnce(T) + Send + 'static) {
        let mut s = lock(&self.shared.state);
        match s.value.take() {
            Some(v) => {
                drop(s);
                f(v);
            }
            None if s.closed => {}
            None => s.orphan = Some(Box::new(f)),
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = lock(&self.shared.state);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<T>(rx: &mut Receiver<T>, waker: &Arc<Count>) -> Poll<Option<T>> {
        let waker = Waker::from(waker.clone());
        Pin::new(rx).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_value_sent_from_another_thread_is_received() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || tx.send(7).unwrap());
        assert_eq!(rx.recv(), Some(7));
        t.join().unwrap();
    }

    #[test]
    fn a_sender_gone_without_a_value_ends_the_wait() {
        let (tx, rx) = channel::<u8>();
        let t = std::thread::spawn(move || drop(tx));
        assert_eq!(rx.recv(), None);
        t.join().unwrap();
    }

    #[test]
    fn an_awaiting_task_is_woken_once_by_the_value() {
        let (tx, mut rx) = channel();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        assert!(poll(&mut rx, &count).is_pending());
        assert!(poll(&mut rx, &count).is_pending());
        tx.send("done").unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &count), Poll::Ready(Some("done")));
    }

    #[test]
    fn an_awaiting_task_is_woken_by_a_sender_gone() {
        let (tx, mut rx) = channel::<u8>();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        assert!(poll(&mut rx, &count).is_pending());
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &count), Poll::Ready(None));
    }

    #[test]
    fn a_dropped_receiver_refuses_the_value() {
        let (tx, rx) = channel();
        drop(rx);
        assert_eq!(tx.send(3), Err(3));
    }

    #[test]
    fn an_abandoned_receiver_hands_the_value_to_its_function() {
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        // Given up before the value: the sender runs the function.
        let (tx, rx) = channel();
        let s = seen_tx.clone();
        rx.abandon(move |v| s.send(v).unwrap());
        tx.send(1).unwrap();
        // Given up after it: the function runs at once.
        let (tx, rx) = channel();
        tx.send(2).unwrap();
        rx.abandon(move |v| seen_tx.send(v).unwrap());
        assert_eq!(seen_rx.iter().collect::<Vec<_>>(), vec![1, 2]);
        // Given up, then the sender goes without a value: nothing runs.
        let (tx, rx) = channel::<u8>();
        rx.abandon(|_| panic!("no value was sent"));
        drop(tx);
    }
}
