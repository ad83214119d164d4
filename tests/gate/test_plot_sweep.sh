#!/usr/bin/env bash
# Runs scripts/plot_sweep.py on a fake run (tests/gate/make_fake_results.py, ending with a
# half-written line) and checks that every expected figure and report.md exist, are non-empty
# PNGs / markdown, and that rows that did not pass are listed but not plotted.
# Usage: test_plot_sweep.sh SOURCE_DIR SCRATCH_DIR
set -uo pipefail

src=${1:?usage: test_plot_sweep.sh SOURCE_DIR SCRATCH_DIR}
run=${2:?usage: test_plot_sweep.sh SOURCE_DIR SCRATCH_DIR}/20261127T000000Z_h100-80gb-hbm3_nemo_layer
py=/usr/bin/python3  # Debian's interpreter has matplotlib (scripts/setup)
rm -rf "$run"
mkdir -p "$run"

"$py" "$src/tests/gate/make_fake_results.py" "$run" --partial || exit 1
"$py" "$src/scripts/plot_sweep.py" "$run" || { echo "FAIL: plot_sweep.py exited non-zero"; exit 1; }

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
for unit in model.layers.1 lm_head; do
  for kind in latency overhead decode breakdown; do
    f=$run/${kind}_$unit.png
    if [[ ! -s $f ]]; then
      fail "missing or empty $f"
    elif [[ $(head -c 8 "$f" | od -An -tx1 | tr -d ' \n') != 89504e470d0a1a0a ]]; then
      fail "$f is not a PNG"
    fi
  done
done
extra=$(find "$run" -name '*.png' | wc -l)
((extra == 8)) || fail "expected 8 figures, found $extra"

report=$run/report.md
if [[ ! -s $report ]]; then
  fail "missing or empty $report"
else
  for needle in "## nemo_layer / model.layers.1" "## nemo_layer / lm_head" "## Decode throughput" \
    "![latency_lm_head.png](latency_lm_head.png)" "| df11 flat12.gap5-warp.smem-out.t512.b8 |" \
    "**copy (bound)**" "## Rows not passed (not plotted)" "| incorrect |" "interrupted (SIGINT)" \
    "## Unreadable lines (skipped)" "NVIDIA H100 80GB HBM3" "## Passed against their own GEMMs"; do
    grep -qF -- "$needle" "$report" || fail "report.md lacks '$needle'"
  done
fi

# A run with no readable rows still yields a report, and no figures.
empty=$(dirname "$run")/empty_run
rm -rf "$empty" && mkdir -p "$empty" && echo '{"schema_version": 1, "case":' >"$empty/results.jsonl"
"$py" "$src/scripts/plot_sweep.py" "$empty" || fail "plot_sweep.py failed on a run with no readable rows"
[[ -s $empty/report.md ]] || fail "no report.md for a run with no readable rows"

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "plot_sweep: all figures and report.md present"
