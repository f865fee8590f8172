//! Criterion benches of the copy-on-write path, entirely in memory: 4 KiB random and 1 MiB sequential
//! writes into an overlay over a zlib-compressed base, and whole-cluster reads through the chain.
//! `cargo xtask bench` compares the same work against qemu-io / qemu-img as ratios.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_blockdev::{BlockDev, MemDev};
use kiln_qcow2::{
    Backing, CompressionType, CreateOptions, Disk, FlattenOptions, Image, NewBacking, OpenOptions,
    flatten,
};

const BASE: u64 = 64 << 20;

/// A 64 MiB base whose clusters are all zlib-compressed, held in memory.
fn compressed_base() -> Vec<u8> {
    let plain = MemDev::new(0);
    let img = Image::create(
        Box::new(plain),
        "plain",
        CreateOptions {
            size: BASE,
            cluster_bits: 16,
            compression: CompressionType::Zlib,
            backing: None,
        },
    )
    .expect("create");
    let mut block = vec![0u8; 1 << 20];
    for m in 0..(BASE >> 20) {
        for (i, b) in block.iter_mut().enumerate() {
            *b = (i as u64 * 7 + m) as u8 ^ (i >> 9) as u8;
        }
        img.write_at(&block, m << 20).expect("write");
    }
    let src = Disk::Qcow2(img);
    let out = MemDev::new(0);
    let opts = FlattenOptions {
        compression: Some(CompressionType::Zlib),
        ..FlattenOptions::default()
    };
    flatten(&src, &out, "base".as_ref(), &opts, &|_, _| {}).expect("flatten");
    out.to_vec()
}

fn overlay(base: &[u8]) -> Image {
    let b = Image::open_storage(
        Box::new(MemDev::from_vec(base.to_vec())),
        "/base.qcow2",
        &OpenOptions::default(),
    )
    .expect("open base");
    Image::create(
        Box::new(MemDev::new(0)),
        "/overlay.qcow2",
        CreateOptions {
            size: BASE,
            cluster_bits: 16,
            compression: CompressionType::Zlib,
            backing: Some(NewBacking {
                image: Backing::Qcow2(Box::new(b)),
                name: "base.qcow2".into(),
            }),
        },
    )
    .expect("create overlay")
}

fn cow(c: &mut Criterion) {
    let base = compressed_base();
    let mut g = c.benchmark_group("cow");
    g.sample_size(10);

    g.throughput(Throughput::Bytes(4096 * 512));
    g.bench_function("4k_random_writes_x512", |b| {
        b.iter(|| {
            let img = overlay(&base);
            let buf = [0x5au8; 4096];
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..512 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                img.write_at(&buf, (x % (BASE / 4096)) * 4096)
                    .expect("write");
            }
            black_box(img.close()).expect("close");
        })
    });

    g.throughput(Throughput::Bytes(32 << 20));
    g.bench_function("1m_sequential_writes_x32", |b| {
        let buf = vec![0xa5u8; 1 << 20];
        b.iter(|| {
            let img = overlay(&base);
            for i in 0..32u64 {
                img.write_at(&buf, i << 20).expect("write");
            }
            black_box(img.close()).expect("close");
        })
    });

    g.throughput(Throughput::Bytes(BASE));
    g.bench_function("read_through_chain_64m", |b| {
        let img = overlay(&base);
        let mut buf = vec![0u8; 1 << 16];
        b.iter(|| {
            for off in (0..BASE).step_by(1 << 16) {
                img.read_at(&mut buf, off).expect("read");
            }
            black_box(&buf);
        })
    });
    g.finish();
}

criterion_group!(benches, cow);
criterion_main!(benches);
