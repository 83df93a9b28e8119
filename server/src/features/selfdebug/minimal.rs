//! A fix cut down to the changes the tests need.
//!
//! A model asked to fix one bug often changes more than the bug: it "improves" a loop bound, rewrites a condition
//! it did not need to touch. When the tests are thin, such an extra change can pass them and still be wrong (HumanEval
//! 59: a fix that also stops the search at sqrt(n) passes both examples and fails on 15). The user's code was right
//! everywhere but the bug, so every changed block the tests do not depend on goes back to what the user wrote: the
//! fix offered is the smallest one (block by block) that still passes everything the candidate passed.
//!
//! Blocks are runs of changed lines (a line diff of the function before and after; a run that replaces k lines with
//! k lines is k blocks of one line); each is put back in turn and kept back when the tests still pass.

use std::ops::Range;

/// One piece of the line diff: lines the same in both, or a block of old lines replaced by new ones.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Old lines that are in the candidate too (up to trailing spaces): the user's are kept.
    Same(Range<usize>),
    Changed { old: Range<usize>, new: Range<usize> },
}

/// The candidate `new` against the `old` function, as pieces of a line diff (longest common subsequence of lines).
/// Layout is not a change: lines compare without trailing spaces, and blank lines are not diffed but carried by the
/// line before them, so the user's layout is kept wherever their lines are.
pub struct LineDiff<'a> {
    /// Blank lines before the first line of the old function.
    lead: Vec<&'a str>,
    old: Vec<Line<'a>>,
    new: Vec<Line<'a>>,
    pieces: Vec<Piece>,
}

/// A line that is not blank, with the blank lines after it.
struct Line<'a> {
    text: &'a str,
    blanks: Vec<&'a str>,
}

/// Lines of one function, at most: a fix is one function, rarely hundreds of lines.
const MAX_LINES: usize = 400;

fn lines_of(text: &str) -> (Vec<&str>, Vec<Line<'_>>) {
    let mut lead = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    for l in text.split('\n') {
        match lines.last_mut() {
            _ if !l.trim().is_empty() => lines.push(Line { text: l, blanks: Vec::new() }),
            Some(last) => last.blanks.push(l),
            None => lead.push(l),
        }
    }
    (lead, lines)
}

impl<'a> LineDiff<'a> {
    /// None when either side is too long to diff cheaply.
    pub fn new(old: &'a str, new: &'a str) -> Option<LineDiff<'a>> {
        let (lead, old) = lines_of(old);
        let (_, new) = lines_of(new);
        if old.len() > MAX_LINES || new.len() > MAX_LINES {
            return None;
        }
        let same = |i: usize, j: usize| old[i].text.trim_end() == new[j].text.trim_end();
        let (n, m) = (old.len(), new.len());
        // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
        let mut lcs = vec![0u16; (n + 1) * (m + 1)];
        let at = |i: usize, j: usize| i * (m + 1) + j;
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[at(i, j)] = if same(i, j) { lcs[at(i + 1, j + 1)] + 1 } else { lcs[at(i + 1, j)].max(lcs[at(i, j + 1)]) };
            }
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let (mut i, mut j) = (0, 0);
        let mut push = |piece: Piece| match (pieces.last_mut(), piece) {
            (Some(Piece::Same(r)), Piece::Same(s)) if r.end == s.start => r.end = s.end,
            (Some(Piece::Changed { old, new }), Piece::Changed { old: o, new: w }) if old.end == o.start && new.end == w.start => {
                old.end = o.end;
                new.end = w.end;
            }
            (_, piece) => pieces.push(piece),
        };
        while i < n || j < m {
            if i < n && j < m && same(i, j) {
                push(Piece::Same(i..i + 1));
                i += 1;
                j += 1;
            } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
                push(Piece::Changed { old: i..i, new: j..j + 1 });
                j += 1;
            } else {
                push(Piece::Changed { old: i..i + 1, new: j..j });
                i += 1;
            }
        }
        // A block that replaces k lines with k others is k edited lines, each its own block: a model's extra change is
        // often on the line next to the bug.
        let pieces = pieces
            .into_iter()
            .flat_map(|p| match p {
                Piece::Changed { old, new } if old.len() == new.len() && old.len() > 1 => {
                    old.zip(new).map(|(o, w)| Piece::Changed { old: o..o + 1, new: w..w + 1 }).collect::<Vec<_>>()
                }
                p => vec![p],
            })
            .collect();
        Some(LineDiff { lead, old, new, pieces })
    }

    /// How many changed blocks the candidate has.
    pub fn blocks(&self) -> usize {
        self.pieces.iter().filter(|p| matches!(p, Piece::Changed { .. })).count()
    }

    /// The candidate with the blocks whose `reverted[k]` is true put back to the old lines.
    pub fn with_reverted(&self, reverted: &[bool]) -> String {
        let mut lines: Vec<&str> = self.lead.clone();
        let mut emit = |from: &[Line<'a>]| {
            for l in from {
                lines.push(l.text);
                lines.extend_from_slice(&l.blanks);
            }
        };
        let mut k = 0;
        for piece in &self.pieces {
            match piece {
                Piece::Same(r) => emit(&self.old[r.clone()]),
                Piece::Changed { old, new } => {
                    if reverted.get(k).copied().unwrap_or(false) {
                        emit(&self.old[old.clone()]);
                    } else {
                        emit(&self.new[new.clone()]);
                    }
                    k += 1;
                }
            }
        }
        lines.join("\n")
    }
}

/// Blocks tried at most: a candidate with more is a rewrite, and each block tried costs a test run.
pub const MAX_BLOCKS: usize = 8;

/// The smallest version of `candidate` (block by block, against `original`) that `passes` accepts, how many blocks
/// were put back, and how many the candidate changed. `passes` is asked only about versions that differ from both
/// the original and the candidate; the candidate itself is assumed to pass. An error from `passes` stops the search
/// and is returned.
pub fn minimise<E>(original: &str, candidate: &str, mut passes: impl FnMut(&str) -> Result<bool, E>) -> Result<(String, usize, usize), E> {
    let Some(diff) = LineDiff::new(original, candidate) else { return Ok((candidate.to_owned(), 0, 0)) };
    let blocks = diff.blocks();
    if blocks < 2 || blocks > MAX_BLOCKS {
        return Ok((candidate.to_owned(), 0, blocks));
    }
    let mut reverted = vec![false; blocks];
    let mut put_back = 0;
    for k in 0..blocks {
        // Putting back the last changed block would give the original, which fails.
        if put_back + 1 == blocks {
            break;
        }
        reverted[k] = true;
        if passes(&diff.with_reverted(&reverted))? {
            put_back += 1;
        } else {
            reverted[k] = false;
        }
    }
    // Nothing put back: the candidate exactly as written (the diff's text keeps the user's layout).
    let fix = if put_back == 0 { candidate.to_owned() } else { diff.with_reverted(&reverted) };
    Ok((fix, put_back, blocks))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = "def f(n):\n    best = 1\n    for j in range(2, n + 1):\n        if n % j == 0 or is_prime(j):\n            best = j\n    return best";
    const CANDIDATE: &str = "def f(n):\n    best = 1\n    for j in range(2, int(n**0.5) + 1):\n        if n % j == 0 and is_prime(j):\n            best = j\n    return best";

    #[test]
    fn the_diff_finds_each_changed_block_and_puts_back_exactly_the_ones_asked() {
        let diff = LineDiff::new(ORIGINAL, CANDIDATE).unwrap();
        assert_eq!(diff.blocks(), 2);
        assert_eq!(diff.with_reverted(&[false, false]), CANDIDATE);
        assert_eq!(diff.with_reverted(&[true, true]), ORIGINAL);
        assert_eq!(diff.with_reverted(&[true, false]), ORIGINAL.replace(" or ", " and "));
        // Inserted and deleted lines are blocks too.
        let grown = CANDIDATE.replace("    best = 1\n", "    if n < 2:\n        return n\n    best = 1\n").replace("\n    return best", "\n    return max(best, 1)");
        let diff = LineDiff::new(ORIGINAL, &grown).unwrap();
        assert_eq!(diff.blocks(), 4);
        assert_eq!(diff.with_reverted(&[true; 4]), ORIGINAL);
        assert_eq!(diff.with_reverted(&[false; 4]), grown);
        // Trailing spaces and blank lines are layout: no block, and the user's layout is what is kept.
        let relaid = CANDIDATE.replace("    best = 1\n", "    best = 1   \n\n");
        let diff = LineDiff::new(ORIGINAL, &relaid).unwrap();
        assert_eq!(diff.blocks(), 2);
        assert_eq!(diff.with_reverted(&[true, false]), ORIGINAL.replace(" or ", " and "));
        assert_eq!(diff.with_reverted(&[false, false]), CANDIDATE);
        // A blank line inside the candidate's own new lines stays (it may be inside a string).
        let spaced = CANDIDATE.replace("    return best", "    s = '''a\n\nb'''\n    return best");
        let diff = LineDiff::new(ORIGINAL, &spaced).unwrap();
        assert_eq!(diff.blocks(), 3);
        assert_eq!(diff.with_reverted(&[false; 3]), spaced);
        assert_eq!(diff.with_reverted(&[true; 3]), ORIGINAL);
    }

    #[test]
    fn only_the_blocks_the_tests_need_are_kept() {
        // "The tests": the condition must use `and`; the loop bound is free.
        let mut asked = Vec::new();
        let (fix, put_back, blocks) = minimise::<()>(ORIGINAL, CANDIDATE, |text| {
            asked.push(text.to_owned());
            Ok(text.contains(" and "))
        })
        .unwrap();
        assert_eq!((put_back, blocks), (1, 2));
        assert_eq!(fix, ORIGINAL.replace(" or ", " and "));
        assert_eq!(asked, vec![ORIGINAL.replace(" or ", " and ")]);
        // When every block is needed, the candidate stays whole.
        let (fix, put_back, _) = minimise::<()>(ORIGINAL, CANDIDATE, |text| Ok(text.contains(" and ") && text.contains("**"))).unwrap();
        assert_eq!((fix.as_str(), put_back), (CANDIDATE, 0));
        // One block is the whole fix: nothing to try.
        let one = ORIGINAL.replace(" or ", " and ");
        let (fix, _, _) = minimise::<()>(ORIGINAL, &one, |_| panic!("nothing to ask")).unwrap();
        assert_eq!(fix, one);
        // An error stops the search.
        assert_eq!(minimise(ORIGINAL, CANDIDATE, |_| Err("cancelled")), Err("cancelled"));
    }
}
