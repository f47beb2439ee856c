//! Arbitrary bytes as a request body: the duplicate-key-refusing JSON
//! reader and the inventory inspection reads. Checks that nothing panics,
//! that a body with a repeated key is always refused, and that no string
//! of an accepted body (a field no parser knows included) is left out of
//! the inventory unless it is an attachment payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_fuzz::wire::document::{parse_value, Inventory};
use sluice_fuzz::wire::ParseError;

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|i| strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // Non-JSON bodies (multipart or text) never panic either.
    let _ = Inventory::of_text(data, "multipart/form-data; boundary=x");
    let _ = Inventory::of_text(data, "text/plain");
    let Ok(value) = parse_value(data) else { return };
    let inv = Inventory::of(&value);
    let mut all = Vec::new();
    strings(&value, &mut all);
    for s in all {
        let listed = inv.strings.iter().any(|x| x == s);
        let payload = s.starts_with("data:")
            || s.starts_with("DATA:")
            || s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=-_\r\n".contains(&b));
        assert!(listed || payload, "string left out: {s:?}");
    }
    // The same object with its first member repeated is refused.
    if let Value::Object(map) = &value {
        if let Some((k, v)) = map.iter().next() {
            let text = std::str::from_utf8(data).expect("parsed, so UTF-8");
            let open = text.find('{').expect("an object");
            let dup = format!(
                "{}{}:{},{}",
                &text[..=open],
                serde_json::to_string(k).expect("a string serialises"),
                v,
                &text[open + 1..]
            );
            assert!(matches!(parse_value(dup.as_bytes()), Err(ParseError::DuplicateKey { .. })), "{dup}");
        }
    }
});
