//! Precision / recall of sluice's detectors on labelled public data.
//!
//!     cargo run --release --example eval_pii -- FILE [FILE...]
//!
//! The format is detected from the content:
//! - presidio-research JSON: `[{full_text, spans: [{entity_type,
//!   start_position, end_position}]}]` (character offsets);
//! - Presidio recognizer test cases (jsonl with `test_file`, `text`,
//!   `expected_positions`): each case is scored for its recognizer's
//!   entity only;
//! - gitleaks rule fixtures (jsonl with `rule_id`, `label`, `text`): a
//!   true-positive fixture is found if any secret is reported, a
//!   false-positive fixture is a false alarm if any secret is reported;
//! - vsr e2e cases (JSON with `question`, `expected_blocked`);
//! - the multilingual people, places and organisations set written by
//!   `scripts/prepare-people-data` (jsonl with `text`, `spans` as
//!   `[start, end, "PER" | "ADDR" | "LOC" | "ORG" | "NRP"]` in bytes,
//!   `lang`): scored as PERSON, STREET_ADDRESS, GPE, ORGANIZATION and NRP,
//!   overall and per language.
//!
//! Span matching is by overlap with a gold span of the same entity type.
//! Pattern entities and the tagger's entities (PERSON, STREET_ADDRESS, and
//! the named entities GPE, ORGANIZATION, NRP from sluice's `location`,
//! `organization` and `nationality` findings) are reported apart, then the
//! micro average over the pattern entities with PERSON and STREET_ADDRESS,
//! and over every entity either sluice or Presidio attempts (those plus
//! GPE, NRP, ORGANIZATION). Other entity types are listed as out of scope
//! with recall 0.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;
use sluice::inspect::{Category, Detectors, Finding};

/// sluice kind -> dataset entity type.
const KIND_TO_ENTITY: &[(&str, &str)] = &[
    ("email", "EMAIL_ADDRESS"),
    ("credit_card", "CREDIT_CARD"),
    ("us_ssn", "US_SSN"),
    ("phone", "PHONE_NUMBER"),
    ("iban", "IBAN_CODE"),
    ("ip_address", "IP_ADDRESS"),
    ("mac_address", "MAC_ADDRESS"),
    ("uk_nino", "UK_NINO"),
    ("date_of_birth", "DATE_TIME"),
    ("passport_number", "US_PASSPORT"),
    ("drivers_license", "US_DRIVER_LICENSE"),
    ("us_bank_routing", "ABA_ROUTING_NUMBER"),
    ("crypto_wallet", "CRYPTO"),
    ("person", "PERSON"),
    ("street_address", "STREET_ADDRESS"),
    ("location", "GPE"),
    ("organization", "ORGANIZATION"),
    ("nationality", "NRP"),
    ("de_tax_id", "DE_TAX_ID"),
    ("fr_nir", "FR_NIR"),
    ("es_dni", "ES_NIF"),
    ("es_nie", "ES_NIE"),
    ("it_fiscal_code", "IT_FISCAL_CODE"),
    ("nl_bsn", "NL_BSN"),
    ("uk_nhs", "UK_NHS"),
    ("in_aadhaar", "IN_AADHAAR"),
    ("in_pan", "IN_PAN"),
    ("ca_sin", "CA_SIN"),
    ("au_tfn", "AU_TFN"),
    ("au_medicare", "AU_MEDICARE"),
    ("br_cpf", "BR_CPF"),
    ("br_cnpj", "BR_CNPJ"),
];

/// Entities scored by the people, places and organisations tagger rather
/// than by a validated pattern; reported apart from the pattern entities.
const TAGGER_ENTITIES: &[&str] = &["PERSON", "STREET_ADDRESS", "GPE", "ORGANIZATION", "NRP"];

/// The named entities (sluice's `entities` category) that sluice did not
/// attempt before issue 13's second part: locations, organisations,
/// nationalities. Presidio's NER attempts them too.
const NAMED_ENTITIES: &[&str] = &["GPE", "NRP", "ORGANIZATION"];

/// Presidio recognizer test file -> the entity it tests.
const TEST_FILE_ENTITY: &[(&str, &str)] = &[
    ("test_email_recognizer.py", "EMAIL_ADDRESS"),
    ("test_credit_card_recognizer.py", "CREDIT_CARD"),
    ("test_us_ssn_recognizer.py", "US_SSN"),
    ("test_phone_recognizer.py", "PHONE_NUMBER"),
    ("test_iban_recognizer.py", "IBAN_CODE"),
    ("test_ip_recognizer.py", "IP_ADDRESS"),
    ("test_mac_recognizer.py", "MAC_ADDRESS"),
    ("test_uk_nino_recognizer.py", "UK_NINO"),
    ("test_date_recognizer.py", "DATE_TIME"),
    ("test_us_passport_recognizer.py", "US_PASSPORT"),
    ("test_us_driver_license_recognizer.py", "US_DRIVER_LICENSE"),
    ("test_aba_routing_recognizer.py", "ABA_ROUTING_NUMBER"),
    ("test_crypto_recognizer.py", "CRYPTO"),
    ("test_de_tax_id_recognizer.py", "DE_TAX_ID"),
    ("test_es_nif_recognizer.py", "ES_NIF"),
    ("test_es_nie_recognizer.py", "ES_NIE"),
    ("test_it_fiscal_code_recognizer.py", "IT_FISCAL_CODE"),
    ("test_uk_nhs_recognizer.py", "UK_NHS"),
    ("test_in_aadhaar_recognizer.py", "IN_AADHAAR"),
    ("test_in_pan_recognizer.py", "IN_PAN"),
    ("test_ca_sin_recognizer.py", "CA_SIN"),
    ("test_au_tfn_recognizer.py", "AU_TFN"),
    ("test_au_medicare_recognizer.py", "AU_MEDICARE"),
];

fn entity_of(kind: &str) -> Option<&'static str> {
    KIND_TO_ENTITY.iter().find(|(k, _)| *k == kind).map(|(_, e)| *e)
}

fn in_scope(entity: &str) -> bool {
    KIND_TO_ENTITY.iter().any(|(_, e)| *e == entity)
}

#[derive(Default, Clone, Copy)]
struct Counts {
    gold: usize,
    gold_found: usize,
    predicted: usize,
    predicted_correct: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        ratio(self.predicted_correct, self.predicted)
    }
    fn recall(&self) -> f64 {
        ratio(self.gold_found, self.gold)
    }
    fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    fn add(&mut self, o: &Counts) {
        self.gold += o.gold;
        self.gold_found += o.gold_found;
        self.predicted += o.predicted;
        self.predicted_correct += o.predicted_correct;
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A labelled span in character offsets.
struct Gold {
    entity: String,
    start: usize,
    end: usize,
}

/// Byte offset -> character offset table for `text`.
fn char_offsets(text: &str) -> Vec<usize> {
    let mut map = vec![0; text.len() + 1];
    let mut chars = 0;
    for (i, c) in text.char_indices() {
        for b in 0..c.len_utf8() {
            map[i + b] = chars;
        }
        chars += 1;
    }
    map[text.len()] = chars;
    map
}

struct Scorer {
    detectors: Detectors,
    min_confidence: f32,
    per_entity: BTreeMap<String, Counts>,
    scanned_bytes: usize,
    scan_secs: f64,
    samples: usize,
    /// `EVAL_DUMP=1`: print each tagger miss and false alarm (for tuning).
    dump: bool,
}

impl Scorer {
    fn new(min_confidence: f32) -> Scorer {
        Scorer {
            detectors: Detectors::new(),
            min_confidence,
            per_entity: BTreeMap::new(),
            scanned_bytes: 0,
            scan_secs: 0.0,
            samples: 0,
            dump: std::env::var_os("EVAL_DUMP").is_some(),
        }
    }

    fn scan(&mut self, text: &str) -> Vec<Finding> {
        let start = Instant::now();
        let found = self.detectors.scan(None, &[text]);
        self.scan_secs += start.elapsed().as_secs_f64();
        self.scanned_bytes += text.len();
        self.samples += 1;
        found.into_iter().filter(|f| f.confidence >= self.min_confidence).collect()
    }

    /// Score one text against its gold spans; `only` restricts both sides
    /// to one entity type (recognizer test cases).
    fn score(&mut self, text: &str, gold: &[Gold], only: Option<&str>) {
        let found = self.scan(text);
        let offsets = char_offsets(text);
        let predicted: Vec<(&'static str, usize, usize)> = found
            .iter()
            .filter(|f| matches!(f.category, Category::Pii | Category::Entity))
            .filter_map(|f| {
                let e = entity_of(f.kind)?;
                Some((e, offsets[f.span.start], offsets[f.span.end]))
            })
            .filter(|(e, _, _)| only.is_none_or(|o| o == *e))
            .collect();
        let overlaps = |a: (usize, usize), b: (usize, usize)| a.0 < b.1 && b.0 < a.1;
        if self.dump {
            dump_misses(text, gold, &predicted);
        }
        for g in gold {
            if only.is_some_and(|o| o != g.entity) {
                continue;
            }
            let c = self.per_entity.entry(g.entity.clone()).or_default();
            c.gold += 1;
            if predicted.iter().any(|p| p.0 == g.entity && overlaps((p.1, p.2), (g.start, g.end))) {
                c.gold_found += 1;
            }
        }
        for p in &predicted {
            let c = self.per_entity.entry(p.0.to_string()).or_default();
            c.predicted += 1;
            if gold.iter().any(|g| g.entity == p.0 && overlaps((p.1, p.2), (g.start, g.end))) {
                c.predicted_correct += 1;
            }
        }
    }

    fn report(&self, title: &str) {
        println!("\n### {title}\n");
        println!("| entity | gold | found | predicted | correct | precision | recall | F1 |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut pattern = Counts::default();
        for (entity, c) in self.per_entity.iter().filter(|(e, _)| in_scope(e) && !TAGGER_ENTITIES.contains(&e.as_str()))
        {
            pattern.add(c);
            row(entity, c);
        }
        row("**pattern entities, micro**", &pattern);
        // Two readings of "every entity attempted": without the named
        // entities (pattern entities, PERSON, STREET_ADDRESS: what sluice
        // attempted before it found places and organisations), and with
        // them (every entity either sluice or Presidio attempts).
        let mut people = pattern;
        let mut union = pattern;
        for (entity, c) in self.per_entity.iter().filter(|(e, _)| TAGGER_ENTITIES.contains(&e.as_str())) {
            if !NAMED_ENTITIES.contains(&entity.as_str()) {
                people.add(c);
            }
            union.add(c);
            row(entity, c);
        }
        row("**pattern entities, PERSON, STREET_ADDRESS, micro**", &people);
        row("**every entity sluice or Presidio attempts (plus GPE, NRP, ORGANIZATION), micro**", &union);
        let out: Vec<_> = self.per_entity.iter().filter(|(e, _)| !in_scope(e)).collect();
        if !out.is_empty() {
            println!("\nOut of scope (need NER or a detector sluice lacks), recall 0:\n");
            println!("| entity | gold |");
            println!("|---|---:|");
            for (entity, c) in out {
                println!("| {entity} | {} |", c.gold);
            }
        }
        let mb = self.scanned_bytes as f64 / 1e6;
        println!(
            "\nScanned {} texts, {:.2} MB in {:.1} ms: {:.0} MB/s, {:.1} us per text.",
            self.samples,
            mb,
            self.scan_secs * 1e3,
            mb / self.scan_secs.max(1e-9),
            self.scan_secs * 1e6 / self.samples.max(1) as f64
        );
    }
}

/// Print the tagger's misses ("-") and false alarms ("+").
fn dump_misses(text: &str, gold: &[Gold], predicted: &[(&'static str, usize, usize)]) {
    let chars: Vec<char> = text.chars().collect();
    let slice = |s: usize, e: usize| chars[s.min(chars.len())..e.min(chars.len())].iter().collect::<String>();
    let overlaps = |a: (usize, usize), b: (usize, usize)| a.0 < b.1 && b.0 < a.1;
    for g in gold.iter().filter(|g| TAGGER_ENTITIES.contains(&g.entity.as_str())) {
        if !predicted.iter().any(|p| p.0 == g.entity && overlaps((p.1, p.2), (g.start, g.end))) {
            println!("- {} {:?} in {:?}", g.entity, slice(g.start, g.end), text);
        }
    }
    for p in predicted.iter().filter(|p| TAGGER_ENTITIES.contains(&p.0)) {
        if !gold.iter().any(|g| g.entity == p.0 && overlaps((p.1, p.2), (g.start, g.end))) {
            println!("+ {} {:?} in {:?}", p.0, slice(p.1, p.2), text);
        }
    }
}

fn row(name: &str, c: &Counts) {
    println!(
        "| {name} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
        c.gold,
        c.gold_found,
        c.predicted,
        c.predicted_correct,
        c.precision(),
        c.recall(),
        c.f1()
    );
}

fn presidio_research(scorer: &mut Scorer, items: &[Value]) {
    for item in items {
        let text = item["full_text"].as_str().unwrap_or("");
        let gold: Vec<Gold> = item["spans"]
            .as_array()
            .map(|spans| {
                spans
                    .iter()
                    .map(|s| Gold {
                        entity: s["entity_type"].as_str().unwrap_or("").to_string(),
                        start: s["start_position"].as_u64().unwrap_or(0) as usize,
                        end: s["end_position"].as_u64().unwrap_or(0) as usize,
                    })
                    .collect()
            })
            .unwrap_or_default();
        scorer.score(text, &gold, None);
    }
}

fn recognizer_cases(scorer: &mut Scorer, lines: &[Value]) {
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for case in lines {
        let file = case["test_file"].as_str().unwrap_or("");
        let Some(entity) = TEST_FILE_ENTITY.iter().find(|(f, _)| *f == file).map(|(_, e)| *e) else {
            *skipped.entry(file.to_string()).or_default() += 1;
            continue;
        };
        let text = case["text"].as_str().unwrap_or("");
        // Most files name the spans `expected_positions`, some `expected_res`.
        let positions = case.get("expected_positions").or_else(|| case.get("expected_res"));
        let Some(positions) = positions else {
            *skipped.entry(format!("{file} (no positions)")).or_default() += 1;
            continue;
        };
        let gold: Vec<Gold> = positions
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| Gold {
                        entity: entity.to_string(),
                        start: p[0].as_u64().unwrap_or(0) as usize,
                        end: p[1].as_u64().unwrap_or(0) as usize,
                    })
                    .collect()
            })
            .unwrap_or_default();
        scorer.score(text, &gold, Some(entity));
    }
    let total: usize = skipped.values().sum();
    println!(
        "\nRecognizer cases for entities sluice does not detect (other countries' IDs, NER, ...): {total} in {} files, not scored.",
        skipped.len()
    );
}

fn gitleaks_fixtures(scorer: &mut Scorer, lines: &[Value]) {
    let mut per_rule: BTreeMap<String, [usize; 4]> = BTreeMap::new(); // tp found, tp, fp flagged, fp
    for fx in lines {
        let rule = fx["rule_id"].as_str().unwrap_or("").to_string();
        let text = fx["text"].as_str().unwrap_or("");
        let positive = fx["label"].as_str() == Some("tp");
        let found = scorer.scan(text).iter().any(|f| f.category == Category::Secret);
        let c = per_rule.entry(rule).or_default();
        if positive {
            c[1] += 1;
            c[0] += usize::from(found);
        } else {
            c[3] += 1;
            c[2] += usize::from(found);
        }
    }
    let mut t = [0usize; 4];
    println!("\n### gitleaks rule fixtures\n");
    println!("| rule | true fixtures found | false fixtures flagged |");
    println!("|---|---:|---:|");
    for (rule, c) in &per_rule {
        println!("| {rule} | {}/{} | {}/{} |", c[0], c[1], c[2], c[3]);
        for i in 0..4 {
            t[i] += c[i];
        }
    }
    let precision = ratio(t[0], t[0] + t[2]);
    let recall = ratio(t[0], t[1]);
    println!("| **all** | {}/{} (recall {:.3}) | {}/{} (precision {:.3}) |", t[0], t[1], recall, t[2], t[3], precision);
}

fn vsr_cases(scorer: &mut Scorer, items: &[Value]) {
    let mut per_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for item in items {
        let text = item["question"].as_str().unwrap_or("");
        let blocked = scorer.scan(text).iter().any(|f| matches!(f.category, Category::Pii | Category::Secret));
        let expected = item["expected_blocked"].as_bool().unwrap_or(true);
        let t = item["pii_type"].as_str().unwrap_or("?").to_string();
        let e = per_type.entry(t).or_default();
        e.1 += 1;
        e.0 += usize::from(blocked == expected);
    }
    println!("\n### vsr e2e PII cases (any PII or secret finding = blocked)\n");
    println!("| pii_type | correct / cases |");
    println!("|---|---:|");
    for (t, (ok, n)) in per_type {
        println!("| {t} | {ok}/{n} |");
    }
}

/// The multilingual people-and-places set from `scripts/prepare-people-data`:
/// byte spans labelled PER or ADDR, scored overall and per language.
fn people_set(min_confidence: f32, lines: &[Value]) {
    let mut by_lang: BTreeMap<String, Scorer> = BTreeMap::new();
    let mut all = Scorer::new(min_confidence);
    for line in lines {
        let text = line["text"].as_str().unwrap_or("");
        let offsets = char_offsets(text);
        let gold: Vec<Gold> = line["spans"]
            .as_array()
            .map(|spans| {
                spans
                    .iter()
                    .filter_map(|s| {
                        let entity = match s[2].as_str()? {
                            "PER" => "PERSON",
                            "ADDR" => "STREET_ADDRESS",
                            "LOC" => "GPE",
                            "ORG" => "ORGANIZATION",
                            "NRP" => "NRP",
                            _ => return None,
                        };
                        let (start, end) = (s[0].as_u64()? as usize, s[1].as_u64()? as usize);
                        Some(Gold { entity: entity.to_string(), start: offsets[start], end: offsets[end] })
                    })
                    .collect()
            })
            .unwrap_or_default();
        all.score(text, &gold, None);
        let lang = line["lang"].as_str().unwrap_or("?").to_string();
        by_lang.entry(lang).or_insert_with(|| Scorer::new(min_confidence)).score(text, &gold, None);
    }
    all.report("multilingual people-and-places set (templates and names unseen in training)");
    println!("\nPer language (xx: runs of capitalised words with no sentence around them):\n");
    println!("| lang | entity | gold | found | predicted | correct | precision | recall | F1 |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (lang, scorer) in &by_lang {
        for entity in TAGGER_ENTITIES {
            let c = scorer.per_entity.get(*entity).copied().unwrap_or_default();
            println!(
                "| {lang} | {entity} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
                c.gold,
                c.gold_found,
                c.predicted,
                c.predicted_correct,
                c.precision(),
                c.recall(),
                c.f1()
            );
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut min_confidence = 0.0;
    if let Some(i) = args.iter().position(|a| a == "--min-confidence") {
        min_confidence = args.get(i + 1).ok_or("--min-confidence needs a value")?.parse()?;
        args.drain(i..i + 2);
    }
    if args.is_empty() {
        return Err("usage: eval_pii [--min-confidence X] FILE [FILE...]".into());
    }
    for path in args {
        let content = std::fs::read_to_string(&path)?;
        let mut scorer = Scorer::new(min_confidence);
        println!("\n## {path}");
        if content.trim_start().starts_with('[') {
            let items: Vec<Value> = serde_json::from_str(&content)?;
            if items.first().is_some_and(|i| i.get("full_text").is_some()) {
                presidio_research(&mut scorer, &items);
                scorer.report("presidio-research spans");
            } else {
                vsr_cases(&mut scorer, &items);
            }
        } else {
            let lines: Vec<Value> =
                content.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?;
            if lines.first().is_some_and(|l| l.get("rule_id").is_some()) {
                gitleaks_fixtures(&mut scorer, &lines);
            } else if lines.first().is_some_and(|l| l.get("spans").is_some() && l.get("lang").is_some()) {
                people_set(min_confidence, &lines);
            } else {
                recognizer_cases(&mut scorer, &lines);
                scorer.report("Presidio recognizer test cases (each scored for its own entity)");
            }
        }
    }
    Ok(())
}
