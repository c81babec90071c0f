#!/bin/sh
# A process agent in plain POSIX sh: counts the words of its input text.
#
# stdin:  {"task":..,"attempt":..,"agent":..,"input":"some text","profile":{..}}
# stdout: NDJSON events, ending with {"event":"final","value":{..}}
#
# (A real agent would use a JSON parser; this one only handles inputs that
# are plain strings without quotes, which is what the sample sends.)
doc=$(cat)
text=$(printf '%s' "$doc" | sed -n 's/.*"input":"\([^"]*\)".*/\1/p')
words=$(printf '%s\n' "$text" | wc -w)
printf '{"event":"progress","data":{"words":%d}}\n' "$words"
printf '{"event":"final","value":{"words":%d,"chars":%d}}\n' "$words" "${#text}"
