//! Inspection: every string, key and attachment of a body scanned, the
//! findings that count for the team, and the signals the policy decides on.

use super::*;

/// A request read and scanned, with everything its policy decides on.
pub(super) struct Inspected {
    pub policy: Arc<TeamPolicy>,
    pub request: wire::CanonicalRequest,
    pub inventory: Inventory,
    /// The findings that count for this team (`min_confidence` applied).
    pub findings: Vec<Finding>,
    pub parsed: bool,
    pub provider: String,
    pub prompt_tokens: u64,
    pub exact_tokens: bool,
    pub task: crate::classify::Prediction,
    pub sticky_local: bool,
    pub estimated_cost_usd: Option<f64>,
    pub local_queue_depth: u64,
}

impl Inspected {
    /// What was scanned, in the order findings index it.
    pub(super) fn segments(&self) -> Vec<&str> {
        self.inventory.texts().collect()
    }

    pub(super) fn signals(&self) -> Signals<'_> {
        let request = &self.request;
        Signals {
            findings: &self.findings,
            requested_model: &request.model,
            provider: &self.provider,
            prompt_tokens: self.prompt_tokens,
            prompt_tokens_exact: self.exact_tokens,
            task: Some(self.task),
            turns: request.turn_count(),
            tool_steps: request.tool_steps(),
            tools_present: !request.tools.is_empty(),
            stream: request.stream,
            unparsed: !self.parsed,
            estimated_cost_usd: self.estimated_cost_usd,
            local_queue_depth: self.local_queue_depth,
            sticky_local: self.sticky_local,
        }
    }
}

impl Sluice {
    /// Read the body, scan every string, key and attachment in it, and
    /// gather the signals: findings, tokens, task, stickiness, cost.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn inspect(
        self: Arc<Self>,
        policies: &Arc<Policies>,
        shape: Shape,
        parts: &http::request::Parts,
        body: Bytes,
        identity: Identity,
        via: &Via,
        trail: &mut Trail,
    ) -> Result<Inspected, Refusal> {
        let started = Instant::now();
        let content_type =
            parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        // Reading and scanning a large body takes milliseconds: off the
        // async workers, through a bounded pool, so a few huge prompts
        // cannot hold up every other connection.
        let (extracted, scanned, digest) = if InspectPool::should_offload(body.len()) {
            let (this, path, team) = (self.clone(), parts.uri.path().to_string(), identity.team.clone());
            let policies = policies.clone();
            self.pool
                .run(move || this.read_and_scan(shape, &path, &body, &content_type, policies.dictionary(&team)))
                .await??
        } else {
            self.read_and_scan(shape, parts.uri.path(), &body, &content_type, policies.dictionary(&identity.team))?
        };
        let Extracted { mut request, inventory, parsed } = extracted;
        request.identity = identity;
        trail.record.model_requested = request.model.clone();
        let team = &request.identity.team;
        let Some(policy) = policies.team(team).cloned() else {
            return Err(Refusal::new(
                ErrorKind::PolicyBlock,
                format!("team `{team}` has no policy; sluice refuses rather than guess (add {team}.yaml to the policies directory)"),
            ));
        };
        let findings = policy.relevant_findings(&scanned);
        let (prompt_tokens, exact_tokens) = self.prompt_tokens(shape, &request, &policy);
        let task = self.classifier.classify(&request.last_user_text());
        // Digesting the conversation is only worth it when the team keeps
        // conversations sticky and some conversation has been marked.
        let sticky_local = policy.sticky_local()
            && !self.sticky.is_empty()
            && self.sticky.is_sticky(&Conversation::of(&request.identity.team, &request));
        trail.record.prompt_hmac = digest;
        trail.record.findings = count_by_kind(&findings).into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        trail.record.attachments = inventory.attachments.iter().map(AttachmentNote::of).collect();
        let elapsed = started.elapsed();
        trail.record.latency_us.inspect = micros(elapsed);
        metrics::histogram!(telemetry::INSPECTION_DURATION).record(elapsed.as_secs_f64());
        Ok(Inspected {
            estimated_cost_usd: self.config.estimated_cost_usd(&request.model, prompt_tokens, request.max_tokens),
            local_queue_depth: self.local.queue_depth(),
            provider: via.provider(shape.api),
            policy,
            request,
            inventory,
            findings,
            parsed,
            prompt_tokens,
            exact_tokens,
            task,
            sticky_local,
        })
    }

    /// Tokenizing costs ~0.3 ms per 1,000 tokens, more than the rest of
    /// the request path together, so the loaded model's tokenizer counts
    /// only where the exact number can change the outcome: a
    /// `prompt_tokens` or cost condition of this team's policy that the
    /// count's bounds straddle, or the local route's context check (which
    /// counts there). Otherwise the estimate, capped by the bound, decides
    /// exactly as the count would. Returns (tokens, counted exactly).
    fn prompt_tokens(&self, shape: Shape, request: &wire::CanonicalRequest, policy: &TeamPolicy) -> (u64, bool) {
        let estimate = wire::CanonicalRequest::estimated_prompt_tokens(&request.text_segments());
        if !self.local.has_tokenizer() || !shape.is_chat() {
            return (estimate, false);
        }
        let max_tokens = self.local.max_token_count(request);
        if policy.needs_exact_tokens(max_tokens) {
            (self.local.count_tokens(request, estimate), true)
        } else {
            (estimate.min(max_tokens), false)
        }
    }

    /// Extract a body and scan everything in it: the CPU-heavy part of a
    /// request, run inline or on the inspection pool.
    pub(super) fn read_and_scan(
        &self,
        shape: Shape,
        path: &str,
        body: &[u8],
        content_type: &str,
        dictionary: Option<&Dictionary>,
    ) -> Result<Scanned, wire::ParseError> {
        let key = Some(&self.prompt_key);
        scan_body(&self.detectors, dictionary, shape, path, body, content_type, key)
    }
}

/// A body read and scanned: what it says, every finding (before the team's
/// `min_confidence`), and the keyed digest of what was scanned (empty
/// when no key was given).
pub type Scanned = (Extracted, Vec<Finding>, String);

/// Read a body of `shape` and scan every string, key and attachment in it.
/// `sluice serve` and `sluice policy test` both inspect through here, so
/// the CLI finds exactly what the server would.
pub fn scan_body(
    detectors: &Detectors,
    dictionary: Option<&Dictionary>,
    shape: Shape,
    path: &str,
    body: &[u8],
    content_type: &str,
    prompt_key: Option<&PromptKey>,
) -> Result<Scanned, wire::ParseError> {
    let extracted = wire::shapes::extract(shape, path, body, content_type)?;
    let (scanned, digest) = scan_inventory(detectors, dictionary, &extracted.inventory, prompt_key);
    Ok((extracted, scanned, digest))
}

/// Every finding in an inventory (its texts, then one per attachment) and
/// the keyed digest of what was scanned (empty without a key).
pub(super) fn scan_inventory(
    detectors: &Detectors,
    dictionary: Option<&Dictionary>,
    inventory: &Inventory,
    prompt_key: Option<&PromptKey>,
) -> (Vec<Finding>, String) {
    let segments: Vec<&str> = inventory.texts().collect();
    let mut scanned = detectors.scan(dictionary, &segments);
    scanned.extend(attachment_findings(inventory, segments.len()));
    (scanned, prompt_key.map(|key| prompt_digest(key, &segments)).unwrap_or_default())
}

/// An `attachment` finding per attachment of the body, so `attachments:`
/// conditions fire. They point past the scanned segments: there is no
/// text of theirs to redact.
fn attachment_findings(inventory: &Inventory, first_segment: usize) -> impl Iterator<Item = Finding> + '_ {
    inventory.attachments.iter().enumerate().map(move |(i, a)| Finding {
        category: Category::Attachment,
        kind: ATTACHMENT_KIND,
        segment: first_segment + i,
        span: 0..0,
        confidence: 1.0,
        validator: media_class(&a.media_type),
    })
}

pub(super) fn media_class(media_type: &str) -> &'static str {
    match media_type.split('/').next().unwrap_or("") {
        "image" => "image",
        "audio" => "audio",
        "video" => "video",
        "text" => "text",
        _ if media_type == "application/pdf" => "document",
        _ => "file",
    }
}

/// HMAC-SHA-256 under the deployment's prompt key over the prompt
/// segments, each length-prefixed so that segment boundaries are part of
/// the digest. (Records before `prompt_hmac` hold the unkeyed SHA-256 of
/// the same input, which anyone could confirm a guessed prompt against.)
pub(super) fn prompt_digest(key: &PromptKey, segments: &[&str]) -> String {
    use hmac::Mac;
    let mut h = key.hmac();
    for s in segments {
        h.update(&(s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    hex::encode(h.finalize().into_bytes())
}

/// The signals behind a decision, for the audit record: numbers and class
/// names, never text.
pub fn signal_summary(signals: &Signals, decision: &crate::policy::Decision) -> serde_json::Value {
    let mut summary = serde_json::to_value(signals.summary()).unwrap_or_default();
    if let Some(map) = summary.as_object_mut() {
        map.insert("because".into(), serde_json::json!(decision.because));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn digest_depends_on_segment_boundaries_and_the_key() {
        let key = PromptKey::new([1; 32]);
        assert_ne!(prompt_digest(&key, &["ab", "c"]), prompt_digest(&key, &["a", "bc"]));
        assert_eq!(prompt_digest(&key, &["x"]), prompt_digest(&key, &["x"]));
        assert_ne!(prompt_digest(&key, &["x"]), prompt_digest(&PromptKey::new([2; 32]), &["x"]));
        // Not the unkeyed digest older records hold.
        let mut plain = Sha256::new();
        plain.update(1u64.to_be_bytes());
        plain.update(b"x");
        assert_ne!(prompt_digest(&key, &["x"]), hex::encode(plain.finalize()));
    }
}
