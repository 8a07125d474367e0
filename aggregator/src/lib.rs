//! The aggregator turns telemetry into rollups people and rules can query.
//!
//! So far: the event-time windowing every source feeds ([`window`]). Points
//! go into tumbling 10 s windows; a window closes once the watermark passes
//! its end plus the allowed lateness; closed 10 s windows roll up into 1 min
//! and 1 h windows. Data for a window already closed becomes a correction row
//! for it, since every rollup is additive. Reading the bus, cumulative-to-delta
//! conversion and writing to the store come next (issue 4).

pub mod window;
