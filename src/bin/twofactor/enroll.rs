//! `enroll` and `import`: the two commands that write a new secret.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use pam_twofactor::admin::{self, AdminError, EnrollOptions, Existing, audit, notify};
use pam_twofactor::delivery::Event;
use pam_twofactor::records::username::escape;
use serde_json::json;
use zeroize::Zeroize;

use crate::cli::Command;
use crate::fleet::store::Store;
use crate::output::{print_codes, print_json};

pub(crate) fn run_import(
    store: &mut Store,
    user: Option<String>,
    google_authenticator: Option<PathBuf>,
    oath_usersfile: Option<PathBuf>,
    force: bool,
    json: bool,
    now: u64,
) -> Result<u8, AdminError> {
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Keep
    };
    // The google-authenticator file still holds the seed after the import,
    // where its user can read it: the admin is told to delete it.
    let mut delete_file = None;
    let (imported, skipped) = match (user, google_authenticator, oath_usersfile) {
        (Some(user), Some(file), None) => {
            let text = admin::read_import_file(&file)?;
            let imported =
                store.import_google_authenticator(&user, text.as_str(), existing, now)?;
            audit::record(&format!(
                "enrolled {} from the google-authenticator file {}",
                imported.user,
                escape(&file.to_string_lossy())
            ));
            notify::user_event(store.config(), &imported.user, Event::Enrolled, now);
            delete_file = Some(file);
            (vec![imported], Vec::new())
        }
        (None, None, Some(file)) => {
            let text = admin::read_import_file(&file)?;
            let (imported, skipped) = store.import_oath_usersfile(text.as_str(), existing, now)?;
            for i in &imported {
                audit::record(&format!(
                    "enrolled {} from the pam_oath users file {}",
                    i.user,
                    escape(&file.to_string_lossy())
                ));
                notify::user_event(store.config(), &i.user, Event::Enrolled, now);
            }
            (imported, skipped)
        }
        _ => {
            return Err(AdminError::BadOption(
                "use: import USER --google-authenticator FILE, or import --oath-usersfile FILE"
                    .into(),
            ));
        }
    };
    if json {
        let users: Vec<_> = imported
            .iter()
            .map(|i| json!({"user": i.user, "backup_codes": i.backup_codes, "notes": i.notes}))
            .collect();
        let skipped: Vec<_> = skipped
            .iter()
            .map(|(line, why)| json!({"line": line, "reason": why}))
            .collect();
        let delete_file = delete_file.as_ref().map(|f| f.display().to_string());
        print_json(json!({
            "imported": users,
            "skipped": skipped,
            "delete_file": delete_file,
            "changed": !imported.is_empty(),
        }));
    } else {
        for i in &imported {
            println!("{}: imported", i.user);
            for note in &i.notes {
                println!("  note: {note}");
            }
            if !i.backup_codes.is_empty() {
                println!("  backup codes:");
                for code in &i.backup_codes {
                    println!("    {code}");
                }
            }
        }
        for (line, why) in &skipped {
            println!("line {line} skipped: {why}");
        }
        if let Some(file) = &delete_file {
            println!(
                "Now delete {0}: it still holds the secret, readable by its owner, and whoever reads it can make codes (rm {0})",
                file.display()
            );
        }
    }
    Ok(u8::from(imported.is_empty() && !skipped.is_empty()))
}

pub(crate) fn run_enroll(admin: &mut Store, command: Command, now: u64) -> Result<u8, AdminError> {
    let Command::Enroll {
        user,
        secret_file,
        secret: _,
        algorithm,
        digits,
        period,
        force,
        add,
        label,
        deliver_to,
        if_missing,
        json,
    } = command
    else {
        return Err(AdminError::Usage("not an enroll command".into()));
    };
    let secret = match &secret_file {
        Some(path) => {
            let stdin = std::io::stdin();
            if path == Path::new("-") && stdin.is_terminal() {
                eprintln!("twofactor: reading the secret from standard input (end with Ctrl-D)");
            }
            // Unbuffered, on a duplicate of fd 0: std's stdin buffer
            // would keep a copy of the secret that nothing wipes.
            let fd = stdin.as_fd().try_clone_to_owned().map_err(|e| {
                AdminError::BadOption(format!("--secret-file -: cannot read standard input: {e}"))
            })?;
            Some(admin::read_secret_file(path, std::fs::File::from(fd))?)
        }
        None => None,
    };
    let mut opts = EnrollOptions {
        // Moved, not copied: wiped below, whatever enroll answers.
        secret: secret.map(|mut s| std::mem::take(&mut *s)),
        algorithm,
        digits,
        period,
        force,
        add,
        label,
        deliver_to,
    };
    let enrolled = admin.enroll(&user, &opts, now);
    opts.secret.zeroize();
    let e = match enrolled {
        // Refused under the user's lock before anything was written.
        Err(AdminError::AlreadyEnrolled(name)) if if_missing => {
            if json {
                print_json(json!({"user": name, "changed": false}));
            } else {
                println!("{name}: already enrolled; nothing changed");
            }
            return Ok(0);
        }
        other => other?,
    };
    audit::record(&if opts.add {
        format!("added device {} for {}", e.label, e.user)
    } else if opts.force {
        format!(
            "enrolled {} (device {}), replacing any enrollment",
            e.user, e.label
        )
    } else {
        format!("enrolled {} (device {})", e.user, e.label)
    });
    notify::user_event(
        admin.config(),
        e.user.as_str(),
        if opts.add {
            Event::DeviceAdded {
                device: e.label.clone(),
            }
        } else {
            Event::Enrolled
        },
        now,
    );
    let codes: Vec<String> = e
        .backup_codes
        .iter()
        .map(|c| c.grouped().to_string())
        .collect();
    if json {
        print_json(json!({
            "user": e.user.as_str(),
            "label": e.label,
            "uri": e.uri,
            "secret": e.secret.to_base32().as_str(),
            "algorithm": e.params.algorithm.name(),
            "digits": e.params.digits,
            "period": e.params.period,
            "backup_codes": codes,
            "changed": true,
        }));
    } else {
        println!(
            "Enrolled {} (TOTP {}, {} digits, {} s).\n",
            e.user, e.params.algorithm, e.params.digits, e.params.period
        );
        println!("Scan this QR code with the authenticator app:");
        if let Some(qr) = admin::qr_text(&e.uri) {
            println!("{}", qr_for_output(&qr, std::io::stdout().is_terminal()));
        }
        println!(
            "Or enter this key by hand: {}",
            admin::grouped_secret(&e.secret)
        );
        println!("otpauth URI: {}\n", e.uri);
        println!("Backup codes (each works once; keep them safe, they are not shown again):");
        print_codes(&e.backup_codes);
    }
    Ok(0)
}

/// The QR code as `twofactor enroll` prints it. On a terminal it is drawn
/// in explicit colours, white modules on black, so that it is a normal code
/// whatever the terminal's theme (the glyphs are the light modules, see
/// `otp::uri::qr_text`); piped, it is left as the module shows it, since
/// colours cannot cross ssh keyboard-interactive anyway.
fn qr_for_output(qr: &str, terminal: bool) -> String {
    if !terminal {
        return qr.to_string();
    }
    qr.lines()
        .map(|line| format!("\x1b[97;40m{line}\x1b[0m"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a terminal every row is white on black and reset after it;
    /// otherwise the text is unchanged.
    #[test]
    fn the_qr_code_is_coloured_only_on_a_terminal() {
        let qr = "\u{2580} \u{2588}\n\u{2584}\u{2584}";
        assert_eq!(qr_for_output(qr, false), qr);
        assert_eq!(
            qr_for_output(qr, true),
            "\x1b[97;40m\u{2580} \u{2588}\x1b[0m\n\x1b[97;40m\u{2584}\u{2584}\x1b[0m"
        );
    }
}
