//! Splits a byte stream into top-level JSON documents (`{...}` or `[...]`)
//! one after another, as `kubectl get --watch -o json` prints them, without
//! parsing them, so that one malformed document can be reported (with the
//! line it starts on) and skipped while the ones around it are kept.
//!
//! Text outside any document is reported as garbage. A document still open
//! at the end of the input (a missing brace or quote) is reported, and the
//! input after its first line is scanned again, so that documents swallowed
//! by it are recovered.

use std::io::BufRead;

/// One piece of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A balanced document starting on `line` (1-based).
    Document { line: usize, bytes: Vec<u8> },
    /// Text that is not inside a document, starting on `line`.
    Garbage { line: usize, text: String },
    /// A document opened on `line` and never closed.
    Unterminated { line: usize },
}

#[derive(Debug, Default)]
struct Scanner {
    line: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
    doc: Vec<u8>,
    doc_line: usize,
    garbage: Vec<u8>,
    garbage_line: usize,
    /// Buffers of documents already handled, given back
    /// ([`Splitter::recycle`]) to hold the next ones.
    spare: Vec<Vec<u8>>,
}

/// Spare buffers kept: enough for the documents of a read (a megabyte of
/// small documents), not unbounded.
const MAX_SPARE: usize = 4096;

impl Scanner {
    fn new(first_line: usize) -> Self {
        Self {
            line: first_line,
            ..Self::default()
        }
    }

    fn flush_garbage(&mut self, out: &mut Vec<Piece>) {
        let text = String::from_utf8_lossy(&self.garbage).trim().to_owned();
        if !text.is_empty() {
            out.push(Piece::Garbage {
                line: self.garbage_line,
                text,
            });
        }
        self.garbage.clear();
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        let mut i = 0;
        while i < bytes.len() {
            if self.depth > 0 {
                i = self.feed_document(bytes, i, out);
                continue;
            }
            let b = bytes[i];
            i += 1;
            match b {
                b'{' | b'[' => {
                    self.flush_garbage(out);
                    self.depth = 1;
                    self.doc.clear();
                    self.doc.push(b);
                    self.doc_line = self.line;
                }
                b'\n' => {
                    self.line += 1;
                    self.garbage.push(b);
                }
                _ => {
                    if self.garbage.iter().all(u8::is_ascii_whitespace) && !b.is_ascii_whitespace()
                    {
                        self.garbage_line = self.line;
                    }
                    self.garbage.push(b);
                }
            }
        }
    }

    /// Inside a document: scans `bytes` from `i` to the document's end or
    /// the end of `bytes`, copying what it scanned into the document in
    /// one piece, and returns where it stopped. Strings, most of a
    /// Kubernetes object's text, are skipped to their next quote,
    /// backslash or newline at once.
    fn feed_document(&mut self, bytes: &[u8], mut i: usize, out: &mut Vec<Piece>) -> usize {
        let start = i;
        let mut closed = false;
        while i < bytes.len() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    if bytes[i] == b'\n' {
                        self.line += 1;
                    }
                    i += 1;
                    continue;
                }
                let Some(k) = memchr::memchr3(b'"', b'\\', b'\n', &bytes[i..]) else {
                    i = bytes.len();
                    break;
                };
                i += k;
                match bytes[i] {
                    b'"' => self.in_string = false,
                    b'\\' => self.escape = true,
                    _ => self.line += 1,
                }
                i += 1;
                continue;
            }
            let b = bytes[i];
            i += 1;
            match b {
                b'"' => self.in_string = true,
                b'\n' => self.line += 1,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        closed = true;
                        break;
                    }
                }
                _ => {}
            }
        }
        self.doc.extend_from_slice(&bytes[start..i]);
        if closed {
            // The next document goes into a buffer given back, else one
            // about as long as this one: one allocation for it at most,
            // not one per doubling.
            let next = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(self.doc.len() + self.doc.len() / 2));
            out.push(Piece::Document {
                line: self.doc_line,
                bytes: std::mem::replace(&mut self.doc, next),
            });
        }
        i
    }

    /// End of input: returns pieces, rescanning an unterminated document.
    fn finish(mut self, out: &mut Vec<Piece>) {
        self.flush_garbage(out);
        if self.depth == 0 {
            return;
        }
        out.push(Piece::Unterminated {
            line: self.doc_line,
        });
        let doc = std::mem::take(&mut self.doc);
        let Some(nl) = doc.iter().position(|&b| b == b'\n') else {
            return;
        };
        let mut again = Scanner::new(self.doc_line + 1);
        again.feed(&doc[nl + 1..], out);
        again.finish(out);
    }
}

/// Iterates over the pieces of a reader, reading it in chunks.
pub struct Splitter<R> {
    reader: R,
    scanner: Option<Scanner>,
    ready: std::collections::VecDeque<Piece>,
}

impl<R: BufRead> Splitter<R> {
    /// Splits `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            scanner: Some(Scanner::new(1)),
            ready: Default::default(),
        }
    }
}

impl<R> Splitter<R> {
    /// Whether the next piece is ready without reading any more input.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Gives back the bytes of a [`Piece::Document`] once handled: a later
    /// document is read into them instead of a new allocation.
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        if let Some(scanner) = &mut self.scanner
            && scanner.spare.len() < MAX_SPARE
        {
            bytes.clear();
            scanner.spare.push(bytes);
        }
    }
}

impl<R: BufRead> Iterator for Splitter<R> {
    type Item = std::io::Result<Piece>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Some(Ok(p));
            }
            let scanner = self.scanner.as_mut()?;
            let mut out = Vec::new();
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.scanner = None;
                    return Some(Err(e));
                }
            };
            if buf.is_empty() {
                if let Some(s) = self.scanner.take() {
                    s.finish(&mut out);
                }
            } else {
                let n = buf.len();
                scanner.feed(buf, &mut out);
                self.reader.consume(n);
            }
            self.ready.extend(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<Piece> {
        Splitter::new(std::io::BufReader::with_capacity(7, text.as_bytes()))
            .map(|p| p.unwrap())
            .collect()
    }

    fn docs(pieces: &[Piece]) -> Vec<(usize, String)> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Document { line, bytes } => {
                    Some((*line, String::from_utf8(bytes.clone()).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn splits_concatenated_documents_with_lines() {
        let p = split("{\"a\": \"}{\"}\n{\n \"b\": [1, {\"c\": \"\\\"\"}]\n}\n[1]");
        assert_eq!(
            docs(&p),
            vec![
                (1, "{\"a\": \"}{\"}".to_string()),
                (2, "{\n \"b\": [1, {\"c\": \"\\\"\"}]\n}".to_string()),
                (5, "[1]".to_string())
            ]
        );
    }

    #[test]
    fn garbage_between_documents_is_reported_with_its_line() {
        let p = split("{}\nnot json\n{}");
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[1],
            Piece::Garbage {
                line: 2,
                text: "not json".into()
            }
        );
    }

    #[test]
    fn lines_count_inside_strings_and_after_escapes_at_any_chunk_size() {
        // A raw newline inside a string (invalid JSON, still a line), an
        // escaped backslash before a closing quote, and an escaped raw
        // newline: the next documents keep their lines.
        let text = "{\"a\": \"x\ny\"}\n[\"\\\\\", {\"b\": \"\\\n\"}]\n\n  {\"c\": \"]}\"}\n";
        let want = vec![
            (1, "{\"a\": \"x\ny\"}".to_string()),
            (3, "[\"\\\\\", {\"b\": \"\\\n\"}]".to_string()),
            (6, "{\"c\": \"]}\"}".to_string()),
        ];
        for chunk in [1, 2, 3, 5, 64] {
            let p: Vec<Piece> =
                Splitter::new(std::io::BufReader::with_capacity(chunk, text.as_bytes()))
                    .map(|p| p.unwrap())
                    .collect();
            assert_eq!(docs(&p), want, "chunks of {chunk}");
            assert_eq!(p.len(), 3, "chunks of {chunk}: {p:?}");
        }
    }

    #[test]
    fn recycled_buffers_hold_later_documents_whole() {
        let text = "{\"a\": 1}\n{\"bb\": [1, 2, 3, 4, 5, 6, 7, 8, 9]}\n[]\n{\"c\": \"x\"}\n";
        let mut splitter = Splitter::new(std::io::BufReader::with_capacity(4, text.as_bytes()));
        let mut got = Vec::new();
        let mut buffers = Vec::new();
        while let Some(piece) = splitter.next() {
            let Piece::Document { line, bytes } = piece.unwrap() else {
                panic!("only documents here");
            };
            got.push((line, String::from_utf8(bytes.clone()).unwrap()));
            buffers.push(bytes.as_ptr());
            splitter.recycle(bytes);
        }
        // The first document's buffer, given back, holds the third (the
        // second was being read when the first was given back).
        assert_eq!(buffers[2], buffers[0]);
        assert_eq!(
            got,
            vec![
                (1, "{\"a\": 1}".to_string()),
                (2, "{\"bb\": [1, 2, 3, 4, 5, 6, 7, 8, 9]}".to_string()),
                (3, "[]".to_string()),
                (4, "{\"c\": \"x\"}".to_string()),
            ]
        );
    }

    #[test]
    fn unterminated_document_does_not_swallow_the_next_ones() {
        let p = split("{\n  \"a\": \"oops\n}\n{\"b\": 1}\n{\"c\": 2}\n");
        assert!(p.contains(&Piece::Unterminated { line: 1 }), "{p:?}");
        let d = docs(&p);
        assert!(d.iter().any(|(_, t)| t == "{\"b\": 1}"), "{p:?}");
        assert!(d.iter().any(|(l, t)| *l == 5 && t == "{\"c\": 2}"), "{p:?}");
    }
}
