//! JPEG decoding as Pillow does it, pixel for pixel.
//!
//! Pillow decodes JPEG with libjpeg-turbo. This module runs the same decoder: the C code of
//! mozjpeg 4 (a libjpeg-turbo fork whose changes are in the encoder), compiled from source
//! by `mozjpeg-sys` with the C compiler alone. Its decoder is libjpeg-turbo 2's, where
//! Pillow 13's wheels carry libjpeg-turbo 3.2: their decoding of 8-bit lossy JPEG (every
//! JPEG a camera or Pillow writes) is the same, which the tests check. libjpeg-turbo 3's
//! additions, lossless (SOF3) JPEG and 12-bit samples, are refused here
//! ([`JpegError::Libjpeg`]); Pillow refuses 12-bit files too. Its SIMD paths, which
//! Pillow's build uses, give the same output as the C code for this IDCT, upsampling and
//! colour conversion (libjpeg-turbo's test suite checks one output for both), so they are
//! left out and NASM is not needed; `tests/jpeg_pillow.rs` compares with Pillow's SIMD
//! build.
//!
//! The settings are libjpeg's defaults, which Pillow keeps: the accurate integer IDCT
//! (`JDCT_ISLOW`), fancy (triangle-filter) chroma upsampling, block smoothing, no scaling
//! (Pillow's `draft` mode, which torchvision never uses, is not reproduced).
//!
//! Colour, as `Image.open(f).convert('RGB')` does it:
//! - 1 component: Pillow's mode `L`; libjpeg decodes it as grayscale
//!   ([`DynamicImage::ImageLuma8`]).
//! - 3 components: Pillow's mode `RGB`; libjpeg converts YCbCr to RGB, or keeps RGB stored
//!   as RGB, as its JFIF and Adobe markers and component ids say
//!   ([`DynamicImage::ImageRgb8`]).
//! - 4 components: Pillow's mode `CMYK` with raw mode `CMYK;I`: libjpeg outputs CMYK (from
//!   YCCK when the Adobe marker says so), every value is inverted (Adobe's convention,
//!   which Pillow assumes for every 4-component JPEG), and `convert('RGB')` is Pillow's
//!   `cmyk2rgb` ([`DynamicImage::ImageRgb8`], the converted image: there is no CMYK image
//!   type).
//! - Any other number of components: refused, as Pillow refuses it.
//!
//! EXIF orientation and ICC profiles are ignored, as Pillow's `open` and `convert` ignore
//! them.
//!
//! libjpeg reports a fatal error (corrupt or unsupported data) by calling its `error_exit`,
//! which must not return. The `mozjpeg` crate's handler unwinds out of the C code
//! (`resume_unwind`: no panic message, no panic hook), and [`decode`] catches the unwind
//! and returns [`JpegError::Libjpeg`]. This needs `panic = "unwind"` (Rust's default): a
//! program built with `panic = "abort"` would abort on such a file. libjpeg's warnings
//! (corrupt entropy-coded data, which it decodes as best it can) are silenced, as Pillow
//! silences them, and the image is returned as Pillow returns it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg::{ColorSpace, DctMethod, Decompress};

use super::{MAX_DECODED_BYTES, MAX_IMAGE_PIXELS};

/// Most scans a JPEG may have. Each scan of a progressive JPEG is a pass over the whole
/// image, so a small file of many scans could take minutes to decode; encoders write at
/// most a few dozen (libjpeg's progressive script has 10, 6 for grayscale). Pillow has no
/// such limit; libjpeg-turbo's own fuzzers stop at 500.
pub const MAX_JPEG_SCANS: usize = 1000;

/// Why a JPEG could not be decoded: for a JPEG, the source of
/// [`ImageError::Decode`](super::ImageError::Decode), inside an
/// [`image::ImageError::Decoding`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JpegError {
    /// libjpeg stopped on a fatal error: corrupt or unsupported data (Pillow refuses these
    /// files too, most with "broken data stream").
    #[error("libjpeg: {message}")]
    Libjpeg {
        /// libjpeg's own message, e.g. "Bogus Huffman table definition".
        message: String,
    },
    /// The frame has a number of components Pillow does not open (it opens 1, 3 and 4).
    #[error("a JPEG of {components} components (Pillow opens 1, 3 or 4)")]
    Components {
        /// The frame's number of components.
        components: usize,
    },
    /// More than [`MAX_JPEG_SCANS`] scans.
    #[error("{scans} scans, over the limit of {MAX_JPEG_SCANS}")]
    TooManyScans {
        /// The file's number of scans.
        scans: usize,
    },
    /// The decoder could not start or read the pixels: the file holds no image (tables
    /// only), or there is no memory for the pixels.
    #[error("libjpeg: {source}")]
    Read {
        /// The decoder's report.
        #[source]
        source: std::io::Error,
    },
}

/// Why [`decode`] refused a JPEG; [`super::decode_image`] adds the path.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No pixels.
    Empty { width: u32, height: u32 },
    /// Over [`MAX_IMAGE_PIXELS`] or [`MAX_DECODED_BYTES`].
    TooLarge { width: u32, height: u32 },
    /// The file ends before its end-of-image marker.
    Truncated,
    /// Not decodable.
    Jpeg(JpegError),
}

impl From<JpegError> for Refusal {
    fn from(e: JpegError) -> Self {
        Refusal::Jpeg(e)
    }
}

fn read_error(source: std::io::Error) -> Refusal {
    Refusal::Jpeg(JpegError::Read { source })
}

/// Fewer pixels than the frame has (the decoder reads every row or fails, so not seen).
fn short_read() -> Refusal {
    read_error(std::io::ErrorKind::UnexpectedEof.into())
}

/// Decodes a JPEG as Pillow's `Image.open(f)` followed by `convert('RGB')` for CMYK (the
/// module's doc says how): grayscale as [`DynamicImage::ImageLuma8`], colour as
/// [`DynamicImage::ImageRgb8`].
///
/// Refused before any pixel is decoded, from the markers: a frame over
/// [`MAX_IMAGE_PIXELS`] pixels or [`MAX_DECODED_BYTES`] decoded bytes, or without pixels;
/// a file that ends before its end-of-image marker ([`Refusal::Truncated`]); a frame of
/// other than 1, 3 or 4 components; more than [`MAX_JPEG_SCANS`] scans.
pub(crate) fn decode(bytes: &[u8]) -> Result<DynamicImage, Refusal> {
    let layout = layout(bytes);
    if let Some(frame) = layout.frame {
        check_frame(frame)?;
    }
    if !layout.complete {
        return Err(Refusal::Truncated);
    }
    if layout.scans > MAX_JPEG_SCANS {
        return Err(JpegError::TooManyScans {
            scans: layout.scans,
        }
        .into());
    }
    catch_unwind(AssertUnwindSafe(|| decode_with_libjpeg(bytes))).unwrap_or_else(|payload| {
        // The mozjpeg crate unwinds with libjpeg's message, prefixed.
        let message = match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => match payload.downcast::<&'static str>() {
                Ok(message) => (*message).to_owned(),
                Err(_) => "a fatal error".to_owned(),
            },
        };
        let message = match message.strip_prefix("libjpeg fatal error: ") {
            Some(rest) => rest.to_owned(),
            None => message,
        };
        Err(JpegError::Libjpeg { message }.into())
    })
}

/// A frame's size and number of components, as its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    width: u32,
    height: u32,
    components: usize,
}

/// Pillow's modes: 1 component is `L`, 3 `RGB`, 4 `CMYK`; `convert('RGB')` of `CMYK` has
/// 3 channels. Refuses empty frames and frames over the limits.
fn check_frame(frame: Frame) -> Result<(), Refusal> {
    let Frame {
        width,
        height,
        components,
    } = frame;
    let channels: u64 = match components {
        1 => 1,
        3 | 4 => 3,
        _ => return Err(JpegError::Components { components }.into()),
    };
    if width == 0 || height == 0 {
        return Err(Refusal::Empty { width, height });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_IMAGE_PIXELS || pixels * channels > MAX_DECODED_BYTES {
        return Err(Refusal::TooLarge { width, height });
    }
    Ok(())
}

/// Runs libjpeg; a fatal error unwinds out of it (see the module's doc).
fn decode_with_libjpeg(bytes: &[u8]) -> Result<DynamicImage, Refusal> {
    let mut header = Decompress::builder().from_mem(bytes).map_err(read_error)?;
    // libjpeg's own view of the frame, checked again (the markers said the same, or the
    // file has a second frame header, which libjpeg refuses).
    let (width, height) = header.size();
    let frame = Frame {
        width: u32::try_from(width).unwrap_or(u32::MAX),
        height: u32::try_from(height).unwrap_or(u32::MAX),
        components: header.components().len(),
    };
    check_frame(frame)?;
    // libjpeg's defaults, which Pillow keeps; set here so that they are explicit.
    header.dct_method(DctMethod::IntegerSlow);
    header.do_fancy_upsampling(true);
    header.do_block_smoothing(true);
    let (w, h) = (frame.width, frame.height);
    match frame.components {
        1 => {
            let mut started = header
                .to_colorspace(ColorSpace::JCS_GRAYSCALE)
                .map_err(read_error)?;
            let pixels: Vec<u8> = started.read_scanlines().map_err(read_error)?;
            started.finish().map_err(read_error)?;
            Ok(DynamicImage::ImageLuma8(
                GrayImage::from_raw(w, h, pixels).ok_or_else(short_read)?,
            ))
        }
        3 => {
            let mut started = header
                .to_colorspace(ColorSpace::JCS_RGB)
                .map_err(read_error)?;
            let pixels: Vec<u8> = started.read_scanlines().map_err(read_error)?;
            started.finish().map_err(read_error)?;
            Ok(DynamicImage::ImageRgb8(
                RgbImage::from_raw(w, h, pixels).ok_or_else(short_read)?,
            ))
        }
        _ => {
            // 4 components (check_frame refused the others): CMYK row by row, converted
            // as it comes, so only the RGB image is held whole.
            let mut started = header
                .to_colorspace(ColorSpace::JCS_CMYK)
                .map_err(read_error)?;
            let mut rgb = Vec::new();
            rgb.try_reserve_exact(width * height * 3)
                .map_err(|_| read_error(std::io::ErrorKind::OutOfMemory.into()))?;
            let mut row = vec![0u8; width * 4];
            for _ in 0..height {
                started.read_scanlines_into(&mut row).map_err(read_error)?;
                rgb.extend(row.chunks_exact(4).flat_map(pil_inverted_cmyk_to_rgb));
            }
            started.finish().map_err(read_error)?;
            Ok(DynamicImage::ImageRgb8(
                RgbImage::from_raw(w, h, rgb).ok_or_else(short_read)?,
            ))
        }
    }
}

/// One pixel of a 4-component JPEG as libjpeg outputs it, to RGB as Pillow does it: the
/// raw mode `CMYK;I` inverts each value, then `cmyk2rgb` (`libImaging/Convert.c`) computes
/// `nk = 255 − k`, `r = nk − MULDIV255(c, nk)` (likewise g, b), where
/// `MULDIV255(a, b) = ((t >> 8) + t) >> 8` with `t = a·b + 128`, clipped to 0..=255.
fn pil_inverted_cmyk_to_rgb(stored: &[u8]) -> [u8; 3] {
    let [c, m, y, k] = [0, 1, 2, 3].map(|i| 255 - i32::from(stored[i]));
    let nk = 255 - k;
    let muldiv255 = |a: i32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| (nk - muldiv255(v)).clamp(0, 255) as u8)
}

/// What the markers of a JPEG say, read without decoding it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Layout {
    /// The first frame header's size and components.
    frame: Option<Frame>,
    /// Number of start-of-scan markers.
    scans: usize,
    /// Whether the markers run from start-of-image to end-of-image within the data: every
    /// segment's declared length fits, and every scan's entropy-coded data is followed by a
    /// marker. A file cut anywhere before its end-of-image marker is not complete (libjpeg,
    /// by design, fills what is missing with grey; Pillow refuses such a file, "image file
    /// is truncated"). Pillow also accepts a file that lacks only the final marker after
    /// complete image data; this does not.
    complete: bool,
}

/// Reads the markers of `data` (see [`Layout`]).
fn layout(data: &[u8]) -> Layout {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    const TEM: u8 = 0x01;
    const RST: std::ops::RangeInclusive<u8> = 0xD0..=0xD7;
    // Start-of-frame markers: C0..=CF but DHT (C4), JPG (C8) and DAC (CC).
    let is_sof = |c: u8| (0xC0..=0xCF).contains(&c) && !matches!(c, 0xC4 | 0xC8 | 0xCC);
    let mut layout = Layout::default();
    if !data.starts_with(&[0xFF, SOI]) {
        return layout;
    }
    let n = data.len();
    let mut i = 2;
    loop {
        // The next marker: 0xFF, any fill 0xFFs, the code. Bytes before it are skipped, as
        // libjpeg skips them (with a warning).
        while i < n && data[i] != 0xFF {
            i += 1;
        }
        while i < n && data[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = data.get(i) else {
            return layout;
        };
        i += 1;
        match code {
            EOI => {
                layout.complete = true;
                return layout;
            }
            // Markers without a segment (and a stuffed zero outside a scan).
            SOI | TEM | 0x00 => {}
            c if RST.contains(&c) => {}
            _ => {
                let Some(len) = data.get(i..i + 2) else {
                    return layout;
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 || i + len > n {
                    return layout;
                }
                if is_sof(code) && layout.frame.is_none() && len >= 8 {
                    // Length, precision, height, width, number of components.
                    let field = |at: usize| u16::from_be_bytes([data[i + at], data[i + at + 1]]);
                    layout.frame = Some(Frame {
                        width: u32::from(field(5)),
                        height: u32::from(field(3)),
                        components: usize::from(data[i + 7]),
                    });
                }
                i += len;
                if code == SOS {
                    layout.scans += 1;
                    // Entropy-coded data: up to a 0xFF that starts a marker, i.e. is not a
                    // stuffed zero (0xFF 0x00) or a restart marker.
                    loop {
                        while i < n && data[i] != 0xFF {
                            i += 1;
                        }
                        let mut j = i + 1;
                        while j < n && data[j] == 0xFF {
                            j += 1;
                        }
                        match data.get(j) {
                            None => return layout,
                            Some(&c) if c == 0x00 || RST.contains(&c) => i = j + 1,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_conversion_is_pillows() {
        // What Pillow 13 gives: `Image.frombytes('CMYK', (1, 1), stored, 'raw', 'CMYK;I')
        // .convert('RGB')`. Stored values are inverted CMYK: all 255 is no ink (white).
        assert_eq!(
            pil_inverted_cmyk_to_rgb(&[255, 255, 255, 255]),
            [255, 255, 255]
        );
        assert_eq!(pil_inverted_cmyk_to_rgb(&[0, 0, 0, 0]), [0, 0, 0]);
        assert_eq!(pil_inverted_cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        // c = 155, nk = 200: 200 − MULDIV255(155, 200) = 200 − 122 = 78.
        assert_eq!(pil_inverted_cmyk_to_rgb(&[100, 255, 0, 200]), [78, 200, 0]);
    }

    #[test]
    fn markers_give_the_frame_the_scans_and_completeness() {
        // SOI, SOF0 (3x2, 1 component), SOS with two bytes of data, EOI.
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend([0xFF, 0xC0, 0, 11, 8, 0, 2, 0, 3, 1, 1, 0x11, 0]);
        jpeg.extend([0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0, 0x12, 0x34]);
        jpeg.extend([0xFF, 0xD9]);
        let whole = layout(&jpeg);
        assert_eq!(
            whole,
            Layout {
                frame: Some(Frame {
                    width: 3,
                    height: 2,
                    components: 1
                }),
                scans: 1,
                complete: true
            }
        );
        for cut in 0..jpeg.len() {
            assert!(!layout(&jpeg[..cut]).complete, "cut at {cut}");
        }
    }
}
