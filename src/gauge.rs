//! Gauges that follow the life of a value: raised when it is made, lowered when it
//! is dropped, so no early return can leave one counting. A leaf: the HTTP layer
//! and the services both hold these, and it imports neither.

/// Raises a gauge while alive and lowers it when dropped: an open connection, a live
/// subscription.
pub struct GaugeGuard(&'static str);

impl GaugeGuard {
    pub fn raise(name: &'static str) -> Self {
        metrics::gauge!(name).increment(1.0);
        GaugeGuard(name)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}
