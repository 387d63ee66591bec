//! The Stratum side of the core: line framing and the borrowed message view.
//!
//! Nothing here does I/O or knows about metrics; the relay feeds bytes in and
//! gets lines and message views out.

pub mod frame;
pub mod message;
mod scan;
pub mod shape;

pub use frame::{Frame, LineFramer, MAX_LINE_BYTES};
pub use message::{Dialect, Id, Kind, Message, Method, Outcome, ParseFailure, RpcError};
pub use shape::Shapes;
