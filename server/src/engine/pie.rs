//! PIE edit planning, free of llama.cpp so it can be unit-tested with a toy tokenizer.
//!
//! The cached document is a token list with the byte offset of every token. An update applies the LSP edits in
//! order; for each edit it re-tokenizes a window of whole lines around it (extended to old token boundaries),
//! diffs the window's old and new tokens (common prefix and suffix) and splices in only the tokens that really
//! changed. Every token remembers where it came from (`origin`: its index in the cached list, or `None` if new), so
//! after all edits the plan reads off directly: which cached tokens are dropped, which runs are kept and by how
//! much each run moves (the PIE rotation), and which new tokens must be encoded.
//!
//! Token boundaries: byte-level BPE merges across the edges of an edit, and its pre-tokenizer looks at the
//! characters around a split. A window that starts and ends on whole lines, and only counts as stable when its
//! first and last tokens are unchanged (otherwise it grows by more lines), reproduces a fresh tokenization of the
//! document in practice; the engine tests check that invariant after long random edit sequences.

use super::error::{EngineError, Result};

/// Token id (llama.cpp's `llama_token`).
pub type Tok = i32;

/// One edit, as LSP `didChange` sends them: byte range in the text *as left by the previous edit*, and the
/// replacement text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextEdit {
    pub start_byte: usize,
    pub old_end_byte: usize,
    pub new_text: String,
}

impl TextEdit {
    pub fn new(start_byte: usize, old_end_byte: usize, new_text: impl Into<String>) -> Self {
        TextEdit { start_byte, old_end_byte, new_text: new_text.into() }
    }
}

/// What the planner needs from a tokenizer.
pub trait Tokenizer {
    /// Tokenize a piece of the document (no BOS/EOS added).
    fn tokenize(&self, text: &str) -> Vec<Tok>;
    /// Byte length of a token's text.
    fn piece_len(&self, tok: Tok) -> usize;
}

/// The token mirror of a text.
#[derive(Debug, Clone, Default)]
pub struct TokenText {
    pub text: String,
    pub tokens: Vec<Tok>,
    /// Byte offset where each token starts in `text` (a zero-width BOS starts at 0).
    pub offsets: Vec<usize>,
    /// Leading special tokens (BOS) that no edit touches.
    pub n_fixed: usize,
}

impl TokenText {
    /// Tokenize `text` from scratch, after `fixed` (the BOS, if the model wants one).
    pub fn new(text: &str, fixed: &[Tok], tk: &dyn Tokenizer) -> TokenText {
        let mut tokens = fixed.to_vec();
        let mut offsets = vec![0; fixed.len()];
        let body = tk.tokenize(text);
        offsets.extend(piece_offsets(&body, 0, text.len(), tk));
        tokens.extend(body);
        TokenText { text: text.to_string(), tokens, offsets, n_fixed: fixed.len() }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Offsets of `toks` laid out from `start`, clamped to `end` (a tokenizer whose pieces do not add up to the text,
/// e.g. one that adds a leading space, still gets monotonic offsets).
fn piece_offsets(toks: &[Tok], start: usize, end: usize, tk: &dyn Tokenizer) -> Vec<usize> {
    let mut out = Vec::with_capacity(toks.len());
    let mut at = start;
    for &t in toks {
        out.push(at.min(end));
        at += tk.piece_len(t);
    }
    out
}

/// A run of cached tokens that survives the update, moved by `new_start - old_start` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptRun {
    pub old_start: usize,
    pub new_start: usize,
    pub len: usize,
}

impl KeptRun {
    pub fn delta(&self) -> i64 {
        self.new_start as i64 - self.old_start as i64
    }
}

/// A run of new tokens to encode, `[start, start+len)` in the new token list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRun {
    pub start: usize,
    pub len: usize,
}

/// The result of planning an update.
#[derive(Debug, Clone)]
pub struct Plan {
    pub new: TokenText,
    /// For each new token, its index in the old list if it is a kept cached token.
    pub origin: Vec<Option<usize>>,
    pub kept: Vec<KeptRun>,
    /// Old `[start, end)` ranges whose cells are dropped.
    pub removed: Vec<(usize, usize)>,
    pub sites: Vec<NewRun>,
    /// Length of the untouched prefix (tokens at the same index with the same origin).
    pub unchanged_prefix: usize,
    /// How many windows had to be widened (diagnostics).
    pub widenings: usize,
}

impl Plan {
    pub fn shifted_tokens(&self) -> usize {
        self.kept.iter().filter(|r| r.delta() != 0).map(|r| r.len).sum()
    }
    pub fn reused_tokens(&self) -> usize {
        self.kept.iter().map(|r| r.len).sum()
    }
    pub fn new_tokens(&self) -> usize {
        self.sites.iter().map(|r| r.len).sum()
    }
}

/// Extra whole lines on each side of an edit before the window is first tried.
const BASE_EXTRA_LINES: usize = 1;
/// Kept runs shorter than this right after an edit site are re-encoded with it.
const MIN_KEPT_RUN: usize = 4;
/// Widening steps before falling back to the whole document.
const MAX_WIDENINGS: usize = 4;

fn line_start(text: &str, at: usize, extra: usize) -> usize {
    let b = text.as_bytes();
    let mut i = at.min(b.len());
    // Back to the start of the current line, then `extra` more lines.
    for step in 0..=extra {
        while i > 0 && b[i - 1] != b'\n' {
            i -= 1;
        }
        if step == extra || i == 0 {
            return i;
        }
        i -= 1;
    }
    i
}

fn line_end(text: &str, at: usize, extra: usize) -> usize {
    let b = text.as_bytes();
    let mut i = at.min(b.len());
    for _ in 0..=extra {
        while i < b.len() && b[i] != b'\n' {
            i += 1;
        }
        if i >= b.len() {
            return b.len();
        }
        i += 1; // past the '\n'
    }
    i
}

fn check_edit(text: &str, e: &TextEdit, k: usize) -> Result<()> {
    if e.start_byte > e.old_end_byte || e.old_end_byte > text.len() {
        return Err(EngineError::InvalidEdit(format!(
            "edit #{k}: byte range {}..{} does not fit a text of {} bytes",
            e.start_byte,
            e.old_end_byte,
            text.len()
        )));
    }
    if !text.is_char_boundary(e.start_byte) || !text.is_char_boundary(e.old_end_byte) {
        return Err(EngineError::InvalidEdit(format!(
            "edit #{k}: byte range {}..{} splits a UTF-8 character",
            e.start_byte, e.old_end_byte
        )));
    }
    Ok(())
}

/// Plan the token-level update for `edits` applied in order to `old`.
pub fn plan(old: &TokenText, edits: &[TextEdit], tk: &dyn Tokenizer) -> Result<Plan> {
    let mut text = old.text.clone();
    let mut tokens = old.tokens.clone();
    let mut offsets = old.offsets.clone();
    let mut origin: Vec<Option<usize>> = (0..tokens.len()).map(Some).collect();
    let nf = old.n_fixed;
    let mut widenings = 0;

    for (k, e) in edits.iter().enumerate() {
        check_edit(&text, e, k)?;
        let old_len = text.len();
        let delta = e.new_text.len() as i64 - (e.old_end_byte - e.start_byte) as i64;
        let mut new_text = String::with_capacity((old_len as i64 + delta).max(0) as usize);
        new_text.push_str(&text[..e.start_byte]);
        new_text.push_str(&e.new_text);
        new_text.push_str(&text[e.old_end_byte..]);

        let n = tokens.len();
        let mut extra = BASE_EXTRA_LINES;
        let mut attempt = 0;
        let (a, b, lo, replacement) = loop {
            let whole = attempt > MAX_WIDENINGS;
            let (ws, we) = if whole { (0, old_len) } else { (line_start(&text, e.start_byte, extra), line_end(&text, e.old_end_byte, extra)) };
            // Window in old tokens: from the token containing `ws` to the first token starting at/after `we`.
            let a = if whole { nf } else { (offsets[nf..].partition_point(|&o| o <= ws) + nf).saturating_sub(1).max(nf) };
            let b = if whole { n } else { offsets[nf..].partition_point(|&o| o < we) + nf };
            let lo = if a < n { offsets[a] } else { old_len };
            let hi = if b < n { offsets[b] } else { old_len };
            let lo = lo.min(e.start_byte);
            let new_hi = (hi as i64 + delta) as usize;
            let window = &new_text[lo..new_hi];
            let fresh = tk.tokenize(window);
            let old_win = &tokens[a..b];
            let cp = old_win.iter().zip(fresh.iter()).take_while(|(x, y)| x == y).count();
            let max_cs = old_win.len().min(fresh.len()) - cp;
            let cs = old_win.iter().rev().zip(fresh.iter().rev()).take(max_cs).take_while(|(x, y)| x == y).count();
            let start_unstable = cp == 0 && a > nf;
            let end_unstable = cs == 0 && b < n;
            if whole || !(start_unstable || end_unstable) {
                break (a + cp, b - cs, lo, (fresh, cp, cs));
            }
            attempt += 1;
            widenings += 1;
            extra = extra * 2 + 2;
        };
        let (fresh, cp, cs) = replacement;
        let ins = &fresh[cp..fresh.len() - cs];
        // Offsets of the inserted tokens: after the kept window head.
        let head_bytes: usize = fresh[..cp].iter().map(|&t| tk.piece_len(t)).sum();
        let new_total = new_text.len();
        let ins_offsets = piece_offsets(ins, lo + head_bytes, new_total, tk);
        // Splice; shift the offsets of everything after by the byte delta.
        for o in offsets[b..].iter_mut() {
            *o = ((*o as i64) + delta).max(0) as usize;
        }
        tokens.splice(a..b, ins.iter().copied());
        offsets.splice(a..b, ins_offsets);
        origin.splice(a..b, std::iter::repeat(None).take(ins.len()));
        text = new_text;
    }

    // A few cached tokens stranded right after an edit site would be moved and stale for almost no saving; they
    // are re-encoded with the site instead (same decode, better cache).
    let mut i = 0;
    while i < origin.len() {
        if origin[i].is_some() {
            i += 1;
            continue;
        }
        while i < origin.len() && origin[i].is_none() {
            i += 1;
        }
        let start = i;
        let mut j = i;
        while j < origin.len() && origin[j].is_some() && (j == start || origin[j] == origin[j - 1].map(|x| x + 1)) {
            j += 1;
        }
        if j > start && j - start < MIN_KEPT_RUN {
            origin[start..j].iter_mut().for_each(|o| *o = None);
        }
        i = j;
    }

    let (kept, removed, sites, unchanged_prefix) = read_off(&origin, old.tokens.len());
    Ok(Plan {
        new: TokenText { text, tokens, offsets, n_fixed: nf },
        origin,
        kept,
        removed,
        sites,
        unchanged_prefix,
        widenings,
    })
}

/// The plan's runs read off the origins: kept runs, removed old ranges, new-token sites, untouched prefix.
fn read_off(origin: &[Option<usize>], old_len: usize) -> (Vec<KeptRun>, Vec<(usize, usize)>, Vec<NewRun>, usize) {
    let mut kept: Vec<KeptRun> = Vec::new();
    let mut sites: Vec<NewRun> = Vec::new();
    for (i, o) in origin.iter().enumerate() {
        match *o {
            Some(old_i) => match kept.last_mut() {
                Some(r) if r.old_start + r.len == old_i && r.new_start + r.len == i => r.len += 1,
                _ => kept.push(KeptRun { old_start: old_i, new_start: i, len: 1 }),
            },
            None => match sites.last_mut() {
                Some(s) if s.start + s.len == i => s.len += 1,
                _ => sites.push(NewRun { start: i, len: 1 }),
            },
        }
    }
    let mut removed = Vec::new();
    let mut next_old = 0;
    for r in &kept {
        if r.old_start > next_old {
            removed.push((next_old, r.old_start));
        }
        next_old = r.old_start + r.len;
    }
    if next_old < old_len {
        removed.push((next_old, old_len));
    }
    let unchanged_prefix = origin.iter().enumerate().take_while(|(i, o)| **o == Some(*i)).count();
    (kept, removed, sites, unchanged_prefix)
}

impl Plan {
    /// Turns the cached tokens at new indices `tokens` into new tokens (re-encoded with their site).
    pub fn renew(&mut self, tokens: &[usize], old_len: usize) {
        let mut turned = false;
        for &t in tokens {
            if let Some(o) = self.origin.get_mut(t) {
                turned |= o.take().is_some();
            }
        }
        if turned {
            (self.kept, self.removed, self.sites, self.unchanged_prefix) = read_off(&self.origin, old_len);
        }
    }

    /// Bounded correction: the first cached tokens after each change (an edit site, or the place where tokens
    /// were removed) are re-encoded with the update instead of being moved, `window(inserted, removed)` of them
    /// for a change that inserted and removed that many tokens (so a paste's large window is not also spent after
    /// the cursor marker's small move in the same update). They are the tokens a stale cache gets most wrong, and
    /// they join the site's own decode (on its scratch sequence, after its new tokens), so they cost batch width,
    /// not another pass. Returns how many cached tokens it turned into new ones. `old_len` is the cached list's
    /// length before the update.
    pub fn correct_after_changes(&mut self, mut window: impl FnMut(usize, usize) -> usize, old_len: usize) -> usize {
        let n = self.origin.len();
        // Each change's window, read before any token is turned.
        let windows: Vec<(usize, usize)> = (self.new.n_fixed..n)
            .filter(|&t| self.origin[t].is_some() && super::stale::is_change(&self.origin, t))
            .map(|c| {
                let inserted = self.origin[..c].iter().rev().take_while(|o| o.is_none()).count();
                let before = self.origin[..c - inserted].iter().rev().find_map(|o| *o).map_or(0, |p| p + 1);
                let removed = self.origin[c].unwrap_or(0).saturating_sub(before);
                (c, window(inserted, removed))
            })
            .collect();
        let mut turned = 0;
        for (c, k) in windows {
            for o in self.origin[c..(c + k).min(n)].iter_mut() {
                if o.take().is_some() {
                    turned += 1;
                }
            }
        }
        if turned > 0 {
            (self.kept, self.removed, self.sites, self.unchanged_prefix) = read_off(&self.origin, old_len);
        }
        turned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Toy tokenizer: words (with one leading space) and single other characters; BPE-like enough to merge
    /// across an edit's edges.
    struct Toy;
    impl Tokenizer for Toy {
        fn tokenize(&self, text: &str) -> Vec<Tok> {
            let mut out = Vec::new();
            let mut cur = String::new();
            let flush = |cur: &mut String, out: &mut Vec<Tok>| {
                if !cur.is_empty() {
                    out.push(encode(cur));
                    cur.clear();
                }
            };
            for ch in text.chars() {
                if ch.is_alphanumeric() {
                    cur.push(ch);
                } else if ch == ' ' && cur.is_empty() {
                    cur.push(ch);
                } else {
                    flush(&mut cur, &mut out);
                    if ch == ' ' {
                        cur.push(ch);
                    } else {
                        out.push(encode(&ch.to_string()));
                    }
                }
            }
            flush(&mut cur, &mut out);
            out
        }
        fn piece_len(&self, tok: Tok) -> usize {
            decode(tok).len()
        }
    }
    thread_local! { static VOCAB: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) }; }
    fn encode(s: &str) -> Tok {
        VOCAB.with(|v| {
            let mut v = v.borrow_mut();
            if let Some(i) = v.iter().position(|x| x == s) {
                return i as Tok;
            }
            v.push(s.to_string());
            (v.len() - 1) as Tok
        })
    }
    fn decode(t: Tok) -> String {
        VOCAB.with(|v| v.borrow()[t as usize].clone())
    }

    fn check(tt: &TokenText) {
        let fresh = TokenText::new(&tt.text, &tt.tokens[..tt.n_fixed], &Toy);
        assert_eq!(tt.tokens, fresh.tokens, "tokens differ from a fresh tokenization of {:?}", tt.text);
        assert_eq!(tt.offsets, fresh.offsets);
    }

    #[test]
    fn insertion_moves_suffix() {
        let old = TokenText::new("def f(x):\n    return x\n\nprint(f(1))\n", &[999], &Toy);
        let e = TextEdit::new(21, 22, "x + 1");
        let p = plan(&old, &[e], &Toy).unwrap();
        check(&p.new);
        assert_eq!(p.new.text, "def f(x):\n    return x + 1\n\nprint(f(1))\n");
        assert_eq!(p.sites.len(), 1);
        assert!(p.new_tokens() <= 4, "{:?}", p.sites);
        let last = p.kept.last().unwrap();
        assert_eq!(last.delta(), 3);
        assert_eq!(p.kept[0].old_start, 0);
        assert!(p.unchanged_prefix >= 1);
    }

    #[test]
    fn merges_across_edges() {
        let old = TokenText::new("alpha beta\n", &[], &Toy);
        // Typing inside a word changes the token around it; the two tokens stranded after it are re-encoded
        // with it rather than kept (see MIN_KEPT_RUN).
        let p = plan(&old, &[TextEdit::new(3, 3, "XX")], &Toy).unwrap();
        check(&p.new);
        assert_eq!(p.new.text, "alpXXha beta\n");
        assert_eq!(p.removed, vec![(0, 3)]);
        assert!(p.kept.is_empty());
    }

    #[test]
    fn sequential_edits_compose() {
        let old = TokenText::new("a b c\nd e f\ng h i\n", &[], &Toy);
        let edits = vec![TextEdit::new(0, 1, "zz"), TextEdit::new(14, 15, ""), TextEdit::new(8, 8, "\nnew line")];
        let p = plan(&old, &edits, &Toy).unwrap();
        check(&p.new);
        assert_eq!(p.new.text, "zz b c\nd\nnew line e f\ngh i\n");
        assert!(p.sites.len() >= 2);
    }

    #[test]
    fn rejects_bad_edits() {
        let old = TokenText::new("héllo\n", &[], &Toy);
        assert!(matches!(plan(&old, &[TextEdit::new(2, 2, "x")], &Toy), Err(EngineError::InvalidEdit(_))));
        assert!(matches!(plan(&old, &[TextEdit::new(5, 99, "x")], &Toy), Err(EngineError::InvalidEdit(_))));
        assert!(matches!(plan(&old, &[TextEdit::new(4, 3, "x")], &Toy), Err(EngineError::InvalidEdit(_))));
    }

    #[test]
    fn random_edits_match_fresh_tokenization() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let words = ["foo", " bar", "\n", "  ", "(", ")", "x1", " = ", ":", "\n    ", "é", ""];
        let mut tt = TokenText::new("start\n", &[], &Toy);
        for _ in 0..500 {
            let len = tt.text.len();
            let mut s = rng.gen_range(0..=len);
            while !tt.text.is_char_boundary(s) {
                s -= 1;
            }
            let mut e = (s + rng.gen_range(0..6)).min(len);
            while !tt.text.is_char_boundary(e) {
                e += 1;
            }
            let ins: String = (0..rng.gen_range(0..3)).map(|_| words[rng.gen_range(0..words.len())]).collect();
            let p = plan(&tt, &[TextEdit::new(s, e, ins)], &Toy).unwrap();
            check(&p.new);
            // The plan must account for every old and new token exactly once.
            let kept: usize = p.kept.iter().map(|r| r.len).sum();
            let removed: usize = p.removed.iter().map(|(a, b)| b - a).sum();
            assert_eq!(kept + removed, tt.len());
            assert_eq!(kept + p.new_tokens(), p.new.len());
            tt = p.new;
        }
    }

    #[test]
    fn correction_turns_the_first_cached_tokens_after_each_change_into_new_ones() {
        let old = TokenText::new("a b c d e f g h i j k l m n o p\n", &[], &Toy);
        // Rewrite one word: a one-token site, the rest kept in place (delta 0) but stale.
        let mut p = plan(&old, &[TextEdit::new(2, 3, "XX")], &Toy).unwrap();
        assert_eq!(p.sites, vec![NewRun { start: 1, len: 1 }]);
        assert_eq!(p.correct_after_changes(|_, _| 3, old.len()), 3);
        check(&p.new);
        assert_eq!(p.sites, vec![NewRun { start: 1, len: 4 }]);
        assert_eq!(p.removed, vec![(1, 5)]);
        assert_eq!(p.kept.iter().map(|r| r.len).sum::<usize>() + p.new_tokens(), p.new.len());
        // A deletion has no site of its own; the correction makes one right after the gap.
        let mut d = plan(&old, &[TextEdit::new(3, 5, "")], &Toy).unwrap();
        check(&d.new);
        let sites_before = d.new_tokens();
        assert_eq!(d.correct_after_changes(|_, _| 2, old.len()), 2);
        assert_eq!(d.new_tokens(), sites_before + 2);
        assert_eq!(d.kept.iter().map(|r| r.len).sum::<usize>() + d.new_tokens(), d.new.len());
        let removed: usize = d.removed.iter().map(|(a, b)| b - a).sum();
        assert_eq!(d.kept.iter().map(|r| r.len).sum::<usize>() + removed, old.len());
        // Nothing to correct after an edit at the end, and k = 0 changes nothing.
        let mut e = plan(&old, &[TextEdit::new(old.text.len(), old.text.len(), "q r\n")], &Toy).unwrap();
        assert_eq!(e.correct_after_changes(|_, _| 0, old.len()), 0);
        assert_eq!(e.correct_after_changes(|_, _| 8, old.len()), 0);
    }

    #[test]
    fn each_change_gets_the_window_its_own_size_earns() {
        let old = TokenText::new("a b c d e f g h i j k l m n o p q r s t u v w x y z\n", &[], &Toy);
        // One update: a long insertion after "b" and a one-word rewrite of "t" (the marker's small move, say).
        let long = " w1 w2 w3 w4 w5 w6 w7 w8";
        let mut p = plan(&old, &[TextEdit::new(3, 3, long), TextEdit::new(19 + long.len(), 20 + long.len(), "T")], &Toy).unwrap();
        check(&p.new);
        let mut seen = Vec::new();
        let turned = p.correct_after_changes(
            |inserted, removed| {
                seen.push((inserted, removed));
                if inserted.max(removed) >= 4 { 3 } else { 0 }
            },
            old.len(),
        );
        assert_eq!(turned, 3, "only the long insertion's window: {seen:?}");
        assert!(seen.iter().any(|&(i, _)| i >= 8) && seen.iter().any(|&(i, r)| i.max(r) < 4), "{seen:?}");
        // A removal is measured in removed tokens.
        let mut d = plan(&old, &[TextEdit::new(2, 18, "")], &Toy).unwrap();
        let mut removed = Vec::new();
        d.correct_after_changes(|i, r| { removed.push((i, r)); 0 }, old.len());
        assert!(removed.iter().any(|&(_, r)| r >= 7), "{removed:?}");
    }

    #[test]
    fn line_helpers() {
        let t = "l0\nl1\nl2\nl3\n";
        assert_eq!(line_start(t, 7, 0), 6);
        assert_eq!(line_start(t, 7, 1), 3);
        assert_eq!(line_start(t, 7, 5), 0);
        assert_eq!(line_start("\nabc", 2, 0), 1);
        assert_eq!(line_start("\nabc", 2, 1), 0);
        assert_eq!(line_end(t, 7, 0), 9);
        assert_eq!(line_end(t, 7, 1), 12);
        assert_eq!(line_end(t, 7, 9), 12);
    }
}
