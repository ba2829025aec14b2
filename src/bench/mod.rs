//! Measurement: perplexity and KL divergence (shared with qbench), and the timing loops of
//! `qrun bench`.

pub mod bandwidth;
pub mod perplexity;
pub mod speed;
