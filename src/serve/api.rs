//! Request bodies of the OpenAI-compatible API (what lm-eval's `local-completions` and
//! `local-chat-completions` send, and the common OpenAI fields), parsed strictly: an unknown field, a wrong
//! type or an out-of-range value is a 400 that names it. Fields that are accepted only to be ignored are
//! checked in `check_ignored`.

use super::sampling::Sampling;
use serde::Deserialize;

/// A 400: what was wrong with the request.
#[derive(Debug, Clone)]
pub struct BadRequest(pub String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
}

/// Parses a JSON body into `T`, with serde's message (which names the unknown field or the wrong type).
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, BadRequest> {
    if body.is_empty() {
        return Err(bad("the request body is empty: send a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))
}

/// `prompt`: a string, strings, token ids, or lists of token ids (lm-eval sends `[[ids], ...]`).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<i64>),
    IdLists(Vec<Vec<i64>>),
}

/// `stop`: one string or several.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/completions`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub echo: bool,
    /// Number of alternatives per position (0..=20); present means "return logprobs".
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<i64>,
    // Accepted and ignored (see `check_ignored`): lm-eval passes its gen_kwargs through.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub max_gen_toks: Option<i64>,
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub until: Option<Stop>,
}

/// A chat message: `content` as a string or as text parts.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Message {
    /// The text of the message (text parts joined); other part types are a 400.
    pub fn text(&self) -> Result<String, BadRequest> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(s)) => Ok(s.clone()),
            Some(Content::Parts(parts)) => {
                let mut out = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(bad(format!("message content part of type `{}` is not supported (text only)", p.kind)));
                    }
                    out.push_str(p.text.as_deref().unwrap_or(""));
                }
                Ok(out)
            }
        }
    }
}

/// `POST /v1/chat/completions`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub logprobs: bool,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<i64>,
    /// Extra variables for the chat template (Qwen3's `enable_thinking`).
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    // Accepted and ignored (see `check_ignored`): lm-eval passes its gen_kwargs through.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub max_gen_toks: Option<i64>,
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub until: Option<Stop>,
}

/// Fields clients send that do not change what this server computes (`user`, lm-eval's `max_gen_toks`,
/// `do_sample`, `until`) are accepted; penalties must be 0 (not implemented).
fn check_ignored(presence: Option<f64>, frequency: Option<f64>) -> Result<(), BadRequest> {
    for (name, v) in [("presence_penalty", presence), ("frequency_penalty", frequency)] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(bad(format!("{name} is not supported (only 0)")));
        }
    }
    Ok(())
}

/// Checks the sampling fields and turns them into [`Sampling`] (OpenAI's defaults: temperature 1, top_p 1).
pub fn sampling(temperature: Option<f64>, top_p: Option<f64>, top_k: Option<i64>, seed: Option<u64>) -> Result<Sampling, BadRequest> {
    let t = temperature.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&t) {
        return Err(bad(format!("temperature must be in [0, 100], got {t}")));
    }
    let p = top_p.unwrap_or(1.0);
    if !(p > 0.0 && p <= 1.0) {
        return Err(bad(format!("top_p must be in (0, 1], got {p}")));
    }
    let k = top_k.unwrap_or(0);
    if k < -1 {
        return Err(bad(format!("top_k must be -1 or 0 (off) or positive, got {k}")));
    }
    Ok(Sampling { temperature: t as f32, top_p: p as f32, top_k: k.max(0) as usize, seed })
}

fn check_n(n: Option<i64>) -> Result<(), BadRequest> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(bad(format!("n={n} is not supported (one choice per prompt; send the prompt several times)"))),
    }
}

/// `max_tokens` checked: >= 0.
pub fn max_tokens(v: Option<i64>, name: &str) -> Result<Option<usize>, BadRequest> {
    match v {
        Some(m) if m < 0 => Err(bad(format!("{name} must be >= 0, got {m}"))),
        Some(m) => Ok(Some(m as usize)),
        None => Ok(None),
    }
}

impl CompletionRequest {
    pub fn validate(&self) -> Result<(), BadRequest> {
        check_ignored(self.presence_penalty, self.frequency_penalty)?;
        check_n(self.n)?;
        max_tokens(self.max_tokens, "max_tokens")?;
        sampling(self.temperature, self.top_p, self.top_k, self.seed)?;
        if let Some(l) = self.logprobs {
            if !(0..=20).contains(&l) {
                return Err(bad(format!("logprobs must be in [0, 20], got {l}")));
            }
        }
        let empty = match &self.prompt {
            Prompt::Texts(v) => v.is_empty(),
            Prompt::Ids(v) => v.is_empty(),
            Prompt::IdLists(v) => v.is_empty() || v.iter().any(|p| p.is_empty()),
            Prompt::Text(_) => false,
        };
        if empty {
            return Err(bad("prompt is empty: give text or at least one token id per prompt"));
        }
        Ok(())
    }
}

impl ChatRequest {
    pub fn validate(&self) -> Result<(), BadRequest> {
        check_ignored(self.presence_penalty, self.frequency_penalty)?;
        check_n(self.n)?;
        max_tokens(self.max_tokens, "max_tokens")?;
        max_tokens(self.max_completion_tokens, "max_completion_tokens")?;
        sampling(self.temperature, self.top_p, self.top_k, self.seed)?;
        if self.messages.is_empty() {
            return Err(bad("messages is empty"));
        }
        for m in &self.messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(bad(format!("message role `{}` is not one of system, user, assistant, tool", m.role)));
            }
            m.text()?;
        }
        if let Some(k) = self.top_logprobs {
            if !(0..=20).contains(&k) {
                return Err(bad(format!("top_logprobs must be in [0, 20], got {k}")));
            }
        }
        Ok(())
    }
}

/// `POST /tokenize` (vLLM's form, what lm-eval's remote tokenizer sends).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
}

/// `POST /detokenize`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub tokens: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_eval_bodies_parse_and_bad_ones_say_why() {
        let r: CompletionRequest = parse(br#"{"model":"m","prompt":[[1,2,3],[4,5]],"temperature":0,"max_tokens":1,"logprobs":1,"seed":1234,"echo":true}"#).unwrap();
        r.validate().unwrap();
        assert!(matches!(r.prompt, Prompt::IdLists(ref v) if v.len() == 2));
        let r: ChatRequest = parse(br#"{"messages":[{"role":"user","content":"hi"}],"model":"m","max_tokens":64,"temperature":0.6,"stop":["\n"],"seed":1234,"max_gen_toks":64,"top_p":0.95,"top_k":20}"#).unwrap();
        r.validate().unwrap();
        let e = parse::<CompletionRequest>(br#"{"prompt":"x","bogus":1}"#).unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
        let e = parse::<CompletionRequest>(br#"{"prompt":"x","max_tokens":-3}"#).unwrap().validate().unwrap_err();
        assert!(e.0.contains("max_tokens"), "{e}");
        assert!(parse::<CompletionRequest>(b"{not json").is_err());
    }
}
