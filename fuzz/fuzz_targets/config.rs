//! Arbitrary bytes into the config parser: every input must give a valid config or a typed
//! `ConfigError`, never a panic, a hang or an unbounded allocation. For a valid config the
//! derived quantities (node list, key table) are computed too, as every loader does before
//! allocating anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustgc_core::GcConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = GcConfig::from_json(text) {
        let _ = config.nodes();
        let _ = config.num_params();
        let _ = trustgc_core::keymap::key_table(&config);
        let _ = (config.total_dims(), config.conv_dims(), config.dct_size(), config.final_channels());
        // Serializing and parsing again gives the same config.
        assert_eq!(GcConfig::from_json(&config.to_json()).ok(), Some(config));
    }
});
