//! The commands that read or change an enrollment (all but `enroll` and
//! `import`, in `enroll`), and the delivery service.

use std::os::fd::AsFd;
use std::path::Path;

use pam_twofactor::admin::{Admin, AdminError, audit, notify};

use crate::fleet::store::Store;
use pam_twofactor::delivery::{self, DeliveryError, Event};
use pam_twofactor::host::timefmt;
use pam_twofactor::records::username::escape;
use serde_json::json;

use crate::cli::Command;
use crate::enroll::{run_enroll, run_import};
use crate::output::{device_line, devices_json, lock_text, print_change, print_codes, print_json};

fn run_list(admin: &mut Store, json: bool, now: u64) -> Result<u8, AdminError> {
    let listed = admin.list(now)?;
    if json {
        let users: Vec<_> = listed
            .iter()
            .map(|l| {
                json!({
                    "user": l.user,
                    "devices": devices_json(&l.devices),
                    "backup_codes_remaining": l.backup_codes_remaining,
                    "failed_attempts": l.failed_attempts,
                    "locked_until": l.locked_until.map(timefmt::rfc3339),
                    "last_success": l.last_success.map(timefmt::rfc3339),
                    "deliver_to": l.deliver_to,
                })
            })
            .collect();
        print_json(json!({"users": users, "changed": false}));
    } else if listed.is_empty() {
        println!("no user is enrolled");
    } else {
        println!("USER\tDEVICES\tBACKUP CODES LEFT\tFAILURES\tLOCK\tLAST SUCCESS");
        for l in &listed {
            let labels: Vec<&str> = l.devices.iter().map(|d| d.label.as_str()).collect();
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                l.user,
                labels.join(","),
                l.backup_codes_remaining,
                l.failed_attempts,
                l.locked_until.map_or_else(
                    || "-".to_string(),
                    |t| format!("until {}", timefmt::human(t))
                ),
                l.last_success
                    .map_or_else(|| "never".to_string(), timefmt::human),
            );
        }
    }
    Ok(0)
}

fn run_status(admin: &mut Store, user: &str, json: bool, now: u64) -> Result<u8, AdminError> {
    let s = admin.status(user, now)?;
    if json {
        print_json(json!({
            "user": user,
            "enrolled": s.enrolled,
            "algorithm": s.params.map(|p| p.algorithm.name()),
            "digits": s.params.map(|p| p.digits),
            "period": s.params.map(|p| p.period),
            "backup_codes_remaining": s.backup_codes_remaining,
            "failed_attempts": s.failed_attempts,
            "locked_until": s.locked_until.map(timefmt::rfc3339),
            "devices": devices_json(&s.devices),
            "deliver_to": s.deliver_to,
            "changed": false,
        }));
    } else if let Some(p) = s.params {
        println!(
            "{user}: enrolled (TOTP {}, {} digits, {} s)",
            p.algorithm, p.digits, p.period
        );
        println!("devices:");
        for d in &s.devices {
            println!("  {}", device_line(d));
        }
        match &s.deliver_to {
            Some(t) => println!("codes by message to: {t}"),
            None => println!("codes by message: off"),
        }
        println!(
            "backup codes remaining: {}",
            s.backup_codes_remaining.unwrap_or(0)
        );
        println!("failed attempts: {}", s.failed_attempts);
        println!("{}", lock_text(user, s.locked_until));
    } else {
        println!("{user}: not enrolled");
    }
    Ok(0)
}

pub(crate) fn run_user_command(
    admin: &mut Store,
    command: Command,
    now: u64,
) -> Result<u8, AdminError> {
    match command {
        enroll @ Command::Enroll { .. } => run_enroll(admin, enroll, now),
        Command::List { json } => run_list(admin, json, now),
        Command::Status { user, json } => run_status(admin, &user, json, now),
        Command::Unlock { user, json } => {
            let changed = admin.unlock(&user)?;
            if changed {
                audit::record(&format!("unlocked {user} (failures and lock cleared)"));
                notify::user_event(admin.config(), &user, Event::Unlocked, now);
            }
            let text = if changed {
                format!("{user}: failures cleared and unlocked")
            } else {
                format!("{user}: no failures and not locked; nothing changed")
            };
            print_change(json, &user, changed, json!({}), &text);
            Ok(0)
        }
        Command::BackupCodes { user, json } => {
            let codes = admin.regenerate_backup_codes(&user, now)?;
            audit::record(&format!(
                "made new backup codes for {user} (the old ones no longer work)"
            ));
            notify::user_event(admin.config(), &user, Event::BackupCodesRegenerated, now);
            if json {
                let list: Vec<String> = codes.iter().map(|c| c.grouped().to_string()).collect();
                print_json(json!({"user": user, "backup_codes": list, "changed": true}));
            } else {
                println!("New backup codes for {user} (the old ones no longer work):");
                print_codes(&codes);
            }
            Ok(0)
        }
        Command::Disable {
            user,
            if_enrolled,
            json,
        } => {
            let text = match admin.disable(&user) {
                Ok(()) => {
                    audit::record(&format!(
                        "disabled {} (secret and state removed)",
                        escape(&user)
                    ));
                    notify::user_event(admin.config(), &user, Event::Disabled, now);
                    format!("{user}: enrollment removed")
                }
                // Found under the user's lock; nothing was touched.
                Err(AdminError::NotEnrolled(name)) if if_enrolled => {
                    let text = format!("{name}: not enrolled; nothing changed");
                    print_change(json, &user, false, json!({}), &text);
                    return Ok(0);
                }
                Err(e) => return Err(e),
            };
            print_change(json, &user, true, json!({}), &text);
            Ok(0)
        }
        Command::Devices { user, json } => {
            let devices = admin.devices(&user)?;
            if json {
                print_json(json!({
                    "user": user,
                    "devices": devices_json(&devices),
                    "changed": false,
                }));
            } else {
                for d in &devices {
                    println!("{}", device_line(d));
                }
            }
            Ok(0)
        }
        Command::RemoveDevice { user, label, json } => {
            admin.remove_device(&user, &label)?;
            audit::record(&format!("removed device {label} of {user}"));
            notify::user_event(
                admin.config(),
                &user,
                Event::DeviceRemoved {
                    device: label.clone(),
                },
                now,
            );
            let text = format!("{user}: device {label} removed");
            print_change(json, &user, true, json!({"label": label}), &text);
            Ok(0)
        }
        Command::SetDelivery { user, target, json } => {
            let changed = admin.set_delivery(&user, target.as_deref())?;
            if changed {
                audit::record(&match &target {
                    Some(t) => format!(
                        "set where codes by message for {user} go: {}",
                        delivery::mask_target(t)
                    ),
                    None => format!("turned off codes by message for {user}"),
                });
            }
            let text = match &target {
                Some(t) => format!("{user}: codes by message go to {t}"),
                None => format!("{user}: no codes by message"),
            };
            print_change(json, &user, changed, json!({"deliver_to": target}), &text);
            Ok(0)
        }
        Command::Import {
            user,
            google_authenticator,
            oath_usersfile,
            force,
            json,
        } => run_import(
            admin,
            user,
            google_authenticator,
            oath_usersfile,
            force,
            json,
            now,
        ),
        Command::Check { .. }
        | Command::Deliver
        | Command::Agent
        | Command::Fleet { .. }
        | Command::Completions { .. } => Ok(1),
    }
}

/// `twofactor deliver`: one connection, on stdin and stdout; the outcome
/// goes to stderr (the journal under systemd). Exit status 1 on failure.
pub(crate) fn run_deliver(config: Option<&Path>) -> u8 {
    let stdin = std::io::stdin();
    let setup = delivery::check_peer(stdin.as_fd()).and_then(|()| {
        Admin::open(config)
            .map(|admin| delivery::Setup::from_config(&admin.config))
            .map_err(|e| DeliveryError::Config(e.to_string()))
    });
    match delivery::serve(setup, &mut stdin.lock(), &mut std::io::stdout().lock()) {
        Ok(served) => {
            eprintln!("twofactor deliver: {served}");
            0
        }
        Err(e) => {
            eprintln!("twofactor deliver: {e}");
            1
        }
    }
}
