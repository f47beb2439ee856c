//! People and places: person names (`person`) and postal addresses
//! (`street_address`: the street line with its number and unit, and the
//! postcode and city when they are written with it), in English, German,
//! French, Spanish and whatever else shares their shapes.
//!
//! A learned token tagger, not a list lookup: each candidate token (a
//! capitalised word that does not look like code, a short number or a
//! street word beside one) is scored by logistic regression over hashed
//! features of the token, its neighbours, their shapes, the punctuation
//! between them and gazetteer flags (Faker's first names, surnames, street
//! words, places; common words). Tagged runs become spans. The weights
//! (`weights.bin`, 256 KiB) and the gazetteer (`gazetteer.txt`) are built by
//! `scripts/prepare-people-data` and `examples/train_people.rs` and are
//! compiled into the binary; nothing is fetched at run time.
//!
//! Cost: one byte pass to tokenise; segments without a capitalised word
//! stop there. Each candidate costs 27 table reads; words far from any
//! candidate are never hashed or looked up.

pub(crate) mod features;

use std::cell::RefCell;
use std::sync::OnceLock;

use super::{finding, Category, Detector, Finding, Prescan};
use features::{Gap, Token, ADDR, MAX_FEATURES, PER};

pub const PERSON_KIND: &str = "person";
pub const ADDRESS_KIND: &str = "street_address";

/// Written by `examples/train_people.rs`.
const WEIGHTS: &[u8] = include_bytes!("weights.bin");

/// Per bucket: the person and address scores relative to "nothing".
struct Weights {
    scores: Vec<[i16; 2]>,
    scale: f32,
}

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| {
        // The file is produced by the trainer and checked by the unit
        // tests; a wrong header leaves the tagger silent rather than wrong.
        let header_ok = WEIGHTS.len() == 12 + features::BUCKETS * (features::CLASSES - 1) * 2
            && &WEIGHTS[..4] == b"SLPT"
            && WEIGHTS[4..8] == (features::BUCKETS as u32).to_le_bytes();
        if !header_ok {
            return Weights { scores: vec![[0, 0]; features::BUCKETS], scale: 0.0 };
        }
        let scale = f32::from_le_bytes([WEIGHTS[8], WEIGHTS[9], WEIGHTS[10], WEIGHTS[11]]);
        let scores = WEIGHTS[12..]
            .chunks_exact(4)
            .map(|c| [i16::from_le_bytes([c[0], c[1]]), i16::from_le_bytes([c[2], c[3]])])
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

thread_local! {
    /// Token scratch space, reused across segments and calls.
    static TOKENS: RefCell<Vec<Token>> = const { RefCell::new(Vec::new()) };
}

/// A run of tagged tokens being grown into a span.
struct Run {
    label: usize,
    first: usize,
    last: usize,
    prob_sum: f32,
    count: usize,
}

impl Detector for People {
    fn find(&self, text: &str, _pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        TOKENS.with(|cell| {
            let Ok(mut tokens) = cell.try_borrow_mut() else { return };
            if features::tokenize(text, self.gaz, &mut tokens) {
                self.tag(text, &tokens, segment, out);
            }
        });
    }
}

impl People {
    /// (label, probability) of candidate token `k`.
    fn score(&self, text: &str, tokens: &[Token], k: usize) -> (usize, f32) {
        let mut buf = [0u32; MAX_FEATURES];
        let n = features::features(text, tokens, k, &mut buf);
        let (mut per, mut addr) = (0i32, 0i32);
        for &b in &buf[..n] {
            let [p, a] = self.weights.scores[b as usize];
            per += i32::from(p);
            addr += i32::from(a);
        }
        let (per, addr) = (per as f32 * self.weights.scale, addr as f32 * self.weights.scale);
        // Softmax with "nothing" at 0.
        let max = per.max(addr).max(0.0);
        let (e0, e1, e2) = ((-max).exp(), (per - max).exp(), (addr - max).exp());
        let sum = e0 + e1 + e2;
        if e1 >= e2 {
            (PER, e1 / sum)
        } else {
            (ADDR, e2 / sum)
        }
    }

    fn tag(&self, text: &str, tokens: &[Token], segment: usize, out: &mut Vec<Finding>) {
        let mut run: Option<Run> = None;
        for k in 0..tokens.len() {
            if !tokens[k].candidate {
                continue;
            }
            let (label, prob) = self.score(text, tokens, k);
            if prob < TOKEN_MIN {
                continue;
            }
            if let Some(r) = run.as_mut().filter(|r| r.label == label && joins(tokens, r.last, k, label)) {
                r.last = k;
                r.prob_sum += prob;
                r.count += 1;
                continue;
            }
            if let Some(r) = run.take() {
                emit(tokens, &r, segment, out);
            }
            run = Some(Run { label, first: k, last: k, prob_sum: prob, count: 1 });
        }
        if let Some(r) = run {
            emit(tokens, &r, segment, out);
        }
    }
}

/// Whether tagged token `k` continues the run ending at tagged token `last`.
fn joins(tokens: &[Token], last: usize, k: usize, label: usize) -> bool {
    let between = &tokens[last + 1..k];
    let gaps_ok = |allowed: &dyn Fn(usize, Gap) -> bool| (last + 1..=k).all(|j| allowed(j, tokens[j].gap));
    if label == PER {
        // "Anna Maria Lopez", "J. Smith", "Ludwig van Beethoven".
        let connectors_ok = between.len() <= 2
            && between.iter().all(|t| !t.candidate && t.shape == features::LOWER && t.end - t.start <= 3);
        connectors_ok
            && gaps_ok(&|j, g| {
                g == Gap::Space
                    || (g == Gap::Stop && tokens[j - 1].shape == features::SINGLE_UPPER)
                    || (g == Gap::Other && j == k)
            })
    } else {
        // "918 Birch Lane, Unit 12, Madison, WI 53703", "12 rue de la Paix",
        // one address line per line.
        between.len() <= 3
            && between.iter().all(|t| !t.candidate)
            && gaps_ok(&|j, g| match g {
                Gap::Space | Gap::Comma | Gap::Newline | Gap::Other => true,
                Gap::Stop => tokens[j - 1].end - tokens[j - 1].start <= 4,
                _ => false,
            })
    }
}

/// An address has a unit word ("Apt 4", "Suite 318"), or a name word
/// (not an everyday one, not a street type) with a number or a street type
/// ("918 Birch Lane", "Lindenstraße 12", "rue de la Paix"). A capitalised
/// title ("Guilty Pleasures"), a phone number next to a label ("67\nFax")
/// or a street type with a number alone ("Port 8080") is not one.
fn looks_like_address(tokens: &[Token]) -> bool {
    let has = |flag: u8| tokens.iter().any(|t| t.flags & flag != 0);
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

fn emit(tokens: &[Token], run: &Run, segment: usize, out: &mut Vec<Finding>) {
    let confidence = run.prob_sum / run.count as f32;
    let (kind, keep) = if run.label == PER {
        // A lone everyday word ("The", "Royal") is a name only when the
        // name lists know it as one too ("Rose", "Will").
        let lone_word = run.count == 1 && {
            let f = tokens[run.first].flags;
            f & features::COMMON != 0 && f & (features::FIRST | features::LAST) == 0
        };
        (PERSON_KIND, confidence >= 0.42 && !lone_word)
    } else {
        (ADDRESS_KIND, run.count >= 2 && confidence >= 0.6 && looks_like_address(&tokens[run.first..=run.last]))
    };
    if keep {
        let span = tokens[run.first].start..tokens[run.last].end;
        out.push(finding(Category::Pii, kind, segment, span, confidence.min(0.95), "tagger"));
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
    }

    #[test]
    fn quiet_on_code_and_plain_prose() {
        for text in [
            "let client = Client::builder().api_key(KEY).timeout(Duration::from_secs(60)).build()?;",
            "The pod restarts every 45 seconds with exit code 137 on Kubernetes 1.29.",
            "what is the capital of france",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
