//! Change windows: weekly schedules and absolute intervals read in an IANA time zone.
//!
//! Local times are compared in the window's zone, so a `09:00` window opens at 09:00 on
//! both sides of a daylight-saving change.

use jiff::civil::{DateTime, Weekday as CivilWeekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::api::{ChangeWindow, Weekday};

/// A time zone by IANA name.
pub fn parse_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("unknown IANA time zone {name:?}"))
}

/// `HH:MM` as minutes after midnight; `24:00` is allowed (end of day).
pub fn parse_clock(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day HH:MM (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// A local civil date-time `YYYY-MM-DDTHH:MM[:SS]`, read in the window's `timeZone`.
///
/// A UTC offset (`Z`, `+09:00`) or a bracketed zone (`[Asia/Tokyo]`) is refused: jiff's
/// civil parser would accept and ignore it, reading `00:00+09:00` as 00:00 in the window's
/// zone, hours away from what was meant.
pub fn parse_civil(text: &str) -> Result<DateTime, String> {
    if text.contains('[') {
        return Err(format!(
            "{text:?} names a time zone; write the local time alone (YYYY-MM-DDTHH:MM[:SS]) and set timeZone instead"
        ));
    }
    // After the date `YYYY-MM-DD`, an offset is a sign or a `Z`.
    let after_date = text.get(10..).unwrap_or_default();
    if after_date.contains(['Z', 'z', '+', '-']) {
        return Err(format!(
            "{text:?} has a UTC offset; write the local time alone (YYYY-MM-DDTHH:MM[:SS]) and set timeZone instead"
        ));
    }
    text.parse::<DateTime>()
        .map_err(|e| format!("{text:?} is not a local date-time YYYY-MM-DDTHH:MM[:SS]: {e}"))
}

/// A duration such as `72h`, `30m`, `1h30m` or ISO 8601 `PT72H`; must be positive.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let duration: SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 72h, 30m or 1h30m"))?;
    if duration.is_positive() {
        Ok(duration)
    } else {
        Err(format!("{text:?} must be a positive duration"))
    }
}

fn civil_weekday(day: Weekday) -> CivilWeekday {
    match day {
        Weekday::Monday => CivilWeekday::Monday,
        Weekday::Tuesday => CivilWeekday::Tuesday,
        Weekday::Wednesday => CivilWeekday::Wednesday,
        Weekday::Thursday => CivilWeekday::Thursday,
        Weekday::Friday => CivilWeekday::Friday,
        Weekday::Saturday => CivilWeekday::Saturday,
        Weekday::Sunday => CivilWeekday::Sunday,
    }
}

/// Is `now` inside the window? Errors describe a malformed window (policy validation
/// refuses those, so the webhook never sees one).
pub fn is_active(window: &ChangeWindow, now: Timestamp) -> Result<bool, String> {
    let zone = parse_zone(&window.time_zone)?;
    match (&window.weekly, &window.absolute) {
        (Some(weekly), None) => {
            let start = parse_clock(&weekly.start)?;
            let end = parse_clock(&weekly.end)?;
            let local = now.to_zoned(zone);
            let minute = u32::from(local.hour().unsigned_abs()) * 60
                + u32::from(local.minute().unsigned_abs());
            let today = local.weekday();
            let listed = |day: CivilWeekday| weekly.days.iter().any(|d| civil_weekday(*d) == day);
            Ok(if start < end {
                listed(today) && minute >= start && minute < end
            } else {
                (listed(today) && minute >= start) || (listed(today.previous()) && minute < end)
            })
        }
        (None, Some(absolute)) => {
            let start = parse_civil(&absolute.start)?
                .to_zoned(zone.clone())
                .map_err(|e| e.to_string())?
                .timestamp();
            let end = parse_civil(&absolute.end)?
                .to_zoned(zone)
                .map_err(|e| e.to_string())?
                .timestamp();
            Ok(now >= start && now < end)
        }
        _ => Err("a window needs exactly one of weekly or absolute".to_string()),
    }
}

/// A short description for messages: `"weekend-freeze" (Saturday, Sunday 00:00–24:00 Europe/Berlin)`.
pub fn describe(window: &ChangeWindow) -> String {
    let when = match (&window.weekly, &window.absolute) {
        (Some(w), _) => {
            let days: Vec<String> = w.days.iter().map(|d| format!("{d:?}")).collect();
            format!("{} {}–{}", days.join(", "), w.start, w.end)
        }
        (None, Some(a)) => format!("{} to {}", a.start, a.end),
        (None, None) => "no schedule".to_string(),
    };
    format!("{:?} ({when} {})", window.name, window.time_zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AbsoluteInterval, WeeklySchedule, WindowEffect};

    fn weekly(days: &[Weekday], start: &str, end: &str, zone: &str) -> ChangeWindow {
        ChangeWindow {
            name: "w".into(),
            effect: WindowEffect::Deny,
            time_zone: zone.into(),
            weekly: Some(WeeklySchedule {
                days: days.to_vec(),
                start: start.into(),
                end: end.into(),
            }),
            absolute: None,
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn weekly_windows_table() {
        let weekend = weekly(
            &[Weekday::Saturday, Weekday::Sunday],
            "00:00",
            "24:00",
            "Europe/Berlin",
        );
        let business = weekly(
            &[
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ],
            "09:00",
            "17:00",
            "Europe/Berlin",
        );
        let overnight = weekly(&[Weekday::Friday], "22:00", "06:00", "America/New_York");
        let cases = [
            // Saturday 2025-03-29 00:30 Berlin (CET) = Friday 23:30 UTC.
            (&weekend, "2025-03-28T23:30:00Z", true),
            (&weekend, "2025-03-28T22:59:00Z", false),
            // Sunday 23:59 Berlin (CEST after the switch) = 21:59 UTC.
            (&weekend, "2025-03-30T21:59:00Z", true),
            (&weekend, "2025-03-30T22:00:00Z", false),
            // 09:00 local both before (UTC+1) and after (UTC+2) the spring switch.
            (&business, "2025-03-28T08:00:00Z", true),
            (&business, "2025-03-28T07:59:00Z", false),
            (&business, "2025-03-31T07:00:00Z", true),
            (&business, "2025-03-31T06:59:00Z", false),
            (&business, "2025-03-31T15:00:00Z", false),
            // Friday 22:00 to Saturday 06:00 New York.
            (&overnight, "2025-03-15T02:00:00Z", true), // Fri 22:00 EDT
            (&overnight, "2025-03-15T09:59:00Z", true), // Sat 05:59
            (&overnight, "2025-03-15T10:00:00Z", false), // Sat 06:00
            (&overnight, "2025-03-14T03:00:00Z", false), // Thu 23:00
        ];
        for (window, now, expected) in cases {
            assert_eq!(
                is_active(window, at(now)).unwrap(),
                expected,
                "{} at {now}",
                describe(window)
            );
        }
    }

    #[test]
    fn absolute_windows_use_the_zone() {
        let window = ChangeWindow {
            name: "year-end".into(),
            effect: WindowEffect::Deny,
            time_zone: "Asia/Tokyo".into(),
            weekly: None,
            absolute: Some(AbsoluteInterval {
                start: "2025-12-24T00:00".into(),
                end: "2026-01-02T00:00".into(),
            }),
        };
        assert!(!is_active(&window, at("2025-12-23T14:59:59Z")).unwrap());
        assert!(is_active(&window, at("2025-12-23T15:00:00Z")).unwrap());
        assert!(is_active(&window, at("2026-01-01T14:59:59Z")).unwrap());
        assert!(!is_active(&window, at("2026-01-01T15:00:00Z")).unwrap());
    }

    #[test]
    fn civil_times_with_an_offset_or_a_zone_are_refused() {
        let cases = [
            ("2025-12-24T00:00", Ok(())),
            ("2025-12-24T00:00:00", Ok(())),
            ("2025-12-24T00:00:00.5", Ok(())),
            ("2025-12-24 00:00", Ok(())),
            ("2025-12-24T00:00:00+09:00", Err("has a UTC offset")),
            ("2025-12-24T00:00:00-05:00", Err("has a UTC offset")),
            ("2025-12-24T00:00:00Z", Err("has a UTC offset")),
            ("2025-12-24T00:00z", Err("has a UTC offset")),
            ("2025-12-24T00:00+0900", Err("has a UTC offset")),
            ("2025-12-24T00:00[Asia/Tokyo]", Err("names a time zone")),
            (
                "2025-12-24T00:00+09:00[Asia/Tokyo]",
                Err("names a time zone"),
            ),
            ("2025-12-24", Ok(())),
            ("2025-12-24Z", Err("has a UTC offset")),
            ("tomorrow", Err("is not a local date-time")),
        ];
        for (text, expected) in cases {
            match (parse_civil(text), expected) {
                (Ok(_), Ok(())) => {}
                (Err(message), Err(part)) => {
                    assert!(message.contains(part), "{text}: {message}");
                    if part != "is not a local date-time" {
                        assert!(message.contains("set timeZone instead"), "{message}");
                    }
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_window_with_an_offset_is_never_active() {
        // Fail closed: the webhook never evaluates such a window as if the offset were
        // not there (validation refuses it first).
        let window = ChangeWindow {
            name: "year-end".into(),
            effect: WindowEffect::Deny,
            time_zone: "UTC".into(),
            weekly: None,
            absolute: Some(AbsoluteInterval {
                start: "2025-12-24T00:00:00+09:00".into(),
                end: "2026-01-02T00:00[Asia/Tokyo]".into(),
            }),
        };
        let result = is_active(&window, at("2025-12-25T00:00:00Z"));
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.contains("set timeZone instead")),
            "{result:?}"
        );
    }

    #[test]
    fn parsing_table() {
        assert_eq!(parse_clock("00:00"), Ok(0));
        assert_eq!(parse_clock("24:00"), Ok(1440));
        assert_eq!(parse_clock("17:30"), Ok(1050));
        for bad in ["24:01", "9:00", "12:60", "noon", "12-00"] {
            assert!(parse_clock(bad).is_err(), "{bad}");
        }
        assert!(parse_zone("Europe/Berlin").is_ok());
        assert!(parse_zone("Mars/Olympus").is_err());
        assert_eq!(parse_duration("72h"), Ok(SignedDuration::from_hours(72)));
        assert_eq!(parse_duration("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("PT30M"), Ok(SignedDuration::from_mins(30)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
