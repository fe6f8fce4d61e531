//! What enrolling shows, shared by `twofactor enroll` and enrollment at
//! first login (`unenrolled = "enroll"`): the `otpauth://` URI, the
//! grouped key and the terminal QR code.

use crate::otp::{Algorithm, SecretKey, TotpParams};

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

/// The `otpauth://totp/` URI. A parameter is spelled out only where it
/// differs from the Key URI Format default (SHA1, 6 digits, 30 s), which
/// every app assumes: the 33 characters of `algorithm=SHA1&digits=6&period=30`
/// would take the QR code a version up (4 more module rows) for nothing, and
/// the code must fit an 80x24 console (see `qr_text`). Non-default
/// parameters are always written, so apps that honour them get them right.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &SecretKey, params: TotpParams) -> String {
    let issuer = percent_encode(issuer);
    let mut uri = format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}",
        percent_encode(account),
        secret.to_base32().as_str(),
    );
    if params.algorithm != Algorithm::Sha1 {
        uri.push_str("&algorithm=");
        uri.push_str(params.algorithm.name());
    }
    if params.digits != 6 {
        uri.push_str(&format!("&digits={}", params.digits));
    }
    if params.period != 30 {
        uri.push_str(&format!("&period={}", params.period));
    }
    uri
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

/// The most terminal rows the QR code may take: at first-login enrollment
/// an 80x24 console also shows a line above it and two lines and the prompt
/// below it (`login::enroll`).
pub const QR_MAX_ROWS: usize = 20;

/// The QR code as Unicode half blocks (`▀ ▄ █`, two module rows per
/// terminal row), for `twofactor enroll` and enrollment at first login.
///
/// Polarity: the *light* modules and the quiet zone are the glyphs, so on a
/// dark terminal (the Linux console, most emulators' default) the code is a
/// standard one, dark modules on a light quiet zone. Colours cannot fix
/// the polarity for light themes: OpenSSH's client escapes the control
/// bytes of keyboard-interactive text, so the login path gets no SGR
/// sequences. Because the quiet zone is drawn, a light theme shows the
/// exact negative of a whole code (light modules on a dark quiet zone),
/// which scanners that try inverted codes read (ZXing `tryInverted`, Google
/// ML Kit, iOS Camera, `zbarimg -Stest-inverted`); tests/qr_scans.rs
/// decodes both.
///
/// Size: error correction level L (a screen is not a scratched label), so
/// a URI whose issuer and account are short enough (2 x issuer + account
/// up to about 49 characters once percent-encoded) is a version 5 code or
/// smaller and fits `QR_MAX_ROWS`. The quiet zone is as wide as those rows
/// allow, from the standard 4 modules down to 1 (scanners read 1-2 modules
/// well against the terminal's own background beyond it).
pub fn qr_text(uri: &str) -> Option<String> {
    use qrcode::{Color, EcLevel, QrCode};
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::L).ok()?;
    let size = code.width();
    let dark = code.to_colors();
    let quiet = ((2 * QR_MAX_ROWS).saturating_sub(size) / 2).clamp(1, 4);
    let side = size + 2 * quiet;
    // An odd last module row gets one more quiet row below, not a half cell.
    let rows = side.div_ceil(2);
    let is_light = |x: usize, y: usize| {
        let (Some(x), Some(y)) = (x.checked_sub(quiet), y.checked_sub(quiet)) else {
            return true;
        };
        x >= size || y >= size || dark.get(y * size + x) != Some(&Color::Dark)
    };
    let mut out = String::with_capacity(rows * (side * 3 + 1));
    for row in 0..rows {
        if row > 0 {
            out.push('\n');
        }
        for x in 0..side {
            out.push(match (is_light(x, 2 * row), is_light(x, 2 * row + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URI as long as the default issuer (a host name) and a user name.
    fn uri_with(issuer: &str, account: &str) -> String {
        let secret = SecretKey::new(b"12345678901234567890".to_vec());
        let params = TotpParams {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        };
        otpauth_uri(issuer, account, &secret, params)
    }

    /// Default parameters are left out of the URI; only the issuer stays.
    #[test]
    fn uri_leaves_out_default_parameters() {
        assert_eq!(
            uri_with("My Host", "alice"),
            "otpauth://totp/My%20Host:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=My%20Host"
        );
    }

    /// A short issuer and user give 20 rows of at most 41 columns, with a
    /// quiet zone of at least 2 modules (a full first row) on every side.
    #[test]
    fn qr_code_of_short_names_fits_twenty_rows_with_a_quiet_zone() {
        let qr = qr_text(&uri_with("Example", "daemon")).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        assert!(lines.len() <= QR_MAX_ROWS, "{} rows:\n{qr}", lines.len());
        let width = lines[0].chars().count();
        assert!(width <= 41, "{width} columns");
        assert_eq!(lines.len(), width.div_ceil(2), "not square:\n{qr}");
        for line in &lines {
            assert_eq!(line.chars().count(), width, "ragged: {line:?}");
            assert!(line.starts_with("██") && line.ends_with("██"), "{line:?}");
            assert!(line.chars().all(|c| "█▀▄ ".contains(c)), "{line:?}");
        }
        assert!(lines[0].chars().all(|c| c == '█'), "{qr}");
        assert!(lines[lines.len() - 1].chars().all(|c| c == '█'), "{qr}");
    }

    /// The longest names the limit documents (2 x issuer + account = 49)
    /// still fit in `QR_MAX_ROWS` rows; longer ones give a taller code.
    #[test]
    fn qr_code_fits_the_rows_up_to_the_documented_name_length() {
        let issuer = "mail.example.org"; // 16
        let account = "a".repeat(49 - 2 * issuer.len());
        let qr = qr_text(&uri_with(issuer, &account)).unwrap();
        assert_eq!(qr.lines().count(), QR_MAX_ROWS, "{qr}");
        let longer = qr_text(&uri_with(issuer, &format!("{account}bb"))).unwrap();
        assert!(longer.lines().count() > QR_MAX_ROWS, "{longer}");
    }
}
