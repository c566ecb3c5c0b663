//! A report's month, in the customer's time zone: it starts at local
//! midnight on the 1st and ends at local midnight on the 1st of the next
//! month, so a month with a daylight saving change has an hour more or less
//! than its days times 24.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Tz;

/// A calendar month (`YYYY-MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Its first day.
    first: NaiveDate,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Month> {
        NaiveDate::from_ymd_opt(year, month, 1).map(|first| Month { first })
    }

    /// The month holding `day`.
    pub fn of(day: NaiveDate) -> Month {
        Month {
            first: day.with_day(1).unwrap_or(day),
        }
    }

    /// The month `at` falls in, in `tz`.
    pub fn containing(at: DateTime<Utc>, tz: Tz) -> Month {
        Month::of(at.with_timezone(&tz).date_naive())
    }

    pub fn first_day(&self) -> NaiveDate {
        self.first
    }

    pub fn year(&self) -> i32 {
        self.first.year()
    }

    pub fn number(&self) -> u32 {
        self.first.month()
    }

    pub fn next(&self) -> Month {
        self.plus(1)
    }

    pub fn previous(&self) -> Month {
        self.minus(1)
    }

    pub fn plus(&self, months: u32) -> Month {
        Month {
            first: self
                .first
                .checked_add_months(Months::new(months))
                .unwrap_or(self.first),
        }
    }

    pub fn minus(&self, months: u32) -> Month {
        Month {
            first: self
                .first
                .checked_sub_months(Months::new(months))
                .unwrap_or(self.first),
        }
    }

    /// The first instant of the month in `tz`.
    pub fn start(&self, tz: Tz) -> DateTime<Utc> {
        start_of_day(self.first, tz)
    }

    /// The first instant after the month in `tz`.
    pub fn end(&self, tz: Tz) -> DateTime<Utc> {
        self.next().start(tz)
    }

    /// How many minutes the month has in `tz`.
    pub fn minutes(&self, tz: Tz) -> i64 {
        (self.end(tz) - self.start(tz)).num_minutes()
    }

    /// `November 2026`.
    pub fn long_name(&self) -> String {
        self.first.format("%B %Y").to_string()
    }

    /// `Nov 26`, for chart axes.
    pub fn short_name(&self) -> String {
        self.first.format("%b %y").to_string()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.first.year(), self.first.month())
    }
}

impl std::str::FromStr for Month {
    type Err = String;

    fn from_str(text: &str) -> Result<Month, String> {
        let bad = || format!("month {text:?} is not YYYY-MM");
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year = year.parse().map_err(|_| bad())?;
        let month = month.parse().map_err(|_| bad())?;
        Month::new(year, month).ok_or_else(bad)
    }
}

/// The first instant of a day in a time zone (the first existing one when
/// a clock change skips midnight).
pub fn start_of_day(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut time = day.and_time(chrono::NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(at) = tz.from_local_datetime(&time).earliest() {
            return at.with_timezone(&Utc);
        }
        time += chrono::Duration::hours(1);
    }
    time.and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn month(text: &str) -> Month {
        text.parse().unwrap()
    }

    #[test]
    fn months_parse_strictly() {
        assert_eq!(month("2026-11").to_string(), "2026-11");
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "2026-11-01", ""] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_month_is_bounded_by_local_midnights() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let m = month("2026-11");
        assert_eq!(m.start(paris).to_rfc3339(), "2026-10-31T23:00:00+00:00");
        assert_eq!(m.end(paris).to_rfc3339(), "2026-11-30T23:00:00+00:00");
        assert_eq!(m.minutes(paris), 30 * 1440);
    }

    #[test]
    fn daylight_saving_changes_the_minutes_of_a_month() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // Summer time starts on 29 March 2026: an hour less.
        assert_eq!(month("2026-03").minutes(paris), 31 * 1440 - 60);
        // It ends on 25 October 2026: an hour more.
        assert_eq!(month("2026-10").minutes(paris), 31 * 1440 + 60);
        assert_eq!(month("2026-10").minutes(Tz::UTC), 31 * 1440);
    }

    #[test]
    fn neighbours_cross_years() {
        assert_eq!(month("2026-01").previous(), month("2025-12"));
        assert_eq!(month("2026-12").next(), month("2027-01"));
        assert_eq!(month("2026-11").minus(6), month("2026-05"));
        assert_eq!(month("2026-11").long_name(), "November 2026");
    }
}
