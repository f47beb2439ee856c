//! An inspecting WebSocket relay for intercepted hosts.
//!
//! A WebSocket upgrade (OpenAI's Realtime API, `wss://api.openai.com/v1/realtime`)
//! turns an inspected HTTP exchange into a long-lived byte stream. Relaying
//! that stream unchanged, as a CONNECT tunnel is, would let every prompt sent
//! over it leave uninspected. [`relay_inspected`] therefore reads the
//! client's side frame by frame (RFC 6455), reassembles each data message
//! and hands it to the caller's inspection *before* any byte of it reaches
//! the origin. A message the caller refuses never leaves: the client is sent
//! a close frame saying why and the origin is told the client went away.
//!
//! What is forwarded is exactly what the client sent, frame boundaries and
//! masking keys included: the relay holds frames back, it never re-frames.
//! The origin's answers are copied unchanged (they are not prompts); the
//! relay only follows their frame boundaries so that a close frame of its
//! own is never spliced into the middle of one.
//!
//! Compressed frames (permessage-deflate, RSV1) cannot be inspected without
//! inflating them, so any frame with an RSV bit set is refused; the caller
//! strips `Sec-WebSocket-Extensions` from the upgrade request so that a
//! well-behaved client never negotiates compression in the first place.

use std::io;
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tunnel::{Activity, Tracked};

/// What the caller's inspection gets: one complete data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsMessage<'a> {
    /// A text message, already checked to be UTF-8.
    Text(&'a str),
    Binary(&'a [u8]),
}

/// The caller's decision on one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Close the connection; `close_reason` is sent to the client in a 1008
    /// (policy violation) close frame, so it must be sluice's own words.
    Refuse {
        close_reason: &'static str,
    },
}

/// What a relay moved before it ended, and why it ended if not by both
/// sides closing.
#[derive(Debug)]
pub struct WsRelayed {
    /// Bytes read from the client (everything it sent, forwarded or not).
    pub up: u64,
    /// Bytes written to the client: the origin's, and sluice's close frame.
    pub down: u64,
    /// Client messages inspected and forwarded.
    pub messages_up: u64,
    /// Set when sluice closed the connection on a message: the close reason
    /// the client was sent.
    pub refused: Option<&'static str>,
    pub error: Option<WsError>,
}

/// Why a relay ended other than by both sides closing or a refusal.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("client broke the WebSocket protocol: {0}")]
    Protocol(#[from] FrameError),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A client frame, or sequence of frames, that is not valid RFC 6455.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame from the client is not masked")]
    Unmasked,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("continuation frame outside a fragmented message")]
    StrayContinuation,
    #[error("new message before the fragmented one was finished")]
    UnfinishedMessage,
    #[error("frame length has its most significant bit set")]
    LengthOverflow,
    #[error("stream ended inside a frame or a fragmented message")]
    Truncated,
}

// Close status codes (RFC 6455 section 7.4.1).
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const POLICY_VIOLATION: u16 = 1008;
const TOO_BIG: u16 = 1009;

const REASON_COMPRESSED: &str = "compressed or extended WebSocket frames cannot be inspected";
const REASON_TOO_BIG: &str = "WebSocket message too big to inspect";
const REASON_FRAGMENTS: &str = "WebSocket message split into too many fragments";
const REASON_NOT_UTF8: &str = "WebSocket text message is not valid UTF-8";

/// How much is read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free room the client buffer grows before the next read,
/// so reads are never tiny.
const MIN_SPARE: usize = 4 * 1024;
/// A buffer grown past this for one big message is given back afterwards,
/// so a long, mostly quiet session does not pin its largest message.
const SHRINK_ABOVE: usize = 256 * 1024;
/// Each fragment costs a header the size limit does not count; this keeps
/// a stream of empty continuation frames from growing the hold unbounded.
const MAX_FRAGMENTS: usize = 1024;
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of masking key.
const MAX_HEADER: usize = 14;
/// How long saying goodbye may take (finishing the origin's frame in
/// flight, writing close frames) before the connection is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Relay a WebSocket connection whose handshake is done, handing every
/// message the client sends to `inspect` before it is forwarded, until both
/// sides have closed, nothing moved for `idle`, a message is refused (by
/// `inspect`, for its size over `max_message` bytes, for compression, or
/// for a text payload that is not UTF-8), or the client breaks the protocol
/// (answered with a 1002 close).
///
/// `inspect` runs on the relay's task; it must not block for long.
pub async fn relay_inspected<C, O, F>(
    client: &mut C,
    origin: &mut O,
    idle: Duration,
    max_message: usize,
    inspect: F,
) -> WsRelayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(WsMessage<'_>) -> Verdict,
{
    relay_with_grace(client, origin, idle, max_message, inspect, CLOSE_GRACE).await
}

async fn relay_with_grace<C, O, F>(
    client: &mut C,
    origin: &mut O,
    idle: Duration,
    max_message: usize,
    inspect: F,
    grace: Duration,
) -> WsRelayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(WsMessage<'_>) -> Verdict,
{
    let activity = Activity::new();
    // Both directions write to the client (the origin's bytes, sluice's
    // close), so each side is split and the halves are shared out.
    let (mut client_rd, mut client_wr) = tokio::io::split(Tracked::new(client, activity.clone()));
    let (mut origin_rd, mut origin_wr) = tokio::io::split(origin);
    let mut up = Upstream::new(max_message, inspect);
    let mut down = Downstream::new();
    let ending =
        run(&mut up, &mut down, &mut client_rd, &mut client_wr, &mut origin_rd, &mut origin_wr, &activity, idle).await;
    let (refused, error) = match ending {
        Ending::Done => (None, None),
        Ending::Idle => (None, Some(WsError::Idle(idle))),
        Ending::Io(e) => (None, Some(WsError::Io(e))),
        Ending::Refused { code, reason } => {
            say_goodbye(&mut down, &mut client_wr, &mut origin_rd, &mut origin_wr, code, reason, grace).await;
            (Some(reason), None)
        }
        Ending::Protocol(e) => {
            say_goodbye(
                &mut down,
                &mut client_wr,
                &mut origin_rd,
                &mut origin_wr,
                PROTOCOL_ERROR,
                &e.to_string(),
                grace,
            )
            .await;
            (None, Some(WsError::Protocol(e)))
        }
    };
    let (up_bytes, down_bytes) = activity.bytes();
    WsRelayed { up: up_bytes, down: down_bytes, messages_up: up.messages, refused, error }
}

/// How the relaying part ended.
enum Ending {
    /// Both sides closed.
    Done,
    Idle,
    Io(io::Error),
    Refused {
        code: u16,
        reason: &'static str,
    },
    Protocol(FrameError),
}

#[allow(clippy::too_many_arguments)]
async fn run<F, CR, CW, OR, OW>(
    up: &mut Upstream<F>,
    down: &mut Downstream,
    client_rd: &mut CR,
    client_wr: &mut CW,
    origin_rd: &mut OR,
    origin_wr: &mut OW,
    activity: &Activity,
    idle: Duration,
) -> Ending
where
    F: FnMut(WsMessage<'_>) -> Verdict,
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    OR: AsyncRead + Unpin,
    OW: AsyncWrite + Unpin,
{
    let up_pump = up.pump(client_rd, origin_wr);
    let down_pump = down.pump(origin_rd, client_wr);
    tokio::pin!(up_pump, down_pump);
    let (mut up_open, mut down_open) = (true, true);
    loop {
        tokio::select! {
            end = &mut up_pump, if up_open => match end {
                UpEnd::Closed => up_open = false,
                UpEnd::Refused { code, reason } => return Ending::Refused { code, reason },
                UpEnd::Protocol(e) => return Ending::Protocol(e),
                UpEnd::Io(e) => return Ending::Io(e),
            },
            end = &mut down_pump, if down_open => match end {
                Ok(()) => down_open = false,
                Err(e) => return Ending::Io(e),
            },
            _ = activity.idle(idle) => return Ending::Idle,
        }
        if !up_open && !down_open {
            return Ending::Done;
        }
    }
}

/// Close both sides after a refusal or a protocol error. The client learns
/// why (`code`, `reason`); the origin only that the client went away, since
/// why sluice stopped a prompt is none of the provider's business. Errors
/// are ignored: the connection is ending either way.
async fn say_goodbye<CW, OR, OW>(
    down: &mut Downstream,
    client_wr: &mut CW,
    origin_rd: &mut OR,
    origin_wr: &mut OW,
    code: u16,
    reason: &str,
    grace: Duration,
) where
    CW: AsyncWrite + Unpin,
    OR: AsyncRead + Unpin,
    OW: AsyncWrite + Unpin,
{
    // The upstream pump only ever writes whole frames, so the origin's side
    // is always at a frame boundary here.
    let to_origin = tokio::time::timeout(grace, async {
        origin_wr.write_all(&close_frame(GOING_AWAY, "", Some(masking_key()))).await?;
        origin_wr.shutdown().await
    });
    let to_client = tokio::time::timeout(grace, async {
        if down.finish_frame(origin_rd, client_wr).await? {
            client_wr.write_all(&close_frame(code, reason, None)).await?;
        }
        client_wr.shutdown().await
    });
    let (origin_done, client_done) = tokio::join!(to_origin, to_client);
    if !matches!(client_done, Ok(Ok(()))) || !matches!(origin_done, Ok(Ok(()))) {
        tracing::debug!(?origin_done, ?client_done, "websocket close not delivered in full");
    }
}

/// One frame header as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    /// RSV1..RSV3, as the low three bits.
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Header bytes, masking key included.
    len: usize,
    payload: u64,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Header length as told by its second byte.
fn header_len(second: u8) -> usize {
    let ext = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// The header at the start of `bytes`, or `None` while it is incomplete.
fn parse_header(bytes: &[u8]) -> Result<Option<Header>, FrameError> {
    let [first, second, ..] = *bytes else { return Ok(None) };
    let len = header_len(second);
    let Some(head) = bytes.get(..len) else { return Ok(None) };
    let payload = match second & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => {
            let mut wide = [0u8; 8];
            wide.copy_from_slice(&head[2..10]);
            u64::from_be_bytes(wide)
        }
        short => u64::from(short),
    };
    if payload >> 63 != 0 {
        return Err(FrameError::LengthOverflow);
    }
    let mask = (second & 0x80 != 0).then(|| [head[len - 4], head[len - 3], head[len - 2], head[len - 1]]);
    Ok(Some(Header { fin: first & 0x80 != 0, rsv: (first >> 4) & 0x7, opcode: first & 0x0f, mask, len, payload }))
}

/// XOR `data` with `key` from the key's first byte; masking and unmasking
/// are the same operation. Eight bytes at a time, since messages can be
/// large and this runs twice over each single-frame message.
fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key restarts with it.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// A close frame: unmasked from sluice as the server (`mask` None), masked
/// as the client. The reason is cut to fit a control frame, on a character
/// boundary so it stays UTF-8.
fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD as usize - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    // Fits the 7-bit length: at most 125 bytes.
    let len = payload.len() as u8;
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x80 | OP_CLOSE);
    match mask {
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            apply_mask(&mut payload, key);
        }
        None => frame.push(len),
    }
    frame.extend_from_slice(&payload);
    frame
}

/// A masking key for the one frame sluice sends the origin as the client.
/// RFC 6455 asks for unpredictable keys to stop script-driven cache
/// poisoning; a single close frame with fixed content is no such vector,
/// so the standard library's randomly seeded hasher is plenty.
fn masking_key() -> [u8; 4] {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    let [a, b, c, d, ..] = bits.to_le_bytes();
    [a, b, c, d]
}

/// Data message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// The data message being held back.
struct Held {
    kind: Kind,
    /// Payload bytes so far, over all its frames.
    payload: usize,
}

/// Where one held frame's payload lies in the buffer, and its key.
struct Span {
    payload: Range<usize>,
    mask: [u8; 4],
}

/// How the client-to-origin pump stopped.
enum UpEnd {
    /// The client closed at a message boundary; the origin was told.
    Closed,
    Refused {
        code: u16,
        reason: &'static str,
    },
    Protocol(FrameError),
    Io(io::Error),
}

impl From<io::Error> for UpEnd {
    fn from(e: io::Error) -> UpEnd {
        UpEnd::Io(e)
    }
}

impl From<FrameError> for UpEnd {
    fn from(e: FrameError) -> UpEnd {
        UpEnd::Protocol(e)
    }
}

fn refused(code: u16, reason: &'static str) -> UpEnd {
    UpEnd::Refused { code, reason }
}

/// Client to origin: frames parsed, each data message held until it is
/// complete and inspected.
struct Upstream<F> {
    inspect: F,
    max_message: usize,
    /// The held message's frames as received (`..held`), then bytes not yet
    /// parsed. Frames are kept in place, still masked, so that forwarding
    /// them is one write of the original bytes.
    buf: Vec<u8>,
    held: usize,
    message: Option<Held>,
    spans: Vec<Span>,
    /// A fragmented message's payload, unmasked and joined for inspection.
    joined: Vec<u8>,
    messages: u64,
}

impl<F> Upstream<F>
where
    F: FnMut(WsMessage<'_>) -> Verdict,
{
    fn new(max_message: usize, inspect: F) -> Upstream<F> {
        Upstream {
            inspect,
            max_message,
            buf: Vec::with_capacity(READ_CHUNK),
            held: 0,
            message: None,
            spans: Vec::new(),
            joined: Vec::new(),
            messages: 0,
        }
    }

    async fn pump<R, W>(&mut self, rd: &mut R, wr: &mut W) -> UpEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match self.pump_inner(rd, wr).await {
            Ok(()) => UpEnd::Closed,
            Err(end) => end,
        }
    }

    /// `Ok` when the client closed cleanly; every other end is an `Err`.
    async fn pump_inner<R, W>(&mut self, rd: &mut R, wr: &mut W) -> Result<(), UpEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.next_frame(wr).await? {}
            if self.buf.capacity() - self.buf.len() < MIN_SPARE {
                self.buf.reserve(READ_CHUNK);
            }
            if rd.read_buf(&mut self.buf).await? == 0 {
                if !self.buf.is_empty() || self.message.is_some() {
                    // Whatever was held is dropped unsent.
                    return Err(FrameError::Truncated.into());
                }
                wr.shutdown().await?;
                return Ok(());
            }
        }
    }

    /// Deal with the frame after the held ones if it is all in the buffer:
    /// `true` if there was one.
    async fn next_frame<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<bool, UpEnd> {
        let at = self.held;
        let Some(header) = parse_header(&self.buf[at..])? else {
            return Ok(false);
        };
        // Judged on the header alone, before its payload is waited for, so
        // an oversized frame is refused before it is buffered.
        let (payload, opens) = self.admit(&header)?;
        let Some(mask) = header.mask else {
            return Err(FrameError::Unmasked.into());
        };
        let end = at + header.len + payload;
        if self.buf.len() < end {
            return Ok(false);
        }
        if header.opcode & 0x8 != 0 {
            // Control frames carry no prompt and may not wait for the
            // message they interrupt: on they go, ahead of it.
            send(wr, &self.buf[at..end]).await?;
            self.buf.drain(at..end);
            return Ok(true);
        }
        if let Some(kind) = opens {
            self.message = Some(Held { kind, payload: 0 });
        }
        if let Some(held) = self.message.as_mut() {
            held.payload += payload;
        }
        self.spans.push(Span { payload: at + header.len..end, mask });
        self.held = end;
        if header.fin {
            self.finish_message(wr).await?;
        }
        Ok(true)
    }

    /// Check a frame header against the protocol and the limits: its
    /// payload length, and the kind of message it opens if it is a first
    /// frame. Changes nothing, since a header is checked again each time
    /// more of its frame arrives.
    fn admit(&self, header: &Header) -> Result<(usize, Option<Kind>), UpEnd> {
        if header.rsv != 0 {
            return Err(refused(POLICY_VIOLATION, REASON_COMPRESSED));
        }
        if header.mask.is_none() {
            return Err(FrameError::Unmasked.into());
        }
        let opens = match header.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !header.fin {
                    return Err(FrameError::FragmentedControl.into());
                }
                if header.payload > MAX_CONTROL_PAYLOAD {
                    return Err(FrameError::ControlTooLong.into());
                }
                // At most 125.
                return Ok((header.payload as usize, None));
            }
            OP_CONTINUATION => None,
            OP_TEXT => Some(Kind::Text),
            OP_BINARY => Some(Kind::Binary),
            other => return Err(FrameError::ReservedOpcode(other).into()),
        };
        let so_far = match (&self.message, opens) {
            (None, None) => return Err(FrameError::StrayContinuation.into()),
            (Some(_), Some(_)) => return Err(FrameError::UnfinishedMessage.into()),
            (Some(held), None) => held.payload,
            (None, Some(_)) => 0,
        };
        let payload = usize::try_from(header.payload).map_err(|_| refused(TOO_BIG, REASON_TOO_BIG))?;
        // `so_far` never passes the limit: each frame was checked here.
        if payload > self.max_message - so_far {
            return Err(refused(TOO_BIG, REASON_TOO_BIG));
        }
        if self.spans.len() >= MAX_FRAGMENTS {
            return Err(refused(TOO_BIG, REASON_FRAGMENTS));
        }
        Ok((payload, opens))
    }

    /// Inspect the complete held message; forward its frames as received
    /// if it passes.
    async fn finish_message<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), UpEnd> {
        let Some(held) = self.message.take() else { return Ok(()) };
        let verdict = if let [span] = self.spans.as_slice() {
            // The common case needs no copy: unmask in place, look, and
            // mask again to restore the bytes as sent.
            let payload = &mut self.buf[span.payload.clone()];
            apply_mask(payload, span.mask);
            let verdict = judge(held.kind, payload, &mut self.inspect);
            apply_mask(payload, span.mask);
            verdict
        } else {
            self.joined.clear();
            self.joined.reserve(held.payload);
            for span in &self.spans {
                let start = self.joined.len();
                self.joined.extend_from_slice(&self.buf[span.payload.clone()]);
                apply_mask(&mut self.joined[start..], span.mask);
            }
            let verdict = judge(held.kind, &self.joined, &mut self.inspect);
            if self.joined.capacity() > SHRINK_ABOVE {
                self.joined = Vec::new();
            }
            verdict
        };
        verdict?;
        self.messages += 1;
        send(wr, &self.buf[..self.held]).await?;
        self.buf.drain(..self.held);
        self.held = 0;
        self.spans.clear();
        if self.buf.capacity() > SHRINK_ABOVE && self.buf.len() < READ_CHUNK {
            self.buf.shrink_to(READ_CHUNK);
        }
        Ok(())
    }
}

/// Run one message past the caller.
fn judge<F>(kind: Kind, payload: &[u8], inspect: &mut F) -> Result<(), UpEnd>
where
    F: FnMut(WsMessage<'_>) -> Verdict,
{
    let message = match kind {
        Kind::Text => {
            WsMessage::Text(std::str::from_utf8(payload).map_err(|_| refused(INVALID_DATA, REASON_NOT_UTF8))?)
        }
        Kind::Binary => WsMessage::Binary(payload),
    };
    match inspect(message) {
        Verdict::Forward => Ok(()),
        Verdict::Refuse { close_reason } => Err(refused(POLICY_VIOLATION, close_reason)),
    }
}

async fn send<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> io::Result<()> {
    wr.write_all(bytes).await?;
    // Through TLS a write may sit in the session buffer until flushed, and
    // a held-back message has waited long enough.
    wr.flush().await
}

/// Origin to client: bytes copied unchanged, with their frame boundaries
/// followed so sluice can close the connection between two frames.
struct Downstream {
    buf: Box<[u8]>,
    /// Read from the origin, not yet written to the client.
    pending: Range<usize>,
    frames: FrameTracker,
}

impl Downstream {
    fn new() -> Downstream {
        Downstream { buf: vec![0u8; READ_CHUNK].into_boxed_slice(), pending: 0..0, frames: FrameTracker::default() }
    }

    /// Copy until the origin closes (its FIN is passed on). Safe to cancel
    /// at any await: the state says exactly what reached the client.
    async fn pump<R, W>(&mut self, rd: &mut R, wr: &mut W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.pending.is_empty() {
                wr.flush().await?;
                let n = rd.read(&mut self.buf).await?;
                if n == 0 {
                    return wr.shutdown().await;
                }
                self.pending = 0..n;
            }
            self.write_some(wr, usize::MAX).await?;
        }
    }

    /// After a cancelled `pump`: copy the rest of the frame the client is in
    /// the middle of, and nothing more; whether the client now stands at a
    /// frame boundary.
    async fn finish_frame<R, W>(&mut self, rd: &mut R, wr: &mut W) -> io::Result<bool>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        while !self.frames.at_boundary() {
            if self.frames.lost {
                return Ok(false);
            }
            if self.pending.is_empty() {
                let n = rd.read(&mut self.buf).await?;
                if n == 0 {
                    return Ok(false);
                }
                self.pending = 0..n;
            }
            self.write_some(wr, self.frames.to_boundary()).await?;
        }
        Ok(true)
    }

    async fn write_some<W: AsyncWrite + Unpin>(&mut self, wr: &mut W, limit: usize) -> io::Result<()> {
        let end = self.pending.end.min(self.pending.start.saturating_add(limit));
        let n = wr.write(&self.buf[self.pending.start..end]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.frames.advance(&self.buf[self.pending.start..self.pending.start + n]);
        self.pending.start += n;
        Ok(())
    }
}

/// Follows frame boundaries in a byte stream without looking at payloads.
#[derive(Default)]
struct FrameTracker {
    head: [u8; MAX_HEADER],
    head_len: usize,
    /// Payload bytes left in the current frame.
    remaining: u64,
    /// The stream stopped being WebSocket frames as far as can be told;
    /// boundaries are unknown from here on.
    lost: bool,
}

impl FrameTracker {
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(bytes.len());
                self.remaining -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            let take = (self.head_needed() - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
            self.head_len += take;
            bytes = &bytes[take..];
            match parse_header(&self.head[..self.head_len]) {
                Ok(Some(header)) => {
                    self.remaining = header.payload;
                    self.head_len = 0;
                }
                Ok(None) => {}
                Err(_) => self.lost = true,
            }
        }
    }

    /// Header bytes needed before it can be parsed, as far as known yet.
    fn head_needed(&self) -> usize {
        if self.head_len < 2 {
            2
        } else {
            header_len(self.head[1])
        }
    }

    fn at_boundary(&self) -> bool {
        !self.lost && self.head_len == 0 && self.remaining == 0
    }

    /// Bytes that can be written without passing the next boundary.
    fn to_boundary(&self) -> usize {
        if self.remaining > 0 {
            usize::try_from(self.remaining).unwrap_or(usize::MAX)
        } else {
            self.head_needed() - self.head_len
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const REFUSAL: &str = "prompt refused by policy";

    /// A frame as a client sends it: `first` is the FIN/RSV/opcode byte.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        frame(first, payload, Some(KEY))
    }

    fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![first];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if let Some(key) = mask {
            out.extend_from_slice(&key);
            apply_mask(&mut body, key);
        }
        out.extend_from_slice(&body);
        out
    }

    /// Split a byte stream into frames: (first byte, unmasked payload).
    fn frames_of(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let header = parse_header(bytes).unwrap().expect("whole header");
            let end = header.len + header.payload as usize;
            let mut payload = bytes[header.len..end].to_vec();
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key);
            }
            out.push((bytes[0], payload));
            bytes = &bytes[end..];
        }
        out
    }

    fn close_of(code: u16, reason: &str) -> (u8, Vec<u8>) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        (0x88, payload)
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Seen {
        Text(String),
        Binary(Vec<u8>),
    }

    struct Harness {
        client: DuplexStream,
        origin: DuplexStream,
        seen: Arc<Mutex<Vec<Seen>>>,
        relay: JoinHandle<WsRelayed>,
    }

    /// A relay between two duplex pairs whose inspection refuses anything
    /// mentioning "secret".
    fn start(max_message: usize) -> Harness {
        start_with_grace(max_message, CLOSE_GRACE)
    }

    fn start_with_grace(max_message: usize, grace: Duration) -> Harness {
        let (client, mut at_client) = tokio::io::duplex(1 << 20);
        let (mut at_origin, origin) = tokio::io::duplex(1 << 20);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let relay = tokio::spawn(async move {
            let inspect = move |message: WsMessage<'_>| {
                let (secret, seen) = match message {
                    WsMessage::Text(text) => (text.contains("secret"), Seen::Text(text.to_string())),
                    WsMessage::Binary(bytes) => (false, Seen::Binary(bytes.to_vec())),
                };
                log.lock().unwrap().push(seen);
                if secret {
                    Verdict::Refuse { close_reason: REFUSAL }
                } else {
                    Verdict::Forward
                }
            };
            relay_with_grace(&mut at_client, &mut at_origin, Duration::from_secs(30), max_message, inspect, grace).await
        });
        Harness { client, origin, seen, relay }
    }

    impl Harness {
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        async fn origin_gets(&mut self, expected: &[u8]) {
            let mut got = vec![0u8; expected.len()];
            tokio::time::timeout(Duration::from_secs(5), self.origin.read_exact(&mut got)).await.unwrap().unwrap();
            assert_eq!(got, expected);
        }

        async fn origin_has_nothing(&mut self) {
            let mut byte = [0u8; 1];
            assert!(
                tokio::time::timeout(Duration::from_millis(50), self.origin.read(&mut byte)).await.is_err(),
                "origin received a byte early"
            );
        }

        /// Everything each side receives until the relay drops them, and
        /// how the relay ended.
        async fn finish(mut self) -> (Vec<u8>, Vec<u8>, WsRelayed) {
            let mut to_client = Vec::new();
            let mut to_origin = Vec::new();
            let limit = Duration::from_secs(10);
            tokio::time::timeout(limit, self.client.read_to_end(&mut to_client)).await.unwrap().unwrap();
            tokio::time::timeout(limit, self.origin.read_to_end(&mut to_origin)).await.unwrap().unwrap();
            let relayed = tokio::time::timeout(limit, self.relay).await.unwrap().unwrap();
            (to_client, to_origin, relayed)
        }
    }

    #[tokio::test]
    async fn masked_text_is_forwarded_byte_for_byte_and_answers_copied() {
        let mut h = start(1 << 16);
        let sent = client_frame(0x81, b"hello");
        h.client.write_all(&sent).await.unwrap();
        h.origin_gets(&sent).await;
        assert_eq!(h.seen(), vec![Seen::Text("hello".into())]);
        // Answers pass unchanged, whatever they hold.
        let answer = frame(0x81, b"hi, the secret is 42", None);
        h.origin.write_all(&answer).await.unwrap();
        let mut got = vec![0u8; answer.len()];
        h.client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, answer);
        // A client FIN is passed on; the origin can still answer after it.
        h.client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        h.origin.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let bye = frame(0x88, &1000u16.to_be_bytes(), None);
        h.origin.write_all(&bye).await.unwrap();
        h.origin.shutdown().await.unwrap();
        let (to_client, _, relayed) = h.finish().await;
        assert_eq!(to_client, bye);
        assert!(relayed.error.is_none() && relayed.refused.is_none(), "{relayed:?}");
        assert_eq!(relayed.messages_up, 1);
        assert_eq!((relayed.up, relayed.down), (sent.len() as u64, (answer.len() + bye.len()) as u64));
    }

    #[tokio::test]
    async fn fragmented_message_is_inspected_once_whole_before_any_of_it_leaves() {
        let mut h = start(1 << 16);
        let first = client_frame(0x01, b"hello ");
        let middle = client_frame(0x00, b"big ");
        let last = client_frame(0x80, b"world");
        h.client.write_all(&first).await.unwrap();
        h.client.write_all(&middle).await.unwrap();
        h.origin_has_nothing().await;
        assert!(h.seen().is_empty());
        h.client.write_all(&last).await.unwrap();
        h.origin_gets(&[first, middle, last].concat()).await;
        assert_eq!(h.seen(), vec![Seen::Text("hello big world".into())]);
    }

    #[tokio::test]
    async fn ping_inside_a_fragmented_message_goes_on_at_once() {
        let mut h = start(1 << 16);
        let first = client_frame(0x01, b"hello ");
        let ping = client_frame(0x89, b"are you there");
        let last = client_frame(0x80, b"world");
        h.client.write_all(&first).await.unwrap();
        h.client.write_all(&ping).await.unwrap();
        h.origin_gets(&ping).await;
        h.origin_has_nothing().await;
        h.client.write_all(&last).await.unwrap();
        h.origin_gets(&[first, last].concat()).await;
        assert_eq!(h.seen(), vec![Seen::Text("hello world".into())]);
    }

    #[tokio::test]
    async fn refused_message_never_reaches_the_origin_and_the_client_is_told() {
        let mut h = start(1 << 16);
        let fine = client_frame(0x81, b"hi");
        h.client.write_all(&fine).await.unwrap();
        h.origin_gets(&fine).await;
        // Fragmented, so the first half would already be out if frames
        // were forwarded as they came.
        h.client.write_all(&client_frame(0x01, b"my api key, the ")).await.unwrap();
        h.client.write_all(&client_frame(0x80, b"secret one")).await.unwrap();
        let (to_client, to_origin, relayed) = h.finish().await;
        assert_eq!(frames_of(&to_client), vec![close_of(1008, REFUSAL)]);
        // The origin gets one masked close and nothing of the message.
        assert_eq!(to_origin[1] & 0x80, 0x80, "client-side frames are masked");
        assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")]);
        assert_eq!(relayed.refused, Some(REFUSAL));
        assert_eq!(relayed.messages_up, 1);
        assert!(relayed.error.is_none(), "{relayed:?}");
    }

    #[tokio::test]
    async fn compressed_frames_are_refused() {
        let mut h = start(1 << 16);
        h.client.write_all(&client_frame(0xc1, b"deflated?")).await.unwrap();
        let seen = h.seen.clone();
        let (to_client, to_origin, relayed) = h.finish().await;
        assert_eq!(frames_of(&to_client), vec![close_of(1008, REASON_COMPRESSED)]);
        assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")]);
        assert_eq!(relayed.refused, Some(REASON_COMPRESSED));
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(relayed.messages_up, 0);
    }

    #[tokio::test]
    async fn oversized_messages_are_refused_whole_or_in_fragments() {
        // One frame over the limit: refused from its header alone.
        let mut h = start(16);
        h.client.write_all(&client_frame(0x81, &[b'a'; 17])).await.unwrap();
        let (to_client, to_origin, relayed) = h.finish().await;
        assert_eq!(frames_of(&to_client), vec![close_of(1009, REASON_TOO_BIG)]);
        assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")]);
        assert_eq!(relayed.refused, Some(REASON_TOO_BIG));

        // Fragments each under the limit, together over it.
        let mut h = start(16);
        let exact = client_frame(0x82, &[7u8; 16]);
        h.client.write_all(&exact).await.unwrap();
        h.origin_gets(&exact).await;
        h.client.write_all(&client_frame(0x01, &[b'a'; 10])).await.unwrap();
        h.client.write_all(&client_frame(0x80, &[b'a'; 10])).await.unwrap();
        let (to_client, to_origin, relayed) = h.finish().await;
        assert_eq!(frames_of(&to_client), vec![close_of(1009, REASON_TOO_BIG)]);
        assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")]);
        assert_eq!(relayed.messages_up, 1);
    }

    #[tokio::test]
    async fn invalid_utf8_text_is_refused() {
        let mut h = start(1 << 16);
        h.client.write_all(&client_frame(0x81, &[b'o', b'k', 0xff])).await.unwrap();
        let seen = h.seen.clone();
        let (to_client, _, relayed) = h.finish().await;
        assert_eq!(frames_of(&to_client), vec![close_of(1007, REASON_NOT_UTF8)]);
        assert_eq!(relayed.refused, Some(REASON_NOT_UTF8));
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(relayed.messages_up, 0);
    }

    #[tokio::test]
    async fn malformed_frames_get_a_protocol_close() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (frame(0x81, b"unmasked", None), FrameError::Unmasked),
            (client_frame(0x83, b"x"), FrameError::ReservedOpcode(3)),
            (client_frame(0x8b, b""), FrameError::ReservedOpcode(0xb)),
            (client_frame(0x80, b"nothing to continue"), FrameError::StrayContinuation),
            (client_frame(0x09, b"ping"), FrameError::FragmentedControl),
            (client_frame(0x89, &[0u8; 126]), FrameError::ControlTooLong),
            ([client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(), FrameError::UnfinishedMessage),
            (vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], FrameError::LengthOverflow),
        ];
        for (bytes, expected) in cases {
            let mut h = start(1 << 16);
            h.client.write_all(&bytes).await.unwrap();
            let (to_client, to_origin, relayed) = h.finish().await;
            let closes = frames_of(&to_client);
            assert_eq!(closes.len(), 1, "{expected:?}");
            assert_eq!(closes[0].1[..2], 1002u16.to_be_bytes(), "{expected:?}");
            assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")], "{expected:?}");
            assert!(matches!(relayed.error, Some(WsError::Protocol(e)) if e == expected), "{expected:?}: {relayed:?}");
        }
    }

    #[tokio::test]
    async fn truncated_frames_are_dropped_with_a_protocol_close() {
        let whole = client_frame(0x81, b"cut short");
        for cut in [1, 2, 5, 6, whole.len() - 1] {
            let mut h = start(1 << 16);
            h.client.write_all(&whole[..cut]).await.unwrap();
            h.client.shutdown().await.unwrap();
            let (to_client, to_origin, relayed) = h.finish().await;
            assert_eq!(frames_of(&to_client)[0].1[..2], 1002u16.to_be_bytes(), "cut at {cut}");
            assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")], "cut at {cut}");
            assert!(matches!(relayed.error, Some(WsError::Protocol(FrameError::Truncated))), "{relayed:?}");
        }
        // A message whose last fragment never came.
        let mut h = start(1 << 16);
        h.client.write_all(&client_frame(0x01, b"half")).await.unwrap();
        h.client.shutdown().await.unwrap();
        let (_, to_origin, relayed) = h.finish().await;
        assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")]);
        assert!(matches!(relayed.error, Some(WsError::Protocol(FrameError::Truncated))), "{relayed:?}");
    }

    #[tokio::test]
    async fn garbage_never_panics_and_always_ends() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let len = 1 + (round * 7) % 300;
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let mut h = start(64);
            h.client.write_all(&garbage).await.unwrap();
            h.client.shutdown().await.unwrap();
            h.origin.shutdown().await.unwrap();
            let (_, to_origin, relayed) = h.finish().await;
            // Whatever reached the origin is whole frames.
            let _ = frames_of(&to_origin);
            assert!(relayed.up <= garbage.len() as u64);
        }
    }

    #[tokio::test]
    async fn binary_messages_are_inspected_as_binary() {
        let mut h = start(1 << 16);
        let sent = client_frame(0x82, &[0, 159, 146, 150, 255]);
        h.client.write_all(&sent).await.unwrap();
        h.origin_gets(&sent).await;
        assert_eq!(h.seen(), vec![Seen::Binary(vec![0, 159, 146, 150, 255])]);
    }

    #[tokio::test]
    async fn long_lengths_are_read_whole() {
        let mut h = start(1 << 20);
        let medium: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
        let large: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let sent_medium = client_frame(0x81, &medium);
        let sent_large = client_frame(0x81, &large);
        assert_eq!(sent_medium[1] & 0x7f, 126);
        assert_eq!(sent_large[1] & 0x7f, 127);
        // In small writes, so frames arrive across many reads.
        for chunk in [sent_medium.as_slice(), sent_large.as_slice()].concat().chunks(1000) {
            h.client.write_all(chunk).await.unwrap();
        }
        h.origin_gets(&[sent_medium, sent_large].concat()).await;
        let text = |bytes: &[u8]| Seen::Text(String::from_utf8(bytes.to_vec()).unwrap());
        assert_eq!(h.seen(), vec![text(&medium), text(&large)]);
    }

    #[tokio::test]
    async fn close_waits_for_the_origin_frame_in_flight() {
        let mut h = start(1 << 16);
        // Half an answer reaches the client...
        let answer = frame(0x81, b"abcdefghij", None);
        h.origin.write_all(&answer[..6]).await.unwrap();
        let mut got = vec![0u8; 6];
        h.client.read_exact(&mut got).await.unwrap();
        // ...when a refusal ends the relay.
        h.client.write_all(&client_frame(0x81, b"a secret")).await.unwrap();
        let mut to_origin = vec![0u8; close_frame(GOING_AWAY, "", Some(KEY)).len()];
        h.origin.read_exact(&mut to_origin).await.unwrap();
        assert_eq!(frames_of(&to_origin), vec![close_of(1001, "")]);
        // The rest of the answer, and one more that must not follow it.
        h.origin.write_all(&[&answer[6..], &frame(0x81, b"late", None)].concat()).await.unwrap();
        let (to_client, _, relayed) = h.finish().await;
        assert_eq!(
            frames_of(&[&answer[..6], &to_client[..]].concat()),
            vec![(0x81, b"abcdefghij".to_vec()), close_of(1008, REFUSAL)]
        );
        assert_eq!(relayed.refused, Some(REFUSAL));
    }

    #[tokio::test]
    async fn close_is_skipped_when_the_origin_frame_never_ends() {
        let mut h = start_with_grace(1 << 16, Duration::from_millis(200));
        let answer = frame(0x81, b"abcdefghij", None);
        h.origin.write_all(&answer[..6]).await.unwrap();
        let mut got = vec![0u8; 6];
        h.client.read_exact(&mut got).await.unwrap();
        h.client.write_all(&client_frame(0x81, b"a secret")).await.unwrap();
        // No close frame mid-answer: the connection just ends.
        let mut to_client = Vec::new();
        h.client.read_to_end(&mut to_client).await.unwrap();
        assert!(to_client.is_empty());
        assert_eq!(h.relay.await.unwrap().refused, Some(REFUSAL));
    }

    #[tokio::test]
    async fn idle_relay_is_closed() {
        let (_client, mut at_client) = tokio::io::duplex(64);
        let (mut at_origin, _origin) = tokio::io::duplex(64);
        let relayed =
            relay_inspected(&mut at_client, &mut at_origin, Duration::from_millis(100), 1024, |_| Verdict::Forward)
                .await;
        assert!(matches!(relayed.error, Some(WsError::Idle(_))), "{relayed:?}");
    }

    #[test]
    fn tracker_follows_frames_split_anywhere() {
        let stream = [frame(0x81, b"one", None), frame(0x82, &[9u8; 300], None), frame(0x89, b"", Some(KEY))].concat();
        for split in 0..stream.len() {
            let mut tracker = FrameTracker::default();
            tracker.advance(&stream[..split]);
            tracker.advance(&stream[split..]);
            assert!(tracker.at_boundary(), "split at {split}");
        }
        let mut tracker = FrameTracker::default();
        // Header and one byte of "one": two payload bytes to go.
        tracker.advance(&stream[..3]);
        assert!(!tracker.at_boundary());
        assert_eq!(tracker.to_boundary(), 2);
        // One byte into the second header: its length is not known yet.
        tracker.advance(&stream[3..6]);
        assert_eq!(tracker.to_boundary(), 1);
        // Two bytes in: a 16-bit length follows.
        tracker.advance(&stream[6..7]);
        assert_eq!(tracker.to_boundary(), 2);
    }

    #[test]
    fn mask_round_trips_at_every_length() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, KEY);
            let expected: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]).collect();
            assert_eq!(data, expected);
            apply_mask(&mut data, KEY);
            assert_eq!(data, original);
        }
    }
}
