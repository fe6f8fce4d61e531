#!/bin/sh
# Example [delivery] command: send the code by SMS through an HTTP gateway.
# The delivery service (twofactor deliver) runs it as root, in /, with only
# PATH in its environment:
#   $1 = user name, $2 = target (the phone number from `twofactor set-delivery`),
#   standard input = the code (never in argv or the environment).
# Install root-owned, mode 0700 or 0755, and point [delivery] command at it.
# Exit 0 only if the gateway accepted the message; it is killed after 10 s.
set -eu
GATEWAY_URL="https://sms.example.net/api/send"      # your provider's endpoint
TOKEN_FILE="/etc/security/twofactor-sms.token"       # root-only, mode 0600
read -r code
token=$(cat "$TOKEN_FILE")
# The code goes in the POST body (not the URL), so it is not logged by proxies.
exec curl --silent --show-error --fail --max-time 8 \
  --header "Authorization: Bearer $token" \
  --data-urlencode "to=$2" \
  --data-urlencode "text=Your login code for $(hostname): $code" \
  "$GATEWAY_URL" >/dev/null
