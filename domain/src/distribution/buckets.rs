//! Dense bucket counts over a contiguous range of bucket indices.

/// Counts for the indices `offset .. offset + counts.len()`. Real
/// distributions span a few thousand buckets at most (21 decades, from 1e-9 to
/// 1e12, are about 4,500), so a dense array beats any map on both speed and
/// size.
#[derive(Debug, Clone, Default)]
pub(super) struct Buckets {
    offset: i32,
    counts: Vec<u64>,
}

impl Buckets {
    /// The bytes its counts take on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
    }

    #[inline]
    pub(super) fn add(&mut self, index: i32, n: u64) {
        // A negative difference wraps to a huge usize and misses, like one past the end.
        let position = index.wrapping_sub(self.offset) as usize;
        match self.counts.get_mut(position) {
            Some(count) => *count = count.saturating_add(n),
            None => {
                self.cover(index, index);
                let position = (index - self.offset) as usize;
                self.counts[position] = self.counts[position].saturating_add(n);
            }
        }
    }

    /// Widens the range to include `low..=high`.
    fn cover(&mut self, low: i32, high: i32) {
        if self.counts.is_empty() {
            self.offset = low;
            self.counts.resize((high - low) as usize + 1, 0);
            return;
        }
        if low < self.offset {
            let extra = (self.offset - low) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, extra));
            self.offset = low;
        }
        let end = (high - self.offset) as usize + 1;
        if end > self.counts.len() {
            self.counts.resize(end, 0);
        }
    }

    pub(super) fn merge(&mut self, other: &Buckets) {
        if other.counts.is_empty() {
            return;
        }
        let other_high = other.offset + other.counts.len() as i32 - 1;
        self.cover(other.offset, other_high);
        let start = (other.offset - self.offset) as usize;
        for (mine, theirs) in self.counts[start..].iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Non-empty buckets as `(index, count)`, lowest index first.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(move |(i, &n)| (offset + i as i32, n))
    }

    /// Lowest and highest non-empty index.
    pub(super) fn range(&self) -> Option<(i32, i32)> {
        let low = self.iter().next()?.0;
        let high = self.iter().next_back()?.0;
        Some((low, high))
    }
}
