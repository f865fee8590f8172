//! Cluster compression as qemu does it: zlib is a raw deflate stream with a 4 KiB window
//! (`windowBits = -12`), zstd is one zstd frame. A compressed cluster's stored length is rounded up to
//! 512-byte sectors, so decoders must stop at the end of the stream and ignore what follows.

use crate::header::CompressionType;

use std::cell::RefCell;

thread_local! {
    /// Decoder contexts are costly to create; each thread keeps one of each kind.
    static INFLATE: RefCell<Option<flate2::Decompress>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { RefCell::new(None) };
}

/// Decompress `input` into exactly `out.len()` bytes.
pub fn decompress(ty: CompressionType, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match ty {
        CompressionType::Zlib => INFLATE.with_borrow_mut(|slot| {
            let d = match slot {
                Some(d) => {
                    d.reset(false);
                    d
                }
                None => slot.insert(flate2::Decompress::new_with_window_bits(false, 12)),
            };
            let status = d
                .decompress(input, out, flate2::FlushDecompress::Finish)
                .map_err(|e| format!("deflate: {e}"))?;
            if d.total_out() as usize != out.len() {
                return Err(format!(
                    "deflate stream produced {} bytes, expected {} ({status:?})",
                    d.total_out(),
                    out.len()
                ));
            }
            Ok(())
        }),
        CompressionType::Zstd => ZSTD.with_borrow_mut(|slot| {
            use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
            let d = match slot {
                Some(d) => {
                    d.reinit().map_err(|e| format!("zstd: {e}"))?;
                    d
                }
                None => slot.insert(Decoder::new().map_err(|e| format!("zstd: {e}"))?),
            };
            let want = out.len();
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(out);
            loop {
                let (in_before, out_before) = (inb.pos(), outb.pos());
                let hint = d
                    .run(&mut inb, &mut outb)
                    .map_err(|e| format!("zstd: {e}"))?;
                if outb.pos() == want {
                    if hint != 0 {
                        return Err("zstd frame is longer than one cluster".into());
                    }
                    return Ok(());
                }
                if hint == 0 || (inb.pos() == in_before && outb.pos() == out_before) {
                    return Err(format!(
                        "zstd frame ended after {} bytes, expected {want}",
                        outb.pos()
                    ));
                }
            }
        }),
    }
}

thread_local! {
    static DEFLATE: RefCell<Option<flate2::Compress>> = const { RefCell::new(None) };
    static ZSTD_C: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Compress one cluster. Deterministic: the same input always gives the same bytes. `None` when the
/// encoder fails; the caller then stores the cluster uncompressed.
pub fn compress(ty: CompressionType, input: &[u8]) -> Option<Vec<u8>> {
    match ty {
        CompressionType::Zlib => DEFLATE.with_borrow_mut(|slot| {
            let c = match slot {
                Some(c) => {
                    c.reset();
                    c
                }
                None => slot.insert(flate2::Compress::new_with_window_bits(
                    flate2::Compression::default(),
                    false,
                    12,
                )),
            };
            let mut out = Vec::with_capacity(input.len() + 64);
            loop {
                let before = c.total_in() as usize;
                let status = c
                    .compress_vec(&input[before..], &mut out, flate2::FlushCompress::Finish)
                    .ok()?;
                if status == flate2::Status::StreamEnd {
                    return Some(out);
                }
                out.reserve(out.capacity().max(4096));
            }
        }),
        CompressionType::Zstd => ZSTD_C.with_borrow_mut(|slot| {
            let c = match slot {
                Some(c) => c,
                None => slot.insert(zstd::bulk::Compressor::new(3).ok()?),
            };
            c.compress(input).ok()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_trailing_garbage() {
        let mut data = vec![0u8; 65536];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        for ty in [CompressionType::Zlib, CompressionType::Zstd] {
            let mut c = compress(ty, &data).unwrap();
            assert!(c.len() < data.len());
            c.extend_from_slice(&[0xAB; 511]);
            let mut out = vec![0u8; 65536];
            decompress(ty, &c, &mut out).unwrap();
            assert_eq!(out, data);
            assert_eq!(compress(ty, &data), compress(ty, &data));
            let mut short = vec![0u8; 65536 + 1];
            assert!(
                decompress(ty, &c, &mut short).is_err(),
                "{ty:?}: a short stream must be an error"
            );
        }
    }
}
