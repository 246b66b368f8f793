//! Block allocation. Free space is a map of free runs rather than a bitmap:
//! an image is mostly one huge free run, deletions add a few holes, and the
//! on-disk bitmaps are derived from the runs once, at the end.

use std::collections::BTreeMap;

/// A run of consecutive blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub len: u64,
}

#[derive(Debug)]
pub struct Allocator {
    /// Free runs by start block; never adjacent (they are merged on free).
    free: BTreeMap<u64, u64>,
    free_blocks: u64,
}

impl Allocator {
    /// Everything in `0..blocks` starts free.
    pub fn new(blocks: u64) -> Self {
        Allocator {
            free: BTreeMap::from([(0, blocks)]),
            free_blocks: blocks,
        }
    }

    pub fn free_blocks(&self) -> u64 {
        self.free_blocks
    }

    /// Marks a specific range used; it must be free (fixed metadata only).
    pub fn reserve(&mut self, run: Run) {
        let (&start, &len) = self
            .free
            .range(..=run.start)
            .next_back()
            .expect("reserved range is free");
        assert!(run.start + run.len <= start + len, "reserved range is free");
        self.free.remove(&start);
        if run.start > start {
            self.free.insert(start, run.start - start);
        }
        let end = run.start + run.len;
        if end < start + len {
            self.free.insert(end, start + len - end);
        }
        self.free_blocks -= run.len;
    }

    /// One contiguous run of `n` blocks, the lowest that fits.
    pub fn allocate_contiguous(&mut self, n: u64) -> Option<u64> {
        let start = self
            .free
            .iter()
            .find(|&(_, &len)| len >= n)
            .map(|(&s, _)| s)?;
        self.reserve(Run { start, len: n });
        Some(start)
    }

    /// The start of the lowest free run that holds `n` blocks.
    pub fn find_fit(&self, n: u64) -> Option<u64> {
        self.free
            .iter()
            .find(|&(_, &len)| len >= n)
            .map(|(&s, _)| s)
    }

    /// `n` blocks, starting at `at` for as long as blocks there are free
    /// (so a file written in pieces continues where it left off), the rest
    /// as [`Allocator::allocate`] finds them.
    pub fn allocate_from(&mut self, at: Option<u64>, n: u64) -> Option<Vec<Run>> {
        if n > self.free_blocks {
            return None;
        }
        if n == 0 {
            return Some(Vec::new());
        }
        let mut runs = Vec::new();
        if let Some(start) = at
            && let Some(&len) = self.free.get(&start)
        {
            let run = Run {
                start,
                len: len.min(n),
            };
            self.reserve(run);
            runs.push(run);
        }
        let taken: u64 = runs.iter().map(|r| r.len).sum();
        if taken < n {
            runs.extend(self.allocate(n - taken)?);
        }
        Some(runs)
    }

    /// `n` blocks, contiguous when any free run is long enough, otherwise
    /// gathered from the lowest runs. Files stay in one piece wherever
    /// possible, and a full-ish image still takes a fragmented file.
    pub fn allocate(&mut self, n: u64) -> Option<Vec<Run>> {
        if n > self.free_blocks {
            return None;
        }
        if let Some(start) = self.allocate_contiguous(n) {
            return Some(vec![Run { start, len: n }]);
        }
        let mut runs = Vec::new();
        let mut left = n;
        while left > 0 {
            let (&start, &len) = self.free.iter().next().expect("free_blocks counted");
            let take = len.min(left);
            self.reserve(Run { start, len: take });
            runs.push(Run { start, len: take });
            left -= take;
        }
        Some(runs)
    }

    pub fn free(&mut self, run: Run) {
        if run.len == 0 {
            return;
        }
        let mut start = run.start;
        let mut len = run.len;
        if let Some((&prev, &plen)) = self.free.range(..start).next_back() {
            debug_assert!(prev + plen <= start, "double free");
            if prev + plen == start {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nlen;
        }
        self.free.insert(start, len);
        self.free_blocks += run.len;
    }

    /// Free runs in block order.
    pub fn free_runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.free.iter().map(|(&start, &len)| Run { start, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(a: &Allocator) -> Vec<(u64, u64)> {
        a.free_runs().map(|r| (r.start, r.len)).collect()
    }

    #[test]
    fn reserve_splits_and_free_merges() {
        let mut a = Allocator::new(100);
        a.reserve(Run { start: 10, len: 5 });
        assert_eq!(runs(&a), [(0, 10), (15, 85)]);
        assert_eq!(a.free_blocks(), 95);
        a.free(Run { start: 10, len: 5 });
        assert_eq!(runs(&a), [(0, 100)]);
    }

    #[test]
    fn prefers_one_piece_then_gathers() {
        let mut a = Allocator::new(100);
        a.reserve(Run { start: 0, len: 100 });
        a.free(Run { start: 10, len: 3 });
        a.free(Run { start: 50, len: 10 });
        assert_eq!(a.allocate(5), Some(vec![Run { start: 50, len: 5 }]));
        assert_eq!(
            a.allocate(6),
            Some(vec![Run { start: 10, len: 3 }, Run { start: 55, len: 3 }])
        );
        assert_eq!(a.free_blocks(), 2);
        assert_eq!(a.allocate(3), None);
        assert_eq!(a.allocate_contiguous(2), Some(58));
    }

    #[test]
    fn allocate_from_continues_then_falls_back() {
        let mut a = Allocator::new(100);
        a.reserve(Run { start: 20, len: 10 });
        assert_eq!(a.find_fit(30), Some(30));
        assert_eq!(
            a.allocate_from(Some(30), 5),
            Some(vec![Run { start: 30, len: 5 }])
        );
        assert_eq!(
            a.allocate_from(Some(35), 5),
            Some(vec![Run { start: 35, len: 5 }])
        );
        // Block 12 is not the start of a free run: fall back to first fit.
        assert_eq!(
            a.allocate_from(Some(12), 3),
            Some(vec![Run { start: 0, len: 3 }])
        );
        a.reserve(Run { start: 45, len: 55 });
        assert_eq!(
            a.allocate_from(Some(40), 7),
            Some(vec![Run { start: 40, len: 5 }, Run { start: 3, len: 2 }])
        );
    }
}
