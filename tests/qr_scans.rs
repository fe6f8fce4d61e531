//! Issue 17: the enrollment QR code fits an 80x24 terminal and scans in
//! both polarities. The text the real module shows through pamtester (and
//! the text `twofactor enroll` prints) is laid out on an 80x24 screen as a
//! terminal would (wrapped at 80 columns, only the last 24 rows kept),
//! drawn to a greyscale image the way a terminal draws it (each cell 8 px
//! wide and 16 px high; `█ ▀ ▄` fill both, the upper or the lower half; any
//! other character is a blot of ink), once with a dark theme (light glyphs
//! on black) and once with a light theme (dark glyphs on white), and each
//! image is decoded by `zbarimg` (package zbar-tools) to the exact
//! otpauth URI, built here from the key shown by hand.
//!
//! What "both polarities" means here: on a dark theme the code is a
//! standard one and decodes as it is; on a light theme it is the exact
//! negative of a whole code (its quiet zone is drawn), which scanners that
//! try inverted codes read: zbar with `-Stest-inverted`, as ZXing's
//! `tryInverted` and Google ML Kit do. Colours cannot do better at login:
//! OpenSSH escapes them in keyboard-interactive text.

// Test helpers may panic: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const PROMPT: &str = "Verification code: ";
const SVC: &str = "svc";
const KEY_LINE: &str = "Or enter this key by hand: ";
/// The RFC 6238 SHA1 seed "12345678901234567890" in base32.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const COLUMNS: usize = 80;
const ROWS: usize = 24;
/// Pixels per QR module: a cell is one module wide and two high.
const MODULE_PX: usize = 8;
/// Terminal background around the screen, in cells.
const MARGIN_CELLS: usize = 2;

#[derive(Clone, Copy, Debug)]
enum Theme {
    /// Light glyphs on a black background.
    Dark,
    /// Dark glyphs on a white background.
    Light,
}

/// The rows a terminal of `COLUMNS` columns needs for `lines`.
fn rows_needed(lines: &[&str]) -> usize {
    lines
        .iter()
        .map(|l| l.chars().count().div_ceil(COLUMNS).max(1))
        .sum()
}

/// What an 80x24 screen shows after `lines` were printed: each line wrapped
/// at 80 columns, the last 24 rows.
fn screen(lines: &[&str]) -> Vec<Vec<char>> {
    let mut rows: Vec<Vec<char>> = Vec::new();
    for line in lines {
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            rows.push(Vec::new());
        }
        rows.extend(chars.chunks(COLUMNS).map(<[char]>::to_vec));
    }
    let skip = rows.len().saturating_sub(ROWS);
    rows.split_off(skip)
}

/// Draws `screen` as a binary PGM image (zbarimg reads it through
/// ImageMagick): glyph ink in the theme's foreground, the rest and a
/// margin of `MARGIN_CELLS` in its background.
fn render(screen: &[Vec<char>], theme: Theme, path: &Path) {
    let (fg, bg) = match theme {
        Theme::Dark => (255u8, 0u8),
        Theme::Light => (0u8, 255u8),
    };
    let cell_w = MODULE_PX;
    let cell_h = 2 * MODULE_PX;
    let width = (COLUMNS + 2 * MARGIN_CELLS) * cell_w;
    let height = (ROWS + 2 * MARGIN_CELLS) * cell_h;
    let mut pixels = vec![bg; width * height];
    for (row, cells) in screen.iter().enumerate() {
        for (col, &c) in cells.iter().enumerate() {
            // (x0, x1, y0, y1) of the ink inside the cell.
            let ink = match c {
                '█' => Some((0, cell_w, 0, cell_h)),
                '▀' => Some((0, cell_w, 0, cell_h / 2)),
                '▄' => Some((0, cell_w, cell_h / 2, cell_h)),
                ' ' => None,
                _ => Some((2, cell_w - 2, 4, cell_h - 3)),
            };
            let Some((x0, x1, y0, y1)) = ink else {
                continue;
            };
            let left = (col + MARGIN_CELLS) * cell_w;
            let top = (row + MARGIN_CELLS) * cell_h;
            for y in top + y0..top + y1 {
                pixels[y * width + left + x0..y * width + left + x1].fill(fg);
            }
        }
    }
    let mut pgm = format!("P5\n{width} {height}\n255\n").into_bytes();
    pgm.extend_from_slice(&pixels);
    fs::write(path, pgm).unwrap();
}

/// `zbarimg --raw` of `image` with `extra` options: the decoded symbols.
fn zbarimg(image: &Path, extra: &[&str]) -> Vec<String> {
    let Some(program) = find_program("zbarimg") else {
        panic!(
            "\n\n*** `zbarimg` is missing: apt-get install -y zbar-tools \
             (make test installs it; these tests never skip silently)\n"
        );
    };
    let out = Command::new(program)
        .args(["--quiet", "--raw", "--nodbus"])
        .args(extra)
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Renders `lines` on an 80x24 screen in both themes and decodes each to
/// exactly `uri`: the dark theme as a standard code, the light theme as an
/// inverted one.
fn assert_scans_in_both_themes(sb: &Sandbox, name: &str, lines: &[&str], uri: &str) {
    let screen = screen(lines);
    let dark = sb.dir().join(format!("{name}-dark.pgm"));
    let light = sb.dir().join(format!("{name}-light.pgm"));
    render(&screen, Theme::Dark, &dark);
    render(&screen, Theme::Light, &light);
    assert_eq!(zbarimg(&dark, &[]), [uri], "dark theme: {}", dark.display());
    assert_eq!(
        zbarimg(&light, &["-Stest-inverted"]),
        [uri],
        "light theme: {}",
        light.display()
    );
}

/// The whole enrollment-at-login text and its prompt fit 24 rows of 80
/// columns, and the code on that screen decodes to the exact otpauth URI
/// on a dark and on a light theme.
#[test]
fn enrollment_at_login_fits_80x24_and_scans_on_dark_and_light_themes() {
    require_tools();
    let sb = Sandbox::new("qr-login");
    sb.write_config("unenrolled = \"enroll\"\nissuer = \"Example\"\n");
    sb.write_service(SVC, &sb.module_line(""));
    // EOF at the prompt: the text is shown, nothing is stored.
    let out = sb.pamtester(SVC, "daemon", &[], T0);
    assert_eq!(out.pam_error(), Some(pam_err::CONV_ERR), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1, "{out}");
    let mut lines = out.info_lines();
    lines.push(PROMPT);
    let rows = rows_needed(&lines);
    assert!(rows <= ROWS, "{rows} rows:\n{}", lines.join("\n"));

    let key = lines
        .iter()
        .find_map(|l| l.strip_prefix(KEY_LINE))
        .unwrap_or_else(|| panic!("no key shown:\n{out}"))
        .replace(' ', "");
    assert_eq!(key.len(), 32, "{out}");
    let uri = format!("otpauth://totp/Example:daemon?secret={key}&issuer=Example");
    assert_scans_in_both_themes(&sb, "login", &lines, &uri);
}

/// `twofactor enroll` draws the same code: its QR lines, on an 80x24
/// screen, decode to the URI it prints, on a dark and on a light theme.
#[test]
fn cli_enroll_code_scans_on_dark_and_light_themes() {
    require_tools();
    let sb = Sandbox::new("qr-cli");
    sb.write_config("issuer = \"Example\"\n");
    let out = run_cli_with(
        &sb,
        &["enroll", "daemon", "--secret-file", "-"],
        &[SECRET],
        T0,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let uri = format!("otpauth://totp/Example:daemon?secret={SECRET}&issuer=Example");
    assert!(
        stdout.lines().any(|l| l == format!("otpauth URI: {uri}")),
        "{stdout}"
    );
    let qr: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(['█', '▀', '▄']))
        .collect();
    assert!(qr.len() <= 20, "{} rows of code:\n{stdout}", qr.len());
    assert_scans_in_both_themes(&sb, "cli", &qr, &uri);
}
