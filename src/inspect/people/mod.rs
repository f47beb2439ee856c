//! People, places and organisations: person names (`person`), postal
//! addresses (`street_address`: the street line with its number and unit,
//! and the postcode and city when they are written with it), and, as
//! [`Category::Entity`] findings, cities, regions and countries
//! (`location`), companies and other organisations (`organization`) and
//! nationalities (`nationality`), in English, German, French, Spanish and
//! whatever else shares their shapes. A city inside an address is part of
//! the address finding, not a `location` of its own.
//!
//! A learned token tagger, not a list lookup: each candidate token (a
//! capitalised word that does not look like code, a short number or a
//! street word beside one) is scored by logistic regression over hashed
//! features of the token, its neighbours, their shapes, the punctuation
//! between them and gazetteer flags (Faker's first names, surnames, street
//! words, places; GeoNames' places and countries; legal forms of companies,
//! well-known organisations, nationalities; common words). Tagged runs
//! become spans. The weights (`weights.bin`, 640 KiB) and the gazetteer
//! (`gazetteer.txt.gz`) are built by `scripts/prepare-people-data` and
//! `examples/train_people.rs` and are compiled into the binary; nothing is
//! fetched at run time.
//!
//! Cost: one byte pass to tokenise; segments without a capitalised word
//! stop there. Each candidate costs about 30 table reads; words far from
//! any candidate are never hashed or looked up.

pub(crate) mod features;

use std::cell::RefCell;
use std::sync::OnceLock;

use super::{finding, Category, Detector, Finding, Prescan};
use features::{Gap, Token, ADDR, CLASSES, LOC, MAX_FEATURES, NRP, ORG, PER};

pub const PERSON_KIND: &str = "person";
pub const ADDRESS_KIND: &str = "street_address";
pub const LOCATION_KIND: &str = "location";
pub const ORGANIZATION_KIND: &str = "organization";
pub const NATIONALITY_KIND: &str = "nationality";

/// Written by `examples/train_people.rs`.
const WEIGHTS: &[u8] = include_bytes!("weights.bin");

/// Scores per bucket: every class but "nothing".
const SCORED: usize = CLASSES - 1;

/// Per bucket: each class's score relative to "nothing".
struct Weights {
    scores: Vec<[i16; SCORED]>,
    scale: f32,
}

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| {
        // The file is produced by the trainer and checked by the unit
        // tests; a wrong header leaves the tagger silent rather than wrong.
        let header_ok = WEIGHTS.len() == 12 + features::BUCKETS * SCORED * 2
            && &WEIGHTS[..4] == b"SLPT"
            && WEIGHTS[4..8] == (features::BUCKETS as u32).to_le_bytes();
        if !header_ok {
            return Weights { scores: vec![[0; SCORED]; features::BUCKETS], scale: 0.0 };
        }
        let scale = f32::from_le_bytes([WEIGHTS[8], WEIGHTS[9], WEIGHTS[10], WEIGHTS[11]]);
        let scores = WEIGHTS[12..]
            .chunks_exact(SCORED * 2)
            .map(|c| std::array::from_fn(|i| i16::from_le_bytes([c[2 * i], c[2 * i + 1]])))
            .collect();
        Weights { scores, scale }
    })
}

/// Tagged tokens below this probability are left out of spans.
const TOKEN_MIN: f32 = 0.4;

pub(crate) struct People {
    gaz: &'static features::Gazetteer,
    weights: &'static Weights,
}

pub(crate) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![Box::new(People { gaz: features::gazetteer(), weights: weights() })]
}

/// Scratch space, reused across segments and calls.
#[derive(Default)]
struct Scratch {
    tokens: Vec<Token>,
    runs: Vec<Run>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A run of tokens with the same label, grown into a span.
#[derive(Clone, Copy)]
struct Run {
    label: usize,
    first: usize,
    last: usize,
    prob_sum: f32,
    count: usize,
}

impl Detector for People {
    fn find(&self, text: &str, _pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        SCRATCH.with(|cell| {
            let Ok(mut scratch) = cell.try_borrow_mut() else { return };
            let Scratch { tokens, runs } = &mut *scratch;
            if features::tokenize(text, self.gaz, tokens) {
                self.tag(text, tokens, runs);
                emit_all(text, tokens, runs, segment, out);
            }
        });
    }
}

impl People {
    /// (label, probability) of candidate token `k`.
    fn score(&self, text: &str, tokens: &[Token], k: usize) -> (usize, f32) {
        let mut buf = [0u32; MAX_FEATURES];
        let n = features::features(text, tokens, k, &mut buf);
        let mut sums = [0i32; SCORED];
        for &b in &buf[..n] {
            for (sum, &w) in sums.iter_mut().zip(&self.weights.scores[b as usize]) {
                *sum += i32::from(w);
            }
        }
        // Softmax with "nothing" at 0.
        let z = sums.map(|s| s as f32 * self.weights.scale);
        let max = z.iter().copied().fold(0.0f32, f32::max);
        let mut sum = (-max).exp();
        let (mut best, mut best_e) = (0, 0.0);
        for (i, &zi) in z.iter().enumerate() {
            let e = (zi - max).exp();
            sum += e;
            if e > best_e {
                (best, best_e) = (i + 1, e);
            }
        }
        (best, best_e / sum)
    }

    /// Tag the candidates and gather runs of one label.
    fn tag(&self, text: &str, tokens: &[Token], runs: &mut Vec<Run>) {
        runs.clear();
        let mut run: Option<Run> = None;
        for k in 0..tokens.len() {
            if !tokens[k].candidate {
                continue;
            }
            let (label, prob) = self.score(text, tokens, k);
            if label == 0 || prob < TOKEN_MIN || !may_be(label, &tokens[k], run.as_ref()) {
                continue;
            }
            if let Some(r) = run.as_mut().filter(|r| r.label == label && joins(text, tokens, r.last, k, label)) {
                r.last = k;
                r.prob_sum += prob;
                r.count += 1;
                continue;
            }
            runs.extend(run.take());
            run = Some(Run { label, first: k, last: k, prob_sum: prob, count: 1 });
        }
        runs.extend(run);
    }
}

/// Whether token `t` may carry `label` (given the run before it). Places,
/// organisations and nationalities are words, and lowercase ones only
/// nationalities and country names ("from tunisia"); an organisation
/// may go on with a number ("3M", "Blink 182") but not start with one.
fn may_be(label: usize, t: &Token, run: Option<&Run>) -> bool {
    if !matches!(label, LOC | ORG | NRP) {
        return true;
    }
    if t.shape == features::LOWER && t.flags & features::LOWERCASE == 0 {
        return false;
    }
    // A single letter ("B.", "𝑅") is an answer option or a variable
    // unless it continues a name ("Johnson & J. Partners").
    let continues = run.is_some_and(|r| r.label == label);
    match t.shape {
        features::SINGLE_UPPER => continues,
        shape if features::is_word_shape(shape) => true,
        _ => label == ORG && continues,
    }
}

/// Small words inside place names ("Villafranca del Cid", "Frankfurt am
/// Main", "Bank of America").
const NAME_WORDS: &[&str] = &[
    "of", "de", "del", "la", "le", "les", "du", "des", "da", "do", "di", "am", "an", "im", "in", "on", "sur", "pri",
    "upon", "van", "von", "der", "den", "el", "los", "las",
];
/// And the ones that join names into one organisation ("Hawkins,
/// Richardson and Santana", "Pi y Prat").
const JOIN_WORDS: &[&str] = &["and", "und", "et", "y", "e", "for", "für"];

fn is_one_of(text: &str, t: &Token, words: &[&str]) -> bool {
    t.shape == features::LOWER && words.iter().any(|w| w.eq_ignore_ascii_case(&text[t.start..t.end]))
}

/// Whether tagged token `k` continues the run ending at tagged token `last`.
fn joins(text: &str, tokens: &[Token], last: usize, k: usize, label: usize) -> bool {
    let between = &tokens[last + 1..k];
    let gaps_ok = |allowed: &dyn Fn(usize, Gap) -> bool| (last + 1..=k).all(|j| allowed(j, tokens[j].gap));
    let short = |j: usize| tokens[j].end - tokens[j].start <= 4;
    match label {
        PER => {
            // "Anna Maria Lopez", "J. Smith", "Ludwig van Beethoven".
            let connectors_ok = between.len() <= 2
                && between.iter().all(|t| !t.candidate && t.shape == features::LOWER && t.end - t.start <= 3);
            connectors_ok
                && gaps_ok(&|j, g| {
                    g == Gap::Space
                        || (g == Gap::Stop && tokens[j - 1].shape == features::SINGLE_UPPER)
                        || (g == Gap::Other && j == k)
                })
        }
        ADDR => {
            // "918 Birch Lane, Unit 12, Madison, WI 53703", "12 rue de la Paix",
            // one address line per line.
            between.len() <= 3
                && between.iter().all(|t| !t.candidate)
                && gaps_ok(&|j, g| match g {
                    Gap::Space | Gap::Comma | Gap::Newline | Gap::Other => true,
                    Gap::Stop => short(j - 1),
                    _ => false,
                })
        }
        // "New Zealand", "Villafranca del Cid", "St. Gallen".
        LOC => {
            between.len() <= 2
                && between.iter().all(|t| !t.candidate && is_one_of(text, t, NAME_WORDS))
                && gaps_ok(&|j, g| matches!(g, Gap::Space | Gap::Other) || (g == Gap::Stop && short(j - 1)))
        }
        // "Hawkins, Richardson and Santana", "Procter & Gamble", "Johnson
        // Inc.", "Bank of America".
        ORG => {
            between.len() <= 1
                && between
                    .iter()
                    .all(|t| !t.candidate && (is_one_of(text, t, NAME_WORDS) || is_one_of(text, t, JOIN_WORDS)))
                && gaps_ok(&|j, g| {
                    matches!(g, Gap::Space | Gap::Comma | Gap::Other) || (g == Gap::Stop && short(j - 1))
                })
        }
        // "South African", "New Zealanders".
        _ => between.is_empty() && tokens[k].gap == Gap::Space,
    }
}

/// An address has a unit word ("Apt 4", "Suite 318"), or a name word
/// (not an everyday one, not a street type) with a number or a street type
/// ("918 Birch Lane", "Lindenstraße 12", "rue de la Paix"). A capitalised
/// title ("Guilty Pleasures"), a phone number next to a label ("67\nFax")
/// or a street type with a number alone ("Port 8080") is not one.
fn looks_like_address(tokens: &[Token]) -> bool {
    let has = |flag: u16| tokens.iter().any(|t| t.flags & flag != 0);
    let number = tokens.iter().any(|t| features::is_short_number(t.shape));
    // All-caps words are units and zones as often as cities ("32 GiB",
    // "12 UTC"); they count only beside a street or unit word.
    let name = tokens.iter().any(|t| {
        features::is_word_shape(t.shape)
            && !features::is_upper(t.shape)
            && t.flags & (features::COMMON | features::STREET | features::UNIT) == 0
    });
    has(features::UNIT) || (name && (number || has(features::STREET)))
}

/// Turn runs into findings. Runs of address parts and places that follow
/// each other ("918 Birch Lane, Unit 12" then "Madison" then "WI" then
/// "53703") make one address when at least one run is an address part;
/// otherwise the places are locations.
fn emit_all(text: &str, tokens: &[Token], runs: &[Run], segment: usize, out: &mut Vec<Finding>) {
    let mut i = 0;
    while i < runs.len() {
        let r = runs[i];
        if !matches!(r.label, ADDR | LOC) {
            emit(tokens, &r, segment, out);
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < runs.len()
            && matches!(runs[j + 1].label, ADDR | LOC)
            && joins(text, tokens, runs[j].last, runs[j + 1].first, ADDR)
        {
            j += 1;
        }
        let group = &runs[i..=j];
        let kept = group.iter().any(|g| g.label == ADDR) && {
            let (first, last) = (group[0].first, group[group.len() - 1].last);
            let count: usize = group.iter().map(|g| g.count).sum();
            let confidence = group.iter().map(|g| g.prob_sum).sum::<f32>() / count as f32;
            let keep = count >= 2 && confidence >= 0.6 && looks_like_address(&tokens[first..=last]);
            if keep {
                let span = tokens[first].start..tokens[last].end;
                out.push(finding(Category::Pii, ADDRESS_KIND, segment, span, confidence.min(0.95), "tagger"));
            }
            keep
        };
        // A city inside an address is part of it, not a finding of its own.
        if !kept {
            for g in group.iter().filter(|g| g.label == LOC) {
                emit_place(tokens, g, segment, out);
            }
        }
        i = j + 1;
    }
}

/// Whether a place or organisation run reads as a person's name: a known
/// first name then a known surname, nothing that marks a company, a country
/// or a nationality. Such a span is reported as a person: a name read as a
/// place would otherwise leave unredacted, a place read as a name is only
/// kept or redacted.
fn reads_as_name(tokens: &[Token], run: &Run) -> bool {
    let run_tokens = &tokens[run.first..=run.last];
    let marked = features::ORG_WORD | features::BRAND | features::COUNTRY | features::NATIONALITY;
    (2..=3).contains(&run.count)
        && run.last - run.first + 1 == run.count
        && tokens[run.first].flags & features::FIRST != 0
        && tokens[run.last].flags & features::LAST != 0
        && run_tokens
            .iter()
            .all(|t| t.flags & marked == 0 && features::is_word_shape(t.shape) && !features::is_upper(t.shape))
}

/// Whether a one-word place or organisation run is the surname of the known
/// first name just before it ("the fingerprint of Marco Rossi", where the
/// tagger took "Rossi" for a place and left "Marco" out). A first name that
/// is also an everyday word counts only inside a sentence, where its
/// capital says it is a name ("ask Will Rogers" yes, "Will Paris ..." no); the
/// run's word is not a known place (unless it is also a known surname),
/// country, nationality or company.
fn surname_after_first_name(tokens: &[Token], run: &Run) -> bool {
    let (Some(before), Some(word)) = (run.first.checked_sub(1).map(|i| &tokens[i]), tokens.get(run.first)) else {
        return false;
    };
    let marked = features::ORG_WORD | features::BRAND | features::COUNTRY | features::NATIONALITY;
    run.count == 1
        && run.first == run.last
        && word.gap == features::Gap::Space
        && before.flags & features::FIRST != 0
        && (before.flags & features::COMMON == 0 || matches!(before.gap, features::Gap::Space | features::Gap::Comma))
        && features::is_capitalised(before.shape)
        && features::is_capitalised(word.shape)
        && word.flags & marked == 0
        && (word.flags & features::PLACE == 0 || word.flags & features::LAST != 0)
}

fn emit_place(tokens: &[Token], run: &Run, segment: usize, out: &mut Vec<Finding>) {
    let confidence = run.prob_sum / run.count as f32;
    if surname_after_first_name(tokens, run) {
        let span = tokens[run.first - 1].start..tokens[run.last].end;
        out.push(finding(Category::Pii, PERSON_KIND, segment, span, confidence.min(0.95), "tagger"));
        return;
    }
    if reads_as_name(tokens, run) {
        let span = tokens[run.first].start..tokens[run.last].end;
        out.push(finding(Category::Pii, PERSON_KIND, segment, span, confidence.min(0.95), "tagger"));
        return;
    }
    // A lone everyday word ("Wisdom", "Will") is a place only when the
    // place lists know it as one.
    let lone_word = run.count == 1 && {
        let f = tokens[run.first].flags;
        f & features::COMMON != 0 && f & (features::PLACE | features::COUNTRY) == 0
    };
    if !lone_word && !lone_acronym(tokens, run, features::COUNTRY) && confidence >= LOCATION_MIN {
        let span = tokens[run.first].start..tokens[run.last].end;
        out.push(finding(Category::Entity, LOCATION_KIND, segment, span, confidence.min(0.95), "tagger"));
    }
}

/// A lone all-caps word the lists do not know under `known` ("BMI",
/// "ATP", "UCC"): an abbreviation far more often than a place or an
/// organisation.
fn lone_acronym(tokens: &[Token], run: &Run, known: u16) -> bool {
    let t = &tokens[run.first];
    run.count == 1 && features::is_upper(t.shape) && t.flags & known == 0
}

/// Mean token probability a span needs, per label.
const PERSON_MIN: f32 = 0.42;
const LOCATION_MIN: f32 = 0.8;
const ORGANIZATION_MIN: f32 = 0.85;
const ORGANIZATION_SUFFIXED_MIN: f32 = 0.7;
const NATIONALITY_MIN: f32 = 0.5;

fn emit(tokens: &[Token], run: &Run, segment: usize, out: &mut Vec<Finding>) {
    let confidence = run.prob_sum / run.count as f32;
    let flags = tokens[run.first].flags;
    let lone = run.count == 1;
    let (category, kind, keep) = match run.label {
        PER => {
            // A lone everyday word ("The", "Royal") is a name only when the
            // name lists know it as one too ("Rose", "Will").
            let lone_word = lone && flags & features::COMMON != 0 && flags & (features::FIRST | features::LAST) == 0;
            (Category::Pii, PERSON_KIND, confidence >= PERSON_MIN && !lone_word)
        }
        ORG if reads_as_name(tokens, run) => (Category::Pii, PERSON_KIND, confidence >= PERSON_MIN),
        ORG if surname_after_first_name(tokens, run) => {
            let span = tokens[run.first - 1].start..tokens[run.last].end;
            out.push(finding(Category::Pii, PERSON_KIND, segment, span, confidence.min(0.95), "tagger"));
            return;
        }
        ORG => {
            // A lone everyday word, bare legal form ("Bank", "Group"),
            // first name or surname ("James buys a plane") names no
            // organisation unless it is a known one.
            let lone_word = lone
                && flags & (features::COMMON | features::ORG_WORD | features::FIRST | features::LAST) != 0
                && flags & features::BRAND == 0;
            // Two or three letters alone ("Py", "Ln") are variables.
            let short = lone && tokens[run.first].end - tokens[run.first].start <= 3 && flags & features::BRAND == 0;
            // A name followed by a legal form or organisation noun ("Acme
            // Corp", "Initech GmbH") says what it is in its last word.
            let suffixed = !lone && tokens[run.last].flags & features::ORG_WORD != 0;
            let min = if suffixed { ORGANIZATION_SUFFIXED_MIN } else { ORGANIZATION_MIN };
            let keep = confidence >= min
                && !lone_word
                && (!short || features::is_upper(tokens[run.first].shape))
                && !lone_acronym(tokens, run, features::BRAND | features::ORG_WORD);
            (Category::Entity, ORGANIZATION_KIND, keep)
        }
        // Nationalities are a closed list: a word it lacks is none.
        NRP => {
            let listed = tokens[run.first..=run.last].iter().any(|t| t.flags & features::NATIONALITY != 0);
            (Category::Entity, NATIONALITY_KIND, listed && confidence >= NATIONALITY_MIN)
        }
        // Addresses and places are emitted by `emit_all`.
        _ => return,
    };
    if keep {
        let span = tokens[run.first].start..tokens[run.last].end;
        out.push(finding(category, kind, segment, span, confidence.min(0.95), "tagger"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let pre = Prescan::of(text);
        for d in detectors() {
            d.find(text, &pre, 0, &mut out);
        }
        out.into_iter().map(|f| (f.kind, text[f.span].to_string())).collect()
    }

    #[test]
    fn weights_file_matches_the_features() {
        assert!(weights().scale > 0.0, "weights.bin header does not match BUCKETS");
    }

    #[test]
    fn finds_names_and_addresses() {
        let hits = found("Ship the laptop to Daniel Fischer, 918 Birch Lane, Unit 12, Madison, WI 53703.");
        assert!(hits.contains(&(PERSON_KIND, "Daniel Fischer".to_string())), "{hits:?}");
        assert!(hits.iter().any(|(k, v)| *k == ADDRESS_KIND && v.starts_with("918 Birch Lane")), "{hits:?}");
        let hits = found("Patient Laura Chen, 57, stage 2 breast cancer, on tamoxifen.");
        assert!(hits.contains(&(PERSON_KIND, "Laura Chen".to_string())), "{hits:?}");
        // Read as an organisation by its context ("the fingerprint of ..."),
        // a known first name and surname is still reported as a person.
        let hits = found("The fingerprint of Anna Weber is stored.");
        assert_eq!(hits, [(PERSON_KIND, "Anna Weber".to_string())]);
        // Only the surname read as a place: the name is the first name too.
        let hits = found("Store the fingerprint of Marco Rossi for the door access system.");
        assert_eq!(hits, [(PERSON_KIND, "Marco Rossi".to_string())]);
    }

    #[test]
    fn quiet_on_code_and_plain_prose() {
        for text in [
            "let client = Client::builder().api_key(KEY).timeout(Duration::from_secs(60)).build()?;",
            "The pod restarts every 45 seconds with exit code 137 on Kubernetes 1.29.",
            "Please review the pull request before Friday.",
            "The Rust compiler rejects this because of the borrow checker.",
            "Summer Sale: Buy One Get One Free",
            "Open Port 8080 and see Step 3 of the guide.",
            "Write a poem about the sea.",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }

    fn has(hits: &[(&'static str, String)], kind: &str, value: &str) -> bool {
        hits.iter().any(|(k, v)| *k == kind && v == value)
    }

    #[test]
    fn finds_places_in_english_german_french_and_spanish() {
        for (text, places) in [
            ("She moved from Lyon to Berlin last year.", &["Lyon", "Berlin"][..]),
            ("What is the capital of France?", &["France"]),
            ("we moved here from tunisia", &["tunisia"]),
            ("Ich fahre morgen nach München.", &["München"]),
            ("Er arbeitet bei Siemens in Erlangen.", &["Erlangen"]),
            ("Elle habite à Marseille depuis deux ans.", &["Marseille"]),
            ("Envoyez-le à Lyon, en France.", &["Lyon", "France"]),
            ("Mis abuelos vivían en Guadalajara.", &["Guadalajara"]),
            ("Vivo en Sevilla, España.", &["Sevilla", "España"]),
        ] {
            let hits = found(text);
            for place in places {
                assert!(has(&hits, LOCATION_KIND, place), "{text}: {place} in {hits:?}");
            }
            assert!(hits.iter().all(|(k, _)| *k != PERSON_KIND), "{text}: {hits:?}");
        }
    }

    #[test]
    fn finds_organisations() {
        for (text, org) in [
            ("He has worked at Siemens AG for six years.", "Siemens AG"),
            ("Er arbeitet bei Siemens in Erlangen.", "Siemens"),
            ("Il travaille chez Renault à Boulogne-Billancourt.", "Renault"),
            ("Trabaja en Telefónica en Madrid.", "Telefónica"),
            ("Acme Corp opened an office in Austin, Texas.", "Acme Corp"),
        ] {
            let hits = found(text);
            assert!(has(&hits, ORGANIZATION_KIND, org), "{text}: {hits:?}");
        }
    }

    #[test]
    fn finds_nationalities_but_not_languages() {
        for (text, word) in [
            ("Our new colleague is Brazilian.", "Brazilian"),
            ("The Brazilian team won.", "Brazilian"),
            ("Sie ist Französin und wohnt in Köln.", "Französin"),
            ("Mis abuelos eran mexicanos.", "mexicanos"),
        ] {
            let hits = found(text);
            assert!(has(&hits, NATIONALITY_KIND, word), "{text}: {hits:?}");
        }
        for text in
            ["Translate into German: good morning.", "I speak French and Spanish.", "Why is Rebecca so impulsive?"]
        {
            let hits = found(text);
            assert!(hits.iter().all(|(k, _)| *k != NATIONALITY_KIND), "{text}: {hits:?}");
        }
    }

    #[test]
    fn a_city_in_an_address_is_part_of_it() {
        let text = "Bitte schicke die Unterlagen an Jonas Becker, Lindenstraße 12, 10115 Berlin.";
        let hits = found(text);
        assert!(has(&hits, ADDRESS_KIND, "Lindenstraße 12, 10115 Berlin"), "{hits:?}");
        assert!(hits.iter().all(|(k, _)| *k != LOCATION_KIND), "{hits:?}");
        // Places and organisations are entities, not personal data.
        let mut out = Vec::new();
        let text = "Acme Corp opened an office in Austin, Texas.";
        detectors()[0].find(text, &Prescan::of(text), 0, &mut out);
        assert!(!out.is_empty() && out.iter().all(|f| f.category == Category::Entity), "{out:?}");
    }

    #[test]
    fn plurals_the_lists_lack_read_as_their_singular() {
        let gaz = features::gazetteer();
        let flags = |w: &str| gaz.lookup(w, features::word_hash(w));
        assert_ne!(flags("brazilian") & features::NATIONALITY, 0);
        assert_ne!(flags("ecuadorians") & features::NATIONALITY, 0);
        assert_eq!(flags("ecuadorianx"), 0);
        assert_eq!(flags("pages") & features::NATIONALITY, 0);
    }
}
