//! How often one account may ring: every offer wakes the callee's devices
//! (VoIP pushes for the offline ones) and writes a call-log entry, so a
//! stranger offering and hanging up in a loop would ring someone's phone
//! without end. Pure state with time as an argument.

use natter_common::UnixMillis;
use natter_common::ratelimit::{KeyedLimiter, Quota};
use natter_proto::UserId;

/// Offer budgets per caller and per (caller, callee) pair.
#[derive(Debug)]
pub struct OfferLimits {
    per_caller: KeyedLimiter,
    per_pair: KeyedLimiter,
}

impl OfferLimits {
    /// Budgets of `per_caller` offers by one account and `per_pair` by one
    /// account to one callee.
    pub fn new(per_caller: Quota, per_pair: Quota) -> Self {
        Self {
            per_caller: KeyedLimiter::new(per_caller),
            per_pair: KeyedLimiter::new(per_pair),
        }
    }

    /// Counts an offer from `caller` to `callee`, or says how many
    /// milliseconds to wait. The pair is checked first, so a caller ringing
    /// one person too often keeps their budget for everyone else.
    pub fn admit(&self, now: UnixMillis, caller: &UserId, callee: &UserId) -> Result<(), u64> {
        // '\n' cannot occur in a user id, so pairs never collide.
        let pair = format!("{}\n{}", caller.0, callee.0);
        self.per_pair
            .check(&pair, now)
            .and_then(|()| self.per_caller.check(&caller.0, now))
            .map_err(|r| r.wait_ms.max(1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::new(s.to_owned())
    }

    #[test]
    fn one_callee_is_rung_a_few_times_and_everyone_a_few_more() {
        let l = OfferLimits::new(Quota::new(5, 600), Quota::new(3, 600));
        let (mallory, ann, bob) = (u("mallory"), u("ann"), u("bob"));
        for _ in 0..3 {
            assert!(l.admit(0, &mallory, &ann).is_ok());
        }
        let wait = l.admit(0, &mallory, &ann).unwrap_err();
        assert!(wait > 0 && wait <= 600_000, "{wait}");
        // Refused pair offers do not use the caller's budget: two more left.
        assert!(l.admit(0, &mallory, &bob).is_ok());
        assert!(l.admit(0, &mallory, &bob).is_ok());
        assert!(
            l.admit(0, &mallory, &bob).is_err(),
            "the caller's 5 are used"
        );
        // Others are unaffected, and time refills the budget.
        assert!(l.admit(0, &bob, &ann).is_ok());
        assert!(l.admit(600_000, &mallory, &ann).is_ok());
    }
}
