//! A streaming reader for layer tars: ustar, GNU and v7 headers, PAX
//! extended headers, GNU long names and old-style GNU sparse files.
//!
//! Written by hand because the tar crate reads PAX records by splitting at
//! newlines rather than by their length prefix (tar-rs issue #428): binary
//! xattr values holding a 0x0A byte, which some `security.capability`
//! values do, come out as broken records, and a crafted value can even
//! pass `path` or `linkpath` records that length-respecting readers such as
//! Go's archive/tar (Docker's) never see. Reading headers is the small part
//! of tar; this reader follows Go's rules where readers differ, so an image
//! means here what it means to Docker.

use std::io::{self, Read};

use super::inode::Time;

const BLOCK: u64 = 512;
/// The most a PAX header or GNU long name may hold, as in Go's archive/tar:
/// a layer cannot make us buffer more than this for one entry.
const MAX_SPECIAL: u64 = 1 << 20;
/// Sizes are signed 64-bit numbers in Go's reader; larger ones are refused
/// there and here (they would also overflow the padding arithmetic).
const MAX_SIZE: u64 = i64::MAX as u64;
/// Segments one old-style GNU sparse map may list (each extension block
/// holds 21): enough for any real file, and a bound on what a hostile map
/// can make us keep.
const MAX_SPARSE_SEGMENTS: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("it ends in the middle of an entry")]
    Truncated,
    #[error("the header at byte {0} has a wrong checksum")]
    Checksum(u64),
    #[error("the header at byte {offset} has a malformed {field} field")]
    Field { offset: u64, field: &'static str },
    #[error("the PAX header at byte {0} has a malformed record")]
    Pax(u64),
    #[error("the PAX header at byte {offset} has a malformed {key} value")]
    PaxValue { offset: u64, key: String },
    #[error("the {what} at byte {offset} is larger than 1 MiB")]
    TooLarge { what: &'static str, offset: u64 },
    #[error("the sparse file at byte {0} has a malformed map")]
    SparseMap(u64),
    #[error("the entry at byte {0} is a PAX-format sparse file, which is not supported")]
    PaxSparse(u64),
    #[error("the entry at byte {0} is larger than 8 EiB")]
    TooBig(u64),
    #[error("a zero block at byte {0} is followed by more entries")]
    LoneZeroBlock(u64),
}

/// One entry's header, with any PAX records and GNU long names applied.
#[derive(Debug, Default)]
pub struct Header {
    /// The type flag: b'0' regular, b'5' directory, b'2' symlink, ...
    pub kind: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    /// The entry's logical size: what reading its data yields.
    pub size: u64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub ctime: Option<Time>,
    pub device: (u64, u64),
    /// `SCHILY.xattr.NAME` records, in order: (NAME, value).
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Where the header starts in the stream, for error messages.
    pub offset: u64,
}

/// Reads entries in order; between calls to `next`, reading the reader
/// yields the current entry's data (holes of sparse files as zeros).
pub struct Reader<R> {
    inner: R,
    /// Bytes of the stream consumed so far.
    offset: u64,
    /// The current entry's data: stored segments, in logical order.
    segments: Vec<(u64, u64)>,
    segment: usize,
    /// Logical position in the current entry, and its logical size.
    pos: u64,
    size: u64,
    /// Stored bytes of the current entry not read yet, then its padding.
    stored: u64,
    padding: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            offset: 0,
            segments: Vec::new(),
            segment: 0,
            pos: 0,
            size: 0,
            stored: 0,
            padding: 0,
            done: false,
        }
    }

    /// The next entry that describes a filesystem object (or anything but
    /// the PAX and GNU records that describe the entry after them); `None`
    /// at the end of the archive. Skips what was left of the previous one.
    pub fn next(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.stored + self.padding)?;
        self.segments.clear();
        (self.segment, self.pos, self.size, self.stored, self.padding) = (0, 0, 0, 0, 0);

        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let (mut long_name, mut long_link) = (None, None);
        loop {
            let offset = self.offset;
            let mut block = [0u8; BLOCK as usize];
            let read = read_full(&mut self.inner, &mut block)?;
            self.offset += read as u64;
            if read == 0 && pax.is_empty() && long_name.is_none() && long_link.is_none() {
                // A stream without the end-of-archive blocks ends here too.
                self.done = true;
                return Ok(None);
            }
            if read < block.len() {
                return Err(TarError::Truncated);
            }
            if block.iter().all(|&b| b == 0) {
                // The end is two zero blocks (or one, then the stream's end);
                // a zero block amid entries is damage, not the end.
                let mut next = [0u8; BLOCK as usize];
                let read = read_full(&mut self.inner, &mut next)?;
                self.offset += read as u64;
                if read != 0 && next.iter().any(|&b| b != 0) {
                    return Err(TarError::LoneZeroBlock(offset));
                }
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&block, offset)?;
            let field = |range: std::ops::Range<usize>, name| {
                number(&block[range]).ok_or(TarError::Field {
                    offset,
                    field: name,
                })
            };
            let stored = field(124..136, "size")?;
            if stored > MAX_SIZE {
                return Err(TarError::TooBig(offset));
            }
            let kind = block[156];
            match kind {
                b'x' | b'g' | b'L' | b'K' => {
                    let what = if kind == b'x' || kind == b'g' {
                        "PAX header"
                    } else {
                        "GNU long name"
                    };
                    if stored > MAX_SPECIAL {
                        return Err(TarError::TooLarge { what, offset });
                    }
                    let data = self.read_special(stored)?;
                    // Empty long names are no names (Go's rule).
                    let name = Some(trim_nul(&data).to_vec()).filter(|n| !n.is_empty());
                    match kind {
                        b'x' => pax = parse_pax(&data, offset)?,
                        // Global records would apply to every later entry;
                        // no image tool writes them, and Docker ignores them.
                        // Go hands them out as an entry of their own, which
                        // ends whatever described "the next entry" before.
                        b'g' => (pax, long_name, long_link) = (Vec::new(), None, None),
                        b'L' => long_name = name,
                        _ => long_link = name,
                    }
                    continue;
                }
                _ => {}
            }
            let mut header = Header {
                kind,
                link: trim_nul(&block[157..257]).to_vec(),
                mode: field(100..108, "mode")?,
                uid: field(108..116, "uid")?,
                gid: field(116..124, "gid")?,
                size: stored,
                mtime: Time {
                    secs: i64::try_from(field(136..148, "mtime")?).map_err(|_| {
                        TarError::Field {
                            offset,
                            field: "mtime",
                        }
                    })?,
                    nanos: 0,
                },
                offset,
                ..Header::default()
            };
            let magic = &block[257..265];
            let ustar = &magic[..6] == b"ustar\x00";
            let gnu = magic == b"ustar  \x00";
            header.path = trim_nul(&block[..100]).to_vec();
            if ustar {
                let prefix = trim_nul(&block[345..500]);
                if !prefix.is_empty() {
                    header.path = [prefix, b"/", &header.path].concat();
                }
            }
            if ustar || gnu {
                header.device = (field(329..337, "devmajor")?, field(337..345, "devminor")?);
            }
            // Go's order, so Docker's: PAX records, then GNU long names.
            for (key, value) in pax {
                apply_pax(&mut header, &key, value, offset)?;
            }
            if let Some(name) = long_name {
                header.path = name;
            }
            if let Some(link) = long_link {
                header.link = link;
            }
            if kind == 0 {
                // Pre-POSIX archives mark directories by a trailing slash.
                header.kind = if header.path.ends_with(b"/") {
                    b'5'
                } else {
                    b'0'
                };
            }

            // Links, directories, devices and FIFOs carry no data whatever
            // their size field says (Go's rule, so Docker's). What is
            // stored is the size after PAX records, sparse files included.
            if matches!(header.kind, b'1'..=b'6') {
                header.size = 0;
            }
            self.stored = header.size;
            if header.kind == b'S' {
                self.sparse_map(&block, &mut header)?;
            } else {
                self.segments.push((0, header.size));
            }
            self.size = header.size;
            self.padding = self.stored.next_multiple_of(BLOCK) - self.stored;
            return Ok(Some(header));
        }
    }

    /// An old-style GNU sparse entry: the map of stored segments is in the
    /// header and any extension blocks after it; `size` becomes the real size.
    fn sparse_map(&mut self, block: &[u8; 512], header: &mut Header) -> Result<(), TarError> {
        let offset = header.offset;
        let bad = || TarError::SparseMap(offset);
        let mut entries: Vec<(u64, u64)> = Vec::new();
        let mut read_entries = |area: &[u8], count: usize| -> Result<(), TarError> {
            for i in 0..count {
                let e = &area[i * 24..i * 24 + 24];
                // GNU tar, BSD tar and Go all stop at an empty offset field.
                if e[0] == 0 {
                    break;
                }
                let start = number(&e[..12]).ok_or_else(bad)?;
                let len = number(&e[12..]).ok_or_else(bad)?;
                if len > 0 {
                    entries.push((start, len));
                }
                if entries.len() > MAX_SPARSE_SEGMENTS {
                    return Err(bad());
                }
            }
            Ok(())
        };
        read_entries(&block[386..482], 4)?;
        let mut extended = block[482] != 0;
        while extended {
            let mut ext = [0u8; BLOCK as usize];
            if read_full(&mut self.inner, &mut ext)? < ext.len() {
                return Err(TarError::Truncated);
            }
            self.offset += BLOCK;
            read_entries(&ext[..504], 21)?;
            extended = ext[504] != 0;
        }
        let real = number(&block[483..495])
            .filter(|&n| n <= MAX_SIZE)
            .ok_or_else(bad)?;
        let mut end = 0;
        let mut stored = 0u64;
        for &(start, len) in &entries {
            let stop = start.checked_add(len).ok_or_else(bad)?;
            if start < end || stop > real {
                return Err(bad());
            }
            end = stop;
            stored += len;
        }
        if stored != self.stored {
            return Err(bad());
        }
        self.segments = entries;
        header.size = real;
        Ok(())
    }

    /// Moves past the hole (a sparse file's unstored zeros) at the current
    /// position, in whole multiples of `align` and at most `max` bytes;
    /// returns how far. A sparse map can describe terabytes of hole in a few
    /// bytes, so the writer skips them rather than reading zeros.
    pub fn skip_hole(&mut self, max: u64, align: u64) -> u64 {
        let (data, _) = self.current_segment();
        let hole = data.saturating_sub(self.pos).min(max);
        let hole = hole - hole % align;
        self.pos += hole;
        hole
    }

    /// The stored segment at or after the current position, as (start,
    /// length); past the last one, an empty segment at the entry's end.
    fn current_segment(&mut self) -> (u64, u64) {
        while let Some(&(start, len)) = self.segments.get(self.segment)
            && self.pos >= start + len
        {
            self.segment += 1;
        }
        self.segments
            .get(self.segment)
            .copied()
            .unwrap_or((self.size, 0))
    }

    fn read_special(&mut self, len: u64) -> Result<Vec<u8>, TarError> {
        let mut data = vec![0u8; len as usize];
        if read_full(&mut self.inner, &mut data)? < data.len() {
            return Err(TarError::Truncated);
        }
        self.offset += len;
        self.skip(len.next_multiple_of(BLOCK) - len)?;
        Ok(data)
    }

    fn skip(&mut self, n: u64) -> Result<(), TarError> {
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.offset += skipped;
        if skipped < n {
            return Err(TarError::Truncated);
        }
        Ok(())
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let (start, len) = self.current_segment();
        let n = if self.pos < start {
            // A hole before the next stored segment (or at the end).
            let n = out.len().min((start - self.pos) as usize);
            out[..n].fill(0);
            n
        } else {
            let want = out.len().min((start + len - self.pos) as usize);
            let n = self.inner.read(&mut out[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.stored -= n as u64;
            self.offset += n as u64;
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Fills `buf` unless the stream ends first; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Unsigned and signed byte sums are both in use (Go accepts either).
fn verify_checksum(block: &[u8; 512], offset: u64) -> Result<(), TarError> {
    let field = &block[148..156];
    let stored = number(field)
        .filter(|_| field[0] & 0x80 == 0)
        .ok_or(TarError::Checksum(offset))?;
    let spaces = 8 * u64::from(b' ');
    let outside = |i: &usize| !(148..156).contains(i);
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .filter(|(i, _)| outside(i))
        .map(|(_, &b)| u64::from(b))
        .sum::<u64>()
        + spaces;
    let signed: i64 = block
        .iter()
        .enumerate()
        .filter(|(i, _)| outside(i))
        .map(|(_, &b)| i64::from(b as i8))
        .sum::<i64>()
        + spaces as i64;
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(TarError::Checksum(offset))
    }
}

/// A numeric field: octal text (space or NUL padded, empty meaning 0), or
/// GNU base-256 when the high bit of the first byte is set.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return None; // negative
        }
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = field
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .map_or(&field[..0], |start| &field[start..]);
    let end = text
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(text.len());
    if text[end..].iter().any(|&b| b != b' ' && b != 0) {
        return None;
    }
    let digits = &text[..end];
    if !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok()
}

fn trim_nul(field: &[u8]) -> &[u8] {
    &field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())]
}

/// PAX records, `LENGTH KEY=VALUE\n`, read by their length: values may be
/// binary and hold newlines.
fn parse_pax(mut data: &[u8], offset: u64) -> Result<Vec<(String, Vec<u8>)>, TarError> {
    let bad = TarError::Pax(offset);
    let mut records = Vec::new();
    // Writers may pad the header with NULs after the last record.
    while data.iter().any(|&b| b != 0) {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(TarError::Pax(offset))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(TarError::Pax(offset))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad);
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TarError::Pax(offset))?;
        let key = std::str::from_utf8(&record[..eq])
            .ok()
            .filter(|k| !k.is_empty())
            .ok_or(TarError::Pax(offset))?;
        records.push((key.to_string(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

fn apply_pax(header: &mut Header, key: &str, value: Vec<u8>, offset: u64) -> Result<(), TarError> {
    let bad = || TarError::PaxValue {
        offset,
        key: key.to_string(),
    };
    let decimal = |v: &[u8]| -> Result<u64, TarError> {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let time = |v: &[u8]| parse_time(v).ok_or_else(bad);
    let known = matches!(
        key,
        "path" | "linkpath" | "size" | "uid" | "gid" | "mtime" | "atime" | "ctime"
    );
    // An empty value keeps the header's own field (Go's rule); xattrs may
    // be empty, though.
    if known && value.is_empty() {
        return Ok(());
    }
    if matches!(key, "path" | "linkpath") && value.contains(&0) {
        return Err(bad());
    }
    match key {
        "path" => header.path = value,
        "linkpath" => header.link = value,
        "size" => {
            header.size = decimal(&value)?;
            if header.size > MAX_SIZE {
                return Err(TarError::TooBig(offset));
            }
        }
        "uid" => header.uid = decimal(&value)?,
        "gid" => header.gid = decimal(&value)?,
        "mtime" => header.mtime = time(&value)?,
        "atime" => header.atime = Some(time(&value)?),
        "ctime" => header.ctime = Some(time(&value)?),
        _ if key.starts_with("GNU.sparse.") => return Err(TarError::PaxSparse(offset)),
        _ => {
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                header.xattrs.push((name.to_string(), value));
            }
        }
    }
    Ok(())
}

/// A PAX time: decimal seconds, optionally negative, with an optional
/// fraction of up to nanosecond precision (more digits are truncated).
fn parse_time(value: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if !whole.bytes().all(|c| c.is_ascii_digit()) || !fraction.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanos: u32 = digits.parse().ok()?;
    Some(match (negative, nanos) {
        (false, _) => Time { secs, nanos },
        (true, 0) => Time {
            secs: -secs,
            nanos: 0,
        },
        (true, _) => Time {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_time(b"1700000000.5"),
            Some(Time {
                secs: 1700000000,
                nanos: 500_000_000
            })
        );
        assert_eq!(parse_time(b"12"), Some(Time { secs: 12, nanos: 0 }));
        assert_eq!(
            parse_time(b"1.1234567899"),
            Some(Time {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            parse_time(b"-1.25"),
            Some(Time {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(parse_time(b"x"), None);
        assert_eq!(parse_time(b"1.-2"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"  755 \0"), Some(0o755));
        assert_eq!(number(b"\0\0\0\0"), Some(0));
        assert_eq!(number(b"\x80\0\0\0\xee\x6b\x28\0"), Some(4_000_000_000));
        assert_eq!(number(b"\xff\xff\xff\xff"), None);
        assert_eq!(number(b"12 3"), None);
        assert_eq!(number(b"9"), None);
    }

    #[test]
    fn pax_records_are_read_by_length() {
        let value = b"a\nb=c\n22 linkpath=/etc/evil\n";
        let record = [b"52 SCHILY.xattr.user.x=".as_slice(), value, b"\n"].concat();
        assert_eq!(record.len(), 52);
        let data = [record.as_slice(), b"10 path=p\n\0\0"].concat();
        let records = parse_pax(&data, 0).unwrap();
        assert_eq!(
            records,
            [
                ("SCHILY.xattr.user.x".to_string(), value.to_vec()),
                ("path".to_string(), b"p".to_vec())
            ]
        );
        assert!(parse_pax(b"99 path=p\n", 0).is_err());
        assert!(parse_pax(b"10 path=pp", 0).is_err());
        assert!(parse_pax(b"x path=p\n", 0).is_err());
    }

    /// A two-entry archive: a 700-byte file, then a directory.
    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(700);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &[7u8; 700][..]).unwrap();
        let mut d = tar::Header::new_ustar();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_mode(0o755);
        d.set_cksum();
        b.append_data(&mut d, "d/", &[][..]).unwrap();
        b.into_inner().unwrap()
    }

    /// (path, data) of every entry.
    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> Result<Entries, TarError> {
        let mut r = Reader::new(bytes);
        let mut out = Vec::new();
        while let Some(h) = r.next()? {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            out.push((h.path, data));
        }
        Ok(out)
    }

    #[test]
    fn entries_and_their_data() {
        let entries = read_all(&archive()).unwrap();
        assert_eq!(entries[0], (b"f".to_vec(), vec![7u8; 700]));
        assert_eq!(entries[1], (b"d/".to_vec(), vec![]));
        // Data not read is skipped.
        let bytes = archive();
        let mut r = Reader::new(&bytes[..]);
        r.next().unwrap();
        assert_eq!(r.next().unwrap().unwrap().kind, b'5');
        assert!(r.next().unwrap().is_none());
    }

    #[test]
    fn damage_is_an_error_not_a_guess() {
        let good = archive();
        let mut bad = good.clone();
        bad[100] ^= 1; // the first header's mode
        assert!(matches!(read_all(&bad), Err(TarError::Checksum(0))));
        // Cut inside the first file's data, and inside the second header.
        let cut = read_all(&good[..800]).unwrap_err();
        assert!(matches!(&cut, TarError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof));
        assert!(matches!(
            read_all(&good[..1536 + 100]),
            Err(TarError::Truncated)
        ));
        // A PAX header may not make us buffer more than 1 MiB.
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(2 << 20);
        h.set_cksum();
        let huge = [h.as_bytes().as_slice(), &vec![0u8; 4096]].concat();
        assert!(matches!(
            read_all(&huge),
            Err(TarError::TooLarge { offset: 0, .. })
        ));
    }

    /// An entry with PAX records before it.
    fn with_pax(records: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(records.len() as u64);
        x.set_cksum();
        b.append(&x, records).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn only_two_zero_blocks_end_the_archive() {
        let mut bytes = archive();
        bytes.truncate(2560); // the file, the directory, one zero block
        assert_eq!(read_all(&bytes).unwrap().len(), 2);
        // A zero block between entries is damage, not the end.
        let first = archive()[..1536].to_vec();
        let gap = [first.as_slice(), &[0u8; 512], &archive()].concat();
        assert!(matches!(read_all(&gap), Err(TarError::LoneZeroBlock(1536))));
    }

    #[test]
    fn pax_records_the_way_go_reads_them() {
        // An empty value keeps the header's field.
        let kept = read_all(&with_pax(b"8 path=\n", "name", b"")).unwrap();
        assert_eq!(kept[0].0, b"name");
        // A NUL in a path is refused, not written into a directory.
        assert!(matches!(
            read_all(&with_pax(b"12 path=a\0b\n", "name", b"")),
            Err(TarError::PaxValue { .. })
        ));
        // Sizes past i64::MAX are refused before any arithmetic on them.
        let huge = b"29 size=18446744073709551615\n";
        assert!(matches!(
            read_all(&with_pax(huge, "name", b"")),
            Err(TarError::TooBig(_))
        ));
        // A global header ends what the records before it described.
        let mut b = tar::Builder::new(Vec::new());
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(19);
        x.set_cksum();
        b.append(&x, &b"19 path=etc/passwd\n"[..]).unwrap();
        let mut g = tar::Header::new_ustar();
        g.set_entry_type(tar::EntryType::XGlobalHeader);
        g.set_size(0);
        g.set_cksum();
        b.append(&g, &[][..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "file", &[][..]).unwrap();
        let entries = read_all(&b.into_inner().unwrap()).unwrap();
        assert_eq!(entries[0].0, b"file");
    }

    #[test]
    fn octal_fields_hold_octal_digits_only() {
        assert_eq!(number(b"+17"), None);
        assert_eq!(number(b"0000017 "), Some(15));
    }
}
