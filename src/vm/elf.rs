//! Just enough of ELF to tell what a guest binary is before a VM is booted
//! with it: whose CPU it is for, whether it needs a dynamic loader (the
//! init filesystem has none), and which notes it carries (QEMU boots an
//! x86_64 `vmlinux` only through its PVH entry note). A wrong file
//! otherwise fails inside the guest, where all the user sees is a VM that
//! never answers.

use std::io::{Read, Seek, SeekFrom};

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const PT_INTERP: u32 = 3;
pub const PT_NOTE: u32 = 4;

/// What the header and program headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// ELFCLASS64; a 32-bit file's program headers are not read.
    pub class64: bool,
    pub machine: u16,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub offset: u64,
    pub size: u64,
}

/// More program headers than any real kernel or program has: a corrupt
/// count must not make us read gigabytes.
const MAX_SEGMENTS: u16 = 256;

impl Elf {
    /// The file's ELF description, or `None` if it is not a little-endian
    /// ELF file (every target we boot is little-endian).
    pub fn read(file: &mut (impl Read + Seek)) -> std::io::Result<Option<Elf>> {
        let mut header = [0u8; 64];
        file.seek(SeekFrom::Start(0))?;
        let got = read_up_to(file, &mut header)?;
        if got < 0x14 || &header[..4] != b"\x7fELF" || header[5] != 1 {
            return Ok(None);
        }
        let class64 = header[4] == 2;
        let machine = u16::from_le_bytes([header[0x12], header[0x13]]);
        let mut elf = Elf {
            class64,
            machine,
            segments: Vec::new(),
        };
        if !class64 || got < 64 {
            return Ok(Some(elf));
        }
        let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().unwrap());
        let phentsize = u16::from_le_bytes([header[0x36], header[0x37]]);
        let phnum = u16::from_le_bytes([header[0x38], header[0x39]]).min(MAX_SEGMENTS);
        if phentsize < 56 {
            return Ok(Some(elf));
        }
        let mut table = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
        file.seek(SeekFrom::Start(phoff))?;
        let got = read_up_to(file, &mut table)?;
        for entry in table[..got].chunks_exact(usize::from(phentsize)) {
            elf.segments.push(Segment {
                kind: u32::from_le_bytes(entry[0..4].try_into().unwrap()),
                offset: u64::from_le_bytes(entry[8..16].try_into().unwrap()),
                size: u64::from_le_bytes(entry[32..40].try_into().unwrap()),
            });
        }
        Ok(Some(elf))
    }

    /// Whether it asks for a program interpreter (a dynamic loader).
    pub fn is_dynamic(&self) -> bool {
        self.segments.iter().any(|s| s.kind == PT_INTERP)
    }

    /// Whether a note segment holds a note named `name` of type `kind`.
    pub fn has_note(
        &self,
        file: &mut (impl Read + Seek),
        name: &[u8],
        kind: u32,
    ) -> std::io::Result<bool> {
        for segment in self.segments.iter().filter(|s| s.kind == PT_NOTE) {
            // Notes are small (a kernel's are a few hundred bytes).
            let mut notes = vec![0u8; segment.size.min(1 << 20) as usize];
            file.seek(SeekFrom::Start(segment.offset))?;
            let got = read_up_to(file, &mut notes)?;
            if notes_contain(&notes[..got], name, kind) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Walks a note segment: each note is namesz, descsz, type (u32 each),
/// then the name and the descriptor, each padded to 4 bytes. `name` is
/// compared without its terminating NUL.
fn notes_contain(mut notes: &[u8], name: &[u8], kind: u32) -> bool {
    let padded = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let word = |at: usize| u32::from_le_bytes(notes[at..at + 4].try_into().unwrap()) as usize;
        let (namesz, descsz, note_kind) = (word(0), word(4), word(8) as u32);
        let Some(body) = notes.get(12..) else {
            return false;
        };
        let Some(note_name) = body.get(..namesz) else {
            return false;
        };
        if note_kind == kind && note_name.strip_suffix(b"\0").unwrap_or(note_name) == name {
            return true;
        }
        let Some(rest) = body.get(padded(namesz) + padded(descsz)..) else {
            return false;
        };
        notes = rest;
    }
    false
}

/// Reads until `buf` is full or the file ends; returns how much it read.
fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Synthetic ELF files for the tests of the modules that read them.
#[cfg(test)]
pub(crate) mod synthetic {
    /// A 64-bit little-endian ELF for `machine` with one program header
    /// per `(type, contents)`, each segment's contents placed after the
    /// table.
    pub fn elf64(machine: u16, segments: &[(u32, &[u8])]) -> Vec<u8> {
        let phoff = 64usize;
        let mut data_at = phoff + 56 * segments.len();
        let mut file = vec![0u8; data_at];
        file[..4].copy_from_slice(b"\x7fELF");
        file[4] = 2; // ELFCLASS64
        file[5] = 1; // little-endian
        file[6] = 1; // EV_CURRENT
        file[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        file[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        file[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        file[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        file[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (kind, contents)) in segments.iter().enumerate() {
            let entry = phoff + 56 * i;
            file[entry..entry + 4].copy_from_slice(&kind.to_le_bytes());
            file[entry + 8..entry + 16].copy_from_slice(&(data_at as u64).to_le_bytes());
            file[entry + 32..entry + 40].copy_from_slice(&(contents.len() as u64).to_le_bytes());
            file.extend_from_slice(contents);
            data_at += contents.len();
        }
        file
    }

    /// One ELF note.
    pub fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(name);
        note.push(0);
        note.resize(note.len().div_ceil(4) * 4, 0);
        note.extend_from_slice(desc);
        note.resize(note.len().div_ceil(4) * 4, 0);
        note
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{elf64, note};
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_machine_interpreter_and_notes() {
        let mut notes = note(b"GNU", 3, &[1, 2, 3, 4]);
        notes.extend(note(b"Xen", 18, &0x100_0000u32.to_le_bytes()));
        let file = elf64(
            EM_X86_64,
            &[(PT_NOTE, &notes), (PT_INTERP, b"/lib/ld.so\0")],
        );
        let mut cursor = Cursor::new(file);
        let elf = Elf::read(&mut cursor).unwrap().unwrap();
        assert!(elf.class64);
        assert_eq!(elf.machine, EM_X86_64);
        assert!(elf.is_dynamic());
        assert!(elf.has_note(&mut cursor, b"Xen", 18).unwrap());
        assert!(!elf.has_note(&mut cursor, b"Xen", 17).unwrap());
        assert!(!elf.has_note(&mut cursor, b"Linux", 18).unwrap());

        let file = elf64(EM_AARCH64, &[(1, b"code")]);
        let elf = Elf::read(&mut Cursor::new(file)).unwrap().unwrap();
        assert_eq!(elf.machine, EM_AARCH64);
        assert!(!elf.is_dynamic());
    }

    #[test]
    fn other_files_are_not_elf_and_truncation_is_no_panic() {
        assert_eq!(
            Elf::read(&mut Cursor::new(b"#!/bin/sh\n".to_vec())).unwrap(),
            None
        );
        assert_eq!(Elf::read(&mut Cursor::new(Vec::new())).unwrap(), None);
        let mut file = elf64(EM_X86_64, &[(PT_NOTE, &note(b"Xen", 18, &[0; 4]))]);
        file.truncate(80);
        let mut cursor = Cursor::new(file);
        let elf = Elf::read(&mut cursor).unwrap().unwrap();
        assert!(elf.segments.is_empty());
        // A note whose sizes run past its segment.
        assert!(!notes_contain(
            &[8, 0, 0, 0, 0xff, 0, 0, 0, 18, 0, 0, 0, b'X'],
            b"Xen",
            18
        ));
    }
}
