"""Seeds for the `safetensors` fuzz target (run by fuzz/seed.sh; Python 3 standard library only).

Usage: make_safetensors_seeds.py OUT_DIR NAME=FILE.safetensors...

For each FILE: the file itself, its header alone, its first half, and the same tensors
rewritten with other dtypes (floats as f64, f16 or bf16, integers as i32), so that the
decoding of every dtype is reached by inputs that still load. Then a few small hand-made
files: one tensor of every dtype, dtypes the loader refuses, metadata, an empty file.
"""
import json
import struct
import sys
from pathlib import Path


def read(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    return data, header, 8 + n


def write(path, header, blobs):
    """Writes tensors (name -> (dtype, shape)) with their bytes, in header order."""
    out, offset, body = {}, 0, []
    if "__metadata__" in header:
        out["__metadata__"] = header["__metadata__"]
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = spec
        blob = blobs[name]
        out[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        body.append(blob)
    text = json.dumps(out, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(body))


def floats(blob, dtype):
    if dtype == "F32":
        return struct.unpack(f"<{len(blob) // 4}f", blob)
    raise ValueError(dtype)


def encode_floats(values, dtype):
    if dtype == "F64":
        return struct.pack(f"<{len(values)}d", *values)
    if dtype == "F16":
        # Values beyond f16's range become infinities: the loader refuses them.
        return b"".join(
            struct.pack("<e", v) if abs(v) < 65504 else struct.pack("<e", float("inf"))
            for v in values
        )
    if dtype == "BF16":
        # The high half of each f32, rounded to nearest even.
        out = bytearray()
        for (bits,) in struct.iter_unpack("<I", struct.pack(f"<{len(values)}f", *values)):
            bits += 0x7FFF + ((bits >> 16) & 1)
            out += struct.pack("<H", (bits >> 16) & 0xFFFF)
        return bytes(out)
    raise ValueError(dtype)


# The DCT matrices (trustgc's `flow.dct.*`, the reference's node 10 of the mini model) are
# checked against their closed form to 1e-4, which f16 and bf16 cannot hold: they stay f32,
# so that the narrow-dtype variants still load.
KEEP_F32 = ("dct", "inn.module_list.10.")


def variant(path, header, data, start, float_dtype, int_dtype):
    tensors, blobs = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        blob = data[start + a : start + b]
        dtype = info["dtype"]
        keep = float_dtype in ("F16", "BF16") and any(k in name for k in KEEP_F32)
        if dtype == "F32" and float_dtype and not keep:
            blob, dtype = encode_floats(floats(blob, "F32"), float_dtype), float_dtype
        elif dtype == "I64" and int_dtype:
            values = struct.unpack(f"<{len(blob) // 8}q", blob)
            blob, dtype = struct.pack(f"<{len(values)}i", *values), int_dtype
        tensors[name] = (dtype, info["shape"])
        blobs[name] = blob
    write(path, tensors, blobs)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for arg in sys.argv[2:]:
        name, path = arg.split("=", 1)
        data, header, start = read(path)
        (out / f"{name}.safetensors").write_bytes(data)
        (out / f"{name}-header.safetensors").write_bytes(data[:start])
        (out / f"{name}-half.safetensors").write_bytes(data[: len(data) // 2])
        # Whole-file dtype variants only where they stay small (the Fashion-MNIST model,
        # 2.5 MB); the larger models get the f16 one (half their size).
        small = len(data) < 4_000_000
        for float_dtype, int_dtype in [("F16", "I32")] + (
            [("F64", None), ("BF16", None)] if small else []
        ):
            tag = f"{float_dtype}-{int_dtype}" if int_dtype else float_dtype
            variant(out / f"{name}-{tag.lower()}.safetensors", header, data, start,
                    float_dtype, int_dtype)

    # One tensor of each dtype the loader reads, and some it refuses.
    widths = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
              "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1}
    tensors, blobs = {"__metadata__": {"format": "pt"}}, {}
    for i, (dtype, width) in enumerate(widths.items()):
        tensors[f"t.{dtype.lower()}"] = (dtype, [2, 3])
        blobs[f"t.{dtype.lower()}"] = bytes((i * 7 + j) % 251 for j in range(6 * width))
    write(out / "dtypes.safetensors", tensors, blobs)
    readable = {k: v for k, v in tensors.items() if k == "__metadata__" or v[0] in list(widths)[:10]}
    write(out / "dtypes-readable.safetensors", readable, blobs)
    # A scalar, an empty tensor, a zero-sized dimension.
    write(out / "shapes.safetensors",
          {"s": ("F32", []), "e": ("F32", [0]), "z": ("I64", [3, 0, 2])},
          {"s": struct.pack("<f", 1.5), "e": b"", "z": b""})
    write(out / "empty.safetensors", {}, {})


if __name__ == "__main__":
    main()
