//! The sans-IO engine: `decide(run, definition, event, now) -> Decision`.

mod types;
pub use types::*;
