//! The one provider catalog: which cloud LLM providers sluice knows, the
//! API hosts each answers on, and the API family whose error format each
//! speaks.
//!
//! Three things used to keep their own copy of this list (the proxy's
//! default intercept list, the host → provider naming of proxied requests,
//! and the names a policy's `provider:` condition accepts), and they
//! drifted: a policy could not name `gemini` although the proxy intercepts
//! it. Everything now derives from [`CATALOG`], so adding a provider is one
//! entry here.

use super::Dialect;

/// One cloud provider sluice knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// The name policies use (`provider: [gemini]`) and audit records carry.
    pub name: &'static str,
    /// API host patterns, in the proxy's intercept syntax: an exact host,
    /// or one `*` standing for the label(s) that vary (`*.openai.azure.com`,
    /// `bedrock-runtime.*.amazonaws.com`).
    pub hosts: &'static [&'static str],
    /// The API family whose error format sluice answers in for shapes it
    /// does not parse on this provider's hosts.
    pub api: Dialect,
}

/// Every provider, in a fixed order: policy `provider:` masks are bit
/// positions in it, so entries are only ever appended (openai and
/// anthropic keep bits 0 and 1, as before the catalog existed). The
/// flattened host lists are the proxy's default intercept list, in order.
pub const CATALOG: &[Provider] = &[
    Provider { name: "openai", hosts: &["api.openai.com"], api: Dialect::OpenAiChat },
    Provider { name: "anthropic", hosts: &["api.anthropic.com"], api: Dialect::AnthropicMessages },
    Provider { name: "gemini", hosts: &["generativelanguage.googleapis.com"], api: Dialect::GeminiGenerate },
    Provider { name: "mistral", hosts: &["api.mistral.ai"], api: Dialect::OpenAiChat },
    Provider { name: "groq", hosts: &["api.groq.com"], api: Dialect::OpenAiChat },
    Provider { name: "together", hosts: &["api.together.xyz", "api.together.ai"], api: Dialect::OpenAiChat },
    Provider { name: "deepseek", hosts: &["api.deepseek.com"], api: Dialect::OpenAiChat },
    Provider { name: "openrouter", hosts: &["openrouter.ai"], api: Dialect::OpenAiChat },
    Provider { name: "cohere", hosts: &["api.cohere.com", "api.cohere.ai"], api: Dialect::OpenAiChat },
    Provider { name: "xai", hosts: &["api.x.ai"], api: Dialect::OpenAiChat },
    Provider { name: "perplexity", hosts: &["api.perplexity.ai"], api: Dialect::OpenAiChat },
    Provider { name: "fireworks", hosts: &["api.fireworks.ai"], api: Dialect::OpenAiChat },
    Provider { name: "azure_openai", hosts: &["*.openai.azure.com"], api: Dialect::OpenAiChat },
    // Bedrock's runtime hosts Anthropic models first of all; its errors
    // are closest to the Messages API's.
    Provider { name: "bedrock", hosts: &["bedrock-runtime.*.amazonaws.com"], api: Dialect::AnthropicMessages },
];

/// Provider names in catalog order, for places that need a plain slice
/// (the policy schema indexes its bit masks by position here).
pub const NAMES: [&str; CATALOG.len()] = {
    let mut names = [""; CATALOG.len()];
    let mut i = 0;
    while i < CATALOG.len() {
        names[i] = CATALOG[i].name;
        i += 1;
    }
    names
};

/// Provider names in catalog order.
pub fn names() -> impl Iterator<Item = &'static str> {
    NAMES.iter().copied()
}

/// The catalog entry called `name` (ASCII case ignored, as policies match).
pub fn by_name(name: &str) -> Option<&'static Provider> {
    CATALOG.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The catalog entry whose API hosts include `host`.
///
/// A wildcard here matches any non-empty run of characters, more than the
/// proxy's one-label `*`: naming a host that an operator chose to
/// intercept should not depend on how many labels its deployment uses.
pub fn by_host(host: &str) -> Option<&'static Provider> {
    CATALOG.iter().find(|p| p.hosts.iter().any(|pattern| host_matches(pattern, host)))
}

/// The provider name for an API host; a host outside the catalog is its
/// own name, so audit records and policies still see where a request went.
pub fn provider_of_host(host: &str) -> &str {
    match by_host(host) {
        Some(provider) => provider.name,
        None => host,
    }
}

/// The API family a provider's errors follow; providers outside the
/// catalog are assumed OpenAI-compatible, as most LLM APIs are.
pub fn api_family(provider: &str) -> Dialect {
    by_name(provider).map_or(Dialect::OpenAiChat, |p| p.api)
}

/// The API family of an API host (see [`api_family`]).
pub fn api_family_of_host(host: &str) -> Dialect {
    by_host(host).map_or(Dialect::OpenAiChat, |p| p.api)
}

/// Every host pattern of every provider, in catalog order.
pub fn host_patterns() -> impl Iterator<Item = &'static str> {
    CATALOG.iter().flat_map(|p| p.hosts.iter().copied())
}

/// The proxy's default `intercept` list: every provider's API hosts.
pub fn default_intercept() -> Vec<String> {
    host_patterns().map(str::to_string).collect()
}

/// Whether `host` matches `pattern`: equal, or, for a pattern with a `*`,
/// starting with what precedes it and ending with what follows it, with at
/// least one character in between.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == host,
        Some((prefix, suffix)) => {
            host.len() > prefix.len() + suffix.len() && host.starts_with(prefix) && host.ends_with(suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_their_provider_and_unknown_hosts_name_themselves() {
        assert_eq!(provider_of_host("api.openai.com"), "openai");
        assert_eq!(provider_of_host("api.anthropic.com"), "anthropic");
        assert_eq!(provider_of_host("generativelanguage.googleapis.com"), "gemini");
        assert_eq!(provider_of_host("api.together.ai"), "together");
        assert_eq!(provider_of_host("api.together.xyz"), "together");
        assert_eq!(provider_of_host("api.cohere.ai"), "cohere");
        assert_eq!(provider_of_host("api.x.ai"), "xai");
        assert_eq!(provider_of_host("myco.openai.azure.com"), "azure_openai");
        assert_eq!(provider_of_host("a.b.openai.azure.com"), "azure_openai");
        assert_eq!(provider_of_host("bedrock-runtime.us-east-1.amazonaws.com"), "bedrock");
        assert_eq!(provider_of_host("example.com"), "example.com");
        // The wildcard stands for something: the bare suffix is not a match.
        assert_eq!(provider_of_host("openai.azure.com"), "openai.azure.com");
        assert_eq!(provider_of_host("bedrock-runtime.amazonaws.com"), "bedrock-runtime.amazonaws.com");
        assert_eq!(provider_of_host("s3.us-east-1.amazonaws.com"), "s3.us-east-1.amazonaws.com");
    }

    #[test]
    fn default_intercept_is_every_host_in_catalog_order() {
        assert_eq!(
            default_intercept(),
            [
                "api.openai.com",
                "api.anthropic.com",
                "generativelanguage.googleapis.com",
                "api.mistral.ai",
                "api.groq.com",
                "api.together.xyz",
                "api.together.ai",
                "api.deepseek.com",
                "openrouter.ai",
                "api.cohere.com",
                "api.cohere.ai",
                "api.x.ai",
                "api.perplexity.ai",
                "api.fireworks.ai",
                "*.openai.azure.com",
                "bedrock-runtime.*.amazonaws.com",
            ]
        );
    }

    #[test]
    fn every_default_intercept_host_has_a_provider_name() {
        // A concrete host for each pattern: the wildcard filled in.
        for pattern in host_patterns() {
            let host = pattern.replace('*', "x");
            assert_ne!(provider_of_host(&host), host.as_str(), "{pattern}");
        }
    }

    #[test]
    fn names_are_unique_lowercase_and_keep_their_bit_positions() {
        // openai and anthropic were bits 0 and 1 before the catalog.
        assert_eq!(&NAMES[..2], ["openai", "anthropic"]);
        for (i, name) in NAMES.iter().enumerate() {
            assert!(!NAMES[..i].contains(name), "{name} twice");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
        }
        assert_eq!(names().count(), CATALOG.len());
    }

    #[test]
    fn api_families_follow_the_error_format_each_provider_speaks() {
        assert_eq!(api_family("openai"), Dialect::OpenAiChat);
        assert_eq!(api_family("anthropic"), Dialect::AnthropicMessages);
        assert_eq!(api_family("bedrock"), Dialect::AnthropicMessages);
        assert_eq!(api_family("gemini"), Dialect::GeminiGenerate);
        assert_eq!(api_family("mistral"), Dialect::OpenAiChat);
        assert_eq!(api_family("example.com"), Dialect::OpenAiChat);
        assert_eq!(api_family_of_host("generativelanguage.googleapis.com"), Dialect::GeminiGenerate);
        assert_eq!(api_family_of_host("bedrock-runtime.eu-west-1.amazonaws.com"), Dialect::AnthropicMessages);
        assert_eq!(api_family_of_host("example.com"), Dialect::OpenAiChat);
    }
}
