# Sourced by the e2e shell tests (usage: . script_lib.sh NAME): $work, a scratch directory removed
# on exit, and fail(), which counts failures into $failures for the script's last line to report.
work=$(mktemp -d "${TMPDIR:-/tmp}/df11_$1.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
