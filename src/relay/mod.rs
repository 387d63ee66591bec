//! The relay core: listener, 1:1 relay per miner, and the observer API.
//!
//! It forwards the exact bytes it read and then tells an [`Observer`] what it
//! saw. It knows nothing of metrics, HTTP or configuration.

pub mod connection;
mod deadline;
pub mod event;
pub mod keepalive;
pub mod limits;
pub mod per_address;
pub mod pools;
pub mod server;
pub mod upstream;

pub use event::{
    CloseReason, ConnectionInfo, Direction, Event, NoObserver, Observer, RefuseReason, Side,
    UpstreamFailure,
};
pub use keepalive::Keepalive;
pub use limits::Limits;
pub use per_address::{AddressLimit, AddressRule, Cidr, PerAddress};
pub use pools::{HealthPolicy, PoolHealth, PoolId, PoolListener, PoolSpec, PoolStatus, Pools};
pub use server::{Server, ServerHandle};
pub use upstream::PoolAddr;
