//! Typed domain records. Everything that enters csmd is parsed into these
//! at the edge; the engine never handles raw upstream JSON.

pub mod alert;
mod event;
mod ids;
pub mod integrity;
pub mod itsm;
pub mod outbox;
pub mod sip;
mod tagged;

pub use event::{AlertEvent, AlertStatus, Event, FeedbackEvent, FeedbackKind, JournalEntry};
pub use ids::{ConnectorName, CustomerId, IdError};
