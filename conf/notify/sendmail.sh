#!/bin/sh
# Example [notify] command: mails the user when their second factor
# changes, through the local mail server (/usr/sbin/sendmail, as postfix,
# exim and msmtp-mta install it). Install it root-owned, mode 0755, e.g.
#   install -m 0755 sendmail.sh /usr/local/sbin/twofactor-notify-mail
# and set in /etc/security/twofactor.toml:
#   [notify]
#   command = "/usr/local/sbin/twofactor-notify-mail"
#
# Arguments: USER EVENT. On stdin: "key: value" lines (user, event, time,
# host and the event's own fields), an empty line, one sentence.
#
# Where the mail goes, first match:
#   1. the address for USER in /etc/security/twofactor-notify.addresses,
#      "user address" lines (root-owned, not group- or world-writable:
#      whoever can change it can redirect the notices);
#   2. USER@ the mail domain in /etc/mailname (Debian's convention);
#   3. USER, the local mailbox.
# The address travels inside the mail on sendmail's stdin (-t), never in
# argv, which every local user can read in /proc. The messages hold no
# secret (no code, seed or backup code), but a mail address is nobody
# else's business.
set -eu
user=$1
event=$2
message=$(cat)
map=/etc/security/twofactor-notify.addresses
to=
if [ -e "$map" ]; then
    if [ ! -f "$map" ] || [ "$(stat -c %u "$map")" != 0 ] || [ -n "$(find "$map" -perm /022)" ]; then
        echo "$map: must be a root-owned file, not group- or world-writable" >&2
        exit 1
    fi
    to=$(awk -v u="$user" '$1 == u { print $2; exit }' "$map")
fi
if [ -z "$to" ]; then
    domain=$(head -n 1 /etc/mailname 2>/dev/null || true)
    to=$user${domain:+@$domain}
fi
# Only plain address characters: nothing that could end the header.
case $to in
*[!A-Za-z0-9@._+-]*)
    echo "refusing the address for $user: unexpected characters" >&2
    exit 1
    ;;
esac
host=$(printf '%s\n' "$message" | sed -n 's/^host: //p' | head -n 1)
sentence=$(printf '%s\n' "$message" | sed '1,/^$/d')
{
    printf 'To: %s\n' "$to"
    printf 'Subject: Security notice for %s on %s: %s\n' "$user" "$host" "$event"
    printf 'Auto-Submitted: auto-generated\n'
    printf 'Content-Type: text/plain; charset=utf-8\n\n'
    printf '%s\n\nDetails:\n%s\n' "$sentence" "$message"
} | /usr/sbin/sendmail -oi -t
