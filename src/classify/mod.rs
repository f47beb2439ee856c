//! Task classifier: labels a prompt with the kind of work it asks for
//! (code completion, summarization, math, ...) and a confidence, so policy
//! can route by task.
//!
//! The model is a multinomial logistic regression over hashed features
//! (see [`features`]), trained by `examples/train_tasks.rs` on the labelled
//! prompts built by `scripts/prepare-task-data`. The weights are embedded in
//! the binary (`weights.bin`), so classification is deterministic, makes no
//! network calls and allocates nothing. Work is bounded: only the first 2 KiB
//! and last 1 KiB of a prompt are read.

mod features;

use serde::Serialize;

/// The kinds of task a prompt can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    CodeCompletion,
    CodeGeneration,
    CodeReviewDebug,
    Summarization,
    Translation,
    Extraction,
    Classification,
    ClosedQa,
    OpenQaChat,
    Brainstorming,
    CreativeWriting,
    MathReasoning,
    ResearchAnalysis,
}

const CLASSES: usize = 13;

impl Task {
    /// Every task, in the order the weights file stores them.
    pub const ALL: [Task; CLASSES] = [
        Task::CodeCompletion,
        Task::CodeGeneration,
        Task::CodeReviewDebug,
        Task::Summarization,
        Task::Translation,
        Task::Extraction,
        Task::Classification,
        Task::ClosedQa,
        Task::OpenQaChat,
        Task::Brainstorming,
        Task::CreativeWriting,
        Task::MathReasoning,
        Task::ResearchAnalysis,
    ];

    /// The snake_case name used in config, labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::CodeCompletion => "code_completion",
            Task::CodeGeneration => "code_generation",
            Task::CodeReviewDebug => "code_review_debug",
            Task::Summarization => "summarization",
            Task::Translation => "translation",
            Task::Extraction => "extraction",
            Task::Classification => "classification",
            Task::ClosedQa => "closed_qa",
            Task::OpenQaChat => "open_qa_chat",
            Task::Brainstorming => "brainstorming",
            Task::CreativeWriting => "creative_writing",
            Task::MathReasoning => "math_reasoning",
            Task::ResearchAnalysis => "research_analysis",
        }
    }

    /// The task with this snake_case name.
    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The classifier's answer for one prompt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub task: Task,
    /// Softmax probability of `task`, in 0..=1.
    pub confidence: f32,
}

/// A loaded task classifier. Build once at start-up and share.
pub struct Classifier {
    bias: [f32; CLASSES],
    scale: f32,
    /// One row of class weights per hash bucket.
    weights: Box<[[i16; CLASSES]]>,
}

/// Written by `examples/train_tasks.rs`; the layout is described there and in
/// `parse_weights`.
static WEIGHTS: &[u8] = include_bytes!("weights.bin");

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    /// Loads the embedded weights (about 1 MB copied once).
    pub fn new() -> Classifier {
        // The file is embedded at build time and checked by the
        // `embedded_weights_parse` test, so it cannot fail at run time.
        parse_weights(WEIGHTS).expect("embedded task-classifier weights are valid")
    }

    /// The most likely task for `text` and its probability.
    pub fn classify(&self, text: &str) -> Prediction {
        let probs = self.probabilities(text);
        let mut best = 0;
        for c in 1..CLASSES {
            if probs[c] > probs[best] {
                best = c;
            }
        }
        Prediction { task: Task::ALL[best], confidence: probs[best].clamp(0.0, 1.0) }
    }

    fn probabilities(&self, text: &str) -> [f32; CLASSES] {
        let mut acc = Accumulator { weights: &self.weights, text: [0; CLASSES], shape: [0; CLASSES], n_text: 0 };
        features::extract(text, &mut acc);
        let norm = 1.0 / (acc.n_text.max(1) as f32).sqrt();
        let logits: [f32; CLASSES] =
            std::array::from_fn(|c| self.bias[c] + self.scale * (acc.text[c] as f32 * norm + acc.shape[c] as f32));
        let mut logits = logits;
        softmax(&mut logits);
        logits
    }
}

struct Accumulator<'a> {
    weights: &'a [[i16; CLASSES]],
    text: [i32; CLASSES],
    shape: [i32; CLASSES],
    n_text: u32,
}

impl features::Sink for Accumulator<'_> {
    #[inline]
    fn text(&mut self, bucket: usize) {
        for (sum, &w) in self.text.iter_mut().zip(&self.weights[bucket]) {
            *sum += i32::from(w);
        }
        self.n_text += 1;
    }

    #[inline]
    fn shape(&mut self, bucket: usize) {
        for (sum, &w) in self.shape.iter_mut().zip(&self.weights[bucket]) {
            *sum += i32::from(w);
        }
    }
}

fn softmax(v: &mut [f32; CLASSES]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// Why a weights file was rejected.
#[derive(Debug, thiserror::Error)]
enum WeightsError {
    #[error("weights file is truncated")]
    Truncated,
    #[error("bad magic or version")]
    Magic,
    #[error("weights file has {buckets} buckets x {classes} classes, expected {} x {CLASSES}", features::BUCKETS)]
    Shape { buckets: usize, classes: usize },
    #[error("weights file lists classes {0:?}, expected the order of Task::ALL")]
    Classes(String),
}

/// Layout (little-endian): `SLTC`, u32 version = 1, u32 buckets, u32 classes,
/// f32 scale, f32 bias per class, u32 length + comma-separated class names,
/// then i16 weights, bucket-major (all classes of bucket 0, then bucket 1 ...).
fn parse_weights(bytes: &[u8]) -> Result<Classifier, WeightsError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4)? != b"SLTC" || r.u32()? != 1 {
        return Err(WeightsError::Magic);
    }
    let buckets = r.u32()? as usize;
    let classes = r.u32()? as usize;
    if buckets != features::BUCKETS || classes != CLASSES {
        return Err(WeightsError::Shape { buckets, classes });
    }
    let scale = f32::from_bits(r.u32()?);
    let mut bias = [0f32; CLASSES];
    for b in bias.iter_mut() {
        *b = f32::from_bits(r.u32()?);
    }
    let names_len = r.u32()? as usize;
    let names = String::from_utf8_lossy(r.take(names_len)?).into_owned();
    let expected: Vec<&str> = Task::ALL.iter().map(|t| t.as_str()).collect();
    if names != expected.join(",") {
        return Err(WeightsError::Classes(names));
    }
    let raw = r.take(buckets * CLASSES * 2)?;
    let weights: Box<[[i16; CLASSES]]> = raw
        .chunks_exact(CLASSES * 2)
        .map(|row| {
            let mut out = [0i16; CLASSES];
            for (o, pair) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = i16::from_le_bytes([pair[0], pair[1]]);
            }
            out
        })
        .collect();
    Ok(Classifier { bias, scale, weights })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WeightsError> {
        let end = self.pos.checked_add(n).ok_or(WeightsError::Truncated)?;
        let out = self.bytes.get(self.pos..end).ok_or(WeightsError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, WeightsError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_weights_parse() {
        assert!(parse_weights(WEIGHTS).is_ok());
    }

    #[test]
    fn rejects_truncated_or_foreign_weights() {
        assert!(matches!(parse_weights(&WEIGHTS[..100]), Err(WeightsError::Truncated)));
        assert!(matches!(parse_weights(b"NOPE\x01\0\0\0"), Err(WeightsError::Magic)));
    }

    #[test]
    fn names_round_trip() {
        for t in Task::ALL {
            assert_eq!(Task::from_name(t.as_str()), Some(t));
            assert_eq!(serde_json::to_string(&t).ok(), Some(format!("\"{}\"", t.as_str())));
        }
        assert_eq!(Task::from_name("poetry"), None);
    }

    #[test]
    fn deterministic() {
        let a = Classifier::new();
        let b = Classifier::new();
        let text = "Write a haiku about the sea at night.";
        let first = a.classify(text);
        for _ in 0..3 {
            assert_eq!(a.classify(text), first);
            assert_eq!(b.classify(text), first);
        }
    }

    #[test]
    fn obvious_prompts() {
        let c = Classifier::new();
        let cases = [
            (
                "def moving_average(values: list[float], window: int) -> list[float]:\n    \"\"\"Return the moving average of values over the given window.\n    >>> moving_average([1, 2, 3, 4], 2)\n    [1.5, 2.5, 3.5]\n    \"\"\"\n",
                Task::CodeCompletion,
            ),
            (
                "Translate to French: The train to Lyon leaves at nine and we still need to buy tickets.",
                Task::Translation,
            ),
            (
                "Summarize this article: The city council voted on Tuesday to expand the bike lane network by 40 kilometres over the next three years. Supporters said the plan would cut traffic deaths, while shop owners on Main Street worried about losing parking. The project will cost 12 million euros, half of it paid by a regional grant.",
                Task::Summarization,
            ),
            (
                "A baker makes 48 muffins. She sells 3/4 of them in the morning and gives 5 to her neighbours. How many muffins does she have left?",
                Task::MathReasoning,
            ),
        ];
        for (text, want) in cases {
            let got = c.classify(text);
            assert_eq!(got.task, want, "{text:?} -> {got:?}");
        }
    }

    #[test]
    fn confidence_in_range() {
        let c = Classifier::new();
        for text in ["hi", "Classify the sentiment of this review: great phone, bad battery.", "???"] {
            let p = c.classify(text);
            assert!((0.0..=1.0).contains(&p.confidence), "{p:?}");
            assert!(p.confidence >= 1.0 / CLASSES as f32);
        }
    }

    #[test]
    fn empty_and_huge_inputs() {
        let c = Classifier::new();
        let p = c.classify("");
        assert!((0.0..=1.0).contains(&p.confidence));
        // Multi-byte characters straddling the head/tail cut must not panic.
        let huge = "Ünïcödé ✓ 数字 text, with code { x = 1; } ".repeat(200_000);
        let p = c.classify(&huge);
        assert!((0.0..=1.0).contains(&p.confidence));
        let one_word = "a".repeat(10_000_000);
        assert!(c.classify(&one_word).confidence.is_finite());
    }
}
