//! The `io_manager` that sends libext2fs's block I/O to a [`BlockDev`].
//!
//! ```text
//!   ext2fs_open2(name = "kiln-dev-<n>", manager = &KILN_IO_MANAGER)
//!        │ calls our `open(name)` callback
//!        ▼
//!   REGISTRY[name] ──take──▶ ChannelData { dev: *const dyn BlockDev, writable, shared }
//!        │                        (owned by the channel, freed by our `close` callback)
//!        ▼
//!   read_blk64 / write_blk64 / write_byte / zeroout / flush ──▶ BlockDev::{read_at, write_at, …}
//! ```
//!
//! libext2fs's `open` callback receives nothing but a name, so the device is handed over through a
//! process-wide registry keyed by a unique name. The entry is removed by the callback (or by
//! [`Registration`]'s drop if the library never called it), so nothing outlives one open.
//!
//! Errors of the device are kept in [`Shared::last_error`] so the safe layer can report *why* a
//! read or write failed instead of only libext2fs's "short read".

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_ulong, c_ulonglong, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_blockdev::BlockDev;

use crate::ffi::*;

/// State shared between a channel and the `Filesystem` that owns it.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The most recent error of the block device (taken by the safe layer when it reports).
    pub last_error: Mutex<Option<kiln_blockdev::Error>>,
    /// Bytes written through the channel (for tests and progress; never written to the fs).
    pub bytes_written: AtomicU64,
}

impl Shared {
    pub fn take_error(&self) -> Option<kiln_blockdev::Error> {
        lock(&self.last_error).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A device pointer with its lifetime erased. See [`register`] for why this is sound.
#[derive(Clone, Copy)]
struct DevPtr(*const (dyn BlockDev + 'static));

// SAFETY: the pointee is `Send + Sync` (a `BlockDev` supertrait), so sending the pointer to
// another thread (the registry is a global) is as safe as sending `&dyn BlockDev`.
unsafe impl Send for DevPtr {}

struct Pending {
    dev: DevPtr,
    writable: bool,
    shared: Arc<Shared>,
}

static REGISTRY: Mutex<Option<HashMap<String, Pending>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// What a channel's `private_data` points to.
struct ChannelData {
    dev: DevPtr,
    writable: bool,
    shared: Arc<Shared>,
}

/// A device waiting for libext2fs to open it. Dropping it removes the registry entry if the
/// library did not take it.
pub(crate) struct Registration {
    pub name: CString,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(name) = self.name.to_str()
            && let Some(map) = lock(&REGISTRY).as_mut()
        {
            map.remove(name);
        }
    }
}

/// Make `dev` openable by libext2fs under a fresh unique name.
///
/// The lifetime of `dev` is erased here. Soundness rests on the caller (`Filesystem`), which
/// borrows the device for its own lifetime `'d` and frees the libext2fs handle — which closes the
/// channel, the only holder of the pointer — in `close`/`Drop`, before `'d` can end. If the
/// `Filesystem` is leaked (`mem::forget`) the channel is leaked with it and can never be reached
/// again, so the dangling pointer is never used.
pub(crate) fn register(dev: &dyn BlockDev, writable: bool, shared: Arc<Shared>) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    // No '?' in the name: ext2fs_open2 treats what follows it as io options.
    let name = format!("kiln-blockdev-{}-{id}", std::process::id());
    // SAFETY: only the lifetime changes (same fat-pointer layout); see the function docs for why
    // the pointer is never used after the borrow ends.
    let ptr: *const (dyn BlockDev + 'static) = unsafe {
        std::mem::transmute::<*const (dyn BlockDev + '_), *const (dyn BlockDev + 'static)>(
            dev as *const dyn BlockDev,
        )
    };
    lock(&REGISTRY).get_or_insert_with(HashMap::new).insert(
        name.clone(),
        Pending {
            dev: DevPtr(ptr),
            writable,
            shared,
        },
    );
    Registration {
        name: CString::new(name).unwrap_or_default(),
    }
}

/// The manager handed to `ext2fs_open2`. libext2fs only reads it.
pub(crate) fn manager() -> io_manager {
    // A `static mut` is never needed: the library takes `io_manager` as a non-const pointer but
    // does not write through it, so a pointer to an immutable static is fine.
    ptr::addr_of!(KILN_IO_MANAGER).cast_mut().cast()
}

/// Wrapper so the static can hold raw pointers (the manager name).
#[repr(transparent)]
struct SyncManager(struct_io_manager);
// SAFETY: the manager is immutable and holds only a pointer to a static C string and function
// pointers, all valid for the whole program and safe to share between threads.
unsafe impl Sync for SyncManager {}

static KILN_IO_MANAGER: SyncManager = SyncManager(struct_io_manager {
    magic: EXT2_ET_MAGIC_IO_MANAGER,
    name: c"kiln BlockDev I/O manager".as_ptr(),
    open: Some(kiln_open),
    close: Some(kiln_close),
    set_blksize: Some(kiln_set_blksize),
    read_blk: Some(kiln_read_blk),
    write_blk: Some(kiln_write_blk),
    flush: Some(kiln_flush),
    write_byte: Some(kiln_write_byte),
    set_option: Some(kiln_set_option),
    // No statistics: ext2fs_close2 would add the byte count to s_kbytes_written, which we keep
    // exactly as the input had it (determinism: the superblock changes only where the edit does).
    get_stats: None,
    read_blk64: Some(kiln_read_blk64),
    write_blk64: Some(kiln_write_blk64),
    discard: None,
    cache_readahead: None,
    zeroout: Some(kiln_zeroout),
    reserved: [0; 14],
});

/// Run a callback body, turning a panic into EIO (unwinding into C is undefined behaviour).
fn guard(f: impl FnOnce() -> errcode_t) -> errcode_t {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(EIO)
}

/// # Safety
/// `channel` must be a channel created by [`kiln_open`] and not yet closed.
unsafe fn data<'a>(channel: io_channel) -> Option<(&'a ChannelData, &'a dyn BlockDev, c_int)> {
    if channel.is_null() {
        return None;
    }
    // SAFETY: per the contract, `channel` is a live channel of ours whose private_data is a
    // `Box<ChannelData>` pointer set in kiln_open; the device outlives the channel (see register).
    unsafe {
        let ch = &*channel;
        if ch.magic != EXT2_ET_MAGIC_IO_CHANNEL || ch.private_data.is_null() {
            return None;
        }
        let d = &*(ch.private_data as *const ChannelData);
        Some((d, &*d.dev.0, ch.block_size))
    }
}

fn record(shared: &Shared, e: kiln_blockdev::Error) {
    *lock(&shared.last_error) = Some(e);
}

/// Byte range of a block request: `count < 0` means `-count` bytes.
fn range(block: u64, count: c_int, block_size: c_int) -> Option<(u64, usize)> {
    let bs = u64::try_from(block_size).ok()?;
    let offset = block.checked_mul(bs)?;
    let len = if count < 0 {
        u64::from(count.unsigned_abs())
    } else {
        u64::try_from(count).ok()?.checked_mul(bs)?
    };
    Some((offset, usize::try_from(len).ok()?))
}

unsafe extern "C" fn kiln_open(
    name: *const c_char,
    flags: c_int,
    out: *mut io_channel,
) -> errcode_t {
    guard(|| {
        if name.is_null() || out.is_null() {
            return EXT2_ET_INVALID_ARGUMENT;
        }
        // SAFETY: libext2fs passes a NUL-terminated name.
        let cname = unsafe { CStr::from_ptr(name) };
        let Ok(key) = cname.to_str() else {
            return EXT2_ET_INVALID_ARGUMENT;
        };
        let Some(pending) = lock(&REGISTRY).as_mut().and_then(|m| m.remove(key)) else {
            return EXT2_ET_INVALID_ARGUMENT;
        };
        let wants_rw = flags & IO_FLAG_RW != 0;
        if wants_rw && !pending.writable {
            return EROFS;
        }
        let data = Box::new(ChannelData {
            dev: pending.dev,
            writable: wants_rw,
            shared: pending.shared,
        });
        let channel = Box::new(struct_io_channel {
            magic: EXT2_ET_MAGIC_IO_CHANNEL,
            manager: manager(),
            name: cname.to_owned().into_raw(),
            block_size: 1024,
            read_error: None,
            write_error: None,
            refcount: 1,
            flags: 0,
            reserved: [0; 14],
            private_data: Box::into_raw(data).cast(),
            app_data: ptr::null_mut(),
            align: 0,
        });
        // SAFETY: `out` is a valid out-pointer supplied by libext2fs.
        unsafe { *out = Box::into_raw(channel) };
        0
    })
}

unsafe extern "C" fn kiln_close(channel: io_channel) -> errcode_t {
    guard(|| {
        if channel.is_null() {
            return EXT2_ET_INVALID_ARGUMENT;
        }
        // SAFETY: `channel` was made by kiln_open (Box) and libext2fs calls close once per
        // reference; we free it when the last reference goes.
        unsafe {
            let ch = &mut *channel;
            if ch.magic != EXT2_ET_MAGIC_IO_CHANNEL {
                return EXT2_ET_INVALID_ARGUMENT;
            }
            ch.refcount -= 1;
            if ch.refcount > 0 {
                return 0;
            }
            ch.magic = 0;
            drop(Box::from_raw(ch.private_data as *mut ChannelData));
            drop(CString::from_raw(ch.name));
            drop(Box::from_raw(channel));
        }
        0
    })
}

unsafe extern "C" fn kiln_set_blksize(channel: io_channel, blksize: c_int) -> errcode_t {
    guard(|| {
        if channel.is_null() || blksize <= 0 {
            return EXT2_ET_INVALID_ARGUMENT;
        }
        // SAFETY: a live channel of ours (libext2fs only calls us with channels we made).
        unsafe { (*channel).block_size = blksize };
        0
    })
}

unsafe fn do_read(channel: io_channel, block: u64, count: c_int, buf: *mut c_void) -> errcode_t {
    // SAFETY: forwarded contract of the callbacks.
    let Some((d, dev, bs)) = (unsafe { data(channel) }) else {
        return EXT2_ET_INVALID_ARGUMENT;
    };
    let Some((offset, len)) = range(block, count, bs) else {
        return EXT2_ET_INVALID_ARGUMENT;
    };
    if len == 0 {
        return 0;
    }
    // SAFETY: libext2fs passes a buffer of at least `len` bytes for this request.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    match dev.read_at(slice, offset) {
        Ok(()) => 0,
        Err(e) => {
            slice.fill(0);
            record(&d.shared, e);
            EXT2_ET_SHORT_READ
        }
    }
}

unsafe fn do_write(channel: io_channel, offset: u64, len: usize, buf: *const c_void) -> errcode_t {
    // SAFETY: forwarded contract of the callbacks.
    let Some((d, dev, _)) = (unsafe { data(channel) }) else {
        return EXT2_ET_INVALID_ARGUMENT;
    };
    if !d.writable {
        return EROFS;
    }
    if len == 0 {
        return 0;
    }
    // SAFETY: libext2fs passes a buffer of at least `len` bytes for this request.
    let slice = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    match dev.write_at(slice, offset) {
        Ok(()) => {
            d.shared
                .bytes_written
                .fetch_add(len as u64, Ordering::Relaxed);
            0
        }
        Err(e) => {
            record(&d.shared, e);
            EXT2_ET_SHORT_WRITE
        }
    }
}

unsafe extern "C" fn kiln_read_blk(
    channel: io_channel,
    block: c_ulong,
    count: c_int,
    buf: *mut c_void,
) -> errcode_t {
    // SAFETY: forwarded callback contract.
    guard(|| unsafe { do_read(channel, block, count, buf) })
}

unsafe extern "C" fn kiln_read_blk64(
    channel: io_channel,
    block: c_ulonglong,
    count: c_int,
    buf: *mut c_void,
) -> errcode_t {
    // SAFETY: forwarded callback contract.
    guard(|| unsafe { do_read(channel, block, count, buf) })
}

unsafe fn write_blocks(
    channel: io_channel,
    block: u64,
    count: c_int,
    buf: *const c_void,
) -> errcode_t {
    // SAFETY: forwarded callback contract.
    let Some((_, _, bs)) = (unsafe { data(channel) }) else {
        return EXT2_ET_INVALID_ARGUMENT;
    };
    let Some((offset, len)) = range(block, count, bs) else {
        return EXT2_ET_INVALID_ARGUMENT;
    };
    // SAFETY: forwarded callback contract.
    unsafe { do_write(channel, offset, len, buf) }
}

unsafe extern "C" fn kiln_write_blk(
    channel: io_channel,
    block: c_ulong,
    count: c_int,
    buf: *const c_void,
) -> errcode_t {
    // SAFETY: forwarded callback contract.
    guard(|| unsafe { write_blocks(channel, block, count, buf) })
}

unsafe extern "C" fn kiln_write_blk64(
    channel: io_channel,
    block: c_ulonglong,
    count: c_int,
    buf: *const c_void,
) -> errcode_t {
    // SAFETY: forwarded callback contract.
    guard(|| unsafe { write_blocks(channel, block, count, buf) })
}

unsafe extern "C" fn kiln_write_byte(
    channel: io_channel,
    offset: c_ulong,
    count: c_int,
    buf: *const c_void,
) -> errcode_t {
    guard(|| {
        let Ok(len) = usize::try_from(count) else {
            return EXT2_ET_INVALID_ARGUMENT;
        };
        // SAFETY: forwarded callback contract; `buf` holds `count` bytes.
        unsafe { do_write(channel, offset, len, buf) }
    })
}

unsafe extern "C" fn kiln_flush(channel: io_channel) -> errcode_t {
    guard(|| {
        // SAFETY: forwarded callback contract.
        let Some((d, dev, _)) = (unsafe { data(channel) }) else {
            return EXT2_ET_INVALID_ARGUMENT;
        };
        if !d.writable {
            return 0;
        }
        match dev.flush() {
            Ok(()) => 0,
            Err(e) => {
                record(&d.shared, e);
                EIO
            }
        }
    })
}

unsafe extern "C" fn kiln_zeroout(
    channel: io_channel,
    block: c_ulonglong,
    count: c_ulonglong,
) -> errcode_t {
    guard(|| {
        // SAFETY: forwarded callback contract.
        let Some((d, dev, bs)) = (unsafe { data(channel) }) else {
            return EXT2_ET_INVALID_ARGUMENT;
        };
        if !d.writable {
            return EROFS;
        }
        let bs = bs as u64;
        let (Some(offset), Some(len)) = (block.checked_mul(bs), count.checked_mul(bs)) else {
            return EXT2_ET_INVALID_ARGUMENT;
        };
        match dev.write_zeroes(offset, len) {
            Ok(()) => 0,
            Err(e) => {
                record(&d.shared, e);
                EXT2_ET_SHORT_WRITE
            }
        }
    })
}

unsafe extern "C" fn kiln_set_option(
    _channel: io_channel,
    _option: *const c_char,
    _arg: *const c_char,
) -> errcode_t {
    // No options: the same answer unix_io gives for an option it does not know.
    EXT2_ET_INVALID_ARGUMENT
}
