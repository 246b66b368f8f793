//! The ext4 writer's tar reader on arbitrary bytes: it must end every
//! stream with entries or an error, never a panic, a hang or an allocation
//! the input does not pay for, and an entry's data must be exactly its size.
//!
//! The first byte picks how the stream is read: bit 0 leaves header
//! checksums as they are (else they are fixed, to get past them), bits 1-2
//! the read size, bit 3 skips holes a block at a time (as the writer does)
//! rather than a byte, bit 4 leaves entries' data for `next` to skip, bit 5
//! reads only some of it.
#![no_main]

use std::io::Read;

use container::fuzzing::TarReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    let mut tar = tar.to_vec();
    if mode & 1 == 0 {
        container_fuzz::fix_tar_checksums(&mut tar);
    }
    let read_size = [1, 7, 512, 65536][usize::from(mode >> 1 & 3)];
    let align = if mode & 8 != 0 { 4096 } else { 1 };
    let mut buf = vec![0u8; read_size];
    let mut reader = TarReader::new(&tar[..]);
    loop {
        let header = match reader.next() {
            Ok(Some(header)) => header,
            Ok(None) => {
                assert!(matches!(reader.next(), Ok(None)), "the end stays the end");
                return;
            }
            Err(_) => return,
        };
        if matches!(header.kind, b'1'..=b'6') {
            assert_eq!(
                header.size, 0,
                "links, directories and devices have no data"
            );
        }
        if mode & 16 != 0 {
            continue;
        }
        // Holes are skipped, as the writer skips them: a sparse map can
        // describe exabytes of them in a few bytes.
        let mut remaining = header.size;
        let mut failed = false;
        while remaining > 0 {
            let hole = reader.skip_hole(remaining, align);
            if hole > 0 {
                remaining -= hole;
                continue;
            }
            let want = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            match reader.read(&mut buf[..want]) {
                Ok(0) => panic!("data ended {remaining} bytes early without an error"),
                Ok(n) => remaining -= n as u64,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            if mode & 32 != 0 {
                break;
            }
        }
        if failed {
            return;
        }
        if remaining == 0 {
            assert_eq!(reader.read(&mut buf).unwrap(), 0, "data past the size");
        }
    }
});
