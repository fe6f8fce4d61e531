#!/bin/sh
# Example [delivery] command: send the code as a Telegram bot message.
#   $1 = user name, $2 = target (the user's Telegram chat id),
#   standard input = the code.
# The bot token lives in a root-only file; create the bot with @BotFather and
# have each user start a chat with it to learn their chat id.
set -eu
TOKEN_FILE="/etc/security/twofactor-telegram.token"  # root-only, mode 0600
read -r code
token=$(cat "$TOKEN_FILE")
exec curl --silent --show-error --fail --max-time 8 \
  --data-urlencode "chat_id=$2" \
  --data-urlencode "text=Login code for $1 on $(hostname): $code" \
  "https://api.telegram.org/bot$token/sendMessage" >/dev/null
