#!/usr/bin/env bash
# Runs scripts/plot_sweep.py on a fake run (tests/gate/make_fake_results.py, ending with a
# half-written line) and checks that every expected figure and report.md exist, are non-empty
# PNGs / markdown, and that rows that did not pass are listed but not plotted; then a run with no
# rows, decode rows whose quartiles do not bracket the median, and the variants' colours.
# Usage: test_plot_sweep.sh SOURCE_DIR SCRATCH_DIR
set -uo pipefail

src=${1:?usage: test_plot_sweep.sh SOURCE_DIR SCRATCH_DIR}
run=${2:?usage: test_plot_sweep.sh SOURCE_DIR SCRATCH_DIR}/20261127T000000Z_h100-80gb-hbm3_nemo_layer
py=/usr/bin/python3  # Debian's interpreter has matplotlib (scripts/setup)
rm -rf "$run"
mkdir -p "$run"

"$py" "$src/tests/gate/make_fake_results.py" "$run" --partial --incorrect || exit 1
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
    "## Lines left out (unreadable, or a case's second row)" "NVIDIA H100 80GB HBM3" "## Passed against their own GEMMs" \
    "Time over bf16 (median minus bf16's median at the same batch)" "| spread |"; do
    grep -qF -- "$needle" "$report" || fail "report.md lacks '$needle'"
  done
fi

# The numbers in the latency table are the rows': every cell of the df11 and bf16 series of layer
# 1 against a recomputation from results.jsonl (median and ratio to bf16 at the same batch).
"$py" - "$run" <<'PY' || fail "report.md's latency cells do not match results.jsonl"
import json, pathlib, re, sys
run = pathlib.Path(sys.argv[1])
rows = [json.loads(l) for l in (run / "results.jsonl").read_text().splitlines()[:-1] if l.strip()]
ok = [r for r in rows if r.get("disposition") == "passed" and r["case"]["unit"] == "model.layers.1"
      and r["case"]["experiment"] == "nemo_layer"]
bf16 = {r["case"]["batch"]: r["summary"]["median_s"] for r in ok if r["case"]["method"] == "bf16"}
report = (run / "report.md").read_text()
section = report.split("## nemo_layer / model.layers.1", 1)[1].split("\n## ", 1)[0]
table = [l for l in section.splitlines() if l.startswith("| ")]
batches = [int(x) for x in re.findall(r"\| (\d+)", table[0])]
# ... and each cell of the time-over-bf16 table is the median minus bf16's at that batch.
over = section.split("Time over bf16", 1)[1].split("\n\n", 2)[1]
over = [l for l in over.splitlines() if l.startswith("| ")]
scale = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}
def cell(lines, c):
    line = next(l for l in lines if l.startswith(f"| df11 {c['variant']} |"))
    return line.split("|")[2 + batches.index(c["batch"])].strip()
checked = 0
for r in ok:
    c = r["case"]
    if c["method"] != "df11" or c["batch"] not in bf16:
        continue
    got = cell(table, c)
    want = f"({r['summary']['median_s'] / bf16[c['batch']]:.2f}x)"
    if not got.endswith(want):
        sys.exit(f"df11 {c['variant']} at {c['batch']}: cell '{got}', want ratio {want}")
    value, unit = cell(over, c).split()
    got, want = float(value) * scale[unit], r["summary"]["median_s"] - bf16[c["batch"]]
    if abs(got - want) > 1e-3 * abs(want) + 1e-7:
        sys.exit(f"time over bf16 of df11 {c['variant']} at {c['batch']}: {got}, want {want}")
    checked += 1
if checked < 10:
    sys.exit(f"only {checked} cells checked")
print(f"{checked} latency and time-over-bf16 cells match")
PY
# A second row of a case (a duplicate) is left out, named, and does not change the table.
dup=$(dirname "$run")/dup_run
rm -rf "$dup" && mkdir -p "$dup" && cp "$run/results.jsonl" "$dup/"
"$py" - "$dup/results.jsonl" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[:-1]
first = next(json.loads(l) for l in lines if '"bf16"' in l and '"passed"' in l)
first["summary"]["median_s"] *= 3
open(sys.argv[1], "w").write("\n".join(lines + [json.dumps(first)]) + "\n")
PY
"$py" "$src/scripts/plot_sweep.py" "$dup" >/dev/null 2>&1 || fail "plot_sweep.py failed on a run with a duplicate row"
grep -qF "a second row of the case of line" "$dup/report.md" || fail "a duplicate row is not named in report.md"
diff <(grep -A30 "## nemo_layer / model.layers.1" "$run/report.md" | grep "^| df11") \
  <(grep -A30 "## nemo_layer / model.layers.1" "$dup/report.md" | grep "^| df11") >/dev/null ||
  fail "a duplicate bf16 row changed the df11 ratios"

# A run with no readable rows still yields a report, and no figures.
empty=$(dirname "$run")/empty_run
rm -rf "$empty" && mkdir -p "$empty" && echo '{"schema_version": 1, "case":' >"$empty/results.jsonl"
"$py" "$src/scripts/plot_sweep.py" "$empty" || fail "plot_sweep.py failed on a run with no readable rows"
[[ -s $empty/report.md ]] || fail "no report.md for a run with no readable rows"
grep -qF "every row passed" "$empty/report.md" && fail "a run with no readable rows says every row passed"
grep -qF "None: results.jsonl has no readable row." "$empty/report.md" || fail "a run with no rows does not say so"

# Decode rows whose quartiles do not bracket the median (q3 below it, q1 above it): the figure is
# drawn, their whiskers clipped, and each is named in a warning.
skew=$(dirname "$run")/skew_run
rm -rf "$skew" && mkdir -p "$skew"
"$py" - "$run/results.jsonl" "$skew/results.jsonl" <<'PY' || exit 1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()[:-1] if l.strip()]
decodes = [r for r in rows if r["case"]["method"] == "decode" and r["disposition"] == "passed"]
decodes[0]["summary"]["q3_s"] = decodes[0]["summary"]["median_s"] * 0.9
decodes[1]["summary"]["q1_s"] = decodes[1]["summary"]["median_s"] * 1.1
open(sys.argv[2], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
"$py" "$src/scripts/plot_sweep.py" "$skew" >/dev/null 2>"$skew/stderr" ||
  fail "plot_sweep.py failed on quartiles that do not bracket the median: $(tail -2 "$skew/stderr")"
(($(grep -c "do not bracket the median; its error bar is clipped" "$skew/stderr") == 2)) ||
  fail "the rows with quartiles outside the median are not warned of: $(cat "$skew/stderr")"
[[ -s $skew/decode_model.layers.1.png ]] || fail "no decode figure for the rows with skewed quartiles"

# The variants' colours: no grey (the offload baselines' colour; tab10 and tab20 hold greys) and,
# up to 18 variants, no two alike.
"$py" - "$src/scripts" <<'PY' || fail "the variants' colours"
import sys
sys.path.insert(0, sys.argv[1])
import plot_sweep
for n in (3, 9, 10, 16, 18):
    rows = [{"case": {"method": "df11", "variant": f"v{i:02d}"}} for i in range(n)]
    rows.append({"case": {"method": "df11-fused", "variant": None}})  # a method of its own colour
    style = plot_sweep.Style(rows)
    colors = [style.color(("df11", f"v{i:02d}")) for i in range(n)] + [style.color(("df11-fused", ""))]
    grey = [c for c in colors if c[0] == c[1] == c[2]]
    if grey:
        sys.exit(f"{n} variants: {len(grey)} grey colour(s)")
    if n < 18 and len(set(colors)) != len(colors):
        sys.exit(f"{n} variants and a method: {len(colors) - len(set(colors))} colour(s) used twice")
print("variant colours: no grey, no two alike")
PY

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "plot_sweep: all figures and report.md present"
