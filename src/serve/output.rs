//! Turning a sequence's engine events into OpenAI response pieces: generated text (streamed through
//! `TextStream`, cut at `stop` strings, holding back text that may be the start of one), and the
//! `logprobs` object of completions (tokens, token_logprobs, top_logprobs, text_offset).

use super::engine::{Finish, SeqEvent, TokenLogprob};
use crate::data::{TextStream, Tokenizer};
use serde_json::{json, Map, Value};

/// One sequence's output as it arrives.
pub struct SeqOutput {
    pub prompt: Vec<i64>,
    pub prompt_logprobs: Vec<TokenLogprob>,
    pub generated: Vec<TokenLogprob>,
    /// Generated text so far (cut at a stop string once one matched).
    pub text: String,
    /// How much of `text` has been handed out as deltas.
    sent: usize,
    stream: TextStream,
    stops: Vec<String>,
    pub finish: Option<&'static str>,
    pub error: Option<String>,
}

impl SeqOutput {
    pub fn new(prompt: Vec<i64>, stops: Vec<String>) -> SeqOutput {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        SeqOutput { prompt, prompt_logprobs: Vec::new(), generated: Vec::new(), text: String::new(), sent: 0, stream: TextStream::new(true), stops, finish: None, error: None }
    }

    pub fn done(&self) -> bool {
        self.finish.is_some() || self.error.is_some()
    }

    /// Takes one event; returns the text that can be handed out now (empty when none).
    pub fn on_event(&mut self, tok: &Tokenizer, ev: SeqEvent) -> String {
        match ev {
            SeqEvent::Prompt(p) => self.prompt_logprobs = p,
            SeqEvent::Token(t) => {
                if self.finish.is_none() {
                    let piece = self.stream.push(tok, t.id).unwrap_or_default();
                    self.generated.push(t);
                    self.text.push_str(&piece);
                    self.check_stop();
                }
            }
            SeqEvent::Done(f) => {
                if self.finish.is_none() {
                    self.text.push_str(&self.stream.finish(tok).unwrap_or_default());
                    self.check_stop();
                    if self.finish.is_none() {
                        self.finish = Some(f.as_str());
                    }
                }
            }
            SeqEvent::Failed(e) => self.error = Some(e),
        }
        self.take_delta()
    }

    /// The engine closed the channel without a Done: treat as an error unless finished.
    pub fn on_closed(&mut self) {
        if !self.done() {
            self.error = Some("the engine stopped before the sequence finished".into());
        }
    }

    fn check_stop(&mut self) {
        if let Some(pos) = self.stops.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(pos);
            self.finish = Some(Finish::Stop.as_str());
        }
    }

    /// Text past `sent`, less a tail that could still grow into a stop string.
    fn take_delta(&mut self) -> String {
        let mut end = self.text.len();
        if self.finish.is_none() {
            for s in &self.stops {
                for k in (1..s.len()).rev() {
                    if s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                        end = end.min(self.text.len() - k);
                        break;
                    }
                }
            }
        }
        if end <= self.sent {
            return String::new();
        }
        let d = self.text[self.sent..end].to_string();
        self.sent = end;
        d
    }

    /// Generated tokens that lie within the (possibly stop-cut) text: all of them unless a stop matched.
    fn kept_tokens(&self, tok: &Tokenizer) -> usize {
        if self.finish != Some("stop") || self.stops.is_empty() {
            return self.generated.len();
        }
        let mut ids = Vec::new();
        for (i, t) in self.generated.iter().enumerate() {
            ids.push(t.id);
            if tok.decode(&ids).map(|s| s.len()).unwrap_or(0) > self.text.len() {
                return i;
            }
        }
        self.generated.len()
    }
}

fn token_str(tok: &Tokenizer, id: i64) -> String {
    tok.decode_all(&[id]).unwrap_or_default()
}

/// `{token: logprob}` of a position: its best alternatives plus the token itself.
fn top_dict(tok: &Tokenizer, t: &TokenLogprob, n: usize) -> Value {
    let mut m = Map::new();
    for &(id, lp) in t.top.iter().take(n.max(1)) {
        m.insert(token_str(tok, id), json!(lp));
    }
    m.insert(token_str(tok, t.id), json!(t.logprob));
    Value::Object(m)
}

/// The completions `logprobs` object: with `echo`, the prompt's tokens first (the first has no logprob).
pub fn completion_logprobs(tok: &Tokenizer, out: &SeqOutput, echo: bool, n: usize, text_start: usize) -> Value {
    let (mut tokens, mut lps, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut offset = text_start;
    let mut push = |s: String, lp: Value, top: Value| {
        offsets.push(offset);
        offset += s.chars().count();
        tokens.push(s);
        lps.push(lp);
        tops.push(top);
    };
    if echo {
        for (i, &id) in out.prompt.iter().enumerate() {
            match i.checked_sub(1).and_then(|j| out.prompt_logprobs.get(j)) {
                Some(t) => push(token_str(tok, id), json!(t.logprob), top_dict(tok, t, n)),
                None => push(token_str(tok, id), Value::Null, Value::Null),
            }
        }
    }
    for t in &out.generated[..out.kept_tokens(tok)] {
        push(token_str(tok, t.id), json!(t.logprob), top_dict(tok, t, n));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// The chat `logprobs` object: `{"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}`.
pub fn chat_logprobs(tok: &Tokenizer, out: &SeqOutput, n: usize) -> Value {
    let entry = |id: i64, lp: f32| {
        let s = token_str(tok, id);
        json!({"token": s, "logprob": lp, "bytes": s.as_bytes()})
    };
    let content: Vec<Value> = out.generated[..out.kept_tokens(tok)]
        .iter()
        .map(|t| {
            let mut e = entry(t.id, t.logprob);
            e["top_logprobs"] = Value::Array(t.top.iter().take(n).map(|&(id, lp)| entry(id, lp)).collect());
            e
        })
        .collect();
    json!({ "content": content })
}
