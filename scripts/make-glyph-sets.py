#!/usr/bin/env python3
"""Builds three more near out-of-distribution sets for docs/ood.md, as IDX files
(28 x 28, 8-bit, white on black like MNIST and Fashion-MNIST).

Needs Pillow, NumPy and scikit-learn (`pip install pillow numpy scikit-learn`). Usage:

    python3 scripts/make-glyph-sets.py OUT_DIR LATIN_FONT_DIR [...] --cjk CJK_FONT [...]

Sets written to OUT_DIR/<name>/t10k-images-idx3-ubyte.gz:
  letters         A-Z and a-z rendered in every .ttf under the LATIN_FONT_DIRs (the idea of
                  notMNIST: glyphs from fonts, not handwriting)
  kana-kanji      the hiragana and katakana blocks and every 16th CJK ideograph from U+4E00
                  that the font has, rendered in each CJK_FONT
  sklearn-digits  scikit-learn's bundled 8 x 8 handwritten digits (the UCI "Optical
                  Recognition of Handwritten Digits" set, 1,797 images; CC BY 4.0), scaled
                  up bilinearly: blurrier digits than MNIST's

Every glyph is scaled, keeping its aspect, so its longer side is 20 pixels, then placed
in a 28 x 28 image with its centre of mass at the centre: MNIST's normalization.

The fonts used for docs/ood.md are Debian's (bookworm) packages, unpacked without
installing them:

    apt-get download fonts-dejavu-core fonts-liberation fonts-freefont-ttf \
        fonts-ipafont-gothic fonts-ipafont-mincho
    for d in *.deb; do dpkg -x "$d" fonts; done
    python3 scripts/make-glyph-sets.py sets fonts/usr/share/fonts/truetype/dejavu \
        fonts/usr/share/fonts/truetype/liberation fonts/usr/share/fonts/truetype/freefont \
        --cjk fonts/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf \
        fonts/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf
"""
import gzip
import os
import string
import struct
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RENDER = 96  # font size of the first rendering, before scaling down to 20 pixels


def write_idx_images(path, images):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28))
        for image in images:
            assert image.shape == (28, 28) and image.dtype == np.uint8
            f.write(image.tobytes())


def mnist_normalize(ink):
    """A 2-D array of ink (0..255, any size) -> 28 x 28 uint8, MNIST's way."""
    ys, xs = np.nonzero(ink > 0)
    if len(ys) == 0:
        return None
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(
        Image.fromarray(ink.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.float64,
    )
    total = small.sum()
    if total <= 0:
        return None
    cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
    top = int(round(13.5 - cy))
    left = int(round(13.5 - cx))
    top = min(max(top, 0), 28 - small.shape[0])
    left = min(max(left, 0), 28 - small.shape[1])
    out = np.zeros((28, 28), dtype=np.float64)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render(font, char):
    canvas = Image.new("L", (RENDER * 2, RENDER * 2), 0)
    ImageDraw.Draw(canvas).text((RENDER // 2, RENDER // 4), char, fill=255, font=font)
    return mnist_normalize(np.asarray(canvas, dtype=np.float64))


def glyph(font, char, missing):
    """`char` rendered, or None where the font has no glyph for it (its rendering is the
    .notdef box, `missing`) or draws nothing."""
    image = render(font, char)
    if image is None or (missing is not None and np.array_equal(image, missing)):
        return None
    return image


def fonts_under(dirs):
    paths = []
    for d in dirs:
        for root, _, files in os.walk(d):
            paths += [os.path.join(root, f) for f in files if f.lower().endswith(".ttf")]
    return sorted(paths)


def main(argv):
    if "--cjk" not in argv or len(argv) < 4:
        sys.exit(__doc__)
    split = argv.index("--cjk")
    out, latin_dirs, cjk_fonts = argv[1], argv[2:split], argv[split + 1 :]

    letters = []
    for path in fonts_under(latin_dirs):
        font = ImageFont.truetype(path, RENDER)
        missing = render(font, "\uffff")
        for char in string.ascii_letters:
            image = glyph(font, char, missing)
            if image is not None:
                letters.append(image)
    write_idx_images(os.path.join(out, "letters", "t10k-images-idx3-ubyte.gz"), letters)

    chars = [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)]
    chars += [chr(c) for c in range(0x4E00, 0x9FA0, 16)]
    kana = []
    for path in cjk_fonts:
        font = ImageFont.truetype(path, RENDER)
        missing = render(font, "\uffff")
        for char in chars:
            image = glyph(font, char, missing)
            if image is not None:
                kana.append(image)
    write_idx_images(os.path.join(out, "kana-kanji", "t10k-images-idx3-ubyte.gz"), kana)

    from sklearn.datasets import load_digits

    digits = []
    for small in load_digits().images:  # 8 x 8, values 0..16
        big = Image.fromarray((small * (255.0 / 16.0)).astype(np.float32), mode="F")
        big = np.asarray(big.resize((80, 80), Image.Resampling.BILINEAR), dtype=np.float64)
        image = mnist_normalize(np.where(big > 8, big, 0))
        if image is not None:
            digits.append(image)
    write_idx_images(os.path.join(out, "sklearn-digits", "t10k-images-idx3-ubyte.gz"), digits)

    print(
        f"wrote letters ({len(letters)}), kana-kanji ({len(kana)}), "
        f"sklearn-digits ({len(digits)}) to {out}"
    )


if __name__ == "__main__":
    main(sys.argv)
