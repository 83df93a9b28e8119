//! A document's tree, kept off the message path: every text change is an `InputEdit` on the last tree at once
//! (cheap), and the re-parse runs on the background parse thread. Readers ask for the tree of one version and
//! get exactly that version's tree: the parse thread's, or, when it skipped that version because the document
//! moved on (or is slow to get to it), one they parse themselves from the same snapshot.
//!
//! Why: tree-sitter's error recovery on an invalid line can re-examine much of a large file (hundreds of
//! milliseconds on a 10,000-line Rust file); done inside `didChange`, under the store's lock, that stalled every
//! message behind it.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ropey::Rope;
use tree_sitter::{InputEdit, Parser, Tree};

use super::parse::parse_rope;
use super::Language;

/// How long a reader waits for the parse thread before it parses its version itself. Short: the thread may be
/// busy with other documents, and a reader's own parse costs the same.
const READER_PATIENCE: Duration = Duration::from_millis(500);

/// The tree of one version of a document.
#[derive(Debug)]
pub struct Parsed {
    pub version: i32,
    pub language: Language,
    pub tree: Tree,
    /// Wall time of the parse that produced this tree, in milliseconds.
    pub parse_ms: f64,
}

/// Shared by a document, the parse thread and readers: the newest tree parsed so far.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    latest: Option<Arc<Parsed>>,
    /// The document was closed, lost its tree (grew past the parse limit) or was replaced: nothing more comes.
    closed: bool,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn latest_version(&self) -> Option<i32> {
        self.lock().latest.as_ref().map(|p| p.version)
    }

    /// Keeps `parsed` when it is newer than what the slot has, and wakes the readers.
    fn publish(&self, parsed: Arc<Parsed>) {
        let mut state = self.lock();
        if state.latest.as_ref().map_or(true, |p| p.version < parsed.version) {
            state.latest = Some(parsed);
        }
        drop(state);
        self.ready.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Everything needed to produce the tree of one version: the text, the previous tree with every edit since applied
/// (so unchanged subtrees are reused), and where to publish it. Cheap to make: ropes and trees share structure.
pub struct TreeRequest {
    version: i32,
    language: Language,
    rope: Rope,
    old: Option<Tree>,
    slot: Arc<Slot>,
}

impl TreeRequest {
    pub fn version(&self) -> i32 {
        self.version
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// The tree of this request's version. Blocks (call it off the async runtime) until the parse thread has it,
    /// or parses it here when the thread skipped this version or does not get to it within `READER_PATIENCE`.
    pub fn wait(self) -> Arc<Parsed> {
        let deadline = Instant::now() + READER_PATIENCE;
        {
            let mut state = self.slot.lock();
            loop {
                match &state.latest {
                    Some(p) if p.version == self.version => return Arc::clone(p),
                    Some(p) if p.version > self.version => break,
                    _ if state.closed => break,
                    _ => {}
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = self.slot.ready.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
        let parsed = Arc::new(self.parse());
        self.slot.publish(Arc::clone(&parsed));
        parsed
    }

    fn parse(&self) -> Parsed {
        let mut parser = Parser::new();
        // The grammars are compiled in and checked by a unit test; a failure here is a build bug.
        parser.set_language(&self.language.grammar()).expect("grammar ABI matches the tree-sitter crate");
        let started = Instant::now();
        let tree = parse_rope(&mut parser, &self.rope, self.old.as_ref());
        Parsed { version: self.version, language: self.language, tree, parse_ms: started.elapsed().as_secs_f64() * 1e3 }
    }
}

/// The tree state a document keeps: the edited old tree, and the edits since the tree it came from.
pub struct IncrementalTree {
    language: Language,
    /// The newest tree this document has taken from the slot, with every later edit applied: the `old_tree` of
    /// the next parse. `None`: the next parse starts from scratch (a new document, a whole-text replacement).
    base: Option<Tree>,
    /// `base` is the tree of a version after this one (with `log` applied); a parse of a later version replaces it.
    base_after: i32,
    /// The edits applied to `base` since, with their version, to replay on a newer tree from the parse thread.
    log: Vec<(i32, InputEdit)>,
    slot: Arc<Slot>,
}

/// What `IncrementalTree::checkpoint` saves, to undo a `didChange` batch that failed half-way.
pub struct Checkpoint {
    base: Option<Tree>,
    base_after: i32,
    log_len: usize,
}

impl IncrementalTree {
    /// A tree for a new text at `version`; schedule it with `schedule`.
    pub fn new(language: Language, version: i32) -> IncrementalTree {
        IncrementalTree { language, base: None, base_after: version.saturating_sub(1), log: Vec::new(), slot: Arc::default() }
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// Takes the newest tree the parse thread finished, when it is newer than `base`: replaying the edits made
    /// since on it gives the next parse more to reuse. O(edits since) `Tree::edit` calls.
    fn absorb(&mut self) {
        let Some(parsed) = self.slot.lock().latest.clone() else { return };
        if parsed.version <= self.base_after {
            return;
        }
        let mut tree = parsed.tree.clone();
        for (_, edit) in self.log.iter().filter(|(v, _)| *v > parsed.version) {
            tree.edit(edit);
        }
        self.log.retain(|(v, _)| *v > parsed.version);
        self.base = Some(tree);
        self.base_after = parsed.version;
    }

    pub fn checkpoint(&mut self) -> Checkpoint {
        self.absorb();
        Checkpoint { base: self.base.clone(), base_after: self.base_after, log_len: self.log.len() }
    }

    pub fn rollback(&mut self, checkpoint: Checkpoint) {
        self.base = checkpoint.base;
        self.base_after = checkpoint.base_after;
        self.log.truncate(checkpoint.log_len);
    }

    /// Records one text change of the batch that will become `version`.
    pub fn edit(&mut self, version: i32, edit: InputEdit) {
        if let Some(base) = self.base.as_mut() {
            base.edit(&edit);
        }
        self.log.push((version, edit));
    }

    /// The whole text was replaced in the batch that will become `version`: the next parse starts from scratch,
    /// and only a tree of this version or later can become the base again (the log's older edits are dropped
    /// then, as on every absorb).
    pub fn replace_all(&mut self, version: i32) {
        self.base = None;
        self.base_after = version.saturating_sub(1);
    }

    /// The request for the tree of `rope` at `version` (the document's current text).
    pub fn request(&self, version: i32, rope: &Rope) -> TreeRequest {
        TreeRequest { version, language: self.language, rope: rope.clone(), old: self.base.clone(), slot: Arc::clone(&self.slot) }
    }

    /// Queues the parse of `rope` at `version` on the parse thread. Returns at once.
    pub fn schedule(&self, version: i32, rope: &Rope) {
        parse_thread().send_job(self.request(version, rope));
    }

    /// The newest tree parsed so far, of whatever version (`None` before the first parse finished).
    pub fn latest(&self) -> Option<Arc<Parsed>> {
        self.slot.lock().latest.clone()
    }

    /// The version of `latest`, if any.
    pub fn latest_version(&self) -> Option<i32> {
        self.slot.latest_version()
    }
}

impl Drop for IncrementalTree {
    fn drop(&mut self) {
        // Readers still holding a request stop waiting for a parse that will not come.
        self.slot.close();
    }
}

/// The one background thread that parses every document's pending version, newest first per document.
struct ParseThread {
    tx: Mutex<Sender<TreeRequest>>,
}

impl ParseThread {
    fn send_job(&self, job: TreeRequest) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::SendError(job)) = tx.send(job) {
            // Cannot happen (the thread catches panics and never ends), but a reader would still get its tree.
            tracing::error!("the parse thread is gone; version {} is parsed when read", job.version);
        }
    }
}

fn parse_thread() -> &'static ParseThread {
    static THREAD: OnceLock<ParseThread> = OnceLock::new();
    THREAD.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("pie-parse".into()).spawn(move || run_parse_thread(rx)).expect("spawning the parse thread");
        ParseThread { tx: Mutex::new(tx) }
    })
}

fn run_parse_thread(rx: Receiver<TreeRequest>) {
    let mut pending: VecDeque<TreeRequest> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        pending.extend(rx.try_iter());
        let Some(job) = pending.pop_front() else { continue };
        // Only the newest version of each document is worth parsing; a reader of a skipped one parses it itself.
        if pending.iter().any(|later| Arc::ptr_eq(&later.slot, &job.slot)) {
            continue;
        }
        {
            let state = job.slot.lock();
            if state.closed || state.latest.as_ref().is_some_and(|p| p.version >= job.version) {
                continue;
            }
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.parse())) {
            Ok(parsed) => job.slot.publish(Arc::new(parsed)),
            Err(_) => tracing::error!("parsing version {} panicked; readers parse it themselves", job.version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::{advance_point, ts_point_at};

    fn edit_rope(rope: &mut Rope, tree: &mut IncrementalTree, version: i32, start: usize, end: usize, text: &str) {
        let start_position = ts_point_at(rope, start);
        let removed = rope.byte_slice(start..end).to_string();
        tree.edit(
            version,
            InputEdit {
                start_byte: start,
                old_end_byte: end,
                new_end_byte: start + text.len(),
                start_position,
                old_end_position: advance_point(start_position, &removed),
                new_end_position: advance_point(start_position, text),
            },
        );
        let (s, e) = (rope.byte_to_char(start), rope.byte_to_char(end));
        rope.remove(s..e);
        rope.insert(s, text);
    }

    fn fresh(rope: &Rope) -> String {
        let mut parser = Parser::new();
        parser.set_language(&Language::Python.grammar()).unwrap();
        parse_rope(&mut parser, rope, None).root_node().to_sexp()
    }

    /// Every version's tree, whether it came from the thread or from the reader, is that version's fresh parse,
    /// also when versions were skipped and edits replayed onto an older tree.
    #[test]
    fn each_reader_gets_the_tree_of_its_version() {
        let mut rope = Rope::from_str("def f(x):\n    return x\n");
        let mut tree = IncrementalTree::new(Language::Python, 1);
        tree.schedule(1, &rope);
        let mut requests = vec![(tree.request(1, &rope), fresh(&rope))];
        let inserts = ["y = (", "1", ")", "\n", "def g(:\n", "    pass\n"];
        for (i, text) in inserts.iter().enumerate() {
            let version = 2 + i as i32;
            // Takes the thread's newest tree, as every batch does.
            let _ = tree.checkpoint();
            let at = rope.len_bytes();
            edit_rope(&mut rope, &mut tree, version, at, at, text);
            tree.schedule(version, &rope);
            requests.push((tree.request(version, &rope), fresh(&rope)));
        }
        for (request, expected) in requests {
            let version = request.version();
            let parsed = request.wait();
            assert_eq!(parsed.version, version);
            assert_eq!(parsed.tree.root_node().to_sexp(), expected, "version {version}");
        }
    }

    #[test]
    fn rollback_restores_the_base_and_log() {
        let mut rope = Rope::from_str("x = 1\n");
        let mut tree = IncrementalTree::new(Language::Python, 1);
        tree.request(1, &rope).wait();
        let checkpoint = tree.checkpoint();
        let mut scratch = rope.clone();
        edit_rope(&mut scratch, &mut tree, 2, 0, 0, "garbage (");
        tree.rollback(checkpoint);
        edit_rope(&mut rope, &mut tree, 2, 6, 6, "y = 2\n");
        assert_eq!(tree.request(2, &rope).wait().tree.root_node().to_sexp(), fresh(&rope));
    }

    #[test]
    fn closed_documents_release_their_readers() {
        let rope = Rope::from_str("x = 1\n");
        let tree = IncrementalTree::new(Language::Python, 3);
        let request = tree.request(3, &rope);
        drop(tree);
        let started = Instant::now();
        assert_eq!(request.wait().version, 3);
        assert!(started.elapsed() < READER_PATIENCE, "a closed document's reader parses at once");
    }
}
