//! Preprocessing against the reference: torchvision's eval transform on three photos
//! (`../shared/golden/images/preprocessed.safetensors`, torchvision 0.29.2 / Pillow 13.0),
//! and Pillow's conversions of less common image modes (`tests/data/preprocess/`,
//! produced by `make_fixtures.py` with Pillow 11.3).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use trustgc::core::input::InputSpec;
use trustgc::preprocess::{
    Image8, ImageError, MAX_IMAGE_PIXELS, Region, center_crop_offsets, crop, decode_image,
    model_input, pil_resize_bilinear, pil_resize_bilinear_region, read_image, read_model_input,
    resized_size, to_luma_pil, to_rgb_pil,
};

fn golden_images() -> std::collections::HashMap<String, trustgc::weights::Tensor> {
    trustgc::weights::safetensors::read_safetensors(&golden_path("images/preprocessed.safetensors"))
        .unwrap()
}

fn bytes(t: &trustgc::weights::Tensor) -> Vec<u8> {
    match &t.values {
        trustgc::weights::Values::Int(v) => v.iter().map(|&x| x as u8).collect(),
        trustgc::weights::Values::Float(_) => panic!("expected u8"),
    }
}

fn floats(t: &trustgc::weights::Tensor) -> Vec<f64> {
    match &t.values {
        trustgc::weights::Values::Float(v) => v.clone(),
        trustgc::weights::Values::Int(_) => panic!("expected floats"),
    }
}

/// (fraction of equal values, largest difference)
fn agreement(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    (equal as f64 / a.len() as f64, worst)
}

#[test]
fn imagenet_eval_transform_matches_torchvision() {
    let golden = golden_images();
    let spec = InputSpec::imagenet();
    let InputSpec::ImageNet { mean, std, .. } = &spec else {
        unreachable!()
    };
    let mut batch = Vec::new();
    for name in ["chelsea", "coffee", "astronaut"] {
        let path = golden_path(&format!("images/{name}.png"));
        let image = read_image(&path).unwrap();
        let rgb = to_rgb_pil(&image);
        assert_eq!(
            rgb.data,
            bytes(&golden[&format!("{name}.original_u8_hwc")]),
            "{name}: decoded pixels"
        );

        let (w, h) = resized_size(rgb.width, rgb.height, 256);
        let resized = pil_resize_bilinear(&rgb, w, h);
        assert_eq!(
            golden[&format!("{name}.resized256_u8_hwc")].shape,
            vec![h, w, 3]
        );
        let (equal, worst) = agreement(
            &resized.data,
            &bytes(&golden[&format!("{name}.resized256_u8_hwc")]),
        );
        println!(
            "{name}: Resize(256) equal on {:.4} % of values, max diff {worst}",
            100.0 * equal
        );
        // The bound was ≥ 99.9 % equal and never more than 1 apart; the resampler
        // is Pillow's operation for operation, so every value is equal.
        assert!(equal == 1.0 && worst == 0, "{name}: resize");

        let (left, top) = center_crop_offsets(w, h, 224);
        let cropped = crop(&resized, left, top, 224);
        let (equal, worst) = agreement(
            &cropped.data,
            &bytes(&golden[&format!("{name}.crop224_u8_hwc")]),
        );
        println!(
            "{name}: CenterCrop(224) equal on {:.4} % of values, max diff {worst}",
            100.0 * equal
        );
        assert!(equal == 1.0 && worst == 0, "{name}: crop");

        let x: Vec<f64> = model_input(&image, &spec)
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let expected = floats(&golden[name]);
        // The bound was one 8-bit level after normalization (1/255/std). With the
        // same 8-bit values, `(v/255 − mean)/std` in float32 is torchvision's operation for
        // operation: equal.
        let n = 224 * 224;
        for c in 0..3 {
            let bound = 1.0 / 255.0 / f64::from(std[c]) + 1e-6;
            let err = max_abs_err(&x[c * n..(c + 1) * n], &expected[c * n..(c + 1) * n]);
            println!(
                "{name}: normalized channel {c} max abs err {err:.2e} (the issue's bound {bound:.2e}, mean {})",
                mean[c]
            );
            assert!(err == 0.0, "{name} channel {c}: {err:.2e}");
        }
        batch.extend(x);
    }
    let err = max_abs_err(&batch, &floats(&golden["batch"]));
    assert!(err == 0.0, "batch max abs err {err}");
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/preprocess")
}

#[test]
fn image_modes_convert_as_pillow_does() {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u8)
            .collect()
    };
    let images = expected["images"].as_object().unwrap();
    assert_eq!(images.len(), 7);
    for (name, e) in images {
        let path = fixture_dir().join(format!("{name}.png"));
        let image = read_image(&path).unwrap();
        let rgb = to_rgb_pil(&image);
        assert_eq!(
            rgb.data,
            list(&e["rgb"]),
            "{name} ({}): convert('RGB')",
            e["mode"]
        );
        assert_eq!(
            to_luma_pil(&image).data,
            list(&e["l"]),
            "{name} ({}): convert('L')",
            e["mode"]
        );
        let size: Vec<usize> = e["resized_size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            resized_size(rgb.width, rgb.height, 16),
            (size[0], size[1]),
            "{name}: size"
        );
        let resized = pil_resize_bilinear(&rgb, size[0], size[1]);
        assert_eq!(resized.data, list(&e["resized"]), "{name}: resize");
        let (left, top) = center_crop_offsets(size[0], size[1], 12);
        assert_eq!(
            crop(&resized, left, top, 12).data,
            list(&e["cropped"]),
            "{name}: crop"
        );
    }
}

fn expect_error(path: &Path) -> trustgc::preprocess::ImageError {
    read_image(path).expect_err("an error")
}

#[test]
fn bad_files_are_typed_errors_naming_the_path() {
    let dir = scratch_dir("preprocess");
    let missing = dir.join("missing.png");
    let err = expect_error(&missing);
    assert!(
        matches!(err, trustgc::preprocess::ImageError::Io { .. })
            && err.to_string().contains("missing.png")
    );
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let err = expect_error(&empty);
    assert!(
        matches!(err, trustgc::preprocess::ImageError::Decode { .. })
            && err.to_string().contains("empty.png"),
        "{err}"
    );
    let corrupt = dir.join("corrupt.png");
    let mut bytes = std::fs::read(fixture_dir().join("rgb.png")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = expect_error(&corrupt);
    assert!(err.to_string().contains("corrupt.png"), "{err}");
    let text = dir.join("text.png");
    std::fs::write(&text, b"hello, I am not an image").unwrap();
    assert!(matches!(
        expect_error(&text),
        trustgc::preprocess::ImageError::Decode { .. }
    ));
    // Too small to crop after resizing is refused, not a panic.
    let tiny = Image8 {
        width: 1,
        height: 1,
        channels: 3,
        data: vec![1, 2, 3],
    };
    let image =
        image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(1, 1, tiny.data.clone()).unwrap());
    assert!(
        model_input(&image, &InputSpec::imagenet()).is_ok(),
        "1x1 upsamples to 256 then crops"
    );
}

/// A reproducible pseudo-random sequence (xorshift64*), for test images.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn image(&mut self, width: usize, height: usize, channels: usize) -> Image8 {
        let data = (0..width * height * channels)
            .map(|_| (self.next() >> 56) as u8)
            .collect();
        Image8 {
            width,
            height,
            channels,
            data,
        }
    }
}

/// A region of the resize is that part of the whole resize, value for value: upsampling,
/// downsampling, one pass or both, elongated images, edges and corners.
#[test]
fn a_region_of_the_resize_equals_that_part_of_the_whole_resize() {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let cases: &[(usize, usize, usize, usize)] = &[
        // (input width, height, output width, height)
        (31, 17, 64, 40),
        (64, 40, 31, 17),
        (200, 3, 4266, 64),
        (3, 200, 64, 4266),
        (50, 50, 50, 23),
        (50, 50, 23, 50),
        (1, 1, 16, 16),
        (1000, 2, 8000, 16),
        (97, 61, 13, 9),
    ];
    for &(iw, ih, ow, oh) in cases {
        for channels in [1, 3] {
            let image = noise.image(iw, ih, channels);
            let full = pil_resize_bilinear(&image, ow, oh);
            for _ in 0..12 {
                let width = 1 + noise.below(ow);
                let height = 1 + noise.below(oh);
                let region = Region {
                    left: noise.below(ow - width + 1),
                    top: noise.below(oh - height + 1),
                    width,
                    height,
                };
                let part = pil_resize_bilinear_region(&image, ow, oh, region);
                let mut expected = Vec::new();
                for y in region.top..region.top + height {
                    let row = (y * ow + region.left) * channels;
                    expected.extend_from_slice(&full.data[row..row + width * channels]);
                }
                assert_eq!(
                    (part.width, part.height, part.channels),
                    (width, height, channels)
                );
                assert_eq!(
                    part.data, expected,
                    "{iw}x{ih} -> {ow}x{oh}, {channels} channels, {region:?}"
                );
            }
        }
    }
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

fn scratch_dir(name: &str) -> Scratch {
    Scratch::new("preprocess", name)
}

fn encode(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Images of 100,000 x 1 and 1 x 100,000 pixels (a few hundred bytes of PNG) become the
/// model's input through the center crop alone: `Resize(256)` would be 25,600,000 x 256
/// pixels (19.7 GB), which used to be allocated whole and abort the process.
#[test]
fn elongated_images_are_resized_only_where_the_crop_needs() {
    let dir = scratch_dir("elongated");
    let spec = InputSpec::imagenet();
    let InputSpec::ImageNet {
        resize,
        crop: side,
        mean,
        std,
    } = &spec
    else {
        unreachable!()
    };
    for (w, h) in [(100_000u32, 1u32), (1, 100_000), (3_000_000, 2)] {
        // A colour ramp along the long side, with a distinct value in the center.
        let long = w.max(h);
        let image = image::RgbImage::from_fn(w, h, |x, y| {
            let t = x.max(y);
            if t.abs_diff(long / 2) < 4 {
                image::Rgb([255, 0, 128])
            } else {
                image::Rgb([(t % 251) as u8, (t % 7) as u8 * 30, 9])
            }
        });
        let image = image::DynamicImage::ImageRgb8(image);
        let path = dir.join(format!("{w}x{h}.png"));
        std::fs::write(&path, encode(&image, image::ImageFormat::Png)).unwrap();

        let x = read_model_input(&path, &spec).unwrap();
        assert_eq!(x.len(), 3 * side * side, "{w}x{h}");
        // Exactly the center crop of Pillow's resize.
        let (rw, rh) = resized_size(w as usize, h as usize, *resize);
        assert!(rw.max(rh) >= 25_600_000, "{rw}x{rh}");
        let (left, top) = center_crop_offsets(rw, rh, *side);
        let region = Region {
            left,
            top,
            width: *side,
            height: *side,
        };
        let rgb = to_rgb_pil(&image);
        let cropped = pil_resize_bilinear_region(&rgb, rw, rh, region);
        let n = side * side;
        for (i, px) in cropped.data.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                let want = (f32::from(px[ch]) / 255.0 - mean[ch]) / std[ch];
                assert_eq!(x[ch * n + i], want, "{w}x{h} pixel {i} channel {ch}");
            }
        }
        // The crop lies inside the distinct center, so it is that colour throughout.
        assert!(
            cropped.data.chunks_exact(3).all(|p| p == [255, 0, 128]),
            "{w}x{h}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CRC-32 (ISO-HDLC), for hand-made PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// A PNG whose header declares `width x height` pixels of `bit_depth`-bit `colour_type`,
/// followed by a few bytes of image data (never reached: the header is refused).
fn png_bomb(width: u32, height: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([bit_depth, colour_type, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib: a stored block of one zero byte.
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x01, 0x00, 0xFE, 0xFF, 0x00],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Decompression bombs are refused from their header, before any pixel is decoded: more
/// pixels than Pillow opens, or more decoded bytes than the limit.
#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let too_large = |bytes: &[u8], name: &str| {
        let err = decode_image(bytes, Path::new(name)).expect_err("refused");
        assert!(
            matches!(err, ImageError::TooLarge { .. }) && err.to_string().contains(name),
            "{err}"
        );
        err
    };
    // Over MAX_IMAGE_PIXELS, in grayscale (200 MB decoded) and along one side.
    let err = too_large(&png_bomb(200_000_000, 1, 8, 0), "long.png");
    assert!(matches!(
        err,
        ImageError::TooLarge {
            width: 200_000_000,
            height: 1,
            ..
        }
    ));
    too_large(&png_bomb(20_000, 20_000, 8, 2), "square.png");
    too_large(
        &png_bomb(i32::MAX as u32, i32::MAX as u32, 8, 6),
        "huge.png",
    );
    // Under the pixel limit but 800 MB of 16-bit RGBA.
    let pixels: u32 = 10_000;
    assert!(u64::from(pixels) * u64::from(pixels) <= MAX_IMAGE_PIXELS);
    let err = too_large(&png_bomb(pixels, pixels, 16, 6), "deep.png");
    assert!(matches!(
        err,
        ImageError::TooLarge {
            width: 10_000,
            height: 10_000,
            ..
        }
    ));
    // A JPEG whose frame header says 65,000 x 65,000.
    let mut jpeg = encode(
        &image::DynamicImage::ImageRgb8(image::RgbImage::new(16, 16)),
        image::ImageFormat::Jpeg,
    );
    let sof = jpeg
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline frame header");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    let err = too_large(&jpeg, "bomb.jpg");
    assert!(matches!(
        err,
        ImageError::TooLarge {
            width: 65_000,
            height: 65_000,
            ..
        }
    ));
}

/// A photo-like test image: smooth gradients with some texture, so the JPEG's
/// entropy-coded data is most of the file.
fn photo(width: u32, height: u32) -> image::DynamicImage {
    let mut noise = Noise(7);
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
        let n = (noise.next() >> 60) as u8;
        image::Rgb([
            (x * 255 / width) as u8 ^ n,
            (y * 255 / height) as u8,
            ((x + y) % 64) as u8 * 4,
        ])
    }))
}

/// A file cut short is an error naming it, never an image with the missing part filled
/// in: Pillow refuses a truncated JPEG ("image file is truncated"), and so do we. Each
/// cut of a JPEG (colour, grayscale) and of a PNG's image data is tried.
#[test]
fn truncated_images_are_refused() {
    let dir = scratch_dir("truncated");
    let color = photo(96, 64);
    let gray = image::DynamicImage::ImageLuma8(color.to_luma8());
    for (name, image) in [("color", &color), ("gray", &gray)] {
        let jpeg = encode(image, image::ImageFormat::Jpeg);
        assert_eq!(&jpeg[jpeg.len() - 2..], [0xFF, 0xD9]);
        // Whole, and with bytes after the end-of-image marker (Pillow ignores them): fine.
        let whole = dir.join(format!("{name}.jpg"));
        std::fs::write(&whole, &jpeg).unwrap();
        assert!(read_image(&whole).is_ok());
        let mut trailing = jpeg.clone();
        trailing.extend(b"trailing bytes");
        assert!(decode_image(&trailing, Path::new("t.jpg")).is_ok());

        // Cut in half, as a file: a typed error naming it, for reading and classifying.
        let half = dir.join(format!("{name}-half.jpg"));
        std::fs::write(&half, &jpeg[..jpeg.len() / 2]).unwrap();
        let err = read_image(&half).expect_err("truncated");
        assert!(
            matches!(&err, ImageError::Truncated { path, format: "JPEG" } if *path == half),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("{name}-half.jpg")),
            "{err}"
        );
        assert!(matches!(
            read_model_input(&half, &InputSpec::imagenet()),
            Err(ImageError::Truncated { .. })
        ));

        // Every cut inside the image data, down to the missing end-of-image marker.
        let scan = jpeg
            .windows(2)
            .position(|m| m == [0xFF, 0xDA])
            .expect("a scan");
        for cut in (scan..jpeg.len()).step_by(7).chain([jpeg.len() - 1]) {
            let err = decode_image(&jpeg[..cut], Path::new("cut.jpg")).expect_err("truncated");
            assert!(
                matches!(
                    err,
                    ImageError::Truncated { .. } | ImageError::Decode { .. }
                ),
                "{name} cut at {cut} of {}: {err}",
                jpeg.len()
            );
        }
        // Cuts in the headers are decoder errors.
        for cut in (0..scan).step_by(11) {
            assert!(
                decode_image(&jpeg[..cut], Path::new("cut.jpg")).is_err(),
                "{name} cut at {cut}"
            );
        }
    }

    // PNG: every cut before the image data is complete.
    let png = encode(&color, image::ImageFormat::Png);
    let idat = png.windows(4).position(|m| m == b"IDAT").expect("IDAT") - 4;
    let len = u32::from_be_bytes(png[idat..idat + 4].try_into().unwrap()) as usize;
    let data_end = idat + 8 + len;
    assert_eq!(&png[data_end + 4..data_end + 12], b"\0\0\0\0IEND");
    for cut in (0..data_end - 4).step_by(13) {
        let err = decode_image(&png[..cut], Path::new("cut.png")).expect_err("truncated");
        assert!(err.to_string().contains("cut.png"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The case itself: a 100,000,000 x 1 PNG (about 100 KB) is decoded (300 MB of
/// RGB, under the limits) and cropped without resizing the rest. Ignored by default for
/// its memory; `cargo test --release --test preprocess -- --ignored`.
#[test]
#[ignore = "decodes 300 MB: cargo test --release -p trustgc --test preprocess -- --ignored a_hundred_million"]
fn a_hundred_million_by_one_png_is_classified_in_bounded_memory() {
    let dir = scratch_dir("hundred-million");
    let path = dir.join("long.png");
    {
        let image =
            image::RgbImage::from_fn(100_000_000, 1, |x, _| image::Rgb([(x % 256) as u8, 7, 200]));
        std::fs::write(
            &path,
            encode(
                &image::DynamicImage::ImageRgb8(image),
                image::ImageFormat::Png,
            ),
        )
        .unwrap();
    }
    let x = read_model_input(&path, &InputSpec::imagenet()).unwrap();
    assert_eq!(x.len(), 3 * 224 * 224);
    std::fs::remove_dir_all(&dir).unwrap();
}
