//! Per-team sensitive terms (project code names, customer names, ...):
//! whole-word, ASCII case-insensitive matching with one Aho-Corasick pass.

use aho_corasick::{AhoCorasick, Input, MatchKind};

use super::{finding, Category, Finding, TERM_KIND};

/// A compiled set of sensitive terms. Hits are reported as
/// [`Category::Term`] with kind [`TERM_KIND`]; the term itself never is.
#[derive(Clone, Debug)]
pub struct Dictionary {
    matcher: AhoCorasick,
    len: usize,
}

#[derive(thiserror::Error, Debug)]
pub enum DictionaryError {
    /// Term number `index` (0-based, in input order) is empty or only
    /// whitespace; it would match everywhere or nowhere.
    #[error("dictionary term #{index} is blank")]
    BlankTerm { index: usize },
    #[error("building the dictionary matcher failed")]
    Build(#[source] aho_corasick::BuildError),
}

impl Dictionary {
    /// Compile `terms`. Each is trimmed; terms differing only in ASCII case
    /// count once.
    pub fn new<I, S>(terms: I) -> Result<Self, DictionaryError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = Vec::new();
        for (index, term) in terms.into_iter().enumerate() {
            let term = term.as_ref().trim();
            if term.is_empty() {
                return Err(DictionaryError::BlankTerm { index });
            }
            patterns.push(term.to_ascii_lowercase());
        }
        patterns.sort_unstable();
        patterns.dedup();
        let matcher = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(DictionaryError::Build)?;
        Ok(Dictionary {
            matcher,
            len: patterns.len(),
        })
    }

    /// Number of distinct terms.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Push a finding for every whole-word term occurrence in `text`.
    pub(crate) fn find(&self, text: &str, segment: usize, out: &mut Vec<Finding>) {
        let mut pos = 0;
        while pos < text.len() {
            let Some(m) = self.matcher.find(Input::new(text).range(pos..)) else {
                break;
            };
            match self.whole_word_end(text, m.start(), m.end()) {
                Some(end) => {
                    let span = m.start()..end;
                    out.push(finding(
                        Category::Term,
                        TERM_KIND,
                        segment,
                        span,
                        1.0,
                        "dictionary",
                    ));
                    pos = end;
                }
                None => pos = m.start() + 1,
            }
        }
    }

    /// End of the longest term at `start` that is a whole word, given the
    /// longest term there ends at `end`. "acme corp" in "acme corporation"
    /// fails, but "acme" may then still match.
    fn whole_word_end(&self, text: &str, start: usize, mut end: usize) -> Option<usize> {
        if text[..start].chars().next_back().is_some_and(is_word_char) {
            return None;
        }
        loop {
            if !text[end..].chars().next().is_some_and(is_word_char) {
                return Some(end);
            }
            // The leftmost-longest match in start..end-1 is the next shorter
            // term at `start` if it starts there; if it starts later, no
            // shorter term is at `start`. (Unanchored keeps the automaton a
            // DFA for small dictionaries; anchored support would not.)
            let shorter = self.matcher.find(Input::new(text).range(start..end - 1))?;
            if shorter.start() != start {
                return None;
            }
            end = shorter.end();
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    fn spans(dict: &Dictionary, text: &str) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        dict.find(text, 7, &mut out);
        for f in &out {
            assert_eq!(
                (f.category, f.kind, f.validator),
                (Category::Term, TERM_KIND, "dictionary")
            );
            assert_eq!(f.segment, 7);
        }
        out.into_iter().map(|f| f.span).collect()
    }

    #[test]
    fn case_insensitive_whole_words() {
        let dict = Dictionary::new(["Falcon", "acme corp"]).unwrap();
        let text = "FALCON, falcon; Falcons falconry (Acme Corp) ACME CORP.";
        assert_eq!(spans(&dict, text), vec![0..6, 8..14, 34..43, 45..54]);
    }

    #[test]
    fn word_boundaries_reject_embedded_hits() {
        let dict = Dictionary::new(["data"]).unwrap();
        assert!(spans(&dict, "database big_data data2 metadata").is_empty());
        assert_eq!(
            spans(&dict, "data-lake /data/ \"data\""),
            vec![0..4, 11..15, 18..22]
        );
        // Non-ASCII letters are word characters too.
        assert_eq!(spans(&dict, "ädata dataé data"), vec![14..18]);
    }

    #[test]
    fn longest_term_wins_and_shorter_is_retried() {
        let dict = Dictionary::new(["acme", "acme corp", "corp"]).unwrap();
        assert_eq!(spans(&dict, "acme corp today"), vec![0..9]);
        // "acme corp" is not a whole word here, "acme" is; then "corp" is not.
        assert_eq!(spans(&dict, "acme corporation"), vec![0..4]);
        // The retry inside "acme cor" finds "cor" at 5, not a term at 0.
        let dict = Dictionary::new(["acme corp", "cor"]).unwrap();
        assert!(spans(&dict, "acme corporation").is_empty());
        assert_eq!(spans(&dict, "acme cor"), vec![5..8]);
    }

    #[test]
    fn terms_are_trimmed_and_deduplicated() {
        let dict = Dictionary::new(["  Orion ", "orion", "ORION", "Vega\t"]).unwrap();
        assert_eq!(dict.len(), 2);
        assert!(!dict.is_empty());
        assert_eq!(spans(&dict, "orion and vega"), vec![0..5, 10..14]);
    }

    #[test]
    fn blank_terms_are_rejected() {
        let err = Dictionary::new(["ok", "  "]).unwrap_err();
        assert!(
            matches!(err, DictionaryError::BlankTerm { index: 1 }),
            "{err:?}"
        );
        assert!(matches!(
            Dictionary::new([""]),
            Err(DictionaryError::BlankTerm { index: 0 })
        ));
    }

    #[test]
    fn empty_dictionary_finds_nothing() {
        let dict = Dictionary::new(Vec::<String>::new()).unwrap();
        assert!(dict.is_empty());
        assert!(spans(&dict, "anything at all").is_empty());
    }
}
