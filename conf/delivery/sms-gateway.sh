#!/bin/sh
# Example [delivery] command: send the code by SMS through an HTTP gateway.
# The delivery service (twofactor deliver) runs it as root, in /, with only
# PATH in its environment:
#   $1 = user name, $2 = target (the phone number from `twofactor set-delivery`),
#   standard input = the code (never in argv or the environment).
# Install root-owned, mode 0700 or 0755, and point [delivery] command at it.
# Exit 0 only if the gateway accepted the message; it is killed after 10 s.
#
# The code and the token never go into an argument or the environment of
# any command: every local user can read those in /proc/PID/cmdline and
# environ while curl runs, and would log in with the code meant for the
# phone. curl gets them in a config on its standard input (--config -).
set -eu
GATEWAY_URL="https://sms.example.net/api/send"      # your provider's endpoint
TOKEN_FILE="/etc/security/twofactor-sms.token"       # root-only, mode 0600

# cfg VALUE: VALUE as a quoted string of curl's config syntax ("…", with
# \ and " escaped), through sed's standard input, not its argv. A control
# character (a line break would end the config line) is refused.
cfg() {
  case $1 in
    *[[:cntrl:]]*) echo "$0: a control character in a value" >&2; return 1 ;;
  esac
  sed 's/[\\"]/\\&/g; s/.*/"&"/' <<EOF
$1
EOF
}

read -r code
token=$(cat "$TOKEN_FILE")
url=$(cfg "$GATEWAY_URL")
header=$(cfg "Authorization: Bearer $token")
to=$(cfg "to=$2")
text=$(cfg "text=Your login code for $(hostname): $code")
# The code goes in the POST body (not the URL), so it is not logged by
# proxies. --disable (first): no ~/.curlrc.
exec curl --disable --silent --show-error --fail --max-time 8 --config - >/dev/null <<EOF
url = $url
header = $header
data-urlencode = $to
data-urlencode = $text
EOF
