use super::*;
use crate::inspect::Category;
use serde_json::{json, Value};

fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| all_strings(x, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            all_strings(x, out)
        }),
        _ => {}
    }
}

#[test]
fn labels() {
    assert_eq!(placeholder_label("email"), "EMAIL");
    assert_eq!(placeholder_label("credit_card"), "CARD");
    assert_eq!(placeholder_label("us_ssn"), "SSN");
    assert_eq!(placeholder_label("aws_access_key"), "AWS_KEY");
    assert_eq!(placeholder_label("term"), "TERM");
    assert_eq!(placeholder_label("passport-no"), "PASSPORT_NO");
}

#[test]
fn same_value_same_placeholder_numbered_per_label() {
    let r = Redaction::plan([
        ("email", "a@x.com"),
        ("credit_card", "4111111111111111"),
        ("email", "b@x.com"),
        ("email", "a@x.com"),
        ("term", ""),
    ]);
    let ph: Vec<(&str, &str)> = r.table.entries.iter().map(|e| (e.placeholder.as_str(), e.value.as_str())).collect();
    assert_eq!(ph, [("<EMAIL_1>", "a@x.com"), ("<CARD_1>", "4111111111111111"), ("<EMAIL_2>", "b@x.com")]);
    assert_eq!(r.counts_by_kind(), BTreeMap::from([("credit_card", 1), ("email", 2)]));
    assert!(!r.is_empty());
    assert!(Redaction::plan([]).is_empty());
    assert!(!format!("{r:?}").contains("a@x.com"));
}

#[test]
fn plan_is_stable_across_turns() {
    let turn1 = Redaction::plan([("email", "a@x.com"), ("phone", "555-0100")]);
    // Turn 2 resends turn 1 (now with the restored answer) plus new text.
    let turn2 =
        Redaction::plan([("email", "a@x.com"), ("phone", "555-0100"), ("email", "a@x.com"), ("email", "c@x.com")]);
    for e in &turn1.table.entries {
        let same = turn2.table.entries.iter().find(|x| x.value == e.value).unwrap();
        assert_eq!(same.placeholder, e.placeholder);
    }
    assert_eq!(turn2.table.entries[2].placeholder, "<EMAIL_2>");
}

#[test]
fn from_findings_orders_by_position() {
    let segments = ["mail b@x.com", "first a@x.com then b@x.com"];
    let f = |segment, span: std::ops::Range<usize>| Finding {
        category: Category::Pii,
        kind: "email",
        segment,
        span,
        confidence: 1.0,
        validator: "pattern",
    };
    let findings = [f(1, 19..26), f(1, 6..13), f(0, 5..12), f(0, 5..99)];
    let r = Redaction::from_findings(&segments, &findings);
    let values: Vec<&str> = r.table.entries.iter().map(|e| e.value.as_str()).collect();
    assert_eq!(values, ["b@x.com", "a@x.com"]);
}

#[test]
fn redacts_realistic_openai_body() {
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You help Acme staff. Escalate to boss@acme.com."},
            {"role": "user", "content": [
                {"type": "text", "text": "Card 4111 1111 1111 1111 belongs to jo@x.org"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUNNRQ=="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"email\":\"jo@x.org\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "jo@x.org: Project Falcon lead"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find a user; never for boss@acme.com", "parameters": {"type": "object"}}}],
        "user": "jo@x.org"
    });
    let raw = serde_json::to_vec(&body).unwrap();
    let r = Redaction::plan([
        ("email", "boss@acme.com"),
        ("credit_card", "4111 1111 1111 1111"),
        ("email", "jo@x.org"),
        ("term", "Falcon"),
    ]);
    let out = r.redact_json_body(&raw).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    for v in ["boss@acme.com", "4111 1111 1111 1111", "jo@x.org", "Falcon"] {
        assert!(!text.contains(v), "{v} left in {text}");
    }
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["messages"][1]["content"][0]["text"], "Card <CARD_1> belongs to <EMAIL_2>");
    assert_eq!(v["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"email\":\"<EMAIL_2>\"}");
    assert_eq!(v["messages"][3]["content"], "<EMAIL_2>: Project <TERM_1> lead");
    assert_eq!(v["user"], "<EMAIL_2>");
    // Structure and binary payloads are untouched.
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["messages"][1]["content"][1], body["messages"][1]["content"][1]);
    // Restoring the redacted body gives back the original.
    let restored: Value = serde_json::from_slice(&r.restore_json_body(&out).unwrap()).unwrap();
    assert_eq!(restored, body);
}

#[test]
fn redacts_realistic_anthropic_body() {
    let body = json!({
        "model": "claude-sonnet-4",
        "system": [{"type": "text", "text": "Customer: ann@corp.io, SSN 123-45-6789"}],
        "messages": [
            {"role": "user", "content": "Email ann@corp.io about the \"Blue Wren\" account"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking up."},
                {"type": "tool_use", "id": "toolu_1", "name": "crm", "input": {"name": "Blue Wren", "id": "123-45-6789"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "owner ann@corp.io"}]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "YW5uQGNvcnAuaW8="}}
            ]}
        ],
        "max_tokens": 100
    });
    let raw = serde_json::to_vec(&body).unwrap();
    let r = Redaction::plan([("email", "ann@corp.io"), ("us_ssn", "123-45-6789"), ("term", "Blue Wren")]);
    let out = r.redact_json_body(&raw).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let mut strings = Vec::new();
    all_strings(&v, &mut strings);
    for s in &strings {
        for value in ["ann@corp.io", "123-45-6789", "Blue Wren"] {
            assert!(!s.contains(value), "{value} left in {s}");
        }
    }
    assert_eq!(v["system"][0]["text"], "Customer: <EMAIL_1>, SSN <SSN_1>");
    // Keys inside a tool input are the model's: `id` there is data.
    assert_eq!(v["messages"][1]["content"][1]["input"], json!({"name": "<TERM_1>", "id": "<SSN_1>"}));
    assert_eq!(v["messages"][1]["content"][1]["id"], "toolu_1");
    assert_eq!(v["messages"][2]["content"][1]["source"]["data"], "YW5uQGNvcnAuaW8=");
    assert_eq!(v["max_tokens"], 100);
}

#[test]
fn escaped_values_from_serialised_tool_input_are_found() {
    let body = br#"{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"q":"say \"hi\" Bob"}}]}]}"#;
    // The inspector saw `{"q":"say \"hi\" Bob"}` and matched with escapes.
    let r = Redaction::plan([("term", r#"\"hi\" Bob"#)]);
    let out = String::from_utf8(r.redact_json_body(body).unwrap()).unwrap();
    assert!(out.contains(r#""q":"say <TERM_1>""#), "{out}");
}

#[test]
fn unescaped_spelling_is_only_matched_inside_tool_inputs() {
    // Decoded content: `q\" and q"`; the value was seen in plain text.
    let body = br#"{"messages":[{"role":"user","content":"q\\\" and q\""}]}"#;
    let r = Redaction::plan([("term", r#"q\""#)]);
    let v: Value = serde_json::from_slice(&r.redact_json_body(body).unwrap()).unwrap();
    assert_eq!(v["messages"][0]["content"], "<TERM_1> and q\"");
}

#[test]
fn overlapping_values_prefer_the_longest() {
    let body = br#"{"messages":[{"role":"user","content":"Falcon Heavy and Falcon"}]}"#;
    let r = Redaction::plan([("term", "Falcon"), ("term", "Falcon Heavy")]);
    let v: Value = serde_json::from_slice(&r.redact_json_body(body).unwrap()).unwrap();
    assert_eq!(v["messages"][0]["content"], "<TERM_2> and <TERM_1>");
}

#[test]
fn value_seen_only_inside_a_longer_value_is_placed() {
    let body = br#"{"messages":[{"role":"user","content":"about Falcon Heavy"}]}"#;
    let r = Redaction::plan([("term", "Falcon"), ("term", "Falcon Heavy")]);
    let v: Value = serde_json::from_slice(&r.redact_json_body(body).unwrap()).unwrap();
    assert_eq!(v["messages"][0]["content"], "about <TERM_2>");
}

#[test]
fn unplaced_value_fails_closed() {
    let body = br#"{"messages":[{"role":"user","content":"nothing here"}]}"#;
    let r = Redaction::plan([("email", "a@x.com")]);
    assert_eq!(r.redact_json_body(body), Err(RedactError::Unplaced { kind: "email" }));
    assert!(matches!(r.redact_json_body(b"{nope"), Err(RedactError::InvalidJson(_))));
}

#[test]
fn restores_whole_openai_chat_response() {
    let r = Redaction::plan([("email", "jo@x.org"), ("term", "Say \"Falcon\"")]);
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Writing to <EMAIL_1> re <TERM_1>, not <EMAIL_7>.",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "send",
                "arguments": "{\"to\":\"<EMAIL_1>\",\"subject\":\"<TERM_1>\"}"}}]
        }}]
    });
    let out: Value =
        serde_json::from_slice(&r.restore_json_body(&serde_json::to_vec(&body).unwrap()).unwrap()).unwrap();
    let msg = &out["choices"][0]["message"];
    assert_eq!(msg["content"], "Writing to jo@x.org re Say \"Falcon\", not <EMAIL_7>.");
    let args: Value = serde_json::from_str(msg["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"to": "jo@x.org", "subject": "Say \"Falcon\""}));
}

#[test]
fn restores_whole_anthropic_and_responses_bodies() {
    let r = Redaction::plan([("email", "jo@x.org")]);
    let anthropic = json!({"type": "message", "content": [
        {"type": "text", "text": "Sent to <EMAIL_1>"},
        {"type": "tool_use", "id": "t", "name": "send", "input": {"to": ["<EMAIL_1>"]}}
    ]});
    let out: Value =
        serde_json::from_slice(&r.restore_json_body(&serde_json::to_vec(&anthropic).unwrap()).unwrap()).unwrap();
    assert_eq!(out["content"][0]["text"], "Sent to jo@x.org");
    assert_eq!(out["content"][1]["input"]["to"][0], "jo@x.org");

    // Go-style encoders escape `<` and `>`; JSON parsing makes that moot.
    let responses = br#"{"object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"hi \u003cEMAIL_1\u003e"}]},{"type":"function_call","arguments":"{\"to\":\"<EMAIL_1>\"}"}]}"#;
    let out: Value = serde_json::from_slice(&r.restore_json_body(responses).unwrap()).unwrap();
    assert_eq!(out["output"][0]["content"][0]["text"], "hi jo@x.org");
    assert_eq!(out["output"][1]["arguments"], "{\"to\":\"jo@x.org\"}");
}

#[test]
fn response_without_placeholders_is_returned_byte_for_byte() {
    let r = Redaction::plan([("email", "jo@x.org")]);
    let body = br#"{"b": 1.0e3,   "a":"x < y"}"#;
    assert_eq!(r.restore_json_body(body).unwrap(), body);
}
