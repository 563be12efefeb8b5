#!/usr/bin/env bash
# Lab 04 on PrairieLearn: the external grader's entrypoint (info.json's "entrypoint").
#
# PrairieLearn copies the student's files to /grade/student/ and reads /grade/results/results.json
# when this script ends. It grades /grade/student as ONE submission with `grade --format
# prairielearn` and the checkpoints baked into the image (Dockerfile beside this file), then
# checks that the results file is valid. When the grader fails (non-zero exit, missing or
# invalid results, the deadline), it writes a valid results file itself, "gradable": false, so
# the student loses no attempt and is told that it is not a verdict on their code; the reason
# and the end of the grader's output are stored under "grader_failure" (not shown to students).
# The fallback needs only bash and coreutils.
#
# Environment (set them in info.json's "environment"; all optional):
#   LAB04_GRADE_ROOT  the /grade folder (tests move it)     LAB04_GRADE    the grade command
#   LAB04_MODEL, LAB04_SECOND_MODEL, LAB04_FUNCTION_MODEL   checkpoints [tiny, wide, tiny]
#   LAB04_CHECKPOINT_DIR  where the baked checkpoints are    LAB04_POINTS   a points.toml
#   LAB04_TIMEOUT     seconds per tier [20]                  LAB04_MEMORY_MB  [3072]
#   LAB04_DEADLINE    seconds for the whole grading [240]: keep it below info.json's "timeout"
set -uo pipefail  # no -e: every way this script can end must leave a results.json

ROOT="${LAB04_GRADE_ROOT:-/grade}"
STUDENT="$ROOT/student"
RESULTS="$ROOT/results"
OUT="$RESULTS/results.json"
GRADE="${LAB04_GRADE:-/opt/lab04/venv/bin/grade}"
DEADLINE="${LAB04_DEADLINE:-240}"
reason="grade.sh stopped before the grader ran"
grader_status=""

mkdir -p "$RESULTS"
# Only root may read the question's tests and data or write the results, even without namespaces.
for folder in "$RESULTS" "$ROOT/tests" "$ROOT/data" "$ROOT/serverFilesCourse"; do
  [ -d "$folder" ] && chmod 700 "$folder"
done
[ -d "$OUT" ] && ! [ -L "$OUT" ] && rm -rf -- "$OUT"
rm -f -- "$OUT"
LOG="$(mktemp "${TMPDIR:-/tmp}/lab04-grade.XXXXXX")" || LOG=/dev/null

json_string() {  # stdin -> one JSON string literal of printable ASCII, tabs and newlines
  LC_ALL=C tr -d '\000-\010\013-\037\177' | LC_ALL=C tr '\t\200-\377' ' ?' |
    LC_ALL=C sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' |
    LC_ALL=C awk 'BEGIN { ORS = ""; printf "\"" } NR > 1 { printf "\\n" } { printf "%s", $0 } END { printf "\"" }'
}

results_valid() {  # a JSON object that is either gradable with a score in [0, 1] or not gradable
  [ -f "$OUT" ] && [ -s "$OUT" ] || return 1
  local py
  for py in "$(dirname "$GRADE")/python" python3 python; do
    if command -v "$py" >/dev/null 2>&1; then
      "$py" -I - "$OUT" >/dev/null 2>&1 <<'PY'
import json, math, sys
try:
    with open(sys.argv[1], encoding="utf-8") as fh:
        data = json.load(fh, parse_constant=lambda name: 1 / 0)
except Exception:
    sys.exit(1)
if not isinstance(data, dict):
    sys.exit(1)
if data.get("gradable") is False:
    sys.exit(0)
score = data.get("score")
ok = isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score) and 0 <= score <= 1
sys.exit(0 if ok else 1)
PY
      return $?
    fi
  done
  [ "$grader_status" = 0 ]
}

write_fallback() {
  local tmp="$RESULTS/.results-fallback.$$"
  cat >"$tmp" <<JSON
{
  "gradable": false,
  "message": "The autograder could not grade this submission because of a problem on the grading side. This is not a verdict on your code, and it cost you no attempt: course staff can see what went wrong.",
  "format_errors": ["The autograder itself failed (not your code). Please submit again later or tell course staff."],
  "output": "",
  "tests": [],
  "grader_failure": {
    "reason": $(printf '%s' "$reason" | json_string),
    "exit_status": $(printf '%s' "$grader_status" | json_string),
    "output_tail": $(tail -c 6000 "$LOG" 2>/dev/null | json_string)
  }
}
JSON
  [ -d "$OUT" ] && ! [ -L "$OUT" ] && rm -rf -- "$OUT"
  mv -f -T "$tmp" "$OUT"
}

finish() {
  if ! results_valid; then
    echo "grade.sh: $reason; writing a fallback results.json" >&2
    write_fallback
  fi
  rm -f "$LOG" 2>/dev/null
  exit 0
}
trap finish EXIT
trap 'reason="grade.sh was stopped by a signal"; exit 0' HUP INT TERM

if ! command -v "$GRADE" >/dev/null 2>&1; then
  reason="the grader is not installed in the image (no $GRADE)"
  exit 0
fi
args=(
  run "$STUDENT" --out "$OUT" --format prairielearn
  --model "${LAB04_MODEL:-tiny}" --second-model "${LAB04_SECOND_MODEL:-wide}"
  --function-model "${LAB04_FUNCTION_MODEL:-tiny}"
  --timeout "${LAB04_TIMEOUT:-20}" --memory-mb "${LAB04_MEMORY_MB:-3072}"
)
if [ -n "${LAB04_CHECKPOINT_DIR:-}" ]; then
  args+=(--checkpoint-dir "$LAB04_CHECKPOINT_DIR")
fi
if [ -n "${LAB04_POINTS:-}" ]; then
  args+=(--points "$LAB04_POINTS")
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONDONTWRITEBYTECODE=1
cd "$ROOT" || true
echo "+ grade ${args[*]}"
timeout --kill-after=10 "$DEADLINE" "$GRADE" "${args[@]}" 2>&1 | tee "$LOG"
grader_status=${PIPESTATUS[0]}
case "$grader_status" in
  0) reason="the grader exited normally but results.json is missing or invalid" ;;
  124) reason="the grader did not finish within LAB04_DEADLINE (${DEADLINE} s)" ;;
  137) reason="the grader was killed (status 137): out of memory or stuck past the deadline" ;;
  *) reason="the grader exited with status $grader_status" ;;
esac
exit 0
