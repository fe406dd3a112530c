#!/usr/bin/env bash
# Seeds the fuzz corpus of the `checkpoint` target (fuzz/corpus/checkpoint, git-ignored):
# the four golden checkpoints of shared/golden/mini (zip and legacy), the legacy file's
# pickles without its storages, and two small hand-made checkpoints (zip and legacy)
# written by the ignored test `write_fuzz_seeds` of trustgc-checkpoint.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
golden="${TRUSTGC_GOLDEN:-$here/../../shared/golden}"
corpus="$here/corpus/checkpoint"
mkdir -p "$corpus"
for f in mini.avg.pt mini_legacy.avg.pt mini_clean.avg.pt mini_cudaloc.avg.pt; do
    install -m 644 "$golden/mini/$f" "$corpus/golden_$f"
done
# The five pickles of the legacy file end at byte 58701; keep them and a few storages.
head -c 65536 "$golden/mini/mini_legacy.avg.pt" > "$corpus/golden_legacy_head.pt"
TRUSTGC_WRITE_SEEDS="$corpus" cargo test --quiet --manifest-path "$here/../Cargo.toml" \
    -p trustgc-checkpoint --test synthetic -- --ignored write_fuzz_seeds
ls -l "$corpus"

# The `config` target: configs in trustgc's own words (committed in fuzz/seeds/config).
mkdir -p "$here/corpus/config"
cp "$here"/seeds/config/*.json "$here/corpus/config/"
ls -l "$here/corpus/config"
