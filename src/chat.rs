//! Chat prompts: the model's own Jinja chat template (`tokenizer.chat_template`) rendered with
//! minijinja for a list of messages, with the generation prompt appended.

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Renders `template` for `messages`, ready for the assistant's reply.
pub fn render(template: &str, messages: &[Message], bos: &str, eos: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_template("chat", template)
        .context("the model's chat template does not parse")?;
    let tmpl = env.get_template("chat")?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
    .context("rendering the model's chat template")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_style_template() {
        let t = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}";
        let out = render(
            t,
            &[Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            "",
            "",
        )
        .unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|><|im_start|>assistant\n");
    }
}
