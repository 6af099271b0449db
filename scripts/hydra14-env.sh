#!/usr/bin/env bash
# scripts/hydra14-env.sh — makes .venv-hydra14: the main .venv with Hydra 1.4 (a release candidate) in
# place of Hydra 1.3, to run the Hydra-facing tests against both (`make test-hydra14`, scripts/run-tests.sh).
# Nothing is installed twice (torch alone is ~6 GB): the new venv's site-packages links each package of
# .venv's, except Hydra, omegaconf and Hydra's launcher plugins, which it installs at their 1.4 release
# (~1 MB, no dependencies: .venv has the rest). Rerun it after .venv changes; it takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
main=.venv
env=.venv-hydra14
pins=(hydra-core==1.4.0rc3 omegaconf==2.4.1rc1 hydra-joblib-launcher==1.4.0rc3 hydra-submitit-launcher==1.4.0rc3)

purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
rm -rf "$env"
"$main/bin/python" -m venv --without-pip "$env"
from=$(purelib "$main")
to=$(purelib "$env")
"$main/bin/pip" install -q --no-deps --target "$to" "${pins[@]}"
for path in "$from"/*; do
  name=$(basename "$path")
  case "$name" in  # what the pins replace; hydra_plugins/ holds only Hydra's launcher plugins
    hydra | hydra_core-* | omegaconf | omegaconf-* | hydra_plugins | hydra_*_launcher-* | pip | pip-*) continue ;;
  esac
  [[ -e "$to/$name" ]] || ln -s "$(realpath "$path")" "$to/$name"
done
"$env/bin/python" -c 'import sys, hydra, omegaconf, torch; print(sys.prefix, "hydra-core", hydra.__version__, "omegaconf", omegaconf.__version__, "torch", torch.__version__)'
