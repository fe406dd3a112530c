//! JPEG decoding against Pillow, the reference's image library: the fixtures in
//! `tests/data/jpeg/` (every kind of JPEG, and a few damaged ones), made by its
//! `make_fixtures.py` with Pillow 13.0.0 and its libjpeg-turbo 3.2.0, which wrote what
//! `np.asarray(Image.open(f).convert('RGB'))` (and `convert('L')`) gives for each, or the
//! exception Pillow raised. Decoded pixels must equal Pillow's exactly: no tolerance.

use std::error::Error as _;
use std::path::{Path, PathBuf};

use trustgc::preprocess::{
    ImageError, JpegError, MAX_JPEG_SCANS, decode_image, read_image, to_luma_pil, to_rgb_pil,
};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg")
}

/// One entry of `manifest.json`.
struct Fixture {
    name: String,
    /// Pillow's exception, for a file Pillow refuses.
    refused: Option<String>,
    /// Pillow's mode (`L`, `RGB`, `CMYK`) and size, for a file it decodes.
    mode: String,
    width: usize,
    height: usize,
    /// Whether `NAME.l` (Pillow's `convert('L')`) was written.
    luma: bool,
}

impl Fixture {
    fn path(&self, ext: &str) -> PathBuf {
        fixture_dir().join(format!("{}.{ext}", self.name))
    }
}

fn fixtures() -> Vec<Fixture> {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["pillow"], "13.0.0");
    manifest["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Fixture {
            name: e["name"].as_str().unwrap().to_owned(),
            refused: e["refused"].as_str().map(str::to_owned),
            mode: e["mode"].as_str().unwrap_or_default().to_owned(),
            width: e["width"].as_u64().unwrap_or(0) as usize,
            height: e["height"].as_u64().unwrap_or(0) as usize,
            luma: e["l"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// (number of values that differ, largest difference)
fn differences(a: &[u8], b: &[u8]) -> (usize, u8) {
    assert_eq!(a.len(), b.len());
    let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
    let worst = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max();
    (differ, worst.unwrap_or(0))
}

/// Every kind of JPEG decodes to Pillow's pixels, value for value: baseline at 4:2:0,
/// 4:2:2, 4:4:4, 4:4:0 and 4:1:1; progressive (colour and grayscale); arithmetic-coded;
/// optimized Huffman tables; restart intervals; qualities 50, 75 and 95; grayscale;
/// Adobe CMYK and YCCK; RGB stored without the YCbCr transform; crops of two real photos
/// with their encoders' tables; entropy-coded data overwritten in the middle.
#[test]
fn every_kind_of_jpeg_decodes_to_pillows_pixels() {
    let fixtures = fixtures();
    let decoded: Vec<&Fixture> = fixtures.iter().filter(|f| f.refused.is_none()).collect();
    assert_eq!(decoded.len(), 22, "fixtures Pillow decodes");
    for f in decoded {
        let image = read_image(&f.path("jpg")).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(
            (image.width() as usize, image.height() as usize),
            (f.width, f.height),
            "{}: size",
            f.name
        );
        // Pillow's L is grayscale; its RGB and CMYK (converted) are RGB.
        let grayscale = matches!(image, image::DynamicImage::ImageLuma8(_));
        assert_eq!(
            grayscale,
            f.mode == "L",
            "{} ({}): image type",
            f.name,
            f.mode
        );

        let rgb = to_rgb_pil(&image);
        let expected = std::fs::read(f.path("rgb")).unwrap();
        let (differ, worst) = differences(&rgb.data, &expected);
        assert!(
            differ == 0,
            "{} ({}): convert('RGB') differs from Pillow's in {differ} of {} values, by up \
             to {worst}",
            f.name,
            f.mode,
            expected.len()
        );
        if f.luma {
            let expected = std::fs::read(f.path("l")).unwrap();
            assert_eq!(
                to_luma_pil(&image).data,
                expected,
                "{} ({}): convert('L')",
                f.name,
                f.mode
            );
        }
    }
}

/// The fixtures tell the decoders apart: the `image` crate's own JPEG decoder (zune-jpeg,
/// what `decode_image` used before) gives other pixels than Pillow on most of them. Its
/// differences are printed (`-- --nocapture`).
#[test]
fn the_image_crates_own_decoder_differs_from_pillow_on_these_fixtures() {
    let mut differing = Vec::new();
    let mut total = 0;
    for f in fixtures().iter().filter(|f| f.refused.is_none()) {
        total += 1;
        let bytes = std::fs::read(f.path("jpg")).unwrap();
        let expected = std::fs::read(f.path("rgb")).unwrap();
        let old = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg);
        let Ok(old) = old else {
            println!("{}: zune-jpeg refuses it: {}", f.name, old.unwrap_err());
            differing.push(f.name.clone());
            continue;
        };
        let (differ, worst) = differences(&to_rgb_pil(&old).data, &expected);
        println!(
            "{}: zune-jpeg differs from Pillow in {differ} of {} values ({:.2} %), by up to {worst}",
            f.name,
            expected.len(),
            100.0 * differ as f64 / expected.len() as f64
        );
        if differ > 0 {
            differing.push(f.name.clone());
        }
    }
    println!(
        "zune-jpeg differs on {} of {total} fixtures",
        differing.len()
    );
    assert!(
        differing.len() * 2 > total,
        "only {differing:?} of {total} fixtures tell zune-jpeg from libjpeg-turbo"
    );
}

/// The `JpegError` inside an `ImageError::Decode` for a JPEG.
fn jpeg_error(err: &ImageError) -> &JpegError {
    assert!(matches!(err, ImageError::Decode { .. }), "{err}");
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(jpeg) = e.downcast_ref::<JpegError>() {
            return jpeg;
        }
        source = e.source();
    }
    panic!("no JpegError in {err:?}")
}

/// The files Pillow refuses are refused here too, as typed errors naming the file: cut in
/// its scan (truncated), 12-bit samples, 2 components, a bogus Huffman table.
#[test]
fn jpegs_pillow_refuses_are_typed_errors_naming_the_file() {
    let fixtures = fixtures();
    let refused: Vec<&Fixture> = fixtures.iter().filter(|f| f.refused.is_some()).collect();
    assert_eq!(refused.len(), 4);
    for f in refused {
        let path = f.path("jpg");
        let err = read_image(&path).expect_err(&f.name);
        let file = format!("{}.jpg", f.name);
        assert!(err.to_string().contains(&file), "{err}");
        println!(
            "{}: Pillow {:?}; here {err}",
            f.name,
            f.refused.as_ref().unwrap()
        );
        match f.name.as_str() {
            "truncated-37x29" => assert!(
                matches!(&err, ImageError::Truncated { path: p, format: "JPEG" } if *p == path),
                "{err}"
            ),
            "two-components-37x29" => assert!(
                matches!(jpeg_error(&err), JpegError::Components { components: 2 }),
                "{err}"
            ),
            "precision12-37x29" | "bad-huffman-37x29" => assert!(
                matches!(jpeg_error(&err), JpegError::Libjpeg { message } if !message.is_empty()),
                "{err}"
            ),
            other => panic!("unexpected fixture {other}"),
        }
    }
}

/// A reproducible pseudo-random sequence (xorshift64*).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Damaged JPEGs give an image or a typed error naming the file, never a panic or an abort
/// of the process (libjpeg's default on a fatal error is to exit): every cut of several
/// kinds of file, every header byte set to other values, and random bytes of the
/// entropy-coded data changed. Reaching the end of this test is the proof that nothing
/// aborted.
#[test]
fn damaged_jpegs_are_errors_or_images_never_aborts() {
    let mut noise = Noise(0x5DEE_CE66_D1CE_4E5B);
    let (mut images, mut errors) = (0, 0);
    let mut check = |bytes: &[u8], what: &str| match decode_image(bytes, Path::new("damaged.jpg")) {
        Ok(image) => {
            assert!(image.width() > 0 && image.height() > 0, "{what}");
            images += 1;
        }
        Err(err) => {
            assert!(err.to_string().contains("damaged.jpg"), "{what}: {err}");
            errors += 1;
        }
    };
    for name in [
        "baseline-420-37x29",
        "progressive-444-37x29",
        "arithmetic-420-70x51",
        "cmyk-adobe-37x29",
        "grayscale-progressive-70x51",
        "restart-interval-37x29",
    ] {
        let jpeg = std::fs::read(fixture_dir().join(format!("{name}.jpg"))).unwrap();
        for cut in 0..jpeg.len() {
            let err = decode_image(&jpeg[..cut], Path::new("cut.jpg")).expect_err("cut");
            assert!(
                err.to_string().contains("cut.jpg"),
                "{name} cut at {cut}: {err}"
            );
        }
        let scan = jpeg
            .windows(2)
            .position(|m| m == [0xFF, 0xDA])
            .expect("a scan");
        let mut damaged = jpeg.clone();
        for at in 0..scan + 14 {
            for value in [0x00, 0xFF, jpeg[at] ^ 0x80, jpeg[at].wrapping_add(1)] {
                damaged[at] = value;
                check(&damaged, &format!("{name}: byte {at} set to {value}"));
            }
            damaged[at] = jpeg[at];
        }
        for _ in 0..200 {
            let mut damaged = jpeg.clone();
            for _ in 0..4 {
                let at = scan + (noise.next() as usize) % (jpeg.len() - scan);
                damaged[at] = (noise.next() >> 56) as u8;
            }
            check(&damaged, &format!("{name}: entropy-coded data changed"));
        }
    }
    println!("damaged JPEGs: {images} decoded, {errors} refused");
    assert!(images > 0 && errors > 0);
}

/// A file of more scans than `MAX_JPEG_SCANS` is refused from its markers, before any of
/// them is decoded: each scan of a progressive JPEG is a pass over the whole image.
#[test]
fn jpegs_of_too_many_scans_are_refused() {
    let jpeg = std::fs::read(fixture_dir().join("progressive-444-37x29.jpg")).unwrap();
    // The last scan (start-of-scan marker to end-of-image), repeated.
    let last_scan = jpeg
        .windows(2)
        .rposition(|m| m == [0xFF, 0xDA])
        .expect("a scan");
    let eoi = jpeg.len() - 2;
    assert_eq!(&jpeg[eoi..], [0xFF, 0xD9]);
    let mut many = jpeg[..eoi].to_vec();
    for _ in 0..MAX_JPEG_SCANS {
        many.extend_from_slice(&jpeg[last_scan..eoi]);
    }
    many.extend_from_slice(&jpeg[eoi..]);
    let err = decode_image(&many, Path::new("scans.jpg")).expect_err("too many scans");
    assert!(
        matches!(jpeg_error(&err), JpegError::TooManyScans { scans } if *scans > MAX_JPEG_SCANS),
        "{err}"
    );
    assert!(err.to_string().contains("scans.jpg"), "{err}");
}
