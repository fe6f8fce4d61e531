//! What enrolling shows, shared by `twofactor enroll` and enrollment at
//! first login (`unenrolled = "enroll"`): the `otpauth://` URI, the
//! grouped key and the terminal QR code.

use crate::otp::{SecretKey, TotpParams};

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `otpauth://totp/` URI with every parameter spelled out, so apps get
/// non-default algorithms, digits and periods right.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &SecretKey, params: TotpParams) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm={}&digits={}&period={}",
        percent_encode(account),
        secret.to_base32().as_str(),
        params.algorithm.name(),
        params.digits,
        params.period
    )
}

/// The base32 secret in groups of four, for typing into an app.
pub fn grouped_secret(secret: &SecretKey) -> String {
    let b32 = secret.to_base32();
    b32.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A QR code drawn with Unicode half blocks (light modules drawn, so it
/// scans on the usual dark terminal background).
pub fn qr_text(uri: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}
