//! congestion
/// Congestion control.
pub trait CongestionControl {}
/// NewReno.
pub struct NewReno;
