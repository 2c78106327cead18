//! Flowgate's shared library: workflow definitions, run models, the sans-IO engine, the ports
//! (run store, work queue) and their adapters (DynamoDB/SQS and embedded).
//!
//! The engine ([`engine::decide`]) is a pure function; everything that touches a clock, a
//! network or a disk lives behind a port so the same logic runs on Lambda, in `flowgate serve`,
//! and inside tests and simulations.

pub mod adapters;
pub mod agent;
pub mod api;
pub mod definition;
pub mod duration;
pub mod engine;
pub mod model;
pub mod notify;
pub mod ports;
pub mod runtime;
pub mod schedule;
pub mod signing;
pub mod slack;
pub mod telemetry;
pub mod template;
