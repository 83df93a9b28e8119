//! The languages pie-ls parses, and how a document is matched to one.
//!
//! A language is chosen by the LSP `languageId` first and the file extension second. Unknown languages are not an
//! error: such documents keep their text store and simply get no tree.

use std::fmt;

/// A language with a tree-sitter grammar compiled into the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    Rust,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
}

impl Language {
    pub const ALL: [Language; 9] = [
        Language::Python,
        Language::Rust,
        Language::JavaScript,
        Language::TypeScript,
        Language::Tsx,
        Language::Go,
        Language::Java,
        Language::C,
        Language::Cpp,
    ];

    /// Matches an LSP `languageId` (as VS Code and Neovim send them).
    pub fn from_language_id(id: &str) -> Option<Language> {
        let lang = match id.to_ascii_lowercase().as_str() {
            "python" | "py" => Language::Python,
            "rust" | "rs" => Language::Rust,
            "javascript" | "js" | "javascriptreact" | "jsx" => Language::JavaScript,
            "typescript" | "ts" => Language::TypeScript,
            "typescriptreact" | "tsx" => Language::Tsx,
            "go" | "golang" => Language::Go,
            "java" => Language::Java,
            "c" => Language::C,
            "cpp" | "c++" | "cuda-cpp" | "objective-cpp" => Language::Cpp,
            _ => return None,
        };
        Some(lang)
    }

    /// Matches a path's or URI's extension.
    pub fn from_path(path: &str) -> Option<Language> {
        let file_name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let (_, ext) = file_name.rsplit_once('.')?;
        let lang = match ext.to_ascii_lowercase().as_str() {
            "py" | "pyi" | "pyw" => Language::Python,
            "rs" => Language::Rust,
            "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
            "ts" | "mts" | "cts" => Language::TypeScript,
            "tsx" => Language::Tsx,
            "go" => Language::Go,
            "java" => Language::Java,
            "c" | "h" => Language::C,
            "cc" | "cpp" | "cxx" | "c++" | "hpp" | "hh" | "hxx" | "h++" | "ipp" => Language::Cpp,
            _ => return None,
        };
        Some(lang)
    }

    /// `languageId` wins; the extension decides when the id is unknown (e.g. `plaintext` for a `.py` file).
    pub fn detect(language_id: &str, uri: &str) -> Option<Language> {
        Language::from_language_id(language_id).or_else(|| Language::from_path(uri))
    }

    pub fn grammar(self) -> tree_sitter::Language {
        match self {
            Language::Python => tree_sitter_python::LANGUAGE.into(),
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
            Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Language::Go => tree_sitter_go::LANGUAGE.into(),
            Language::Java => tree_sitter_java::LANGUAGE.into(),
            Language::C => tree_sitter_c::LANGUAGE.into(),
            Language::Cpp => tree_sitter_cpp::LANGUAGE.into(),
        }
    }

    /// The canonical LSP `languageId`.
    pub fn id(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Rust => "rust",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Tsx => "typescriptreact",
            Language::Go => "go",
            Language::Java => "java",
            Language::C => "c",
            Language::Cpp => "cpp",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grammar_loads_and_parses() {
        for lang in Language::ALL {
            let mut parser = tree_sitter::Parser::new();
            parser.set_language(&lang.grammar()).unwrap_or_else(|e| panic!("{lang}: {e}"));
            let tree = parser.parse("x", None).expect("parse");
            assert!(tree.root_node().end_byte() == 1, "{lang}");
        }
    }

    #[test]
    fn detection_prefers_language_id_then_extension() {
        assert_eq!(Language::detect("python", "file:///a.rs"), Some(Language::Python));
        assert_eq!(Language::detect("plaintext", "file:///a/b.tsx"), Some(Language::Tsx));
        assert_eq!(Language::detect("plaintext", "file:///a/Makefile"), None);
        assert_eq!(Language::detect("", "file:///x/y.HPP"), Some(Language::Cpp));
    }
}
