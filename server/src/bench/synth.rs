//! Deterministic synthetic source files of a given length, for benchmarks that need "a 10,000-line file" in a
//! language without shipping one.

/// A Python module of at least `lines` lines: classes, methods, loops, comprehensions, strings.
pub fn python(lines: usize) -> String {
    let mut out = String::from("\"\"\"Synthetic module for pie-ls benchmarks.\"\"\"\nimport os\nimport sys\n\n");
    let mut i = 0;
    while out.lines().count() < lines {
        out.push_str(&format!(
            "class Widget{i}:\n    \"\"\"A widget with an id and some parts.\"\"\"\n\n    def __init__(self, size, name='w{i}'):\n        self.size = size\n        self.name = name\n        self.parts = [p * {i} for p in range(size) if p % 3]\n\n    def total(self, scale=1.0):\n        acc = 0\n        for index, part in enumerate(self.parts):\n            if part > {i} and index % 2 == 0:\n                acc += part * scale\n            elif part < 0:\n                raise ValueError(f\"bad part {{part}} in {{self.name}}\")\n            else:\n                acc -= 1\n        return acc\n\n\ndef helper_{i}(values):\n    return {{k: v for k, v in zip(values, reversed(values))}}\n\n\n"
        ));
        i += 1;
    }
    out
}

/// A Rust module of at least `lines` lines: structs, impls, matches, closures, generics.
pub fn rust(lines: usize) -> String {
    let mut out = String::from("//! Synthetic module for pie-ls benchmarks.\nuse std::collections::HashMap;\n\n");
    let mut i = 0;
    while out.lines().count() < lines {
        out.push_str(&format!(
            "/// A widget with parts.\n#[derive(Debug, Clone)]\npub struct Widget{i} {{\n    size: usize,\n    name: String,\n    parts: Vec<i64>,\n}}\n\nimpl Widget{i} {{\n    pub fn new(size: usize) -> Self {{\n        let parts = (0..size as i64).filter(|p| p % 3 != 0).map(|p| p * {i}).collect();\n        Widget{i} {{ size, name: format!(\"w{i}\"), parts }}\n    }}\n\n    pub fn total(&self, scale: f64) -> Result<f64, String> {{\n        let mut acc = 0.0;\n        for (index, part) in self.parts.iter().enumerate() {{\n            match *part {{\n                p if p > {i} && index % 2 == 0 => acc += p as f64 * scale,\n                p if p < 0 => return Err(format!(\"bad part {{p}} in {{}}\", self.name)),\n                _ => acc -= 1.0,\n            }}\n        }}\n        Ok(acc)\n    }}\n}}\n\npub fn helper_{i}<T: Clone + std::hash::Hash + Eq>(values: &[T]) -> HashMap<T, T> {{\n    values.iter().cloned().zip(values.iter().rev().cloned()).collect()\n}}\n\n"
        ));
        i += 1;
    }
    out
}
