#!/bin/sh
# Example [delivery] command: send the code as a Telegram bot message.
#   $1 = user name, $2 = target (the user's Telegram chat id),
#   standard input = the code.
# The bot token lives in a root-only file; create the bot with @BotFather and
# have each user start a chat with it to learn their chat id.
#
# The code and the token (part of the URL) never go into an argument or the
# environment of any command: every local user can read those in
# /proc/PID/cmdline and environ. curl gets the URL and the message in a
# config on its standard input (--config -).
set -eu
TOKEN_FILE="/etc/security/twofactor-telegram.token"  # root-only, mode 0600

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
url=$(cfg "https://api.telegram.org/bot$token/sendMessage")
chat=$(cfg "chat_id=$2")
text=$(cfg "text=Login code for $1 on $(hostname): $code")
# --disable (first): no ~/.curlrc.
exec curl --disable --silent --show-error --fail --max-time 8 --config - >/dev/null <<EOF
url = $url
data-urlencode = $chat
data-urlencode = $text
EOF
