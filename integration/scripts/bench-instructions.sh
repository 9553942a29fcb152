#!/usr/bin/env bash
# Growth of translation cost in instructions, not seconds: valgrind's callgrind counts the
# instructions spent in Translator::apply while `htnn validate` translates generated inputs
# of 1k, 3k and 10k VirtualServices (the shape of integration/src/scale.rs without
# DestinationRules and ServiceEntries). The counts repeat exactly for the same binary and
# input, whatever else the machine does, so the growth exponent between sizes is reliable.
#
# Usage: bench-instructions.sh HTNN_BIN GEN_SCALE_BIN [SIZES...]
set -euo pipefail
htnn=$1 gen=$2
shift 2
sizes=("${@:-1000 3000 10000}")
read -r -a sizes <<<"${sizes[*]}"
command -v valgrind >/dev/null || { echo "valgrind is required (Debian package valgrind)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prev_n="" prev_ir=""
printf '| VirtualServices | instructions in Translator::apply | growth exponent |\n|---:|---:|---:|\n'
for n in "${sizes[@]}"; do
  "$gen" "$work/in-$n" "$n"
  ir=$(valgrind --tool=callgrind --callgrind-out-file="$work/cg-$n.out" \
    --toggle-collect='htnn_translators::engine::Translator::apply*' \
    "$htnn" validate -f "$work/in-$n" 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  [[ -n "$ir" ]] || { echo "callgrind reported no count for $n" >&2; exit 1; }
  exponent="-"
  if [[ -n "$prev_n" ]]; then
    exponent=$(awk -v a="$prev_ir" -v b="$ir" -v m="$prev_n" -v n="$n" 'BEGIN { printf "%.3f", log(b / a) / log(n / m) }')
  fi
  printf '| %s | %s | %s |\n' "$n" "$ir" "$exponent"
  rm -rf "$work/in-$n"
  prev_n=$n prev_ir=$ir
done
