//! Model-name glob patterns for `when.model`: `*` (any run) and `?` (one character).
//!
//! Patterns are compiled once at load time; matching allocates nothing, because
//! it runs on every request.

/// A compiled glob. Matching ignores ASCII case so that a client cannot slip
/// past `gpt-4*` by asking for `GPT-4o`.
#[derive(Clone, Debug)]
pub(super) struct Glob {
    pattern: Box<[char]>,
}

impl Glob {
    /// Compile `source`, rejecting syntax other globbers accept but this one
    /// does not, so a policy never silently means something else.
    pub(super) fn parse(source: &str) -> Result<Glob, String> {
        if source.is_empty() {
            return Err("empty model pattern".to_string());
        }
        if let Some(c) = source.chars().find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\')) {
            return Err(format!("model pattern `{source}` uses `{c}`: only the wildcards `*` and `?` are supported"));
        }
        let mut pattern = Vec::with_capacity(source.len());
        for c in source.chars() {
            // Runs of `*` mean the same as one and only cost backtracking.
            if c == '*' && pattern.last() == Some(&'*') {
                continue;
            }
            pattern.push(c.to_ascii_lowercase());
        }
        Ok(Glob { pattern: pattern.into_boxed_slice() })
    }

    /// Whether `text` matches the whole pattern.
    pub(super) fn matches(&self, text: &str) -> bool {
        let pat = &self.pattern;
        let mut p = 0; // index into `pat`
        let mut t = 0; // byte offset into `text`
                       // Where to resume after a mismatch: (pattern index after the last `*`,
                       // text offset that `*` has consumed up to).
        let mut resume: Option<(usize, usize)> = None;
        loop {
            let next = text[t..].chars().next();
            match (pat.get(p), next) {
                (None, None) => return true,
                (Some('*'), _) => {
                    p += 1;
                    resume = Some((p, t));
                    continue;
                }
                (Some('?'), Some(c)) => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                (Some(&want), Some(c)) if want == c.to_ascii_lowercase() => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more character and retry.
            let Some((star_p, star_t)) = resume else {
                return false;
            };
            let Some(c) = text[star_t..].chars().next() else {
                return false;
            };
            let grown = star_t + c.len_utf8();
            resume = Some((star_p, grown));
            p = star_p;
            t = grown;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::parse(pattern).map(|g| g.matches(text)).unwrap_or(false)
    }

    #[test]
    fn literal_must_match_whole_text() {
        assert!(m("gpt-4o", "gpt-4o"));
        assert!(!m("gpt-4o", "gpt-4o-mini"));
        assert!(!m("gpt-4o", "gpt-4"));
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        assert!(m("gpt-4*", "gpt-4"));
        assert!(m("gpt-4*", "gpt-4o-2024-08-06"));
        assert!(!m("gpt-4*", "gpt-3.5-turbo"));
        assert!(m("*mini", "gpt-4o-mini"));
        assert!(m("claude-*-sonnet*", "claude-3-5-sonnet-20241022"));
        assert!(!m("claude-*-sonnet*", "claude-3-opus"));
        assert!(m("*", ""));
        assert!(m("a**b", "axxb"));
    }

    #[test]
    fn star_backtracks_past_false_starts() {
        assert!(m("*ab", "aab"));
        assert!(m("a*b*c", "abbbxbc"));
        assert!(!m("a*b*c", "abbbxb"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(m("o?", "o1"));
        assert!(!m("o?", "o"));
        assert!(!m("o?", "o12"));
        assert!(m("?é", "xé"));
        assert!(m("x?", "xé"));
    }

    #[test]
    fn ascii_case_is_ignored() {
        assert!(m("gpt-4*", "GPT-4o"));
        assert!(m("GPT-4*", "gpt-4o"));
    }

    #[test]
    fn unsupported_syntax_is_rejected() {
        assert!(Glob::parse("").is_err());
        let err = Glob::parse("gpt-[34]").err().unwrap_or_default();
        assert!(err.contains("only the wildcards"), "{err}");
        assert!(Glob::parse("gpt-{4,5}").is_err());
    }
}
