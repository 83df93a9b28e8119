//! Shared helpers for the engine tests: locating the real test model (SmolLM2-135M), loading it once per test
//! binary, a realistic Python source to edit, and logits comparisons.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use pie_ls::engine::{fetch, Engine, EngineConfig, KvType, TEST_MODEL, TEST_MODEL_ENV};

/// The test model: `$PIE_LS_TEST_MODEL`, else the cache dir. Absent means a loud failure, never a skip.
pub fn test_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os(TEST_MODEL_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{TEST_MODEL_ENV} points at {}, which is not a file", p.display());
        return p;
    }
    let p = fetch::pinned_path(&TEST_MODEL);
    assert!(
        p.is_file(),
        "the engine tests need the test model SmolLM2-135M-Instruct at {} (or set {TEST_MODEL_ENV}); run `pie-ls model fetch --test` first",
        p.display()
    );
    p
}

pub fn config(kv: KvType) -> EngineConfig {
    // Flash attention off: llama.cpp's CPU flash-attention kernel rounds differently for different batch sizes
    // (~0.7 logit on this model), which would hide what these tests look for. Without it, a full recomputation
    // is bit-identical whatever the batching.
    EngineConfig { threads: 2, n_ctx: 4096, n_batch: 256, kv_type: kv, flash_attention: Some(false), ..EngineConfig::default() }
}

/// The model, loaded once per test binary, with an f32 KV cache (exactness tests).
pub fn engine() -> Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::load(&test_model_path(), config(KvType::F32)).expect("load the test model"))
        .clone()
}

/// Softmax of logits.
pub fn softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = l.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// KL(p || q) of the next-token distributions.
pub fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let p = softmax(p_logits);
    let q = softmax(q_logits);
    p.iter().zip(q.iter()).filter(|(a, _)| **a > 0.0).map(|(a, b)| a * (a / b.max(1e-300)).ln()).sum()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> usize {
    pie_ls::engine::sample::argmax(v)
}

/// A realistic Python module (about 1,100 tokens) to edit.
pub const SOURCE: &str = r#""""Small inventory service: items, stock levels and a report."""

import json
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

log = logging.getLogger(__name__)


@dataclass
class Item:
    sku: str
    name: str
    price: float
    tags: List[str] = field(default_factory=list)

    def display(self) -> str:
        return f"{self.name} ({self.sku}) at {self.price:.2f}"


class Inventory:
    """Keeps stock levels per SKU and refuses to go negative."""

    def __init__(self) -> None:
        self.items: Dict[str, Item] = {}
        self.stock: Dict[str, int] = {}

    def add_item(self, item: Item, quantity: int = 0) -> None:
        if item.sku in self.items:
            raise ValueError(f"duplicate sku {item.sku}")
        self.items[item.sku] = item
        self.stock[item.sku] = quantity
        log.info("added %s", item.sku)

    def remove_item(self, sku: str) -> Optional[Item]:
        self.stock.pop(sku, None)
        return self.items.pop(sku, None)

    def receive(self, sku: str, quantity: int) -> int:
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self.stock[sku] = self.stock.get(sku, 0) + quantity
        return self.stock[sku]

    def ship(self, sku: str, quantity: int) -> int:
        available = self.stock.get(sku, 0)
        if quantity > available:
            raise ValueError(f"only {available} of {sku} in stock")
        self.stock[sku] = available - quantity
        return self.stock[sku]

    def total_value(self) -> float:
        total = 0.0
        for sku, count in self.stock.items():
            total += self.items[sku].price * count
        return total

    def low_stock(self, threshold: int = 5) -> List[str]:
        return sorted(sku for sku, count in self.stock.items() if count < threshold)

    def by_tag(self, tag: str) -> List[Item]:
        return [item for item in self.items.values() if tag in item.tags]


def load_inventory(path: str) -> Inventory:
    inventory = Inventory()
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    for entry in data.get("items", []):
        item = Item(entry["sku"], entry["name"], float(entry["price"]), entry.get("tags", []))
        inventory.add_item(item, int(entry.get("quantity", 0)))
    return inventory


def report(inventory: Inventory) -> str:
    lines = ["SKU      NAME                 QTY     VALUE"]
    for sku in sorted(inventory.items):
        item = inventory.items[sku]
        qty = inventory.stock.get(sku, 0)
        lines.append(f"{sku:<8} {item.name:<20} {qty:>4} {qty * item.price:>9.2f}")
    lines.append(f"total value: {inventory.total_value():.2f}")
    low = inventory.low_stock()
    if low:
        lines.append("low stock: " + ", ".join(low))
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: inventory.py FILE")
        return 2
    inventory = load_inventory(argv[1])
    print(report(inventory))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv))
"#;

/// Byte offset of the start of line `n` (0-based) of `text`.
pub fn line_offset(text: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    text.match_indices('\n').nth(n - 1).map(|(i, _)| i + 1).unwrap_or(text.len())
}
