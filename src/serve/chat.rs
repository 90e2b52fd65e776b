//! The chat template: the Jinja `chat_template` of the tokenizer's `tokenizer_config.json` (Qwen3's),
//! rendered with minijinja plus Python string methods (`startswith`, `split`, `lstrip`, ...), as HF's
//! `apply_chat_template` renders it (`add_generation_prompt=True`).

use super::api::{bad, BadRequest, Message};
use minijinja::{context, Environment, Value};
use std::path::Path;

pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template source (returned by `/tokenizer_info`).
    pub source: String,
}

fn raise_exception(msg: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// The `chat_template` of `dir/tokenizer_config.json`, if it has one.
    pub fn load(dir: &Path) -> Result<Option<ChatTemplate>, String> {
        let path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(source) = cfg["chat_template"].as_str() else { return Ok(None) };
        ChatTemplate::new(source).map(Some).map_err(|e| format!("chat_template of {}: {e}", path.display()))
    }

    pub fn new(source: &str) -> Result<ChatTemplate, minijinja::Error> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.to_string())?;
        Ok(ChatTemplate { env, source: source.to_string() })
    }

    /// The prompt text for `messages`, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[Message], extra: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<String, BadRequest> {
        let msgs: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                let mut o = serde_json::json!({"role": m.role, "content": m.text()?});
                if let Some(r) = &m.reasoning_content {
                    o["reasoning_content"] = serde_json::Value::String(r.clone());
                }
                if let Some(n) = &m.name {
                    o["name"] = serde_json::Value::String(n.clone());
                }
                Ok(o)
            })
            .collect::<Result<_, BadRequest>>()?;
        let tmpl = self.env.get_template("chat").map_err(|e| bad(format!("chat template: {e}")))?;
        let extra = Value::from_serialize(extra.cloned().unwrap_or_default());
        let ctx = context! { messages => Value::from_serialize(&msgs), add_generation_prompt => true, ..extra };
        tmpl.render(ctx).map_err(|e| bad(format!("rendering the chat template: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: Some(super::super::api::Content::Text(content.into())), reasoning_content: None, name: None }
    }

    #[test]
    fn qwen3_template_renders_as_hf() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers/qwen3-tokenizer");
        let t = ChatTemplate::load(&dir).unwrap().expect("the shipped tokenizer has a chat template");
        let text = t.render(&[msg("system", "Be brief."), msg("user", "Hi!")], None).unwrap();
        assert_eq!(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
        let mut no_think = serde_json::Map::new();
        no_think.insert("enable_thinking".into(), serde_json::Value::Bool(false));
        let text = t.render(&[msg("user", "Hi!")], Some(&no_think)).unwrap();
        assert_eq!(text, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
        // An earlier assistant turn loses its reasoning, as in HF.
        let text = t.render(&[msg("user", "a"), msg("assistant", "<think>\nx\n</think>\n\nb"), msg("user", "c")], None).unwrap();
        assert_eq!(text, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n");
    }
}
