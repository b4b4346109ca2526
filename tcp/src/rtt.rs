//! rtt
/// RTT estimator.
pub struct RttEstimator;
