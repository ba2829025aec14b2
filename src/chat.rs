//! Chat prompts: the model's own Jinja chat template (`tokenizer.chat_template`) rendered with
//! minijinja for a list of messages, with the generation prompt appended.

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Most template instructions one rendering may run (minijinja's fuel).
pub const CHAT_FUEL: u64 = 20_000_000;

/// Renders `template` for `messages`, ready for the assistant's reply.
pub fn render(template: &str, messages: &[Message], bos: &str, eos: &str) -> Result<String> {
    // As transformers renders chat templates: blocks eat their newline and leading spaces, and
    // templates may call raise_exception().
    let mut env = minijinja::Environment::new();
    // The template comes from the model file: bound the work one rendering may do (nested
    // loops over range() would otherwise run for minutes and fill memory). Real templates use
    // a few thousand instructions per message.
    env.set_fuel(Some(CHAT_FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
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
    fn a_template_that_would_run_for_hours_runs_out_of_fuel() {
        let t = "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}";
        let e = render(t, &[], "", "").unwrap_err();
        assert!(
            format!("{e:#}").contains("rendering the model's chat template"),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("fuel"), "{e:#}");
    }

    #[test]
    fn chatml_style_template() {
        // The shape of Qwen2.5's template.
        let t = "{%- for m in messages %}\n    {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>' + '\\n' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";
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
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
