//! Customer e-mail: what the processors queue in the outbox is rendered
//! from templates ([`templates`]), carries an iCalendar part when it is
//! about a maintenance window ([`ics`]), and is delivered by the outbox
//! worker ([`worker`]) through one of lettre's transports ([`transport`]); SMTP connections are
//! csmd's own pool around lettre's protocol client ([`smtp`]).

pub mod ics;
pub mod smtp;
pub mod templates;
pub mod transport;
pub mod worker;
