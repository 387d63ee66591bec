//! Stratum V1 simulators: a pool ([`pool`]) and a fleet of miners ([`miner`]).
//!
//! They are library code so that tests, benchmarks and `stratum-proxy demo`
//! can run them in-process on an explicit executor; `src/bin/pool-sim.rs` and
//! `src/bin/miner-sim.rs` are thin command-line wrappers. Both sides keep a
//! chunk-invariant [`Digest`] of every byte they sent and received, so a test
//! can prove that a relay between them changed nothing.

pub mod miner;
pub mod pool;

use serde::Serialize;
use smol::channel::{Receiver, Sender};

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Length and FNV-1a 64 hash of a byte stream; the same whatever the chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// Bytes seen.
    pub bytes: u64,
    /// FNV-1a 64 of all bytes seen, in order.
    pub fnv1a: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            bytes: 0,
            fnv1a: FNV_OFFSET,
        }
    }
}

impl Digest {
    /// A digest of no bytes.
    pub fn new() -> Self {
        Digest::default()
    }

    /// The digest of `bytes` in one piece.
    pub fn of(bytes: &[u8]) -> Self {
        let mut digest = Digest::new();
        digest.update(bytes);
        digest
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut hash = self.fnv1a;
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        self.fnv1a = hash;
        self.bytes += bytes.len() as u64;
    }
}

/// The reject reasons pool-sim gives, with the codes pools commonly use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RejectCode {
    /// 21: the job is stale or unknown.
    JobNotFound,
    /// 22: the share was already submitted.
    Duplicate,
    /// 23: the share does not meet the difficulty.
    LowDifficulty,
    /// 24: the worker is not authorized.
    Unauthorized,
}

impl RejectCode {
    /// Every reason, in code order.
    pub const ALL: [RejectCode; 4] = [
        RejectCode::JobNotFound,
        RejectCode::Duplicate,
        RejectCode::LowDifficulty,
        RejectCode::Unauthorized,
    ];

    /// The numeric code in `[code, "message", null]`.
    pub const fn code(self) -> i64 {
        match self {
            RejectCode::JobNotFound => 21,
            RejectCode::Duplicate => 22,
            RejectCode::LowDifficulty => 23,
            RejectCode::Unauthorized => 24,
        }
    }

    /// The message text pools send with the code.
    pub const fn message(self) -> &'static str {
        match self {
            RejectCode::JobNotFound => "Job not found",
            RejectCode::Duplicate => "Duplicate share",
            RejectCode::LowDifficulty => "Low difficulty share",
            RejectCode::Unauthorized => "Unauthorized worker",
        }
    }

    /// The reason for a numeric code, if it is one of the four.
    pub fn from_code(code: i64) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Parses a comma-separated list of codes such as `21,23`.
    pub fn parse_list(text: &str) -> Result<Vec<RejectCode>, String> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(RejectCode::from_code)
                    .ok_or_else(|| format!("unknown reject code {s:?}: use 21, 22, 23 or 24"))
            })
            .collect()
    }
}

/// Rejected shares counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RejectCounts {
    /// Code 21.
    pub job_not_found: u64,
    /// Code 22.
    pub duplicate: u64,
    /// Code 23.
    pub low_difficulty: u64,
    /// Code 24.
    pub unauthorized: u64,
    /// Any other code, or a rejection without a code.
    pub other: u64,
}

impl RejectCounts {
    /// Counts one rejection with `code` (`None` or unknown codes go to `other`).
    pub fn add(&mut self, code: Option<i64>) {
        match code.and_then(RejectCode::from_code) {
            Some(RejectCode::JobNotFound) => self.job_not_found += 1,
            Some(RejectCode::Duplicate) => self.duplicate += 1,
            Some(RejectCode::LowDifficulty) => self.low_difficulty += 1,
            Some(RejectCode::Unauthorized) => self.unauthorized += 1,
            None => self.other += 1,
        }
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        self.job_not_found + self.duplicate + self.low_difficulty + self.unauthorized + self.other
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: &RejectCounts) {
        self.job_not_found += other.job_not_found;
        self.duplicate += other.duplicate;
        self.low_difficulty += other.low_difficulty;
        self.unauthorized += other.unauthorized;
        self.other += other.other;
    }
}

/// Tells simulator tasks to stop (gracefully); cheap to clone.
#[derive(Debug, Clone)]
pub struct StopSignal {
    receiver: Receiver<()>,
}

/// The sending side of a [`StopSignal`]; stopping is idempotent.
#[derive(Debug, Clone)]
pub struct StopHandle {
    sender: Sender<()>,
}

impl StopHandle {
    /// Signals every clone of the paired [`StopSignal`].
    pub fn stop(&self) {
        self.sender.close();
    }
}

impl StopSignal {
    /// A new signal and the handle that fires it.
    pub fn new() -> (StopHandle, StopSignal) {
        let (sender, receiver) = smol::channel::bounded(1);
        (StopHandle { sender }, StopSignal { receiver })
    }

    /// Whether the signal has fired.
    pub fn is_stopped(&self) -> bool {
        self.receiver.is_closed()
    }

    /// Completes once the signal has fired.
    pub async fn wait(&self) {
        // Nothing is ever sent: `recv` only returns when the channel closes.
        let _ = self.receiver.recv().await;
    }
}

/// Deterministic pseudo-random numbers (splitmix64) for realistic-looking hex.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Appends `hex_chars` lower-case hex digits to `out`.
    pub(crate) fn push_hex(&mut self, out: &mut String, hex_chars: usize) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut left = hex_chars;
        while left > 0 {
            let mut word = self.next_u64();
            for _ in 0..16.min(left) {
                out.push(char::from(HEX[(word & 0xf) as usize]));
                word >>= 4;
            }
            left = left.saturating_sub(16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_chunk_invariant() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = Digest::of(&data);
        let mut pieces = Digest::new();
        for chunk in data.chunks(13) {
            pieces.update(chunk);
        }
        assert_eq!(whole, pieces);
        assert_eq!(whole.bytes, 1000);
        assert_ne!(whole, Digest::of(&data[1..]));
    }

    #[test]
    fn fnv1a_known_value() {
        // FNV-1a 64 of "a" is a published test vector.
        assert_eq!(Digest::of(b"a").fnv1a, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn stop_signal_fires_all_clones() {
        let (handle, signal) = StopSignal::new();
        let other = signal.clone();
        assert!(!other.is_stopped());
        handle.stop();
        assert!(signal.is_stopped() && other.is_stopped());
        smol::block_on(other.wait());
    }

    #[test]
    fn hex_has_requested_length() {
        let mut rng = SplitMix::new(1);
        let mut s = String::new();
        rng.push_hex(&mut s, 37);
        assert_eq!(s.len(), 37);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
