//! The gRPC listener's transport bounds, beyond what tonic's builder sets
//! (streams per connection, header list size, keep-alive, reset streams):
//! how many connections are held, when an idle one is closed, how many
//! calls may be in progress at once, how long a request may take to
//! arrive, and that a unary call carries exactly one message.
//!
//! Everything here runs before a handler, so nothing here writes to the
//! audit trail; what it refuses is documented in README ("What a caller
//! gets back", "Resource limits").

mod calls;
mod connections;
mod frames;

pub use calls::{IntakeLayer, RequestMessages};
pub use connections::{Admitted, admit};
pub use frames::FrameCounter;
