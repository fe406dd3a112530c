//! Building the released ImageNet architecture allocates no more than its parameters
//! need: the 590 MB class-mean matrix is never built, permutations are index vectors,
//! and convolution weights stay lazy until they are loaded or used.
//!
//! A counting global allocator measures the peak heap growth while the model is built.
//! This file holds a single test so that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Flex;
use trustgc::core::params::parameter_shapes;
use trustgc::{GcConfig, GenerativeClassifier};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size > layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::SeqCst) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::SeqCst);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn building_imagenet_allocates_no_more_than_its_parameters() {
    let config = GcConfig::imagenet();
    let device = Default::default();
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let model = GenerativeClassifier::<Flex>::new(&config, &device).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    let resident = CURRENT.load(Ordering::SeqCst) - before;

    let elements: usize = parameter_shapes::<Flex, _>(&model)
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    let parameter_bytes = 4 * elements;
    println!(
        "parameters: {elements} values ({:.1} MB as float32); build peak {:.1} MB, resident {:.1} MB",
        parameter_bytes as f64 / 1e6,
        peak as f64 / 1e6,
        resident as f64 / 1e6
    );
    // The reference's dense permutation matrices alone would be 256 MB and mu_conv 590 MB.
    assert!(
        peak <= parameter_bytes,
        "building allocated {peak} bytes, more than the {parameter_bytes} the parameters need"
    );
    // Lazy initialization: only small fixed tensors, BatchNorm statistics and mu_fc (12.3 MB)
    // are materialized by building.
    assert!(
        peak < 64_000_000,
        "building allocated {peak} bytes; convolution weights should stay lazy"
    );
    drop(model);
}
