//! The crate's one server-sent-events framer: where events end in a byte
//! stream, what an event's `data` is, and how sluice writes one. Redaction
//! restores placeholders event by event with it; the external local backend
//! reads its answers with it.
//!
//! It also holds the vocabulary ([`StreamTexts`], [`HeldEvent`]) by which
//! each dialect module says where the text sits in its streamed answers,
//! so the restorer knows no dialect and no dialect knows the restorer.

use std::borrow::Cow;

/// Finds event boundaries in a growing buffer without rescanning: feed it
/// the same buffer (with new bytes appended) until it returns `None`, and
/// tell it when bytes are removed from the front.
#[derive(Debug, Default)]
pub struct EventSplitter {
    /// Next byte to look at for a line end, and where that line starts.
    scan_from: usize,
    line_start: usize,
}

impl EventSplitter {
    /// `(body_end, end)` of the next complete event in `buf`: the event is
    /// `buf[..end]` from the previous end on, of which `buf[body_end..end]`
    /// is the blank line that ends it.
    pub fn next_event_end(&mut self, buf: &[u8]) -> Option<(usize, usize)> {
        while let Some(offset) = buf[self.scan_from..].iter().position(|&b| b == b'\n') {
            let newline = self.scan_from + offset;
            let line = &buf[self.line_start..newline];
            let blank = line.is_empty() || line == b"\r";
            let body_end = self.line_start;
            self.scan_from = newline + 1;
            self.line_start = newline + 1;
            if blank {
                return Some((body_end, newline + 1));
            }
        }
        self.scan_from = buf.len();
        None
    }

    /// `n` bytes were drained from the front of the buffer.
    pub fn consumed(&mut self, n: usize) {
        self.scan_from -= n;
        self.line_start -= n;
    }

    /// The buffer was cleared.
    pub fn reset(&mut self) {
        self.scan_from = 0;
        self.line_start = 0;
    }
}

/// One event's fields as far as sluice reads them.
#[derive(Debug, PartialEq)]
pub struct Event<'a> {
    /// The event had an `event:` line (Anthropic, Responses).
    pub has_event_line: bool,
    /// Its data lines, joined with `\n`.
    pub data: Cow<'a, str>,
}

/// The `data` of an event body (multi-line data joined with `\n`), if it
/// has any and is UTF-8.
pub fn parse_event(body: &[u8]) -> Option<Event<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut has_event_line = false;
    let mut data: Option<Cow<'_, str>> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            data = Some(match data {
                None => Cow::Borrowed(value),
                Some(prev) => Cow::Owned(format!("{prev}\n{value}")),
            });
        } else if line.starts_with("event:") {
            has_event_line = true;
        }
    }
    Some(Event { has_event_line, data: data? })
}

/// One `data:` event.
pub fn data_event(v: &serde_json::Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {v}\n\n"))
}

/// One named event (`event:` then `data:`).
pub fn named_event(name: &str, v: &serde_json::Value) -> Vec<u8> {
    format!("event: {name}\ndata: {v}\n\n").into_bytes()
}

/// What a dialect found in one parsed event of a streamed answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A delta event: its text went through [`StreamTexts::text`];
    /// `changed` says whether any of it was rewritten.
    Delta { changed: bool },
    /// Anything else (start, stop, usage, errors, whole items).
    Other,
}

/// Which streams end with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd<'a> {
    All,
    Key(&'a str),
    /// Every stream whose key starts with this.
    Prefix(&'a str),
}

/// Told, event by event, about the pieces of text in a streamed answer.
/// A dialect keys each stream of text (a choice's content, a content
/// block, an output item) so pieces of one stream can be joined.
pub trait StreamTexts {
    /// A piece of stream `key`'s text, which may be rewritten in place.
    /// `json`: the text is JSON source (tool arguments). `ends`: the
    /// stream ends with this piece. `held` makes the event that carries a
    /// piece of this stream on its own. Returns whether `text` changed.
    fn text(
        &mut self,
        key: String,
        text: &mut String,
        json: bool,
        ends: bool,
        held: &dyn Fn() -> Box<dyn HeldEvent>,
    ) -> bool;

    /// Streams that end with this event, after its pieces.
    fn end(&mut self, which: StreamEnd<'_>);
}

/// A dialect's delta event with its text left out, to be written later
/// with text that was held back.
pub trait HeldEvent: Send {
    fn write(self: Box<Self>, text: String, out: &mut Vec<u8>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_blank_lines_however_the_bytes_arrive() {
        let stream = b"event: a\ndata: {\"x\":1}\n\ndata: one\r\ndata: two\r\n\r\n: comment\n\n";
        for cut in 0..stream.len() {
            let mut split = EventSplitter::default();
            let mut buf = stream[..cut].to_vec();
            let mut events = Vec::new();
            let mut start = 0;
            let mut drain = |buf: &mut Vec<u8>, split: &mut EventSplitter, events: &mut Vec<Option<String>>| {
                while let Some((body_end, end)) = split.next_event_end(buf) {
                    events.push(parse_event(&buf[start..body_end]).map(|e| e.data.into_owned()));
                    start = end;
                }
                buf.drain(..start);
                split.consumed(start);
                start = 0;
            };
            drain(&mut buf, &mut split, &mut events);
            buf.extend_from_slice(&stream[cut..]);
            drain(&mut buf, &mut split, &mut events);
            assert_eq!(events, [Some("{\"x\":1}".to_string()), Some("one\ntwo".to_string()), None], "cut at {cut}");
        }
        assert!(parse_event(b"event: ping").is_none_or(|e| e.has_event_line));
    }
}
