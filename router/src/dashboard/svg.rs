//! Pictures drawn on the server as SVG, so the pages need no script and no outside service:
//! the 7-day usage chart and the QR codes of the channel links. Colours come from the style
//! sheet (classes), so dark mode applies to the chart too.

use qrcode::QrCode;
use qrcode::render::svg;

/// A bar chart of `values` (oldest first) with a label under each bar. Values are numbers and
/// labels are dates, so nothing here needs escaping.
pub fn bar_chart(values: &[(String, i64)]) -> String {
    const W: usize = 280;
    const H: usize = 120;
    const BASE: usize = 100;
    let n = values.len().max(1);
    let slot = W / n;
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"100%\" \
         preserveAspectRatio=\"xMidYMid meet\" aria-hidden=\"true\">"
    );
    out.push_str(&format!(
        "<line class=\"axis\" x1=\"0\" y1=\"{BASE}\" x2=\"{W}\" y2=\"{BASE}\"/>"
    ));
    for (i, (label, v)) in values.iter().enumerate() {
        let h = (*v as f64 / max as f64 * 80.0).round() as usize;
        let x = i * slot + slot / 6;
        let w = slot * 2 / 3;
        out.push_str(&format!(
            "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"{h}\"><title>{label}: {v}</title></rect>",
            BASE - h
        ));
        out.push_str(&format!(
            "<text class=\"value\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v}</text>",
            x + w / 2,
            BASE - h - 3
        ));
        out.push_str(&format!(
            "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            x + w / 2,
            H - 6
        ));
    }
    out.push_str("</svg>");
    out
}

/// The QR code of `text` as an inline SVG element (no XML prolog), or `None` if it does not
/// fit a QR code.
pub fn qr(text: &str) -> Option<String> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(180, 180)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    let start = image.find("<svg")?;
    Some(image[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_grow_with_their_values() {
        let chart = bar_chart(&[("01".into(), 0), ("02".into(), 5), ("03".into(), 10)]);
        assert!(chart.starts_with("<svg"));
        assert_eq!(chart.matches("<rect").count(), 3);
        assert!(chart.contains("height=\"0\""));
        assert!(chart.contains("height=\"40\""));
        assert!(chart.contains("height=\"80\""));
        assert!(!chart.contains("style"), "the CSP forbids inline styles");
    }

    #[test]
    fn the_qr_code_is_an_svg_without_prolog() {
        let svg = qr("https://t.me/ClawdbotBot?start=ABCD2345").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<path") || svg.contains("<rect"));
        assert!(!svg.contains("style="), "the CSP forbids inline styles");
    }
}
