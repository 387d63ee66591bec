//! Streaming line framing over the bytes the relay forwards.
//!
//! The framer never sees the forwarding path: the relay forwards the bytes it
//! read and then hands the same slice to [`LineFramer::push`], which finds the
//! newline-delimited lines in it. A line that is complete inside the slice is
//! handed out borrowed; only an unfinished line at the end of a read is copied
//! into the per-connection tail, so memory per connection stays bounded by
//! [`MAX_LINE_BYTES`] whatever a peer sends.

/// Longest line (without its newline) that is handed to the parser, in bytes.
///
/// Stratum lines are a few hundred bytes; a `mining.notify` with a full
/// merkle path is about 1–2 KiB. Anything longer is still relayed in full, but
/// the framer stops buffering it and reports it as [`Frame::Overlong`].
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Tail capacity kept after a split line completes, in bytes.
///
/// Small split lines (submits, responses) reuse the allocation; a larger one
/// (a split notify) gives its buffer back, so idle connections stay small.
const TAIL_KEEP_BYTES: usize = 512;

/// Most bytes of one line the tail may hold: the limit plus a possible `\r`.
const MAX_RAW_LINE_BYTES: usize = MAX_LINE_BYTES + 1;

/// One framed unit, borrowed from the read buffer or the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its `\n` (and without a `\r` before it); never empty.
    Line(&'a [u8]),
    /// A line longer than [`MAX_LINE_BYTES`]; its total length in bytes (without `\n`).
    Overlong(usize),
}

/// Splits a byte stream into lines, across reads of any size.
#[derive(Debug, Default)]
pub struct LineFramer {
    /// Bytes of the current, unfinished line (empty when skipping).
    tail: Vec<u8>,
    /// An over-long line being skipped: its length so far, shifted left by
    /// one, with the low bit set if its last byte was `\r` (it may be the
    /// line's CR). 0 when not skipping (a skipped line is never empty).
    /// One word instead of two keeps every connection's framers small.
    skipped: u64,
}

impl LineFramer {
    /// Creates a framer with no buffered bytes.
    pub const fn new() -> Self {
        LineFramer {
            tail: Vec::new(),
            skipped: 0,
        }
    }

    /// Bytes currently held for an unfinished line.
    pub fn buffered_bytes(&self) -> usize {
        self.tail.len()
    }

    /// Heap capacity held by the framer, in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.tail.capacity()
    }

    /// Feeds the next bytes of the stream and calls `on_frame` for every line
    /// completed by them, in order. Empty lines are skipped.
    pub fn push(&mut self, mut chunk: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while let Some(pos) = memchr_newline(chunk) {
            let head = &chunk[..pos];
            chunk = &chunk[pos + 1..];
            if self.skipped != 0 {
                let ends_cr = head.last().map_or(self.skipped & 1 == 1, |&b| b == b'\r');
                let total = (self.skipped >> 1) as usize + head.len();
                self.skipped = 0;
                on_frame(Frame::Overlong(total - usize::from(ends_cr)));
            } else if self.tail.is_empty() {
                emit(head, &mut on_frame);
            } else if self.tail.len() + head.len() > MAX_RAW_LINE_BYTES {
                let ends_cr = head.last().or(self.tail.last()) == Some(&b'\r');
                let total = self.tail.len() + head.len();
                self.release_tail();
                on_frame(Frame::Overlong(total - usize::from(ends_cr)));
            } else {
                self.tail.extend_from_slice(head);
                emit(&self.tail, &mut on_frame);
                self.release_tail();
            }
        }
        if chunk.is_empty() {
            return;
        }
        let ends_cr = chunk.last() == Some(&b'\r');
        if self.skipped != 0 {
            self.skip((self.skipped >> 1) as usize + chunk.len(), ends_cr);
        } else if self.tail.len() + chunk.len() > MAX_RAW_LINE_BYTES {
            self.skip(self.tail.len() + chunk.len(), ends_cr);
            self.tail = Vec::new();
        } else {
            self.tail.extend_from_slice(chunk);
        }
    }

    /// Records that `bytes` of an over-long line were skipped so far.
    fn skip(&mut self, bytes: usize, ends_cr: bool) {
        self.skipped = ((bytes as u64) << 1) | u64::from(ends_cr);
    }

    /// Empties the tail, keeping its allocation only when it is small.
    fn release_tail(&mut self) {
        if self.tail.capacity() > TAIL_KEEP_BYTES {
            self.tail = Vec::new();
        } else {
            self.tail.clear();
        }
    }
}

/// Emits `line` without a trailing `\r`, unless it is empty or over-long.
fn emit(line: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_BYTES {
        on_frame(Frame::Overlong(line.len()));
    } else if !line.is_empty() {
        on_frame(Frame::Line(line));
    }
}

/// Position of the first `\n` in `bytes` (SIMD).
#[inline]
fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<String> {
        let mut framer = LineFramer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, |f| {
                out.push(match f {
                    Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                    Frame::Overlong(n) => format!("<overlong {n}>"),
                })
            });
        }
        out
    }

    #[test]
    fn splits_lines_across_reads_and_within_one_read() {
        assert_eq!(frames(&[b"a\nb", b"c\n\nd\r\n", b"e"]), ["a", "bc", "d"]);
    }

    #[test]
    fn crlf_and_empty_lines() {
        assert_eq!(frames(&[b"\r\n\n x \r\n"]), [" x "]);
        assert_eq!(frames(&[b"ab\r", b"\ncd\n"]), ["ab", "cd"]);
    }

    #[test]
    fn overlong_line_is_skipped_and_framing_resynchronises() {
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let mut input = long.clone();
        input.extend_from_slice(b"\nok\n");
        let whole = frames(&[&input]);
        assert_eq!(
            whole,
            [format!("<overlong {}>", MAX_LINE_BYTES + 10), "ok".into()]
        );
        let pieces: Vec<&[u8]> = input.chunks(1000).collect();
        assert_eq!(frames(&pieces), whole);
    }

    #[test]
    fn line_of_exactly_the_limit_is_parsed() {
        let mut input = vec![b'y'; MAX_LINE_BYTES];
        input.extend_from_slice(b"\r\n");
        let pieces: Vec<&[u8]> = input.chunks(7).collect();
        let out = frames(&pieces);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
    }

    #[test]
    fn memory_stays_bounded_for_endless_line() {
        let mut framer = LineFramer::new();
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..160 {
            framer.push(&chunk, |_| panic!("no line expected"));
            assert!(framer.capacity_bytes() <= 2 * MAX_LINE_BYTES + 2);
        }
        assert_eq!(framer.buffered_bytes(), 0);
    }

    #[test]
    fn split_small_line_reuses_tail_and_large_one_releases_it() {
        let mut framer = LineFramer::new();
        framer.push(b"{\"id\":1", |_| {});
        framer.push(b"}\n", |_| {});
        assert!(framer.capacity_bytes() > 0 && framer.capacity_bytes() <= TAIL_KEEP_BYTES);
        let big = vec![b'n'; 4000];
        framer.push(&big, |_| {});
        framer.push(b"\n", |_| {});
        assert_eq!(framer.capacity_bytes(), 0);
    }
}
