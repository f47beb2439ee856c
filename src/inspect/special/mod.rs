//! Special categories of personal data (GDPR art. 9, HIPAA, HR files): a
//! judgement about the prompt, not a pattern. A `special_category` finding
//! says the prompt discloses a fact of one sub-type (its kind: `health`,
//! `hr`, `religion`, `ethnicity`, `sexual_orientation`, `politics`,
//! `trade_union`, `biometric`, `minor`), with the span of the word that
//! gave it away.
//!
//! The rule, so that a general question is not mistaken for a disclosure:
//! a term of the vocabulary (`terms.txt`) is a disclosure about a person,
//! confidence 0.9 (validator "about_person"), when the same segment names
//! someone (a person, address or identifier finding from an earlier
//! detector) or the term's sentence points at someone: a first-person
//! statement ("my", "I have", "ich habe", "j'ai", "tengo"), a third-person
//! pronoun or a role or kinship word ("patient", "employee", "daughter",
//! "Mitarbeiterin", "salarié", "hija"). Otherwise it is only the topic of
//! the prompt ("what is the dosage of ibuprofen for adults?"): confidence
//! 0.35, validator "topic", which the shipped policies ignore through
//! `min_confidence` and a team may choose to act on.
//!
//! An age under 18 next to an age word ("my 12-year-old", "14 Jahre alt")
//! is a `minor` fact. Medical record numbers and health-plan member ids
//! (`medical_record_number`, `health_plan_id`, PII) are found with their
//! label and also make the prompt a `health` disclosure (the record exists
//! for someone).
//!
//! Cost: one Aho-Corasick pass over the segment; the context is read only
//! around a hit, and hits are rare in prompts that have none.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::Regex;

use super::{compile_builtin, finding, Category, Detector, Finding, Prescan};

/// The vocabulary, one `## subtype` section per kind (plus `## age`, the
/// words that make a number an age).
const TERMS: &str = include_str!("terms.txt");

const ABOUT_PERSON: f32 = 0.9;
const TOPIC: f32 = 0.35;

/// How far around a term to look for someone it is about.
const WINDOW_BEFORE: usize = 160;
const WINDOW_AFTER: usize = 100;

/// At most this many findings per segment: one prompt pasting a medical
/// textbook needs no thousand findings to be decided.
const MAX_PER_SEGMENT: usize = 64;

#[derive(Clone, Copy)]
struct Term {
    kind: &'static str,
    /// A trailing `*`: the last word may continue.
    prefix: bool,
}

const AGE: &str = "age";

pub(crate) struct Special {
    matcher: AhoCorasick,
    terms: Vec<Term>,
}

pub(crate) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![Box::new(RecordNumbers::new()), Box::new(Special::new())]
}

impl Special {
    fn new() -> Special {
        let mut patterns = Vec::new();
        let mut terms = Vec::new();
        let mut kind = "";
        for line in TERMS.lines().map(str::trim) {
            if let Some(section) = line.strip_prefix("## ") {
                kind = SPECIAL_SECTIONS.iter().copied().find(|k| *k == section).unwrap_or("");
                continue;
            }
            if line.is_empty() || line.starts_with('#') || kind.is_empty() {
                continue;
            }
            let prefix = line.ends_with('*');
            patterns.push(line.trim_end_matches('*').to_string());
            terms.push(Term { kind, prefix });
        }
        // The vocabulary is a constant exercised by the unit tests.
        let matcher = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            // A full DFA: one table step per byte, several times faster
            // than the NFA on ~500 case-insensitive words.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .expect("special-category vocabulary builds");
        Special { matcher, terms }
    }
}

/// The sections of `terms.txt`: every special-category kind, and `age`.
const SPECIAL_SECTIONS: &[&str] = &[
    "health",
    "hr",
    "religion",
    "ethnicity",
    "sexual_orientation",
    "politics",
    "trade_union",
    "biometric",
    "minor",
    AGE,
];

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

impl Detector for Special {
    fn find(&self, text: &str, _pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let mut about_someone: Option<bool> = None;
        let mut emitted = 0;
        for m in self.matcher.find_iter(text) {
            if emitted >= MAX_PER_SEGMENT {
                break;
            }
            let term = self.terms[m.pattern().as_usize()];
            let mut end = m.end();
            if text[..m.start()].chars().next_back().is_some_and(is_word_char) {
                continue;
            }
            if term.prefix {
                end += text[end..].find(|c: char| !is_word_char(c)).unwrap_or(text.len() - end);
            } else if text[end..].chars().next().is_some_and(is_word_char) {
                continue;
            }
            let span = m.start()..end;
            let kind = if term.kind == AGE {
                if let Some(age_span) = minor_age(text, &span) {
                    let strong = names_someone(text, &age_span);
                    push(out, "minor", segment, age_span.start..span.end, strong, "age");
                    emitted += 1;
                }
                continue;
            } else {
                term.kind
            };
            let segment_names = *about_someone.get_or_insert_with(|| identifies_someone(out, segment));
            let strong = segment_names || names_someone(text, &span);
            push(out, kind, segment, span, strong, if strong { "about_person" } else { "topic" });
            emitted += 1;
        }
    }
}

fn push(out: &mut Vec<Finding>, kind: &str, segment: usize, span: Range<usize>, strong: bool, validator: &'static str) {
    let Some(kind) = crate::inspect::SPECIAL_KINDS.iter().copied().find(|k| *k == kind) else { return };
    let confidence = if strong { ABOUT_PERSON } else { TOPIC };
    let validator = if strong || validator == "topic" { validator } else { "topic" };
    out.push(finding(Category::Special, kind, segment, span, confidence, validator));
}

/// Whether an earlier detector found someone in this segment: a name, an
/// address or an identifier that belongs to one person.
fn identifies_someone(out: &[Finding], segment: usize) -> bool {
    out.iter().rev().take_while(|f| f.segment == segment).any(|f| {
        f.category == Category::Pii
            && !matches!(f.kind, "ip_address" | "mac_address" | "crypto_wallet" | "us_bank_routing" | "iban")
    })
}

/// Words that point a sentence at a person (lowercase ASCII prefixes, as
/// `context_near` reads them; the non-ASCII ones are matched below).
const PERSON_WORDS: &[&str] = &[
    // English: self-disclosure, pronouns, roles and kin.
    "my ",
    "i have",
    "i've",
    "i'm",
    "i am ",
    "i was",
    "i had",
    "i suffer",
    "i take",
    "he ",
    "she ",
    "his ",
    "her ",
    "him ",
    "patient",
    "employee",
    "colleague",
    "coworker",
    "co-worker",
    "candidate",
    "applicant",
    "tenant",
    "client ",
    "customer ",
    "student",
    "pupil",
    "son ",
    "daughter",
    "wife",
    "husband",
    "partner ",
    "mother",
    "father",
    "mom ",
    "dad ",
    "brother",
    "sister",
    "friend",
    "neighbo",
    "manager ",
    "boss",
    "mr ",
    "mr.",
    "mrs",
    "ms ",
    "ms.",
    "staff member",
    "team member",
    "direct report",
    // German.
    "mein",
    "ich habe",
    "ich bin",
    "bei mir",
    "er ist",
    "sie ist",
    "seine",
    "seiner",
    "ihre ",
    "ihrer",
    "patientin",
    "mitarbeiter",
    "kollege",
    "kollegin",
    "sohn",
    "tochter",
    "ehefrau",
    "ehemann",
    "mutter",
    "vater",
    "herr ",
    "frau ",
    "bewerber",
    // French.
    "j'ai",
    "je suis",
    "mon ",
    "ma ",
    "mes ",
    "il est",
    "elle est",
    "il a ",
    "elle a ",
    "salari",
    "employ",
    "coll\u{e8}gue",
    "fils",
    "fille",
    "femme",
    "mari ",
    "m\u{e8}re",
    "p\u{e8}re",
    "monsieur",
    "madame",
    "candidat",
    // Spanish.
    "tengo",
    "estoy",
    "mi ",
    "mis ",
    "me diagnosticaron",
    "\u{e9}l ",
    "ella",
    "su ",
    "sus ",
    "paciente",
    "empleado",
    "empleada",
    "compa\u{f1}er",
    "hijo",
    "hija",
    "esposa",
    "esposo",
    "madre",
    "padre",
    "se\u{f1}or",
];

/// Whether the sentence around `span` points at a person.
fn names_someone(text: &str, span: &Range<usize>) -> bool {
    let mut from = span.start.saturating_sub(WINDOW_BEFORE);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut to = (span.end + WINDOW_AFTER).min(text.len());
    while !text.is_char_boundary(to) {
        to -= 1;
    }
    // A paragraph break ends what the term can be about.
    if let Some(p) = text[from..span.start].rfind("\n\n") {
        from += p + 2;
    }
    if let Some(p) = text[span.end..to].find("\n\n") {
        to = span.end + p;
    }
    let window = &text[from..to];
    let bytes = window.as_bytes();
    PERSON_WORDS.iter().any(|w| {
        let w = w.as_bytes();
        bytes.windows(w.len()).enumerate().any(|(i, chunk)| {
            chunk.eq_ignore_ascii_case(w) && (i == 0 || !(bytes[i - 1] as char).is_ascii_alphanumeric())
        })
    })
}

/// The number before an age word ("12-year-old", "14 Jahre alt", "a 9
/// ans", "tiene 7 años"), when it is under 18; the span of the number.
fn minor_age(text: &str, word: &Range<usize>) -> Option<Range<usize>> {
    let before = text[..word.start].trim_end_matches([' ', '-']);
    let digits = before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if !(1..=2).contains(&digits) {
        return None;
    }
    let start = before.len() - digits;
    if text[..start].chars().next_back().is_some_and(is_word_char) {
        return None;
    }
    let age: u32 = before[start..].parse().ok()?;
    // "ans" and "años" also count years ago and durations: only ages said
    // as ages ("a 9 ans", "tiene 7 años", "âgé de").
    let word_text = text[word.clone()].to_ascii_lowercase();
    if word_text == "ans" || word_text.starts_with("a\u{f1}os") || word_text == "años" {
        let lead = text[..start].trim_end().to_lowercase();
        if !(lead.ends_with(" a") || lead.ends_with("âgé de") || lead.ends_with("âgée de") || lead.ends_with("tiene"))
        {
            return None;
        }
    }
    (age < 18).then_some(start..word.end)
}

/// Medical record numbers and health-plan member ids, each after its label.
pub(crate) struct RecordNumbers {
    mrn: Regex,
    plan: Regex,
}

impl RecordNumbers {
    fn new() -> RecordNumbers {
        RecordNumbers {
            mrn: compile_builtin(
                r"(?i)\b(mrn|medical record(?: number| no\.?| #)?|med\.? rec(?:ord)?\.? (?:no\.?|#)|patient (?:id|number|no\.?)|chart (?:number|no\.?)|patientennummer|patienten-id|fallnummer|num[ée]ro de dossier|n° de dossier|dossier patient|historia cl[íi]nica|n[úu]mero de historia(?: cl[íi]nica)?)(?:\s*(?:[:#=]|is|no\.?)?\s*)([A-Z]{0,3}-?\d{5,10})\b",
            ),
            plan: compile_builtin(
                r"(?i)\b(member id|member (?:number|no\.?)|subscriber id|health plan (?:id|number)|insurance (?:member )?(?:id|number)|medicaid (?:id|number)|medicare (?:id|number)|mbi|versichertennummer|krankenversichertennummer|kvnr|n[úu]mero de afiliaci[óo]n|tarjeta sanitaria|num[ée]ro d'adh[ée]rent)(?:\s*(?:[:#=]|is|no\.?)?\s*)([A-Z0-9][A-Z0-9-]{5,16})\b",
            ),
        }
    }
}

/// A record number is digits, maybe behind a short letter prefix; not one
/// digit repeated.
fn plausible_id(value: &str, min_digits: usize) -> bool {
    let digits: Vec<u8> = value.bytes().filter(u8::is_ascii_digit).collect();
    digits.len() >= min_digits && digits.iter().any(|d| *d != digits[0])
}

/// Words inside the labels of [`RecordNumbers`]' patterns (lowercase
/// ASCII, as the keyword pass wants); a label starts at most
/// [`LABEL_LEAD`] bytes before its keyword ("numéro de dossier").
const RECORD_KEYWORDS: &[&str] = &[
    "mrn",
    "medical record",
    "med rec",
    "med. rec",
    "patient",
    "chart n",
    "fallnummer",
    "dossier",
    "historia",
    "member",
    "subscriber",
    "health plan",
    "insurance",
    "medicaid",
    "medicare",
    "mbi",
    "versichertennummer",
    "kvnr",
    "afiliaci",
    "tarjeta sanitaria",
    "d'adh",
];

const LABEL_LEAD: usize = 24;

/// How far past its keyword a label and its number may reach
/// ("medical record number: MRN-5512087").
const RECORD_REACH: usize = 64;

impl Detector for RecordNumbers {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        // Read only around the keyword hits of the scan's keyword pass, so
        // a long prompt with one "member" costs one short regex run.
        let starts: Vec<usize> = match &pre.keyword_hits {
            Some(hits) => hits
                .iter()
                .filter(|(w, _)| RECORD_KEYWORDS.contains(w))
                .map(|&(w, end)| {
                    let mut start = (end - w.len()).saturating_sub(LABEL_LEAD);
                    while !text.is_char_boundary(start) {
                        start += 1;
                    }
                    start
                })
                .collect(),
            None => vec![0],
        };
        let mut done = 0;
        for start in starts {
            let start = start.max(done);
            let reach = LABEL_LEAD + RECORD_REACH;
            let mut end = if pre.keyword_hits.is_some() { (start + reach).min(text.len()) } else { text.len() };
            while !text.is_char_boundary(end) {
                end += 1;
            }
            let window = &text[start..end];
            for (re, kind, min_digits) in [(&self.mrn, "medical_record_number", 5), (&self.plan, "health_plan_id", 4)] {
                for caps in re.captures_iter(window) {
                    let (Some(label), Some(value)) = (caps.get(1), caps.get(2)) else { continue };
                    // A number cut off by the window's end is not read.
                    if start + value.end() == end && end < text.len() && text[end..].starts_with(is_word_char) {
                        continue;
                    }
                    if !plausible_id(value.as_str(), min_digits) {
                        continue;
                    }
                    let at = |r: Range<usize>| start + r.start..start + r.end;
                    out.push(finding(Category::Pii, kind, segment, at(value.range()), 0.9, "context"));
                    // The label, not the number, carries the health fact,
                    // so the number's PII finding is not nested inside it.
                    out.push(finding(
                        Category::Special,
                        "health",
                        segment,
                        at(label.range()),
                        ABOUT_PERSON,
                        "record_number",
                    ));
                    done = start + value.end();
                }
            }
        }
    }

    fn keywords(&self) -> &[&'static str] {
        RECORD_KEYWORDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Detectors;

    fn special(text: &str) -> Vec<(&'static str, f32)> {
        Detectors::new()
            .scan(None, &[text])
            .into_iter()
            .filter(|f| f.category == Category::Special)
            .map(|f| (f.kind, f.confidence))
            .collect()
    }

    fn strong(text: &str, kind: &str) -> bool {
        special(text).iter().any(|(k, c)| *k == kind && *c >= 0.5)
    }

    #[test]
    fn disclosures_about_people_are_strong() {
        assert!(strong("Patient Laura Chen, 57, stage 2 breast cancer, on tamoxifen.", "health"));
        assert!(strong(
            "Which of these two should we promote: Nadia Rahman (on medical leave for burnout) or Chris Walker?",
            "hr"
        ));
        assert!(strong("I have been diagnosed with type 2 diabetes, what should I eat?", "health"));
        assert!(strong("Mein Kollege ist seit Jahren Mitglied der Gewerkschaft ver.di.", "trade_union"));
        assert!(strong("Ma fille est enceinte de trois mois.", "health"));
        assert!(strong("My 12-year-old son needs a permission slip.", "minor"));
        assert!(strong("Our employee Omar asked for a prayer room during Ramadan.", "religion"));
    }

    #[test]
    fn general_questions_are_only_topics() {
        let found = special("What is the dosage of ibuprofen for adults?");
        assert!(!found.is_empty() && found.iter().all(|(_, c)| *c < 0.5), "{found:?}");
        assert!(special("The pod was OOMKilled; we disabled the nightly job and checked /healthz.").is_empty());
        assert!(special("Bump the minor version and fix the race condition.").is_empty());
        assert!(special("She left 10 years ago.").iter().all(|(k, _)| *k != "minor"));
    }

    #[test]
    fn record_numbers_need_their_label() {
        let found =
            Detectors::new().scan(None, &["Summarize the discharge summary for MRN 5512087: admitted with sepsis"]);
        assert!(found.iter().any(|f| f.kind == "medical_record_number"), "{found:?}");
        assert!(found.iter().any(|f| f.kind == "health" && f.confidence >= 0.5));
        let found = Detectors::new().scan(None, &["Order 5512087 shipped."]);
        assert!(found.iter().all(|f| f.kind != "medical_record_number"));
        let found = Detectors::new().scan(None, &["Member ID: XJH482913007 for the claim"]);
        assert!(found.iter().any(|f| f.kind == "health_plan_id"), "{found:?}");
    }
}
