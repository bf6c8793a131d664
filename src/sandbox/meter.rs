//! The engine's allocator: Rust's, metered, so the memory limit is ours to
//! enforce and to recognise. QuickJS reports a refused allocation as a thrown
//! `InternalError` or, when even that cannot be allocated, as a thrown `null`,
//! and a guest may catch either; the meter's `refused` flag says for certain
//! that the limit was reached.

use std::cell::Cell;
use std::rc::Rc;

use rquickjs::allocator::{Allocator, RustAllocator};

/// What the engine has allocated, against its limit.
#[derive(Default)]
pub(crate) struct Meter {
    pub used: Cell<usize>,
    /// The most `used` has been since it was last reset.
    pub peak: Cell<usize>,
    pub limit: Cell<usize>,
    pub refused: Cell<bool>,
    /// What the host holds for the execution running now, outside the engine.
    pub outside: std::cell::RefCell<Option<super::Held>>,
}

impl Meter {
    fn add(&self, bytes: usize) {
        let used = self.used.get() + bytes;
        self.used.set(used);
        self.peak.set(self.peak.get().max(used));
    }

    /// Counts bytes the host holds for the guest outside the engine (a host
    /// call's request, while the call runs) as the engine's own, when they fit
    /// under the limit; when they do not, it is the limit reached.
    pub fn reserve(&self, bytes: usize) -> bool {
        let fits = self.admit(bytes);
        if fits {
            self.add(bytes);
        }
        fits
    }

    /// Gives back what [`Meter::reserve`] counted.
    pub fn release(&self, bytes: usize) {
        self.used.set(self.used.get().saturating_sub(bytes));
    }

    fn admit(&self, more: usize) -> bool {
        let fits = self
            .used
            .get()
            .checked_add(more)
            .and_then(|total| {
                total.checked_add(self.outside.borrow().as_ref().map_or(0, |h| h.bytes()))
            })
            .is_some_and(|total| total <= self.limit.get());
        if !fits {
            self.refused.set(true);
        }
        fits
    }
}

pub(crate) struct Metered(pub Rc<Meter>);

// SAFETY: every pointer is allocated and freed by `RustAllocator`, which
// records each block's size; the meter only counts.
unsafe impl Allocator for Metered {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.0.admit(size) {
            return std::ptr::null_mut();
        }
        let ptr = RustAllocator.alloc(size);
        if !ptr.is_null() {
            self.0.add(unsafe { RustAllocator::usable_size(ptr) });
        }
        ptr
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        if total == 0 || !self.0.admit(total) {
            return std::ptr::null_mut();
        }
        let ptr = RustAllocator.calloc(1, total);
        if !ptr.is_null() {
            self.0.add(unsafe { RustAllocator::usable_size(ptr) });
        }
        ptr
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        if ptr.is_null() {
            return;
        }
        let size = unsafe { RustAllocator::usable_size(ptr) };
        self.0.used.set(self.0.used.get().saturating_sub(size));
        unsafe { RustAllocator.dealloc(ptr) }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        if new_size == 0 {
            unsafe { self.dealloc(ptr) };
            return std::ptr::null_mut();
        }
        let old = unsafe { RustAllocator::usable_size(ptr) };
        if new_size > old && !self.0.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        let moved = unsafe { RustAllocator.realloc(ptr, new_size) };
        if !moved.is_null() {
            self.0.used.set(self.0.used.get() - old);
            self.0.add(unsafe { RustAllocator::usable_size(moved) });
        }
        moved
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        unsafe { RustAllocator::usable_size(ptr) }
    }
}
