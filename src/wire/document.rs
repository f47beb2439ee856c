//! Everything a request body carries, whatever its shape: the JSON document
//! (refused when a key repeats), every string in it, its object keys, and
//! its attachments with their media type and size.
//!
//! The dialect parsers lift what routing needs; this inventory is what
//! inspection reads, so a field no parser knows (a new provider feature, a
//! schema, a `name`, a document block) is still scanned. Attachment payloads
//! (base64 images, PDFs, audio) are not text: they become attachments, and
//! the text-like ones (plain text, JSON, CSV, ...) are decoded and scanned.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{pdf, ParseError};

/// Marker of the duplicate-key error inside serde_json's message; the key
/// itself is never part of it (it is the client's text).
const DUPLICATE_KEY: &str = "sluice: duplicate object key";

/// Decode a body into a JSON object, refusing duplicate keys anywhere: a
/// provider may read the first of two `messages` where sluice read the
/// last, so a body with two meanings is not forwarded at all.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ParseError> {
    match parse_value(body)? {
        Value::Object(map) => Ok(map),
        _ => Err(ParseError::NotAnObject),
    }
}

/// [`parse_object`] for any JSON value.
pub fn parse_value(body: &[u8]) -> Result<Value, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| ParseError::InvalidUtf8(e.valid_up_to()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Unique::deserialize(&mut de).and_then(|v| de.end().map(|()| v.0));
    value.map_err(|e| {
        let message = e.to_string();
        if message.starts_with(DUPLICATE_KEY) {
            ParseError::DuplicateKey { line: e.line(), column: e.column() }
        } else if message.contains("recursion limit") {
            // serde_json stops at depth 128 and says so; name it plainly.
            ParseError::TooDeep
        } else {
            ParseError::Json(message)
        }
    })
}

/// A JSON value whose objects have unique keys.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Unique(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(v) = map.next_value()?;
            if out.insert(key, v).is_some() {
                return Err(de::Error::custom(DUPLICATE_KEY));
            }
        }
        Ok(Value::Object(out))
    }
}

/// One attachment: what kind of content, how big, and its text when the
/// media type is text-like and the payload could be decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    /// `image/png`, `application/pdf`, `image/*` when only the class is known.
    pub media_type: String,
    /// Decoded payload size in bytes; 0 for a reference (URL, file id).
    pub bytes: u64,
    /// The part's shape: "inline" (payload in the body), "reference" (URL
    /// or file id) or "data_url".
    pub how: &'static str,
    /// Decoded text of a text-like payload, to be scanned like any prompt.
    pub text: Option<String>,
}

/// What inspection reads in one body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    /// Every string value that is not an attachment payload, in document order.
    pub strings: Vec<String>,
    /// Every distinct object key, one per line (schemas name properties
    /// with keys, and a key reaches the model like any value).
    pub keys: String,
    pub attachments: Vec<Attachment>,
}

/// Part `type`s that are attachments in the dialects sluice knows
/// (OpenAI chat and Responses, Anthropic, Cohere, Mistral).
const ATTACHMENT_TYPES: &[&str] = &[
    "image",
    "image_url",
    "input_image",
    "file",
    "input_file",
    "document",
    "document_url",
    "input_audio",
    "audio",
    "audio_url",
    "video",
    "video_url",
    "image_file",
    "container_upload",
];

/// Keys whose value, when it is an object, is an attachment part without a
/// `type` (Gemini `inlineData`/`fileData`, Bedrock converse `image`,
/// `document`, `video`).
const ATTACHMENT_KEYS: &[&str] =
    &["inlineData", "inline_data", "fileData", "file_data", "image", "document", "video", "audio", "input_audio"];

/// Keys that carry an attachment's payload or a reference to one.
const PAYLOAD_KEYS: &[&str] = &["data", "bytes", "file_data", "fileData", "b64_json", "image_bytes"];
const REFERENCE_KEYS: &[&str] = &["url", "image_url", "file_id", "fileUri", "file_uri", "uri", "s3Location"];
/// Keys that name an attachment's media type.
const MEDIA_KEYS: &[&str] = &["media_type", "mime_type", "mimeType", "content_type"];

impl Inventory {
    /// Take stock of a parsed body.
    pub fn of(value: &Value) -> Inventory {
        let mut inv = Inventory::default();
        let mut keys = BTreeSet::new();
        walk(value, None, &mut inv, &mut keys);
        let mut joined = String::new();
        for k in keys {
            joined.push_str(k);
            joined.push('\n');
        }
        inv.keys = joined;
        inv
    }

    /// A body that is not JSON: its text (invalid UTF-8 replaced), and one
    /// attachment per multipart file part.
    pub fn of_text(body: &[u8], content_type: &str) -> Inventory {
        let mut inv = Inventory::default();
        if let Some(boundary) = multipart_boundary(content_type) {
            multipart(body, &boundary, &mut inv);
        } else {
            inv.strings.push(String::from_utf8_lossy(body).into_owned());
        }
        inv
    }

    /// Every text to scan: strings, keys, then decoded attachment texts.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.strings
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.keys.as_str()))
            .chain(self.attachments.iter().filter_map(|a| a.text.as_deref()))
    }
}

fn walk<'v>(value: &'v Value, key: Option<&str>, inv: &mut Inventory, keys: &mut BTreeSet<&'v str>) {
    match value {
        Value::String(s) => {
            if let Some(attachment) = data_url(s) {
                inv.attachments.push(attachment);
            } else {
                inv.strings.push(s.clone());
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, key, inv, keys);
            }
        }
        Value::Object(map) => {
            keys.extend(map.keys().map(String::as_str));
            let typed = map.get("type").and_then(Value::as_str).is_some_and(|t| ATTACHMENT_TYPES.contains(&t));
            let keyed = key.is_some_and(|k| ATTACHMENT_KEYS.contains(&k)) && looks_like_part(map);
            if typed || keyed {
                attachment_part(map, key, inv, keys);
            } else {
                for (k, v) in map {
                    walk(v, Some(k), inv, keys);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A keyed object is a part only if it says what or where its content is;
/// `{"image": {"detail": "low"}}`-like settings are not.
fn looks_like_part(map: &Map<String, Value>) -> bool {
    map.keys().any(|k| {
        let k = k.as_str();
        PAYLOAD_KEYS.contains(&k)
            || REFERENCE_KEYS.contains(&k)
            || MEDIA_KEYS.contains(&k)
            || k == "source"
            || k == "format"
    })
}

/// One attachment part: its payloads and references are the attachment;
/// its other strings (file names, titles, context, citations) are text.
fn attachment_part<'v>(
    map: &'v Map<String, Value>,
    key: Option<&str>,
    inv: &mut Inventory,
    keys: &mut BTreeSet<&'v str>,
) {
    let mut part = Part { media_type: None, bytes: 0, how: "reference", payloads: Vec::new(), extracted: Vec::new() };
    part.scan(map, inv, keys);
    let class = map.get("type").and_then(Value::as_str).or(key).unwrap_or("file");
    let media_type = part.media_type.clone().unwrap_or_else(|| default_media_type(class).to_string());
    let texts: Vec<String> = part
        .payloads
        .iter()
        .filter_map(|p| payload_text(&media_type, p))
        .chain(part.extracted)
        .filter(|t| !t.is_empty())
        .collect();
    let text = (!texts.is_empty()).then(|| texts.join("\n"));
    inv.attachments.push(Attachment { media_type, bytes: part.bytes, how: part.how, text });
}

struct Part {
    media_type: Option<String>,
    bytes: u64,
    how: &'static str,
    payloads: Vec<Vec<u8>>,
    /// Text already extracted from a PDF data URL.
    extracted: Vec<String>,
}

impl Part {
    fn scan<'v>(&mut self, map: &'v Map<String, Value>, inv: &mut Inventory, keys: &mut BTreeSet<&'v str>) {
        keys.extend(map.keys().map(String::as_str));
        for (k, v) in map {
            let k = k.as_str();
            match v {
                // The client wrote these too: scanned like any string.
                Value::String(s) if MEDIA_KEYS.contains(&k) => {
                    self.media_type.get_or_insert_with(|| s.to_ascii_lowercase());
                    inv.strings.push(s.clone());
                }
                // Bedrock names the format (`png`, `pdf`), OpenAI audio too.
                Value::String(s) if k == "format" => {
                    self.media_type.get_or_insert_with(|| format_media_type(s));
                    inv.strings.push(s.clone());
                }
                Value::String(s) if PAYLOAD_KEYS.contains(&k) || REFERENCE_KEYS.contains(&k) => {
                    if let Some(d) = data_url(s) {
                        self.bytes += d.bytes;
                        self.how = "inline";
                        if let Some(t) = d.text {
                            // A PDF's text is extracted already: as a
                            // payload it would be read as a PDF again.
                            if is_pdf(&d.media_type) {
                                self.extracted.push(t);
                            } else {
                                self.payloads.push(t.into_bytes());
                            }
                        }
                        self.media_type.get_or_insert(d.media_type);
                    } else if PAYLOAD_KEYS.contains(&k) && is_base64(s) {
                        let decoded = decode_base64(s);
                        self.bytes += decoded.as_ref().map_or(s.len() as u64 * 3 / 4, |d| d.len() as u64);
                        self.how = "inline";
                        if let Some(d) = decoded {
                            self.payloads.push(d);
                        }
                    } else if PAYLOAD_KEYS.contains(&k) {
                        // Plain text where a payload goes (Anthropic's
                        // `{"type": "text", "data": "..."}` document source).
                        self.bytes += s.len() as u64;
                        self.how = "inline";
                        self.media_type.get_or_insert_with(|| "text/plain".to_string());
                        inv.strings.push(s.clone());
                    } else {
                        // A URL or file id: the content is elsewhere, the
                        // reference itself is text the provider reads.
                        inv.strings.push(s.clone());
                    }
                }
                Value::Object(inner) => self.scan(inner, inv, keys),
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::Object(inner) => self.scan(inner, inv, keys),
                            other => walk(other, Some(k), inv, keys),
                        }
                    }
                }
                other => walk(other, Some(k), inv, keys),
            }
        }
    }
}

fn default_media_type(class: &str) -> &'static str {
    match class {
        c if c.contains("image") => "image/*",
        c if c.contains("audio") => "audio/*",
        c if c.contains("video") => "video/*",
        "document" | "document_url" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn format_media_type(format: &str) -> String {
    let f = format.to_ascii_lowercase();
    match f.as_str() {
        "png" | "jpeg" | "gif" | "webp" => format!("image/{f}"),
        "jpg" => "image/jpeg".into(),
        "pdf" => "application/pdf".into(),
        "csv" => "text/csv".into(),
        "txt" => "text/plain".into(),
        "md" => "text/markdown".into(),
        "html" => "text/html".into(),
        "json" => "application/json".into(),
        "wav" | "mp3" | "flac" | "ogg" => format!("audio/{f}"),
        "mp4" | "mov" | "mkv" | "webm" => format!("video/{f}"),
        "doc" | "docx" | "xls" | "xlsx" => format!("application/{f}"),
        _ => "application/octet-stream".into(),
    }
}

/// Media types whose bytes are text a person wrote.
pub fn is_text_like(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/json"
                | "application/xml"
                | "application/x-ndjson"
                | "application/jsonl"
                | "application/csv"
                | "application/x-yaml"
                | "application/yaml"
                | "application/sql"
                | "application/javascript"
        )
}

/// Text taken from one PDF at most; a PDF's text beyond this is not
/// scanned (4 MiB is some two thousand pages of prose).
const PDF_TEXT_LIMIT: usize = 4 << 20;

/// PDFs are not text, but their text is cheaply extracted ([`pdf`]).
fn is_pdf(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/pdf") || essence.eq_ignore_ascii_case("application/x-pdf")
}

/// `data:<media type>[;params][;base64],<payload>` as an attachment.
fn data_url(s: &str) -> Option<Attachment> {
    let rest = s.strip_prefix("data:").or_else(|| s.strip_prefix("DATA:"))?;
    let (header, payload) = rest.split_once(',')?;
    let base64 = header.ends_with(";base64");
    let media_type = header.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let media_type = if media_type.is_empty() { "text/plain".to_string() } else { media_type };
    let decoded = if base64 { decode_base64(payload) } else { Some(percent_decode(payload)) };
    let bytes = decoded.as_ref().map_or(payload.len() as u64, |d| d.len() as u64);
    let text = decoded.and_then(|d| payload_text(&media_type, &d));
    Some(Attachment { media_type, bytes, how: "data_url", text })
}

/// The text in an attachment's bytes, if sluice can read it: text-like
/// media types as they are, PDFs by their text operators, and anything
/// that is plainly text whatever its label says (text sent as `image/png`
/// must not slip past the detectors).
fn payload_text(media_type: &str, bytes: &[u8]) -> Option<String> {
    if is_pdf(media_type) || bytes.starts_with(b"%PDF") {
        return pdf::extract_text(bytes, PDF_TEXT_LIMIT);
    }
    if is_text_like(media_type) {
        return Some(String::from_utf8_lossy(bytes).into_owned());
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let plain = text.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'));
    plain.then(|| text.to_string())
}

fn is_base64(s: &str) -> bool {
    s.len() >= 16
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'\n' | b'\r'))
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&compact))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&compact))
        .ok()
}

/// Percent-decode bytes; malformed escapes are kept as they are.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let essence = parts.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") && !essence.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Split a multipart body: fields are text; file parts are attachments
/// (their text scanned when text-like). A body that does not split cleanly
/// is scanned whole, as text.
fn multipart(body: &[u8], boundary: &str, inv: &mut Inventory) {
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let starts: Vec<usize> = finder.find_iter(body).collect();
    if starts.len() < 2 {
        inv.strings.push(String::from_utf8_lossy(body).into_owned());
        return;
    }
    for pair in starts.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let Some(split) = memchr::memmem::find(part, b"\r\n\r\n") else {
            inv.strings.push(String::from_utf8_lossy(part).into_owned());
            continue;
        };
        let head = String::from_utf8_lossy(&part[..split]).to_ascii_lowercase();
        let content = &part[split + 4..];
        let is_file = head.contains("filename=");
        let media_type = head
            .lines()
            .find_map(|l| l.strip_prefix("content-type:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| if is_file { "application/octet-stream".into() } else { "text/plain".into() });
        // The part's headers (field name, file name) are text too.
        inv.strings.push(String::from_utf8_lossy(&part[..split]).into_owned());
        if is_file {
            let text = payload_text(&media_type, content);
            inv.attachments.push(Attachment { media_type, bytes: content.len() as u64, how: "inline", text });
        } else {
            inv.strings.push(String::from_utf8_lossy(content).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_without_naming_them() {
        for body in [
            r#"{"messages":[],"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"a":{"secret":1,"secret":2}}"#,
            r#"[{"k":1},{"k":2,"k":3}]"#,
        ] {
            let err = parse_value(body.as_bytes()).unwrap_err();
            assert!(matches!(err, ParseError::DuplicateKey { .. }), "{body}: {err:?}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        // The same key in sibling objects is fine.
        assert!(parse_object(br#"{"a":{"k":1},"b":{"k":1}}"#).is_ok());
        assert_eq!(parse_object(b"[1]"), Err(ParseError::NotAnObject));
        assert!(matches!(parse_object(b"{\"a\":1} x"), Err(ParseError::Json(_))));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse_value(deep.as_bytes()), Err(ParseError::TooDeep));
    }

    #[test]
    fn numbers_and_strings_survive() {
        let v = parse_value(br#"{"a":-1,"b":1.5,"c":18446744073709551615,"d":"\u00e9","e":null,"f":true}"#).unwrap();
        assert_eq!(v, json!({"a":-1,"b":1.5,"c":18446744073709551615u64,"d":"é","e":null,"f":true}));
    }

    #[test]
    fn every_string_and_key_is_listed() {
        let v = json!({"model":"m","metadata":{"note":"n1"},"tools":[{"parameters":{"properties":{"acct_4111":{"description":"d1"}}}}]});
        let inv = Inventory::of(&v);
        for s in ["m", "n1", "d1"] {
            assert!(inv.strings.iter().any(|x| x == s), "{s}");
        }
        assert!(inv.keys.lines().any(|k| k == "acct_4111"));
        assert!(inv.attachments.is_empty());
    }

    #[test]
    fn attachments_in_each_dialect() {
        let png = base64::engine::general_purpose::STANDARD
            .encode([0x89u8, b'P', b'N', b'G', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let txt = base64::engine::general_purpose::STANDARD.encode("card 4111 1111 1111 1111 inside a file");
        let cases = [
            // OpenAI chat image and file parts.
            json!({"type":"image_url","image_url":{"url": format!("data:image/png;base64,{png}")}}),
            json!({"type":"file","file":{"filename":"a.txt","file_data": format!("data:text/plain;base64,{txt}")}}),
            // Anthropic image and PDF.
            json!({"type":"image","source":{"type":"base64","media_type":"image/png","data": png}}),
            json!({"type":"document","source":{"type":"base64","media_type":"text/plain","data": txt},"title":"t"}),
            // Gemini inline data (both spellings).
            json!({"inlineData":{"mimeType":"text/csv","data": txt}}),
            json!({"inline_data":{"mime_type":"image/png","data": png}}),
            // Bedrock converse.
            json!({"document":{"format":"txt","name":"n","source":{"bytes": txt}}}),
            // Responses input_file, OpenAI audio.
            json!({"type":"input_file","file_data": format!("data:application/pdf;base64,{png}"),"filename":"f.pdf"}),
            json!({"type":"input_audio","input_audio":{"data": png,"format":"wav"}}),
        ];
        for (i, c) in cases.iter().enumerate() {
            let inv = Inventory::of(&json!({"messages":[{"content":[c]}]}));
            assert_eq!(inv.attachments.len(), 1, "case {i}: {inv:?}");
            let a = &inv.attachments[0];
            assert!(a.bytes > 0, "case {i}");
            assert!(
                !inv.strings.iter().any(|s| s.contains(&png) || s.contains(&txt)),
                "case {i}: payload scanned as text"
            );
            if a.media_type.starts_with("text/") {
                assert!(a.text.as_deref().unwrap().contains("4111"), "case {i}");
            } else {
                assert!(a.text.is_none(), "case {i}: {a:?}");
            }
        }
        // An image by URL is an attachment too; the URL is text.
        let inv = Inventory::of(&json!({"type":"image","source":{"type":"url","url":"https://x/y.png"}}));
        assert_eq!(inv.attachments[0].how, "reference");
        assert!(inv.strings.iter().any(|s| s == "https://x/y.png"));
        // Anthropic text document: its data is prose.
        let inv = Inventory::of(
            &json!({"type":"document","source":{"type":"text","media_type":"text/plain","data":"plain words here"}}),
        );
        assert!(inv.strings.iter().any(|s| s == "plain words here"));
    }

    /// A minimal valid one-page PDF (catalog, pages, page, font, a
    /// FlateDecode content stream, xref table) showing `shown`.
    fn one_page_pdf(shown: &str) -> Vec<u8> {
        use std::io::Write as _;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(format!("BT /F1 12 Tf 72 720 Td ({shown}) Tj ET").as_bytes()).unwrap();
        let content = z.finish().unwrap();
        let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let mut offsets = Vec::new();
        let objects: [&[u8]; 4] = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ];
        for (i, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        offsets.push(out.len());
        out.extend_from_slice(
            format!("5 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n", content.len()).as_bytes(),
        );
        out.extend_from_slice(&content);
        out.extend_from_slice(b"\nendstream\nendobj\n");
        let xref = out.len();
        out.extend_from_slice(b"xref\n0 6\n0000000000 65535 f \n");
        for o in offsets {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(format!("trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n").as_bytes());
        out
    }

    #[test]
    fn pdf_attachments_are_scanned() {
        let pdf = base64::engine::general_purpose::STANDARD.encode(one_page_pdf("Card 4111 1111 1111 1111"));
        let cases = [
            // Anthropic document block.
            json!({"type":"document","source":{"type":"base64","media_type":"application/pdf","data": pdf}}),
            // Anthropic document without a media type, Bedrock by format,
            // Responses input_file as a data URL.
            json!({"type":"document","source":{"type":"base64","data": pdf}}),
            json!({"document":{"format":"pdf","name":"n","source":{"bytes": pdf}}}),
            json!({"type":"input_file","file_data": format!("data:application/pdf;base64,{pdf}"),"filename":"f.pdf"}),
        ];
        for (i, c) in cases.iter().enumerate() {
            let inv = Inventory::of(&json!({"messages":[{"role":"user","content":[c]}]}));
            assert_eq!(inv.attachments.len(), 1, "case {i}: {inv:?}");
            let a = &inv.attachments[0];
            assert_eq!(a.media_type, "application/pdf", "case {i}");
            assert!(a.text.as_deref().is_some_and(|t| t.contains("4111 1111 1111 1111")), "case {i}: {a:?}");
            assert!(inv.texts().any(|t| t.contains("4111 1111 1111 1111")), "case {i}");
            assert!(!inv.strings.iter().any(|s| s.contains(&pdf)), "case {i}: payload scanned as text");
        }
        // A bare data URL string, and a multipart upload.
        let inv = Inventory::of(&json!({"x": format!("data:application/pdf;base64,{pdf}")}));
        assert!(inv.attachments[0].text.as_deref().unwrap().contains("4111 1111 1111 1111"));
        let mut body = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n".to_vec();
        body.extend_from_slice(&one_page_pdf("Card 4111 1111 1111 1111"));
        body.extend_from_slice(b"\r\n--B--\r\n");
        let inv = Inventory::of_text(&body, "multipart/form-data; boundary=B");
        assert!(inv.attachments[0].text.as_deref().unwrap().contains("4111 1111 1111 1111"));
    }

    #[test]
    fn text_under_another_label_is_still_read() {
        let text = base64::engine::general_purpose::STANDARD.encode("card 4111 1111 1111 1111");
        for part in [
            json!({"type":"image","source":{"type":"base64","media_type":"image/png","data": text}}),
            json!({"type":"image_url","image_url":{"url": format!("data:image/png;base64,{text}")}}),
            json!({"type":"file","file":{"file_data": format!("data:text/plain;base64,{text}")},"mime_type":"image/png"}),
        ] {
            let inv = Inventory::of(&part);
            assert!(inv.attachments[0].text.as_deref().is_some_and(|t| t.contains("4111")), "{part}: {inv:?}");
        }
    }

    #[test]
    fn multipart_and_plain_bodies() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"k\":\"AKIAIOSFODNN7EXAMPLE\"}\r\n--XY--\r\n";
        let inv = Inventory::of_text(body, "multipart/form-data; boundary=XY");
        assert_eq!(inv.attachments.len(), 1);
        assert!(inv.attachments[0].text.as_deref().unwrap().contains("AKIA"));
        assert!(inv.strings.iter().any(|s| s == "batch"));
        let inv = Inventory::of_text(b"plain \xff text", "text/plain");
        assert_eq!(inv.strings, ["plain \u{fffd} text"]);
        assert_eq!(percent_decode("a%2Fb%zz%4"), b"a/b%zz%4");
    }
}
