//! Image transformation (`/render/image/…`, reference/storage.md §6): the engine behind Supabase
//! Storage's render endpoint, which Supabase runs in imgproxy. Pure and synchronous: the caller
//! runs [`transform`] on the blocking pool and owns the routes, auth, caching and concurrency.
//!
//! Owns: the options ([`TransformOptions`]: from the query, from a signed URL's `transformations`
//! claim, the claim itself, the `X-Transformations` header, a cache key), the choice of output
//! format ([`output_format`]) and decode → resize → encode ([`transform`]).
//!
//! Invariants:
//! - Limits are checked before any pixel buffer exists: the source's length, then its width and
//!   height read from the header by hand (a few bytes: a PNG declaring 100k x 100k is refused
//!   before a decoder runs), and only then a decoder, whose output is bounded by that check.
//! - The output is bounded: never larger than the source in either dimension (imgproxy does not
//!   enlarge) nor than the requested width and height, which are clamped to
//!   [`Limits::min_dimension`]..=[`Limits::max_dimension`] as Supabase clamps them.
//! - Input never panics the caller: every decoder failure is a [`TransformError`]. libjpeg's
//!   fatal errors unwind out of C (mozjpeg-sys's `unwinding` feature) and are caught here, so the
//!   binary must keep `panic = "unwind"` (the default).
//!
//! Geometry is imgproxy's as Supabase drives it: `resizing_type` fill (cover) | fit (contain) |
//! force (fill), no enlargement, centre gravity, EXIF orientation applied (JPEG sources).
//! Sources: JPEG, PNG, WebP (still), GIF (first frame). Outputs: JPEG, PNG, lossy WebP, GIF, and
//! AVIF when asked for by name (`format=avif`). AVIF is encoded by rav1e in pure Rust at its
//! fastest speed, single-threaded (its assembly needs nasm at build time, its threads rayon):
//! about 70 ms for a 200x200 image where libwebp takes 4 ms, so the negotiation from `Accept`
//! picks WebP, as Supabase's imgproxy does (it detects WebP only). AVIF, HEIC, TIFF, BMP and SVG
//! sources are [`TransformError::Unsupported`]; `gravity` is not implemented.
//!
//! Speed: a JPEG is decoded with libjpeg's DCT-domain scaling at the smallest N/8 whose output
//! still covers the scaled size (vipsthumbnail's shrink-on-load), which skips most of the IDCT,
//! upsampling and colour conversion of a big photo; Lanczos3 in fast_image_resize does the rest.

use std::any::Any;
use std::borrow::Cow;
use std::io::{self, BufRead, Read};
use std::num::NonZeroU64;
use std::panic::{self, AssertUnwindSafe};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::pixels::{U8x3, U8x4};
use fast_image_resize::{FilterType, PixelTrait, PixelType, ResizeAlg, ResizeOptions, Resizer};
use mozjpeg::ColorSpace;
use rgb::FromSlice;

/// The quality when the request names none (imgproxy's default).
pub const DEFAULT_QUALITY: u8 = 80;

/// The largest side libwebp encodes; a bigger output falls back to PNG or JPEG.
const WEBP_MAX_DIMENSION: u32 = 16383;

/// Part of every cache key: bump it when the output for the same options changes, so results
/// cached by an older engine are not served.
const ENGINE_VERSION: u32 = 1;

/// `resize`: how the image meets a box of both width and height.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Resize {
    /// Scale to cover the box, then crop the overflow (imgproxy `fill`).
    #[default]
    Cover,
    /// Scale to fit inside the box, keeping the aspect ratio (imgproxy `fit`).
    Contain,
    /// Stretch to the box (imgproxy `force`).
    Fill,
}

impl Resize {
    fn parse(text: &str) -> Option<Resize> {
        match text {
            "cover" => Some(Resize::Cover),
            "contain" => Some(Resize::Contain),
            "fill" => Some(Resize::Fill),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resize::Cover => "cover",
            Resize::Contain => "contain",
            Resize::Fill => "fill",
        }
    }

    /// imgproxy's `resizing_type` (image.ts `formatResizeType`).
    fn imgproxy(self) -> &'static str {
        match self {
            Resize::Cover => "fill",
            Resize::Contain => "fit",
            Resize::Fill => "force",
        }
    }
}

/// `format`: what the caller asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Not given: chosen from `Accept` ([`output_format`]).
    #[default]
    Auto,
    Origin,
    Webp,
    Avif,
}

impl Format {
    fn parse(text: &str) -> Option<Format> {
        match text {
            "origin" => Some(Format::Origin),
            "webp" => Some(Format::Webp),
            "avif" => Some(Format::Avif),
            _ => None,
        }
    }
}

/// The transformation of one render request, validated and clamped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TransformOptions {
    /// `None` when absent or 0 (Supabase treats 0 as absent).
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub resize: Resize,
    /// 20..=100 from a query; `None` encodes at [`DEFAULT_QUALITY`] and is not echoed.
    pub quality: Option<u8>,
    pub format: Format,
}

/// The bounds of one transformation (Supabase's and imgproxy's defaults in [`Limits::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest source, in bytes (Supabase: 25 MB; 25 MiB here).
    pub max_source_bytes: u64,
    /// The largest source resolution, width x height (imgproxy's `max_src_resolution`: 50 MP).
    pub max_source_pixels: u64,
    /// Requested widths and heights are clamped into `min_dimension..=max_dimension`
    /// (`IMG_LIMITS_MIN_SIZE` 1 and `IMG_LIMITS_MAX_SIZE` 2000; hosted Supabase says 2500).
    pub min_dimension: u32,
    pub max_dimension: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_source_bytes: 25 * 1024 * 1024,
            max_source_pixels: 50_000_000,
            min_dimension: 1,
            max_dimension: 2000,
        }
    }
}

/// What [`transform`] encodes. `Origin` is the source's own format, known once its bytes are
/// read, so a result cache can key on it before reading the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    Origin,
    Jpeg,
    Png,
    Webp,
    Gif,
    Avif,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Origin => "origin",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Gif => "gif",
            OutputFormat::Avif => "avif",
        }
    }
}

/// A transformed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transformed {
    pub bytes: Vec<u8>,
    /// The `Content-Type` of `bytes` (the format actually encoded).
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A request option Supabase's schema refuses; `message` is Fastify's text
    /// (`querystring/width must be integer`), for `StorageError::validation`.
    #[error("{message}")]
    InvalidParameter { name: &'static str, message: String },
    #[error("the source image is larger than the limit")]
    SourceTooLarge,
    #[error("the source image has more pixels than the limit")]
    TooManyPixels,
    /// Not an image, or a format this engine does not read.
    #[error("unsupported source image: {0}")]
    Unsupported(String),
    #[error("corrupt source image: {0}")]
    Corrupt(String),
    /// Producing the output failed (resize or encode): not the source's fault.
    #[error("could not produce the image: {0}")]
    Encode(String),
}

impl TransformError {
    /// The status Supabase Storage answers with (image.ts maps imgproxy's source errors to 400).
    pub fn status(&self) -> u16 {
        match self {
            TransformError::Encode(_) => 500,
            _ => 400,
        }
    }

    /// The message Supabase Storage answers with (image.ts `IMGPROXY_SOURCE_IMAGE_BAD_REQUESTS`).
    pub fn public_message(&self) -> &str {
        match self {
            TransformError::InvalidParameter { message, .. } => message,
            TransformError::SourceTooLarge => "The source image file is too large to process",
            TransformError::TooManyPixels => "The source image resolution is too large to process",
            TransformError::Unsupported(_) | TransformError::Corrupt(_) => {
                "The source image is invalid or unsupported for rendering"
            }
            TransformError::Encode(_) => "Internal error",
        }
    }
}

fn corrupt(why: impl Into<String>) -> TransformError {
    TransformError::Corrupt(why.into())
}

impl TransformOptions {
    /// From the render route's query pairs (other names, as `download` and `token`, are ignored).
    pub fn from_query<K: AsRef<str>, V: AsRef<str>>(
        pairs: &[(K, V)],
        limits: &Limits,
    ) -> Result<TransformOptions, TransformError> {
        TransformOptions::from_fields("querystring", pairs, limits)
    }

    /// From named fields validated as Supabase's `transformationOptionsSchema` (Ajv with type
    /// coercion), property by property in the schema's order so the first error is Supabase's.
    /// `location` prefixes the messages: `querystring`, or `body/transform` for a signing body
    /// (its JSON values given as text).
    pub fn from_fields<K: AsRef<str>, V: AsRef<str>>(
        location: &str,
        pairs: &[(K, V)],
        limits: &Limits,
    ) -> Result<TransformOptions, TransformError> {
        let height = integer_field(location, pairs, "height", 0, None)?;
        let width = integer_field(location, pairs, "width", 0, None)?;
        let resize = enum_field(location, pairs, "resize", Resize::parse)?;
        let format = enum_field(location, pairs, "format", Format::parse)?;
        let quality = integer_field(location, pairs, "quality", 20, Some(100))?;
        Ok(TransformOptions {
            width: width.and_then(|w| clamp_dimension(w, limits)),
            height: height.and_then(|h| clamp_dimension(h, limits)),
            resize: resize.unwrap_or_default(),
            // In 20..=100 after validation.
            quality: quality.map(|q| q as u8),
            format: format.unwrap_or_default(),
        })
    }

    /// From a signed URL's `transformations` claim (`height:200,width:200,resize:cover`), read as
    /// image.ts `setTransformationsFromString` reads it: `parseInt` numbers, an unknown `resize`
    /// is cover, unknown names (`gravity`) are skipped. The claim is signed, so this is lenient;
    /// only an unknown `format` is refused, which imgproxy would refuse too.
    pub fn from_claim(text: &str, limits: &Limits) -> Result<TransformOptions, TransformError> {
        let mut options = TransformOptions::default();
        for param in text.split(',') {
            let mut parts = param.split(':');
            let name = parts.next().unwrap_or_default();
            let Some(value) = parts.next().filter(|v| !v.is_empty()) else { continue };
            match name {
                "height" => options.height = js_parse_int(value).and_then(|h| clamp_dimension(h as f64, limits)),
                "width" => options.width = js_parse_int(value).and_then(|w| clamp_dimension(w as f64, limits)),
                "resize" => options.resize = Resize::parse(value).unwrap_or_default(),
                "format" => {
                    options.format = Format::parse(value).ok_or_else(|| TransformError::InvalidParameter {
                        name: "format",
                        message: "Invalid Parameter format".into(),
                    })?
                }
                // Unchecked upstream (imgproxy takes 1..=100); 0 is JavaScript's "absent".
                "quality" => options.quality = js_parse_int(value).filter(|q| *q != 0).map(|q| q.clamp(1, 100) as u8),
                _ => {}
            }
        }
        Ok(options)
    }

    /// The `transformations` claim of a signed URL (getSignedURL.ts: `applyTransformation(transform,
    /// true)`), which [`TransformOptions::from_claim`] reads back. `format=origin` is left out,
    /// as upstream does.
    pub fn claim(&self) -> String {
        self.segments(true).join(",")
    }

    /// The `X-Transformations` header's items, as image.ts `applyTransformation` lists them:
    /// `height:200,width:200,resizing_type:fill,quality:60`; empty: send no header.
    pub fn applied(&self) -> Vec<String> {
        self.segments(false)
    }

    fn segments(&self, keep_original: bool) -> Vec<String> {
        let mut segments = Vec::new();
        if let Some(height) = self.height {
            segments.push(format!("height:{height}"));
        }
        if let Some(width) = self.width {
            segments.push(format!("width:{width}"));
        }
        if self.width.is_some() || self.height.is_some() {
            segments.push(if keep_original {
                format!("resize:{}", self.resize.as_str())
            } else {
                format!("resizing_type:{}", self.resize.imgproxy())
            });
        }
        if let Some(quality) = self.quality {
            segments.push(format!("quality:{quality}"));
        }
        match self.format {
            Format::Webp => segments.push("format:webp".into()),
            Format::Avif => segments.push("format:avif".into()),
            Format::Auto | Format::Origin => {}
        }
        segments
    }

    /// A stable key of everything that decides the output bytes of one object version: these
    /// options as [`transform`] reads them, the chosen output, the engine's version.
    pub fn cache_key(&self, output: OutputFormat) -> String {
        let dimension = |d: Option<u32>| d.map_or_else(|| "-".to_string(), |d| d.to_string());
        // Without a box, `resize` changes nothing.
        let resize = if self.width.is_none() && self.height.is_none() { "-" } else { self.resize.as_str() };
        format!(
            "v{ENGINE_VERSION}:w{}:h{}:{resize}:q{}:{}",
            dimension(self.width),
            dimension(self.height),
            self.quality.unwrap_or(DEFAULT_QUALITY),
            output.as_str()
        )
    }
}

/// Supabase's clamp of a requested side: 0 (or `NaN`) is absent, anything else is clamped with
/// `Math.min(Math.max(v, min), max)` (which, unlike `f64::clamp`, cannot panic on bad limits).
fn clamp_dimension(value: f64, limits: &Limits) -> Option<u32> {
    if value == 0.0 || value.is_nan() {
        return None;
    }
    let clamped = value.max(f64::from(limits.min_dimension)).min(f64::from(limits.max_dimension));
    // `as` saturates; 0 only under limits that allow it, and 0 means absent.
    Some(clamped as u32).filter(|v| *v > 0)
}

fn invalid(location: &str, name: &'static str, rule: &str) -> TransformError {
    TransformError::InvalidParameter { name, message: format!("{location}/{name} {rule}") }
}

/// The one value of `name`. A repeated name is an array to Fastify, which a scalar type refuses.
fn single<'a, K: AsRef<str>, V: AsRef<str>>(
    location: &str,
    pairs: &'a [(K, V)],
    name: &'static str,
    type_rule: &str,
) -> Result<Option<&'a str>, TransformError> {
    let mut values = pairs.iter().filter(|(k, _)| k.as_ref() == name).map(|(_, v)| v.as_ref());
    let first = values.next();
    if values.next().is_some() {
        return Err(invalid(location, name, type_rule));
    }
    Ok(first)
}

/// An `integer` property with `minimum` (and `maximum`), coerced from text as Ajv does.
fn integer_field<K: AsRef<str>, V: AsRef<str>>(
    location: &str,
    pairs: &[(K, V)],
    name: &'static str,
    minimum: i64,
    maximum: Option<i64>,
) -> Result<Option<f64>, TransformError> {
    let Some(text) = single(location, pairs, name, "must be integer")? else { return Ok(None) };
    let value = ajv_number(text)
        .filter(|v| v.is_finite() && v.fract() == 0.0)
        .ok_or_else(|| invalid(location, name, "must be integer"))?;
    if value < minimum as f64 {
        return Err(invalid(location, name, &format!("must be >= {minimum}")));
    }
    match maximum {
        Some(maximum) if value > maximum as f64 => Err(invalid(location, name, &format!("must be <= {maximum}"))),
        _ => Ok(Some(value)),
    }
}

fn enum_field<T, K: AsRef<str>, V: AsRef<str>>(
    location: &str,
    pairs: &[(K, V)],
    name: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, TransformError> {
    let Some(text) = single(location, pairs, name, "must be string")? else { return Ok(None) };
    parse(text).map(Some).ok_or_else(|| invalid(location, name, "must be equal to one of the allowed values"))
}

/// Ajv's coercion of a string to a number: a non-empty string that JavaScript's `+s` reads
/// (surrounding whitespace trimmed; all-whitespace is 0). Hex and binary literals are not read.
fn ajv_number(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Some(0.0);
    }
    trimmed.parse::<f64>().ok()
}

/// JavaScript's `parseInt(s, 10)`: leading whitespace, a sign, the leading digits; `None` for NaN.
fn js_parse_int(text: &str) -> Option<i64> {
    let text = text.trim_start();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut digits = digits.bytes().take_while(u8::is_ascii_digit).peekable();
    digits.peek()?;
    let value = digits.fold(0i64, |acc, d| acc.saturating_mul(10).saturating_add(i64::from(d - b'0')));
    Some(if negative { -value } else { value })
}

/// The output for `options` and the request's `Accept`, as Supabase's imgproxy chooses: an
/// explicit `webp` or `avif`; `origin`; without `format`, WebP when `Accept` names `image/webp`
/// (imgproxy's WebP detection: a substring test), else the source's format.
pub fn output_format(options: &TransformOptions, accept: Option<&str>) -> OutputFormat {
    match options.format {
        Format::Webp => OutputFormat::Webp,
        Format::Avif => OutputFormat::Avif,
        Format::Origin => OutputFormat::Origin,
        Format::Auto if accept.is_some_and(|a| a.to_ascii_lowercase().contains("image/webp")) => OutputFormat::Webp,
        Format::Auto => OutputFormat::Origin,
    }
}

/// Decodes `source`, resizes it as `options` say and encodes it as `output` at the requested
/// quality. Limits are checked before decoding (see the module documentation).
pub fn transform(
    source: &[u8],
    options: &TransformOptions,
    output: OutputFormat,
    limits: &Limits,
) -> Result<Transformed, TransformError> {
    if source.len() as u64 > limits.max_source_bytes {
        return Err(TransformError::SourceTooLarge);
    }
    let probe = probe(source)?;
    if u64::from(probe.width) * u64::from(probe.height) > limits.max_source_pixels {
        return Err(TransformError::TooManyPixels);
    }
    // The geometry is planned on the image as displayed, the pixels are processed as stored.
    let transposed = probe.orientation.transposes();
    let (shown_w, shown_h) = if transposed { (probe.height, probe.width) } else { (probe.width, probe.height) };
    let shown = plan(shown_w, shown_h, options);
    let stored = if transposed { shown.transposed() } else { shown };
    let pixels = decode(source, &probe, stored.scaled, limits)?;
    let pixels = orient(resize(pixels, stored)?, probe.orientation);
    let codec = encoder_for(output, probe.codec, &pixels);
    let bytes = encode(&pixels, codec, options.quality.unwrap_or(DEFAULT_QUALITY))?;
    Ok(Transformed { bytes, mime: codec.mime(), width: pixels.width, height: pixels.height })
}

/// The formats read and written (AVIF is only written: [`probe`] never answers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Jpeg,
    Png,
    Gif,
    Webp,
    Avif,
}

impl Codec {
    fn mime(self) -> &'static str {
        match self {
            Codec::Jpeg => "image/jpeg",
            Codec::Png => "image/png",
            Codec::Gif => "image/gif",
            Codec::Webp => "image/webp",
            Codec::Avif => "image/avif",
        }
    }
}

/// The encoder for `output`; WebP beyond libwebp's largest side falls back to a format that
/// keeps what the pixels have (alpha: PNG).
fn encoder_for(output: OutputFormat, source: Codec, pixels: &Pixels) -> Codec {
    let codec = match output {
        OutputFormat::Origin => source,
        OutputFormat::Jpeg => Codec::Jpeg,
        OutputFormat::Png => Codec::Png,
        OutputFormat::Webp => Codec::Webp,
        OutputFormat::Gif => Codec::Gif,
        OutputFormat::Avif => Codec::Avif,
    };
    let too_big = pixels.width > WEBP_MAX_DIMENSION || pixels.height > WEBP_MAX_DIMENSION;
    match codec {
        Codec::Webp if too_big && pixels.channels == 4 => Codec::Png,
        Codec::Webp if too_big => Codec::Jpeg,
        codec => codec,
    }
}

// ---------------------------------------------------------------------------------------------
// Header probing: format, dimensions and orientation from a few bytes, before any decoder runs.

/// An EXIF orientation, 1 (as stored) to 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Orientation(u8);

impl Orientation {
    const UPRIGHT: Orientation = Orientation(1);

    /// 5 to 8 swap width and height.
    fn transposes(self) -> bool {
        self.0 >= 5
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    codec: Codec,
    width: u32,
    height: u32,
    orientation: Orientation,
}

fn probe(source: &[u8]) -> Result<Probe, TransformError> {
    let probe = if source.starts_with(&[0xFF, 0xD8, 0xFF]) {
        probe_jpeg(source)?
    } else if source.starts_with(b"\x89PNG\r\n\x1a\n") {
        probe_png(source)?
    } else if source.starts_with(b"GIF87a") || source.starts_with(b"GIF89a") {
        probe_gif(source)?
    } else if source.starts_with(b"RIFF") && source.get(8..12) == Some(b"WEBP") {
        probe_webp(source)?
    } else {
        return Err(TransformError::Unsupported(unsupported_kind(source).into()));
    };
    if probe.width == 0 || probe.height == 0 {
        return Err(corrupt("the image declares no pixels"));
    }
    Ok(probe)
}

/// Names the formats people upload that this engine does not read, for the log.
fn unsupported_kind(source: &[u8]) -> &'static str {
    match source.get(4..12) {
        Some(b"ftypavif") | Some(b"ftypavis") => "AVIF",
        Some(b"ftypheic") | Some(b"ftypheix") | Some(b"ftypmif1") => "HEIF",
        _ if source.starts_with(b"II*\0") || source.starts_with(b"MM\0*") => "TIFF",
        _ if source.starts_with(b"BM") => "BMP",
        _ if source.trim_ascii_start().starts_with(b"<") => "SVG or another markup",
        _ => "not an image",
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn le16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// Walks the JPEG markers to the frame header (SOFn), noting an EXIF orientation on the way.
fn probe_jpeg(data: &[u8]) -> Result<Probe, TransformError> {
    let early_end = || corrupt("the JPEG ends before its frame header");
    let mut orientation = Orientation::UPRIGHT;
    let mut at = 2;
    loop {
        if data.get(at) != Some(&0xFF) {
            return Err(corrupt("bad JPEG marker"));
        }
        // Fill bytes (0xFF) may precede a marker.
        while data.get(at) == Some(&0xFF) {
            at += 1;
        }
        let marker = *data.get(at).ok_or_else(early_end)?;
        at += 1;
        match marker {
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => return Err(corrupt("JPEG image data before a frame header")),
            _ => {}
        }
        // The length counts its own two bytes.
        let length = usize::from(be16(data, at).ok_or_else(early_end)?);
        if length < 2 {
            return Err(corrupt("bad JPEG segment length"));
        }
        let segment = data.get(at + 2..at + length).ok_or_else(early_end)?;
        match marker {
            // SOF0..SOF15 but DHT (C4), JPG (C8), DAC (CC): precision, height, width.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let height = be16(segment, 1).ok_or_else(early_end)?;
                let width = be16(segment, 3).ok_or_else(early_end)?;
                return Ok(Probe { codec: Codec::Jpeg, width: width.into(), height: height.into(), orientation });
            }
            0xE1 => orientation = exif_orientation(segment).unwrap_or(orientation),
            _ => {}
        }
        at += length;
    }
}

/// Tag 0x0112 of IFD0 in an APP1 `Exif` segment, when it holds 1 to 8.
fn exif_orientation(app1: &[u8]) -> Option<Orientation> {
    let tiff = app1.strip_prefix(b"Exif\0\0")?;
    let big_endian = match tiff.get(0..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let bytes: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big_endian { u16::from_be_bytes(bytes) } else { u16::from_le_bytes(bytes) })
    };
    let bytes: [u8; 4] = tiff.get(4..8)?.try_into().ok()?;
    let ifd = if big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) } as usize;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries)
        .map(|i| ifd + 2 + i * 12)
        .find(|entry| u16_at(*entry) == Some(0x0112))
        .and_then(|entry| u16_at(entry + 8))
        .and_then(|value| u8::try_from(value).ok())
        .filter(|value| (1..=8).contains(value))
        .map(Orientation)
}

fn probe_png(data: &[u8]) -> Result<Probe, TransformError> {
    // The signature, then IHDR first: length, type, width, height.
    if data.get(12..16) != Some(b"IHDR") {
        return Err(corrupt("the PNG does not start with IHDR"));
    }
    let (width, height) = be32(data, 16).zip(be32(data, 20)).ok_or_else(|| corrupt("short PNG header"))?;
    Ok(Probe { codec: Codec::Png, width, height, orientation: Orientation::UPRIGHT })
}

fn probe_gif(data: &[u8]) -> Result<Probe, TransformError> {
    // The logical screen; frames are drawn on it (and clipped to it).
    let (width, height) = le16(data, 6).zip(le16(data, 8)).ok_or_else(|| corrupt("short GIF header"))?;
    Ok(Probe { codec: Codec::Gif, width: width.into(), height: height.into(), orientation: Orientation::UPRIGHT })
}

fn probe_webp(data: &[u8]) -> Result<Probe, TransformError> {
    // libwebp's header parser: reads the chunk headers only.
    let features = webp::BitstreamFeatures::new(data).ok_or_else(|| corrupt("bad WebP header"))?;
    if features.has_animation() {
        return Err(TransformError::Unsupported("animated WebP".into()));
    }
    Ok(Probe {
        codec: Codec::Webp,
        width: features.width(),
        height: features.height(),
        orientation: Orientation::UPRIGHT,
    })
}

// ---------------------------------------------------------------------------------------------
// Geometry: imgproxy's (processing/calc_scale and the crop to the result size).

/// The size the whole image is scaled to, then the centred crop of it that is the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    scaled: (u32, u32),
    out: (u32, u32),
}

impl Plan {
    fn transposed(self) -> Plan {
        Plan { scaled: (self.scaled.1, self.scaled.0), out: (self.out.1, self.out.0) }
    }
}

fn plan(width: u32, height: u32, options: &TransformOptions) -> Plan {
    let (want_w, want_h) = (options.width.unwrap_or(0), options.height.unwrap_or(0));
    let (src_w, src_h) = (f64::from(width), f64::from(height));
    // A side not asked for keeps the source's.
    let dst_w = if want_w == 0 { src_w } else { f64::from(want_w) };
    let dst_h = if want_h == 0 { src_h } else { f64::from(want_h) };
    let mut w_shrink = if dst_w == src_w { 1.0 } else { src_w / dst_w };
    let mut h_shrink = if dst_h == src_h { 1.0 } else { src_h / dst_h };
    let uniform = match options.resize {
        // `force` stretches each side on its own, even when only one is given.
        Resize::Fill => None,
        // One side given: the other follows the aspect ratio.
        _ if want_w == 0 => Some(h_shrink),
        _ if want_h == 0 => Some(w_shrink),
        Resize::Contain => Some(w_shrink.max(h_shrink)),
        Resize::Cover => Some(w_shrink.min(h_shrink)),
    };
    if let Some(shrink) = uniform {
        (w_shrink, h_shrink) = (shrink, shrink);
    }
    // imgproxy enlarges only on request (`enlarge`), which Supabase never sends.
    let least = w_shrink.min(h_shrink);
    if least < 1.0 {
        w_shrink /= least;
        h_shrink /= least;
    }
    let scaled = (scale(width, w_shrink), scale(height, h_shrink));
    let crop = |want: u32, scaled: u32| if want == 0 { scaled } else { want.min(scaled) };
    Plan { scaled, out: (crop(want_w, scaled.0), crop(want_h, scaled.1)) }
}

fn scale(size: u32, shrink: f64) -> u32 {
    ((f64::from(size) / shrink).round() as u32).max(1)
}

// ---------------------------------------------------------------------------------------------
// Decoding, into 8-bit RGB or RGBA.

struct Pixels {
    data: Vec<u8>,
    width: u32,
    height: u32,
    /// 3 (RGB) or 4 (RGBA, not premultiplied).
    channels: u8,
}

impl Pixels {
    fn new(data: Vec<u8>, width: u32, height: u32, channels: u8) -> Result<Pixels, TransformError> {
        let expected = width as usize * height as usize * usize::from(channels);
        if data.len() != expected || !(channels == 3 || channels == 4) {
            return Err(corrupt("the decoder returned a short image"));
        }
        Ok(Pixels { data, width, height, channels })
    }
}

/// Decodes the whole image at a size of at least `need` where the codec can scale on decode
/// (JPEG), else at full size.
fn decode(source: &[u8], probe: &Probe, need: (u32, u32), limits: &Limits) -> Result<Pixels, TransformError> {
    let pixels = match probe.codec {
        Codec::Jpeg => decode_jpeg(source, probe, dct_scale(probe.width, probe.height, need))?,
        Codec::Png => decode_png(source, probe)?,
        Codec::Gif => decode_gif(source, probe, limits)?,
        Codec::Webp => decode_webp(source)?,
        // `probe` refuses AVIF sources before any decoding.
        Codec::Avif => return Err(TransformError::Unsupported("AVIF".into())),
    };
    Ok(pixels)
}

/// The smallest libjpeg scale `n/8` whose output (sizes rounded up) covers `need` on both axes.
fn dct_scale(width: u32, height: u32, need: (u32, u32)) -> u8 {
    let scaled = |size: u32, n: u8| (u64::from(size) * u64::from(n)).div_ceil(8);
    (1..=8u8).find(|&n| scaled(width, n) >= u64::from(need.0) && scaled(height, n) >= u64::from(need.1)).unwrap_or(8)
}

/// Runs codec work that may unwind (libjpeg's fatal errors), turning an unwind into `wrap(why)`.
fn catch_codec<T>(
    work: impl FnOnce() -> Result<T, TransformError>,
    wrap: fn(String) -> TransformError,
) -> Result<T, TransformError> {
    panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| Err(wrap(panic_text(payload))))
}

fn panic_text(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(|| "codec failure".into(), |t| (*t).into()),
    }
}

/// The JPEG as libjpeg reads it, noting whether libjpeg asked for bytes past the end: libjpeg
/// pads a truncated file with an end marker and a (silenced) warning and returns grey rows,
/// which this engine refuses instead of serving.
struct WatchedSlice<'a> {
    rest: &'a [u8],
    ran_dry: bool,
}

impl Read for WatchedSlice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.rest.read(buf)?;
        self.ran_dry |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

impl BufRead for WatchedSlice<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.ran_dry |= self.rest.is_empty();
        Ok(self.rest)
    }

    fn consume(&mut self, amount: usize) {
        self.rest = self.rest.get(amount..).unwrap_or_default();
    }
}

fn decode_jpeg(source: &[u8], probe: &Probe, scale_num: u8) -> Result<Pixels, TransformError> {
    let io_error = |e: io::Error| corrupt(format!("JPEG: {e}"));
    catch_codec(
        || {
            let reader = WatchedSlice { rest: source, ran_dry: false };
            let mut decoder = mozjpeg::Decompress::builder().from_reader(reader).map_err(io_error)?;
            if decoder.size() != (probe.width as usize, probe.height as usize) {
                return Err(corrupt("JPEG: two frame headers disagree"));
            }
            decoder.scale(scale_num);
            // libjpeg converts YCbCr and grey to RGB, not CMYK: that is converted below.
            let cmyk = matches!(decoder.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
            let out_space = if cmyk { ColorSpace::JCS_CMYK } else { ColorSpace::JCS_RGB };
            let mut started = decoder.to_colorspace(out_space).map_err(io_error)?;
            let (width, height) = (started.width() as u32, started.height() as u32);
            let data: Vec<u8> = started.read_scanlines().map_err(io_error)?;
            if started.finish_into_inner().map_err(io_error)?.ran_dry {
                return Err(corrupt("JPEG: truncated"));
            }
            let data = if cmyk { cmyk_to_rgb(&data) } else { data };
            Pixels::new(data, width, height, 3)
        },
        TransformError::Corrupt,
    )
}

/// CMYK as Adobe writes it in JPEG (inverted: 255 is no ink) to RGB, without a colour profile.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let ink = |c: u8, k: u8| ((u16::from(c) * u16::from(k) + 127) / 255) as u8;
    cmyk.chunks_exact(4).flat_map(|p| [ink(p[0], p[3]), ink(p[1], p[3]), ink(p[2], p[3])]).collect()
}

fn decode_png(source: &[u8], probe: &Probe) -> Result<Pixels, TransformError> {
    let png_error = |e: png::DecodingError| corrupt(format!("PNG: {e}"));
    let mut decoder = png::Decoder::new(io::Cursor::new(source));
    // 8-bit gray, gray+alpha, RGB or RGBA out, whatever the depth and palette.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    // Text is dropped anyway: do not inflate it.
    decoder.set_ignore_text_chunk(true);
    let mut reader = decoder.read_info().map_err(png_error)?;
    if reader.info().size() != (probe.width, probe.height) {
        return Err(corrupt("PNG: two headers disagree"));
    }
    let size = reader.output_buffer_size().ok_or_else(|| corrupt("PNG: too large"))?;
    let mut data = vec![0; size];
    let frame = reader.next_frame(&mut data).map_err(png_error)?;
    data.truncate(frame.buffer_size());
    let (data, channels) = match frame.color_type {
        png::ColorType::Grayscale => (data.iter().flat_map(|&v| [v, v, v]).collect(), 3),
        png::ColorType::GrayscaleAlpha => (data.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect(), 4),
        png::ColorType::Rgb => (data, 3),
        png::ColorType::Rgba => (data, 4),
        png::ColorType::Indexed => return Err(corrupt("PNG: palette left unexpanded")),
    };
    Pixels::new(data, frame.width, frame.height, channels)
}

fn decode_gif(source: &[u8], probe: &Probe, limits: &Limits) -> Result<Pixels, TransformError> {
    let gif_error = |e: gif::DecodingError| corrupt(format!("GIF: {e}"));
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    // A frame may declare up to 65535 x 65535 whatever the screen says: bound its buffer too.
    let frame_bytes = NonZeroU64::new(limits.max_source_pixels.saturating_mul(4)).unwrap_or(NonZeroU64::MIN);
    options.set_memory_limit(gif::MemoryLimit::Bytes(frame_bytes));
    let mut decoder = options.read_info(source).map_err(gif_error)?;
    let frame = decoder.read_next_frame().map_err(gif_error)?.ok_or_else(|| corrupt("GIF: no frame"))?;
    let (width, height) = (probe.width as usize, probe.height as usize);
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let frame_w = usize::from(frame.width);
    let mut canvas = vec![0u8; width * height * 4];
    // The first frame on a transparent screen, clipped to it.
    let visible_w = width.saturating_sub(left).min(frame_w);
    if visible_w > 0 {
        for (y, row) in frame.buffer.chunks_exact(frame_w * 4).enumerate().take(height.saturating_sub(top)) {
            let at = ((top + y) * width + left) * 4;
            canvas[at..at + visible_w * 4].copy_from_slice(&row[..visible_w * 4]);
        }
    }
    Pixels::new(canvas, probe.width, probe.height, 4)
}

fn decode_webp(source: &[u8]) -> Result<Pixels, TransformError> {
    let image = webp::Decoder::new(source).decode().ok_or_else(|| corrupt("WebP: cannot decode"))?;
    let channels = if image.is_alpha() { 4 } else { 3 };
    Pixels::new(image.to_vec(), image.width(), image.height(), channels)
}

// ---------------------------------------------------------------------------------------------
// Resize, orientation, encoding.

/// Scales `pixels` (decoded at some size) to `plan.scaled` and crops the centred `plan.out`,
/// in one Lanczos3 pass over the source region that becomes the output.
fn resize(pixels: Pixels, plan: Plan) -> Result<Pixels, TransformError> {
    let (out_w, out_h) = plan.out;
    if (pixels.width, pixels.height) == plan.out && plan.scaled == plan.out {
        return Ok(pixels);
    }
    let fx = f64::from(pixels.width) / f64::from(plan.scaled.0);
    let fy = f64::from(pixels.height) / f64::from(plan.scaled.1);
    let left = f64::from(plan.scaled.0.saturating_sub(out_w)) / 2.0 * fx;
    let top = f64::from(plan.scaled.1.saturating_sub(out_h)) / 2.0 * fy;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).crop(
        left,
        top,
        f64::from(out_w) * fx,
        f64::from(out_h) * fy,
    );
    let pixel_type = if pixels.channels == 4 { PixelType::U8x4 } else { PixelType::U8x3 };
    let src = ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
        .map_err(|e| TransformError::Encode(format!("resize: {e}")))?;
    let mut dst = Image::new(out_w, out_h, pixel_type);
    if pixels.channels == 4 {
        resize_typed::<U8x4>(&src, &mut dst, &options)?;
    } else {
        resize_typed::<U8x3>(&src, &mut dst, &options)?;
    }
    Pixels::new(dst.into_vec(), out_w, out_h, pixels.channels)
}

/// `Resizer::resize` for one pixel type: the untyped `resize` instantiates the resampler for
/// all thirteen of fast_image_resize's types, which took 40 s of this crate's release build.
fn resize_typed<P: PixelTrait>(src: &ImageRef, dst: &mut Image, options: &ResizeOptions) -> Result<(), TransformError> {
    let failed = |why: String| TransformError::Encode(format!("resize: {why}"));
    let (Some(src), Some(mut dst)) = (src.typed_image::<P>(), dst.typed_image_mut::<P>()) else {
        return Err(failed("pixel type mismatch".into()));
    };
    Resizer::new().resize_typed(&src, &mut dst, options).map_err(|e| failed(e.to_string()))
}

/// Turns stored pixels into the displayed image for an EXIF orientation.
fn orient(pixels: Pixels, orientation: Orientation) -> Pixels {
    if !(2..=8).contains(&orientation.0) {
        return pixels;
    }
    let (w, h, c) = (pixels.width as usize, pixels.height as usize, usize::from(pixels.channels));
    let (out_w, out_h) = if orientation.transposes() { (h, w) } else { (w, h) };
    let mut data = vec![0u8; pixels.data.len()];
    for y in 0..out_h {
        for x in 0..out_w {
            // The stored pixel shown at (x, y).
            let (sx, sy) = match orientation.0 {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x),
            };
            let (from, to) = ((sy * w + sx) * c, (y * out_w + x) * c);
            data[to..to + c].copy_from_slice(&pixels.data[from..from + c]);
        }
    }
    Pixels { data, width: out_w as u32, height: out_h as u32, channels: pixels.channels }
}

fn encode(pixels: &Pixels, codec: Codec, quality: u8) -> Result<Vec<u8>, TransformError> {
    match codec {
        Codec::Jpeg => encode_jpeg(pixels, quality),
        Codec::Png => encode_png(pixels),
        Codec::Webp => encode_webp(pixels, quality),
        Codec::Gif => encode_gif(pixels),
        Codec::Avif => encode_avif(pixels, quality),
    }
}

/// RGB for a format without alpha: RGBA over white.
fn flatten(pixels: &Pixels) -> Cow<'_, [u8]> {
    if pixels.channels == 3 {
        return Cow::Borrowed(&pixels.data);
    }
    let over_white = |v: u8, a: u8| ((u16::from(v) * u16::from(a) + 255 * (255 - u16::from(a)) + 127) / 255) as u8;
    Cow::Owned(pixels.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]].map(|v| over_white(v, p[3]))).collect())
}

fn encode_jpeg(pixels: &Pixels, quality: u8) -> Result<Vec<u8>, TransformError> {
    let rgb = flatten(pixels);
    let io_error = |e: io::Error| TransformError::Encode(format!("JPEG: {e}"));
    catch_codec(
        || {
            let mut compress = mozjpeg::Compress::new(ColorSpace::JCS_RGB);
            // libjpeg-turbo's settings (no trellis, baseline): mozjpeg's own are far slower.
            compress.set_fastest_defaults();
            compress.set_size(pixels.width as usize, pixels.height as usize);
            compress.set_quality(f32::from(quality));
            // As imgproxy: optimised Huffman tables, chroma subsampled below quality 90.
            compress.set_optimize_coding(true);
            if quality >= 90 {
                compress.set_chroma_sampling_pixel_sizes((1, 1), (1, 1));
            }
            let mut started = compress.start_compress(Vec::new()).map_err(io_error)?;
            started.write_scanlines(&rgb).map_err(io_error)?;
            started.finish().map_err(io_error)
        },
        TransformError::Encode,
    )
}

fn encode_png(pixels: &Pixels) -> Result<Vec<u8>, TransformError> {
    let png_error = |e: png::EncodingError| TransformError::Encode(format!("PNG: {e}"));
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, pixels.width, pixels.height);
    encoder.set_color(if pixels.channels == 4 { png::ColorType::Rgba } else { png::ColorType::Rgb });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&pixels.data).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(out)
}

fn encode_webp(pixels: &Pixels, quality: u8) -> Result<Vec<u8>, TransformError> {
    let encoder = if pixels.channels == 4 {
        webp::Encoder::from_rgba(&pixels.data, pixels.width, pixels.height)
    } else {
        webp::Encoder::from_rgb(&pixels.data, pixels.width, pixels.height)
    };
    let memory =
        encoder.encode_simple(false, f32::from(quality)).map_err(|e| TransformError::Encode(format!("WebP: {e:?}")))?;
    Ok(memory.to_vec())
}

/// rav1e's fastest speed: the other speeds save about a quarter of the bytes for 1.5-4x the time.
const AVIF_SPEED: u8 = 10;

fn encode_avif(pixels: &Pixels, quality: u8) -> Result<Vec<u8>, TransformError> {
    let (width, height) = (pixels.width as usize, pixels.height as usize);
    // ravif panics outside 1..=100; the options are validated to 20..=100 already.
    let encoder = ravif::Encoder::new().with_quality(f32::from(quality.clamp(1, 100))).with_speed(AVIF_SPEED);
    let encoded = if pixels.channels == 4 {
        encoder.encode_rgba(ravif::Img::new(pixels.data.as_rgba(), width, height))
    } else {
        encoder.encode_rgb(ravif::Img::new(pixels.data.as_rgb(), width, height))
    };
    encoded.map(|image| image.avif_file).map_err(|e| TransformError::Encode(format!("AVIF: {e}")))
}

fn encode_gif(pixels: &Pixels) -> Result<Vec<u8>, TransformError> {
    let gif_error = |e: gif::EncodingError| TransformError::Encode(format!("GIF: {e}"));
    let too_big = || TransformError::Encode("GIF: larger than 65535".into());
    let width = u16::try_from(pixels.width).map_err(|_| too_big())?;
    let height = u16::try_from(pixels.height).map_err(|_| too_big())?;
    // NeuQuant to a 256-colour palette; speed 10 is the crate's balance of time and quality.
    let frame = if pixels.channels == 4 {
        gif::Frame::from_rgba_speed(width, height, &mut pixels.data.clone(), 10)
    } else {
        gif::Frame::from_rgb_speed(width, height, &pixels.data, 10)
    };
    let mut out = Vec::new();
    let mut encoder = gif::Encoder::new(&mut out, width, height, &[]).map_err(gif_error)?;
    encoder.write_frame(&frame).map_err(gif_error)?;
    drop(encoder);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn query(text: &str) -> Result<TransformOptions, TransformError> {
        TransformOptions::from_query(&pairs(text), &Limits::default())
    }

    fn message(result: Result<TransformOptions, TransformError>) -> String {
        match result {
            Err(TransformError::InvalidParameter { message, .. }) => message,
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }

    /// A smooth gradient with a little texture, so encoders have something to do.
    fn gradient(width: u32, height: u32, channels: u8) -> Pixels {
        let mut data = Vec::with_capacity((width * height) as usize * usize::from(channels));
        for y in 0..height {
            for x in 0..width {
                let texture = ((x * 7 + y * 13) % 17) as u8;
                data.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 128 + texture]);
                if channels == 4 {
                    data.push((x * 255 / width) as u8);
                }
            }
        }
        Pixels::new(data, width, height, channels).expect("gradient")
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        encode_jpeg(&gradient(width, height, 3), 90).expect("jpeg")
    }

    fn png(width: u32, height: u32, channels: u8) -> Vec<u8> {
        encode_png(&gradient(width, height, channels)).expect("png")
    }

    /// A JPEG whose APP1 carries EXIF orientation `orientation` (little-endian TIFF).
    fn jpeg_oriented(width: u32, height: u32, orientation: u8) -> Vec<u8> {
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
        exif.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, orientation, 0, 0, 0, 0, 0, 0, 0]);
        let pixels = gradient(width, height, 3);
        let mut compress = mozjpeg::Compress::new(ColorSpace::JCS_RGB);
        compress.set_size(width as usize, height as usize);
        let mut started = compress.start_compress(Vec::new()).expect("start");
        started.write_marker(mozjpeg::Marker::APP(1), &exif);
        started.write_scanlines(&pixels.data).expect("scanlines");
        started.finish().expect("finish")
    }

    fn run(source: &[u8], query_text: &str, output: OutputFormat) -> Result<Transformed, TransformError> {
        transform(source, &query(query_text).expect("options"), output, &Limits::default())
    }

    fn dims(source: &[u8], query_text: &str) -> (u32, u32) {
        let out = run(source, query_text, OutputFormat::Origin).expect("transform");
        let probed = probe(&out.bytes).expect("output probes");
        assert_eq!((probed.width, probed.height), (out.width, out.height));
        (out.width, out.height)
    }

    #[test]
    fn transform_query_defaults_and_clamping() {
        assert_eq!(query("").unwrap(), TransformOptions::default());
        let options =
            query("width=3000&height=1&resize=contain&quality=70&format=origin&download=a.png&token=x").unwrap();
        assert_eq!(
            options,
            TransformOptions {
                width: Some(2000),
                height: Some(1),
                resize: Resize::Contain,
                quality: Some(70),
                format: Format::Origin
            }
        );
        // 0 is valid and means "not given"; coercion reads what JavaScript's `+s` reads.
        assert_eq!(query("width=0&height=-0").unwrap().width, None);
        assert_eq!(query("width=%20").unwrap_err().to_string(), "querystring/width must be integer");
        assert_eq!(query("width= 12 ").unwrap().width, Some(12));
        assert_eq!(query("width=1e2&height=12.0").unwrap().width, Some(100));
        assert_eq!(query("width=1e300").unwrap().width, Some(2000));
        let hosted = Limits { max_dimension: 2500, ..Limits::default() };
        assert_eq!(TransformOptions::from_query(&pairs("height=9999"), &hosted).unwrap().height, Some(2500));
    }

    #[test]
    fn transform_query_errors_are_fastify_messages() {
        assert_eq!(message(query("width=abc")), "querystring/width must be integer");
        assert_eq!(message(query("width=")), "querystring/width must be integer");
        assert_eq!(message(query("width=1.5")), "querystring/width must be integer");
        assert_eq!(message(query("width=Infinity")), "querystring/width must be integer");
        assert_eq!(message(query("height=-1")), "querystring/height must be >= 0");
        assert_eq!(message(query("quality=19")), "querystring/quality must be >= 20");
        assert_eq!(message(query("quality=101")), "querystring/quality must be <= 100");
        assert_eq!(message(query("resize=crop")), "querystring/resize must be equal to one of the allowed values");
        assert_eq!(message(query("format=png")), "querystring/format must be equal to one of the allowed values");
        assert_eq!(message(query("width=1&width=2")), "querystring/width must be integer");
        assert_eq!(message(query("resize=fill&resize=fill")), "querystring/resize must be string");
        // The schema's property order decides which error is reported.
        assert_eq!(message(query("quality=5&width=x&height=y")), "querystring/height must be integer");
        let body = TransformOptions::from_fields("body/transform", &[("width", "x")], &Limits::default());
        assert_eq!(message(body), "body/transform/width must be integer");
        let error = query("width=x").unwrap_err();
        assert_eq!((error.status(), error.public_message()), (400, "querystring/width must be integer"));
    }

    #[test]
    fn transform_claim_round_trip_and_upstream_quirks() {
        let options = query("width=200&height=100&resize=fill&quality=60&format=webp").unwrap();
        assert_eq!(options.claim(), "height:100,width:200,resize:fill,quality:60,format:webp");
        assert_eq!(TransformOptions::from_claim(&options.claim(), &Limits::default()).unwrap(), options);
        // Supabase writes `resize:undefined` when none was given; `format:origin` is never written.
        let claim = "height:200,width:300,resize:undefined";
        let read = TransformOptions::from_claim(claim, &Limits::default()).unwrap();
        assert_eq!((read.width, read.height, read.resize), (Some(300), Some(200), Resize::Cover));
        assert_eq!(query("width=10&format=origin").unwrap().claim(), "width:10,resize:cover");
        // parseInt, clamping, empty and unknown parameters, as setTransformationsFromString.
        let read =
            TransformOptions::from_claim("width:5000px,height:-3,quality:,gravity:ce,,x", &Limits::default()).unwrap();
        assert_eq!((read.width, read.height, read.quality), (Some(2000), Some(1), None));
        assert!(TransformOptions::from_claim("width:abc", &Limits::default()).unwrap().width.is_none());
        assert!(TransformOptions::from_claim("format:png", &Limits::default()).is_err());
        assert_eq!(TransformOptions::from_claim("", &Limits::default()).unwrap(), TransformOptions::default());
    }

    #[test]
    fn transform_x_transformations_header() {
        let applied = |q: &str| query(q).unwrap().applied().join(",");
        assert_eq!(
            applied("width=200&height=200&resize=fill&quality=60"),
            "height:200,width:200,resizing_type:force,quality:60"
        );
        assert_eq!(applied("width=200&height=200"), "height:200,width:200,resizing_type:fill");
        assert_eq!(applied("height=50&resize=contain"), "height:50,resizing_type:fit");
        assert_eq!(applied("width=5000&format=webp"), "width:2000,resizing_type:fill,format:webp");
        assert_eq!(applied("format=avif"), "format:avif");
        assert_eq!(applied("quality=90&format=origin"), "quality:90");
        assert_eq!(applied("resize=contain"), "");
    }

    #[test]
    fn transform_output_format_negotiation() {
        let chrome = Some("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8");
        let auto = query("width=10").unwrap();
        assert_eq!(output_format(&auto, chrome), OutputFormat::Webp);
        assert_eq!(output_format(&auto, Some("image/*,*/*")), OutputFormat::Origin);
        assert_eq!(output_format(&auto, None), OutputFormat::Origin);
        assert_eq!(output_format(&query("format=origin").unwrap(), chrome), OutputFormat::Origin);
        assert_eq!(output_format(&query("format=webp").unwrap(), None), OutputFormat::Webp);
        // AVIF only by name: the negotiation never picks it (imgproxy detects WebP only).
        assert_eq!(output_format(&query("format=avif").unwrap(), chrome), OutputFormat::Avif);
        assert_eq!(output_format(&query("format=avif").unwrap(), None), OutputFormat::Avif);
        assert_eq!(output_format(&auto, Some("image/avif")), OutputFormat::Origin);
    }

    #[test]
    fn transform_cache_key_is_stable_and_distinct() {
        let a = query("width=200&height=200").unwrap();
        assert_eq!(a.cache_key(OutputFormat::Webp), "v1:w200:h200:cover:q80:webp");
        assert_eq!(
            a.cache_key(OutputFormat::Webp),
            query("height=200&width=200&quality=80").unwrap().cache_key(OutputFormat::Webp)
        );
        assert_ne!(a.cache_key(OutputFormat::Webp), a.cache_key(OutputFormat::Origin));
        assert_ne!(
            a.cache_key(OutputFormat::Webp),
            query("width=200&height=200&resize=fill").unwrap().cache_key(OutputFormat::Webp)
        );
        // Without a box, resize changes nothing and is not part of the key.
        assert_eq!(
            query("resize=fill").unwrap().cache_key(OutputFormat::Png),
            query("").unwrap().cache_key(OutputFormat::Png)
        );
    }

    #[test]
    fn transform_plan_follows_imgproxy() {
        let p = |q: &str| plan(4000, 3000, &query(q).unwrap());
        assert_eq!(p("width=200&height=200"), Plan { scaled: (267, 200), out: (200, 200) });
        assert_eq!(p("width=200&height=200&resize=contain"), Plan { scaled: (200, 150), out: (200, 150) });
        assert_eq!(p("width=200&height=200&resize=fill"), Plan { scaled: (200, 200), out: (200, 200) });
        assert_eq!(p("width=200"), Plan { scaled: (200, 150), out: (200, 150) });
        assert_eq!(p("height=300&resize=contain"), Plan { scaled: (400, 300), out: (400, 300) });
        assert_eq!(p(""), Plan { scaled: (4000, 3000), out: (4000, 3000) });
        // `force` with one side stretches that side only.
        assert_eq!(p("height=100&resize=fill"), Plan { scaled: (4000, 100), out: (4000, 100) });
        // Never enlarged: a small source keeps its size, cropped to the box where it overflows.
        let small = |q: &str| plan(300, 100, &query(q).unwrap());
        assert_eq!(small("width=200&height=200"), Plan { scaled: (300, 100), out: (200, 100) });
        assert_eq!(small("width=600"), Plan { scaled: (300, 100), out: (300, 100) });
        assert_eq!(small("width=600&height=50&resize=fill"), Plan { scaled: (300, 25), out: (300, 25) });
    }

    #[test]
    fn transform_dct_scale_covers_the_need() {
        assert_eq!(dct_scale(4000, 3000, (267, 200)), 1);
        assert_eq!(dct_scale(4000, 3000, (1000, 750)), 2);
        assert_eq!(dct_scale(4000, 3000, (1001, 750)), 3);
        assert_eq!(dct_scale(4000, 3000, (4000, 3000)), 8);
        assert_eq!(dct_scale(9, 9, (2, 2)), 1);
        assert_eq!(dct_scale(9, 9, (3, 2)), 2);
    }

    #[test]
    fn transform_cover_contain_fill_dimensions() {
        let source = jpeg(640, 480);
        assert_eq!(dims(&source, "width=100&height=100"), (100, 100));
        assert_eq!(dims(&source, "width=100&height=100&resize=contain"), (100, 75));
        assert_eq!(dims(&source, "width=100&height=30&resize=fill"), (100, 30));
        assert_eq!(dims(&source, "width=320"), (320, 240));
        assert_eq!(dims(&source, "height=60"), (80, 60));
        assert_eq!(dims(&source, ""), (640, 480));
        // Never enlarged, and the box crops nothing it does not overflow.
        assert_eq!(dims(&source, "width=1000&height=1000"), (640, 480));
        assert_eq!(dims(&source, "width=1000&height=300"), (640, 300));
        let alpha = png(300, 200, 4);
        assert_eq!(dims(&alpha, "width=50&height=50"), (50, 50));
        let out = run(&alpha, "width=50", OutputFormat::Origin).unwrap();
        assert_eq!((out.mime, out.width, out.height), ("image/png", 50, 33));
    }

    #[test]
    fn transform_output_formats_and_mime() {
        let source = jpeg(64, 48);
        for (output, mime) in [
            (OutputFormat::Origin, "image/jpeg"),
            (OutputFormat::Jpeg, "image/jpeg"),
            (OutputFormat::Png, "image/png"),
            (OutputFormat::Webp, "image/webp"),
            (OutputFormat::Gif, "image/gif"),
        ] {
            let out = run(&source, "width=32", output).unwrap();
            assert_eq!(out.mime, mime);
            let probed = probe(&out.bytes).unwrap();
            assert_eq!((probed.codec.mime(), probed.width, probed.height), (mime, 32, 24));
        }
        // Every readable format, through WebP and back to its own.
        let webp_source = run(&png(40, 30, 4), "", OutputFormat::Webp).unwrap().bytes;
        let gif_source = run(&png(40, 30, 3), "", OutputFormat::Gif).unwrap().bytes;
        for source in [png(40, 30, 3), png(40, 30, 4), webp_source, gif_source] {
            assert_eq!(dims(&source, "width=20&height=20"), (20, 20));
            assert_eq!(run(&source, "width=20", OutputFormat::Webp).unwrap().mime, "image/webp");
        }
    }

    /// The width and height of the first `ispe` box of an AVIF file (its image's spatial extents).
    fn avif_extents(avif: &[u8]) -> (u32, u32) {
        let at = avif.windows(4).position(|w| w == b"ispe").expect("an ispe box");
        let word = |from: usize| u32::from_be_bytes(avif[from..from + 4].try_into().unwrap());
        (word(at + 8), word(at + 12))
    }

    #[test]
    fn transform_avif_output() {
        for channels in [3, 4] {
            let out = run(&png(64, 48, channels), "width=32&quality=50", OutputFormat::Avif).unwrap();
            assert_eq!((out.mime, out.width, out.height), ("image/avif", 32, 24));
            assert_eq!(&out.bytes[4..12], b"ftypavif");
            assert_eq!(avif_extents(&out.bytes), (32, 24));
            // Not read back: AVIF sources are refused by name.
            assert!(matches!(probe(&out.bytes), Err(TransformError::Unsupported(kind)) if kind == "AVIF"));
        }
        let low = run(&jpeg(200, 150), "quality=20", OutputFormat::Avif).unwrap().bytes.len();
        let high = run(&jpeg(200, 150), "quality=100", OutputFormat::Avif).unwrap().bytes.len();
        assert!(low < high, "quality 20 gave {low} bytes, 100 gave {high}");
    }

    #[test]
    fn transform_grey_and_cmyk_sources() {
        let grey = {
            let mut out = Vec::new();
            let mut encoder = png::Encoder::new(&mut out, 20, 10);
            encoder.set_color(png::ColorType::Grayscale);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[7u8; 200]).unwrap();
            writer.finish().unwrap();
            out
        };
        assert_eq!(dims(&grey, "width=10"), (10, 5));
        let mut compress = mozjpeg::Compress::new(ColorSpace::JCS_CMYK);
        compress.set_size(16, 16);
        let mut started = compress.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&[200u8; 16 * 16 * 4]).unwrap();
        let cmyk = started.finish().unwrap();
        let out = run(&cmyk, "width=8", OutputFormat::Png).unwrap();
        assert_eq!((out.width, out.height), (8, 8));
    }

    #[test]
    fn transform_exif_orientation_is_applied() {
        // Stored 64x32; orientation 6 (rotate 90° clockwise) shows it 32x64.
        let source = jpeg_oriented(64, 32, 6);
        assert_eq!(probe(&source).unwrap().orientation, Orientation(6));
        assert_eq!(dims(&source, ""), (32, 64));
        assert_eq!(dims(&source, "width=16"), (16, 32));
        assert_eq!(dims(&source, "width=16&height=16"), (16, 16));
        assert_eq!(dims(&jpeg_oriented(64, 32, 3), "width=16"), (16, 8));
        // The stored top-left corner (dark red, dark green) shows at the top right.
        let shown = orient(gradient(4, 2, 3), Orientation(6));
        assert_eq!((shown.width, shown.height), (2, 4));
        assert_eq!(&shown.data[3..6], &gradient(4, 2, 3).data[0..3]);
    }

    #[test]
    fn transform_quality_changes_size() {
        let source = jpeg(256, 256);
        let size = |q: &str, output| run(&source, q, output).unwrap().bytes.len();
        assert!(size("quality=20", OutputFormat::Jpeg) < size("quality=95", OutputFormat::Jpeg));
        assert!(size("quality=20", OutputFormat::Webp) < size("quality=95", OutputFormat::Webp));
        assert_eq!(size("quality=20", OutputFormat::Jpeg), size("quality=20", OutputFormat::Jpeg));
    }

    #[test]
    fn transform_png_bomb_is_refused_before_decoding() {
        // A valid PNG header declaring 100000 x 100000 (10 gigapixels), then a tiny IDAT.
        let mut bomb = png(1, 1, 3);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let started = Instant::now();
        let result = run(&bomb, "width=100", OutputFormat::Webp);
        assert!(matches!(result, Err(TransformError::TooManyPixels)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // Same for the other formats' headers.
        let mut gif = run(&png(2, 2, 3), "", OutputFormat::Gif).unwrap().bytes;
        gif[6..10].copy_from_slice(&[0xFF; 4]);
        let tight = Limits { max_source_pixels: 1_000_000, ..Limits::default() };
        let result = transform(&gif, &TransformOptions::default(), OutputFormat::Origin, &tight);
        assert!(matches!(result, Err(TransformError::TooManyPixels)), "{result:?}");
        let mut big_jpeg = jpeg(16, 16);
        let sof = big_jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        big_jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF; 4]);
        let result = transform(&big_jpeg, &TransformOptions::default(), OutputFormat::Origin, &tight);
        assert!(matches!(result, Err(TransformError::TooManyPixels)), "{result:?}");
        let error = TransformError::TooManyPixels;
        assert_eq!(error.public_message(), "The source image resolution is too large to process");
    }

    #[test]
    fn transform_source_byte_limit() {
        let source = jpeg(16, 16);
        let limits = Limits { max_source_bytes: source.len() as u64 - 1, ..Limits::default() };
        let result = transform(&source, &TransformOptions::default(), OutputFormat::Origin, &limits);
        assert!(matches!(result, Err(TransformError::SourceTooLarge)), "{result:?}");
    }

    #[test]
    fn transform_garbage_is_unsupported_or_corrupt() {
        let unsupported =
            |bytes: &[u8]| matches!(run(bytes, "width=10", OutputFormat::Webp), Err(TransformError::Unsupported(_)));
        let corrupt =
            |bytes: &[u8]| matches!(run(bytes, "width=10", OutputFormat::Webp), Err(TransformError::Corrupt(_)));
        assert!(unsupported(b""));
        assert!(unsupported(b"hello, world"));
        assert!(unsupported(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"));
        assert!(unsupported(b"\0\0\0\x1cftypavif\0\0\0\0"));
        assert!(corrupt(b"\xFF\xD8\xFF"));
        assert!(corrupt(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\0garbage"));
        assert!(corrupt(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0garbage"));
        assert!(corrupt(b"GIF89a\x10\0\x10\0garbage"));
        assert!(corrupt(b"RIFF\x10\0\0\0WEBPVP8 garbage"));
        // A JPEG whose frame header is fine but whose data is noise: libjpeg's error, caught.
        let mut noisy = jpeg(32, 32);
        let data_at = noisy.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap() + 20;
        for (i, byte) in noisy[data_at..].iter_mut().enumerate() {
            *byte = (i * 31 % 255) as u8;
        }
        let result = run(&noisy, "width=10", OutputFormat::Jpeg);
        assert!(matches!(result, Ok(_) | Err(TransformError::Corrupt(_))), "{result:?}");
    }

    #[test]
    fn transform_truncated_sources_are_corrupt() {
        let source = jpeg(128, 128);
        for cut in [source.len() - 2, source.len() / 2, 200, 40] {
            let result = run(&source[..cut], "width=10", OutputFormat::Webp);
            assert!(matches!(result, Err(TransformError::Corrupt(_))), "cut at {cut}: {result:?}");
        }
        let source = png(128, 128, 4);
        let result = run(&source[..source.len() / 2], "width=10", OutputFormat::Webp);
        assert!(matches!(result, Err(TransformError::Corrupt(_))), "{result:?}");
        let source = run(&png(128, 128, 3), "", OutputFormat::Webp).unwrap().bytes;
        let result = run(&source[..source.len() / 2], "width=10", OutputFormat::Png);
        assert!(matches!(result, Err(TransformError::Corrupt(_))), "{result:?}");
    }

    #[test]
    fn transform_webp_too_wide_falls_back() {
        let wide = png(WEBP_MAX_DIMENSION + 1, 1, 3);
        let out = run(&wide, "", OutputFormat::Webp).unwrap();
        assert_eq!((out.mime, out.width), ("image/jpeg", WEBP_MAX_DIMENSION + 1));
        let wide = png(WEBP_MAX_DIMENSION + 1, 1, 4);
        assert_eq!(run(&wide, "", OutputFormat::Webp).unwrap().mime, "image/png");
    }

    /// The render endpoint's hot case: a 200x200 cover thumbnail of a 12-megapixel photo.
    /// `cargo test --release -p madbase-storage --lib transform_bench -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing, for release builds"]
    fn transform_bench_12mp_cover_thumbnail() {
        // Shapes plus sensor-like noise: about the bytes per pixel of a phone photo (3-5 MB),
        // which matters as entropy decoding is the part DCT scaling cannot skip.
        let (width, height) = (4000u32, 3000u32);
        let mut state = 0x2545_f491u32;
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let noise = (state % 17) as i32 - 8;
                let wave = ((x as f32 / 37.0).sin() * (y as f32 / 53.0).cos() * 100.0) as i32;
                let base = [128 + wave, (x * 255 / width) as i32, (y * 255 / height) as i32];
                data.extend(base.map(|v| (v + noise).clamp(0, 255) as u8));
            }
        }
        let source = encode_jpeg(&Pixels::new(data, width, height, 3).unwrap(), 90).unwrap();
        let options = query("width=200&height=200").unwrap();
        for output in [OutputFormat::Jpeg, OutputFormat::Webp] {
            let mut best = Duration::MAX;
            for _ in 0..10 {
                let started = Instant::now();
                let out = transform(&source, &options, output, &Limits::default()).unwrap();
                best = best.min(started.elapsed());
                assert_eq!((out.width, out.height), (200, 200));
            }
            println!("12 MP JPEG ({} bytes) -> 200x200 {output:?}: best of 10 {best:?}", source.len());
        }
    }
}
