#!/bin/sh
# A process agent that misbehaves on purpose, for the bad-input tests.
# $1 picks the failure.
case "$1" in
  crash)    printf '{"partial": ['; kill -9 $$ ;;
  badjson)  echo 'this is not json' ;;
  hang)     sleep 30 ;;
  flood)    yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' ;;
  stderr)   echo "warming up" >&2; echo '"ok"' ;;
  fail)     echo '{"why": "bad day"}'; exit 3 ;;
  leftover) sleep 600 & echo '"ok"' ;;
  escape)   setsid sleep 60 & echo '"ok"' ;;
  *)        echo "unknown mode $1" >&2; exit 64 ;;
esac
