//! Arbitrary bytes, read as lossy UTF-8 and split into segments, through
//! `Detectors::scan` with a small dictionary; checks the invariants every
//! consumer of findings relies on.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::inspect::{
    Category, Detectors, Dictionary, ATTACHMENT_KIND, ENTITY_KINDS, PII_KINDS, SECRET_KINDS, SPECIAL_KINDS, TERM_KIND,
};

fn engine() -> &'static (Detectors, Dictionary) {
    static ENGINE: OnceLock<(Detectors, Dictionary)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dict = Dictionary::new(["falcon", "Project Orion", "acme corp", "é", "ünïcödé term"])
            .expect("constant terms are not blank");
        (Detectors::new(), dict)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // A 0x1F byte separates segments, so one input exercises several.
    let segments: Vec<&str> = text.split('\u{1f}').collect();
    let (detectors, dict) = engine();
    let findings = detectors.scan(Some(dict), &segments);
    let mut last = (0, 0);
    for f in &findings {
        let seg = segments[f.segment];
        assert!(f.span.start < f.span.end, "{f:?}");
        assert!(f.span.end <= seg.len(), "{f:?}");
        assert!(seg.is_char_boundary(f.span.start) && seg.is_char_boundary(f.span.end), "{f:?}");
        assert!((0.0..=1.0).contains(&f.confidence), "{f:?}");
        let declared = match f.category {
            Category::Pii => PII_KINDS.contains(&f.kind),
            Category::Secret => SECRET_KINDS.contains(&f.kind),
            Category::Term => f.kind == TERM_KIND,
            Category::Attachment => f.kind == ATTACHMENT_KIND,
            Category::Special => SPECIAL_KINDS.contains(&f.kind),
            Category::Entity => ENTITY_KINDS.contains(&f.kind),
        };
        assert!(declared, "{f:?}");
        assert!((f.segment, f.span.start) >= last, "unsorted at {f:?}");
        last = (f.segment, f.span.start);
    }
});
