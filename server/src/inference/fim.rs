//! Fill-in-the-middle prompts rendered on the client (for servers that take a raw prompt: OpenAI-compatible
//! `/v1/completions`, Ollama's `raw` generate): the marker texts of each model family, the repository-level
//! layout for other files' code, and the neutralisation of marker text inside user code.
//!
//! A server tokenizes a raw prompt with special tokens parsed, so a file that contains the text
//! `<|fim_prefix|>` would put a real FIM token into the prompt. Such text in user code is broken up with a zero
//! width space after its first character before it is sent (the model sees almost the same text, never the
//! token). llama-server's `/infill` needs none of this: it tokenizes `input_prefix`, `input_suffix` and
//! `input_extra` without special tokens and adds the model's own markers.

use super::FimParts;

/// A model family's FIM layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FimFormat {
    pub family: &'static str,
    pub prefix: &'static str,
    pub suffix: &'static str,
    pub middle: &'static str,
    /// The file separator of the repository-level format; `None`: other files' code is left out.
    pub file_sep: Option<&'static str>,
    /// Suffix-prefix-middle order (Codestral).
    pub spm: bool,
    /// Texts that end a suggestion (end-of-text, the next file, the markers), passed as stop strings: servers
    /// other than llama.cpp do not treat FIM_PAD/FIM_SEP as end of generation.
    pub stop: &'static [&'static str],
}

pub const FAMILIES: &[FimFormat] = &[
    FimFormat {
        family: "qwen",
        prefix: "<|fim_prefix|>",
        suffix: "<|fim_suffix|>",
        middle: "<|fim_middle|>",
        file_sep: Some("<|file_sep|>"),
        spm: false,
        stop: &["<|endoftext|>", "<|file_sep|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|repo_name|>", "<|im_end|>"],
    },
    FimFormat {
        family: "starcoder",
        prefix: "<fim_prefix>",
        suffix: "<fim_suffix>",
        middle: "<fim_middle>",
        file_sep: Some("<file_sep>"),
        spm: false,
        stop: &["<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<repo_name>"],
    },
    FimFormat {
        family: "deepseek",
        prefix: "<｜fim▁begin｜>",
        suffix: "<｜fim▁hole｜>",
        middle: "<｜fim▁end｜>",
        file_sep: None,
        spm: false,
        stop: &["<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|EOT|>"],
    },
    FimFormat { family: "codellama", prefix: "<PRE> ", suffix: " <SUF>", middle: " <MID>", file_sep: None, spm: false, stop: &["<EOT>", "</s>", "<PRE>", "<SUF>", "<MID>"] },
    FimFormat { family: "codestral", prefix: "[PREFIX]", suffix: "[SUFFIX]", middle: "", file_sep: None, spm: true, stop: &["</s>", "[PREFIX]", "[SUFFIX]"] },
];

impl FimFormat {
    /// The format named by `backend.fim`, else the one the model's name suggests.
    pub fn find(setting: Option<&str>, model: Option<&str>) -> Result<&'static FimFormat, String> {
        if let Some(name) = setting.map(str::trim).filter(|s| !s.is_empty()) {
            return FAMILIES.iter().find(|f| f.family.eq_ignore_ascii_case(name)).ok_or_else(|| {
                let known: Vec<&str> = FAMILIES.iter().map(|f| f.family).collect();
                format!("backend.fim {name:?} is not one of {}", known.join(", "))
            });
        }
        let model = model.unwrap_or_default().to_ascii_lowercase();
        let family = if model.contains("qwen") {
            "qwen"
        } else if model.contains("starcoder") || model.contains("stable-code") || model.contains("refact") {
            "starcoder"
        } else if model.contains("deepseek") {
            "deepseek"
        } else if model.contains("codellama") || model.contains("code-llama") {
            "codellama"
        } else if model.contains("codestral") {
            "codestral"
        } else {
            return Err(format!(
                "no fill-in-the-middle format known for the model {:?}; set backend.fim to qwen, starcoder, deepseek, codellama or codestral if it has one",
                if model.is_empty() { "(unnamed)" } else { model.as_str() }
            ));
        };
        Ok(FAMILIES.iter().find(|f| f.family == family).expect("family in the table"))
    }

    fn markers(&self) -> Vec<&'static str> {
        let mut out = vec![self.prefix.trim(), self.suffix.trim()];
        if !self.middle.trim().is_empty() {
            out.push(self.middle.trim());
        }
        out.extend(self.file_sep);
        out.extend(self.stop.iter().copied());
        out.retain(|m| !m.is_empty());
        out
    }

    /// `text` with every marker of this family broken up by a zero width space after its first character.
    pub fn neutralize(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for marker in self.markers() {
            if out.contains(marker) {
                let first = marker.chars().next().map(char::len_utf8).unwrap_or(0);
                let broken = format!("{}\u{200b}{}", &marker[..first], &marker[first..]);
                out = out.replace(marker, &broken);
            }
        }
        out
    }

    /// The prompt: other files in the repository format (families with a file separator), then
    /// `PRE prefix SUF suffix MID` (or `SUF suffix PRE prefix` for SPM), user text neutralised.
    pub fn render(&self, parts: &FimParts) -> String {
        let mut out = String::new();
        if let Some(sep) = self.file_sep {
            if !parts.extra.is_empty() {
                for (name, text) in &parts.extra {
                    out.push_str(&format!("{sep}{}\n{}", self.neutralize(name), self.neutralize(text)));
                    if !text.ends_with('\n') {
                        out.push('\n');
                    }
                }
                out.push_str(&format!("{sep}{}\n", self.neutralize(&parts.file_name)));
            }
        }
        let (prefix, suffix) = (self.neutralize(&parts.prefix), self.neutralize(&parts.suffix));
        if self.spm {
            out.push_str(&format!("{}{suffix}{}{prefix}", self.suffix, self.prefix));
        } else {
            out.push_str(&format!("{}{prefix}{}{suffix}{}", self.prefix, self.suffix, self.middle));
        }
        out
    }

    pub fn stop_strings(&self) -> Vec<String> {
        self.stop.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> FimParts {
        FimParts {
            extra: vec![("util.py".into(), "def helper(x):\n    return x * 2\n".into())],
            file_name: "main.py".into(),
            prefix: "def f():\n    return ".into(),
            suffix: "\n\nprint(f())\n".into(),
        }
    }

    #[test]
    fn families_render_their_own_layout_with_other_files_first() {
        let qwen = FimFormat::find(None, Some("Qwen2.5-Coder-1.5B")).unwrap();
        assert_eq!(
            qwen.render(&parts()),
            "<|file_sep|>util.py\ndef helper(x):\n    return x * 2\n<|file_sep|>main.py\n<|fim_prefix|>def f():\n    return <|fim_suffix|>\n\nprint(f())\n<|fim_middle|>"
        );
        let deepseek = FimFormat::find(Some("DeepSeek"), Some("whatever")).unwrap();
        assert_eq!(deepseek.render(&parts()), "<｜fim▁begin｜>def f():\n    return <｜fim▁hole｜>\n\nprint(f())\n<｜fim▁end｜>");
        let codestral = FimFormat::find(None, Some("codestral-22b")).unwrap();
        assert_eq!(codestral.render(&parts()), "[SUFFIX]\n\nprint(f())\n[PREFIX]def f():\n    return ");
        assert_eq!(FimFormat::find(None, Some("bigcode/starcoder2-3b")).unwrap().family, "starcoder");
        assert_eq!(FimFormat::find(None, Some("codellama:7b-code")).unwrap().family, "codellama");
    }

    #[test]
    fn unknown_models_and_formats_are_clear_errors() {
        let err = FimFormat::find(None, Some("llama3.1:8b")).unwrap_err();
        assert!(err.contains("llama3.1:8b") && err.contains("backend.fim"), "{err}");
        assert!(FimFormat::find(Some("gpt"), None).unwrap_err().contains("backend.fim \"gpt\""));
    }

    #[test]
    fn marker_text_in_user_code_never_survives_as_a_marker() {
        let qwen = FimFormat::find(Some("qwen"), None).unwrap();
        let mut p = parts();
        p.prefix = "s = '<|fim_middle|><|endoftext|>'\n".into();
        p.extra[0].1 = "# <|file_sep|> in a comment\n".into();
        let prompt = qwen.render(&p);
        // Exactly the markers the layout put there, no more.
        assert_eq!(prompt.matches("<|fim_middle|>").count(), 1);
        assert!(prompt.ends_with("<|fim_middle|>"));
        assert_eq!(prompt.matches("<|file_sep|>").count(), 2);
        assert_eq!(prompt.matches("<|endoftext|>").count(), 0);
        assert!(prompt.contains("s = '<\u{200b}|fim_middle|><\u{200b}|endoftext|>'"));
    }
}
