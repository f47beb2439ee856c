//! The embedded engine: mistral.rs running in-process, on CPU by default
//! (SmolLM2-135M-Instruct, GGUF Q4_1) or CUDA with `--features cuda`; the
//! device comes from [`super::device::resolve`].
//!
//! The model loads once, from a local file and without any network: the
//! GGUF carries its own tokenizer and chat template. Generation always runs
//! as a stream; dropping the receiving side makes mistral.rs cancel the
//! sequence at its next token.

use std::path::Path;
use std::sync::Arc;

use mistralrs::core::{
    AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting, GGUFLoaderBuilder, GGUFSpecificConfig,
    MistralRsBuilder, ModelDType, SchedulerConfig,
};
use mistralrs::{
    CalledFunction, Constraint, Device, Model, RequestBuilder, Response, SamplingParams, StopTokens, TextMessageRole,
    TextModelBuilder, TokenSource, ToolCallResponse, ToolCallType,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{GenEvent, LocalError};
use crate::config::LocalConfig;
use crate::wire::answer::{Delta, Finish, FinishReason, Usage};
use crate::wire::{CanonicalRequest, Role, ToolChoice};

/// Counts tokens with the model's own tokenizer, off the engine thread.
type TokenCounter = Arc<dyn Fn(&str) -> Option<usize> + Send + Sync>;

pub struct Engine {
    model: Arc<Model>,
    context_length: Option<u64>,
    counter: Option<TokenCounter>,
    counted: CountCache,
}

/// Token counts of recent message texts, by a keyed hash of the text.
/// Chat clients resend the whole conversation every turn, and the tokenizer
/// runs at only a few MB/s here, so each long message is counted once, not
/// once per turn. In memory only; a hash is no use for recovering text.
struct CountCache {
    hasher: std::collections::hash_map::RandomState,
    counts: std::sync::Mutex<std::collections::HashMap<u64, usize>>,
}

/// Shorter texts are cheaper to count than to remember.
const CACHE_MIN_BYTES: usize = 512;
/// When full the cache starts over: simpler than LRU, and a conversation
/// still in progress is back in it after one turn.
const CACHE_ENTRIES: usize = 8192;

impl CountCache {
    fn new() -> CountCache {
        CountCache { hasher: Default::default(), counts: Default::default() }
    }

    fn count(&self, text: &str, counter: &TokenCounter) -> Option<usize> {
        if text.len() < CACHE_MIN_BYTES {
            return counter(text);
        }
        let key = std::hash::BuildHasher::hash_one(&self.hasher, text);
        // A poisoned map only loses cached counts.
        let cached = self.counts.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
        if cached.is_some() {
            return cached;
        }
        let n = counter(text)?;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= CACHE_ENTRIES {
            counts.clear();
        }
        counts.insert(key, n);
        Some(n)
    }
}

/// The name answers carry in their `model` field.
pub fn model_name(model: &str) -> String {
    let path = Path::new(model);
    if model.ends_with(".gguf") {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| model.to_string())
    } else {
        model.to_string()
    }
}

/// Fail fast, at start-up, with the command that fixes it.
pub fn check_model_file(model: &str) -> Result<(), String> {
    if model.ends_with(".gguf") && !Path::new(model).is_file() {
        return Err(format!(
            "local model file {model} not found; fetch the default model with `scripts/fetch-model` \
             (or set local.model, or local.backend: external | none, in sluice.yaml)"
        ));
    }
    Ok(())
}

impl Engine {
    pub async fn load(cfg: &LocalConfig, device: Device) -> Result<Engine, String> {
        let seqs = cfg.max_concurrent.max(1);
        let (model, counter) = if cfg.model.ends_with(".gguf") {
            let (model, counter) =
                load_gguf(cfg, device, seqs).await.map_err(|e| format!("cannot load {}: {e:#}", cfg.model))?;
            (model, Some(counter))
        } else {
            let mut builder = TextModelBuilder::new(&cfg.model).with_max_num_seqs(seqs);
            builder = if device.is_cpu() {
                builder.with_force_cpu().with_dtype(ModelDType::F16) // as in load_gguf
            } else {
                builder.with_device(device)
            };
            let model = builder.build().await.map_err(|e| format!("cannot load {}: {e:#}", cfg.model))?;
            (model, None)
        };
        let context_length = model.max_sequence_length().ok().flatten().map(|n| n as u64);
        Ok(Engine { model: Arc::new(model), context_length, counter, counted: CountCache::new() })
    }

    pub fn context_length(&self) -> Option<u64> {
        self.context_length
    }

    /// Prompt tokens as the model will see them, near enough for the context
    /// check: the tokenizer's count of every message plus the chat
    /// template's few tokens per message. Runs on the caller's thread (the
    /// engine's own tokenize call queues behind generation, and must not be
    /// cancelled).
    pub fn count_tokens(&self, req: &CanonicalRequest) -> Option<u64> {
        let counter = self.counter.as_ref()?;
        let mut total = TEMPLATE_TOKENS_PER_PROMPT;
        for (_, text) in flat_messages(req) {
            total += self.counted.count(&text, counter)? as u64 + TEMPLATE_TOKENS_PER_MESSAGE;
        }
        for t in &req.tools {
            total += self.counted.count(&crate::wire::openai::tool_json(t).to_string(), counter)? as u64;
        }
        Some(total)
    }

    /// The most [`Engine::count_tokens`] can return for `req`, without
    /// tokenizing: the same sum with each text's tokens replaced by its
    /// byte length plus one (a byte-level BPE token covers at least one
    /// byte; one more covers a SentencePiece-style leading token).
    pub fn max_token_count(req: &CanonicalRequest) -> u64 {
        let mut total = TEMPLATE_TOKENS_PER_PROMPT;
        for (_, text) in flat_messages(req) {
            total += text.len() as u64 + 1 + TEMPLATE_TOKENS_PER_MESSAGE;
        }
        for t in &req.tools {
            total += crate::wire::openai::tool_json(t).to_string().len() as u64 + 1;
        }
        total
    }

    pub async fn generate(
        &self,
        req: &CanonicalRequest,
        max_tokens: u64,
    ) -> Result<mpsc::Receiver<Result<GenEvent, LocalError>>, LocalError> {
        let request = build_request(req, max_tokens);
        let model = self.model.clone();
        let (tx, rx) = mpsc::channel(64);
        // Errors before the first token are reported through the channel too:
        // the receiver sees them as the first event.
        tokio::spawn(async move {
            let mut stream = match model.stream_chat_request(request).await {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = tx.send(Err(LocalError::Failed(format!("engine unreachable: {e}")))).await;
                    return;
                }
            };
            let mut reason = FinishReason::Stop;
            loop {
                // A closed channel means the client went away; returning
                // drops the stream, and mistral.rs cancels the sequence.
                let response = tokio::select! {
                    response = stream.next() => response,
                    _ = tx.closed() => return,
                };
                let Some(response) = response else { break };
                match response {
                    Response::Chunk(chunk) => {
                        for choice in &chunk.choices {
                            if let Some(text) = choice.delta.content.as_ref().filter(|t| !t.is_empty()) {
                                if tx.send(Ok(GenEvent::Delta(Delta::Text(text.clone())))).await.is_err() {
                                    return; // client gone: dropping the stream cancels the sequence
                                }
                            }
                            for call in choice.delta.tool_calls.iter().flatten() {
                                let delta = Delta::ToolCall {
                                    index: call.index,
                                    id: call.id.clone(),
                                    name: call.function.name.clone(),
                                    arguments: call.function.arguments.clone(),
                                };
                                if tx.send(Ok(GenEvent::Delta(delta))).await.is_err() {
                                    return;
                                }
                            }
                            if let Some(r) = &choice.finish_reason {
                                reason = match r.as_str() {
                                    "length" => FinishReason::Length,
                                    "tool_calls" => FinishReason::ToolCalls,
                                    _ => FinishReason::Stop,
                                };
                            }
                        }
                        if let Some(u) = &chunk.usage {
                            let usage = Usage {
                                prompt_tokens: u.prompt_tokens as u64,
                                completion_tokens: u.completion_tokens as u64,
                            };
                            let _ = tx.send(Ok(GenEvent::Finish(Finish { reason, usage }))).await;
                            return;
                        }
                    }
                    Response::ModelError(message, _) => {
                        let _ = tx.send(Err(LocalError::Backend(first_line(&message)))).await;
                        return;
                    }
                    Response::InternalError(e) | Response::ValidationError(e) => {
                        let _ = tx.send(Err(LocalError::Backend(first_line(&e.to_string())))).await;
                        return;
                    }
                    _ => {}
                }
            }
            let _ = tx.send(Err(LocalError::Failed("engine stopped mid-generation".into()))).await;
        });
        Ok(rx)
    }
}

/// Engine errors can carry whole backtraces; clients get the first line.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    line.chars().take(300).collect()
}

/// ChatML-style templates wrap each message in a few marker tokens
/// (`<|im_start|>role\n ... <|im_end|>\n`) and open the answer with more.
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 5;
const TEMPLATE_TOKENS_PER_PROMPT: u64 = 3;

/// Load a local GGUF one level below `GgufModelBuilder`, which keeps the
/// tokenizer to itself.
async fn load_gguf(cfg: &LocalConfig, device: Device, seqs: usize) -> anyhow::Result<(Model, TokenCounter)> {
    let path = Path::new(&cfg.model);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    // A local directory as model id makes mistral.rs read from disk, and
    // TokenSource::None keeps it off the hub: tokenizer and chat template
    // come from the GGUF itself.
    let loader = GGUFLoaderBuilder::new(
        None,
        cfg.tokenizer_model_id.clone(),
        dir.to_string_lossy().into_owned(),
        vec![file],
        GGUFSpecificConfig { topology: None },
        false,
        None,
    )
    .build();
    // `Auto` settles on F16 on the CPU (the log says "DType selected"), but a
    // CUDA build's `Auto` asks nvidia-smi first, even for the CPU, and
    // panics where there is none: `device: auto` on a machine without a GPU.
    let dtype = if device.is_cpu() { ModelDType::F16 } else { ModelDType::Auto };
    // Loading reads and maps the file synchronously.
    let pipeline = tokio::task::spawn_blocking(move || {
        loader.load_model_from_hf(
            None,
            TokenSource::None,
            &dtype,
            &device,
            true,
            DeviceMapSetting::Auto(AutoDeviceMapParams::default_text()),
            None,
            None,
        )
    })
    .await??;
    let tokenizer =
        pipeline.lock().await.tokenizer().ok_or_else(|| anyhow::anyhow!("the GGUF carries no tokenizer"))?;
    let counter: TokenCounter =
        Arc::new(move |text: &str| tokenizer.encode(text, false).ok().map(|e| e.get_ids().len()));
    let scheduler = SchedulerConfig::DefaultScheduler { method: DefaultSchedulerMethod::Fixed(seqs.try_into()?) };
    let runner = MistralRsBuilder::new(pipeline, scheduler, false, None).build().await;
    Ok((Model::new(runner), counter))
}

/// The conversation as (role, text) pairs; tool traffic becomes text so
/// the token count stays close for models without tool templates.
fn flat_messages(req: &CanonicalRequest) -> Vec<(TextMessageRole, String)> {
    let mut out = Vec::new();
    if !req.system.is_empty() {
        out.push((TextMessageRole::System, req.system.join("\n\n")));
    }
    for turn in req.turns() {
        for (_, content) in &turn.results {
            out.push((TextMessageRole::Tool, content.to_string()));
        }
        let mut text = turn.text;
        for (_, name, arguments) in &turn.calls {
            text.push_str(&format!("{name}({arguments})"));
        }
        if !text.is_empty() {
            out.push((role_of(turn.role), text));
        }
    }
    out
}

fn role_of(role: Role) -> TextMessageRole {
    match role {
        Role::System => TextMessageRole::System,
        Role::User => TextMessageRole::User,
        Role::Assistant => TextMessageRole::Assistant,
        Role::Tool => TextMessageRole::Tool,
    }
}

fn tools(req: &CanonicalRequest) -> Option<Vec<mistralrs::Tool>> {
    if req.tools.is_empty() || req.tool_choice == ToolChoice::None {
        return None;
    }
    let tools: Vec<mistralrs::Tool> =
        req.tools.iter().filter_map(|t| serde_json::from_value(crate::wire::openai::tool_json(t)).ok()).collect();
    Some(tools)
}

/// A client that requires a tool call (a named tool, or any tool) gets one:
/// small models' chat templates often ignore tool definitions, so the tools
/// are described in the system prompt and the output is constrained to the
/// `{"name", "arguments"}` JSON that mistral.rs parses as a tool call.
fn forced_tool_call(req: &CanonicalRequest) -> Option<(String, Value)> {
    let candidates: Vec<&crate::wire::Tool> = match &req.tool_choice {
        ToolChoice::Named(name) => req.tools.iter().filter(|t| &t.name == name).collect(),
        ToolChoice::Required => req.tools.iter().collect(),
        ToolChoice::Auto | ToolChoice::None => return None,
    };
    if candidates.is_empty() {
        return None;
    }
    let mut note = String::from("You can call these tools:\n");
    for t in &candidates {
        note.push_str(&format!("- {}: {} Parameters (JSON schema): {}\n", t.name, t.description, t.parameters));
    }
    note.push_str("Reply only with JSON of the form {\"name\": <tool name>, \"arguments\": {...}}.");
    let schema = if let [only] = candidates.as_slice() {
        let mut arguments =
            if only.parameters.is_object() { only.parameters.clone() } else { json!({"type": "object"}) };
        // Without this a small model keeps inventing keys until max_tokens.
        if arguments.get("additionalProperties").is_none() && arguments.get("properties").is_some() {
            arguments["additionalProperties"] = json!(false);
        }
        json!({
            "type": "object",
            "properties": {"name": {"const": only.name}, "arguments": arguments},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    } else {
        let names: Vec<&str> = candidates.iter().map(|t| t.name.as_str()).collect();
        json!({
            "type": "object",
            "properties": {"name": {"enum": names}, "arguments": {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    Some((note, schema))
}

fn build_request(req: &CanonicalRequest, max_tokens: u64) -> RequestBuilder {
    let mut b = RequestBuilder::new();
    let forced = forced_tool_call(req);
    let mut system = req.system.join("\n\n");
    if let Some((note, _)) = &forced {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(note);
    }
    if !system.is_empty() {
        b = b.add_message(TextMessageRole::System, system);
    }
    if let Some((_, schema)) = forced {
        b = b.set_constraint(Constraint::JsonSchema(schema));
    }
    for turn in req.turns() {
        for (call_id, content) in &turn.results {
            b = b.add_tool_message(content, call_id);
        }
        if turn.role == Role::Tool {
            continue;
        }
        if turn.calls.is_empty() {
            if !turn.text.is_empty() {
                b = b.add_message(role_of(turn.role), turn.text);
            }
            continue;
        }
        let calls = turn
            .calls
            .iter()
            .enumerate()
            .map(|(index, (id, name, arguments))| ToolCallResponse {
                index,
                id: id.to_string(),
                tp: ToolCallType::Function,
                function: CalledFunction { name: name.to_string(), arguments: arguments.to_string() },
            })
            .collect();
        b = b.add_message_with_tool_call(role_of(turn.role), turn.text, calls);
    }
    if let Some(tools) = tools(req) {
        // A required call is enforced by the output constraint above; the
        // engine's own "required" check fails on streamed output, so the
        // engine is always told `auto` and parses what the constraint made.
        b = b.set_tools(tools).set_tool_choice(mistralrs::ToolChoice::Auto);
    }
    // The builder starts greedy (top-k 1), where a temperature changes
    // nothing; a client that asks for sampling gets neutral settings first.
    if req.sampling.temperature.is_some_and(|t| t > 0.0) || req.sampling.top_p.is_some() {
        b = b.set_sampling(SamplingParams::neutral());
    }
    b = b.set_sampler_max_len(max_tokens as usize);
    if let Some(t) = req.sampling.temperature.filter(|&t| t > 0.0) {
        b = b.set_sampler_temperature(t);
    }
    if let Some(p) = req.sampling.top_p {
        b = b.set_sampler_topp(p);
    }
    if !req.sampling.stop.is_empty() {
        b = b.set_sampler_stop_toks(StopTokens::Seqs(req.sampling.stop.clone()));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A counter that counts words and how often it was asked.
    fn counting() -> (TokenCounter, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let counter: TokenCounter = Arc::new(move |text: &str| {
            seen.fetch_add(1, Ordering::SeqCst);
            Some(text.split_whitespace().count())
        });
        (counter, calls)
    }

    #[test]
    fn long_texts_are_counted_once_short_ones_every_time() {
        let (counter, calls) = counting();
        let cache = CountCache::new();
        let long = "word ".repeat(200);
        assert_eq!(cache.count(&long, &counter), Some(200));
        assert_eq!(cache.count(&long, &counter), Some(200));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let other = "other ".repeat(100);
        assert_eq!(cache.count(&other, &counter), Some(100));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.count("two words", &counter), Some(2));
        assert_eq!(cache.count("two words", &counter), Some(2));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let (counter, _) = counting();
        let cache = CountCache::new();
        for i in 0..CACHE_ENTRIES + 10 {
            let text = format!("{i} {}", "x".repeat(CACHE_MIN_BYTES));
            assert_eq!(cache.count(&text, &counter), Some(2));
        }
        assert!(cache.counts.lock().unwrap().len() <= CACHE_ENTRIES);
    }

    #[test]
    fn the_bound_is_never_below_a_one_token_per_byte_count() {
        let req = crate::wire::openai::parse_chat(
            br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there, how are you?"}]}"#,
        )
        .unwrap();
        let bytes: u64 = flat_messages(&req).iter().map(|(_, t)| t.len() as u64).sum();
        assert!(Engine::max_token_count(&req) >= bytes + TEMPLATE_TOKENS_PER_PROMPT);
    }
}
