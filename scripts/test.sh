#!/usr/bin/env bash
# The README's test command (`npm test`): set-up if needed, static checks, then every test file.
# Node 20's test runner does not expand globs, so the files are listed here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --quiet --browser
npm run --silent check
scope="${1:-test}"
mapfile -t files < <(find "$scope" -name '*.test.ts' | sort)
exec npx tsx --test --test-concurrency=1 "${files[@]}"
