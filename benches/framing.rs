//! Criterion benchmarks of the hot path's two pure parts: the line framer and
//! the borrowed message view, on realistic Stratum V1 lines (a mining.notify
//! with 12 merkle branches, a submit, responses true/false/error, a
//! set_difficulty). Throughput is reported per line.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stratum_proxy::stratum::{Frame, LineFramer, Message, Shapes};

/// Deterministic hex digits (a linear congruential generator; realism, not randomness).
fn hex(seed: &mut u64, chars: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..chars)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(HEX[(*seed >> 60) as usize])
        })
        .collect()
}

/// A mining.notify like a pool sends: 12 merkle branches, about 1.3 KB.
fn notify_line() -> Vec<u8> {
    let mut seed = 7;
    let branches: Vec<String> = (0..12)
        .map(|_| format!("\"{}\"", hex(&mut seed, 64)))
        .collect();
    format!(
        "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"1a2b\",\"00000000{}\",\"{}\",\"{}\",[{}],\"20000000\",\"17034219\",\"6564a2f0\",true]}}\n",
        hex(&mut seed, 56),
        hex(&mut seed, 120),
        hex(&mut seed, 310),
        branches.join(",")
    )
    .into_bytes()
}

/// The realistic lines, by name, each ending in a newline.
fn lines() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("notify_12_branches", notify_line()),
        (
            "submit",
            b"{\"params\":[\"account.worker17\",\"1a2b\",\"0000a3f1\",\"6564a2f0\",\"9c1e44d2\"],\"id\":4711,\"method\":\"mining.submit\"}\n".to_vec(),
        ),
        (
            "response_true",
            b"{\"id\":4711,\"result\":true,\"error\":null}\n".to_vec(),
        ),
        (
            "response_false",
            b"{\"id\":4712,\"result\":false,\"error\":null}\n".to_vec(),
        ),
        (
            "response_error",
            b"{\"id\":4713,\"result\":null,\"error\":[23,\"Low difficulty share\",null]}\n".to_vec(),
        ),
        (
            "set_difficulty",
            b"{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[1024]}\n".to_vec(),
        ),
    ]
}

/// Lines per batch, so per-iteration overhead does not dominate short lines.
const BATCH_LINES: usize = 64;

fn framer(c: &mut Criterion) {
    let mut group = c.benchmark_group("framer");
    group.throughput(Throughput::Elements(BATCH_LINES as u64));
    for (name, line) in lines() {
        let batch = line.repeat(BATCH_LINES);
        let mut framer = LineFramer::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut count = 0usize;
                framer.push(black_box(&batch), |frame| {
                    if let Frame::Line(l) = frame {
                        count += l.len();
                    }
                });
                black_box(count)
            })
        });
    }
    group.finish();
}

fn message_view(c: &mut Criterion) {
    let mut group = c.benchmark_group("message_view");
    group.throughput(Throughput::Elements(1));
    for (name, line) in lines() {
        let body = &line[..line.len() - 1];
        group.bench_function(name, |b| {
            b.iter(|| {
                let message = Message::parse(black_box(body));
                if let Ok(m) = &message {
                    black_box((m.kind(), m.method(), m.id(), m.outcome(), m.difficulty()));
                }
                black_box(message.is_ok())
            })
        });
    }
    group.finish();
}

fn message_view_shaped(c: &mut Criterion) {
    // The same view through `Shapes`, as the relay takes it: each line
    // repeated, so after the first it fits its kept shape (notify is too
    // long to be kept and is scanned in full, as in `message_view`).
    let mut group = c.benchmark_group("message_view_shaped");
    group.throughput(Throughput::Elements(1));
    for (name, line) in lines() {
        let body = &line[..line.len() - 1];
        let mut shapes = Shapes::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let message = shapes.parse(black_box(body));
                if let Ok(m) = &message {
                    black_box((m.kind(), m.method(), m.id(), m.outcome(), m.difficulty()));
                }
                black_box(message.is_ok())
            })
        });
    }
    // The worst case: more shapes in turn than a cache keeps (eight), so
    // every line misses them all, is scanned in full and replaces the
    // least recently used shape. Per line, against `message_view` of the
    // same lines scanned in full.
    let turns: Vec<Vec<u8>> = (0..9)
        .map(|k| {
            format!(
                "{{\"params\":[\"account.worker17\",\"1a2b\",\"0000a3f1\",\"6564a2f0\",\"9c1e44d2\"],\"id\":4711,\"method\":\"x{k}\"}}"
            )
            .into_bytes()
        })
        .collect();
    let mut shapes = Shapes::new();
    let mut next = 0;
    group.bench_function("nine_shapes_in_turn", |b| {
        b.iter(|| {
            next = (next + 1) % turns.len();
            black_box(shapes.parse(black_box(&turns[next])).is_ok())
        })
    });
    let mut next = 0;
    group.bench_function("nine_shapes_in_turn_full_scan", |b| {
        b.iter(|| {
            next = (next + 1) % turns.len();
            black_box(Message::parse(black_box(&turns[next])).is_ok())
        })
    });
    group.finish();
}

fn frame_and_view(c: &mut Criterion) {
    // What the relay does per chunk: frame, then view each line.
    let mut group = c.benchmark_group("frame_and_view");
    let mixed: Vec<u8> = lines().into_iter().flat_map(|(_, l)| l).collect();
    let per_batch = lines().len() as u64;
    group.throughput(Throughput::Elements(per_batch));
    let mut framer = LineFramer::new();
    group.bench_function("mixed_6_lines", |b| {
        b.iter(|| {
            let mut parsed = 0usize;
            framer.push(black_box(&mixed), |frame| {
                if let Frame::Line(l) = frame {
                    parsed += usize::from(Message::parse(l).is_ok());
                }
            });
            black_box(parsed)
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    framer,
    message_view,
    message_view_shaped,
    frame_and_view
);
criterion_main!(benches);
