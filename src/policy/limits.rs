//! The `limits:` section of a team's policy file: budgets and rate limits
//! for the team as a whole and for each of its users, and what happens to a
//! request that would go past one. The counting is `crate::limits`'s.
//!
//! ```yaml
//! limits:
//!   team:     { requests_per_minute: 600, tokens_per_day: 2000000, usd_per_month: 500 }
//!   per_user: { requests_per_minute: 60,  tokens_per_day: 200000,  usd_per_month: 50 }
//!   on_limit: block        # or `local`: the local model answers instead
//! ```

use serde::{Deserialize, Deserializer};

/// A team's limits; empty when the file has no `limits:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Shared by everyone in the team.
    #[serde(default)]
    pub team: Budget,
    /// Each user of the team on their own.
    #[serde(default)]
    pub per_user: Budget,
    #[serde(default)]
    pub on_limit: OnLimit,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.team.is_empty() && self.per_user.is_empty()
    }
}

/// Limits in calendar windows: the UTC minute, day and month. Absent
/// means unlimited; 0 allows nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens, as the provider reports them.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Written in dollars (`12.50`), kept in millionths of a dollar: the
    /// unit the counters use, priced by the config's price table.
    #[serde(default, rename = "usd_per_month", deserialize_with = "micro_usd")]
    pub micro_usd_per_month: Option<u64>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|k| self.get(*k).is_none())
    }

    /// The limit of one kind, in its counting unit.
    pub fn get(&self, kind: Kind) -> Option<u64> {
        match kind {
            Kind::Requests => self.requests_per_minute,
            Kind::Tokens => self.tokens_per_day,
            Kind::Usd => self.micro_usd_per_month,
        }
    }
}

/// What a request that would go past a limit gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// HTTP 429 in the client's wire format, with `retry-after`.
    #[default]
    Block,
    /// The local model answers instead (chat requests; others get 429).
    Local,
}

impl OnLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            OnLimit::Block => "block",
            OnLimit::Local => "local",
        }
    }
}

/// The three budgets, each counted in its own calendar window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Requests per UTC minute, reserved when a request is admitted.
    Requests,
    /// Tokens per UTC day, added when the answer's usage is known.
    Tokens,
    /// Millionths of a USD per UTC month, added with the tokens.
    Usd,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Requests, Kind::Tokens, Kind::Usd];

    /// The policy key, also the `budget` metric label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests_per_minute",
            Kind::Tokens => "tokens_per_day",
            Kind::Usd => "usd_per_month",
        }
    }

    /// Short form in counter keys.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Requests => "rpm",
            Kind::Tokens => "tpd",
            Kind::Usd => "usd",
        }
    }

    pub fn from_code(code: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// What one unit of the counter is.
    pub fn unit(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Usd => "micro_usd",
        }
    }
}

/// Dollars, finite and not negative, to millionths of a dollar.
fn micro_usd<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(usd) = Option::<f64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    // 1.8e13 dollars is where millionths stop fitting in a u64.
    if !usd.is_finite() || !(0.0..=1e12).contains(&usd) {
        return Err(serde::de::Error::custom(format!(
            "usd_per_month must be a dollar amount between 0 and 1e12, not {usd}"
        )));
    }
    Ok(Some((usd * 1e6).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_dollars_in_millionths() {
        let l: Limits = serde_yaml::from_str(
            "team: { requests_per_minute: 10, usd_per_month: 12.5 }\nper_user: { tokens_per_day: 1000 }\non_limit: local\n",
        )
        .unwrap();
        assert_eq!(l.team.get(Kind::Requests), Some(10));
        assert_eq!(l.team.get(Kind::Usd), Some(12_500_000));
        assert_eq!(l.team.get(Kind::Tokens), None);
        assert_eq!(l.per_user.get(Kind::Tokens), Some(1000));
        assert_eq!(l.on_limit, OnLimit::Local);
        assert!(!l.is_empty());
        assert!(Limits::default().is_empty());
    }

    #[test]
    fn a_team_file_carries_its_limits_and_bad_ones_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.yaml"), "default: cloud\n").unwrap();
        std::fs::write(
            dir.path().join("payments.yaml"),
            "default: cloud\nlimits:\n  per_user: { tokens_per_day: 500 }\n  on_limit: local\n",
        )
        .unwrap();
        let set = crate::policy::PolicySet::load_dir(dir.path()).unwrap();
        let limits = set.team("payments").unwrap().limits();
        assert_eq!((limits.per_user.tokens_per_day, limits.on_limit), (Some(500), OnLimit::Local));
        assert!(set.team("default").unwrap().limits().is_empty());

        std::fs::write(dir.path().join("payments.yaml"), "default: cloud\nlimits:\n  team: { usd_per_month: -5 }\n")
            .unwrap();
        let errors = crate::policy::PolicySet::load_dir(dir.path()).unwrap_err();
        let e = &errors.0[0];
        assert!(e.file.ends_with("payments.yaml") && e.line == Some(3), "{e}");
        assert!(e.reason.contains("usd_per_month"), "{e}");
    }

    #[test]
    fn refuses_bad_values_and_unknown_keys() {
        for bad in [
            "team: { usd_per_month: -1 }",
            "team: { requests_per_minute: -1 }",
            "team: { requests_per_hour: 5 }",
            "on_limit: queue",
            "per_user: { tokens_per_day: lots }",
        ] {
            assert!(serde_yaml::from_str::<Limits>(bad).is_err(), "{bad}");
        }
    }
}
