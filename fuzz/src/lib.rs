//! Helpers shared by the fuzz targets.

/// Tar header checksums are sums a mutating fuzzer almost never gets right,
/// so nearly every mutated header would stop at the checksum check. This
/// walks the blocks as a tar reader would (header, then its data) and
/// rewrites each header's checksum, so the targets reach the code behind
/// it. Sizes it cannot read are taken as zero: it only needs to be right
/// often, not always.
pub fn fix_tar_checksums(tar: &mut [u8]) {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let block = &mut tar[at..at + 512];
        at += 512;
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let kind = block[156];
        let mut extended = kind == b'S' && block[482] != 0;
        let size = if matches!(kind, b'1'..=b'6') {
            0
        } else {
            octal(&block[124..136])
        };
        // Old GNU sparse headers are followed by extension blocks.
        while extended && at + 512 <= tar.len() {
            extended = tar[at + 504] != 0;
            at += 512;
        }
        at = at.saturating_add(size.div_ceil(512).saturating_mul(512));
    }
}

fn octal(field: &[u8]) -> usize {
    field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .fold(0usize, |n, &b| {
            n.saturating_mul(8).saturating_add(usize::from(b - b'0'))
        })
}

/// Splits a fuzz input into layer tars at each `LAYER_SEPARATOR`.
pub fn layers(data: &[u8]) -> Vec<&[u8]> {
    let mut layers = Vec::new();
    let mut rest = data;
    while let Some(i) = rest
        .windows(LAYER_SEPARATOR.len())
        .position(|w| w == LAYER_SEPARATOR)
    {
        layers.push(&rest[..i]);
        rest = &rest[i + LAYER_SEPARATOR.len()..];
    }
    layers.push(rest);
    layers
}

/// Between two layers of an `ext4_writer` input.
pub const LAYER_SEPARATOR: &[u8] = b"\n--LAYER--\n";
