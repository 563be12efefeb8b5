#!/usr/bin/env bash
# Lab 04 autograder image set-up: Gradescope runs this once, as root, when it builds the image
# (Ubuntu 22.04 base image; the network is available here, and never needed again afterwards).
#
# 1. Python >= 3.11 (apt's python3.11 on Ubuntu 22.04, whose python3 is 3.10).
# 2. A virtualenv in $AUTOGRADER_ROOT/lab04/venv with the CPU build of torch (never a CUDA
#    build), then the grader from lab04_grader/ (a normal, non-editable install), with the
#    versions in constraints.txt.
# 3. The checkpoints of lab04.conf, baked into $AUTOGRADER_ROOT/lab04 and checked against the
#    sha256 recorded when the bundle was built: built offline for a built-in name, copied
#    from models/ for a local folder, downloaded at the pinned revision for a hub name.
#    Any mismatch stops the build here, loudly, instead of grading against other weights.
#
# The venv and the checkpoints live outside source/ because the grader hides source/ from
# student code. Environment: AUTOGRADER_ROOT (default /autograder) relocates every path;
# LAB04_VENV (tests only) uses that existing virtualenv and skips steps 1 and 2.
set -euo pipefail

ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
# shellcheck source=/dev/null
. "$SOURCE/lab04.conf"
LAB04_HOME="$ROOT/$LAB04_HOME_DIR"
VENV="${LAB04_VENV:-$LAB04_HOME/venv}"

say() { printf '\n== setup.sh: %s\n' "$*"; }
die() { printf '\nsetup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# A Python >= 3.11 already on the machine, if any.
find_python() {
  local py
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      printf '%s' "$py"
      return 0
    fi
  done
  return 1
}

mkdir -p "$LAB04_HOME"
if [ -z "${LAB04_VENV:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  say "Python >= 3.11"
  if ! PY="$(find_python)"; then
    apt-get update
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PY=python3.11
  fi
  if ! "$PY" -m venv "$VENV"; then  # ensurepip comes in a separate Debian package
    apt-get update
    apt-get install -y --no-install-recommends "${PY}-venv"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" --version

  say "torch $LAB04_TORCH, CPU build"
  "$VENV/bin/pip" install "torch==$LAB04_TORCH" --index-url "$LAB04_TORCH_INDEX"
  "$VENV/bin/python" -c 'import sys, torch; sys.exit(f"torch {torch.__version__} is a CUDA build" if torch.version.cuda else 0)' ||
    die "the CPU build of torch was expected"

  say "the grader $LAB04_GRADER_VERSION"
  "$VENV/bin/pip" install -c "$SOURCE/constraints.txt" "$SOURCE/$LAB04_PROJECT_DIR"
else
  say "LAB04_VENV=$LAB04_VENV: using that environment, installing nothing (a local test)"
fi
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

# Readable by every user: the grader stages the checkpoints for the unprivileged student user.
chmod -R a+rX "$LAB04_HOME"
say "done: the grader $LAB04_GRADER_VERSION and its checkpoints are in $LAB04_HOME"
