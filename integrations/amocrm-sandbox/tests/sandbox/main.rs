//! The fake amoCRM account over real HTTP, and the client against it: one test binary
//! (one link, shared code generation) instead of one per file.

mod api;
mod auth;
mod client;
mod limits;
mod support;
mod webhooks;
