//! The second opinion written apart: the function asked for from its signature, docstring and the failing test
//! alone, without the user's code or the fixes found.
//!
//! Why: the extra candidates of a round fix the same buggy body from the same prompt, so they tend to repeat the fix
//! found (or fail); when none of them passes, a fix is offered with nothing to compare it with, and most false passes
//! were such fixes. A version written from the documented intent does not inherit the bug's shape, so when it passes
//! the same tests and returns the same near their inputs, that is evidence the tests cannot give; when it differs,
//! the user is told where. It also breaks a tie between two fixes that differ.

use crate::features::chat::Conversation;

const SYSTEM: &str = "You are a careful software engineer. You write functions that do what their documentation says.";

/// The conversation that asks for `name` written from `head` (its signature and docstring) and one of its tests.
pub(super) fn conversation(name: &str, file: &str, head: &str, test_file: &str, test_source: &str, fence: &str) -> Conversation {
    let mut conversation = Conversation::new(SYSTEM);
    conversation.user(&format!(
        "Write the function `{name}` that this signature and docstring, in `{file}`, describe:\n```{fence}\n{}\n```\n\nIt must pass this test, in `{test_file}`:\n```{fence}\n{test_source}\n```\n\nSay in one sentence how `{name}` works, then write the whole function `{name}`.",
        head.trim_end()
    ));
    conversation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_holds_the_docstring_and_test_but_no_body() {
        let head = "def area(w, h):\n    \"\"\"The area of a w by h rectangle.\"\"\"\n";
        let c = conversation("area", "geo.py", head, "test_geo.py", "def test_area():\n    assert area(2, 3) == 6", "python");
        let text: String = c.messages().iter().map(|m| m.content.clone()).collect();
        assert!(text.contains("The area of a w by h rectangle.") && text.contains("assert area(2, 3) == 6"), "{text}");
        assert!(!text.contains("return"), "no body is shown: {text}");
    }
}
