"""Seeds for the `image` fuzz target (run by fuzz/seed.sh).

Usage: make_image_seeds.py OUT_DIR PHOTO.png

Small PNGs written with the standard library (every colour type and bit depth, Adam7
interlacing, a transparency chunk, thin and 1x1 images), and, when Pillow is importable,
small JPEGs of a crop of PHOTO (baseline 4:2:0, 4:2:2 and 4:4:4, grayscale, progressive,
optimized Huffman tables, restart markers, CMYK, an EXIF and an ICC segment). Everything is
deterministic. Without Pillow only the PNGs are written (and the script says so).
"""
import random
import struct
import sys
import zlib
from pathlib import Path

random.seed(9)


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def pack_row(samples, depth):
    """One scanline's bytes (filter byte excluded) for samples of `depth` bits."""
    if depth == 8:
        return bytes(samples)
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    out, acc, bits = bytearray(), 0, 0
    for s in samples:
        acc, bits = (acc << depth) | s, bits + depth
        if bits == 8:
            out.append(acc)
            acc, bits = 0, 0
    if bits:
        out.append(acc << (8 - bits))
    return bytes(out)


CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(width, height, color, depth, interlace=False, extra=b"", filters=(0,)):
    c = CHANNELS[color]
    top = (1 << depth) - 1
    pixels = [[[random.randint(0, top) for _ in range(c)] for _ in range(width)] for _ in range(height)]
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    row_no = 0
    for x0, y0, dx, dy in passes:
        for y in range(y0, height, dy):
            xs = range(x0, width, dx)
            if not xs:
                continue
            samples = [v for x in xs for v in pixels[y][x]]
            # Filters other than 0 on raw bytes: the decoder undoes whatever the bytes are.
            raw.append(filters[row_no % len(filters)])
            raw += pack_row(samples, depth)
            row_no += 1
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, int(interlace))
    plte = b""
    if color == 3:
        plte = chunk(b"PLTE", bytes(random.randrange(256) for _ in range(3 * (1 << depth))))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + plte + extra
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b""))


def write_pngs(out):
    for color, depths in [(0, [1, 2, 4, 8, 16]), (2, [8, 16]), (3, [1, 2, 4, 8]),
                          (4, [8, 16]), (6, [8, 16])]:
        for depth in depths:
            (out / f"c{color}-d{depth}.png").write_bytes(png(13, 9, color, depth))
    (out / "adam7-rgb.png").write_bytes(png(19, 17, 2, 8, interlace=True))
    (out / "adam7-gray2.png").write_bytes(png(11, 10, 0, 2, interlace=True))
    (out / "filters-rgba.png").write_bytes(png(12, 10, 6, 8, filters=(0, 1, 2, 3, 4)))
    (out / "trns-rgb.png").write_bytes(png(8, 8, 2, 8, extra=chunk(b"tRNS", b"\x00\x10\x00\x20\x00\x30")))
    (out / "trns-palette.png").write_bytes(png(8, 8, 3, 4, extra=chunk(b"tRNS", bytes(range(0, 256, 16)))))
    (out / "gamma-text.png").write_bytes(png(6, 6, 2, 8, extra=chunk(b"gAMA", struct.pack(">I", 45455))
                                             + chunk(b"tEXt", b"Comment\x00fuzz")))
    (out / "one-pixel.png").write_bytes(png(1, 1, 0, 8))
    (out / "thin-row.png").write_bytes(png(400, 1, 2, 8))
    (out / "thin-column.png").write_bytes(png(1, 300, 0, 8))
    (out / "fashion-size.png").write_bytes(png(28, 28, 0, 8))


def write_jpegs(out, photo):
    from PIL import Image

    rgb = Image.open(photo).convert("RGB")
    w, h = rgb.size
    crop = rgb.crop((w // 3, h // 3, w // 3 + 48, h // 3 + 40))
    odd = rgb.crop((w // 2, h // 4, w // 2 + 37, h // 4 + 23))
    gray = crop.convert("L")
    saves = [
        ("base-420.jpg", crop, dict(quality=75, subsampling=2)),
        ("base-422.jpg", crop, dict(quality=85, subsampling=1)),
        ("base-444.jpg", odd, dict(quality=95, subsampling=0)),
        ("odd-420.jpg", odd, dict(quality=50, subsampling=2)),
        ("gray.jpg", gray, dict(quality=80)),
        ("progressive.jpg", crop, dict(quality=80, progressive=True)),
        ("progressive-gray.jpg", gray, dict(quality=70, progressive=True)),
        ("optimized.jpg", odd, dict(quality=90, optimize=True)),
        ("cmyk.jpg", crop.convert("CMYK"), dict(quality=80)),
        ("one-pixel.jpg", crop.crop((0, 0, 1, 1)), dict(quality=90)),
        ("thin.jpg", rgb.crop((0, h // 2, 300, h // 2 + 2)), dict(quality=75)),
        ("fashion-size.jpg", gray.resize((28, 28)), dict(quality=90)),
        ("icc.jpg", odd, dict(quality=75, icc_profile=b"\x00" * 128)),
        ("exif.jpg", odd, dict(quality=75, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00")),
    ]
    for name, image, options in saves:
        image.save(out / name, "JPEG", **options)
    try:
        crop.save(out / "restart.jpg", "JPEG", quality=75, restart_marker_blocks=2)
    except TypeError:  # Pillow before 11.1 has no restart option
        return len(saves)
    return len(saves) + 1


def main():
    out, photo = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    write_pngs(out)
    try:
        count = write_jpegs(out, photo)
    except ImportError:
        print("make_image_seeds.py: Pillow is not importable: no JPEG seeds written", file=sys.stderr)
        return
    print(f"make_image_seeds.py: {count} JPEG seeds")


if __name__ == "__main__":
    main()
