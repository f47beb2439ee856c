//! Limit: between decide and dispatch, a request the policy sends to the
//! cloud must fit its team's budgets and rate limits (`limits:`). Admitted,
//! it carries a charge that the record settles with the answer's usage
//! (`trail`); over a limit, it is refused with 429 and `retry-after`, or
//! answered by the local model, as the team's `on_limit` says.

use super::*;
use crate::limits::{Over, Refused};
use crate::policy::limits::OnLimit;

impl Sluice {
    /// `Ok(None)`: go on as decided. `Ok(Some(over))`: a limit is reached
    /// and the team answers from the local model instead; the caller
    /// serves `decision` (now `local`) and must not fall back to the cloud.
    pub(super) async fn check_limits(
        &self,
        shape: Shape,
        inspected: &Inspected,
        decision: &mut Decision,
        trail: &mut Trail,
    ) -> Result<Option<Over>, Refusal> {
        let limits = inspected.policy.limits();
        if limits.is_empty() || !matches!(decision.action, Action::Cloud | Action::Redact) {
            return Ok(None);
        }
        let identity = &inspected.request.identity;
        let over = match self.limits.admit(&identity.team, &identity.user, limits).await {
            Ok(charge) => {
                trail.charge = charge;
                return Ok(None);
            }
            Err(Refused::StoreDown(why)) => {
                return Err(Refusal::new(
                    ErrorKind::LimitsUnavailable,
                    format!("sluice cannot reach its limits store ({why}), so the request was not forwarded"),
                ));
            }
            Err(Refused::Over(over)) => over,
        };
        let local = limits.on_limit == OnLimit::Local && shape.is_chat();
        metrics::counter!(telemetry::LIMIT_REACHED, "team" => identity.team.clone(), "budget" => over.kind.name(),
            "scope" => over.scope.as_str(), "action" => if local { "local" } else { "block" })
        .increment(1);
        let rule = format!("limits.{}", over.kind.name());
        trail.record.rule = rule.clone();
        if !local {
            // The policy's reason stays; the refusal adds the limit's.
            trail.record.decision = "block".into();
            return Err(over_limit(&over));
        }
        *decision = Decision {
            action: Action::Local,
            reason: format!("{}; answered by the local model (on_limit: local)", over.explain()),
            because: vec![format!("{}: {} >= {}", over.kind.name(), over.used, over.limit)],
            decided_by: std::sync::Arc::from(rule.as_str()),
            rule,
            redact: None,
            sticky: false,
            // What monitor-mode rules would have done still goes on record.
            monitor: std::mem::take(&mut decision.monitor),
        };
        trail.record.decision = "local".into();
        trail.record.reason = decision.reason.clone();
        tracing::Span::current().record("decision", "local");
        Ok(Some(over))
    }
}

/// 429 in the client's format, `retry-after` the seconds until the
/// window resets.
pub(super) fn over_limit(over: &Over) -> Refusal {
    let mut refusal =
        Refusal::new(ErrorKind::LimitReached, format!("{}; the request was not forwarded", over.explain()));
    refusal.retry_after = Some(over.retry_after);
    refusal
}

impl Sluice {
    /// Charge an admitted request's budgets with what its answer used.
    pub(super) fn settle_limits(&self, trail: &mut Trail) {
        let Some(charge) = trail.charge.take() else {
            return;
        };
        let usage = trail.record.usage.as_ref();
        let tokens = usage.map_or(0, |u| u.tokens_in.saturating_add(u.tokens_out));
        let micro_usd = usage.map_or(0, |u| (u.cost_usd * 1e6).round() as u64);
        self.limits.settle(charge, tokens, micro_usd);
    }
}
