//! A vector that grows by fixed-size chunks, for the loop's slots.
//!
//! A `Vec` that doubles holds up to twice what it needs (at 100k slots, 131 072 places are
//! allocated: a third more than used) and copies everything it holds each time it grows. This
//! one grows by chunks of [`CHUNK`] places: the first chunk doubles up to that size, every
//! later one is allocated whole, and nothing is ever moved. The cost is one more load per
//! access (the chunk's pointer, from a small array that stays in cache).

use std::ops::{Index, IndexMut};

/// Places per chunk. A power of two, so that an index splits with a shift and a mask.
const CHUNK: usize = 1024;

/// See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct ChunkedVec<T> {
    /// Every chunk but the last is full.
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> ChunkedVec<T> {
    pub(crate) const fn new() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                if last.len() == last.capacity() {
                    // Only the first chunk starts small: double it, but not past a chunk.
                    let wanted = (2 * last.capacity()).clamp(4, CHUNK);
                    last.reserve_exact(wanted - last.len());
                }
                last.push(value);
            }
            _ => {
                let mut chunk = if self.chunks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(CHUNK)
                };
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks.get_mut(index / CHUNK)?.get_mut(index % CHUNK)
    }

    /// Takes every value out, in order, leaving the vector empty.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;

    /// # Panics
    ///
    /// If `index` is out of bounds, as a slice would.
    fn index(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK][index % CHUNK]
    }
}

impl<T> IndexMut<usize> for ChunkedVec<T> {
    /// # Panics
    ///
    /// If `index` is out of bounds, as a slice would.
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index / CHUNK][index % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_values_in_order_across_chunks() {
        let mut values = ChunkedVec::new();
        assert_eq!(values.len(), 0);
        let count = 3 * CHUNK + 5;
        for value in 0..count {
            values.push(value);
        }
        assert_eq!(values.len(), count);
        for index in 0..count {
            assert_eq!(values[index], index);
            assert_eq!(values.get_mut(index), Some(&mut index.clone()));
        }
        values[CHUNK] = 0;
        *values.get_mut(CHUNK + 1).unwrap() = 0;
        assert_eq!(values.get_mut(count), None);
        let taken: Vec<usize> = values.take_all().collect();
        assert_eq!(values.len(), 0);
        assert_eq!(taken.len(), count);
        assert_eq!(&taken[CHUNK..CHUNK + 3], &[0, 0, CHUNK + 2]);
        assert_eq!(taken[count - 1], count - 1);
    }

    #[test]
    fn values_never_move_once_pushed() {
        let mut values = ChunkedVec::new();
        values.push(0_u64);
        // The first chunk may still move while it doubles; once full, nothing moves.
        for value in 1..CHUNK as u64 {
            values.push(value);
        }
        let first: *const u64 = &values[0];
        let last_of_first: *const u64 = &values[CHUNK - 1];
        for value in 0..4 * CHUNK as u64 {
            values.push(value);
        }
        assert_eq!(first, &values[0] as *const u64);
        assert_eq!(last_of_first, &values[CHUNK - 1] as *const u64);
        assert!(values.chunks.iter().all(|chunk| chunk.capacity() == CHUNK));
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn indexing_past_the_end_panics_like_a_slice() {
        let mut values = ChunkedVec::new();
        values.push(1);
        let _ = values[1];
    }
}
