#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter, or explain how to get one (exit 1).
# Lava (lava-nc 0.10, lava-dl 0.6) installs and imports only on Python 3.10.
set -u
is310() { "$@" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }
if command -v python3.10 >/dev/null 2>&1; then
  # pyenv shims exist even when 3.10 is not the active version, so resolve the real binary.
  for v in 3.10 $(pyenv versions --bare 2>/dev/null | grep '^3\.10' | sort -rV); do
    if [ "$v" = 3.10 ]; then cand=$(python3.10 -c 'import sys; print(sys.executable)' 2>/dev/null)
    else cand=$(PYENV_VERSION=$v python3.10 -c 'import sys; print(sys.executable)' 2>/dev/null); fi
    if [ -n "${cand:-}" ] && is310 "$cand"; then echo "$cand"; exit 0; fi
  done
fi
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep '^3\.10' | sort -rV); do
    cand="$(pyenv prefix "$v" 2>/dev/null)/bin/python3.10"
    if is310 "$cand"; then echo "$cand"; exit 0; fi
  done
fi
if command -v uv >/dev/null 2>&1; then
  cand=$(uv python find 3.10 2>/dev/null)
  if [ -n "$cand" ] && is310 "$cand"; then echo "$cand"; exit 0; fi
fi
echo "n2c needs Python 3.10 (Lava supports no other version). Install one with 'pyenv install 3.10.13' or 'uv python install 3.10', or put python3.10 on PATH, then rerun." >&2
exit 1
