//! The QR code of a TOTP enrollment (`totp.qr_code` of `POST /factors`, reference/auth.md §5):
//! raw SVG markup, which auth-js turns into an image URL by prefixing
//! `data:image/svg+xml;utf-8,`.
//!
//! GoTrue draws the code with error correction level H, 3 pixels per module and a 4-module
//! quiet zone (`internal/api/mfa.go`, boombuler/barcode and goqrsvg, one `<rect>` per module);
//! this module keeps those proportions with a smaller drawing (one `<path>` of the dark runs on a
//! white square).
//!
//! Invariants: the output is deterministic (same text, same bytes); it starts with `<svg` and
//! holds no `#` or `%`, so it survives being pasted unencoded into a `data:` URL; it never
//! panics. Text too long for any QR code (over 2953 bytes) gives a blank white image.

use std::fmt::Write as _;

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module.
pub const MODULE_PX: usize = 3;
/// Light modules around the code on each side.
pub const QUIET_ZONE: usize = 4;

/// An SVG image of `text` as a QR code: level H when the text fits, else the strongest level
/// that fits.
pub fn svg(text: &str) -> String {
    let code = [EcLevel::H, EcLevel::Q, EcLevel::M, EcLevel::L]
        .into_iter()
        .find_map(|level| QrCode::with_error_correction_level(text, level).ok());
    let (width, colors) = match &code {
        Some(code) => (code.width(), code.to_colors()),
        None => (0, Vec::new()),
    };
    debug_assert_eq!(colors.len(), width * width);

    let side = width + 2 * QUIET_ZONE;
    let px = side * MODULE_PX;
    let mut out = String::with_capacity(256 + colors.len() * 4);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{px}" height="{px}" viewBox="0 0 {side} {side}" shape-rendering="crispEdges">"#
    );
    let _ = write!(out, r#"<rect width="{side}" height="{side}" fill="white"/><path fill="black" d=""#);
    for (y, row) in colors.chunks(width.max(1)).enumerate() {
        let mut x = 0;
        while x < row.len() {
            if row[x] != Color::Dark {
                x += 1;
                continue;
            }
            let start = x;
            while x < row.len() && row[x] == Color::Dark {
                x += 1;
            }
            let run = x - start;
            let _ = write!(out, "M{} {}h{run}v1h-{run}z", start + QUIET_ZONE, y + QUIET_ZONE);
        }
    }
    out.push_str(r#""/></svg>"#);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    const URI: &str = "otpauth://totp/localhost:a@b.c?algorithm=SHA1&digits=6&issuer=localhost&period=30\
                       &secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    /// The dark modules the path draws, read back from its `M x y h n v1 h-n z` runs.
    fn drawn(svg: &str) -> Vec<(usize, usize)> {
        let d = svg.split(" d=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a path");
        let mut cells = Vec::new();
        for run in d.split('M').filter(|r| !r.is_empty()) {
            let (xy, rest) = run.split_once('h').expect("h");
            let (x, y) = xy.split_once(' ').expect("x y");
            let n = rest.split_once('v').expect("v").0;
            let (x, y, n): (usize, usize, usize) = (x.parse().unwrap(), y.parse().unwrap(), n.parse().unwrap());
            assert!(rest.ends_with(&format!("v1h-{n}z")));
            cells.extend((x..x + n).map(|x| (x, y)));
        }
        cells
    }

    #[test]
    fn draws_exactly_the_dark_modules_at_level_h() {
        let image = svg(URI);
        let code = QrCode::with_error_correction_level(URI, EcLevel::H).expect("fits");
        let width = code.width();
        let expected: Vec<(usize, usize)> = code
            .to_colors()
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == Color::Dark)
            .map(|(i, _)| (i % width + QUIET_ZONE, i / width + QUIET_ZONE))
            .collect();
        assert_eq!(drawn(&image), expected);
        let side = width + 2 * QUIET_ZONE;
        assert!(image.contains(&format!(r#"width="{}" height="{0}" viewBox="0 0 {side} {side}""#, side * MODULE_PX)));
    }

    #[test]
    fn svg_shape() {
        let image = svg(URI);
        assert!(image.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{image}");
        assert!(image.ends_with("</svg>"));
        assert!(!image.contains('#') && !image.contains('%') && !image.contains('\n'));
        // A ~120-byte URI at level H is version 9 or so: 53 modules + 8 quiet, 183 px.
        let code = QrCode::with_error_correction_level(URI, EcLevel::H).expect("fits");
        assert!((41..=65).contains(&code.width()), "width {}", code.width());
    }

    #[test]
    fn deterministic() {
        assert_eq!(svg(URI), svg(URI));
        assert_ne!(svg(URI), svg("otpauth://totp/other"));
    }

    #[test]
    fn falls_back_then_blanks() {
        // Too long for level H (1273 bytes) but fine at level L (2953 bytes).
        let long = "a".repeat(2000);
        assert!(QrCode::with_error_correction_level(&long, EcLevel::H).is_err());
        assert!(!drawn(&svg(&long)).is_empty());
        // Too long for any level: a blank quiet-zone square.
        let blank = svg(&"a".repeat(3000));
        assert!(drawn(&blank).is_empty());
        assert!(blank.contains(r#"viewBox="0 0 8 8""#));
        assert!(!drawn(&svg("")).is_empty());
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = rand::thread_rng();
        // Kept small: large codes are slow to build in unoptimized test builds.
        for _ in 0..20 {
            let len = rng.gen_range(0..60);
            let text: String = (0..len).map(|_| rng.gen::<char>()).collect();
            let image = svg(&text);
            assert!(image.starts_with("<svg") && !image.contains('#'));
        }
    }
}
