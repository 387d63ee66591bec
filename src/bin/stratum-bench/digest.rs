//! A streaming digest of a byte stream that is the same whatever the
//! chunking, and cheap enough for the saturating generator.
//!
//! `sim::Digest` (FNV-1a) takes one multiply per byte in a dependent chain,
//! about 4 cycles a byte: at a million relayed lines a second the generator
//! hashes some 170 MB/s (each byte twice, once per side), which would be a
//! quarter of its core (an estimate). This one takes one multiply per 8
//! bytes, in four independent chains.

/// Multiplier of the mixing step (odd, so each step is a bijection).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
/// Independent lanes: word `i` of each 32-byte block goes to lane `i`, so the
/// four multiply chains overlap in the CPU instead of waiting on each other.
const LANES: usize = 4;
/// Bytes per block (one word per lane).
const BLOCK_BYTES: usize = LANES * 8;

/// Length, the lanes' hashes of the whole 32-byte blocks so far and the
/// bytes after the last whole block. Two streams with equal digests are
/// equal with high probability; any single changed word always changes the
/// digest (each step is a bijection of its lane).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordDigest {
    /// Bytes seen.
    bytes: u64,
    lanes: [u64; LANES],
    /// The bytes after the last whole block (the rest zero).
    tail: [u8; BLOCK_BYTES],
}

impl WordDigest {
    /// Adds the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        let filled = (self.bytes % BLOCK_BYTES as u64) as usize;
        self.bytes += data.len() as u64;
        if filled != 0 {
            let take = (BLOCK_BYTES - filled).min(data.len());
            self.tail[filled..filled + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if filled + take < BLOCK_BYTES {
                return;
            }
            let block = self.tail;
            self.tail = [0; BLOCK_BYTES];
            self.lanes = mix_block(self.lanes, &block);
        }
        let (blocks, rest) = data.as_chunks::<BLOCK_BYTES>();
        let mut lanes = self.lanes;
        for block in blocks {
            lanes = mix_block(lanes, block);
        }
        self.lanes = lanes;
        self.tail[..rest.len()].copy_from_slice(rest);
    }
}

/// One block: word `i` into lane `i`, each step a bijection of the lane.
fn mix_block(mut lanes: [u64; LANES], block: &[u8; BLOCK_BYTES]) -> [u64; LANES] {
    let (words, _) = block.as_chunks::<8>();
    for (lane, word) in lanes.iter_mut().zip(words) {
        *lane = (*lane ^ u64::from_le_bytes(*word))
            .wrapping_mul(MIX)
            .rotate_left(29);
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(chunks: &[&[u8]]) -> WordDigest {
        let mut d = WordDigest::default();
        for c in chunks {
            d.update(c);
        }
        d
    }

    #[test]
    fn any_chunking_gives_the_same_digest() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = of(&[&data]);
        for a in 0..data.len() {
            for b in [a, a + 1, a + 5, a + 9, data.len()] {
                let b = b.min(data.len());
                assert_eq!(of(&[&data[..a], &data[a..b], &data[b..]]), whole, "{a} {b}");
            }
        }
        let bytewise: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(of(&bytewise), whole);
    }

    #[test]
    fn a_changed_missing_or_extra_byte_changes_the_digest() {
        let data = b"{\"id\":1000000001,\"result\":true,\"error\":null}\n".repeat(3);
        let whole = of(&[&data]);
        for i in 0..data.len() {
            let mut changed = data.clone();
            changed[i] ^= 0x20;
            assert_ne!(of(&[&changed]), whole, "byte {i}");
            let mut missing = data.clone();
            missing.remove(i);
            assert_ne!(of(&[&missing]), whole, "byte {i}");
        }
        assert_ne!(of(&[&data, b"\n"]), whole);
    }
}
