#!/usr/bin/env bash
# Keeps the README's flag table true: every flag `ringqd --help` prints must
# be in README.md with the same default, and the README lists no other flag.
set -euo pipefail
ringqd=$1
readme=$2
fail=0
help_flags=$("$ringqd" --help | sed -n 's/^  --\([a-z0-9-]*\) .*(default: \(.*\))$/\1 \2/p')
while read -r name def; do
  if ! grep -qF "| \`--$name\` | \`$def\` |" "$readme"; then
    echo "README.md lacks: | \`--$name\` | \`$def\` |"
    fail=1
  fi
done <<<"$help_flags"
for name in $(sed -n 's/^| `--\([a-z0-9-]*\)` |.*/\1/p' "$readme"); do
  if ! grep -q "^$name " <<<"$help_flags"; then
    echo "README.md documents --$name, which ringqd --help does not know"
    fail=1
  fi
done
count=$(wc -l <<<"$help_flags")
[[ $fail == 0 ]] && echo "readme flags: $count passed, 0 failed"
exit $fail
