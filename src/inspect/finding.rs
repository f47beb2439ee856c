//! The plain data every detector produces and every later step consumes.
//!
//! Findings never carry the matched text: only where it is (segment + span)
//! and what it is. Whoever needs the value (redaction) slices the request.

use std::collections::BTreeMap;
use std::ops::Range;

/// Broad family of a finding; policies match on it (`pii: any`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Pii,
    Secret,
    Term,
    /// Opaque content (a `data:` URL, a long base64 run) whose text is not
    /// inspected; kind is always [`ATTACHMENT_KIND`].
    Attachment,
    /// A special category of personal data the prompt discloses (health,
    /// religion, ...); kind is one of [`SPECIAL_KINDS`]. Serialized as
    /// `special_category`.
    #[serde(rename = "special_category")]
    Special,
    /// A named place, organisation or nationality (kind one of
    /// [`ENTITY_KINDS`]). Alone it identifies no one ("what is the capital
    /// of France?"), so `pii: any` does not see it and it does not make a
    /// prompt sensitive; policies name it under `entities:`, and redaction
    /// replaces it with the rest. Serialized as `entity`.
    Entity,
}

/// One detected item in one text segment of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub category: Category,
    /// Stable type name, one of [`PII_KINDS`], [`SECRET_KINDS`],
    /// [`SPECIAL_KINDS`], [`ENTITY_KINDS`], [`TERM_KIND`] or
    /// [`ATTACHMENT_KIND`].
    pub kind: &'static str,
    /// Index of the scanned segment (see `Detectors::scan`).
    pub segment: usize,
    /// Byte range inside that segment.
    pub span: Range<usize>,
    /// 0.0..=1.0; validated matches are high, bare pattern matches lower.
    pub confidence: f32,
    /// Which check accepted the match: "luhn", "mod97", "ssn_rules",
    /// "aba_checksum", "base58check", "bech32", "eip55", "jwt_header",
    /// "entropy", "context", "pattern", "dictionary", ...
    pub validator: &'static str,
}

/// PII type names that policies may name under `when.pii`.
pub const PII_KINDS: &[&str] = &[
    "email",
    "credit_card",
    "us_ssn",
    "phone",
    "iban",
    "ip_address",
    "mac_address",
    "uk_nino",
    "date_of_birth",
    "passport_number",
    "drivers_license",
    "us_bank_routing",
    "crypto_wallet",
    // People and places (`people` detector) and health identifiers (`special`).
    "person",
    "street_address",
    "medical_record_number",
    "health_plan_id",
    // National identifiers beyond the US (`national` detector).
    "de_tax_id",
    "fr_nir",
    "es_dni",
    "es_nie",
    "it_fiscal_code",
    "nl_bsn",
    "uk_nhs",
    "in_aadhaar",
    "in_pan",
    "ca_sin",
    "au_tfn",
    "au_medicare",
    "br_cpf",
    "br_cnpj",
];

/// Secret type names that policies may name under `when.secrets`.
pub const SECRET_KINDS: &[&str] = &[
    "aws_access_key",
    "github_token",
    "openai_key",
    "anthropic_key",
    "private_key",
    "aws_secret_key",
    "gcp_service_account",
    "gcp_api_key",
    "azure_storage_key",
    "azure_client_secret",
    "gitlab_token",
    "slack_token",
    "slack_webhook",
    "stripe_key",
    "twilio_key",
    "sendgrid_key",
    "npm_token",
    "pypi_token",
    "huggingface_token",
    "jwt",
    "database_url",
    "generic_secret",
    "datadog_key",
    "shopify_token",
    "discord_token",
    "telegram_bot_token",
    "mailgun_key",
    "square_token",
    "digitalocean_token",
    "linear_key",
    "notion_token",
    "atlassian_token",
    "heroku_key",
    "postman_key",
    "grafana_token",
    "doppler_token",
    "databricks_token",
    "dynatrace_token",
    "newrelic_key",
    "sentry_token",
    "pulumi_token",
    "age_secret_key",
    "vault_token",
    "terraform_token",
    "alibaba_key",
    "flyio_token",
    "planetscale_token",
    "onepassword_token",
];

/// Special-category sub-types that policies may name under
/// `when.special_category`; the kind of a [`Category::Special`] finding.
pub const SPECIAL_KINDS: &[&str] =
    &["health", "hr", "religion", "ethnicity", "sexual_orientation", "politics", "trade_union", "biometric", "minor"];

/// Named-entity type names ([`Category::Entity`]) that policies may name
/// under `when.entities`: cities, regions and countries; companies and
/// other organisations; nationalities and national groups.
pub const ENTITY_KINDS: &[&str] = &["location", "organization", "nationality"];

/// The kind of every dictionary hit; the term itself is never recorded.
pub const TERM_KIND: &str = "term";

/// The kind of every [`Category::Attachment`] finding. Its validator says
/// which shape it was: "data_url" or "base64_run".
pub const ATTACHMENT_KIND: &str = "opaque_attachment";

/// Count findings by type name, for the audit record and metrics.
pub fn count_by_kind(findings: &[Finding]) -> BTreeMap<&'static str, u32> {
    let mut counts = BTreeMap::new();
    for f in findings {
        *counts.entry(f.kind).or_insert(0) += 1;
    }
    counts
}
