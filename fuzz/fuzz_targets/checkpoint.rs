//! Arbitrary bytes into the checkpoint reader: every input must give `Ok` or a typed
//! error, never a panic, a hang or an out-of-memory. The corpus holds zip and legacy
//! checkpoints (see `fuzz/seed.sh`), so both container paths are mutated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lists everything without reading storages.
    let _ = trustgc_checkpoint::inspect_checkpoint_bytes(data);
    // Materializes every tensor (views, dtypes, byte orders).
    let _ = trustgc_checkpoint::read_checkpoint_bytes(data, |_| true);
});
