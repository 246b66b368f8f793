//! A streaming reader for layer tars: ustar, GNU and v7 headers, PAX
//! extended headers, GNU long names, and sparse files in GNU tar's four
//! formats (the old GNU one and PAX 0.0, 0.1 and 1.0).
//!
//! Written by hand because the tar crate reads PAX records by splitting at
//! newlines rather than by their length prefix (tar-rs issue #428): binary
//! xattr values holding a 0x0A byte, which some `security.capability`
//! values do, come out as broken records, and a crafted value can even
//! pass `path` or `linkpath` records that length-respecting readers such as
//! Go's archive/tar (Docker's) never see. Reading headers is the small part
//! of tar; this reader follows Go's rules where readers differ, so an image
//! means here what it means to Docker.

use std::collections::BTreeMap;
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
            if read == 0 {
                // A stream without the end-of-archive blocks ends here too,
                // even right after a PAX header or long name: Go and GNU tar
                // read that as the end, not as damage.
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
            let mut sparse = PaxSparse::default();
            for (key, value) in pax {
                match key.strip_prefix("GNU.sparse.") {
                    Some(key) => sparse.add(key, value, offset)?,
                    None => apply_pax(&mut header, &key, value, offset)?,
                }
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
            // their size field says (Go's rule, so Docker's), and cannot be
            // sparse. What is stored is the size after PAX records, sparse
            // files included.
            if matches!(header.kind, b'1'..=b'6') {
                if sparse.format().is_some() {
                    return Err(TarError::SparseMap(offset));
                }
                header.size = 0;
            }
            self.stored = header.size;
            let map = if header.kind == b'S' {
                Some(self.old_sparse_map(&block, offset)?)
            } else {
                self.pax_sparse_map(&sparse, &mut header)?
            };
            match map {
                Some((entries, real)) => {
                    self.segments =
                        segments(entries, real, self.stored).ok_or(TarError::SparseMap(offset))?;
                    header.size = real;
                }
                None => self.segments.push((0, header.size)),
            }
            self.size = header.size;
            self.padding = self.stored.next_multiple_of(BLOCK) - self.stored;
            return Ok(Some(header));
        }
    }

    /// An old-style GNU sparse entry's map, as (offset, length) entries and
    /// the real size: in the header, then in any extension blocks after it.
    fn old_sparse_map(&mut self, block: &[u8; 512], offset: u64) -> Result<Sparse, TarError> {
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
                entries.push((start, len));
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
        Ok((entries, real))
    }

    /// The map of a PAX-format sparse file, if the records make it one:
    /// 0.0 and 0.1 keep it in the records, 1.0 at the start of the entry's
    /// data (which this consumes). Applies `GNU.sparse.name` to the path.
    fn pax_sparse_map(
        &mut self,
        sparse: &PaxSparse,
        header: &mut Header,
    ) -> Result<Option<Sparse>, TarError> {
        let offset = header.offset;
        let bad = || TarError::SparseMap(offset);
        let Some(format) = sparse.format() else {
            return Ok(None);
        };
        if let Some(name) = sparse.get("name") {
            header.path = name.to_vec();
        }
        let real = match sparse.get("size").or(sparse.get("realsize")) {
            Some(size) => decimal(size).filter(|&n| n <= MAX_SIZE).ok_or_else(bad)?,
            None => header.size,
        };
        let numbers: Vec<u64> = match format {
            PaxSparseFormat::Records => {
                let count = decimal(sparse.get("numblocks").unwrap_or_default())
                    .filter(|&n| n <= MAX_SPARSE_SEGMENTS as u64)
                    .ok_or_else(bad)?;
                let map = sparse.map();
                let numbers: Vec<u64> = match map.is_empty() {
                    true => Vec::new(),
                    false => map
                        .split(|&b| b == b',')
                        .map(decimal)
                        .collect::<Option<_>>()
                        .ok_or_else(bad)?,
                };
                if numbers.len() as u64 != 2 * count {
                    return Err(bad());
                }
                numbers
            }
            PaxSparseFormat::InData => self.sparse_map_in_data(offset)?,
        };
        let entries = numbers.chunks(2).map(|pair| (pair[0], pair[1])).collect();
        Ok(Some((entries, real)))
    }

    /// Format 1.0's map: decimal numbers, one per line (the count of
    /// entries, then each entry's offset and length), in whole blocks at the
    /// start of the entry's data.
    fn sparse_map_in_data(&mut self, offset: u64) -> Result<Vec<u64>, TarError> {
        let bad = || TarError::SparseMap(offset);
        let mut text: Vec<u8> = Vec::new();
        let lines = |text: &[u8]| text.iter().filter(|&&b| b == b'\n').count();
        let mut wanted = 1;
        let mut count = None;
        while lines(&text) < wanted {
            if self.stored < BLOCK {
                return Err(TarError::Truncated);
            }
            if text.len() as u64 >= MAX_SPECIAL {
                return Err(TarError::TooLarge {
                    what: "sparse map",
                    offset,
                });
            }
            let mut block = [0u8; BLOCK as usize];
            if read_full(&mut self.inner, &mut block)? < block.len() {
                return Err(TarError::Truncated);
            }
            (self.offset, self.stored) = (self.offset + BLOCK, self.stored - BLOCK);
            text.extend_from_slice(&block);
            if count.is_none() && lines(&text) >= 1 {
                let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
                let n = decimal(first)
                    .filter(|&n| n <= MAX_SPARSE_SEGMENTS as u64)
                    .ok_or_else(bad)?;
                count = Some(n);
                wanted = 1 + 2 * n as usize;
            }
        }
        text.split(|&b| b == b'\n')
            .skip(1)
            .take(wanted - 1)
            .map(decimal)
            .collect::<Option<_>>()
            .ok_or_else(bad)
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

/// A sparse map as (offset, length) entries, and the file's real size.
type Sparse = (Vec<(u64, u64)>, u64);

/// The stored segments of a sparse file, if its map is sound by the rules
/// GNU, BSD and Go tar share: entries in order, not overlapping, within the
/// real size, and together exactly the bytes stored. Empty ones are dropped.
fn segments(mut entries: Vec<(u64, u64)>, real: u64, stored: u64) -> Option<Vec<(u64, u64)>> {
    let (mut end, mut total) = (0u64, 0u64);
    for &(start, len) in &entries {
        let stop = start.checked_add(len)?;
        if start < end || stop > real {
            return None;
        }
        (end, total) = (stop, total + len);
    }
    entries.retain(|&(_, len)| len > 0);
    (total == stored).then_some(entries)
}

/// Where a PAX-format sparse file keeps its map.
enum PaxSparseFormat {
    /// Formats 0.0 and 0.1: in the PAX records.
    Records,
    /// Format 1.0: at the start of the entry's data.
    InData,
}

/// An entry's `GNU.sparse.*` PAX records (without the prefix), gathered as
/// Go's archive/tar gathers them: the last of a key wins, and format 0.0's
/// repeated `offset`/`numbytes` records become one list.
#[derive(Default)]
struct PaxSparse {
    records: BTreeMap<String, Vec<u8>>,
    pairs: Vec<Vec<u8>>,
}

impl PaxSparse {
    fn add(&mut self, key: &str, value: Vec<u8>, offset: u64) -> Result<(), TarError> {
        if matches!(key, "offset" | "numbytes") {
            let expected = if self.pairs.len() % 2 == 0 {
                "offset"
            } else {
                "numbytes"
            };
            if key != expected || value.contains(&b',') {
                return Err(TarError::SparseMap(offset));
            }
            self.pairs.push(value);
        } else {
            self.records.insert(key.to_string(), value);
        }
        Ok(())
    }

    /// A record's value; an empty one counts as absent, as in Go.
    fn get(&self, key: &str) -> Option<&[u8]> {
        self.records
            .get(key)
            .map(Vec::as_slice)
            .filter(|v| !v.is_empty())
    }

    /// The map of formats 0.0 and 0.1: numbers separated by commas.
    fn map(&self) -> Vec<u8> {
        match self.pairs.is_empty() {
            true => self.get("map").unwrap_or_default().to_vec(),
            false => self.pairs.join(&b','),
        }
    }

    /// Which format the records describe; `None` when they describe no
    /// sparse file, or one of a version Go does not know (which it then
    /// reads as the plain file it is stored as, and so do we).
    fn format(&self) -> Option<PaxSparseFormat> {
        match (self.get("major"), self.get("minor")) {
            (Some(b"0"), Some(b"0" | b"1")) => Some(PaxSparseFormat::Records),
            (Some(b"1"), Some(b"0")) => Some(PaxSparseFormat::InData),
            (Some(_), _) | (_, Some(_)) => None,
            // 0.0 and 0.1 wrote no version.
            (None, None) => (!self.map().is_empty()).then_some(PaxSparseFormat::Records),
        }
    }
}

/// A decimal number of digits only (no sign, no spaces).
fn decimal(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
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
            .filter(|k| !k.is_empty() && !k.contains('\0'))
            .ok_or(TarError::Pax(offset))?;
        let value = &record[eq + 1..];
        // Go's rule for a valid record, which GNU tar shares: no NUL in a
        // key, nor in a value that is a name.
        if matches!(key, "path" | "linkpath" | "uname" | "gname") && value.contains(&0) {
            return Err(bad);
        }
        records.push((key.to_string(), value.to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

fn apply_pax(header: &mut Header, key: &str, value: Vec<u8>, offset: u64) -> Result<(), TarError> {
    let bad = || TarError::PaxValue {
        offset,
        key: key.to_string(),
    };
    let decimal = |v: &[u8]| decimal(v).ok_or_else(bad);
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
        // A NUL in a path is refused, not written into a directory, and so
        // is one in a key (Go and GNU tar refuse both).
        assert!(matches!(
            read_all(&with_pax(b"12 path=a\0b\n", "name", b"")),
            Err(TarError::Pax(0))
        ));
        assert!(matches!(
            read_all(&with_pax(b"11 pa\0th=x\n", "name", b"")),
            Err(TarError::Pax(0))
        ));
        // A PAX header right before the stream's end is the end (as in Go and
        // GNU tar), not a truncated entry.
        let pax_only = &with_pax(b"10 path=p\n", "name", b"")[..1024];
        assert_eq!(read_all(pax_only).unwrap(), Entries::new());
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

    /// PAX records with their length prefixes.
    fn records(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in pairs {
            let body = format!(" {key}={value}\n");
            // The length counts its own digits.
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            out.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        out
    }

    #[test]
    fn pax_sparse_maps_the_way_go_reads_them() {
        let sparse = |pairs: &[(&str, &str)], data: &[u8]| {
            read_all(&with_pax(&records(pairs), "GNUSparseFile.1/f", data))
        };
        let file = |path: &[u8], data: &[u8]| vec![(path.to_vec(), data.to_vec())];
        // 0.1: the map in one record; the name and real size from others.
        let v01 = [
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.map", "2,3,9,1"),
            ("GNU.sparse.size", "10"),
            ("GNU.sparse.name", "f"),
        ];
        assert_eq!(
            sparse(&v01, b"abcd").unwrap(),
            file(b"f", b"\0\0abc\0\0\0\0d")
        );
        // 0.0: repeated offset/numbytes records, which must alternate.
        let v00 = [
            ("GNU.sparse.size", "4"),
            ("GNU.sparse.numblocks", "1"),
            ("GNU.sparse.offset", "1"),
            ("GNU.sparse.numbytes", "2"),
        ];
        let f00 = b"GNUSparseFile.1/f";
        assert_eq!(sparse(&v00, b"xy").unwrap(), file(f00, b"\0xy\0"));
        let swapped = [v00[0], v00[1], v00[3], v00[2]];
        assert!(matches!(
            sparse(&swapped, b"xy"),
            Err(TarError::SparseMap(_))
        ));
        // 1.0: the map in the data's first block, before the stored bytes.
        let v10 = [
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.realsize", "6"),
        ];
        let mut data = b"1\n4\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"ok");
        let f10 = b"GNUSparseFile.1/f";
        assert_eq!(sparse(&v10, &data).unwrap(), file(f10, b"\0\0\0\0ok"));
        assert!(matches!(
            sparse(&v10, &data[..300]),
            Err(TarError::Truncated)
        ));
        // A map that overlaps itself, reaches past the real size, or does
        // not account for exactly the stored bytes is refused.
        for map in ["0,2,1,2", "0,2,9,2", "0,1,2,1"] {
            let bad = [
                ("GNU.sparse.numblocks", "2"),
                ("GNU.sparse.map", map),
                ("GNU.sparse.size", "10"),
            ];
            assert!(
                matches!(sparse(&bad, b"abcd"), Err(TarError::SparseMap(_))),
                "{map}"
            );
        }
        // A version Go does not know leaves a plain file, as in Go.
        let unknown = [("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")];
        assert_eq!(
            sparse(&unknown, b"raw").unwrap(),
            file(b"GNUSparseFile.1/f", b"raw")
        );
    }

    #[test]
    fn octal_fields_hold_octal_digits_only() {
        assert_eq!(number(b"+17"), None);
        assert_eq!(number(b"0000017 "), Some(15));
    }
}
