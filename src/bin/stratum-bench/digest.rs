//! A streaming digest of a byte stream that is the same whatever the
//! chunking, and cheap enough for the saturating generator.
//!
//! `sim::Digest` (FNV-1a) takes one multiply per byte in a dependent chain,
//! about 4 cycles a byte: at a million relayed lines a second the generator
//! hashes some 170 MB/s (each byte twice, once per side), which would be a
//! quarter of its core. This one takes one multiply per 8 bytes.

/// Multiplier of the mixing step (odd, so each step is a bijection).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Length, hash of the whole 8-byte words so far and the bytes of the last,
/// partial word. Two streams with equal digests are equal with high
/// probability; any single changed word always changes the digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordDigest {
    /// Bytes seen.
    bytes: u64,
    hash: u64,
    /// The bytes after the last whole word, little-endian.
    tail: u64,
}

impl WordDigest {
    /// Adds the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        let filled = (self.bytes % 8) as usize;
        self.bytes += data.len() as u64;
        if filled != 0 {
            let take = (8 - filled).min(data.len());
            for (i, &b) in data[..take].iter().enumerate() {
                self.tail |= u64::from(b) << (8 * (filled + i));
            }
            data = &data[take..];
            if filled + take < 8 {
                return;
            }
            self.hash = mix(self.hash, self.tail);
            self.tail = 0;
        }
        let (words, rest) = data.as_chunks::<8>();
        let mut hash = self.hash;
        for word in words {
            hash = mix(hash, u64::from_le_bytes(*word));
        }
        self.hash = hash;
        for (i, &b) in rest.iter().enumerate() {
            self.tail |= u64::from(b) << (8 * i);
        }
    }
}

/// One step: a bijection of `hash` for a given `word`.
fn mix(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(MIX).rotate_left(29)
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
