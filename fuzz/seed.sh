#!/usr/bin/env bash
# Seeds the corpus of each fuzz target, fuzz/corpus/<target> (git-ignored); docs/fuzzing.md
# describes them. The `checkpoint` target:
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

# The `image` target: small PNGs (every colour type and bit depth, interlaced, thin, 1x1)
# written by seeds/make_image_seeds.py with the standard library, and small JPEGs (baseline
# with each subsampling, grayscale, progressive, optimized, restart markers, CMYK, EXIF,
# ICC) written with Pillow from a crop of examples/images/chelsea.png; Pillow is installed
# in a virtual environment under fuzz/target (git-ignored) on first use. Then the PNG
# fixtures of crates/trustgc's tests and the small example images.
images="$here/corpus/image"
mkdir -p "$images"
venv="$here/target/seed-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import PIL' 2>/dev/null; then
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet pillow \
        || echo "seed.sh: could not install Pillow: the image corpus gets no JPEG seeds" >&2
fi
python="$venv/bin/python"
[ -x "$python" ] || python=python3
"$python" "$here/seeds/make_image_seeds.py" "$images" "$here/../examples/images/chelsea.png"
for f in "$here"/../crates/trustgc/tests/data/preprocess/*.png; do
    cp "$f" "$images/fixture-$(basename "$f")"
done
for f in ankle-boot bag trouser; do
    cp "$here/../examples/images/$f.png" "$images/example-$f.png"
done
ls "$images" | wc -l

# The `safetensors` target: the shipped Fashion-MNIST model and the golden mini model's
# weights with the reference's names (mini.safetensors), and the mini model in trustgc's
# names, converted from mini.avg.pt by the release CLI when it is built (the CI's test step
# builds it; set TRUSTGC_CLI to use another); each with its header alone, its first half,
# and its tensors in other dtypes (seeds/make_safetensors_seeds.py), and small hand-made
# files.
weights="$here/corpus/safetensors"
mkdir -p "$weights"
sources=("fashion=$here/../weights/fashion-mnist/model.safetensors"
    "mini-reference=$golden/mini/mini.safetensors")
cli="${TRUSTGC_CLI:-$here/../target/release/trustgc}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
if [ -x "$cli" ] && "$cli" convert "$golden/mini/mini.avg.pt" --config "$here/seeds/config/mini.json" \
    --out "$scratch/mini" >/dev/null; then
    sources+=("mini=$scratch/mini/model.safetensors")
else
    echo "seed.sh: no trustgc CLI at $cli: the mini model in trustgc's names is not a seed" >&2
fi
python3 "$here/seeds/make_safetensors_seeds.py" "$weights" "${sources[@]}"
ls -l "$weights"
