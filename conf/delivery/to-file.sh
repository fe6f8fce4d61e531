#!/bin/sh
# Example [delivery] command for trying the feature out: appends
# "user target code" to a root-only file instead of sending anything.
set -eu
umask 077
read -r code
printf '%s %s %s\n' "$1" "$2" "$code" >> /var/lib/twofactor-delivered.log
