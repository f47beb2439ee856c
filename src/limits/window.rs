//! Calendar windows and counter keys. Each budget counts in its own UTC
//! window (the minute, the day, the month), so every instance and every
//! restart agrees on which window a request falls in, and a window's
//! counter is a key of its own: nothing is ever reset, old keys expire.

use time::{Date, Month, OffsetDateTime};

use crate::policy::limits::Kind;

/// One window of a budget: its number and when it ends (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Minutes, days or months since the epoch.
    pub id: u64,
    pub end: u64,
}

impl Window {
    /// The window of `kind` that `now` (unix seconds) falls in.
    pub fn of(kind: Kind, now: u64) -> Window {
        match kind {
            Kind::Requests => Window { id: now / 60, end: (now / 60 + 1) * 60 },
            Kind::Tokens => Window { id: now / 86_400, end: (now / 86_400 + 1) * 86_400 },
            Kind::Usd => month(now),
        }
    }

    /// Seconds from `now` until the window ends, at least 1.
    pub fn seconds_left(&self, now: u64) -> u64 {
        self.end.saturating_sub(now).max(1)
    }
}

fn month(now: u64) -> Window {
    let at = OffsetDateTime::from_unix_timestamp(i64::try_from(now).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (year, month) = (at.year(), at.month());
    let id = (year.max(1970) as u64 - 1970) * 12 + (u8::from(month) as u64 - 1);
    let (next_year, next_month) =
        if month == Month::December { (year + 1, Month::January) } else { (year, month.next()) };
    let end = Date::from_calendar_date(next_year, next_month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(i64::MAX);
    Window { id, end: u64::try_from(end).unwrap_or(u64::MAX) }
}

/// One counter: a budget kind in one window, for a team or one of its
/// users.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub kind: Kind,
    pub window: u64,
    pub team: String,
    pub user: Option<String>,
}

impl CounterKey {
    /// `rpm:29000000:t:payments` or `tpd:20000:u:payments:alice`. Team
    /// names have no `:`; the user comes last, so it may.
    pub fn encode(&self) -> String {
        match &self.user {
            None => format!("{}:{}:t:{}", self.kind.code(), self.window, self.team),
            Some(user) => format!("{}:{}:u:{}:{}", self.kind.code(), self.window, self.team, user),
        }
    }

    pub fn decode(key: &str) -> Option<CounterKey> {
        let mut parts = key.splitn(4, ':');
        let kind = Kind::from_code(parts.next()?)?;
        let window = parts.next()?.parse().ok()?;
        let scope = parts.next()?;
        let rest = parts.next()?;
        let (team, user) = match scope {
            "t" => (rest.to_string(), None),
            "u" => {
                let (team, user) = rest.split_once(':')?;
                (team.to_string(), Some(user.to_string()))
            }
            _ => return None,
        };
        Some(CounterKey { kind, window, team, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_calendar_aligned() {
        // 2024-02-29T23:59:30Z
        let now = 1_709_251_170;
        let minute = Window::of(Kind::Requests, now);
        assert_eq!(minute.end, 1_709_251_200);
        assert_eq!(minute.seconds_left(now), 30);
        let day = Window::of(Kind::Tokens, now);
        assert_eq!(day.end, 1_709_251_200, "midnight UTC");
        let month = Window::of(Kind::Usd, now);
        assert_eq!(month.end, 1_709_251_200, "1 March 2024");
        assert_eq!(month.id, (2024 - 1970) * 12 + 1);
        // December rolls into January of the next year.
        let december = Window::of(Kind::Usd, 1_735_000_000); // 2024-12-24
        assert_eq!(december.end, 1_735_689_600); // 2025-01-01T00:00:00Z
        assert_eq!(Window::of(Kind::Usd, 1_735_689_600).id, december.id + 1);
        assert_eq!(Window::of(Kind::Requests, now + 30).id, minute.id + 1);
    }

    #[test]
    fn keys_round_trip_with_colons_in_user_names() {
        for key in [
            CounterKey { kind: Kind::Requests, window: 7, team: "payments".into(), user: None },
            CounterKey { kind: Kind::Usd, window: 660, team: "eng".into(), user: Some("fd00::1".into()) },
        ] {
            assert_eq!(CounterKey::decode(&key.encode()), Some(key.clone()));
        }
        assert_eq!(CounterKey::decode("xyz:1:t:a"), None);
        assert_eq!(CounterKey::decode("rpm:1:q:a"), None);
        assert_eq!(CounterKey::decode("rpm:x:t:a"), None);
    }
}
