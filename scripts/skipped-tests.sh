#!/usr/bin/env bash
# scripts/skipped-tests.sh <build dir> [label]: list the tests of the last CTest run in <build dir> that did
# not run because they skipped themselves (exit 77: a missing data set, programs not built, no OpenMP, ...),
# each with the reason it printed ("SKIPPED: ..." from tests/skip.hpp, "skip: ..." from a script test).
# Reads <build dir>/ctest.log (the console output that scripts/test.sh and scripts/sanitize.sh keep) and
# CTest's own <build dir>/Testing/Temporary/LastTest.log. Prints one line when nothing was skipped.
set -euo pipefail
build_dir=${1:?build dir}
label=${2:-$build_dir}
console="$build_dir/ctest.log"
details="$build_dir/Testing/Temporary/LastTest.log"
[[ -f "$console" ]] || { echo "skipped tests ($label): no CTest log at $console"; exit 0; }
# CTest's summary: "The following tests did not run:" then lines "  <n> - <name> (Skipped)"
mapfile -t names < <(sed -n 's/^[[:space:]]*[0-9][0-9]* - \(.*\) (Skipped)$/\1/p' "$console")
if [[ ${#names[@]} -eq 0 ]]; then
  echo "skipped tests ($label): none"
  exit 0
fi
echo "skipped tests ($label): ${#names[@]} did not run:"
for name in "${names[@]}"; do
  reason=""
  if [[ -f "$details" ]]; then
    # the output block of this test in LastTest.log: from "<i>/<n> Test: <name>" to "<end of output>"
    reason=$(awk -v name="$name" '
      $0 ~ /^[0-9]+\/[0-9]+ Test: / { sub(/^[0-9]+\/[0-9]+ Test: /, ""); inside = ($0 == name); next }
      inside && /^<end of output>$/ { inside = 0 }
      inside && tolower($0) ~ /^(skipped|skip): / { sub(/^[^:]*: /, ""); print; exit }' "$details")
  fi
  echo "  $name${reason:+: $reason}"
done
