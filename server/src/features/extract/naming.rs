//! Names for the new function: a deterministic one that always works, the prompt that asks the model for a better
//! one, and the validation every model answer must pass before it is used.

use super::analysis::{Plan, Tail};
use super::lang::Family;

/// A deterministic name that collides with nothing in the file.
pub(crate) fn deterministic(plan: &Plan) -> String {
    let table = plan.table();
    let base = if plan.rets.len() == 1 && matches!(plan.tail, Tail::None) {
        let var = &plan.rets[0].name;
        if table.snake {
            format!("compute_{}", to_snake(var))
        } else {
            format!("compute{}", upper_first(var))
        }
    } else if matches!(plan.tail, Tail::Value { .. }) && plan.expr_mode {
        if table.snake { "extracted_value".to_owned() } else { "extractedValue".to_owned() }
    } else if table.snake {
        "extracted".to_owned()
    } else {
        "extracted".to_owned()
    };
    let base = if is_identifier(&base) && base.len() <= 48 { base } else { "extracted".to_owned() };
    unique(plan, &base)
}

fn unique(plan: &Plan, base: &str) -> String {
    let table = plan.table();
    if is_free(plan, base) {
        return base.to_owned();
    }
    for n in 2..1000 {
        let candidate = if table.snake { format!("{base}_{n}") } else { format!("{base}{n}") };
        if is_free(plan, &candidate) {
            return candidate;
        }
    }
    format!("{base}_{}", plan.replace.start)
}

fn is_free(plan: &Plan, name: &str) -> bool {
    !occurs_as_word(&plan.source, name) && !plan.table().is_keyword(name)
}

/// The prompt that asks the model for one identifier.
pub(crate) fn prompt(plan: &Plan) -> String {
    let table = plan.table();
    let convention = if table.snake { "snake_case" } else { "lowerCamelCase" };
    let lang = plan.lang.id();
    let params: Vec<&str> = plan.params.iter().map(|p| p.name.as_str()).collect();
    let rets: Vec<&str> = plan.rets.iter().map(|r| r.name.as_str()).collect();
    let mut p = String::new();
    p.push_str(&format!(
        "A {lang} refactoring extracts the code below into a new function. Suggest a short, descriptive name for it.\n"
    ));
    if !plan.enclosing_name.is_empty() {
        p.push_str(&format!("It is extracted from `{}`.\n", plan.enclosing_name));
    }
    if !params.is_empty() {
        p.push_str(&format!("Parameters: {}.\n", params.join(", ")));
    }
    if !rets.is_empty() {
        p.push_str(&format!("It returns: {}.\n", rets.join(", ")));
    }
    p.push_str(&format!("Context:\n```{lang}\n{}\n```\n", plan.context_text));
    p.push_str(&format!("Code to extract:\n```{lang}\n{}\n```\n", plan.body_text));
    p.push_str(&format!("Answer with one {convention} identifier and nothing else.\nName: "));
    p
}

/// Validates (and, where only the case is off, converts) a model's answer. `None` when it is unusable.
pub(crate) fn validate(plan: &Plan, answer: &str) -> Option<String> {
    let table = plan.table();
    let word = answer
        .trim()
        .trim_start_matches("Name:")
        .trim()
        .split(|c: char| c.is_whitespace() || c == '(' || c == ',' || c == ';' || c == ':')
        .find(|w| !w.is_empty())?
        .trim_matches(|c: char| c == '`' || c == '"' || c == '\'' || c == '.' || c == '*');
    if !is_identifier(word) || word.len() > 48 || word.len() < 2 {
        return None;
    }
    let converted = if table.snake { to_snake(word) } else { to_camel(word) };
    let ok_case = if table.snake {
        converted.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && converted.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
    } else {
        converted.starts_with(|c: char| c.is_ascii_lowercase()) && converted.chars().all(|c| c.is_ascii_alphanumeric())
    };
    if !ok_case || !is_free(plan, &converted) {
        return None;
    }
    // Go: a lower-case name keeps the helper private to the package, as a helper should be.
    if plan.family == Family::Go && converted.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    Some(converted)
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn to_snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else {
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c);
        }
    }
    out
}

fn to_camel(s: &str) -> String {
    let mut out = String::new();
    let mut upper_next = false;
    for (i, c) in s.chars().enumerate() {
        if c == '_' {
            upper_next = !out.is_empty();
            continue;
        }
        if i == 0 || out.is_empty() {
            out.push(c.to_ascii_lowercase());
        } else if upper_next {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
        upper_next = false;
    }
    out
}

fn upper_first(s: &str) -> String {
    let camel = to_camel(s);
    let mut chars = camel.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// Whether `word` occurs in `text` delimited by non-identifier characters (in code, comments or strings alike:
/// conservative).
fn occurs_as_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}
