//! iCalendar (RFC 5545/5546) parts of maintenance notices.
//!
//! One VEVENT per change and customer: its UID stays the same across the
//! notice, its updates and its cancellation, and SEQUENCE counts the
//! revisions, so calendar clients update or remove the entry they already
//! have instead of adding another. The icalendar crate does the escaping of
//! TEXT values and folds lines at 75 octets; this module makes sure nothing
//! it is given can break out of a property (CR, other control characters,
//! quotes in parameters).

use chrono::{DateTime, Utc};
use icalendar::{Attendee, Calendar, Component, EventLike, EventStatus, Property, Role};

/// How the receiving calendar should treat the event (RFC 5546). The MIME
/// part must carry the same method: `text/calendar; method=REQUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// A notice or update the customer's calendar should hold.
    Request,
    /// Information only: no reply is expected.
    Publish,
    /// The window is cancelled; clients remove the event with this UID.
    Cancel,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Request => "REQUEST",
            Method::Publish => "PUBLISH",
            Method::Cancel => "CANCEL",
        }
    }
}

/// One maintenance window as a calendar event.
#[derive(Debug, Clone)]
pub struct MaintenanceEvent<'a> {
    /// Stable per change and customer, e.g. `CHG0030001.acme@csmd.example.net`.
    pub uid: &'a str,
    /// 0 for the first notice, one more for each revision.
    pub sequence: u32,
    /// DTSTAMP: when this revision was made.
    pub stamp: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub summary: &'a str,
    pub description: &'a str,
    /// The sender's display name and e-mail address.
    pub organizer: Option<(&'a str, &'a str)>,
    /// The recipient's display name and address. RFC 5546 requires an
    /// ATTENDEE in a REQUEST and a CANCEL; it is written as informed, not
    /// invited (ROLE=NON-PARTICIPANT, RSVP=FALSE), so no reply is asked.
    pub attendee: Option<(&'a str, &'a str)>,
    pub method: Method,
}

pub const PRODID: &str = "-//csmd//maintenance notices//EN";

/// The VCALENDAR text (CRLF line endings, lines folded at 75 octets), with
/// METHOD, PRODID "-//csmd//maintenance notices//EN", VERSION 2.0, one
/// VEVENT with UID, SEQUENCE, DTSTAMP, DTSTART/DTEND in UTC (Z form),
/// SUMMARY, DESCRIPTION, STATUS (CONFIRMED, or CANCELLED with
/// Method::Cancel), TRANSP:OPAQUE, ORGANIZER and ATTENDEE when given.
pub fn maintenance_calendar(event: &MaintenanceEvent) -> String {
    let status = match event.method {
        Method::Cancel => EventStatus::Cancelled,
        Method::Request | Method::Publish => EventStatus::Confirmed,
    };
    let mut vevent = icalendar::Event::new();
    vevent
        .uid(&text(event.uid))
        .sequence(event.sequence)
        .timestamp(event.stamp)
        .starts(event.start)
        .ends(event.end)
        .summary(&text(event.summary))
        .description(&text(event.description))
        .status(status)
        .add_property("TRANSP", "OPAQUE");
    if let Some((name, email)) = event.organizer {
        let mut organizer = Property::new("ORGANIZER", format!("mailto:{}", address(email)));
        let name = parameter(name);
        if !name.is_empty() {
            organizer.add_parameter("CN", &name);
        }
        vevent.append_property(organizer);
    }
    if let Some((name, email)) = event.attendee {
        let mut attendee = Attendee::new(format!("mailto:{}", address(email)))
            .role(Role::NonParticipant)
            .rsvp(false);
        let name = parameter(name);
        if !name.is_empty() {
            attendee = attendee.cn(name);
        }
        vevent.attendee(attendee);
    }

    let mut calendar = Calendar::empty();
    calendar
        .append_property(("PRODID", PRODID))
        .append_property(("VERSION", "2.0"))
        .append_property(("CALSCALE", "GREGORIAN"))
        .append_property(("METHOD", event.method.as_str()))
        .push(vevent.done());
    calendar.to_string()
}

/// A TEXT value the crate can escape safely: it escapes `\ , ;` and LF but
/// would emit a bare CR, and RFC 5545 allows no other control characters.
fn text(value: &str) -> String {
    value
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|&c| !c.is_control() || c == '\n' || c == '\t')
        .collect()
}

/// A parameter value (the organizer's CN): one line, no double quotes,
/// which a quoted parameter value cannot contain.
fn parameter(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|&c| c != '"')
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A cal-address is not escaped by the crate: keep it to one line.
fn address(email: &str) -> String {
    email
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use icalendar::{CalendarDateTime, DatePerhapsTime};

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn event(method: Method) -> MaintenanceEvent<'static> {
        MaintenanceEvent {
            uid: "CHG0030001.acme@csmd.example.net",
            sequence: 2,
            stamp: at("2026-12-01T09:30:00Z"),
            start: at("2026-12-15T21:00:00Z"),
            end: at("2026-12-16T01:00:00Z"),
            summary: "Planned maintenance CHG0030001",
            description: "Core router firmware upgrade",
            organizer: Some(("Example Networks NOC", "noc@example.net")),
            attendee: Some(("Jane Doe", "jane@acme.example")),
            method,
        }
    }

    fn parse(ics: &str) -> Calendar {
        ics.parse::<Calendar>().unwrap()
    }

    fn only_event(calendar: &Calendar) -> &icalendar::Event {
        let events: Vec<_> = calendar.events().collect();
        assert_eq!(events.len(), 1);
        events[0]
    }

    fn assert_well_formed(ics: &str) {
        assert!(ics.ends_with("\r\n"));
        for line in ics.split_terminator("\r\n") {
            assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
            assert!(line.len() <= 75, "{} octets: {line:?}", line.len());
        }
    }

    #[test]
    fn a_request_carries_everything_a_calendar_needs_to_file_the_window() {
        let ics = maintenance_calendar(&event(Method::Request));
        assert_well_formed(&ics);
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"));
        assert!(ics.contains("\r\nDTSTART:20261215T210000Z\r\n"), "{ics}");
        assert!(ics.contains("\r\nDTEND:20261216T010000Z\r\n"), "{ics}");
        assert!(ics.contains("\r\nDTSTAMP:20261201T093000Z\r\n"), "{ics}");
        assert!(ics.contains("\r\nTRANSP:OPAQUE\r\n"), "{ics}");

        let calendar = parse(&ics);
        assert_eq!(calendar.property_value("METHOD"), Some("REQUEST"));
        assert_eq!(calendar.property_value("PRODID"), Some(PRODID));
        assert_eq!(calendar.property_value("VERSION"), Some("2.0"));
        let vevent = only_event(&calendar);
        assert_eq!(vevent.get_uid(), Some("CHG0030001.acme@csmd.example.net"));
        assert_eq!(vevent.get_sequence(), Some(2));
        assert_eq!(vevent.get_timestamp(), Some(at("2026-12-01T09:30:00Z")));
        assert_eq!(
            vevent.get_start(),
            Some(DatePerhapsTime::DateTime(CalendarDateTime::Utc(at(
                "2026-12-15T21:00:00Z"
            ))))
        );
        assert_eq!(
            vevent.get_end(),
            Some(DatePerhapsTime::DateTime(CalendarDateTime::Utc(at(
                "2026-12-16T01:00:00Z"
            ))))
        );
        assert_eq!(vevent.get_status(), Some(EventStatus::Confirmed));
        assert_eq!(vevent.get_summary(), Some("Planned maintenance CHG0030001"));
        let organizer = vevent.properties().get("ORGANIZER").unwrap();
        assert_eq!(organizer.value(), "mailto:noc@example.net");
        assert_eq!(
            organizer.params().get("CN").map(|p| p.value()),
            Some("Example Networks NOC")
        );
        let attendees = vevent.get_attendees();
        assert_eq!(attendees.len(), 1);
        let attendee = &attendees[0];
        assert_eq!(attendee.cal_address, "mailto:jane@acme.example");
        assert_eq!(attendee.cn.as_deref(), Some("Jane Doe"));
        assert_eq!(attendee.role, Some(Role::NonParticipant));
        assert_eq!(attendee.rsvp, Some(false));
    }

    #[test]
    fn a_cancel_keeps_the_uid_and_marks_the_event_cancelled() {
        let calendar = parse(&maintenance_calendar(&MaintenanceEvent {
            sequence: 3,
            ..event(Method::Cancel)
        }));
        assert_eq!(calendar.property_value("METHOD"), Some("CANCEL"));
        let vevent = only_event(&calendar);
        assert_eq!(vevent.get_uid(), Some("CHG0030001.acme@csmd.example.net"));
        assert_eq!(vevent.get_sequence(), Some(3));
        assert_eq!(vevent.get_status(), Some(EventStatus::Cancelled));
    }

    #[test]
    fn publish_without_organizer_has_no_organizer() {
        let ics = maintenance_calendar(&MaintenanceEvent {
            organizer: None,
            attendee: None,
            ..event(Method::Publish)
        });
        let calendar = parse(&ics);
        assert_eq!(calendar.property_value("METHOD"), Some("PUBLISH"));
        assert!(!ics.contains("ORGANIZER"));
        assert!(!ics.contains("ATTENDEE"));
        assert_eq!(
            only_event(&calendar).get_status(),
            Some(EventStatus::Confirmed)
        );
    }

    #[test]
    fn long_text_with_separators_and_non_ascii_is_escaped_folded_and_survives_a_round_trip() {
        let description = "Firmware upgrade of the core routers, in two steps; \
            step 1: Paris (café district), step 2: 日本 backbone.\n\
            Expect short interruptions, each under a minute; \
            contact the NOC, quoting CHG0030001, with any questions. "
            .repeat(3);
        let summary = "Maintenance, phase 1; é 日本";
        let ics = maintenance_calendar(&MaintenanceEvent {
            description: &description,
            summary,
            ..event(Method::Request)
        });
        assert_well_formed(&ics);
        assert!(ics.contains(r"Maintenance\, phase 1\; é 日本"), "{ics}");
        assert!(ics.contains(r"\n"));
        assert!(ics.lines().any(|line| line.starts_with(' ')), "not folded");

        let calendar = parse(&ics);
        let vevent = only_event(&calendar);
        assert_eq!(vevent.get_description(), Some(description.as_str()));
        assert_eq!(vevent.get_summary(), Some(summary));
    }

    #[test]
    fn control_characters_cannot_break_out_of_a_property() {
        let ics = maintenance_calendar(&MaintenanceEvent {
            summary: "Works\r\nMETHOD:PUBLISH",
            description: "line one\rline two\u{7}",
            organizer: Some(("NOC \"team\"\r\nX-EVIL:1", "noc@example.net\r\nX-EVIL:2")),
            attendee: Some(("Eve\r\nX-EVIL:3", "eve@acme.example\nX-EVIL:4")),
            ..event(Method::Cancel)
        });
        assert_well_formed(&ics);
        assert!(!ics.contains("\r\nX-EVIL"), "{ics}");
        assert!(!ics.contains("\r\nMETHOD:PUBLISH"), "{ics}");
        let calendar = parse(&ics);
        assert_eq!(calendar.property_value("METHOD"), Some("CANCEL"));
        let vevent = only_event(&calendar);
        assert_eq!(vevent.get_summary(), Some("Works\nMETHOD:PUBLISH"));
        assert_eq!(vevent.get_description(), Some("line one\nline two"));
    }

    #[test]
    fn methods_serialise_as_their_ical_names() {
        for method in [Method::Request, Method::Publish, Method::Cancel] {
            assert_eq!(
                serde_json::to_string(&method).unwrap(),
                format!("\"{}\"", method.as_str())
            );
        }
    }
}
