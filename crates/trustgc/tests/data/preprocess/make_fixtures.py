"""Fixtures for crates/trustgc/tests/preprocess.rs, computed with Pillow (the reference's
image library): small PNGs in Pillow's less common modes and what Pillow makes of them.

Run from this folder: `python3 make_fixtures.py` (needs `pip install pillow pypng`).
Writes *.png and expected.json. Pillow version used is recorded in expected.json.
"""
import json
import random

import PIL
import png
from PIL import Image

random.seed(7)
W, H = 37, 23


def noise(n, hi):
    return [random.randrange(hi) for _ in range(n)]


images = {}
# 8-bit grayscale, grayscale+alpha, RGB, RGBA, palette.
images["gray_l"] = Image.frombytes("L", (W, H), bytes(noise(W * H, 256)))
images["gray_la"] = Image.frombytes("LA", (W, H), bytes(noise(W * H * 2, 256)))
images["rgb"] = Image.frombytes("RGB", (W, H), bytes(noise(W * H * 3, 256)))
images["rgba"] = Image.frombytes("RGBA", (W, H), bytes(noise(W * H * 4, 256)))
pal = Image.frombytes("P", (W, H), bytes(noise(W * H, 16)))
pal.putpalette(noise(16 * 3, 256))
images["palette"] = pal
for name, im in images.items():
    im.save(f"{name}.png")

# 16-bit grayscale (values above 255 on purpose) and 16-bit RGB, written with pypng.
gray16 = [noise(W, 1024) for _ in range(H)]
with open("gray16.png", "wb") as f:
    png.Writer(W, H, greyscale=True, bitdepth=16).write(f, gray16)
rgb16 = [noise(W * 3, 65536) for _ in range(H)]
with open("rgb16.png", "wb") as f:
    png.Writer(W, H, greyscale=False, bitdepth=16).write(f, rgb16)

expected = {"pillow": PIL.__version__, "images": {}}
for name in ["gray_l", "gray_la", "rgb", "rgba", "palette", "gray16", "rgb16"]:
    im = Image.open(f"{name}.png")
    rgb = im.convert("RGB")
    luma = im.convert("L")
    # torchvision Resize(16) + CenterCrop(12) on the RGB image.
    w, h = rgb.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = 16, int(16 * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    resized = rgb.resize(size, Image.BILINEAR)
    rw, rh = resized.size
    top, left = int(round((rh - 12) / 2.0)), int(round((rw - 12) / 2.0))
    cropped = resized.crop((left, top, left + 12, top + 12))
    expected["images"][name] = {
        "mode": im.mode,
        "rgb": list(rgb.tobytes()),
        "l": list(luma.tobytes()),
        "resized_size": list(resized.size),
        "resized": list(resized.tobytes()),
        "cropped": list(cropped.tobytes()),
    }
with open("expected.json", "w") as f:
    json.dump(expected, f)
print({k: v["mode"] for k, v in expected["images"].items()})
