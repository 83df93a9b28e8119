//! Which cached tokens of a session are stale, as spans, each with the distance from the change that made it
//! stale. Free of llama.cpp, so it is unit-tested on its own.
//!
//! A token's KV is *fresh* when it was encoded with the current text before it and every token before it is fresh
//! too (then it equals a fresh encode, up to floating-point order). Otherwise it is stale, in one of two ways:
//! - **first order**: the token has not seen a change before it (PIE moved it past an edit, or it was encoded in
//!   the same decode as an earlier edit site it cannot see). Its `origin` is the first token after the nearest
//!   such change; `distance = index - origin`. What a stale token misses shrinks with that distance, so the
//!   refresh works nearest-first.
//! - **second order**: the token was re-encoded with the current text before it, but some of the tokens it
//!   attended to were stale then. It is much closer to a fresh encode than a first-order token; the refresh
//!   turns to these last, front to back, so that a complete refresh ends exact.
//!
//! An update maps every kept token through the plan's `origin` (new index -> old index): the untouched prefix
//! keeps its marks, every kept token after a change becomes first-order stale with the nearest change (or its
//! old, nearer origin), and new tokens are marked when they are encoded (`encoded`).

/// A run of stale tokens `[start, end)` with one origin (`None`: second order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StaleSpan {
    pub start: usize,
    pub end: usize,
    /// First token after the change these tokens have not seen; `None` for second-order staleness.
    pub origin: Option<usize>,
}

impl StaleSpan {
    /// Distance of the span's first token from its change (`None` for second order).
    pub fn distance(&self) -> Option<usize> {
        self.origin.map(|o| self.start - o)
    }
}

/// Per-token marks, packed: a first-order origin, or one of these.
const FRESH: u32 = u32::MAX;
const SECOND: u32 = u32::MAX - 1;

/// The staleness of a session's cached tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staleness {
    /// Sorted, disjoint, maximal (adjacent spans differ in origin).
    spans: Vec<StaleSpan>,
    len: usize,
}

impl Staleness {
    /// `len` tokens, all fresh.
    pub fn fresh(len: usize) -> Staleness {
        Staleness { spans: Vec::new(), len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn spans(&self) -> &[StaleSpan] {
        &self.spans
    }

    pub fn stale_tokens(&self) -> usize {
        self.spans.iter().map(|s| s.end - s.start).sum()
    }

    /// Whether any token in `[a, b)` is stale.
    pub fn any_stale(&self, a: usize, b: usize) -> bool {
        self.spans.iter().any(|s| s.start < b && s.end > a)
    }

    /// The first stale token at or after `a`.
    pub fn first_stale_from(&self, a: usize) -> Option<usize> {
        self.spans.iter().find(|s| s.end > a).map(|s| s.start.max(a))
    }

    /// The smallest distance of a first-order stale token from its change.
    pub fn nearest_distance(&self) -> Option<usize> {
        self.spans.iter().filter_map(|s| s.distance()).min()
    }

    fn marks(&self) -> Vec<u32> {
        let mut m = vec![FRESH; self.len];
        for s in &self.spans {
            let v = s.origin.map_or(SECOND, |o| o as u32);
            m[s.start..s.end].fill(v);
        }
        m
    }

    fn from_marks(marks: &[u32]) -> Staleness {
        let mut spans: Vec<StaleSpan> = Vec::new();
        for (i, &v) in marks.iter().enumerate() {
            if v == FRESH {
                continue;
            }
            let origin = (v != SECOND).then_some(v as usize);
            match spans.last_mut() {
                Some(s) if s.end == i && s.origin == origin => s.end += 1,
                _ => spans.push(StaleSpan { start: i, end: i + 1, origin }),
            }
        }
        Staleness { spans, len: marks.len() }
    }

    /// Follow an update. `origin[i]` is, for each token of the new list, its index in the old list if it is a
    /// kept cached token, or `None` for a token still to be encoded (mark it with `encoded` once it is).
    pub fn remap(&mut self, origin: &[Option<usize>]) {
        let old = self.marks();
        let mut new_of = vec![usize::MAX; old.len()];
        for (i, o) in origin.iter().enumerate() {
            if let Some(j) = *o {
                if j < new_of.len() {
                    new_of[j] = i;
                }
            }
        }
        let mut out = vec![FRESH; origin.len()];
        let mut change: Option<usize> = None;
        for t in 0..origin.len() {
            if is_change(origin, t) {
                change = Some(t);
            }
            out[t] = match (origin[t], change) {
                // Not encoded yet: as stale as a token can be until `encoded` says otherwise.
                (None, _) => t as u32,
                (Some(j), None) => old.get(j).copied().unwrap_or(FRESH),
                (Some(j), Some(c)) => {
                    let old_origin = match old.get(j).copied().unwrap_or(FRESH) {
                        FRESH | SECOND => None,
                        o => new_of.get(o as usize).copied().filter(|&x| x <= t),
                    };
                    c.max(old_origin.unwrap_or(0)) as u32
                }
            };
        }
        *self = Staleness::from_marks(&out);
    }

    /// Tokens `[a, b)` were just encoded, in order, against the cache before `a`. `unseen` is the first token
    /// after a change they could not see (an earlier edit site of the same decode), if any.
    pub fn encoded(&mut self, a: usize, b: usize, unseen: Option<usize>) {
        let b = b.min(self.len);
        if a >= b {
            return;
        }
        let mut m = self.marks();
        let v = match unseen {
            Some(o) => o as u32,
            None if m[..a].iter().all(|&x| x == FRESH) => FRESH,
            None => SECOND,
        };
        m[a..b].fill(v);
        *self = Staleness::from_marks(&m);
    }

    /// The next run for the refresh to re-encode, at most `max` tokens: the first-order stale tokens nearest to
    /// their change first (ties: the earlier one), then second-order ones front to back.
    pub fn next_chunk(&self, max: usize) -> Option<(usize, usize)> {
        let max = max.max(1);
        let pick = self
            .spans
            .iter()
            .filter_map(|s| s.distance().map(|d| (d, s.start, s)))
            .min_by_key(|&(d, start, _)| (d, start))
            .map(|(_, _, s)| s)
            .or_else(|| self.spans.first())?;
        Some((pick.start, pick.end.min(pick.start + max)))
    }
}

/// Whether token `t` of a new list starts after a change: it is new, or it does not follow its predecessor in
/// the old list (something was removed or inserted before it).
pub fn is_change(origin: &[Option<usize>], t: usize) -> bool {
    match origin[t] {
        None => true,
        Some(j) if t == 0 => j != 0,
        Some(j) => origin[t - 1].map(|p| p + 1) != Some(j),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept tokens `0..a`, `k` new ones, then the old `a..n` moved.
    fn insertion(n: usize, a: usize, k: usize) -> Vec<Option<usize>> {
        (0..a).map(Some).chain(std::iter::repeat(None).take(k)).chain((a..n).map(Some)).collect()
    }

    #[test]
    fn an_insertion_makes_the_moved_suffix_stale_with_distances_from_it() {
        let mut s = Staleness::fresh(100);
        s.remap(&insertion(100, 40, 3));
        s.encoded(40, 43, None);
        assert_eq!(s.spans(), &[StaleSpan { start: 43, end: 103, origin: Some(43) }]);
        assert_eq!(s.stale_tokens(), 60);
        assert_eq!(s.nearest_distance(), Some(0));
        // The refresh starts right after the edit.
        assert_eq!(s.next_chunk(16), Some((43, 59)));
        s.encoded(43, 59, None);
        assert_eq!(s.spans(), &[StaleSpan { start: 59, end: 103, origin: Some(43) }]);
        assert_eq!(s.nearest_distance(), Some(16));
    }

    #[test]
    fn a_deletion_without_new_tokens_is_a_change_too() {
        let mut s = Staleness::fresh(50);
        let origin: Vec<Option<usize>> = (0..10).chain(20..50).map(Some).collect();
        s.remap(&origin);
        assert_eq!(s.spans(), &[StaleSpan { start: 10, end: 40, origin: Some(10) }]);
    }

    #[test]
    fn an_edit_at_the_end_leaves_everything_fresh() {
        let mut s = Staleness::fresh(30);
        s.remap(&insertion(30, 30, 5));
        s.encoded(30, 35, None);
        assert_eq!(s.stale_tokens(), 0);
        assert_eq!(s.len(), 35);
    }

    #[test]
    fn a_nearer_old_origin_survives_a_later_edit_before_it() {
        let mut s = Staleness::fresh(100);
        s.remap(&insertion(100, 60, 2));
        s.encoded(60, 62, None);
        // Stale from 62 (origin 62). Now insert 1 token at 10: tokens before the old edit are stale from 11,
        // tokens after it keep their nearer origin (moved by one).
        s.remap(&insertion(102, 10, 1));
        s.encoded(10, 11, None);
        assert_eq!(s.spans(), &[StaleSpan { start: 11, end: 63, origin: Some(11) }, StaleSpan { start: 63, end: 103, origin: Some(63) }]);
        // Both spans start at distance 0; the earlier goes first.
        assert_eq!(s.next_chunk(8), Some((11, 19)));
    }

    #[test]
    fn later_sites_of_one_decode_are_first_order_stale_and_a_complete_refresh_ends_fresh() {
        let mut s = Staleness::fresh(100);
        // Two sites in one update: new tokens at 20..22 and at 62..64.
        let origin: Vec<Option<usize>> =
            (0..20).map(Some).chain([None, None]).chain((20..60).map(Some)).chain([None, None]).chain((60..100).map(Some)).collect();
        s.remap(&origin);
        s.encoded(20, 22, None);
        s.encoded(62, 64, Some(22));
        assert_eq!(s.spans()[0], StaleSpan { start: 22, end: 64, origin: Some(22) });
        assert_eq!(s.spans()[1], StaleSpan { start: 64, end: 104, origin: Some(64) });
        // Nearest-first alternates between the two edits; a chunk refreshed behind stale tokens is second order.
        let mut order = Vec::new();
        let mut guard = 0;
        while let Some((a, b)) = s.next_chunk(10) {
            order.push((a, b));
            s.encoded(a, b, None);
            guard += 1;
            assert!(guard < 100, "refresh does not converge: {order:?}");
        }
        assert_eq!(s.stale_tokens(), 0);
        assert_eq!(&order[..3], &[(22, 32), (64, 74), (32, 42)]);
        // Never the same first-order token twice: each token is re-encoded at most twice (once first-order,
        // once more if that happened behind stale tokens).
        let total: usize = order.iter().map(|(a, b)| b - a).sum();
        assert!(total <= 2 * 82, "{total}");
    }

    #[test]
    fn second_order_tokens_become_first_order_again_after_a_new_change() {
        let mut s = Staleness::fresh(20);
        s.remap(&insertion(20, 5, 1));
        s.encoded(5, 6, None);
        s.encoded(15, 21, None); // refreshed behind stale tokens: second order
        assert_eq!(s.spans().last().unwrap().origin, None);
        s.remap(&insertion(21, 2, 1));
        s.encoded(2, 3, None);
        assert!(s.spans().iter().all(|sp| sp.origin.is_some()), "{:?}", s.spans());
    }
}
