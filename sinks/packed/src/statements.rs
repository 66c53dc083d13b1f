//! Packed statements (`connection.execute-batch-packed`, since 0.2.4): the
//! statements of one transaction as one buffer, in the framing of layout 2
//! (`wit/README.md`, "Packed statements"). A sink writes them with
//! [`StatementsWriter`]; the host reads them with [`decode_statements`],
//! binding each text and bytes parameter as a slice of the buffer instead
//! of lifting a `string` per value out of the guest.
//!
//! - a header of two `u32`s: the number of statements, the length of the
//!   records' bytes;
//! - the records, for each statement: its SQL (a string), the number of
//!   parameters (`u32`), then each parameter: a case byte in the order of
//!   the WIT `value` (0 `null`, 1 `int`, 2 `uint`, 3 `float`, 4 `text`,
//!   5 `bytes`, 6 `timestamp`) and its payload: `i64`, `u64`, the `f64`'s
//!   bits as `u64`, a string, a `u32` length and the bytes themselves, a
//!   timestamp (`i64` seconds, `u32` nanoseconds);
//! - one block of UTF-8 text, holding every string: a string in the
//!   records is the `u32` end of its bytes in the block, its start the
//!   previous string's end.
//!
//! Integers are little-endian of fixed width.

use crate::Timestamp;
use crate::v2::{Fault, Reader};

/// A statement parameter, borrowing its text and bytes (the WIT `value`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    Uint(u64),
    /// Floating point.
    Float(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Bytes(&'a [u8]),
    /// A UTC date and time.
    Timestamp(Timestamp),
}

/// A statement read from packed statements: its SQL and parameters, borrowed
/// from the buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedStatement<'a> {
    /// SQL text with placeholders.
    pub sql: &'a str,
    /// One value per placeholder.
    pub params: Vec<Param<'a>>,
}

/// Statements that do not fit the layout: more than `u32::MAX` statements,
/// parameters, bytes of records or of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the statements pass 4 GiB (or 2^32 values), which packed statements cannot hold",
        )
    }
}

impl std::error::Error for TooLarge {}

/// A buffer that is not packed statements (cut short, a bad case byte,
/// invalid UTF-8, a string out of place, bytes left over), with the byte
/// offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementsError {
    /// What is wrong and where.
    pub detail: String,
}

impl std::fmt::Display for StatementsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not packed statements: {}", self.detail)
    }
}

impl std::error::Error for StatementsError {}

/// Writes statements into one buffer ([`StatementsWriter::finish`]).
#[derive(Debug)]
pub struct StatementsWriter {
    /// The header's room, then the records.
    records: Vec<u8>,
    text: String,
    count: u64,
    too_large: bool,
}

impl Default for StatementsWriter {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

/// The bytes of the header.
const HEADER: usize = 8;

impl StatementsWriter {
    /// An empty writer with room for `records` bytes of records and `text`
    /// bytes of text.
    #[must_use]
    pub fn with_capacity(records: usize, text: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER + records + text);
        buf.extend_from_slice(&[0; HEADER]);
        Self {
            records: buf,
            text: String::with_capacity(text),
            count: 0,
            too_large: false,
        }
    }

    fn u32(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or_else(|_| {
            self.too_large = true;
            0
        });
        self.records.extend_from_slice(&n.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.text.push_str(s);
        self.u32(self.text.len());
    }

    /// Adds a statement with its parameters.
    pub fn statement<'p>(&mut self, sql: &str, params: impl IntoIterator<Item = Param<'p>>) {
        self.count += 1;
        self.str(sql);
        let count_at = self.records.len();
        self.records.extend_from_slice(&[0; 4]);
        let mut n = 0usize;
        for p in params {
            n += 1;
            self.param(p);
        }
        let n = u32::try_from(n).unwrap_or_else(|_| {
            self.too_large = true;
            0
        });
        self.records[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
    }

    #[inline]
    fn param(&mut self, p: Param<'_>) {
        match p {
            Param::Null => self.records.push(0),
            Param::Int(i) => {
                self.records.push(1);
                self.records.extend_from_slice(&i.to_le_bytes());
            }
            Param::Uint(u) => {
                self.records.push(2);
                self.records.extend_from_slice(&u.to_le_bytes());
            }
            Param::Float(f) => {
                self.records.push(3);
                self.records.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Param::Text(s) => {
                self.records.push(4);
                self.str(s);
            }
            Param::Bytes(b) => {
                self.records.push(5);
                self.u32(b.len());
                self.records.extend_from_slice(b);
            }
            Param::Timestamp(t) => {
                self.records.push(6);
                self.records.extend_from_slice(&t.seconds.to_le_bytes());
                self.records.extend_from_slice(&t.nanos.to_le_bytes());
            }
        }
    }

    /// The buffer `execute-batch-packed` takes.
    pub fn finish(mut self) -> Result<Vec<u8>, TooLarge> {
        let count = u32::try_from(self.count).map_err(|_| TooLarge)?;
        let records = u32::try_from(self.records.len() - HEADER).map_err(|_| TooLarge)?;
        if self.too_large || u32::try_from(self.text.len()).is_err() {
            return Err(TooLarge);
        }
        self.records[..4].copy_from_slice(&count.to_le_bytes());
        self.records[4..HEADER].copy_from_slice(&records.to_le_bytes());
        self.records.extend_from_slice(self.text.as_bytes());
        Ok(self.records)
    }
}

/// The fewest bytes of the records a statement takes (its SQL's end, its
/// count of parameters).
const SMALLEST_STATEMENT: usize = 8;

/// Reads packed statements, borrowing their SQL and their text and bytes
/// parameters from `bytes`. Records or text left after the last statement
/// are an error.
pub fn decode_statements(bytes: &[u8]) -> Result<Vec<PackedStatement<'_>>, StatementsError> {
    let (mut reader, count) = Reader::new(bytes, "packed statements")
        .map_err(|e| StatementsError { detail: e.detail })?;
    let most = reader.rest() / SMALLEST_STATEMENT;
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(usize::MAX).min(most));
    for i in 0..count {
        let at = reader.at();
        let st = statement(&mut reader).map_err(|fault| StatementsError {
            detail: format!(
                "statement {} (from byte {at}), at byte {}: {fault}",
                i + 1,
                reader.at()
            ),
        })?;
        out.push(st);
    }
    if let Some(left) = reader.leftover("statement") {
        return Err(StatementsError {
            detail: format!("{left} (byte {})", reader.at()),
        });
    }
    Ok(out)
}

fn statement<'a>(r: &mut Reader<'a>) -> Result<PackedStatement<'a>, Fault> {
    let sql = r.str()?;
    let n = r.u32()? as usize;
    // A parameter takes at least one byte: a count larger than what is
    // left reserves nothing more.
    let mut params = Vec::with_capacity(n.min(r.rest()));
    for _ in 0..n {
        params.push(param(r)?);
    }
    Ok(PackedStatement { sql, params })
}

#[inline]
fn param<'a>(r: &mut Reader<'a>) -> Result<Param<'a>, Fault> {
    Ok(match r.byte()? {
        0 => Param::Null,
        1 => Param::Int(i64::from_le_bytes(r.take::<8>()?)),
        2 => Param::Uint(r.u64()?),
        3 => Param::Float(f64::from_bits(r.u64()?)),
        4 => Param::Text(r.str()?),
        5 => {
            let n = r.u32()? as usize;
            Param::Bytes(r.slice(n)?)
        }
        6 => Param::Timestamp(r.timestamp()?),
        n => return Err(Fault::Case("value", n)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Vec<Param<'static>>)> {
        vec![
            (
                "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)".to_owned(),
                vec![
                    Param::Null,
                    Param::Int(-3),
                    Param::Uint(u64::MAX),
                    Param::Float(1.5),
                    Param::Text("żółw ✓ and a longer text past 127 bytes ".repeat(4).leak()),
                    Param::Bytes(&[0, 255, 7]),
                    Param::Timestamp(Timestamp {
                        seconds: -5,
                        nanos: 999_999_999,
                    }),
                ],
            ),
            ("COMMIT".to_owned(), vec![]),
            ("SELECT ?".to_owned(), vec![Param::Text("")]),
        ]
    }

    fn pack(statements: &[(String, Vec<Param<'_>>)]) -> Vec<u8> {
        let mut w = StatementsWriter::default();
        for (sql, params) in statements {
            w.statement(sql, params.iter().copied());
        }
        w.finish().expect("fits")
    }

    #[test]
    fn statements_round_trip_borrowing_the_buffer() {
        let sample = sample();
        let bytes = pack(&sample);
        let back = decode_statements(&bytes).expect("decodes");
        assert_eq!(back.len(), sample.len());
        for (got, (sql, params)) in back.iter().zip(&sample) {
            assert_eq!(got.sql, sql);
            assert_eq!(&got.params, params);
        }
        assert_eq!(decode_statements(&pack(&[])).expect("empty"), vec![]);
    }

    /// The bytes of a small statement, spelled out as `wit/README.md` does.
    #[test]
    fn the_layout_is_as_documented() {
        let mut w = StatementsWriter::default();
        w.statement("SELECT ?", [Param::Text("é"), Param::Int(1)]);
        let bytes = w.finish().expect("fits");
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[1, 0, 0, 0][..],    // one statement
            &[22, 0, 0, 0],       // 22 bytes of records
            &[8, 0, 0, 0],        // the SQL ends at byte 8 of the text
            &[2, 0, 0, 0],        // two parameters
            &[4], &[10, 0, 0, 0], // text, ending at byte 10
            &[1], &[1, 0, 0, 0, 0, 0, 0, 0], // int 1
            b"SELECT ?\xc3\xa9",  // the text block
        ]
        .concat();
        assert_eq!(bytes, want);
    }

    #[test]
    fn every_damaged_buffer_is_refused_with_its_place() {
        let bytes = pack(&sample());
        // Every cut: refused, never a panic.
        for n in 0..bytes.len() {
            let err = decode_statements(&bytes[..n]).expect_err("cut short");
            assert!(
                err.to_string().starts_with("not packed statements: "),
                "{err}"
            );
        }
        // Every one-byte change: decodes or is refused, never a panic.
        for i in 0..bytes.len() {
            for b in [0u8, 1, 7, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] = b;
                let _ = decode_statements(&damaged);
            }
        }
        let mut bad_case = pack(&[("S".to_owned(), vec![Param::Null])]);
        bad_case[HEADER + 8] = 9;
        let err = decode_statements(&bad_case)
            .expect_err("bad case")
            .to_string();
        assert!(
            err.contains("statement 1") && err.contains("case 9 is not a value"),
            "{err}"
        );
        let mut left = pack(&[("S".to_owned(), vec![])]);
        left[0] = 0;
        let err = decode_statements(&left).expect_err("leftover").to_string();
        assert!(err.contains("left after"), "{err}");
    }
}
