//! An IDX images file of seeded uniform noise, shared by the CLI's test crates through
//! `#[path = ".../tests-support/noise_idx.rs"] mod noise;`.

use std::path::Path;

/// Writes an IDX images file of `count` 28×28 images of seeded uniform noise to `path`.
pub fn noise_idx(path: &Path, count: usize) {
    let mut bytes = Vec::new();
    bytes.extend(2051u32.to_be_bytes());
    for n in [count as u32, 28, 28] {
        bytes.extend(n.to_be_bytes());
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..count * 784 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push((state >> 56) as u8);
    }
    std::fs::write(path, &bytes).expect("write the noise IDX file");
}
