"""Fixtures for crates/trustgc/tests/jpeg_pillow.rs: small JPEGs of every kind the decoder
must handle, and what Pillow (the reference's image library, with its libjpeg-turbo) makes
of them: `np.asarray(Image.open(f).convert('RGB'))`, and `.convert('L')` where the file is
not YCbCr, as the raw bytes `NAME.rgb` and `NAME.l` (row-major, interleaved). A file Pillow
refuses is listed with Pillow's exception instead. `manifest.json` lists every fixture with
its size, Pillow's mode, and the versions that computed it.

Sources: crops of photos in Debian's python3-skimage (skimage/data): chelsea.png (CC0),
rocket.jpg (public domain, SpaceX) and retina.jpg (public domain); the two JPEGs are cropped
losslessly with jpegtran, so their encoder's tables and coefficients are kept.

Run from this folder (README.md has the exact commands):
    python make_fixtures.py SKIMAGE_DATA_DIR
Needs Pillow and numpy, and libjpeg-turbo-progs (cjpeg, jpegtran) for the samplings Pillow
cannot write (4:4:0, 4:1:1), arithmetic coding and the lossless crops.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import PIL
from PIL import Image, features

DATA = sys.argv[1]
OUT = os.path.dirname(os.path.abspath(__file__))
chelsea = Image.open(os.path.join(DATA, "chelsea.png")).convert("RGB")
# Odd sizes on purpose: partial MCUs and chroma upsampling at the right and bottom edges.
SMALL = chelsea.crop((200, 100, 237, 129))  # 37x29, fur and whiskers
LARGE = chelsea.crop((150, 60, 220, 111))  # 70x51, fur and an eye

jpegs = {}


def pillow_jpeg(name, image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    jpegs[name] = buffer.getvalue()


def cjpeg(name, image, sampling):
    ppm = io.BytesIO()
    image.save(ppm, "PPM")
    jpegs[name] = subprocess.run(
        ["cjpeg", "-quality", "75", "-sample", sampling],
        input=ppm.getvalue(),
        check=True,
        capture_output=True,
    ).stdout


def jpegtran(name, source, *args):
    jpegs[name] = subprocess.run(
        ["jpegtran", "-copy", "none", *args],
        input=source,
        check=True,
        capture_output=True,
    ).stdout


def segment(data, marker):
    """Offset of the first segment with this marker code (the 0xFF byte)."""
    return data.index(bytes([0xFF, marker]))


for size, image in [("37x29", SMALL), ("70x51", LARGE)]:
    pillow_jpeg(f"baseline-420-{size}", image, quality=75, subsampling="4:2:0")
    pillow_jpeg(f"baseline-422-{size}", image, quality=75, subsampling="4:2:2")
pillow_jpeg("baseline-444-37x29", SMALL, quality=75, subsampling="4:4:4")
pillow_jpeg("progressive-420-70x51", LARGE, quality=75, progressive=True)
pillow_jpeg("progressive-444-37x29", SMALL, quality=85, subsampling="4:4:4", progressive=True)
pillow_jpeg("grayscale-37x29", SMALL.convert("L"), quality=75)
pillow_jpeg("grayscale-progressive-70x51", LARGE.convert("L"), quality=75, progressive=True)
# Pillow writes CMYK with an Adobe marker (transform 0) and inverted values (Adobe's
# convention); it reads every 4-component JPEG as inverted CMYK.
pillow_jpeg("cmyk-adobe-37x29", SMALL.convert("CMYK"), quality=75)
# YCCK (Adobe transform 2), which Pillow cannot write: the four channels written are the
# photo's YCbCr (inverted, as Pillow inverts CMYK when it writes) and a K ramp, and the
# Adobe marker's transform byte is set to 2, so libjpeg turns them into CMYK when reading.
ycbcr = np.asarray(SMALL.convert("YCbCr"))
k = (np.arange(37)[None, :] * 5 + np.arange(29)[:, None] * 3).astype(np.uint8)
stored = np.dstack([ycbcr, k])
pillow_jpeg(
    "ycck-adobe-37x29", Image.fromarray(255 - stored, "CMYK"), quality=75
)
ycck = bytearray(jpegs["ycck-adobe-37x29"])
adobe = ycck.index(b"Adobe")
assert ycck[adobe + 11] == 0, "Pillow's Adobe marker says CMYK"
ycck[adobe + 11] = 2
jpegs["ycck-adobe-37x29"] = bytes(ycck)
# RGB stored without the YCbCr transform (Adobe transform 0).
pillow_jpeg("rgb-adobe-37x29", SMALL, quality=75, keep_rgb=True)
pillow_jpeg("optimized-huffman-37x29", SMALL, quality=75, optimize=True)
pillow_jpeg("restart-interval-37x29", SMALL, quality=75, restart_marker_blocks=2)
pillow_jpeg("quality50-37x29", SMALL, quality=50)
pillow_jpeg("quality95-37x29", SMALL, quality=95)
cjpeg("sampling-440-37x29", SMALL, "1x2,1x1,1x1")
cjpeg("sampling-411-70x51", LARGE, "4x1,1x1,1x1")
jpegtran("arithmetic-420-70x51", jpegs["baseline-420-70x51"], "-arithmetic")
with open(os.path.join(DATA, "rocket.jpg"), "rb") as f:
    jpegtran("rocket-444-70x51", f.read(), "-crop", "70x51+288+160")
with open(os.path.join(DATA, "retina.jpg"), "rb") as f:
    jpegtran("retina-420-70x51", f.read(), "-crop", "70x51+288+352")

# Damaged files. Entropy-coded data overwritten in the middle: libjpeg warns and decodes
# what it can (Pillow ignores the warnings), so the pixels are still Pillow's.
damaged = bytearray(jpegs["baseline-420-70x51"])
scan = segment(damaged, 0xDA)
middle = (scan + len(damaged)) // 2
damaged[middle : middle + 16] = bytes(range(0x10, 0x20))
jpegs["damaged-scan-70x51"] = bytes(damaged)
# Refused: cut in the middle of the scan, a 12-bit frame header, a frame header that says
# 2 components, a bogus Huffman table.
whole = jpegs["baseline-420-37x29"]
jpegs["truncated-37x29"] = whole[: (segment(whole, 0xDA) + len(whole)) // 2]
precision = bytearray(whole)
precision[segment(whole, 0xC0) + 4] = 12
jpegs["precision12-37x29"] = bytes(precision)
components = bytearray(whole)
components[segment(whole, 0xC0) + 9] = 2
jpegs["two-components-37x29"] = bytes(components)
huffman = bytearray(whole)
# The first table's 16 code-length counts, all 255: more codes than any table can hold.
dht = segment(whole, 0xC4)
huffman[dht + 5 : dht + 21] = bytes([255] * 16)
jpegs["bad-huffman-37x29"] = bytes(huffman)

manifest = {
    "pillow": PIL.__version__,
    "libjpeg_turbo": features.version("libjpeg_turbo"),
    "numpy": np.__version__,
    "fixtures": [],
}
os.chdir(OUT)
for name, data in jpegs.items():
    with open(f"{name}.jpg", "wb") as f:
        f.write(data)
    entry = {"name": name}
    try:
        with Image.open(f"{name}.jpg") as image:
            mode = image.mode
            rgb = np.asarray(image.convert("RGB"))
        with Image.open(f"{name}.jpg") as image:
            luma = np.asarray(image.convert("L"))
    except Exception as e:  # noqa: BLE001: any refusal is what the test expects
        entry["refused"] = f"{type(e).__name__}: {e}"
    else:
        entry.update(mode=mode, width=rgb.shape[1], height=rgb.shape[0])
        with open(f"{name}.rgb", "wb") as f:
            f.write(rgb.tobytes())
        if mode != "RGB":
            with open(f"{name}.l", "wb") as f:
                f.write(luma.tobytes())
            entry["l"] = True
    manifest["fixtures"].append(entry)
with open("manifest.json", "w") as f:
    json.dump(manifest, f, indent=1)
    f.write("\n")
for entry in manifest["fixtures"]:
    print(entry)
