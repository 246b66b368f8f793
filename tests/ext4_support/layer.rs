//! Layer tar streams built in memory, shared by the ext4 unit tests
//! (src/ext4/tests.rs includes this file) and the integration tests that
//! push such layers to a registry, so both speak the same tar dialect.
#![allow(dead_code)] // each includer uses a different part

use tar::{Builder, EntryType, Header};

/// Every entry's mtime unless PAX records say otherwise.
pub const MTIME: u64 = 1_700_000_000;

/// A tar stream under construction. Entries belong to root with the
/// permissions each method names, unless `with` said otherwise.
pub struct Layer {
    pub builder: Builder<Vec<u8>>,
    next: Option<(u32, u64, u64)>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            builder: Builder::new(Vec::new()),
            next: None,
        }
    }

    pub fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    /// The next entry gets these permission bits and owner.
    pub fn with(mut self, mode: u32, uid: u64, gid: u64) -> Self {
        self.next = Some((mode, uid, gid));
        self
    }

    fn next_header(&mut self, kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Self::header(kind, mode, size);
        if let Some((mode, uid, gid)) = self.next.take() {
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(gid);
        }
        h
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = self.next_header(EntryType::Regular, 0o644, data.len() as u64);
        self.builder.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn file_owned(&mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) {
        self.next = Some((mode, uid, gid));
        let mut h = self.next_header(EntryType::Regular, mode, data.len() as u64);
        self.builder.append_data(&mut h, path, data).unwrap();
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = self.next_header(EntryType::Directory, mode, 0);
        self.builder.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn link(mut self, kind: EntryType, path: &str, target: &str) -> Self {
        let mut h = self.next_header(kind, 0o777, 0);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.link(EntryType::Symlink, path, target)
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.link(EntryType::Link, path, target)
    }

    /// An entry whose name is taken verbatim (the Builder refuses `..`).
    pub fn raw(mut self, path: &[u8], data: &[u8]) -> Self {
        let mut h = Self::header(EntryType::Regular, 0o644, data.len() as u64);
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    /// PAX records for the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body_len = key.len() + value.len() + 3;
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut h = Self::header(EntryType::XHeader, 0o644, data.len() as u64);
        self.builder
            .append_data(&mut h, "PaxHeader", &data[..])
            .unwrap();
        self
    }

    /// A device or FIFO node (mode 0660 unless `with` said otherwise).
    pub fn device(mut self, kind: EntryType, path: &str, major: u32, minor: u32) -> Self {
        let mut h = self.next_header(kind, 0o660, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.builder.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}
