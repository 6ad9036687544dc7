//! A rate limiter that hands out time slots instead of blocking: a caller
//! that may not go now learns *when* it may, and has its execution woken
//! then (no busy loop, no thread parked per caller).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::RateLimit;

/// A generic cell rate algorithm (token bucket) limiter with per-key
/// reservations.
///
/// [`RateLimiter::reserve`] gives each key one slot: `Ok(())` when the key
/// may call now (and the slot is used), or `Err(at)` with the instant of the
/// slot kept for it; the next `reserve` of that key at or after `at`
/// succeeds without taking another slot. So callers that are refused come
/// back one by one at the configured rate rather than all at once.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kozmo_interface::webapi::{RateLimit, RateLimiter};
///
/// let limiter = RateLimiter::new(RateLimit { qps: 10.0, burst: 2 });
/// let now = Instant::now();
/// assert!(limiter.reserve_at("a", now).is_ok());
/// assert!(limiter.reserve_at("b", now).is_ok());
/// let at = limiter.reserve_at("c", now).unwrap_err();   // burst used up
/// assert!(at > now && at <= now + Duration::from_millis(100));
/// assert_eq!(limiter.reserve_at("c", now).unwrap_err(), at); // same slot, not a second one
/// assert!(limiter.reserve_at("c", at).is_ok());
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The theoretical arrival time of the next request.
    tat: Option<Instant>,
    /// Slots kept for keys that were refused.
    reserved: HashMap<String, Instant>,
}

impl RateLimiter {
    /// A limiter allowing `limit.qps` calls a second on average and
    /// `limit.burst` at once. A `qps` of 0 or less (or not finite) means no
    /// limit.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            inner: Mutex::new(Inner {
                tat: None,
                reserved: HashMap::new(),
            }),
        }
    }

    /// The limit this limiter enforces.
    ///
    /// ```
    /// use kozmo_interface::webapi::{RateLimit, RateLimiter};
    /// assert_eq!(RateLimiter::new(RateLimit { qps: 3.0, burst: 1 }).limit().burst, 1);
    /// ```
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// [`RateLimiter::reserve_at`] now.
    ///
    /// ```
    /// use kozmo_interface::webapi::{RateLimit, RateLimiter};
    /// assert!(RateLimiter::new(RateLimit { qps: 1.0, burst: 1 }).reserve("k").is_ok());
    /// ```
    pub fn reserve(&self, key: &str) -> Result<(), Instant> {
        self.reserve_at(key, Instant::now())
    }

    /// May `key` call at `now`? `Ok(())` uses a slot (or the slot kept for
    /// the key); `Err(at)`: not before `at`, the slot kept for the key.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kozmo_interface::webapi::{RateLimit, RateLimiter};
    /// let unlimited = RateLimiter::new(RateLimit { qps: 0.0, burst: 0 });
    /// for _ in 0..1000 { assert!(unlimited.reserve_at("k", Instant::now()).is_ok()); }
    /// ```
    pub fn reserve_at(&self, key: &str, now: Instant) -> Result<(), Instant> {
        if !(self.limit.qps.is_finite() && self.limit.qps > 0.0) {
            return Ok(());
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = inner.reserved.get(key).copied() {
            if at <= now {
                inner.reserved.remove(key);
                return Ok(());
            }
            return Err(at);
        }
        let interval = Duration::from_secs_f64(1.0 / self.limit.qps);
        let tau = interval.saturating_mul(self.limit.burst.max(1).saturating_sub(1));
        let tat = inner.tat.map_or(now, |t| t.max(now));
        let allowed_at = tat.checked_sub(tau).unwrap_or(now);
        inner.tat = Some(tat + interval);
        if allowed_at <= now {
            Ok(())
        } else {
            inner.reserved.insert(key.to_string(), allowed_at);
            Err(allowed_at)
        }
    }

    /// Gives up the slot kept for `key`, if any (its execution ended).
    ///
    /// ```
    /// use kozmo_interface::webapi::{RateLimit, RateLimiter};
    /// let l = RateLimiter::new(RateLimit { qps: 1.0, burst: 1 });
    /// l.forget("nobody");
    /// ```
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.reserved.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_limiter_grants_qps_over_time() {
        let l = RateLimiter::new(RateLimit { qps: 100.0, burst: 10 });
        let start = Instant::now();
        let mut granted = 0;
        // 200 keys asking again every millisecond for one simulated second
        // (a granted key asks anew).
        for ms in 0..1000u64 {
            let now = start + Duration::from_millis(ms);
            for k in 0..200 {
                if l.reserve_at(&format!("k{k}"), now).is_ok() {
                    granted += 1;
                }
            }
        }
        // Burst 10 + 100 a second.
        assert!((105..=111).contains(&granted), "{granted}");
    }

    #[test]
    fn async_limiter_slots_are_spread_at_the_rate() {
        let l = RateLimiter::new(RateLimit { qps: 10.0, burst: 1 });
        let now = Instant::now();
        assert!(l.reserve_at("a", now).is_ok());
        let b = l.reserve_at("b", now).unwrap_err();
        let c = l.reserve_at("c", now).unwrap_err();
        assert_eq!(b - now, Duration::from_millis(100));
        assert_eq!(c - now, Duration::from_millis(200));
    }
}
