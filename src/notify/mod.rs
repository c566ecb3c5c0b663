//! Customer e-mail: what the processors queue in the outbox is rendered
//! from templates ([`templates`]), carries an iCalendar part when it is
//! about a maintenance window ([`ics`]), and is delivered by the outbox
//! worker ([`worker`]) through a transport ([`transport`]): SMTP (csmd's
//! own pool around lettre's protocol client, [`smtp`]), sendmail, or files.

pub mod ics;
pub mod smtp;
pub mod templates;
pub mod transport;
pub mod worker;
