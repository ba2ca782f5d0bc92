//! The fake Bitrix24 portal over real HTTP, and the client against it: one test binary
//! (one link, shared code generation) instead of one per file.

mod client;
mod events;
mod limits;
mod lists;
mod pacing_floor;
mod shapes;
mod support;
