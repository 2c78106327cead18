//! The sans-IO engine: `decide(run, definition, event, now) -> Decision`.
//!
//! It reads no clock, makes no id and calls no network: the adapters perform the returned
//! effects and feed what happened back in as events. That is what makes it testable by
//! transcripts, property tests and seeded simulation.

mod machine;
mod types;

pub use machine::*;
pub use types::*;
