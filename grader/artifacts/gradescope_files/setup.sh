#!/usr/bin/env bash
# Lab 04 autograder image set-up: Gradescope runs this once, as root, when it builds the image
# (Ubuntu 22.04 base image; the network is available here, and never needed again afterwards).
#
# 1. Python $LAB04_PYTHON, the version the bundle was built and locked with (apt's python3.11
#    on Ubuntu 22.04, whose python3 is 3.10); another Python >= 3.11 only if apt has none.
# 2. A virtualenv in $AUTOGRADER_ROOT/lab04/venv: the CPU build of torch from PyTorch's CPU
#    index (never a CUDA build), then the grader from lab04_grader/ (a normal, non-editable
#    install) with `-c constraints.txt`, which pins every distribution it needs, transitively.
#    Then the venv is checked against the lock: any pinned distribution at another version
#    stops the build.
# 3. The checkpoints of lab04.conf, baked into $AUTOGRADER_ROOT/lab04 and checked against the
#    sha256 recorded when the bundle was built: built offline for a built-in name, copied
#    from models/ for a local folder, downloaded at the pinned revision for a hub name.
#    Any mismatch stops the build here, loudly, instead of grading against other weights.
#
# Nothing here needs namespaces or CAP_SYS_ADMIN (a default Docker container has neither):
# the last step only reports whether grading will have them. Environment: AUTOGRADER_ROOT
# (default /autograder) relocates every path; LAB04_VENV (tests only) uses that existing
# virtualenv and skips steps 1 and 2.
set -euo pipefail

ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
# shellcheck source=/dev/null
. "$SOURCE/lab04.conf"
LAB04_HOME="$ROOT/$LAB04_HOME_DIR"
VENV="${LAB04_VENV:-$LAB04_HOME/venv}"

say() { printf '\n== setup.sh: %s\n' "$*"; }
die() { printf '\nsetup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# The Python to build the venv with: the locked version first, then any >= 3.11.
find_python() {
  local py
  for py in "python$LAB04_PYTHON" python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      printf '%s' "$py"
      return 0
    fi
  done
  return 1
}

install_python() {
  if ! command -v "python$LAB04_PYTHON" >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends "python$LAB04_PYTHON" "python$LAB04_PYTHON-venv" ||
      echo "setup.sh: apt has no python$LAB04_PYTHON; using another Python >= 3.11 (the lock may not fit it)" >&2
  fi
  PY="$(find_python)" || die "no Python >= 3.11 could be installed"
  if ! "$PY" -m venv "$VENV"; then  # ensurepip comes in a separate Debian package
    apt-get install -y --no-install-recommends "${PY}-venv"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" --version
}

mkdir -p "$LAB04_HOME"
if [ -z "${LAB04_VENV:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  say "Python $LAB04_PYTHON"
  install_python

  say "torch $LAB04_TORCH, CPU build, from $LAB04_TORCH_INDEX"
  # Only torch comes from PyTorch's index; its own dependencies come with the grader's, from PyPI, as locked.
  "$VENV/bin/pip" install --no-deps "torch==$LAB04_TORCH" --index-url "$LAB04_TORCH_INDEX"

  say "the grader $LAB04_GRADER_VERSION and its locked dependencies"
  "$VENV/bin/pip" install -c "$SOURCE/constraints.txt" "$SOURCE/$LAB04_PROJECT_DIR"
  "$VENV/bin/python" -c 'import sys, torch; sys.exit(f"torch {torch.__version__} is a CUDA build" if torch.version.cuda else 0)' ||
    die "the CPU build of torch was expected"
else
  say "LAB04_VENV=$LAB04_VENV: using that environment, installing nothing (a local test)"
fi

say "the virtualenv against constraints.txt"
"$VENV/bin/python" -I - "$SOURCE/constraints.txt" <<'PY' || die "the virtualenv does not match constraints.txt (above)"
import sys
from importlib import metadata

wrong = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        wrong.append(f"{name}: pinned {version}, not installed")
        continue
    if have != version:
        wrong.append(f"{name}: pinned {version}, installed {have}")
for line in wrong:
    print(line, file=sys.stderr)
print(f"every pin holds" if not wrong else f"{len(wrong)} pin(s) do not hold")
sys.exit(1 if wrong else 0)
PY
version="$("$VENV/bin/grade" --version)" || die "the grader does not start: $VENV/bin/grade --version failed"
[[ "$version" == *" $LAB04_GRADER_VERSION" ]] || die "installed '$version', but the bundle holds grader $LAB04_GRADER_VERSION"

# Bake one checkpoint and check its weights against the pinned sha256.
bake() {  # ROLE KIND NAME REVISION WEIGHTS SHA256
  local role="$1" kind="$2" name="$3" revision="$4" weights="$5" expected="$6" dir actual
  case "$kind" in
    builtin)
      say "$role checkpoint: built-in '$name', built offline"
      dir="$LAB04_HOME/checkpoints/$name"
      "$VENV/bin/grade" checkpoints build "$name" --dir "$LAB04_HOME/checkpoints"
      ;;
    dir)
      say "$role checkpoint: the folder shipped in $name"
      dir="$LAB04_HOME/models/$role"
      rm -rf "$dir" && mkdir -p "$dir"
      cp -R "$SOURCE/$name/." "$dir/"
      ;;
    hub)
      say "$role checkpoint: HuggingFace hub '$name' at revision $revision"
      dir="$LAB04_HOME/models/$role"
      rm -rf "$dir" && mkdir -p "$dir"
      HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "$VENV/bin/python" - "$name" "$revision" "$dir" <<'PY'
import sys
from huggingface_hub import snapshot_download

repo, revision, dest = sys.argv[1:4]
snapshot_download(
    repo, revision=revision, local_dir=dest,
    allow_patterns=["config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer*.json"],
)
PY
      rm -rf "$dir/.cache"
      ;;
    *) die "lab04.conf: unknown kind '$kind' for the $role checkpoint" ;;
  esac
  [ -f "$dir/$weights" ] || die "the $role checkpoint has no $weights"
  actual="$(sha256sum "$dir/$weights" | cut -d' ' -f1)"
  if [ "$actual" != "$expected" ]; then
    die "the $role checkpoint's $weights has sha256 $actual, but the bundle pinned $expected.
The image would grade against other weights than the ones you tested: rebuild the bundle
(\`grade gradescope build\`) or fix the pin."
  fi
  echo "$role checkpoint: $weights sha256 $actual (as pinned)"
}

bake primary "$LAB04_MODEL_KIND" "$LAB04_MODEL" "$LAB04_MODEL_REVISION" "$LAB04_MODEL_WEIGHTS" "$LAB04_MODEL_SHA256"
if [ "$LAB04_SECOND_MODEL_KIND" != none ]; then
  bake second "$LAB04_SECOND_MODEL_KIND" "$LAB04_SECOND_MODEL" "$LAB04_SECOND_MODEL_REVISION" \
    "$LAB04_SECOND_MODEL_WEIGHTS" "$LAB04_SECOND_MODEL_SHA256"
fi
bake function "$LAB04_FUNCTION_MODEL_KIND" "$LAB04_FUNCTION_MODEL" "$LAB04_FUNCTION_MODEL_REVISION" \
  "$LAB04_FUNCTION_MODEL_WEIGHTS" "$LAB04_FUNCTION_MODEL_SHA256"

# Readable by every user: student code runs as an unprivileged user and reads the checkpoints.
chmod -R a+rX "$LAB04_HOME"
chmod a+x "$ROOT"

# Namespaces are the sandbox's first layer; a default Docker container refuses them. Only a report.
if command -v unshare >/dev/null 2>&1 && unshare --mount --pid --net --ipc --uts --fork true 2>/dev/null; then
  say "namespaces: available here"
else
  say "namespaces: refused here (no CAP_SYS_ADMIN?). If grading has none either, each result says that"
  echo "isolation was reduced (a line students see; the details are in extra_data.sandbox for staff)."
fi
say "done: the grader $LAB04_GRADER_VERSION and its checkpoints are in $LAB04_HOME"
