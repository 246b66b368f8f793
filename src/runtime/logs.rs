//! `stdio.log`: a container's output as it was produced, stdout and stderr
//! kept apart and in order. Each record is a stream byte, a timestamp (ns
//! since the epoch, little endian u64), a length (u32) and the bytes. Binary
//! framing, not JSON lines, so any output survives byte for byte.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const HEADER: usize = 1 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 1,
    Stderr = 2,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub stream: Stream,
    pub time_ns: u64,
    pub data: &'a [u8],
}

/// Appends records; the supervisor holds the one writer.
pub struct Writer(File);

impl Writer {
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map(Writer)
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut record = Vec::with_capacity(HEADER + data.len());
        record.push(stream as u8);
        record.extend_from_slice(&time.to_le_bytes());
        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
        record.extend_from_slice(data);
        // One write per record: a reader never sees half a header from us.
        self.0.write_all(&record)
    }
}

/// The complete records in `bytes`, and how many bytes they took: a record
/// still being written is left for the next read.
pub fn parse(bytes: &[u8]) -> (Vec<Record<'_>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let stream = match bytes[at] {
            2 => Stream::Stderr,
            _ => Stream::Stdout,
        };
        let time_ns = u64::from_le_bytes(bytes[at + 1..at + 9].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        if bytes.len() - at - HEADER < len {
            break;
        }
        records.push(Record {
            stream,
            time_ns,
            data: &bytes[at + HEADER..at + HEADER + len],
        });
        at += HEADER + len;
    }
    (records, at)
}

/// Where the last `lines` lines start: (record index, byte offset in it).
pub fn tail_start(records: &[Record<'_>], lines: usize) -> (usize, usize) {
    if lines == 0 {
        return (records.len(), 0);
    }
    let mut seen = 0;
    for (i, record) in records.iter().enumerate().rev() {
        let mut data = record.data;
        // The final newline ends the last line; it does not start another.
        if i == records.len() - 1 {
            data = data.strip_suffix(b"\n").unwrap_or(data);
        }
        for (pos, byte) in data.iter().enumerate().rev() {
            if *byte == b'\n' {
                seen += 1;
                if seen == lines {
                    return (i, pos + 1);
                }
            }
        }
    }
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[(Stream, &[u8])]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdio.log");
        let mut w = Writer::open(&path).unwrap();
        for (stream, data) in records {
            w.write(*stream, data).unwrap();
        }
        std::fs::read(path).unwrap()
    }

    #[test]
    fn round_trip_and_partial_records() {
        let bytes = log(&[(Stream::Stdout, b"out\n"), (Stream::Stderr, b"\x00\xffbin")]);
        let (records, used) = parse(&bytes);
        assert_eq!(used, bytes.len());
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].stream, records[0].data),
            (Stream::Stdout, &b"out\n"[..])
        );
        assert_eq!(
            (records[1].stream, records[1].data),
            (Stream::Stderr, &b"\x00\xffbin"[..])
        );
        let (records, used) = parse(&bytes[..bytes.len() - 1]);
        assert_eq!(records.len(), 1);
        assert_eq!(used, HEADER + 4);
    }

    #[test]
    fn tail_counts_lines_across_records() {
        let bytes = log(&[
            (Stream::Stdout, b"a\nb\n"),
            (Stream::Stderr, b"c\n"),
            (Stream::Stdout, b"d\ne\n"),
        ]);
        let (records, _) = parse(&bytes);
        let tail = |n| {
            let (i, offset) = tail_start(&records, n);
            let mut out = Vec::new();
            for (k, r) in records.iter().enumerate().skip(i) {
                out.extend_from_slice(if k == i { &r.data[offset..] } else { r.data });
            }
            String::from_utf8(out).unwrap()
        };
        assert_eq!(tail(1), "e\n");
        assert_eq!(tail(2), "d\ne\n");
        assert_eq!(tail(3), "c\nd\ne\n");
        assert_eq!(tail(4), "b\nc\nd\ne\n");
        assert_eq!(tail(10), "a\nb\nc\nd\ne\n");
        assert_eq!(tail(0), "");
    }
}
