//! Token sampling over a logits vector: greedy (argmax) or temperature / top-k / top-p with a seeded RNG.
//! Done in Rust on the logits the session already holds, so cached logits and fresh ones are sampled alike.

use super::pie::Tok;

/// Sampling settings; `temperature <= 0` means greedy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 40, top_p: 0.95, seed: 0x5eed }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Default::default() }
    }
}

/// A sampler with its own RNG state (xorshift64*: tiny, deterministic per seed).
pub struct Sampler {
    params: SamplingParams,
    state: u64,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        Sampler { params: params.clone(), state: params.seed.max(1) }
    }

    fn next_f32(&mut self) -> f32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn sample(&mut self, logits: &[f32]) -> Tok {
        if logits.is_empty() {
            return 0;
        }
        if self.params.temperature <= 0.0 {
            return argmax(logits) as Tok;
        }
        let k = if self.params.top_k == 0 { logits.len() } else { self.params.top_k.min(logits.len()) };
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        let cmp = |a: &usize, b: &usize| logits[*b].partial_cmp(&logits[*a]).unwrap_or(std::cmp::Ordering::Equal);
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, cmp);
            idx.truncate(k);
        }
        idx.sort_by(cmp);
        let t = self.params.temperature;
        let m = logits[idx[0]];
        let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i] - m) / t).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum.max(f32::MIN_POSITIVE));
        // Nucleus: smallest prefix whose mass reaches top_p.
        let mut cut = probs.len();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= self.params.top_p {
                cut = i + 1;
                break;
            }
        }
        let mass: f32 = probs[..cut].iter().sum();
        let mut r = self.next_f32() * mass;
        for i in 0..cut {
            r -= probs[i];
            if r <= 0.0 {
                return idx[i] as Tok;
            }
        }
        idx[cut - 1] as Tok
    }
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(&SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let p = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 42 };
        let logits = [5.0, 4.9, -10.0, 4.8];
        let a: Vec<Tok> = { let mut s = Sampler::new(&p); (0..50).map(|_| s.sample(&logits)).collect() };
        let b: Vec<Tok> = { let mut s = Sampler::new(&p); (0..50).map(|_| s.sample(&logits)).collect() };
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t == 0 || t == 1));
        assert!(a.contains(&0) && a.contains(&1));
    }
}
