#!/bin/sh
# A process agent with a visible side effect: appends its input (a number)
# as one line to the file named by $1, then prints the number back.
# The crash test counts those lines to prove each step ran once.
doc=$(cat)
n=$(printf '%s' "$doc" | sed -n 's/.*"input":\([0-9][0-9]*\).*/\1/p')
if [ -z "$n" ]; then
  # Truncated stdin (the host died while writing it): do nothing.
  echo "no step number in input" >&2
  exit 2
fi
echo "$n" >> "$1"
echo "$n"
