//! The relay core: listener, 1:1 relay per miner, and the observer API.
//!
//! It forwards the exact bytes it read and then tells an [`Observer`] what it
//! saw. It knows nothing of metrics, HTTP or configuration.

pub mod connection;
mod deadline;
pub mod event;
pub mod server;

pub use event::{
    CloseReason, ConnectionInfo, Direction, Event, NoObserver, Observer, RefuseReason, Side,
    UpstreamFailure,
};
pub use server::{Limits, Server, ServerHandle, Upstream};
